#!/usr/bin/env bash
# bidir.bin.v1 against bidir.json.v1 on the rpc benchmark's server (examples/rpc_echo, one
# worker pinned to --server-cpu, bidir-load on --load-cpu): server CPU per call and calls per
# second for each encoding, compression setting and key mode, and the handshake cost of each
# key mode (connections opened and closed per second, and the server's CPU per connection).
# Writes, under OUT (default bin/<date> in cargo's target directory):
#   results.jsonl   one bidir-load JSON result per run (calls: label "CELL VARIANT"; churn:
#                   label "churn VARIANT", with the server's CPU per cycle added)
#   table.md        the tables for docs/benchmarks.md: medians over the rounds
#
# Every round runs every variant of every cell, in an order rotated each round, so that a
# disturbance on a shared machine hits one sample of several variants rather than all of one.
#
#   scripts/bench-bin.sh [--rounds N] [--duration SECS] [--warmup SECS] [--out DIR]
#                        [--cells "c100x16 c1"] [--variants "json bin ..."] [--no-churn]
#                        [--server-cpu N --load-cpu M]
#
# Variants (calls of Bench.echo with a small struct, or with a 1 KiB one for the -1k ones):
#   json, bin                  bidir.json.v1 / bidir.bin.v1, no key
#   json-1k, bin-1k            the same, 1 KiB items: bin's are LZ4-compressed both ways
#   bin-1k-off                 bin with compression off on both sides
#   bin-psk, bin-ecdhe         bin encrypted, keys by each mode
#   bin-psk-1k                 compressed and encrypted
# Churn (16 connections, each connect, upgrade, close, again): bin with no key, psk, ecdhe.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TARGET="$(target_dir)"

ROUNDS=3
DURATION=3
WARMUP=1
CELLS="c100x16 c1"
VARIANTS="json bin json-1k bin-1k bin-1k-off bin-psk bin-ecdhe bin-psk-1k"
CHURN="bin bin-psk bin-ecdhe"
SERVER_CPU=0
LOAD_CPU=1
OUT="$TARGET/bin/$(date -u +%Y-%m-%d)"
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift ;;
        --duration) DURATION="$2"; shift ;;
        --warmup) WARMUP="$2"; shift ;;
        --cells) CELLS="$2"; shift ;;
        --variants) VARIANTS="$2"; shift ;;
        --no-churn) CHURN="" ;;
        --server-cpu) SERVER_CPU="$2"; shift ;;
        --load-cpu) LOAD_CPU="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$OUT"
: > "$OUT/results.jsonl"
KEY="$OUT/bench.key"
head -c 32 /dev/urandom > "$KEY"

cargo build --release --locked --example rpc_echo -p bidir -q
cargo build --release --locked -p bidir-load -q
LOAD="$TARGET/release/bidir-load"
trap stop_server EXIT

# The server's flags and the generator's for a variant.
server_flags() {
    case "$1" in
        *psk* | *ecdhe*) echo "--key $KEY" ;;
        *-off) echo "--compress-above off" ;;
        *) echo "" ;;
    esac
}
load_flags() {
    local flags="--rpc bidir"
    case "$1" in bin*) flags="$flags --wire bin" ;; esac
    case "$1" in *-1k*) flags="$flags --size 1024" ;; esac
    case "$1" in *-off) flags="$flags --compress-above off" ;; esac
    case "$1" in *psk*) flags="$flags --key $KEY --key-mode psk" ;; esac
    case "$1" in *ecdhe*) flags="$flags --key $KEY --key-mode ecdhe" ;; esac
    echo "$flags"
}
cell_flags() {
    case "$1" in
        c100x16) echo "--conns 100 --inflight 16" ;;
        c1) echo "--conns 1 --inflight 1" ;;
        *) echo "unknown cell $1" >&2; exit 2 ;;
    esac
}

start_rpc() { # VARIANT -> PORT, SERVER_PID
    PORT="$(free_port)"
    # shellcheck disable=SC2046
    start_server "rpc_echo ($1)" "$PORT" "$OUT/server.log" 20 taskset -c "$SERVER_CPU" \
        env BIDIR_BACKEND=auto "$TARGET/release/examples/rpc_echo" --addr "127.0.0.1:$PORT" \
        --workers 1 $(server_flags "$1")
}

