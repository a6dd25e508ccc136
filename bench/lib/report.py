#!/usr/bin/env python3
"""Markdown report of bench/run.sh: medians over the rounds, ratios to nginx and Portkey with
their spread, callgrind Ir/request ratios, issue-8 targets; data files for lib/chart.gp.

usage: report.py RAW_TSV METRICS_TSV [CHART_DIR]
RAW_TSV: one row per round and target (round, workload, target, conc, requests, rps, p50_us,
p99_us, errors, cpu_us_per_req, receipts_stored, total_p50_us, dropped, reordered, wall_ms);
for SSE rounds p50/p99 are the time to first event and "requests" are streams.
METRICS_TSV: key/value pairs (memory in kB, callgrind Ir per request, notes).
CHART_DIR: written with cpu.tsv, ir.tsv, p50.tsv, p99.tsv (created if missing).

Spread: min–max over the rounds. A ratio is computed inside each round (tresor and nginx
measured a few seconds apart, in the same state of the VM), then its median is taken.
"""
import csv
import os
import statistics
import sys

rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
metrics = {r["key"]: r["value"] for r in csv.DictReader(open(sys.argv[2]), delimiter="\t")}
chart_dir = sys.argv[3] if len(sys.argv) > 3 else None

WL_LABEL = {
    "chat": "chat (non-stream)",
    "transcription": "transcription (multipart)",
    "sse_seq": "SSE sequential",
    "sse_conc": "SSE concurrent",
    "sse_many": "SSE many paced",
}
WL_SHORT = {"chat": "chat", "transcription": "transcription", "sse_seq": "SSE seq", "sse_conc": "SSE",
            "sse_many": "SSE"}
TARGETS = ["direct", "nginx", "portkey", "tresor_on", "tresor_off"]
ANCHORS = ["nginx", "portkey"]


def num(r, k):
    try:
        return float(r[k])
    except (TypeError, ValueError, KeyError):
        return None


# by[(wl, conc)][target][round] = row
by = {}
for r in rows:
    by.setdefault((r["workload"], r["conc"]), {}).setdefault(r["target"], {})[int(r["round"])] = r
# workloads in the order they ran
combos = []
for r in rows:
    k = (r["workload"], r["conc"])
    if k not in combos:
        combos.append(k)
order = {"chat": 0, "transcription": 1, "sse_seq": 2, "sse_conc": 3, "sse_many": 4}
combos.sort(key=lambda k: (order.get(k[0], 9), int(k[1])))
n_rounds = max((int(r["round"]) for r in rows), default=0)


class Stat:
    """median and min–max of a list of figures (None dropped)."""

    def __init__(self, xs):
        self.xs = [x for x in xs if x is not None]
        self.n = len(self.xs)
        self.med = statistics.median(self.xs) if self.xs else None
        self.lo = min(self.xs) if self.xs else None
        self.hi = max(self.xs) if self.xs else None

    def fmt(self, f="{:.2f}", unit=""):
        if self.med is None:
            return "-"
        if self.n == 1:
            return f.format(self.med) + unit
        sep = " to " if self.lo < 0 else "–"  # "-0.4–0.7" would read as a minus sign
        return f"{f.format(self.med)}{unit} ({f.format(self.lo)}{sep}{f.format(self.hi)})"


def series(wl, conc, t, key):
    return Stat([num(r, key) for r in by.get((wl, conc), {}).get(t, {}).values()])


def ratio(wl, conc, a, b, key):
    """per-round a/b of a column, then median and min–max over the rounds both ran."""
    ra, rb = by.get((wl, conc), {}).get(a, {}), by.get((wl, conc), {}).get(b, {})
    xs = []
    for rnd in sorted(set(ra) & set(rb)):
        x, y = num(ra[rnd], key), num(rb[rnd], key)
        xs.append(x / y if x is not None and y else None)
    return Stat(xs)


def added(wl, conc, t, key="p50_us"):
    """per-round target − direct of a latency column (µs)."""
    rt, rd = by.get((wl, conc), {}).get(t, {}), by.get((wl, conc), {}).get("direct", {})
    xs = []
    for rnd in sorted(set(rt) & set(rd)):
        x, y = num(rt[rnd], key), num(rd[rnd], key)
        xs.append(x - y if x is not None and y is not None else None)
    return Stat(xs)


out = []
spread = f"median over {n_rounds} rounds, (min–max) across the rounds"
out.append(f"Figures: {spread}. Ratios are taken inside each round, then the median of the per-round ratios.")
out.append("")

