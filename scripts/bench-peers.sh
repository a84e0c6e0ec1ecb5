#!/usr/bin/env bash
# Side-by-side echo benchmark: bidir and its peers, each server pinned to one core with
# bidir-load pinned to another, in one run. Prints a table and writes, under OUT (default
# peers/<date> in cargo's target directory, which honours CARGO_TARGET_DIR):
#   results.jsonl      one bidir-load JSON result per server and cell
#   CELL-SERVER-rN.hgrm  full latency distributions, per round
#   CELL.svg           latency-by-percentile plot of every server in the cell (each server's
#                      median round)
#   syscalls.jsonl     system calls per message, counted in a separate run per cell and
#                      server (perf's raw_syscalls:sys_enter tracepoint; skipped without perf)
#   floor.jsonl        fanout cells: the share of the server's CPU in the kernel's per-socket
#                      send (tcp_sendmsg and what it calls, the loopback delivery included),
#                      sampled in a separate run per server (perf record; skipped without perf)
#   table.md           the table for docs/benchmarks.md: medians over the rounds
#
# Every round runs every cell against every server, in a rotated order, so a disturbance on
# this shared machine hits one sample of several servers rather than all samples of one; the
# table quotes medians.
#
#   scripts/bench-peers.sh [--rounds N] [--duration SECS] [--warmup SECS] [--servers "bidir ws ..."]
#                          [--cells "c100x16 c100x4x4k c1000 c1 idle10k h10k rpc100x16 rpc1 fanout10k
#                                   d100x4x1k d100x4x16k dd100x4x1k"]
#                          [--server-cpu N --load-cpu M] [--no-syscalls] [--no-floor]
#
# Servers: bidir (examples/echo, one worker, deflate off, the backend it picks: io_uring where
# the kernel has it), bidir-epoll (the same forced onto epoll), tungstenite (tokio-tungstenite,
# current_thread), fastwebsockets (tokio current_thread), ws-rs, node-ws (Node `ws`),
# uws (uWebSockets.js). The rpc cells (rpc100x16, rpc1: calls of an echo method with a small
# struct, `bidir-load --rpc`) run on bidir-rpc / bidir-rpc-epoll (examples/rpc_echo, one
# worker) and jsonrpsee (its WebSocket server, tokio current_thread); the fanout cell (one
# event to 10 000 subscribers, `bidir-load --mode fanout`) on bidir-pubsub / bidir-pubsub-epoll
# (examples/rpc_echo's /sub and /pub: the engine's pub/sub), bidir-rpc-pubsub /
# bidir-rpc-pubsub-epoll (its `Bench.publish` over bidir.json.v1: rpc topics) and uws-pubsub
# (uWebSockets.js's app.publish); the permessage-deflate cells (d100x4x1k, d100x4x16k: JSON-like
# text, `--deflate shared`, no context) on bidir-deflate / bidir-deflate-epoll (examples/echo
# --deflate shared) and uws-deflate (uWS.SHARED_COMPRESSOR), dd100x4x1k (`--deflate dedicated:15`,
# per-connection windows) on bidir-deflate-ded (echo --deflate dedicated:15 --context live) and
# uws-deflate-ded (uWS.DEDICATED_COMPRESSOR and DEDICATED_DECOMPRESSOR); the echo cells on the
# others. bidir-busy is bidir with `--busy-poll 50` (the latency option: 50 µs of polling before
# each sleep), in the c1 cell only; not in the default list, and its CPU figure counts the
# spinning. floor (benches/peers floor-echo: a raw TCP echo on io_uring with bidir's receive and
# send, no WebSocket) runs the echo cells with `bidir-load --raw`: the machine's floor, over which
# the table quotes bidir's ratio per cell. bidir-tls / bidir-tls-epoll (examples/echo --tls) and
# uws-tls (uWS.SSLApp) run the echo cells over wss:// (`bidir-load --trust`: the handshake cells
# then time the TLS handshake too), on a certificate made once per run with openssl (EC P-256,
# SAN IP:127.0.0.1; OUT/tls-cert.pem); not in the default list. Peers are built by
# scripts/peers/build.sh (dev only, outside the bidir crate's dependency tree).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source scripts/peers/common.sh
TARGET="$(target_dir)"

