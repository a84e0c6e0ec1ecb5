#!/usr/bin/env bash
# Echo over loopback with 1 KiB JSON messages, permessage-deflate off and in each profile:
# the echo example (one worker) on one CPU, loopback_load on another. Prints one line per
# profile with the server's CPU time per message. docs/deflate.md quotes its output.
#
#   scripts/bench-echo-deflate.sh [SECONDS] [SERVER_CPU] [CLIENT_CPU]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TARGET="$(target_dir)"
SECONDS_EACH="${1:-8}"
SERVER_CPU="${2:-0}"
CLIENT_CPU="${3:-1}"
cargo build --release --locked -q --example echo --example loopback_load
PORT=9131
for profile in "off" "shared" "dedicated:9" "dedicated:12" "dedicated:12 live" "dedicated:15"; do
    deflate="${profile%% *}"
    context=()
    [ "$profile" != "${profile% live}" ] && context=(--context live)
    taskset -c "$SERVER_CPU" "$TARGET/release/examples/echo" --addr "127.0.0.1:$PORT" --workers 1 \
        --no-pin --deflate "$deflate" "${context[@]}" > /dev/null 2>&1 &
    SERVER=$!
    sleep 0.5
    echo "--- deflate $profile"
    taskset -c "$CLIENT_CPU" "$TARGET/release/examples/loopback_load" --addr "127.0.0.1:$PORT" \
        --conns 50 --inflight 8 --size 1024 --json --seconds "$SECONDS_EACH" --warmup 2 \
        --deflate "$deflate" --server-pid "$SERVER" 2>/dev/null
    kill -INT "$SERVER"
    wait "$SERVER" 2> /dev/null || true
    PORT=$((PORT + 1))
done
