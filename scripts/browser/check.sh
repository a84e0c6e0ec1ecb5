#!/usr/bin/env bash
# Serves the echo example and drives its page in headless Chromium (Playwright):
# permessage-deflate negotiated, an echo, a 1 MiB round trip, a clean close — once with the
# shared compression profile (the echo default) and once with a compact 9-bit dedicated one
# (Chromium then compresses with context takeover). Installs Debian's chromium and
# playwright-core (npm) into browser/ in cargo's target directory on first use.
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
cargo build --release --locked --example echo -q
trap stop_server EXIT
for deflate in shared dedicated:9; do
    PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    start_server "the echo server" "$PORT" "$TARGET/browser/echo.log" 20 \
        "$TARGET/release/examples/echo" --addr "127.0.0.1:$PORT" --workers 2 --no-pin --deflate "$deflate"
    echo "--- echo page, deflate $deflate"
    NODE_PATH="$TARGET/browser/node_modules" node scripts/browser/echo-check.js \
        "http://127.0.0.1:$PORT/" "$TARGET/browser/echo.png"
    stop_server
done