ROUNDS=3
DURATION=5
WARMUP=1
SERVERS="bidir bidir-epoll floor uws fastwebsockets tungstenite ws-rs node-ws bidir-rpc bidir-rpc-epoll jsonrpsee bidir-pubsub bidir-pubsub-epoll bidir-rpc-pubsub bidir-rpc-pubsub-epoll uws-pubsub bidir-deflate bidir-deflate-epoll uws-deflate bidir-deflate-ded uws-deflate-ded"
CELLS="c100x16 c100x4x4k c1000 c1 idle10k h10k rpc100x16 rpc1 fanout10k d100x4x1k d100x4x16k dd100x4x1k"
SERVER_CPU=0
LOAD_CPU=1
SYSCALLS=1
FLOOR=1
OUT="$TARGET/peers/$(date -u +%Y-%m-%d)"
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift ;;
        --duration) DURATION="$2"; shift ;;
        --warmup) WARMUP="$2"; shift ;;
        --servers) SERVERS="$2"; shift ;;
        --cells) CELLS="$2"; shift ;;
        --server-cpu) SERVER_CPU="$2"; shift ;;
        --load-cpu) LOAD_CPU="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        --no-syscalls) SYSCALLS=0 ;;
        --no-floor) FLOOR=0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$OUT"
: > "$OUT/results.jsonl"
: > "$OUT/syscalls.jsonl"
: > "$OUT/floor.jsonl"

cargo build --release --locked --example echo --example rpc_echo -p bidir -q
cargo build --release --locked -p bidir-load -q
LOAD="$TARGET/release/bidir-load"
if [ -n "$(echo " $SERVERS " | tr ' ' '\n' | grep -v '^bidir' | grep -v '^$' || true)" ]; then
    bash scripts/peers/build.sh > "$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }
    NODE="$(peers_find_node)"
fi
ulimit -n "$(ulimit -Hn)"

# The TLS servers' certificate, and the load's --trust of it: made once per run. webpki takes a
# self-signed certificate as its own trust anchor only if it is not a CA (CA:FALSE).
TLS_CERT="$OUT/tls-cert.pem"
TLS_KEY="$OUT/tls-key.pem"
if echo " $SERVERS " | grep -q -- '-tls[ -]'; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
        -addext basicConstraints=critical,CA:FALSE \
        -keyout "$TLS_KEY" -out "$TLS_CERT" 2> "$OUT/tls-cert.log" \
        || { cat "$OUT/tls-cert.log"; exit 1; }
fi


