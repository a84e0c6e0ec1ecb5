#!/usr/bin/env bash
# Smoke test of the benchmark peer echo servers (benches/peers). For each
# server: start it on a free loopback port, run benches/peers/node/smoke-client.js
# against it (text, binary, fragmented, 1 MiB and 16 MiB echoes with their
# types, ping/pong, no compression, SMOKE_IDLE concurrent idle connections,
# close handshake), stop it. Exits non-zero if any server fails.
# Run from the repository root: scripts/peers/smoke.sh [SERVER...]
#   SERVER: tungstenite-echo fastwebsockets-echo ws-rs-echo ws-echo uws-echo (default: all)
#   SMOKE_IDLE=N  idle connections to hold (default 2000)
# Builds first (scripts/peers/build.sh) when something is missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=scripts/peers/common.sh
source scripts/peers/common.sh

idle=${SMOKE_IDLE:-2000}
# The echo servers (jsonrpsee-echo answers calls, not echoes: bidir-load --rpc jsonrpc checks it).
all=(tungstenite-echo fastwebsockets-echo ws-rs-echo ws-echo uws-echo)
servers=("$@")
[ ${#servers[@]} -gt 0 ] || servers=("${all[@]}")

need_build=0
for bin in "${PEERS_RUST_BINS[@]}"; do [ -x "$PEERS_BIN_DIR/$bin" ] || need_build=1; done
[ -d "$PEERS_NODE_DIR/node_modules/ws" ] && [ -d "$PEERS_NODE_DIR/node_modules/uWebSockets.js" ] || need_build=1
peers_find_node >/dev/null || need_build=1
if [ $need_build = 1 ]; then
  peers_log "peers not built yet: running scripts/peers/build.sh"
  scripts/peers/build.sh
fi
node_bin=$(peers_find_node) || peers_die "no Node 20 found; run scripts/peers/build.sh"

# The servers and the client each hold SMOKE_IDLE + a few descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -gt $((idle + 100)) ] \
  || peers_die "open-files limit $(ulimit -n) is too low for SMOKE_IDLE=$idle"

logdir=$(mktemp -d "${TMPDIR:-/tmp}/peers-smoke.XXXXXX")
server_pid=
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

free_port() {
  "$node_bin" -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"
}

# Waits up to 10 s for 127.0.0.1:$1 to accept while the server lives.
wait_port() {
  local i
  for i in $(seq 100); do
    kill -0 "$server_pid" 2>/dev/null || return 1
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

passed=0
failed=0
failed_names=()
for name in "${servers[@]}"; do
  case "$name" in
    tungstenite-echo|fastwebsockets-echo|ws-rs-echo) cmd=("$PEERS_BIN_DIR/$name") ;;
    ws-echo|uws-echo) cmd=("$node_bin" "$PEERS_NODE_DIR/$name.js") ;;
    *) peers_die "unknown server '$name' (known: ${all[*]})" ;;
  esac
  port=$(free_port)
  log="$logdir/$name.log"
  peers_log "$name: starting on 127.0.0.1:$port (log $log)"
  "${cmd[@]}" --port "$port" >"$log" 2>&1 &
  server_pid=$!
  ok=1
  if ! wait_port "$port"; then
    peers_log "$name: FAIL: server did not start listening; its log:"
    sed 's/^/    /' "$log" >&2
    ok=0
  elif ! timeout 180 "$node_bin" "$PEERS_NODE_DIR/smoke-client.js" \
      --url "ws://127.0.0.1:$port/smoke/$name" --idle "$idle"; then
    peers_log "$name: FAIL: smoke client failed; server log:"
    tail -n 20 "$log" | sed 's/^/    /' >&2
    ok=0
  elif ! kill -0 "$server_pid" 2>/dev/null; then
    peers_log "$name: FAIL: server exited during the test"
    ok=0
  fi
  cleanup
  server_pid=
  if [ $ok = 1 ]; then
    passed=$((passed + 1))
    peers_log "$name: PASS"
  else
    failed=$((failed + 1))
    failed_names+=("$name")
  fi
done

echo "peers smoke: $passed passed, $failed failed"
if [ $failed -gt 0 ]; then
  peers_log "failed: ${failed_names[*]}"
  exit 1
fi
rm -rf "$logdir"
