# Sourced by scripts/peers/build.sh and scripts/peers/smoke.sh (not run directly),
# from the repository root. Paths and Node selection for the benchmark peer
# echo servers in benches/peers.

source scripts/lib.sh
PEERS_DIR=benches/peers
PEERS_NODE_DIR=$PEERS_DIR/node
# Absolute: benches/peers/target/release, or under CARGO_TARGET_DIR where that is set.
PEERS_BIN_DIR=$(target_dir "$PEERS_DIR/Cargo.toml")/release
PEERS_RUST_BINS=(tungstenite-echo fastwebsockets-echo ws-rs-echo jsonrpsee-echo floor-echo)
PEERS_NODE_SCRIPTS=(ws-echo.js uws-echo.js uws-pubsub.js)

# The Node the peers run on: Node 20 (module ABI 115), for which
# @trufflesuite/uws-js-unofficial ships a native uWebSockets.js binary, and so
# that ws/uWS figures always come from the same Node major. When the system
# `node` is not Node 20, build.sh installs this exact version from the npm
# registry (package node-linux-<arch>, a plain prebuilt binary, no install
# scripts) into benches/peers/node/.runtime.
PEERS_NODE_VERSION=20.20.2
PEERS_NODE_ABI=115
PEERS_NODE_RUNTIME=$PWD/$PEERS_NODE_DIR/.runtime

peers_log() { printf '[peers] %s\n' "$*" >&2; }
peers_die() { printf '[peers] error: %s\n' "$*" >&2; exit 1; }

# Prints the module ABI of the given node binary, or nothing.
peers_node_abi() { "$1" -p 'process.versions.modules' 2>/dev/null || true; }

# Prints the path of a Node 20 (ABI 115) binary usable for the peers, or
# returns 1. Order: $PEERS_NODE, the system node, the provisioned runtime.
peers_find_node() {
  local candidate
  for candidate in "$(readlink -f "${PEERS_NODE:-/nonexistent}" || true)" "$(command -v node || true)" "$PEERS_NODE_RUNTIME/node_modules/.bin/node"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    if [ "$(peers_node_abi "$candidate")" = "$PEERS_NODE_ABI" ]; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  return 1
}
