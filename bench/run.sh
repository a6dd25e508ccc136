#!/usr/bin/env bash
# Loopback benchmark: direct nginx upstream vs nginx proxy vs tresor-router (receipts on/off).
# One command, stops by itself, < 2 min. See bench/README.md.
# Env: BENCH_DURATION (s, default 5), BENCH_WARMUP (s, default 1), BENCH_CONC ("1 64"),
#      BENCH_KEEP=1 keeps the private temp dir, TRESOR_BUILD_DIR (default ./build).
set -euo pipefail
bench="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$bench/.." && pwd)"
build="${TRESOR_BUILD_DIR:-$root/build}"
router="$build/tresor-router"
duration="${BENCH_DURATION:-5}"
warmup="${BENCH_WARMUP:-1}"
concs="${BENCH_CONC:-1 64}"
# shellcheck source=lib/common.sh
source "$bench/lib/common.sh"
t_start=$(date +%s)

# ---- 1. dependencies ---------------------------------------------------------------
need=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
for c in curl python3 taskset pgrep; do command -v "$c" >/dev/null || die "$c missing"; done
if ((${#need[@]})); then
  pkgs=()
  for p in "${need[@]}"; do
    if [[ $p == nginx ]]; then
      # nginx-light (Debian 12) if it has a candidate, else nginx-core.
      if apt-cache policy nginx-light 2>/dev/null | grep -q 'Candidate: [0-9]'; then pkgs+=(nginx-light)
      else pkgs+=(nginx-core); fi
    else pkgs+=("$p"); fi
  done
  log "installing ${pkgs[*]}"
  sudo_=""; [[ $(id -u) -eq 0 ]] || sudo_="sudo"
  $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}" >&2 \
    || { $sudo_ apt-get update >&2 && $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}" >&2; }
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
[[ -x $router ]] || die "$router not built (run scripts/build.sh)"

# ---- CPU layout ----------------------------------------------------------------------
ncpu=$(nproc)
if ((ncpu >= 2)); then
  load_cpu=0; proxy_cpu=1
else
  load_cpu=0; proxy_cpu=0
  log "WARNING: 1 CPU: proxy, upstream and wrk share it; numbers are not comparable"
fi
# nginx worker_cpu_affinity wants a binary mask ("10" = CPU 1)
bin_mask() { python3 -c "print(format(1<<$1,'b'))"; }

# ---- 2. private dir, processes, cleanup ------------------------------------------------
dir="$(mktemp -d /var/tmp/tresor-bench.XXXXXX)"
chmod 755 "$dir"
pids=()
cleanup() {
  local rc=$? p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  if [[ ${BENCH_KEEP:-0} == 1 || ( $rc -ne 0 && $rc -ne 130 ) ]]; then log "kept $dir"; else rm -rf "$dir"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM   # cleanup runs once the foreground wrk (≤ BENCH_DURATION s) returns

port_a=$(free_port); port_b=$(free_port); port_t=$(free_port)
while [[ $port_b == "$port_a" ]]; do port_b=$(free_port); done
while [[ $port_t == "$port_a" || $port_t == "$port_b" ]]; do port_t=$(free_port); done

canned='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! I am fine, thank you for asking."},"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":11,"total_tokens":25}}'

render "$bench/nginx/direct.conf.tmpl" "$dir/direct.conf" DIR="$dir" PORT_A="$port_a" \
  DIRECT_CPU_MASK="$(bin_mask $load_cpu)" CANNED_JSON="$canned"
render "$bench/nginx/proxy.conf.tmpl" "$dir/proxy.conf" DIR="$dir" PORT_A="$port_a" PORT_B="$port_b" \
  PROXY_CPU_MASK="$(bin_mask $proxy_cpu)"
key="tr-$(python3 -c 'import secrets; print(secrets.token_hex(48))')"
key_sha=$("$router" hash-key "$key")
render "$bench/tresor.yaml.tmpl" "$dir/tresor.yaml" DIR="$dir" PORT_A="$port_a" PORT_T="$port_t" KEY_SHA256="$key_sha"
"$router" check-config "$dir/tresor.yaml" >&2 || die "tresor config invalid"

taskset -c "$load_cpu" "$NGINX" -p "$dir" -e "$dir/direct.error.log" -c "$dir/direct.conf" 2>"$dir/direct.stderr" &
pid_direct=$!; pids+=("$pid_direct")
taskset -c "$proxy_cpu" "$NGINX" -p "$dir" -e "$dir/proxy.error.log" -c "$dir/proxy.conf" 2>"$dir/proxy.stderr" &
pid_proxy=$!; pids+=("$pid_proxy")
(cd "$dir" && exec taskset -c "$proxy_cpu" "$router" --config "$dir/tresor.yaml") >"$dir/tresor.log" 2>&1 &
pid_tresor=$!; pids+=("$pid_tresor")

wait_http "http://127.0.0.1:$port_a/" 10 || die "nginx direct did not start: $(cat "$dir/direct.stderr" "$dir/direct.error.log" 2>/dev/null)"
wait_http "http://127.0.0.1:$port_b/" 10 || die "nginx proxy did not start: $(cat "$dir/proxy.stderr" "$dir/proxy.error.log" 2>/dev/null)"
wait_http "http://127.0.0.1:$port_t/readyz" 15 || die "tresor-router did not start: $(tail -20 "$dir/tresor.log")"
log "ports: direct=$port_a nginx-proxy=$port_b tresor=$port_t; cpus: proxy=$proxy_cpu load=$load_cpu; dir=$dir"

# ---- sanity: one request through each ------------------------------------------------
body='{"model":"bench-model","messages":[{"role":"user","content":"Hello, how are you?"}]}'
probe() { # url [extra header]
  curl -s -m 5 -w '\n%{http_code}' -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
    ${2:+-H "$2"} --data-binary "$body" "$1"
}
for u in "http://127.0.0.1:$port_a" "http://127.0.0.1:$port_b"; do
  out=$(probe "$u/v1/chat/completions"); [[ ${out##*$'\n'} == 200 && $out == *chat.completion* ]] \
    || die "probe $u failed: $out"
done
out=$(probe "http://127.0.0.1:$port_t/v1/chat/completions")
[[ ${out##*$'\n'} == 200 && $out == *'"receipt_id":"'* ]] || die "tresor (receipts on) probe failed: $out"
out=$(probe "http://127.0.0.1:$port_t/v1/chat/completions" "X-Tresor-Receipt: false")
[[ ${out##*$'\n'} == 200 && $out != *'"receipt_id":"'* ]] || die "tresor (receipts off) probe failed: $out"

metric() { # name: sum of a Prometheus counter from tresor /metrics
  curl -s -m 5 "http://127.0.0.1:$port_t/metrics" | awk -v n="$1" '$1 == n || index($1, n"{") == 1 {s += $2} END {printf "%d", s}'
}

# ---- 4/5. rounds -------------------------------------------------------------------------
raw="$dir/raw.tsv"
printf 'target\tconc\trequests\trps\tp50_us\tp99_us\terrors\tcpu_us_per_req\treceipts_stored\n' > "$raw"
run_wrk() { # port conc seconds receipt outfile
  BENCH_KEY="$key" BENCH_RECEIPT="$4" BENCH_OUT="$5" taskset -c "$load_cpu" \
    wrk -t1 -c"$2" -d"${3}s" --timeout 5s --latency -s "$bench/wrk/chat.lua" \
    "http://127.0.0.1:$1/v1/chat/completions" > "$5.log" 2>&1
}
round() { # name port receipt conc pids...
  local name=$1 port=$2 receipt=$3 conc=$4; shift 4
  local tp=() p
  for p in "$@"; do mapfile -t -O "${#tp[@]}" tp < <(pid_tree "$p"); done
  run_wrk "$port" "$conc" "$warmup" "$receipt" "$dir/warm.$name.$conc" || die "wrk warm-up failed: $(cat "$dir/warm.$name.$conc.log")"
  sleep 0.3   # let the warm-up's receipts reach the store before the counter is read
  local r0=0 r1=0
  [[ $name == tresor* ]] && r0=$(metric tresor_receipts_stored_total)
  local c0 c1; c0=$(cpu_ns "${tp[@]}")
  run_wrk "$port" "$conc" "$duration" "$receipt" "$dir/run.$name.$conc" || die "wrk failed: $(cat "$dir/run.$name.$conc.log")"
  c1=$(cpu_ns "${tp[@]}")
  [[ $name == tresor* ]] && r1=$(metric tresor_receipts_stored_total)
  local s; s=$(cat "$dir/run.$name.$conc") || die "no wrk summary: $(cat "$dir/run.$name.$conc.log")"
  python3 - "$name" "$conc" "$c0" "$c1" "$((r1 - r0))" "$s" >> "$raw" <<'PY'
import sys
name, conc, c0, c1, rec, s = sys.argv[1:]
kv = dict(x.split("=") for x in s.split())
req = int(kv["requests"]); dur = int(kv["duration_us"]) / 1e6
errs = sum(int(kv[k]) for k in ("status_err", "connect_err", "read_err", "write_err", "timeout_err"))
cpu = (int(c1) - int(c0)) / 1e3 / req if req else float("nan")
print(f"{name}\t{conc}\t{req}\t{req/dur:.0f}\t{kv['p50_us']}\t{kv['p99_us']}\t{errs}\t{cpu:.2f}\t{rec}")
PY
  log "$(tail -1 "$raw")"
}
for conc in $concs; do
  round direct     "$port_a" true  "$conc" "$pid_direct"
  round nginx      "$port_b" true  "$conc" "$pid_proxy"
  round tresor_on  "$port_t" true  "$conc" "$pid_tresor"
  round tresor_off "$port_t" false "$conc" "$pid_tresor"
done

# ---- 6. table + RESULTS.md ----------------------------------------------------------------
table=$(python3 - "$raw" <<'PY'
import sys, csv
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
get = {(r["target"], r["conc"]): r for r in rows}
out = []
out.append("| target | conc | requests | req/s | p50 µs | p99 µs | errors | CPU µs/req (proxy) | receipts stored |")
out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    out.append(f"| {r['target']} | {r['conc']} | {r['requests']} | {r['rps']} | {r['p50_us']} | {r['p99_us']} | {r['errors']} | {r['cpu_us_per_req']} | {r['receipts_stored'] if r['target'].startswith('tresor') else '-'} |")
out.append("")
out.append("CPU µs/req for `direct` is nginx-direct itself; for the others it is the proxy process only.")
out.append("")
out.append("| ratio (tresor / nginx proxy) | value |")
out.append("|---|---:|")
concs = sorted({r["conc"] for r in rows}, key=int)
for t in ("tresor_on", "tresor_off"):
    for c in concs:
        a, b = get.get((t, c)), get.get(("nginx", c))
        if a and b and float(b["cpu_us_per_req"]) > 0:
            out.append(f"| CPU/request {t}, c={c} | {float(a['cpu_us_per_req'])/float(b['cpu_us_per_req']):.2f}x |")
c1 = concs[0]
d = get.get(("direct", c1))
if d:
    base = int(d["p50_us"])
    n = get.get(("nginx", c1))
    added_n = int(n["p50_us"]) - base if n else None
    for t in ("nginx", "tresor_on", "tresor_off"):
        r = get.get((t, c1))
        if r:
            added = int(r["p50_us"]) - base
            ratio = f" ({added/added_n:.2f}x nginx)" if added_n and t != "nginx" and added_n > 0 else ""
            out.append(f"| added p50 over direct, {t}, c={c1} | {added} µs{ratio} |")
print("\n".join(out))
PY
)
t_end=$(date +%s)
echo
echo "$table"
echo
echo "total run time: $((t_end - t_start)) s"
[[ -f $bench/RESULTS.md ]] || printf '# bench/run.sh results\n\nAppended by `bash bench/run.sh`, newest last.\n' > "$bench/RESULTS.md"
{
  echo
  echo "## $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "- machine: nproc=$ncpu, CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), kernel $(uname -r)"
  echo "- tresor-router: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet 2>/dev/null || echo ' (dirty tree)'), server.threads 1, receipts sqlite durability sync"
  echo "- $("$NGINX" -v 2>&1), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
  echo "- pinning: proxy under test CPU $proxy_cpu; nginx-direct + wrk CPU $load_cpu; wrk -t1, ${warmup}s warm-up + ${duration}s per round; bench wall time $((t_end - t_start)) s"
  echo
  echo "$table"
  echo
  echo '```tsv'
  cat "$raw"
  echo '```'
} >> "$bench/RESULTS.md"
log "appended to bench/RESULTS.md"
