#!/usr/bin/env python3
"""Turns bench-peers.sh's results.jsonl into the markdown table of docs/benchmarks.md.

For each cell: every server's msg/s, server CPU ns/msg, p50/p99 latency, and bidir's ratio to
the best peer (server ns/msg, lower is better); for the idle cell, server RSS per connection.
"""
import json
import sys

CELLS = {
    "c100x16": "100 conns x 16 in flight x 16 B text",
    "c100x4x4k": "100 x 4 x 4 KiB binary",
    "c1000": "1000 x 1 x 64 B text",
    "c1": "1 x 1 x 16 B text",
    "idle10k": "10 000 idle connections",
}


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    by_cell = {}
    for r in rows:
        cell, server = r["label"].split(" ", 1)
        by_cell.setdefault(cell, {})[server] = r
    out = []
    for cell, title in CELLS.items():
        results = by_cell.get(cell)
        if not results:
            continue
        out.append(f"\n**{title}**\n")
        if cell == "idle10k":
            out.append("| server | server RSS per connection | handshakes/s | p50 handshake | p99 handshake |")
            out.append("| --- | ---: | ---: | ---: | ---: |")
            for server, r in results.items():
                rate = r["opened"] / r["connect_s"] if r["connect_s"] else 0
                out.append(f"| {server} | {fmt(r['server_bytes_per_conn'], ' B')} | {rate:,.0f} | "
                           f"{r['p50_us']:.0f} µs | {r['p99_us']:.0f} µs |")
            best = best_peer(results, "server_bytes_per_conn")
        else:
            out.append("| server | msg/s | server CPU ns/msg | p50 | p99 | p99.9 |")
            out.append("| --- | ---: | ---: | ---: | ---: | ---: |")
            for server, r in results.items():
                out.append(f"| {server} | {r['msgs_per_sec']:,.0f} | {fmt(r['server_ns_per_msg'])} | "
                           f"{r['p50_us']:.1f} µs | {r['p99_us']:.1f} µs | {r['p99_9_us']:.1f} µs |")
            best = best_peer(results, "server_ns_per_msg")
        if best and "bidir" in results:
            key = "server_bytes_per_conn" if cell == "idle10k" else "server_ns_per_msg"
            ours = results["bidir"][key]
            name, theirs = best
            if ours and theirs:
                out.append(f"\nbidir / best peer ({name}): **{ours / theirs:.2f}x** "
                           f"{'memory per connection' if cell == 'idle10k' else 'server CPU per message'}")
    print("\n".join(out))


def best_peer(results, key):
    peers = [(s, r[key]) for s, r in results.items() if s != "bidir" and r.get(key)]
    return min(peers, key=lambda p: p[1]) if peers else None


def fmt(v, unit=""):
    return "n/a" if v is None else f"{v:,.0f}{unit}"


if __name__ == "__main__":
    main()
