#!/usr/bin/env bash
# Serves the echo example and drives its page in headless Chromium (Playwright):
# permessage-deflate negotiated, an echo, a 1 MiB round trip, a clean close — once with the
# shared compression profile (the echo default), once with a compact 9-bit dedicated one
# (Chromium then compresses with context takeover), and once with the shared profile over
# https, where the page must open wss://. Then the browser rpc module against the test services
# of tests/browser.rs (rpc-check.js, run by that test), and the chat example's page in two
# browser pages and a Rust terminal client talking to each other (chat-check.js), over http and
# ws://, then over https and wss://. The https servers make a throwaway certificate
# (--tls-self-signed); Chromium trusts its key alone (--ignore-certificate-errors-spki-list, the
# hash from the server's log) and the Rust client the certificate (--trust). Installs Debian's
# chromium and playwright-core (npm) into browser/ in cargo's target directory on first use.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
TARGET="$(target_dir)"
if [ ! -x /usr/bin/chromium ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium > /dev/null
fi
mkdir -p "$TARGET/browser"
if [ ! -d "$TARGET/browser/node_modules/playwright-core" ]; then
    (cd "$TARGET/browser" && npm init -y > /dev/null && npm install --no-audit --no-fund -q playwright-core@1 > /dev/null)
fi
export NODE_PATH="$TARGET/browser/node_modules"
cargo build --release --locked --example echo -q
# The chat example with the redis feature: the same binary serves one node or several.
cargo build --release --locked --features redis --example chat -q
CERT="$TARGET/browser/cert.pem"

# Starts WHAT (LOG, COMMAND...) on a free port over SCHEME (http or https: with a self-signed
# certificate in $CERT) and sets PORT, and TRUST to the Chromium arguments that trust it.
serve() {
    local what=$1 scheme=$2 log=$3 spki
    shift 3
    PORT="$(free_port)"
    TRUST=""
    if [ "$scheme" = https ]; then
        start_server "$what" "$PORT" "$log" 20 "$@" --addr "127.0.0.1:$PORT" --tls-self-signed "$CERT"
        spki="$(sed -n 's/.*(SPKI): //p' "$log")"
        if [ -z "$spki" ]; then
            echo "$what logged no certificate hash (SPKI) in $log" >&2
            return 1
        fi
        TRUST="--ignore-certificate-errors-spki-list=$spki"
    else
        start_server "$what" "$PORT" "$log" 20 "$@" --addr "127.0.0.1:$PORT"
    fi
}

# The echo page over SCHEME with the server's DEFLATE profile.
echo_page() {
    local scheme=$1 deflate=$2
    serve "the echo server" "$scheme" "$TARGET/browser/echo.log" \
        "$TARGET/release/examples/echo" --workers 2 --no-pin --deflate "$deflate"
    echo "--- echo page over $scheme, deflate $deflate"
    CHROMIUM_ARGS="$TRUST" node scripts/browser/echo-check.js "$scheme://127.0.0.1:$PORT/" \
        "$TARGET/browser/echo-$scheme.png"
    stop_server
}

# The chat page over SCHEME: two browser pages and a Rust client (trusting $CERT over https).
chat_page() {
    local scheme=$1 trust=()
    [ "$scheme" = http ] || trust=("$CERT")
    serve "the chat server" "$scheme" "$TARGET/browser/chat.log" \
        "$TARGET/release/examples/chat" --workers 2 --no-pin
    echo "--- chat page over $scheme, two browsers and a Rust client"
    CHROMIUM_ARGS="$TRUST" node scripts/browser/chat-check.js "$scheme://127.0.0.1:$PORT/" \
        "$TARGET/browser/chat-$scheme.png" "$TARGET/release/examples/chat" "${trust[@]}"
    stop_server
}

# Two chat nodes over one Redis (a redis-server of its own on a free port): ada's page on the
# first, bob's page and the Rust client on the second; each hears the others.
chat_nodes() {
    local redis_port first second
    scripts/redis/install.sh > /dev/null
    redis_port="$(free_port)"
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
        > "$TARGET/browser/redis.log" 2>&1 &
    REDIS_PID=$!
    serve "the chat server (node 1)" http "$TARGET/browser/chat-node1.log" \
        "$TARGET/release/examples/chat" --workers 1 --no-pin --redis "redis://127.0.0.1:$redis_port"
    first=$PORT
    NODE1_PID=$SERVER_PID
    serve "the chat server (node 2)" http "$TARGET/browser/chat-node2.log" \
        "$TARGET/release/examples/chat" --workers 1 --no-pin --redis "redis://127.0.0.1:$redis_port"
    second=$PORT
    echo "--- chat page on two nodes over Redis: ada on :$first, bob and a Rust client on :$second"
    SECOND_URL="http://127.0.0.1:$second/" node scripts/browser/chat-check.js \
        "http://127.0.0.1:$first/" "$TARGET/browser/chat-nodes.png" "$TARGET/release/examples/chat"
    stop_nodes
}

stop_nodes() {
    stop_server
    if [ -n "${NODE1_PID-}" ]; then
        kill "$NODE1_PID" 2> /dev/null || true
        wait "$NODE1_PID" 2> /dev/null || true
        NODE1_PID=
    fi
    if [ -n "${REDIS_PID-}" ]; then
        kill "$REDIS_PID" 2> /dev/null || true
        wait "$REDIS_PID" 2> /dev/null || true
        REDIS_PID=
    fi
}

trap stop_nodes EXIT
echo_page http shared
echo_page http dedicated:9
echo_page https shared
echo "--- the browser rpc module (tests/browser.rs runs rpc-check.js)"
cargo test --locked -q --features redis --test browser -- --ignored
chat_page http
chat_page https
chat_nodes
