# Sourced first by the scripts (bash, under set -euo pipefail), by a path relative to the
# script, before any change of directory:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"        # or ../lib.sh from a subdirectory
#
# It makes a relative CARGO_TARGET_DIR absolute (cargo reads it relative to the working
# directory, and the scripts run from the repository root, not from where they were called),
# sets ROOT to the repository root and changes into it. Then:
#
#   target_dir [MANIFEST]    the absolute directory cargo builds into
#   start_server WHAT PORT LOG SECONDS COMMAND...   start a server, wait until it listens
#   stop_server              stop it

if [ -n "${CARGO_TARGET_DIR-}" ]; then
    CARGO_TARGET_DIR="$(realpath -m -- "$CARGO_TARGET_DIR")"
    export CARGO_TARGET_DIR
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Prints the absolute target directory of the workspace of MANIFEST (default: this one), as
# cargo resolves it: CARGO_TARGET_DIR, build.target-dir from a .cargo/config.toml, or the
# workspace's target/. `cargo metadata --no-deps` reads no registry and takes ~50 ms.
target_dir() {
    cargo metadata --format-version 1 --no-deps --manifest-path "${1:-$ROOT/Cargo.toml}" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}

# Prints a TCP port free on 127.0.0.1 at the time of the call.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Runs COMMAND in the background, its output in LOG, sets SERVER_PID, and returns once
# something accepts TCP connections on 127.0.0.1:PORT. If COMMAND exits first it says so at
# once, with the exit status and the end of LOG, and returns 1; so it does if nothing listens
# within SECONDS. WHAT names the server in those messages ("the echo server").
start_server() {
    local what=$1 port=$2 log=$3 seconds=$4
    shift 4
    "$@" > "$log" 2>&1 &
    SERVER_PID=$!
    # In microseconds (bash 5's EPOCHREALTIME): $SECONDS counts whole seconds since the shell
    # started, so a limit in it could end up to a second early.
    local deadline_us=$((${EPOCHREALTIME/[.,]/} + seconds * 1000000)) status
    while ! (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null; do
        if ! kill -0 "$SERVER_PID" 2> /dev/null; then
            status=0
            wait "$SERVER_PID" || status=$?
            echo "$what exited with status $status before listening on port $port: $*" >&2
            echo "the end of its log ($log):" >&2
            tail -n 20 "$log" 2> /dev/null | sed 's/^/    /' >&2 || true
            return 1
        fi
        if [ "${EPOCHREALTIME/[.,]/}" -ge "$deadline_us" ]; then
            echo "$what did not listen on port $port within $seconds s (pid $SERVER_PID): $*" >&2
            echo "the end of its log ($log):" >&2
            tail -n 20 "$log" 2> /dev/null | sed 's/^/    /' >&2 || true
            return 1
        fi
        sleep 0.05
    done
}

# Stops the server start_server started (SIGTERM), if it still runs, and reaps it.
stop_server() {
    if [ -n "${SERVER_PID-}" ]; then
        kill "$SERVER_PID" 2> /dev/null || true
        wait "$SERVER_PID" 2> /dev/null || true
        SERVER_PID=
    fi
}