start_peer() { # NAME PORT -> sets SERVER_PID
    local name=$1 port=$2 cmd
    case "$name" in
        bidir) cmd=(env BIDIR_BACKEND=auto "$TARGET/release/examples/echo" --addr "127.0.0.1:$port" --workers 1 --deflate off) ;;
        bidir-epoll) cmd=(env BIDIR_BACKEND=epoll "$TARGET/release/examples/echo" --addr "127.0.0.1:$port" --workers 1 --deflate off) ;;
        bidir-busy) cmd=(env BIDIR_BACKEND=auto "$TARGET/release/examples/echo" --addr "127.0.0.1:$port" --workers 1 --deflate off --busy-poll 50) ;;
        bidir-tls) cmd=(env BIDIR_BACKEND=auto "$TARGET/release/examples/echo" --addr "127.0.0.1:$port" --workers 1 --deflate off --tls "$TLS_CERT" "$TLS_KEY") ;;
        bidir-tls-epoll) cmd=(env BIDIR_BACKEND=epoll "$TARGET/release/examples/echo" --addr "127.0.0.1:$port" --workers 1 --deflate off --tls "$TLS_CERT" "$TLS_KEY") ;;
        tungstenite) cmd=("$PEERS_BIN_DIR/tungstenite-echo" --port "$port") ;;
        fastwebsockets) cmd=("$PEERS_BIN_DIR/fastwebsockets-echo" --port "$port") ;;
        ws-rs) cmd=("$PEERS_BIN_DIR/ws-rs-echo" --port "$port") ;;
        node-ws) cmd=("$NODE" "$ROOT/$PEERS_NODE_DIR/ws-echo.js" --port "$port") ;;
        uws) cmd=("$NODE" "$ROOT/$PEERS_NODE_DIR/uws-echo.js" --port "$port") ;;
        uws-tls) cmd=("$NODE" "$ROOT/$PEERS_NODE_DIR/uws-echo.js" --port "$port" --tls "$TLS_CERT" "$TLS_KEY") ;;
        bidir-rpc | bidir-pubsub | bidir-rpc-pubsub) cmd=(env BIDIR_BACKEND=auto "$TARGET/release/examples/rpc_echo" --addr "127.0.0.1:$port" --workers 1) ;;
        bidir-rpc-epoll | bidir-pubsub-epoll | bidir-rpc-pubsub-epoll) cmd=(env BIDIR_BACKEND=epoll "$TARGET/release/examples/rpc_echo" --addr "127.0.0.1:$port" --workers 1) ;;
        uws-pubsub) cmd=("$NODE" "$ROOT/$PEERS_NODE_DIR/uws-pubsub.js" --port "$port") ;;
        bidir-deflate) cmd=(env BIDIR_BACKEND=auto "$TARGET/release/examples/echo" --addr "127.0.0.1:$port" --workers 1 --deflate shared) ;;
        bidir-deflate-epoll) cmd=(env BIDIR_BACKEND=epoll "$TARGET/release/examples/echo" --addr "127.0.0.1:$port" --workers 1 --deflate shared) ;;
        bidir-deflate-ded) cmd=(env BIDIR_BACKEND=auto "$TARGET/release/examples/echo" --addr "127.0.0.1:$port" --workers 1 --deflate dedicated:15 --context live) ;;
        uws-deflate) cmd=("$NODE" "$ROOT/$PEERS_NODE_DIR/uws-echo.js" --port "$port" --compression shared) ;;
        uws-deflate-ded) cmd=("$NODE" "$ROOT/$PEERS_NODE_DIR/uws-echo.js" --port "$port" --compression dedicated) ;;
        jsonrpsee) cmd=("$PEERS_BIN_DIR/jsonrpsee-echo" --port "$port") ;;
        floor) cmd=("$PEERS_BIN_DIR/floor-echo" --port "$port") ;;
        *) echo "unknown server $name" >&2; exit 2 ;;
    esac
    start_server "the $name server" "$port" "$OUT/server-$name.log" 20 \
        taskset -c "$SERVER_CPU" "${cmd[@]}"
}
trap stop_server EXIT

cell_args() {
    case "$1" in
        c100x16) echo "--conns 100 --inflight 16 --size 16" ;;
        c100x4x4k) echo "--conns 100 --inflight 4 --size 4096 --binary" ;;
        c1000) echo "--conns 1000 --inflight 1 --size 64" ;;
        c1) echo "--conns 1 --inflight 1 --size 16" ;;
        idle10k) echo "--mode connect --conns 10000 --connect-window 128" ;;
        # Handshakes: 10 000 cycles of connect, upgrade, close (no message), 64 at a time.
        h10k) echo "--mode churn --conns 64 --cycles 10000 --cycle-messages 0" ;;
        rpc100x16) echo "--conns 100 --inflight 16" ;;
        rpc1) echo "--conns 1 --inflight 1" ;;
        # Closed loop: the next event once the last reached all 10 000 subscribers.
        fanout10k) echo "--mode fanout --conns 10000 --connect-window 128" ;;
        # permessage-deflate, JSON-like text: no context (the server's default), and with
        # per-connection 32 KiB windows on the dedicated servers.
        d100x4x1k) echo "--conns 100 --inflight 4 --size 1024 --deflate shared" ;;
        d100x4x16k) echo "--conns 100 --inflight 4 --size 16384 --deflate shared" ;;
        dd100x4x1k) echo "--conns 100 --inflight 4 --size 1024 --deflate dedicated:15" ;;
        *) echo "unknown cell $1" >&2; exit 2 ;;
    esac
}

