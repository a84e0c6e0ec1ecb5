#!/usr/bin/env python3
"""Turns bench-peers.sh's results into the markdown table of docs/benchmarks.md.

    bench-peers-table.py OUT_DIR BIDIR_LOAD

Reads OUT_DIR/results.jsonl (one bidir-load JSON result per round, cell and server) and, when
there, OUT_DIR/syscalls.jsonl (system calls per message from a separate counted run) and
OUT_DIR/floor.jsonl (fanout: the share of the server's CPU under tcp_sendmsg, sampled by perf in
a separate run). For each
cell and server it quotes the median over the rounds of msg/s, server CPU ns/msg, p50, p99 and
p99.9 (or, for the idle cell, server RSS per connection and handshakes/s), the system calls per
message, then bidir's ratio to the best peer (servers whose name starts with "bidir" are not
peers, nor is the floor) and, with bidir-epoll in the run, io_uring's ratio to epoll; with the
floor in the run (a raw TCP echo on io_uring, no WebSocket), bidir's and bidir-epoll's ratios
over it: what the WebSocket server costs above the machine's floor. The fanout cells quote
events/s, deliveries/s, server CPU per delivery, its kernel share, the per-socket send floor,
and the ratios of bidir-pubsub and bidir-rpc-pubsub (and their epoll variants) to uws-pubsub. The
deflate cells (d*, dd*) add the bytes read per payload byte of the echoes (the server's compression
ratio) and compare bidir-deflate (dd: bidir-deflate-ded) with the best peer. The TLS servers
(names ending in -tls or containing -tls-: the echo over wss://) are not peers of the plain ones;
their cells add the ratios over TLS to plain of the same server and bidir-tls's (and
bidir-tls-epoll's) to uws-tls (the idle cell: the bytes per connection TLS adds). It draws
OUT_DIR/CELL.svg from each server's median round (by server ns/msg).
"""
import json
import statistics
import subprocess
import sys

CELLS = {
    "c100x16": "100 conns x 16 in flight x 16 B text",
    "c100x4x4k": "100 conns x 4 in flight x 4 KiB binary",
    "c1000": "1000 conns x 1 in flight x 64 B text",
    "c1": "1 conn x 1 in flight x 16 B text",
    "idle10k": "10 000 idle connections",
    "h10k": "handshakes: 10 000 cycles of connect, upgrade, close, 64 at a time",
    "rpc100x16": "rpc: 100 conns x 16 calls in flight, echo of a small struct",
    "rpc1": "rpc: 1 conn x 1 call in flight, echo of a small struct",
    "fanout10k": "fanout: one event at a time to 10 000 subscribers (closed loop)",
    "d100x4x1k": "permessage-deflate, no context: 100 conns x 4 in flight x 1 KiB JSON-like text",
    "d100x4x16k": "permessage-deflate, no context: 100 conns x 4 in flight x 16 KiB JSON-like text",
    "dd100x4x1k": "permessage-deflate, per-connection 32 KiB windows: 100 conns x 4 in flight x 1 KiB text",
}

# The raw TCP echo (no WebSocket): not a peer, the floor under every server.
FLOOR = "floor"

# (over TLS, against): the TLS ratios quoted where both servers ran the cell.
TLS_PAIRS = [("bidir-tls", "bidir"), ("bidir-tls-epoll", "bidir-epoll"), ("uws-tls", "uws"),
             ("bidir-tls", "uws-tls"), ("bidir-tls-epoll", "uws-tls")]

FANOUT_BIDIR = ["bidir-pubsub", "bidir-rpc-pubsub", "bidir-pubsub-epoll", "bidir-rpc-pubsub-epoll"]
FANOUT_PEER = "uws-pubsub"


