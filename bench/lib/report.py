#!/usr/bin/env python3
"""Markdown report of bench/run.sh: one table of every round, ratios, issue-8 targets.

usage: report.py RAW_TSV METRICS_TSV
RAW_TSV: one row per round (workload, target, conc, requests, rps, p50_us, p99_us, errors,
cpu_us_per_req, receipts_stored, total_p50_us, dropped, reordered, wall_ms); for SSE rounds
p50/p99 are the time to first event and "requests" are streams.
METRICS_TSV: key/value pairs (memory in kB, callgrind Ir per request, notes).
"""
import csv
import sys

rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
metrics = {r["key"]: r["value"] for r in csv.DictReader(open(sys.argv[2]), delimiter="\t")}
get = {(r["workload"], r["target"], r["conc"]): r for r in rows}


def row(wl, t, conc=None):
    if conc is not None:
        return get.get((wl, t, str(conc)))
    for r in rows:
        if r["workload"] == wl and r["target"] == t:
            return r
    return None


def num(r, k):
    try:
        return float(r[k])
    except (TypeError, ValueError, KeyError):
        return None


def mib(key):
    v = metrics.get(key)
    try:
        return int(v) / 1024
    except (TypeError, ValueError):
        return None


WL_LABEL = {
    "chat": "chat (non-stream)",
    "transcription": "transcription (multipart)",
    "sse_seq": "SSE sequential",
    "sse_conc": "SSE concurrent",
    "sse_many": "SSE many paced",
}
out = []
out.append("| workload | target | conc | requests / streams | req/s | p50 µs | p99 µs | errors | CPU µs/req (proxy) "
           "| receipts | stream total p50 µs | dropped | reordered |")
out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    rec = r["receipts_stored"] if r["target"].startswith("tresor") else "-"
    out.append(f"| {WL_LABEL.get(r['workload'], r['workload'])} | {r['target']} | {r['conc']} | {r['requests']} "
               f"| {r['rps']} | {r['p50_us']} | {r['p99_us']} | {r['errors']} | {r['cpu_us_per_req']} | {rec} "
               f"| {r['total_p50_us']} | {r['dropped']} | {r['reordered']} |")
out.append("")
out.append("SSE rows: p50/p99 = time to first event (request written → first complete `data:` event), "
           "CPU = per stream. `direct` CPU is the upstream itself (nginx-direct, or the fake for SSE); "
           "for the others it is the proxy process only (all threads).")
out.append("")

# ---- ratios -----------------------------------------------------------------------------
out.append("| ratio / figure | value |")
out.append("|---|---:|")


def cpu_ratio(wl, conc, a, b):
    ra, rb = (row(wl, a, conc), row(wl, b, conc)) if conc is not None else (row(wl, a), row(wl, b))
    if not ra or not rb:
        return None
    x, y = num(ra, "cpu_us_per_req"), num(rb, "cpu_us_per_req")
    return x / y if x is not None and y else None


combos = []
concs = sorted({r["conc"] for r in rows if r["workload"] == "chat"}, key=int)
for c in concs:
    combos.append(("chat", c))
for wl in ("transcription", "sse_seq", "sse_conc", "sse_many"):
    for r in rows:
        if r["workload"] == wl:
            combos.append((wl, r["conc"]))
            break
for wl, c in combos:
    for t in ("tresor_on", "tresor_off"):
        for anchor in ("nginx", "portkey"):
            v = cpu_ratio(wl, c, t, anchor)
            if v is not None:
                out.append(f"| CPU/req {WL_LABEL[wl]} c={c}: {t} / {anchor} | {v:.2f}x |")

