#!/usr/bin/env bash
# Runs the application protocol's examples as their users do: the longwork server with short
# works and its client, which starts six works and must hear both outcomes (work 5 fails, the
# others finish) and the server's count. (The chat example is driven by scripts/browser/check.sh:
# two Chromium pages and a Rust client.)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TARGET="$(target_dir)"
cargo build --release --locked --example longwork -q
trap stop_server EXIT
PORT="$(free_port)"
start_server "the longwork server" "$PORT" "$TARGET/longwork.log" 20 \
    "$TARGET/release/examples/longwork" --addr "127.0.0.1:$PORT" --workers 2 --no-pin --work-ms 300..600
echo "--- longwork client: six works"
out="$("$TARGET/release/examples/longwork" client --url "ws://127.0.0.1:$PORT/rpc" --works 6 --wait 20)"
echo "$out"
for expected in "finished: work-1 in" "failed: work-5: work 5 failed" "all 6 works called back; the server has started 6 works"; do
    grep -qF "$expected" <<< "$out" || { echo "longwork client: no \"$expected\"" >&2; exit 1; }
done
[ "$(grep -c '^finished: ' <<< "$out")" = 5 ] || { echo "longwork client: not five works finished" >&2; exit 1; }
stop_server