# The rpc cells run on the rpc servers, the fanout cells on the pub/sub servers, the echo
# cells on the echo servers: the URL and the framing per server, or nothing when the cell does
# not apply.
server_args() { # SERVER CELL PORT
    local kind=echo
    case "$2" in rpc*) kind=rpc ;; fanout*) kind=fanout ;; dd*) kind=deflate-ded ;; d*) kind=deflate ;; esac
    case "$1" in
        bidir-busy) [ "$2" = c1 ] && echo "--url ws://127.0.0.1:$3/echo" ;;
        *-deflate-ded) [ "$kind" = deflate-ded ] && echo "--url ws://127.0.0.1:$3/echo" ;;
        *-deflate*) [ "$kind" = deflate ] && echo "--url ws://127.0.0.1:$3/echo" ;;
        bidir-rpc-pubsub*) [ "$kind" = fanout ] && echo "--url ws://127.0.0.1:$3/rpc --rpc bidir" ;;
        *-pubsub*) [ "$kind" = fanout ] && echo "--url ws://127.0.0.1:$3/ --pubsub plain" ;;
        bidir-rpc*) [ "$kind" = rpc ] && echo "--url ws://127.0.0.1:$3/rpc --rpc bidir" ;;
        jsonrpsee) [ "$kind" = rpc ] && echo "--url ws://127.0.0.1:$3/ --rpc jsonrpc" ;;
        *-tls | *-tls-*) [ "$kind" = echo ] && echo "--url wss://127.0.0.1:$3/echo --trust $TLS_CERT" ;;
        # The echo cells' messages as plain TCP bytes (no type: --binary dropped).
        floor) case "$2" in c*) echo "--url tcp://127.0.0.1:$3 --raw" ;; esac ;;
        *) [ "$kind" = echo ] && echo "--url ws://127.0.0.1:$3/echo" ;;
    esac
    return 0
}

# The cell's arguments for SERVER: a raw server takes the echo cells' bytes without a type.
load_args() { # SERVER CELL
    local args
    args="$(cell_args "$2")"
    case "$1" in floor*) args="${args/ --binary/}" ;; esac
    echo "$args"
}

SUMMARY='import json, sys
r = json.load(sys.stdin)
print("%.0f msg/s, server %s ns/msg, p50 %s us, p99 %s us, %s B/conn" % (r["msgs_per_sec"],
      r["server_ns_per_msg"], r["p50_us"], r["p99_us"], r["server_bytes_per_conn"]))'
