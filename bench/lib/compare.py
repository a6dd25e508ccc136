#!/usr/bin/env python3
"""Compare the median ratios of two bench runs (the ```tsv ratios block of RESULTS.md).

usage: compare.py OLD_RESULTS.md NEW_RESULTS.md [--kinds cpu,ir] [--tolerance 10]
  e.g. python3 bench/lib/compare.py <(git show HEAD~1:bench/RESULTS.md) bench/RESULTS.md

Prints each ratio of the given kinds (default: cpu = CPU per request, ir = callgrind
instructions per request; others: p50, p99, rps) in both runs and the difference
new/old − 1. Exit 0 if every ratio present in both runs is within ±tolerance %, 1 if not,
2 if a file has no ratios block (a RESULTS.md from before issue 20).
"""
import argparse
import sys


def ratios(path):
    rows, inside, header = {}, False, None
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if line.startswith("```tsv ratios"):
            inside = True
            continue
        if inside and line.startswith("```"):
            break
        if inside:
            f = line.split("\t")
            if header is None:
                header = f
                continue
            r = dict(zip(header, f))
            rows[(r["kind"], r["workload"], r["conc"], r["target"], r["anchor"])] = r
    return rows


ap = argparse.ArgumentParser()
ap.add_argument("old")
ap.add_argument("new")
ap.add_argument("--kinds", default="cpu,ir")
ap.add_argument("--tolerance", type=float, default=10.0, help="percent")
a = ap.parse_args()
old, new = ratios(a.old), ratios(a.new)
if not old or not new:
    print(f"no ```tsv ratios block in {a.old if not old else a.new}", file=sys.stderr)
    sys.exit(2)
kinds = a.kinds.split(",")
print(f"| ratio | old median (min–max) | new median (min–max) | new ÷ old − 1 | within ±{a.tolerance:g} % |")
print("|---|---:|---:|---:|---|")
bad = 0
for k in sorted(set(old) & set(new), key=lambda k: (kinds.index(k[0]) if k[0] in kinds else 99, k)):
    if k[0] not in kinds:
        continue
    o, n = old[k], new[k]
    d = float(n["median"]) / float(o["median"]) - 1
    ok = abs(d) * 100 <= a.tolerance
    bad += not ok
    name = f"{k[0]} {k[1]}{'' if k[2] == '-' else ' c=' + k[2]} {k[3]} ÷ {k[4]}"
    print(f"| {name} | {float(o['median']):.2f} ({float(o['min']):.2f}–{float(o['max']):.2f}) "
          f"| {float(n['median']):.2f} ({float(n['min']):.2f}–{float(n['max']):.2f}) | {d * 100:+.1f} % | {'yes' if ok else 'NO'} |")
only = [k for k in set(old) ^ set(new) if k[0] in kinds]
if only:
    print(f"\nin one run only: {', '.join(' '.join(x) for x in sorted(only))}")
print(f"\n{bad} ratio(s) outside ±{a.tolerance:g} %")
sys.exit(1 if bad else 0)