# The server's CPU time so far, in nanoseconds, over all its threads.
cpu_ns() {
    cat /proc/"$1"/task/*/schedstat 2> /dev/null | awk '{ s += $1 } END { printf "%.0f\n", s }'
}

read -r -a VARIANT_LIST <<< "$VARIANTS"
read -r -a CHURN_LIST <<< "$CHURN"
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round of $ROUNDS"
    for cell in $CELLS; do
        n=${#VARIANT_LIST[@]}
        for i in $(seq 0 $((n - 1))); do
            variant=${VARIANT_LIST[$(((i + round - 1) % n))]}
            start_rpc "$variant"
            # shellcheck disable=SC2046
            if taskset -c "$LOAD_CPU" "$LOAD" --url "ws://127.0.0.1:$PORT/rpc" \
                $(load_flags "$variant") $(cell_flags "$cell") --duration "$DURATION" \
                --warmup "$WARMUP" --server-pid "$SERVER_PID" --label "$cell $variant" --json \
                --quiet >> "$OUT/results.jsonl" 2> "$OUT/run.log"; then
                echo "  $cell $variant: $(tail -1 "$OUT/results.jsonl" | python3 -c 'import json, sys
r = json.load(sys.stdin); print("%.0f calls/s, server %s ns/call" % (r["msgs_per_sec"], r["server_ns_per_msg"]))')"
            else
                echo "  $cell $variant: FAILED ($(tail -1 "$OUT/run.log"))"
            fi
            stop_server
        done
    done
    n=${#CHURN_LIST[@]}
    for i in $(seq 0 $((n - 1))); do
        [ "$n" -gt 0 ] || break
        variant=${CHURN_LIST[$(((i + round - 1) % n))]}
        start_rpc "$variant"
        before="$(cpu_ns "$SERVER_PID")"
        # shellcheck disable=SC2046
        if taskset -c "$LOAD_CPU" "$LOAD" --url "ws://127.0.0.1:$PORT/rpc" $(load_flags "$variant") \
            --mode churn --conns 16 --cycle-messages 0 --duration "$DURATION" \
            --label "churn $variant" --json --quiet > "$OUT/churn.json" 2> "$OUT/run.log"; then
            after="$(cpu_ns "$SERVER_PID")"
            python3 - "$OUT/churn.json" "$((after - before))" >> "$OUT/results.jsonl" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
r["server_ns_per_cycle"] = int(sys.argv[2]) / r["cycles"] if r["cycles"] else None
print(json.dumps(r))
PY
            echo "  churn $variant: $(tail -1 "$OUT/results.jsonl" | python3 -c 'import json, sys
r = json.load(sys.stdin); print("%.0f connections/s, server %.0f us/connection" % (r["cycles_per_sec"], r["server_ns_per_cycle"] / 1e3))')"
        else
            echo "  churn $variant: FAILED ($(tail -1 "$OUT/run.log"))"
        fi
        stop_server
    done
done

python3 - "$OUT/results.jsonl" <<'PY' | tee "$OUT/table.md"
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs.setdefault(r["label"], []).append(r)
med = lambda label, key: statistics.median(r[key] for r in runs[label]) if label in runs else None
cells = []
for label in runs:
    cell = label.split()[0]
    if cell != "churn" and cell not in cells:
        cells.append(cell)
print("| cell | variant | calls/s | × json | server ns/call | × json | p50 µs | rounds |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for cell in cells:
    for label in runs:
        if not label.startswith(cell + " "):
            continue
        variant = label.split()[1]
        base = f"{cell} json-1k" if "-1k" in variant else f"{cell} json"
        rate, ns = med(label, "msgs_per_sec"), med(label, "server_ns_per_msg")
        brate, bns = med(base, "msgs_per_sec"), med(base, "server_ns_per_msg")
        ratio = lambda a, b: f"{a / b:.2f}" if a and b else "-"
        print(f"| {cell} | {variant} | {rate:.0f} | {ratio(rate, brate)} | {ns:.0f} | "
              f"{ratio(ns, bns)} | {med(label, 'p50_us'):.0f} | {len(runs[label])} |")
if any(l.startswith("churn ") for l in runs):
    print()
    print("| key mode | connections/s | × no key | server µs/connection | × no key | rounds |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label in runs:
        if not label.startswith("churn "):
            continue
        rate, ns = med(label, "cycles_per_sec"), med(label, "server_ns_per_cycle")
        brate, bns = med("churn bin", "cycles_per_sec"), med("churn bin", "server_ns_per_cycle")
        ratio = lambda a, b: f"{a / b:.2f}" if a and b else "-"
        print(f"| {label.split()[1]} | {rate:.0f} | {ratio(rate, brate)} | {ns / 1e3:.1f} | "
              f"{ratio(ns, bns)} | {len(runs[label])} |")
PY
echo "results in $OUT"