read -r -a SERVER_LIST <<< "$SERVERS"
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round of $ROUNDS"
    for cell in $CELLS; do
        # Rotate the order each round.
        n=${#SERVER_LIST[@]}
        for i in $(seq 0 $((n - 1))); do
            server=${SERVER_LIST[$(((i + round - 1) % n))]}
            port="$(free_port)"
            target="$(server_args "$server" "$cell" "$port")"
            [ -n "$target" ] || continue
            start_peer "$server" "$port"
            # shellcheck disable=SC2046,SC2086
            if ! taskset -c "$LOAD_CPU" "$LOAD" $target $(load_args "$server" "$cell") \
                --duration "$DURATION" --warmup "$WARMUP" --server-pid "$SERVER_PID" \
                --label "$cell $server" --hgrm "$OUT/$cell-$server-r$round.hgrm" --json --quiet \
                >> "$OUT/results.jsonl" 2> "$OUT/$cell-$server-r$round.log"; then
                echo "  $cell $server: FAILED ($(tail -1 "$OUT/$cell-$server-r$round.log"))"
            else
                echo "  $cell $server: $(tail -1 "$OUT/results.jsonl" | python3 -c "$SUMMARY")"
            fi
            stop_server
        done
    done
done

# System calls per message: one more run per cell and server with perf counting the server's
# system-call entries over the whole run (warm-up included; the connection setup's few
# thousand calls are noise next to the messages). Kept out of the timed rounds: the
# tracepoint costs a little per call, which would tax the servers that make more calls.
if [ "$SYSCALLS" = 1 ] && perf stat -e raw_syscalls:sys_enter -- true > /dev/null 2>&1; then
    echo "system calls per message"
    for cell in $CELLS; do
        [ "$cell" = idle10k ] && continue
        for server in "${SERVER_LIST[@]}"; do
            port="$(free_port)"
            target="$(server_args "$server" "$cell" "$port")"
            [ -n "$target" ] || continue
            start_peer "$server" "$port"
            perf stat -x, -e raw_syscalls:sys_enter -e syscalls:sys_enter_io_uring_enter \
                -p "$SERVER_PID" -o "$OUT/$cell-$server.perf" &
            PERF_PID=$!
            sleep 0.2
            # shellcheck disable=SC2046,SC2086
            if taskset -c "$LOAD_CPU" "$LOAD" $target $(load_args "$server" "$cell") \
                --duration 3 --warmup 0 --label "$cell $server" --json --quiet \
                > "$OUT/$cell-$server.syscalls.json" 2> /dev/null; then
                kill -INT "$PERF_PID"; wait "$PERF_PID" || true
                python3 - "$OUT/$cell-$server.perf" "$OUT/$cell-$server.syscalls.json" >> "$OUT/syscalls.jsonl" <<'PY'
import json, sys
counts = {}
for line in open(sys.argv[1]):
    parts = line.strip().split(",")
    if len(parts) > 2 and parts[0].isdigit():
        counts[parts[2]] = int(parts[0])
r = json.load(open(sys.argv[2]))
msgs = r["messages"] or r.get("cycles")  # churn without messages: per handshake
print(json.dumps({"label": r["label"], "messages": msgs,
                  "syscalls": counts.get("raw_syscalls:sys_enter"),
                  "io_uring_enter": counts.get("syscalls:sys_enter_io_uring_enter"),
                  "syscalls_per_msg": counts.get("raw_syscalls:sys_enter", 0) / msgs if msgs else None}))
PY
                echo "  $cell $server: $(tail -1 "$OUT/syscalls.jsonl")"
            else
                kill -INT "$PERF_PID" 2> /dev/null || true; wait "$PERF_PID" || true
                echo "  $cell $server: FAILED"
            fi
            stop_server
        done
    done
fi

# The kernel floor of the fanout cells: one more run per server with perf sampling the server's
# CPU (call graphs) in the middle of the run, once the subscribers are connected; the share of
# the server's samples under tcp_sendmsg is what any server pays to hand each subscriber its
# frame (on loopback, the receiver's TCP processing runs there too).
if [ "$FLOOR" = 1 ] && perf record -e cpu-clock -o /dev/null -- true > /dev/null 2>&1; then
    echo "kernel floor (share of server CPU under tcp_sendmsg)"
    for cell in $CELLS; do
        case "$cell" in fanout*) ;; *) continue ;; esac
        for server in "${SERVER_LIST[@]}"; do
            port="$(free_port)"
            target="$(server_args "$server" "$cell" "$port")"
            [ -n "$target" ] || continue
            start_peer "$server" "$port"
            # shellcheck disable=SC2046,SC2086
            taskset -c "$LOAD_CPU" "$LOAD" $target $(cell_args "$cell") --duration 6 --warmup 1 \
                --server-pid "$SERVER_PID" --label "$cell $server" --json --quiet > "$OUT/$cell-$server.floor.json" 2> /dev/null &
            LOAD_PID=$!
            if bash scripts/perf-send-share.sh "$SERVER_PID" "$SERVER_CPU" 10000 4 \
                "$OUT/$cell-$server.perf.data" > "$OUT/$cell-$server.floor" 2> "$OUT/$cell-$server.floor.log" \
                && wait "$LOAD_PID"; then
                python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); f = json.load(open(sys.argv[2]))
f.update(label=r["label"], server_ns_per_msg=r["server_ns_per_msg"]); print(json.dumps(f))' \
                    "$OUT/$cell-$server.floor.json" "$OUT/$cell-$server.floor" >> "$OUT/floor.jsonl"
                echo "  $cell $server: $(tail -1 "$OUT/floor.jsonl")"
            else
                wait "$LOAD_PID" || true
                echo "  $cell $server: FAILED ($(tail -1 "$OUT/$cell-$server.floor.log"))"
            fi
            rm -f "$OUT/$cell-$server.perf.data"
            stop_server
        done
    done
fi

python3 scripts/bench-peers-table.py "$OUT" "$LOAD" | tee "$OUT/table.md"
echo "results in $OUT"
