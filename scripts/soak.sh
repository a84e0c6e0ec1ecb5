#!/usr/bin/env bash
# A soak under connection churn: the echo example against bidir-load's churn mode, in which
# every connection connects, upgrades, echoes one message, closes cleanly and starts over.
# Once per backend and deflate setting, on a fresh server each time:
#
#   1. warm-up: the same churn for WARMUP seconds (default 40; the short form: two cycles
#      per connection), so that the server's memory reaches its steady state before the
#      start is measured: pools sized for CONNS connections at once, and the timers closed
#      connections leave in the workers' wheels (a heartbeat's fires 30 s after its
#      connection opened) at their steady number. (The wheel's buckets give their storage
#      back when they fire; before they did, every bucket kept its busiest size and a warm-up
#      of a whole turn, 102 s, was needed to see anything but that.)
#   2. the soak: CONNS connections churning until CYCLES cycles in all or DURATION seconds,
#      whichever comes first, the server's resident memory (RSS) and open descriptors
#      sampled every 100 ms: at the start (after the warm-up), the peak, and the end (once
#      the server has closed the soak's connections, and again after SETTLE idle seconds,
#      default 35: a closed connection's timers stay in its worker's wheel until they come
#      due, the heartbeat's 30 s after the connection opened, so memory held for them is
#      only given back after that);
#   3. the checks: no failed connect and no unclean cycle; the end's descriptors back to the
#      start's (margin FD_MARGIN, default 0: every descriptor a connection took is given
#      back); the end's RSS within RSS_MARGIN of the start's.
#
# RSS_MARGIN is max(RSS_MARGIN_MIB (default 8 MiB), RSS_MARGIN_PCT (default 10) % of the
# start's RSS). Why that: after the warm-up the server has allocated what this churn needs
# (connection slab, buffers, the wheels' timers, the allocator's arenas), so the soak itself
# should need no more; what the allocator keeps from the churn (freed memory it does not give
# back, fragmentation across the workers' arenas) moves RSS by a few MiB; a leak of 16 bytes
# per cycle over the full form's million cycles is 15 MiB and fails, and so would one of 420
# bytes per cycle in the short form (8 MiB over 20 000 cycles). The line also shows the cold
# RSS (before the warm-up): what the churn left allocated is the end's distance from it.
#
#   scripts/soak.sh [--short] [--cycles N] [--duration SECS] [--conns N] [--warmup SECS]
#                   [--settle SECS] [--workers N]
#                   [--backends "auto epoll"] [--deflate "off shared"]
#
#   (defaults)  the full form: 10 000 connections, 1 000 000 cycles or 10 minutes per
#               configuration (4 configurations: about 45 minutes at most with the warm-ups)
#   --short     what scripts/test.sh runs: 500 connections, 20 000 cycles, 10 s at most per
#               configuration, a warm-up of two cycles per connection, no idle settle
#               (about 20 s in all)
#
# Every option has an environment twin: SOAK_CYCLES, SOAK_DURATION, SOAK_CONNS, SOAK_WARMUP,
# SOAK_SETTLE, SOAK_WORKERS (server workers, default 2), SOAK_BACKENDS (BIDIR_BACKEND values: auto is
# io_uring where the kernel has it; the line says which ran), SOAK_DEFLATE (bidir-load
# --deflate values: what the client offers; the server accepts the shared profile), and
# SOAK_RSS_MARGIN_MIB, SOAK_RSS_MARGIN_PCT, SOAK_FD_MARGIN. Results (each run's JSON and logs) go to soak/ in
# cargo's target directory. Exits 1 if any configuration fails a check.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TARGET="$(target_dir)"

CYCLES="${SOAK_CYCLES:-1000000}"
DURATION="${SOAK_DURATION:-600}"
CONNS="${SOAK_CONNS:-10000}"
WARMUP="${SOAK_WARMUP:-40}"
SETTLE="${SOAK_SETTLE:-35}"
WORKERS="${SOAK_WORKERS:-2}"
BACKENDS="${SOAK_BACKENDS:-auto epoll}"
DEFLATES="${SOAK_DEFLATE:-off shared}"
RSS_MARGIN_MIB="${SOAK_RSS_MARGIN_MIB:-8}"
RSS_MARGIN_PCT="${SOAK_RSS_MARGIN_PCT:-10}"
FD_MARGIN="${SOAK_FD_MARGIN:-0}"
while [ $# -gt 0 ]; do
    case "$1" in
        --short) CYCLES=20000; DURATION=10; CONNS=500; WARMUP=0; SETTLE=0 ;;
        --cycles) CYCLES="$2"; shift ;;
        --duration) DURATION="$2"; shift ;;
        --conns) CONNS="$2"; shift ;;
        --warmup) WARMUP="$2"; shift ;;
        --settle) SETTLE="$2"; shift ;;
        --workers) WORKERS="$2"; shift ;;
        --backends) BACKENDS="$2"; shift ;;
        --deflate) DEFLATES="$2"; shift ;;
        *) echo "unknown argument $1 (see the head of $0)" >&2; exit 2 ;;
    esac
    shift
done

cargo build --release --locked -q --example echo
cargo build --release --locked -q -p bidir-load
LOAD="$TARGET/release/bidir-load"
ECHO="$TARGET/release/examples/echo"
OUT="$TARGET/soak"
mkdir -p "$OUT"
# The server and the generator each hold a descriptor per connection.
ulimit -n "$(ulimit -Hn)" 2> /dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((CONNS + 200)) ]; then
    echo "soak: the open-files limit $(ulimit -n) is too low for $CONNS connections" >&2
    exit 1
fi
trap stop_server EXIT