# ---- medians per workload and target ------------------------------------------------------
out.append("| workload | target | conc | rounds | requests / streams per round | req/s | p50 µs | p99 µs | errors (all rounds) "
           "| CPU µs/req (proxy) | receipts (all rounds) | stream total p50 µs | dropped | reordered |")
out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for wl, conc in combos:
    for t in TARGETS:
        rs = list(by[(wl, conc)].get(t, {}).values())
        if not rs:
            continue
        tot = lambda k: sum(int(r[k]) for r in rs if r[k] not in ("-", ""))  # noqa: E731
        rec = str(tot("receipts_stored")) if t.startswith("tresor") else "-"
        sse = wl.startswith("sse")
        out.append(f"| {WL_LABEL.get(wl, wl)} | {t} | {conc} | {len(rs)} | {series(wl, conc, t, 'requests').fmt('{:.0f}')} "
                   f"| {series(wl, conc, t, 'rps').fmt('{:.0f}')} | {series(wl, conc, t, 'p50_us').fmt('{:.0f}')} "
                   f"| {series(wl, conc, t, 'p99_us').fmt('{:.0f}')} | {tot('errors')} "
                   f"| {series(wl, conc, t, 'cpu_us_per_req').fmt()} | {rec} "
                   f"| {series(wl, conc, t, 'total_p50_us').fmt('{:.0f}') if sse else '-'} "
                   f"| {tot('dropped') if sse else '-'} | {tot('reordered') if sse else '-'} |")
out.append("")
out.append("SSE rows: p50/p99 = time to first event (request written → first complete `data:` event), "
           "CPU = per stream. `direct` CPU is the upstream itself (nginx-direct, or the fake for SSE); "
           "for the others it is the proxy process only (all threads).")
out.append("")

# ---- ratios to nginx and Portkey ------------------------------------------------------------
ratio_rows = []  # kind, workload, conc, target, anchor, Stat
out.append("| workload | target ÷ anchor | CPU/req | p50 | p99 | req/s |")
out.append("|---|---|---:|---:|---:|---:|")
for wl, conc in combos:
    for anchor in ANCHORS:
        for t in ("tresor_on", "tresor_off", "portkey"):
            if t == anchor or not by[(wl, conc)].get(t) or not by[(wl, conc)].get(anchor):
                continue
            if anchor == "portkey" and t == "portkey":
                continue
            st = {k: ratio(wl, conc, t, anchor, col) for k, col in
                  (("cpu", "cpu_us_per_req"), ("p50", "p50_us"), ("p99", "p99_us"), ("rps", "rps"))}
            for k, s in st.items():
                ratio_rows.append((k, wl, conc, t, anchor, s))
            out.append(f"| {WL_LABEL.get(wl, wl)} c={conc} | {t} ÷ {anchor} | {st['cpu'].fmt(unit='x')} "
                       f"| {st['p50'].fmt(unit='x')} | {st['p99'].fmt(unit='x')} | {st['rps'].fmt(unit='x')} |")
out.append("")
out.append("p50/p99 of SSE rows are the time to first event. A CPU ratio < 1 against Portkey = tresor uses less.")
out.append("")

# ---- callgrind ----------------------------------------------------------------------------
cg = {}
for k in ("chat", "transcription", "sse"):
    for v in ("on", "off", "nginx"):
        x = metrics.get(f"callgrind_ir_per_req_{k}_{v}")
        cg[(k, v)] = int(x) if x and x.isdigit() and int(x) > 0 else None
if any(cg.values()):
    out.append("| callgrind, Ir per request (user-space instructions) | tresor receipts on | tresor receipts off | nginx "
               "| on ÷ nginx | off ÷ nginx |")
    out.append("|---|---:|---:|---:|---:|---:|")
    for k, label in (("chat", f"non-stream chat ({metrics.get('callgrind_requests', '?')} requests)"),
                     ("transcription", f"transcription ({metrics.get('callgrind_transcriptions', '?')} uploads)"),
                     ("sse", f"stream ({metrics.get('callgrind_streams', '?')} streams)")):
        on, off, ng = cg[(k, "on")], cg[(k, "off")], cg[(k, "nginx")]
        f = lambda v: f"{v:,}" if v else "-"  # noqa: E731
        r_on = on / ng if on and ng else None
        r_off = off / ng if off and ng else None
        for t, r in (("tresor_on", r_on), ("tresor_off", r_off)):
            if r:
                ratio_rows.append(("ir", k, "-", t, "nginx", Stat([r])))
        out.append(f"| {label} | {f(on)} | {f(off)} | {f(ng)} | {f'{r_on:.2f}x' if r_on else '-'} "
                   f"| {f'{r_off:.2f}x' if r_off else '-'} |")
    out.append("")
    out.append("Ir between two `callgrind_control -d` dumps taken around a fixed batch (after a warm-up), ÷ the batch's "
               "requests: startup never counts. Kernel work (syscalls, TCP) is not in Ir.")
    out.append("")