def median(rows, key):
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def main():
    out_dir, load = sys.argv[1], sys.argv[2]
    by_cell = {}
    with open(out_dir + "/results.jsonl") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                cell, server = r["label"].split(" ", 1)
                by_cell.setdefault(cell, {}).setdefault(server, []).append(r)
    syscalls = by_label(out_dir + "/syscalls.jsonl")
    floors = by_label(out_dir + "/floor.jsonl")
    rounds = max((len(v) for c in by_cell.values() for v in c.values()), default=0)
    lines = [f"Medians of {rounds} rounds; server CPU from /proc/PID/task/*/schedstat."]
    for cell, title in CELLS.items():
        results = by_cell.get(cell)
        if not results:
            continue
        lines.append(f"\n**{title}**\n")
        if cell.startswith("fanout"):
            lines += fanout(cell, title, results, syscalls, floors, out_dir, load)
            continue
        if cell == "h10k":
            lines += handshakes(cell, results, syscalls)
            continue
        if cell == "idle10k":
            key = "server_bytes_per_conn"
            lines.append("| server | server RSS per connection | handshakes/s | p50 handshake | p99 handshake |")
            lines.append("| --- | ---: | ---: | ---: | ---: |")
            for server, rows in results.items():
                for r in rows:
                    r["handshakes_per_sec"] = r["opened"] / r["connect_s"] if r["connect_s"] else None
                lines.append(f"| {server} | {fmt(median(rows, key), ' B')} | "
                             f"{fmt(median(rows, 'handshakes_per_sec'))} | "
                             f"{median(rows, 'p50_us'):,.0f} µs | {median(rows, 'p99_us'):,.0f} µs |")
        else:
            key = "server_ns_per_msg"
            deflate = cell.startswith("d")
            extra = (" wire / payload |", " ---: |") if deflate else ("", "")
            lines.append("| server | msg/s | server CPU ns/msg | p50 | p99 | p99.9 | syscalls/msg |" + extra[0])
            lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |" + extra[1])
            plots = []
            for server, rows in results.items():
                ratio = median(rows, "wire_in_ratio")
                wire = (" n/a |" if ratio is None else f" {ratio:.3f} |") if deflate else ""
                lines.append(f"| {server} | {fmt(median(rows, 'msgs_per_sec'))} | {fmt(median(rows, key))} | "
                             f"{us(median(rows, 'p50_us'))} | {us(median(rows, 'p99_us'))} | "
                             f"{us(median(rows, 'p99_9_us'))} | {per_msg(syscalls.get(cell + ' ' + server))} |{wire}")
                ordered = sorted(range(len(rows)), key=lambda i: rows[i].get(key) or 0)
                mid = ordered[len(ordered) // 2]
                plots.append(f"{out_dir}/{cell}-{server}-r{mid + 1}.hgrm:{server}")
            subprocess.run([load, "plot", "--out", f"{out_dir}/{cell}.svg",
                            "--title", f"{title}: echo latency by percentile", "--log-y"] + plots, check=False)
        # The rpc cells compare the rpc servers (bidir-rpc: examples/rpc_echo).
        bidir = {"r": "bidir-rpc", "d": "bidir-deflate"}.get(cell[0], "bidir")
        if cell.startswith("dd"):
            bidir = "bidir-deflate-ded"
        peers = [(s, median(rows, key)) for s, rows in results.items()
                 if not s.startswith("bidir") and s != FLOOR and not is_tls(s)]
        peers = [p for p in peers if p[1]]
        if peers and bidir in results and median(results[bidir], key):
            name, theirs = min(peers, key=lambda p: p[1])
            ours = median(results[bidir], key)
            what = "memory per connection" if cell == "idle10k" else "server CPU per message"
            lines.append(f"\n{bidir} / best peer ({name}): **{ours / theirs:.2f}x** {what}")
        epoll = bidir + "-epoll"
        if cell != "idle10k" and bidir in results and epoll in results:
            ours, theirs = median(results[bidir], key), median(results[epoll], key)
            if ours and theirs:
                lines.append(f"\n{bidir} (io_uring) / {epoll}: **{ours / theirs:.2f}x** server CPU per message")
        lines += over_floor(results, key)
        lines += tls_ratios(cell, results, key)
        if cell in ("c1", "rpc1"):
            lines += lowest_latency(results)
    print("\n".join(lines))


def is_tls(server):
    """Whether the server runs over TLS (bidir-tls, bidir-tls-epoll, uws-tls)."""
    return server.endswith("-tls") or "-tls-" in server


def tls_ratios(cell, results, key):
    """Each TLS pair's ratio of `key` (the idle cell: also the bytes TLS adds per connection)."""
    what = {"idle10k": "memory per connection", "h10k": "server CPU per handshake"}.get(
        cell, "server CPU per message")
    lines = []
    for tls, other in TLS_PAIRS:
        ours, theirs = median(results.get(tls, []), key), median(results.get(other, []), key)
        if not (ours and theirs):
            continue
        line = f"\n{tls} / {other}: **{ours / theirs:.2f}x** {what}"
        if cell == "idle10k":
            line += f" ({ours - theirs:+,.0f} B)"
        if cell == "h10k":
            rate = median(results[tls], "cycles_per_sec") / median(results[other], "cycles_per_sec")
            line += f", **{rate:.2f}x** handshakes/s"
        lines.append(line)
    return lines


def lowest_latency(results):
    """Which WebSocket server (the floor aside) has the lowest p50 and the lowest p99."""
    lines = []
    for key in ("p50_us", "p99_us"):
        ranked = sorted((median(rows, key), server) for server, rows in results.items()
                        if server != FLOOR and median(rows, key))
        if ranked:
            order = ", ".join(f"{server} {us(value)}" for value, server in ranked)
            lines.append(f"\nlowest {key[:-3]}: {order}")
    return lines


def over_floor(results, key):
    """The ratio of bidir's and bidir-epoll's server CPU per message over the floor's."""
    floor = median(results.get(FLOOR, []), key)
    lines = []
    for server in ("bidir", "bidir-epoll"):
        ours = median(results.get(server, []), key)
        if ours and floor:
            lines.append(f"\n{server} / {FLOOR} (raw TCP echo on io_uring): **{ours / floor:.2f}x** "
                         "server CPU per message")
    return lines


def by_label(path):
    """A JSON-lines file's objects by their label; empty if the file is not there."""
    rows = {}
    try:
        with open(path) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    rows[r["label"]] = r
    except FileNotFoundError:
        pass
    return rows


def fanout(cell, title, results, syscalls, floors, out_dir, load):
    """The lines of a fanout cell: a row per server, its plot, the ratios to uws-pubsub."""
    key = "server_ns_per_msg"
    lines = [
        "| server | events/s | deliveries/s | server CPU ns/delivery | in the kernel | "
        "per-socket send (floor) | p50 | p99 | missed | syscalls/delivery |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    plots = []
    for server, rows in results.items():
        ns, share = median(rows, key), median(rows, "server_kernel_share")
        floor = floors.get(cell + " " + server)
        if floor and ns:
            send = f"{floor['send_share']:.0%} ({floor['send_share'] * ns:,.0f} ns)"
        else:
            send = "n/a"
        missed = sum(r.get("missed", 0) for r in rows)
        lines.append(f"| {server} | {fmt(median(rows, 'events_per_sec'))} | {fmt(median(rows, 'msgs_per_sec'))} | "
                     f"{fmt(ns)} | {'n/a' if share is None else f'{share:.0%}'} | {send} | "
                     f"{us(median(rows, 'p50_us'))} | {us(median(rows, 'p99_us'))} | {missed} | "
                     f"{per_msg(syscalls.get(cell + ' ' + server))} |")
        ordered = sorted(range(len(rows)), key=lambda i: rows[i].get(key) or 0)
        plots.append(f"{out_dir}/{cell}-{server}-r{ordered[len(ordered) // 2] + 1}.hgrm:{server}")
    subprocess.run([load, "plot", "--out", f"{out_dir}/{cell}.svg",
                    "--title", f"{title}: delivery latency by percentile", "--log-y"] + plots, check=False)
    theirs = median(results.get(FANOUT_PEER, []), key)
    for bidir in FANOUT_BIDIR:
        ours = median(results.get(bidir, []), key)
        if ours and theirs:
            lines.append(f"\n{bidir} / {FANOUT_PEER}: **{ours / theirs:.2f}x** server CPU per delivery")
    lines.append("\nIn the kernel: stime / (utime + stime) of /proc/PID/stat over the window. Per-socket "
                 "send: the share of the server's perf samples (a separate run) under tcp_sendmsg, "
                 "times its CPU per delivery.")
    return lines


def handshakes(cell, results, syscalls):
    """The lines of a handshake cell: a row per server, bidir's ratios to the best peer."""
    key = "server_ns_per_cycle"
    lines = [
        "| server | handshakes/s | server CPU ns/handshake | p50 handshake | p99 handshake | syscalls/handshake |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for server, rows in results.items():
        lines.append(f"| {server} | {fmt(median(rows, 'cycles_per_sec'))} | {fmt(median(rows, key))} | "
                     f"{us(median(rows, 'handshake_p50_us'))} | {us(median(rows, 'handshake_p99_us'))} | "
                     f"{per_msg(syscalls.get(cell + ' ' + server))} |")
    peers = [(s, median(rows, key), median(rows, "cycles_per_sec")) for s, rows in results.items()
             if not s.startswith("bidir") and not is_tls(s) and median(rows, key)]
    for bidir in ("bidir", "bidir-epoll"):
        ours = results.get(bidir)
        if peers and ours and median(ours, key):
            name, cpu, rate = min(peers, key=lambda p: p[1])
            lines.append(f"\n{bidir} / best peer ({name}): **{median(ours, key) / cpu:.2f}x** server CPU "
                         f"per handshake, **{median(ours, 'cycles_per_sec') / rate:.2f}x** handshakes/s")
    if results.get("bidir") and results.get("bidir-epoll"):
        ratio = median(results["bidir"], key) / median(results["bidir-epoll"], key)
        lines.append(f"\nbidir (io_uring) / bidir-epoll: **{ratio:.2f}x** server CPU per handshake")
    return lines + tls_ratios(cell, results, key)


def per_msg(r):
    if not r or r.get("syscalls_per_msg") is None:
        return "n/a"
    text = f"{r['syscalls_per_msg']:.3f}"
    if r.get("io_uring_enter"):
        text += f" ({r['io_uring_enter'] / r['messages']:.3f} io_uring_enter)"
    return text


def us(v):
    if v is None:
        return "n/a"
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.1f} µs"


def fmt(v, unit=""):
    return "n/a" if v is None else f"{v:,.0f}{unit}"


if __name__ == "__main__":
    main()