ADDED = {}
c1 = concs[0] if concs else None
if c1:
    d = row("chat", "direct", c1)
    n = row("chat", "nginx", c1)
    if d:
        added_n = int(n["p50_us"]) - int(d["p50_us"]) if n else None
        for t in ("nginx", "portkey", "tresor_on", "tresor_off"):
            r = row("chat", t, c1)
            if r:
                added = int(r["p50_us"]) - int(d["p50_us"])
                ADDED[t] = added
                ratio = f" ({added / added_n:.2f}x nginx)" if added_n and added_n > 0 and t != "nginx" else ""
                out.append(f"| added p50 over direct, chat c={c1}, {t} | {added} µs{ratio} |")
TTFE = {}
for wl in ("sse_seq", "sse_conc"):
    d = row(wl, "direct")
    if not d:
        continue
    for t in ("nginx", "portkey", "tresor_on", "tresor_off"):
        r = row(wl, t)
        if r:
            added = int(r["p50_us"]) - int(d["p50_us"])
            TTFE[(wl, t)] = added
            note = " (indicative: direct queues the 32 first events)" if wl == "sse_conc" and t == "nginx" else ""
            out.append(f"| added TTFE p50 over direct, {WL_LABEL[wl]} c={r['conc']}, {t}{note} | {added / 1000:.3f} ms |")

for k, label in (("tresor_idle_rss_kb", "tresor VmRSS idle (after start + probes)"),
                 ("tresor_peak_rss_kb", f"tresor VmHWM during the chat c={metrics.get('peak_conc', '?')} rounds"),
                 ("tresor_rss_after_sse_many_kb", "tresor VmRSS after the many-streams round"),
                 ("tresor_rss_before_idle_conns_kb", "tresor VmRSS before the idle connections"),
                 ("tresor_rss_idle_conns_kb", f"tresor VmRSS with {metrics.get('idle_conns', '?')} idle keep-alive connections"),
                 ("tresor_peak_rss_whole_run_kb", "tresor VmHWM over the whole run (before callgrind)"),
                 ("nginx_proxy_peak_rss_kb", "nginx proxy VmHWM (master + worker)"),
                 ("portkey_peak_rss_kb", "Portkey VmHWM (whole run)")):
    v = mib(k)
    if v is not None:
        out.append(f"| {label} | {v:.1f} MiB |")
a, b = mib("tresor_rss_before_idle_conns_kb"), mib("tresor_rss_idle_conns_kb")
held = metrics.get("idle_conns_held")
if a is not None and b is not None and held and int(held):
    out.append(f"| tresor memory per idle connection | {(b - a) * 1024 / int(held):.1f} KiB |")
if "idle_conns" in metrics:
    out.append(f"| idle connections held / still open at release / new client served | "
               f"{metrics.get('idle_conns_held')} / {metrics.get('idle_conns_still_open')} / "
               f"{'yes' if metrics.get('idle_conns_new_client_ok') == '1' else 'NO'} |")
soak_delta = None
if "soak_rss_before_kb" in metrics:
    s0, s1 = int(metrics["soak_rss_before_kb"]), int(metrics["soak_rss_after_kb"])
    soak_delta = (s1 - s0) / s0 * 100
    out.append(f"| soak {metrics['soak_seconds']} s c=64: VmRSS before → after (5 s idle) | "
               f"{s0 / 1024:.1f} → {s1 / 1024:.1f} MiB ({soak_delta:+.1f} %) |")
for k in ("chat_off", "chat_on", "sse_off", "sse_on"):
    v = metrics.get(f"callgrind_ir_per_req_{k}")
    if v:
        out.append(f"| callgrind Ir per request, {k.replace('_', ' receipts ').replace('chat', 'non-stream chat').replace('sse', 'stream')} "
                   f"| {int(v):,} |")
if metrics.get("callgrind", "").startswith("skipped"):
    out.append("| callgrind | skipped |")
if metrics.get("portkey", "on") != "on":
    out.append(f"| Portkey | {metrics['portkey']} |")

# ---- targets (issue 8) -----------------------------------------------------------------
out.append("")
out.append("| issue 8 target | measured | status |")
out.append("|---|---|---|")


def verdict(ok):
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def target(label, measured, ok):
    out.append(f"| {label} | {measured} | {verdict(ok)} |")


