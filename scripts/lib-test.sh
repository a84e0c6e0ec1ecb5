#!/usr/bin/env bash
# Checks scripts/lib.sh: where the target directory is (default, absolute and relative
# CARGO_TARGET_DIR), and that start_server returns once a server listens, fails at once with
# the exit status and log when the server dies first, and fails after its limit when nothing
# listens. Takes about two seconds; scripts/test.sh runs it first.
set -euo pipefail
LIB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
ROOT="$(cd "$(dirname "$LIB")/.." && pwd)"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/bidir-lib-test.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
failures=0
check() { # NAME WANT GOT
    if [ "$2" = "$3" ]; then
        echo "ok: $1"
    else
        echo "FAILED: $1: want '$2', got '$3'"
        failures=$((failures + 1))
    fi
}
contains() { # NAME NEEDLE HAYSTACK
    case "$3" in
        *"$2"*) echo "ok: $1" ;;
        *) echo "FAILED: $1: '$2' not in: $3"; failures=$((failures + 1)) ;;
    esac
}
# Runs lib.sh's target_dir from the scratch directory with CARGO_TARGET_DIR set to $1 (or unset).
target_from_scratch() {
    (
        cd "$scratch"
        if [ -n "$1" ]; then export CARGO_TARGET_DIR="$1"; else unset CARGO_TARGET_DIR; fi
        source "$LIB"
        target_dir
    )
}

check "no CARGO_TARGET_DIR: the workspace's target/" "$ROOT/target" "$(target_from_scratch "")"
check "an absolute CARGO_TARGET_DIR" "/nonexistent/bidir-t" "$(target_from_scratch /nonexistent/bidir-t)"
check "a relative CARGO_TARGET_DIR: relative to the caller's directory" \
    "$scratch/build/t" "$(target_from_scratch build/t)"
check "the peers' workspace follows CARGO_TARGET_DIR too" "$scratch/t" \
    "$(cd "$scratch" && CARGO_TARGET_DIR=t bash -c "source '$LIB'; target_dir benches/peers/Cargo.toml")"

source "$LIB"

# A server that dies before it listens: reported at once, with its status and log.
port="$(free_port)"
start=$SECONDS
out="$( (start_server "the test server" "$port" "$scratch/dies.log" 20 \
    sh -c 'echo "cannot bind: boom" >&2; sleep 0.2; exit 3') 2>&1)" && rc=0 || rc=$?
check "a server that dies: start_server fails" 1 "$rc"
check "a server that dies: at once, not after the 20 s limit" 1 "$((SECONDS - start < 5))"
contains "a server that dies: its exit status" "exited with status 3" "$out"
contains "a server that dies: its log" "cannot bind: boom" "$out"

# A command that does not exist: the same, status 127.
out="$( (start_server "the test server" "$port" "$scratch/missing.log" 20 \
    "$scratch/no-such-server") 2>&1)" && rc=0 || rc=$?
check "a missing binary: start_server fails" 1 "$rc"
contains "a missing binary: status 127" "exited with status 127" "$out"

# A server that lives but never listens: fails after the limit, and says so.
start_us=${EPOCHREALTIME/[.,]/}
out="$( (r=0; start_server "the test server" "$port" "$scratch/silent.log" 1 sleep 30 || r=$?
    stop_server; exit $r) 2>&1)" && rc=0 || rc=$?
check "a silent server: start_server fails" 1 "$rc"
elapsed_ms=$(((${EPOCHREALTIME/[.,]/} - start_us) / 1000))
check "a silent server: after its limit of 1 s, not before (${elapsed_ms} ms)" 1 \
    "$((elapsed_ms >= 1000 && elapsed_ms < 4000))"
contains "a silent server: says it did not listen" "did not listen on port $port within 1 s" "$out"

# A server that listens (after a moment): start_server returns with SERVER_PID set.
start_server "the test server" "$port" "$scratch/listens.log" 20 \
    python3 -c 'import socket, sys, time
time.sleep(0.3)
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
while True: s.accept()[0].close()' "$port" && rc=0 || rc=$?
check "a listening server: start_server returns 0" 0 "$rc"
check "a listening server: SERVER_PID is the running server" 0 "$(kill -0 "$SERVER_PID" && echo 0)"
pid=$SERVER_PID
stop_server
check "stop_server stops it" 1 "$(kill -0 "$pid" 2> /dev/null && echo 0 || echo 1)"

if [ "$failures" -gt 0 ]; then
    echo "scripts/lib-test.sh: $failures failed"
    exit 1
fi
echo "scripts/lib-test.sh: all passed"
