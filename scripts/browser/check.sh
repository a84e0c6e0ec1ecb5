#!/usr/bin/env bash
# Serves the echo example and drives its page in headless Chromium (Playwright):
# permessage-deflate negotiated, an echo, a 1 MiB round trip, a clean close — once with the
# shared compression profile (the echo default) and once with a compact 9-bit dedicated one
# (Chromium then compresses with context takeover). Then the browser rpc module against the
# test services of tests/browser.rs (rpc-check.js, run by that test), and the chat example's
# page in two browser pages and a Rust terminal client talking to each other (chat-check.js). Installs Debian's chromium
# and playwright-core (npm) into browser/ in cargo's target directory on first use.
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
cargo build --release --locked --example echo --example chat -q
trap stop_server EXIT
for deflate in shared dedicated:9; do
    PORT="$(free_port)"
    start_server "the echo server" "$PORT" "$TARGET/browser/echo.log" 20 \
        "$TARGET/release/examples/echo" --addr "127.0.0.1:$PORT" --workers 2 --no-pin --deflate "$deflate"
    echo "--- echo page, deflate $deflate"
    node scripts/browser/echo-check.js "http://127.0.0.1:$PORT/" "$TARGET/browser/echo.png"
    stop_server
done
echo "--- the browser rpc module (tests/browser.rs runs rpc-check.js)"
cargo test --locked -q --test browser -- --ignored
PORT="$(free_port)"
start_server "the chat server" "$PORT" "$TARGET/browser/chat.log" 20 \
    "$TARGET/release/examples/chat" --addr "127.0.0.1:$PORT" --workers 2 --no-pin
echo "--- chat page, two browsers and a Rust client"
node scripts/browser/chat-check.js "http://127.0.0.1:$PORT/" "$TARGET/browser/chat.png" "$TARGET/release/examples/chat"
stop_server
