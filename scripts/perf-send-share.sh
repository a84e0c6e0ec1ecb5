#!/usr/bin/env bash
# The share of a server's CPU time spent in the kernel's per-socket send: perf samples the
# server's CPU with call graphs and counts the server's samples that have tcp_sendmsg (or
# tcp_sendmsg_locked) on their stack — whether the send came from send/sendmsg/writev (epoll)
# or an io_uring send, and including what the send does on loopback (the receiver's TCP
# processing runs in the sender's context). That share of the server's CPU per delivery is
# the floor no server avoids: one send per subscriber socket.
#
#   scripts/perf-send-share.sh PID CPU MIN_FDS SECONDS DATA_FILE
#
# Waits until the server PID has MIN_FDS descriptors open (its subscribers are connected),
# samples CPU (where the server is pinned) for SECONDS at 999 Hz into DATA_FILE, keeps the
# samples of the server's threads, and prints one JSON object:
#   {"samples": N, "kernel_share": K, "send_share": S}
# kernel_share: samples whose innermost frame is in the kernel; send_share: samples under
# tcp_sendmsg. Needs perf with kernel call graphs (perf_event_paranoid ≤ 1, or root).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ $# = 5 ] || { sed -n 2,17p "$0" >&2; exit 2; }
pid=$1 cpu=$2 min_fds=$3 seconds=$4 data=$5

deadline=$((SECONDS + 120))
while [ "$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2> /dev/null | wc -l)" -lt "$min_fds" ]; do
    kill -0 "$pid" 2> /dev/null || { echo "server $pid is gone" >&2; exit 1; }
    [ "$SECONDS" -lt "$deadline" ] || { echo "server $pid never had $min_fds descriptors" >&2; exit 1; }
    sleep 0.1
done
perf record -q -e cpu-clock -F 999 -g -C "$cpu" -o "$data" -- sleep "$seconds" > /dev/null
perf script -i "$data" --pid "$pid" -F ip,sym 2> /dev/null | python3 -c '
import json, sys
SEND = {"tcp_sendmsg", "tcp_sendmsg_locked"}
samples = kernel = send = 0
frames = []

def sample():
    global samples, kernel, send
    if frames:
        samples += 1
        kernel += int(frames[0][0], 16) >= 0xFFFF800000000000
        send += any(sym in SEND for _, sym in frames)

for line in sys.stdin:
    parts = line.split()
    if not parts:
        sample()
        frames = []
    elif len(parts) >= 2:
        frames.append((parts[0], parts[1].split("+")[0]))
    else:
        frames.append((parts[0], ""))
sample()
if not samples:
    sys.exit("no samples of the server")
print(json.dumps({"samples": samples, "kernel_share": round(kernel / samples, 4),
                  "send_share": round(send / samples, 4)}))
'