# ---- other figures ------------------------------------------------------------------------
out.append("| figure | value |")
out.append("|---|---:|")
ADDED = {}
chat_concs = [c for wl, c in combos if wl == "chat"]
c1 = chat_concs[0] if chat_concs else None
if c1:
    an = added("chat", c1, "nginx")
    for t in ("nginx", "portkey", "tresor_on", "tresor_off"):
        a = added("chat", c1, t)
        if a.med is None:
            continue
        ADDED[t] = a.med
        extra = f" ({a.med / an.med:.2f}x nginx's)" if an.med and an.med > 0 and t != "nginx" else ""
        out.append(f"| added p50 over direct, chat c={c1}, {t} | {a.fmt('{:.0f}', ' µs')}{extra} |")
TTFE = {}
for wl, conc in combos:
    if wl not in ("sse_seq", "sse_conc"):
        continue
    for t in ("nginx", "portkey", "tresor_on", "tresor_off"):
        a = added(wl, conc, t)
        if a.med is None:
            continue
        TTFE[(wl, t)] = a.med
        note = " (indicative: direct queues the 32 first events)" if wl == "sse_conc" else ""
        ms = Stat([x / 1000 for x in a.xs])
        out.append(f"| added TTFE p50 over direct, {WL_LABEL[wl]} c={conc}, {t}{note} | {ms.fmt('{:.3f}', ' ms')} |")


def mib(key):
    try:
        return int(metrics.get(key)) / 1024
    except (TypeError, ValueError):
        return None


