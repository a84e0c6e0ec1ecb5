#!/usr/bin/env bash
# Runs the application protocol's examples as their users do: the longwork server with short
# works and its client, which starts six works and must hear both outcomes (work 5 fails, the
# others finish) and the server's count — over bidir.json.v1, over bidir.bin.v1, and encrypted
# (a generated key file, both key modes); a client with another key must be refused (403).
# Then the chat server with a key and two Rust chat clients on its encrypted path: one says
# something, the other hears it. (The chat page is driven by scripts/browser/check.sh: two
# Chromium pages and a Rust client.)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TARGET="$(target_dir)"
cargo build --release --locked --example longwork --example chat -q
LONGWORK="$TARGET/release/examples/longwork"
CHAT="$TARGET/release/examples/chat"
KEYS="$(mktemp -d)"
cleanup() {
    stop_server
    rm -rf "$KEYS"
}
trap cleanup EXIT
"$LONGWORK" --gen-key "$KEYS/key" > /dev/null
"$LONGWORK" --gen-key "$KEYS/other" > /dev/null
[ "$(stat -c %s "$KEYS/key")" = 32 ] || { echo "--gen-key: not 32 bytes" >&2; exit 1; }

# Starts a longwork server with SERVER_ARGS (an array) and runs its client with ARGS: the
# client must hear both outcomes (the server numbers works from 1, so its work 5 fails) and
# the server's count.
longwork() {
    PORT="$(free_port)"
    start_server "the longwork server" "$PORT" "$TARGET/longwork.log" 20 \
        "$LONGWORK" --addr "127.0.0.1:$PORT" --workers 2 --no-pin --work-ms 300..600 "${SERVER_ARGS[@]}"
    local out
    out="$("$LONGWORK" client --url "ws://127.0.0.1:$PORT/rpc" --works 6 --wait 20 "$@")"
    echo "$out"
    for expected in "finished: work-1 in" "failed: work-5: work 5 failed" "all 6 works called back; the server has started 6 works"; do
        grep -qF "$expected" <<< "$out" || { echo "longwork client $*: no \"$expected\"" >&2; exit 1; }
    done
    [ "$(grep -c '^finished: ' <<< "$out")" = 5 ] || { echo "longwork client $*: not five works finished" >&2; exit 1; }
    stop_server
}

SERVER_ARGS=()
echo "--- longwork client: six works, bidir.json.v1"
longwork
echo "--- longwork client: six works, bidir.bin.v1"
longwork --bin
SERVER_ARGS=(--key "$KEYS/key")
for mode in psk ecdhe; do
    echo "--- longwork client: six works, bidir.bin.v1 encrypted, $mode key exchange"
    longwork --key "$KEYS/key" --key-mode "$mode"
done
echo "--- longwork client: another key is refused"
PORT="$(free_port)"
start_server "the longwork server" "$PORT" "$TARGET/longwork.log" 20 \
    "$LONGWORK" --addr "127.0.0.1:$PORT" --workers 2 --no-pin --key "$KEYS/key"
status=0
err="$("$LONGWORK" client --url "ws://127.0.0.1:$PORT/rpc" --works 1 --key "$KEYS/other" 2>&1 > /dev/null)" || status=$?
echo "$err"
[ "$status" = 1 ] || { echo "longwork client with another key: exit status $status, not 1" >&2; exit 1; }
grep -qF "403" <<< "$err" || { echo "longwork client with another key: no 403 in \"$err\"" >&2; exit 1; }
stop_server

echo "--- chat: two Rust clients on the encrypted path"
PORT="$(free_port)"
start_server "the chat server" "$PORT" "$TARGET/chat.log" 20 \
    "$CHAT" --addr "127.0.0.1:$PORT" --workers 2 --no-pin --key "$KEYS/key"
URL="ws://127.0.0.1:$PORT/rpc-secure"
# Grace listens, its input held open by a fifo until Ada has spoken.
mkfifo "$KEYS/grace.in"
"$CHAT" client --url "$URL" --pseudo grace --key "$KEYS/key" --key-mode psk \
    < "$KEYS/grace.in" > "$KEYS/grace.out" 2> "$KEYS/grace.err" &
GRACE=$!
exec 3> "$KEYS/grace.in"
# Waits up to 10 s for FILE to hold TEXT.
wait_for() {
    local file=$1 text=$2 i
    for i in $(seq 100); do
        grep -qF "$text" "$file" && return 0
        sleep 0.1
    done
    echo "chat: no \"$text\" in $file within 10 s:" >&2
    cat "$KEYS"/grace.* >&2 || true
    return 1
}
wait_for "$KEYS/grace.err" "joined $URL as grace"
echo "hello from ada, sealed" | "$CHAT" client --url "$URL" --pseudo ada --key "$KEYS/key"
wait_for "$KEYS/grace.out" "ada: hello from ada, sealed"
exec 3>&-
wait "$GRACE" || { echo "chat client grace: exit status $?" >&2; exit 1; }
cat "$KEYS/grace.out"
stop_server
