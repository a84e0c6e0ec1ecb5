#!/usr/bin/env bash
# Bytes on the wire for the same scripted sessions of the chat and longwork examples in each
# protocol: bidir.json.v1, bidir.bin.v1, and bidir.bin.v1 encrypted (psk and ecdhe key
# exchanges). Each session runs against a fresh server started with --report-bytes, which
# prints on shutdown what it read from and wrote to its sockets: upgrades, frame headers,
# messages and close frames, everything. Prints a Markdown table (docs/benchmarks.md,
# "Application protocol: bytes on the wire"); the sessions:
#
#   longwork, no work   connect, one call (total_work_count), close
#   longwork, 6 works   six start_work calls with a callback, six callbacks, one call, close
#   chat, 10 lines      two members join; one says ten short lines, 100 ms apart; both hear
#                       each; both leave
#   chat, 1 long line   the same with one line of 1.1 KB of English prose: its messages are
#                       over the 512 bytes above which bidir.bin.v1 compresses (LZ4)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TARGET="$(target_dir)"
cargo build --release --locked --example longwork --example chat -q
LONGWORK="$TARGET/release/examples/longwork"
CHAT="$TARGET/release/examples/chat"
WORK="$(mktemp -d)"
cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT
"$LONGWORK" --gen-key "$WORK/key" > /dev/null
PROTOCOLS=(json bin psk ecdhe)

# The client flags of PROTOCOL.
client_args() {
    case $1 in
        json) ;;
        bin) echo --bin ;;
        *) echo --key "$WORK/key" --key-mode "$1" ;;
    esac
}

# Stops the server and prints "IN OUT", the bytes its log reports.
server_bytes() {
    stop_server
    sed -n 's/^bytes: \([0-9]*\) in, \([0-9]*\) out$/\1 \2/p' "$WORK/server.log"
}

# Prints "IN OUT" for a longwork session of WORKS works in PROTOCOL.
longwork_session() {
    local works=$1 protocol=$2 key=()
    [ "$protocol" = json ] || [ "$protocol" = bin ] || key=(--key "$WORK/key")
    PORT="$(free_port)"
    start_server "the longwork server" "$PORT" "$WORK/server.log" 20 "$LONGWORK" \
        --addr "127.0.0.1:$PORT" --workers 1 --no-pin --work-ms 100..200 --report-bytes "${key[@]}"
    # shellcheck disable=SC2046 # the flags split on purpose
    "$LONGWORK" client --url "ws://127.0.0.1:$PORT/rpc" --works "$works" --wait 20 \
        $(client_args "$protocol") > /dev/null 2>&1
    server_bytes
}

# Prints "IN OUT" for a chat session in PROTOCOL: the lines of file LINES said 100 ms apart.
chat_session() {
    local lines=$1 protocol=$2 path=/rpc
    case $protocol in psk | ecdhe) path=/rpc-secure ;; esac
    PORT="$(free_port)"
    start_server "the chat server" "$PORT" "$WORK/server.log" 20 "$CHAT" \
        --addr "127.0.0.1:$PORT" --workers 1 --no-pin --report-bytes --key "$WORK/key"
    local url="ws://127.0.0.1:$PORT$path" count
    count="$(wc -l < "$lines")"
    rm -f "$WORK/in"
    mkfifo "$WORK/in"
    # shellcheck disable=SC2046
    "$CHAT" client --url "$url" --pseudo grace $(client_args "$protocol") \
        < "$WORK/in" > "$WORK/grace.out" 2> "$WORK/grace.err" &
    local grace=$!
    exec 3> "$WORK/in"
    wait_lines "$WORK/grace.err" "joined " 1
    # shellcheck disable=SC2046
    while IFS= read -r line; do
        echo "$line"
        sleep 0.1
    done < "$lines" | "$CHAT" client --url "$url" --pseudo ada $(client_args "$protocol") > /dev/null 2>&1
    wait_lines "$WORK/grace.out" "ada: " "$count"
    exec 3>&-
    wait "$grace"
    server_bytes
}

# Waits up to 10 s for FILE to have N lines that start with TEXT.
wait_lines() {
    local file=$1 text=$2 n=$3 i
    for i in $(seq 100); do
        [ "$(grep -c "^$text" "$file")" -ge "$n" ] && return 0
        sleep 0.1
    done
    echo "no $n lines starting with \"$text\" in $file within 10 s" >&2
    return 1
}

for i in $(seq 10); do echo "line $i: see you at the station at $i o'clock"; done > "$WORK/short"
tr '\n' ' ' > "$WORK/long" << 'PROSE'
The application protocol carries requests, answers, notifications, callback invocations and
events over one WebSocket connection. Its first encoding is JSON, which a browser reads with a
few lines of JavaScript; its second is MessagePack, which is smaller and faster to read and to
write, and which may be compressed and encrypted. Compression happens inside the protocol,
before encryption, because ciphertext does not compress: a message longer than a threshold is
compressed with LZ4, and sent stored when that does not make it shorter. Encryption uses
AES-256-GCM with a key for each direction of each connection, agreed in the upgrade from a
pre-shared key and fresh nonces from both sides, or from an X25519 exchange authenticated by
that key, so that whoever learns the key later still cannot read what was recorded. The nonce
of each message is the count of messages its side sent before, so a message replayed,
reordered, dropped, truncated or altered fails its authentication, closes the connection, and
is never delivered. Whoever reads this line in a chat room will have seen it arrive whole.
PROSE
echo >> "$WORK/long"

# Prints one table row: NAME, then the sessions' "IN OUT" pairs in PROTOCOLS order.
row() {
    local name=$1
    shift
    local json_total=$(($1 + $2)) cells=" | $1 / $2"
    shift 2
    while [ $# -gt 0 ]; do
        cells+=" | $1 / $2 ($(python3 -c "print(f'{($1 + $2) / $json_total:.2f}')"))"
        shift 2
    done
    echo "| $name$cells |"
}

echo "| session | json in / out | bin (ratio) | bin + psk key (ratio) | bin + ecdhe key (ratio) |"
echo "| --- | --- | --- | --- | --- |"
for works in 0 6; do
    # shellcheck disable=SC2046
    row "longwork, $works works" $(for p in "${PROTOCOLS[@]}"; do longwork_session "$works" "$p"; done)
done
# shellcheck disable=SC2046
row "chat, 10 short lines" $(for p in "${PROTOCOLS[@]}"; do chat_session "$WORK/short" "$p"; done)
# shellcheck disable=SC2046
row "chat, 1 line of $(wc -c < "$WORK/long") B" $(for p in "${PROTOCOLS[@]}"; do chat_session "$WORK/long" "$p"; done)
