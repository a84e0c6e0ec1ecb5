#!/usr/bin/env python3
"""Compares an Autobahn report with the committed golden file.

    compare.py REPORT_DIR GOLDEN AGENT CASES_FILE [--update]

Reads REPORT_DIR/index.json, keeps AGENT's results for the cases listed in CASES_FILE (one
id per line: the cases this run selected), and compares each case's (behavior,
behaviorClose) with GOLDEN. Prints a summary line; exits 1 on any difference, including a
case missing from the report. With --update, writes the run's results into GOLDEN (merged
with the cases it did not run) instead.
"""
import collections
import json
import sys


def key(case):
    return tuple(int(p) if p.isdigit() else p for p in case.split("."))


def main():
    args = [a for a in sys.argv[1:] if a != "--update"]
    update = "--update" in sys.argv
    report_dir, golden_path, agent, cases_path = args
    with open(report_dir + "/index.json") as f:
        index = json.load(f)
    results = index.get(agent) or (next(iter(index.values())) if len(index) == 1 else {})
    with open(cases_path) as f:
        cases = [line.strip() for line in f if line.strip()]
    got = {}
    for case in cases:
        r = results.get(case)
        got[case] = [r["behavior"], r["behaviorClose"]] if r else ["MISSING", "MISSING"]
    try:
        with open(golden_path) as f:
            golden = json.load(f)
    except FileNotFoundError:
        golden = {}

    counts = collections.Counter(b for b, _ in got.values())
    summary = ", ".join("%d %s" % (counts[b], b) for b in
                        ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "MISSING"]
                        if counts[b] or b in ("OK", "FAILED"))
    if update:
        golden.update(got)
        lines = ['  "%s": ["%s", "%s"]' % (case, b, c)
                 for case, (b, c) in sorted(golden.items(), key=lambda kv: key(kv[0]))]
        with open(golden_path, "w") as f:
            f.write("{\n" + ",\n".join(lines) + "\n}\n")
        print("autobahn: %d cases: %s (golden file updated)" % (len(got), summary))
        return 0

    diffs = []
    for case in sorted(got, key=key):
        want = golden.get(case)
        if want != got[case]:
            diffs.append("  %-8s expected %s, got %s" % (case, want or "nothing (not in golden file)", got[case]))
    print("autobahn: %d cases: %s" % (len(got), summary))
    not_ok = [c for c in sorted(got, key=key) if got[c][0] != "OK"]
    if not_ok:
        print("  not OK: " + ", ".join("%s=%s" % (c, got[c][0]) for c in not_ok))
    if diffs:
        print("DIFFERENT from %s (a regression, or update the golden file with --update):" % golden_path)
        print("\n".join(diffs))
        return 1
    print("matches %s" % golden_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
