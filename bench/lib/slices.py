#!/usr/bin/env python3
"""One raw.tsv row per target from the slices of one workload in one round (bench/run.sh).

usage: slices.py SLICES_TSV ROUND WORKLOAD CONC   → rows on stdout, raw.tsv's columns

Why slices: this VM's speed drifts over seconds. A target measured for 5 s, then the next
for 5 s, compares two different machines; instead a round measures every target in short
slices, alternating (nginx 1 s, tresor 1 s, Portkey 1 s, nginx 1 s, …), and sums each
target's slices. A ratio inside a round then compares the same stretch of the VM's life.

SLICES_TSV columns: round workload target conc slice cpu_ns requests dur_us errors receipts
dropped reordered kind latency_file. kind "wrk": latency_file holds 1,000 latency
quantiles in µs (bench/wrk/common.lua), each standing for requests/1,000 of the slice;
kind "sse": latency_file is sse_load's per-stream samples (ttfe_us, total_us).

A round's row: requests, errors, receipts, dropped, reordered and wall time are sums;
req/s = requests / summed duration; CPU µs/req = summed CPU ns / summed requests / 1,000;
p50/p99 (SSE: time to first event) and the stream total p50 come from the slices' merged
latency distribution, not from averaging percentiles.
"""
import csv
import sys


def weighted_percentile(points, p):
    """points: (value, weight); the smallest value with cumulative weight ≥ p % of the total."""
    points = sorted(points)
    total = sum(w for _, w in points)
    if not total:
        return None
    need, acc = total * p / 100.0, 0.0
    for v, w in points:
        acc += w
        if acc >= need:
            return v
    return points[-1][0]


def wrk_points(path, requests):
    vals = [float(x) for x in open(path) if x.strip()]
    return [(v, requests / len(vals)) for v in vals] if vals else []


def sse_points(path):
    ttfe, total = [], []
    for r in csv.DictReader(open(path), delimiter="\t"):
        ttfe.append((float(r["ttfe_us"]), 1.0))
        total.append((float(r["total_us"]), 1.0))
    return ttfe, total


def fmt(v, spec="{:.0f}"):
    return "-" if v is None else spec.format(v)


def main():
    path, rnd, wl, conc = sys.argv[1:5]
    rows = [r for r in csv.DictReader(open(path), delimiter="\t")
            if r["round"] == rnd and r["workload"] == wl and r["conc"] == conc]
    targets = []
    for r in rows:
        if r["target"] not in targets:
            targets.append(r["target"])
    for t in targets:
        rs = [r for r in rows if r["target"] == t]
        s = lambda k: sum(int(r[k]) for r in rs)  # noqa: E731
        req, dur_us = s("requests"), s("dur_us")
        lat, tot = [], []
        for r in rs:
            if r["kind"] == "wrk":
                lat += wrk_points(r["latency_file"], int(r["requests"]))
            else:
                a, b = sse_points(r["latency_file"])
                lat += a
                tot += b
        sse = rs[0]["kind"] == "sse"
        cpu = s("cpu_ns") / 1e3 / req if req else float("nan")
        print("\t".join([
            rnd, wl, t, conc, str(req), fmt(req / dur_us * 1e6 if dur_us else None),
            fmt(weighted_percentile(lat, 50)), fmt(weighted_percentile(lat, 99)), str(s("errors")),
            f"{cpu:.2f}", str(s("receipts")),
            fmt(weighted_percentile(tot, 50)) if sse else "-",
            str(s("dropped")) if sse else "-", str(s("reordered")) if sse else "-",
            f"{dur_us / 1e3:.0f}",
        ]))


if __name__ == "__main__":
    main()
