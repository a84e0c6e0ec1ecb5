#!/usr/bin/env python3
"""Prints criterion results as a table of medians: time per iteration and throughput.

Usage: scripts/bench-summary.py [FILTER]   (reads target/criterion/*/*/new/)
"""
import json
import pathlib
import sys

root = pathlib.Path(__file__).resolve().parent.parent / "target" / "criterion"
needle = sys.argv[1] if len(sys.argv) > 1 else ""


def fmt_time(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


rows = []
for bench in sorted(root.glob("**/new/benchmark.json")):
    meta = json.loads(bench.read_text())
    name = meta["full_id"]
    if needle not in name:
        continue
    est = json.loads((bench.parent / "estimates.json").read_text())
    median = est["median"]["point_estimate"]
    thr = meta.get("throughput") or {}
    if "Bytes" in thr:
        gbs = thr["Bytes"] / median
        rate = f"{gbs:.2f} GB/s" if gbs >= 1 else f"{gbs * 1e3:.0f} MB/s"
    elif "Elements" in thr:
        per = median / thr["Elements"]
        rate = f"{thr['Elements'] / median * 1e3:.1f} M/s ({per:.2f} ns each)"
    else:
        rate = ""
    rows.append((name, fmt_time(median), rate))

width = max((len(r[0]) for r in rows), default=10)
for name, t, rate in rows:
    print(f"{name:<{width}}  {t:>10}  {rate}")