for k, label in (("tresor_idle_rss_kb", "tresor VmRSS idle (after start + probes)"),
                 ("tresor_peak_rss_kb", f"tresor VmHWM during the chat c={metrics.get('peak_conc', '?')} rounds (largest round)"),
                 ("tresor_rss_after_sse_many_kb", "tresor VmRSS after the last many-streams round"),
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
if a is not None and b is not None and held and held.isdigit() and int(held):
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
if metrics.get("callgrind", "").startswith("skipped"):
    out.append("| callgrind | skipped |")
if metrics.get("portkey", "on") != "on":
    out.append(f"| Portkey | {metrics['portkey']} |")

# ---- targets (issue 8), on the medians ----------------------------------------------------
out.append("")
out.append("| issue 8 target (median over the rounds) | measured | status |")
out.append("|---|---|---|")


def verdict(ok):
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def target(label, measured, ok):
    out.append(f"| {label} | {measured} | {verdict(ok)} |")


def first_conc(wl):
    return next((c for w, c in combos if w == wl), None)


cmax = chat_concs[-1] if chat_concs else None
for t, lim in (("tresor_off", 1.5), ("tresor_on", 2.0)):
    v = ratio("chat", cmax, t, "nginx", "cpu_us_per_req") if cmax else Stat([])
    target(f"chat c={cmax} CPU/req {t} ≤ {lim} × nginx", v.fmt(unit="x"), None if v.med is None else v.med <= lim)
errs = [int(r["errors"]) for t in ("tresor_on", "tresor_off") for r in by.get(("chat", cmax), {}).get(t, {}).values()]
target(f"chat c={cmax} zero errors (tresor on + off, all rounds)", str(sum(errs)) if errs else "-",
       (sum(errs) == 0) if errs else None)
if "nginx" in ADDED:
    for t in ("tresor_on", "tresor_off"):
        if t in ADDED:
            ok = ADDED[t] <= 2 * ADDED["nginx"] if ADDED["nginx"] > 0 else None
            target(f"chat c={c1} added p50 {t} ≤ 2 × nginx's ({ADDED['nginx']:.0f} µs)", f"{ADDED[t]:.0f} µs", ok)
ct = first_conc("transcription")
for t in ("tresor_on", "tresor_off"):
    v = ratio("transcription", ct, t, "nginx", "cpu_us_per_req") if ct else Stat([])
    target(f"transcription c={ct} CPU/req {t} ≤ 2 × nginx", v.fmt(unit="x"), None if v.med is None else v.med <= 2.0)
for t in ("tresor_on", "tresor_off"):
    v = TTFE.get(("sse_seq", t))
    target(f"SSE added TTFE p50 {t} ≤ 0.3 ms (sequential)", f"{v / 1000:.3f} ms" if v is not None else "-",
           None if v is None else v <= 300)
cs = first_conc("sse_conc")
for t in ("tresor_on", "tresor_off"):
    v = ratio("sse_conc", cs, t, "nginx", "cpu_us_per_req") if cs else Stat([])
    target(f"SSE CPU/stream {t} ≤ 1.5 × nginx (c={cs})", v.fmt(unit="x"), None if v.med is None else v.med <= 1.5)
cm = first_conc("sse_many")
rs = list(by.get(("sse_many", cm), {}).get("tresor_on", {}).values()) if cm else []
if rs:
    d, o, e = (sum(int(r[k]) for r in rs) for k in ("dropped", "reordered", "errors"))
    walls = Stat([int(r["wall_ms"]) / 1000 for r in rs])
    target(f"{cm} concurrent paced streams through tresor_on: 0 dropped / reordered / failed ({len(rs)} rounds)",
           f"{d} / {o} / {e} of {sum(int(r['requests']) for r in rs)}, wall {walls.fmt('{:.2f}', ' s')}",
           d + o + e == 0 and int(cm) >= 2000)
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

# ---- ratios, machine-readable (lib/compare.py reads this block) ----------------------------
out.append("")
out.append("Ratios (for `bench/lib/compare.py`):")
out.append("")
out.append("```tsv ratios")
out.append("kind\tworkload\tconc\ttarget\tanchor\tmedian\tmin\tmax\trounds")
for k, wl, conc, t, anchor, s in ratio_rows:
    if s.med is not None:
        out.append(f"{k}\t{wl}\t{conc}\t{t}\t{anchor}\t{s.med:.4f}\t{s.lo:.4f}\t{s.hi:.4f}\t{s.n}")
out.append("```")
print("\n".join(out))

# ---- chart data ---------------------------------------------------------------------------
if chart_dir:
    os.makedirs(chart_dir, exist_ok=True)
    labels = {}
    for wl, conc in combos:
        if wl == "chat":
            labels[(wl, conc)] = f"chat c={conc}"
        elif wl == "transcription":
            labels[(wl, conc)] = f"transcr. c={conc}"
        elif wl == "sse_seq":
            labels[(wl, conc)] = "SSE seq."
        else:
            labels[(wl, conc)] = f"SSE c={conc}"

    def cells(s, scale=1.0):
        if s.med is None:
            return ["?", "?", "?"]
        return [f"{s.med * scale:.6g}", f"{s.lo * scale:.6g}", f"{s.hi * scale:.6g}"]

    n_cpu, cpu_max = 0, 1.0
    with open(os.path.join(chart_dir, "cpu.tsv"), "w") as f:
        f.write("# workload\ttresor_on\tlo\thi\ttresor_off\tlo\thi\tportkey\tlo\thi\n")
        for wl, conc in combos:
            cs_ = [ratio(wl, conc, t, "nginx", "cpu_us_per_req") for t in ("tresor_on", "tresor_off", "portkey")]
            if all(s.med is None for s in cs_):
                continue
            n_cpu += 1
            cpu_max = max([cpu_max] + [x.hi for x in cs_ if x.hi is not None])
            f.write("\t".join([labels[(wl, conc)]] + sum((cells(s) for s in cs_), [])) + "\n")
    n_ir, ir_max = 0, 0.0
    with open(os.path.join(chart_dir, "ir.tsv"), "w") as f:
        f.write("# workload\ttresor_on\ttresor_off\n")
        for k, label in (("chat", "chat"), ("transcription", "transcription"), ("sse", "SSE stream")):
            ng = cg.get((k, "nginx"))
            rs_ = [cg[(k, v)] / ng if ng and cg.get((k, v)) else None for v in ("on", "off")]
            if any(rs_):
                n_ir += 1
                ir_max = max([ir_max] + [x for x in rs_ if x])
                f.write("\t".join([label] + [f"{x:.4g}" if x else "?" for x in rs_]) + "\n")
    for col, name in (("p50_us", "p50.tsv"), ("p99_us", "p99.tsv")):
        with open(os.path.join(chart_dir, name), "w") as f:
            f.write("# workload\t" + "\t".join(f"{t}\tlo\thi" for t in TARGETS) + "\n")
            for wl, conc in combos:
                f.write("\t".join([labels[(wl, conc)]] +
                                  sum((cells(series(wl, conc, t, col), 1e-3) for t in TARGETS), [])) + "\n")
    with open(os.path.join(chart_dir, "meta.gp"), "w") as f:
        f.write(f"cpu_max = {cpu_max:.4f}\nn_wl = {n_cpu}\nn_lat = {len(combos)}\nn_ir = {n_ir}\nir_max = {ir_max:.4f}\nn_rounds = {n_rounds}\n")