cmax = concs[-1] if concs else None
for t, lim in (("tresor_off", 1.5), ("tresor_on", 2.0)):
    v = cpu_ratio("chat", cmax, t, "nginx") if cmax else None
    target(f"chat c={cmax} CPU/req {t} ≤ {lim} × nginx", f"{v:.2f}x" if v else "-", None if v is None else v <= lim)
errs = [int(row("chat", t, cmax)["errors"]) for t in ("tresor_on", "tresor_off") if cmax and row("chat", t, cmax)]
target(f"chat c={cmax} zero errors (tresor on + off)", str(sum(errs)) if errs else "-", (sum(errs) == 0) if errs else None)
if "nginx" in ADDED:
    for t in ("tresor_on", "tresor_off"):
        if t in ADDED:
            ok = ADDED[t] <= 2 * ADDED["nginx"] if ADDED["nginx"] > 0 else None
            target(f"chat c={c1} added p50 {t} ≤ 2 × nginx's ({ADDED['nginx']} µs)", f"{ADDED[t]} µs", ok)
for t in ("tresor_on", "tresor_off"):
    r = row("transcription", t)
    v = cpu_ratio("transcription", r["conc"], t, "nginx") if r else None
    target(f"transcription c={r['conc'] if r else '?'} CPU/req {t} ≤ 2 × nginx", f"{v:.2f}x" if v else "-",
           None if v is None else v <= 2.0)
for t in ("tresor_on", "tresor_off"):
    v = TTFE.get(("sse_seq", t))
    target(f"SSE added TTFE p50 {t} ≤ 0.3 ms (sequential)", f"{v / 1000:.3f} ms" if v is not None else "-",
           None if v is None else v <= 300)
for t in ("tresor_on", "tresor_off"):
    r = row("sse_conc", t)
    v = cpu_ratio("sse_conc", r["conc"], t, "nginx") if r else None
    target(f"SSE CPU/stream {t} ≤ 1.5 × nginx (c={r['conc'] if r else '?'})", f"{v:.2f}x" if v else "-",
           None if v is None else v <= 1.5)
r = row("sse_many", "tresor_on")
if r:
    bad = int(r["dropped"]) + int(r["reordered"]) + int(r["errors"])
    target(f"{r['conc']} concurrent paced streams through tresor_on: 0 dropped / reordered / failed",
           f"{r['dropped']} / {r['reordered']} / {r['errors']} of {r['requests']} in {int(r['wall_ms']) / 1000:.2f} s",
           bad == 0 and int(r["conc"]) >= 2000)
else:
    target("2000 concurrent paced streams, 0 dropped/reordered", "-", None)
v = mib("tresor_idle_rss_kb")
target("idle RSS ≤ 20 MiB", f"{v:.1f} MiB" if v is not None else "-", None if v is None else v <= 20)
v = mib("tresor_peak_rss_kb")
target(f"peak RSS at c={metrics.get('peak_conc', '?')} ≤ 64 MiB", f"{v:.1f} MiB" if v is not None else "-",
       None if v is None else v <= 64)
v = mib("tresor_rss_idle_conns_kb")
n = metrics.get("idle_conns", "?")
ok = None
if v is not None:
    ok = (v <= 150 and metrics.get("idle_conns_held") == n and metrics.get("idle_conns_still_open") == n
          and metrics.get("idle_conns_new_client_ok") == "1" and int(n) >= 10000)
target(f"{n} idle keep-alive connections held, RSS ≤ 150 MiB", f"{v:.1f} MiB" if v is not None else "-", ok)
if soak_delta is not None:
    target(f"RSS within 10 % after {metrics['soak_seconds']} s load (10 min asked)", f"{soak_delta:+.1f} %",
           abs(soak_delta) <= 10 and int(metrics["soak_seconds"]) >= 600)
else:
    target("RSS within 10 % after a 10-minute load", "not run (BENCH_SOAK_SECONDS=600)", None)
print("\n".join(out))