echo "soak: $CONNS connections, $CYCLES cycles or ${DURATION} s per configuration, $WORKERS server workers," \
    "warm-up $([ "$WARMUP" = 0 ] && echo "two cycles per connection" || echo "$WARMUP s")," \
    "end measured $([ "$SETTLE" = 0 ] && echo "at once" || echo "after $SETTLE s idle");" \
    "margins: RSS max($RSS_MARGIN_MIB MiB, $RSS_MARGIN_PCT % of the start), descriptors $FD_MARGIN"
failed=0
started=$SECONDS
for backend in $BACKENDS; do
    for deflate in $DEFLATES; do
        name="$backend-deflate-$deflate"
        port="$(free_port)"
        start_server "the echo server ($name)" "$port" "$OUT/$name.server.log" 20 \
            env BIDIR_BACKEND="$backend" "$ECHO" --addr "127.0.0.1:$port" --workers "$WORKERS" \
            --no-pin --deflate shared
        ran_on="$(sed -n 's/.* workers\{0,1\} on \([a-z_]*\).*/\1/p' "$OUT/$name.server.log" | head -1)"
        common=(--url "ws://127.0.0.1:$port/echo" --mode churn --conns "$CONNS" --deflate "$deflate"
            --server-pid "$SERVER_PID" --json --quiet)
        ok=1
        if [ "$WARMUP" = 0 ]; then warmup=(--cycles $((CONNS * 2))); else warmup=(--duration "$WARMUP"); fi
        "$LOAD" "${common[@]}" "${warmup[@]}" --label "$name warm-up" \
            > "$OUT/$name.warmup.json" 2> "$OUT/$name.warmup.log" || ok=0
        if [ $ok = 1 ]; then
            "$LOAD" "${common[@]}" --cycles "$CYCLES" --duration "$DURATION" --label "$name" \
                > "$OUT/$name.json" 2> "$OUT/$name.log" || true
            sleep "$SETTLE"
            late_rss="$(awk '/^VmRSS:/ {print $2 * 1024}' "/proc/$SERVER_PID/status" 2> /dev/null || echo 0)"
            late_fds="$(find "/proc/$SERVER_PID/fd" -mindepth 1 -maxdepth 1 2> /dev/null | wc -l)"
            python3 - "$OUT/$name.warmup.json" "$OUT/$name.json" "$name on ${ran_on:-?}" \
                "$RSS_MARGIN_MIB" "$RSS_MARGIN_PCT" "$FD_MARGIN" "$SETTLE" "$late_rss" "$late_fds" \
                << 'PY' || ok=0
import json, sys
warm_path, run_path, name, margin_mib, margin_pct, fd_margin, settle, late_rss, late_fds = sys.argv[1:]
mib = lambda b: b / 1048576
try:
    warm, run = json.load(open(warm_path)), json.load(open(run_path))
except (OSError, ValueError) as e:
    print(f"{name}: FAILED: no result ({e})")
    sys.exit(1)
at_once = (run["server_rss_end"], run["server_fds_end"])
if int(settle) > 0:
    run["server_rss_end"], run["server_fds_end"] = int(late_rss), int(late_fds)
margin = max(float(margin_mib) * 1048576, float(margin_pct) / 100 * run["server_rss_start"])
rss_grew = run["server_rss_end"] - run["server_rss_start"]
fds_grew = run["server_fds_end"] - run["server_fds_start"]
problems = []
if run["failed"] or run["errors"]:
    problems.append(f'{run["failed"]} failed connects, {run["errors"]} unclean cycles')
if rss_grew > margin:
    problems.append(f"RSS grew {mib(rss_grew):.1f} MiB, over the {mib(margin):.1f} MiB margin")
if fds_grew > int(fd_margin):
    problems.append(f"{fds_grew} descriptors more than at the start")
print(f'{name}: {run["cycles"]} cycles in {run["window_s"]:.1f} s ({run["cycles_per_sec"]:.0f}/s), '
      f'cycle p50 {run["p50_us"] / 1000:.1f} ms p99 {run["p99_us"] / 1000:.1f} ms, '
      f'{run["failed"]} failed, {run["errors"]} errors')
after = f" after {settle} s idle" if int(settle) > 0 else ""
once_rss = f"at once {mib(at_once[0]):.1f}, " if after else ""
once_fds = f"at once {at_once[1]}, " if after else ""
print(f'    server RSS: cold {mib(warm["server_rss_start"]):.1f} MiB, start {mib(run["server_rss_start"]):.1f}, '
      f'peak {mib(run["server_rss_peak"]):.1f}, end {once_rss}{mib(run["server_rss_end"]):.1f}{after} '
      f'({mib(rss_grew):+.1f}, margin {mib(margin):.1f})')
print(f'    server descriptors: cold {warm["server_fds_start"]}, start {run["server_fds_start"]}, '
      f'peak {run["server_fds_peak"]}, end {once_fds}{run["server_fds_end"]}{after} ({fds_grew:+d}, margin {fd_margin})')
print(f'    {"FAILED: " + "; ".join(problems) if problems else "ok"}')
sys.exit(1 if problems else 0)
PY
        else
            echo "$name: FAILED: the warm-up failed: $(tail -1 "$OUT/$name.warmup.log")"
        fi
        if ! kill -0 "$SERVER_PID" 2> /dev/null; then
            echo "    FAILED: the server exited during the soak; the end of its log:"
            tail -5 "$OUT/$name.server.log" | sed 's/^/    /'
            ok=0
        fi
        stop_server
        [ $ok = 1 ] || failed=$((failed + 1))
    done
done
echo "soak: $failed configurations failed, in $((SECONDS - started)) s (results in $OUT)"
[ "$failed" = 0 ]
