#!/usr/bin/env bash
# Loopback benchmark of tresor-router against its anchors, all in one run (issues 8, 20):
# direct upstream, nginx proxy_pass, Portkey 1.15.2, tresor-router receipts on / off.
# Workloads: non-stream chat (c=1, c=64), multipart transcription (64 KiB, c=8), SSE
# (sequential, 32 concurrent, 2,000 concurrent paced streams), memory, callgrind Ir/req
# of tresor and of nginx. BENCH_ROUNDS rounds (default 5), the targets interleaved and
# rotated inside each round; the report gives medians with their min–max over the rounds
# and a PNG chart (bench/results.png). One command, loopback only, stops by itself,
# ~25 min. See bench/README.md for knobs.
set -euo pipefail
bench="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$bench/.." && pwd)"
build="${TRESOR_BUILD_DIR:-$root/build}"
duration="${BENCH_DURATION:-5}"               # seconds per target per round, in 1-s slices
rounds="${BENCH_ROUNDS:-5}"                    # every timed workload, every target, once per round
slices=$duration                               # alternating slices per target per round (see slices.py)
out_dir="${BENCH_OUT_DIR:-$bench}"             # RESULTS.md + results.png (overwritten: the latest run only)
warmup="${BENCH_WARMUP:-1}"
concs="${BENCH_CONC:-1 64}"
tr_conc="${BENCH_TRANSCRIPTION_CONC:-8}"
audio_kib="${BENCH_AUDIO_KIB:-64}"
sse_pace="${BENCH_SSE_PACE_MS:-20}"
sse_chunks="${BENCH_SSE_CHUNKS:-6}"            # short stream: role + 6 content + finish = 8 events
sse_seq="${BENCH_SSE_SEQ:-100}"                # sequential streams per target per round (over the slices)
sse_conc="${BENCH_SSE_CONC:-32}"
sse_per_conn="${BENCH_SSE_PER_CONN:-30}"       # streams per connection per round (over the slices)
sse_many="${BENCH_SSE_MANY:-2000}"
sse_many_slices="${BENCH_SSE_MANY_SLICES:-3}"  # 2,000-stream slices per target per round
sse_many_targets="${BENCH_SSE_MANY_TARGETS:-tresor_on nginx}"
long_chunks=62                                  # 64 events: role + 62 content + finish
idle_conns="${BENCH_IDLE_CONNS:-10000}"
soak="${BENCH_SOAK_SECONDS:-0}"
use_portkey="${BENCH_PORTKEY:-1}"
pk_factor="${BENCH_PORTKEY_FACTOR:-2}"         # Portkey's slices are this many times as long (see below)
use_callgrind="${BENCH_CALLGRIND:-1}"
cg_requests="${BENCH_CALLGRIND_REQUESTS:-200}"
cg_streams="${BENCH_CALLGRIND_STREAMS:-50}"
cg_transcriptions="${BENCH_CALLGRIND_TRANSCRIPTIONS:-50}"
log_on="${BENCH_LOG:-1}"                       # 0: the receipts transparency log off (issue 19's comparison)
credits="${BENCH_CREDITS:-1}"                  # 0: tresor without pricing, credit and limits (runs before issue 16)
# shellcheck source=lib/common.sh
source "$bench/lib/common.sh"
t_start=$(date +%s)
section() { log "---- $* (t=$(( $(date +%s) - t_start )) s)"; }

# ---- 1. dependencies ---------------------------------------------------------------------
need=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
[[ $use_callgrind == 0 ]] || command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
for c in curl python3 taskset pgrep g++; do command -v "$c" >/dev/null || die "$c missing"; done
[[ -f /usr/include/boost/asio.hpp ]] || need+=(libboost-dev)
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
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer (got '$rounds')"
[[ $duration =~ ^[1-9][0-9]*$ ]] || die "BENCH_DURATION must be a positive integer (got '$duration')"
[[ $pk_factor =~ ^[1-9][0-9]*$ ]] || die "BENCH_PORTKEY_FACTOR must be a positive integer (got '$pk_factor')"
[[ $sse_many_slices =~ ^[1-9][0-9]*$ ]] || die "BENCH_SSE_MANY_SLICES must be a positive integer (got '$sse_many_slices')"
mkdir -p "$out_dir"
if ! command -v gnuplot >/dev/null 2>&1; then   # the chart only: the run goes on without it
  log "installing gnuplot-nox (the chart)"
  sudo_=""; [[ $(id -u) -eq 0 ]] || sudo_="sudo"
  $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gnuplot-nox >&2 \
    || log "WARNING: gnuplot-nox could not be installed: no chart"
fi
if [[ $use_callgrind != 0 ]] && ! command -v valgrind >/dev/null 2>&1; then
  log "valgrind unavailable: callgrind section skipped"; use_callgrind=0
fi

# Open files: 10,000 held client connections, 2,000 streams (x2 sockets in the proxy).
# The hard limit may be below 65536 in a container; take what there is.
hard=$(ulimit -Hn); [[ $hard == unlimited ]] && hard=65536
ulimit -n "$(( hard < 65536 ? hard : 65536 ))"
nofile=$(ulimit -n)
if ((idle_conns + 200 > nofile)); then
  log "WARNING: ulimit -n is $nofile: idle connections lowered from $idle_conns to $((nofile - 500))"
  idle_conns=$((nofile - 500))
fi

# ---- 2. binaries: tresor (copied, so a relink of build/ mid-run does not matter), tool --
dir="$(mktemp -d /var/tmp/tresor-bench.XXXXXX)"
chmod 755 "$dir"
for b in tresor-router tresor-fake-upstream; do
  wait_stable_binary "$build/$b" 180 || die "$build/$b not built (run scripts/build.sh)"
  cp "$build/$b" "$dir/$b"
done
router="$dir/tresor-router"
fake="$dir/tresor-fake-upstream"

# sse_load (bench/tools/sse_load.cpp): compiled once per source version, cached.
tools_cache="${BENCH_TOOLS_CACHE:-$build/bench-tools}"
src_hash=$(sha256sum "$bench/tools/sse_load.cpp" | cut -c1-16)
sse_load="$tools_cache/sse_load-$src_hash"
if [[ ! -x $sse_load ]]; then
  log "compiling bench/tools/sse_load.cpp"
  mkdir -p "$tools_cache"
  g++ -std=c++20 -O2 -Wall -Wextra -o "$sse_load.tmp.$$" "$bench/tools/sse_load.cpp" -pthread \
    || die "sse_load did not compile"
  mv "$sse_load.tmp.$$" "$sse_load"
fi

# Portkey: npm ci into bench/portkey/node_modules (git-ignored) unless already installed.
portkey_note=""
pk_entry="$bench/portkey/node_modules/@portkey-ai/gateway/build/start-server.js"
pk_installed() {
  [[ -f $pk_entry ]] && python3 - "$bench/portkey/node_modules" <<'PY'
import json, sys
nm = sys.argv[1]
v = lambda p: json.load(open(f"{nm}/{p}/package.json"))["version"]
sys.exit(0 if v("@portkey-ai/gateway") == "1.15.2" and v("@hono/node-server") == "1.11.5" else 1)
PY
}
if [[ $use_portkey == 0 ]]; then
  portkey_note="Portkey skipped (BENCH_PORTKEY=0)"
elif ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  portkey_note="Portkey skipped: node/npm missing"; use_portkey=0
elif ! pk_installed; then
  log "installing Portkey (npm ci in bench/portkey)"
  # --ignore-scripts: the only install script is patch-package, with no patches shipped.
  if ! (cd "$bench/portkey" && timeout 150 npm ci --no-audit --no-fund --ignore-scripts --fetch-retries=1 \
        --fetch-retry-mintimeout=2000 --fetch-retry-maxtimeout=5000 --fetch-timeout=30000 >"$dir/npm-ci.log" 2>&1) \
     || ! pk_installed; then
    portkey_note="Portkey skipped: npm ci failed (no registry?): $(grep -m1 -E 'npm error (code|errno|network|request)' "$dir/npm-ci.log" | cut -c1-120)"
    use_portkey=0
  fi
fi
[[ -z $portkey_note ]] || log "$portkey_note"

# ---- CPU layout -------------------------------------------------------------------------
ncpu=$(nproc)
if ((ncpu >= 2)); then
  load_cpu=0; proxy_cpu=1
else
  load_cpu=0; proxy_cpu=0
  log "WARNING: 1 CPU: proxy, upstream and load share it; numbers are not comparable"
fi
# nginx worker_cpu_affinity wants a binary mask ("10" = CPU 1)
bin_mask() { python3 -c "print(format(1<<$1,'b'))"; }

# ---- 3. processes, cleanup -------------------------------------------------------------
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
stop_pid() { # PID: TERM, wait up to 5 s, KILL; forget it
  local p=$1 q keep=()
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  for q in "${pids[@]}"; do [[ $q == "$p" ]] || keep+=("$q"); done
  pids=("${keep[@]}")
}
trap 'exit 130' INT TERM   # cleanup runs once the foreground load tool returns

used_ports=" "
new_port() { local p; while :; do p=$(free_port); [[ $used_ports == *" $p "* ]] || break; done; used_ports+="$p "; echo "$p"; }
port_a=$(new_port); port_b=$(new_port); port_bs=$(new_port); port_t=$(new_port); port_p=$(new_port); port_cg=$(new_port)
port_cgn=$(new_port); port_cgns=$(new_port)

canned='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! I am fine, thank you for asking."},"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":11,"total_tokens":25}}'
canned_tr='{"text":"Hello, this is the bench transcript.","usage":{"type":"duration","seconds":3.25}}'
# SSE content: 62 distinct 4-byte tokens, so that a dropped, duplicated or reordered
# content delta always changes the concatenation (62 chunks: exactly one token each).
sse_content=$(python3 -c "print(''.join(f'{i:03d};' for i in range($long_chunks)))")

# The paced SSE upstream (fake), on the load CPU; its port comes from its first line.
taskset -c "$load_cpu" "$fake" --listen 127.0.0.1:0 --pace-ms "$sse_pace" --chunks "$sse_chunks" \
  --content "$sse_content" >"$dir/fake.out" 2>"$dir/fake.err" &
pid_fake=$!; pids+=("$pid_fake")
wait_line "$dir/fake.out" '^LISTENING [0-9]+' 10 || die "fake upstream did not start: $(cat "$dir/fake.err")"
port_s=$(awk '/^LISTENING/ {print $2; exit}' "$dir/fake.out")

wconns=$(( nofile < 16384 ? nofile : 16384 ))
render "$bench/nginx/direct.conf.tmpl" "$dir/direct.conf" DIR="$dir" PORT_A="$port_a" \
  DIRECT_CPU_MASK="$(bin_mask $load_cpu)" CANNED_JSON="$canned" CANNED_TRANSCRIPTION="$canned_tr" \
  NOFILE="$nofile" WORKER_CONNS="$wconns"
render "$bench/nginx/proxy.conf.tmpl" "$dir/proxy.conf" DIR="$dir" PORT_A="$port_a" PORT_B="$port_b" \
  PORT_BS="$port_bs" PORT_S="$port_s" PROXY_CPU_MASK="$(bin_mask $proxy_cpu)" NOFILE="$nofile" WORKER_CONNS="$wconns"
key="tr-$(python3 -c 'import secrets; print(secrets.token_hex(48))')"
key_sha=$("$router" hash-key "$key")
tresor_yaml() { # out port store
  render "$bench/tresor.yaml.tmpl" "$1" DIR="$dir" PORT_A="$port_a" PORT_S="$port_s" PORT_T="$2" STORE="$3" \
    KEY_SHA256="$key_sha" SSE_CHUNKS="$sse_chunks" SSE_LONG_CHUNKS="$long_chunks" \
    LOG="$([[ $log_on == 0 ]] && echo false || echo true)"
  [[ $credits != 0 ]] || sed -i '/# credits$/d' "$1"
  "$router" check-config "$1" >&2 || die "tresor config $1 invalid"
}
tresor_yaml "$dir/tresor.yaml" "$port_t" "$dir/tresor.db"

taskset -c "$load_cpu" "$NGINX" -p "$dir" -e "$dir/direct.error.log" -c "$dir/direct.conf" 2>"$dir/direct.stderr" &
pid_direct=$!; pids+=("$pid_direct")
taskset -c "$proxy_cpu" "$NGINX" -p "$dir" -e "$dir/proxy.error.log" -c "$dir/proxy.conf" 2>"$dir/proxy.stderr" &
pid_proxy=$!; pids+=("$pid_proxy")
(cd "$dir" && exec taskset -c "$proxy_cpu" "$router" --config "$dir/tresor.yaml") >"$dir/tresor.log" 2>&1 &
pid_tresor=$!; pids+=("$pid_tresor")
pid_portkey=""
start_portkey() { # → pid_portkey
  # --headless: no UI routes; NODE_ENV=production; the preload binds 127.0.0.1 only.
  (cd "$dir" && NODE_ENV=production exec taskset -c "$proxy_cpu" node -r "$bench/portkey/loopback.cjs" \
    "$pk_entry" --port="$port_p" --headless) >>"$dir/portkey.log" 2>&1 &
  pid_portkey=$!; pids+=("$pid_portkey")
}
[[ $use_portkey == 0 ]] || start_portkey

wait_http "http://127.0.0.1:$port_a/" 10 || die "nginx direct did not start: $(cat "$dir/direct.stderr" "$dir/direct.error.log" 2>/dev/null)"
wait_http "http://127.0.0.1:$port_b/" 10 || die "nginx proxy did not start: $(cat "$dir/proxy.stderr" "$dir/proxy.error.log" 2>/dev/null)"
wait_http "http://127.0.0.1:$port_t/readyz" 20 || die "tresor-router did not start: $(tail -20 "$dir/tresor.log")"
if [[ -n $pid_portkey ]]; then
  if ! wait_http "http://127.0.0.1:$port_p/" 30; then
    portkey_note="Portkey skipped: it did not start: $(tail -5 "$dir/portkey.log" | tr '\n' ' ')"
    log "$portkey_note"; use_portkey=0
  elif ss -Hltn "sport = :$port_p" | awk '{print $4}' | grep -qv '^127\.0\.0\.1:'; then
    die "Portkey listens beyond 127.0.0.1: $(ss -Hltn "sport = :$port_p")"
  fi
fi
log "ports: direct=$port_a sse-upstream=$port_s nginx=$port_b/$port_bs tresor=$port_t portkey=${pid_portkey:+$port_p}; cpus: proxy=$proxy_cpu load=$load_cpu; dir=$dir"

# ---- targets ----------------------------------------------------------------------------
targets=(direct nginx)
[[ $use_portkey == 0 ]] || targets+=(portkey)
targets+=(tresor_on tresor_off)
t_port() { # workload target
  case $2 in
    direct) [[ $1 == sse* ]] && echo "$port_s" || echo "$port_a" ;;
    nginx) [[ $1 == sse* ]] && echo "$port_bs" || echo "$port_b" ;;
    portkey) echo "$port_p" ;;
    tresor_*) echo "$port_t" ;;
  esac
}
t_pid() { # workload target: the process (tree) whose CPU is measured
  case $2 in
    direct) [[ $1 == sse* ]] && echo "$pid_fake" || echo "$pid_direct" ;;
    nginx) echo "$pid_proxy" ;;
    portkey) echo "$pid_portkey" ;;
    tresor_*) echo "$pid_tresor" ;;
  esac
}
t_key() { [[ $1 == portkey ]] && echo "bench-upstream-key" || echo "$key"; }
t_headers() { # workload target: extra headers, "|"-separated
  case $2 in
    portkey) local up=$port_a; [[ $1 == sse* ]] && up=$port_s
      echo "x-portkey-provider: openai|x-portkey-custom-host: http://127.0.0.1:$up/v1" ;;
    tresor_off) echo "X-Tresor-Receipt: false" ;;
    *) echo "" ;;
  esac
}
all_pids() { local p; for p in "$@"; do pid_tree "$p"; done; }

# Request bodies (the SSE ones: tresor routes by its own model ids, the others get the
# fake's model with the chunk override in its ?suffix).
chat_body='{"model":"bench-model","messages":[{"role":"user","content":"Hello, how are you?"}]}'
printf '%s' "$chat_body" > "$dir/chat.json"
# With credits, every target's streams ask for usage (one more event, with empty choices)
# so that tresor prices and charges a stream like a JSON answer.
stream_opts=""; [[ $credits == 0 ]] || stream_opts=',"stream_options":{"include_usage":true}'
sse_body() { printf '{"model":"%s","stream":true%s,"messages":[{"role":"user","content":"Hello, how are you?"}]}' "$1" "$stream_opts"; }
sse_body sse-model > "$dir/sse.json"
sse_body "sse-model?chunks=$long_chunks" > "$dir/sse-long.json"
sse_body sse-long > "$dir/sse-long-tresor.json"
head -c $((audio_kib * 1024)) /dev/urandom > "$dir/bench.wav"

# sse_load arguments for a target: --port, bearer and extra headers
sse_args() { # workload target
  local a=(--port "$(t_port "$1" "$2")" --header "Authorization: Bearer $(t_key "$2")") h
  IFS='|' read -r -a hs <<< "$(t_headers "$1" "$2")"
  for h in "${hs[@]}"; do [[ -n $h ]] && a+=(--header "$h"); done
  printf '%s\n' "${a[@]}"
}

# ---- 4. probes: every target, every workload ---------------------------------------------
section "probes"
curl_h() { # workload target → curl -H args, one a line
  printf -- '-H\nAuthorization: Bearer %s\n' "$(t_key "$2")"
  local h; IFS='|' read -r -a hs <<< "$(t_headers "$1" "$2")"
  for h in "${hs[@]}"; do [[ -n $h ]] && printf -- '-H\n%s\n' "$h"; done
}
for t in "${targets[@]}"; do
  mapfile -t H < <(curl_h chat "$t")
  out=$(curl -s -m 10 -w '\n%{http_code}' "${H[@]}" -H 'Content-Type: application/json' --data-binary @"$dir/chat.json" \
    "http://127.0.0.1:$(t_port chat "$t")/v1/chat/completions")
  [[ ${out##*$'\n'} == 200 && $out == *chat.completion* ]] || die "chat probe $t failed: $out"
  [[ $t != tresor_on || $out == *'"receipt_id":"'* ]] || die "tresor_on chat probe: no receipt_id: $out"
  [[ $t != tresor_off || $out != *'"receipt_id":"'* ]] || die "tresor_off chat probe: receipt_id present: $out"

  n0=$(wc -l < "$dir/transcription.log" 2>/dev/null || echo 0)
  out=$(curl -s -m 10 -w '\n%{http_code}' "${H[@]}" -F model=bench-whisper -F "file=@$dir/bench.wav;type=audio/wav" \
    "http://127.0.0.1:$(t_port transcription "$t")/v1/audio/transcriptions")
  [[ ${out##*$'\n'} == 200 && $out == *'"text":"Hello, this is the bench transcript."'* ]] || die "transcription probe $t failed: $out"
  [[ $t != tresor_on || $out == *'"receipt_id":"'* ]] || die "tresor_on transcription probe: no receipt_id: $out"
  [[ $t != tresor_off || $out != *'"receipt_id":"'* ]] || die "tresor_off transcription probe: receipt_id present: $out"
  # the upstream (nginx-direct) must have read the whole upload: $request_length, $content_length
  sleep 0.1
  line=$(sed -n "$((n0 + 1)),\$p" "$dir/transcription.log" | tail -1)
  read -r _ st rl cl <<< "$line"
  [[ $st == 200 && $rl -gt $((audio_kib * 1024)) && $cl -gt $((audio_kib * 1024)) ]] \
    || die "transcription probe $t: upstream did not get the whole upload (log: '$line')"
  log "probe $t: transcription upstream request_length=$rl content_length=$cl"

  mapfile -t A < <(sse_args sse "$t")
  body="$dir/sse.json"
  out=$("$sse_load" run "${A[@]}" --body-file "$body" --conns 1 --per-conn 1 --timeout-s 10 \
    --expect-content "$sse_content" --expect-deltas "$sse_chunks") || die "SSE probe $t failed: $out"
  [[ $out == *" ok=1 "* ]] || die "SSE probe $t: stream incomplete or wrong: $out"
done
if [[ $credits != 0 ]]; then
  # The probes were charged (chat, transcription, stream) and the key's limits reported.
  out=$(curl -s -m 10 -D "$dir/usage.headers" -H "Authorization: Bearer $key" "http://127.0.0.1:$port_t/v1/usage")
  python3 - "$out" <<'PY' || die "credits probe: $out"
import json, sys
u = json.loads(sys.argv[1])
routes = ("local/bench/bench-model", "local/bench/bench-whisper", "local/sse/sse-model")
sys.exit(0 if u["credit"] == 1e9 and 0 < u["remaining"] < 1e9 and all(u["by_route"].get(r, {}).get("spent", 0) > 0 for r in routes) else 1)
PY
  grep -qi '^X-RateLimit-Remaining: [0-9]' "$dir/usage.headers" || die "credits probe: no X-RateLimit-Remaining: $(cat "$dir/usage.headers")"
  log "probe credits: $out"
fi
rss_idle=$(vm_kb "$pid_tresor" VmRSS)
log "tresor idle VmRSS ${rss_idle} kB"

# ---- 5. rounds ----------------------------------------------------------------------------
raw="$dir/raw.tsv"
metrics="$dir/metrics.tsv"
printf 'round\tworkload\ttarget\tconc\trequests\trps\tp50_us\tp99_us\terrors\tcpu_us_per_req\treceipts_stored\ttotal_p50_us\tdropped\treordered\twall_ms\n' > "$raw"
printf 'key\tvalue\n' > "$metrics"
put() { printf '%s\t%s\n' "$1" "$2" >> "$metrics"; }
put tresor_idle_rss_kb "$rss_idle"
put credits "$([[ $credits == 0 ]] && echo off || echo 'on (priced routes, credit 1e9, key limits 1e9/min 4e9/day; streams ask include_usage)')"
put portkey "$([[ $use_portkey == 0 ]] && echo "${portkey_note:-off}" || echo on)"
put rounds "$rounds"
round=0   # the current round (1…rounds), first column of raw.tsv

run_wrk() { # workload target conc seconds outfile
  local script=chat.lua path=/v1/chat/completions
  [[ $1 == transcription ]] && { script=transcription.lua; path=/v1/audio/transcriptions; }
  BENCH_WRK_DIR="$bench/wrk" BENCH_KEY="$(t_key "$2")" BENCH_HEADERS="$(t_headers "$1" "$2")" BENCH_OUT="$5" \
    BENCH_FILE="$dir/bench.wav" BENCH_MODEL=bench-whisper taskset -c "$load_cpu" \
    wrk -t1 -c"$3" -d"${4}s" --timeout 5s --latency -s "$bench/wrk/$script" \
    "http://127.0.0.1:$(t_port "$1" "$2")$path" > "$5.log" 2>&1
}
# receipts_settled: tresor's stored-receipt count once every receipt it issued is stored (or
# failed), polled every 20 ms for at most 5 s. Read at the end of a tresor slice, it keeps the
# receipts of that slice inside its CPU window; at the start of one, it keeps the previous
# slice's backlog out.
receipts_settled() {
  local i m iss=0 st=0 fl=0
  for ((i = 0; i < 250; i++)); do
    m=$(curl -s -m 5 "http://127.0.0.1:$port_t/metrics" | awk '
      {split($1, n, "{")}
      n[1] == "tresor_receipts_issued_total" {i += $2}
      n[1] == "tresor_receipts_stored_total" {s += $2}
      n[1] == "tresor_receipt_store_failures_total" {f += $2}
      END {printf "%d %d %d", i, s, f}')
    read -r iss st fl <<< "$m"
    ((st + fl >= iss)) && break
    sleep 0.02
  done
  echo "$st"
}
slices_tsv="$dir/slices.tsv"
printf 'round\tworkload\ttarget\tconc\tslice\tcpu_ns\trequests\tdur_us\terrors\treceipts\tdropped\treordered\tkind\tlatency_file\n' > "$slices_tsv"
# slice_begin / slice_end TARGET WORKLOAD: the CPU (ns, every thread of the target's process
# tree) and the receipts stored between the two, in s_cpu / s_rec.
slice_begin() {
  mapfile -t s_tp < <(all_pids "$(t_pid "$2" "$1")")
  s_r0=0; [[ $1 == tresor* ]] && s_r0=$(receipts_settled)
  s_c0=$(cpu_ns "${s_tp[@]}")
}
slice_end() {
  local r1=0
  [[ $1 == tresor* ]] && r1=$(receipts_settled)
  s_cpu=$(( $(cpu_ns "${s_tp[@]}") - s_c0 )); s_rec=$((r1 - s_r0))
}
# Portkey's slices are pk_factor times as long (wrk seconds, SSE runs): a Node process's
# CPU per request moves more from slice to slice than nginx's or tresor's (GC cycles, JIT
# tiers; measured: 15-22 % between 1-s slices against 3-8 %), and every ratio to Portkey
# inherits that noise. A slice's figure is CPU per request, so a longer slice only averages
# over more of them (wrk opens its connections once per run: 64 connects against 1,300+
# requests in a Portkey slice).
t_factor() { [[ $1 == portkey ]] && echo "$pk_factor" || echo 1; }
wrk_slice() { # workload target conc slice: 1 s of wrk (Portkey: pk_factor s)
  local wl=$1 t=$2 conc=$3 sl=$4 f="$dir/run.$1.$2.$3.r$round.s$4"
  slice_begin "$t" "$wl"
  run_wrk "$wl" "$t" "$conc" "$(t_factor "$t")" "$f" || die "wrk failed: $(cat "$f.log")"
  slice_end "$t" "$wl"
  [[ -s $f && -s $f.q ]] || die "no wrk summary: $(cat "$f.log")"
  python3 - "$round" "$wl" "$t" "$conc" "$sl" "$s_cpu" "$s_rec" "$(cat "$f")" "$f.q" >> "$slices_tsv" <<'PY'
import sys
rnd, wl, t, conc, sl, cpu, rec, s, q = sys.argv[1:]
kv = dict(x.split("=") for x in s.split())
errs = sum(int(kv[k]) for k in ("status_err", "connect_err", "read_err", "write_err", "timeout_err"))
print("\t".join([rnd, wl, t, conc, sl, cpu, kv["requests"], kv["duration_us"], str(errs), rec, "0", "0", "wrk", q]))
PY
}
sse_body_for() { # workload target → request body file
  if [[ $1 == sse_many ]]; then
    [[ $2 == tresor* ]] && echo "$dir/sse-long-tresor.json" || echo "$dir/sse-long.json"
  else echo "$dir/sse.json"; fi
}
# A Portkey SSE slice runs the same sse_load command pk_factor times over (not more streams
# per connection, which would spread its connection set-up over more streams than the
# others'); the runs' counts are summed and their per-stream samples concatenated.
sse_slice() { # workload target conns per_conn expect_deltas timeout_s slice
  local wl=$1 t=$2 conns=$3 per=$4 deltas=$5 tmo=$6 sl=$7 out A i outs=() smp="$dir/sse.$1.$2.r$round.s$7.samples.tsv"
  mapfile -t A < <(sse_args "$wl" "$t")
  slice_begin "$t" "$wl"
  for ((i = 1; i <= $(t_factor "$t"); i++)); do
    out=$(taskset -c "$load_cpu" "$sse_load" run "${A[@]}" --body-file "$(sse_body_for "$wl" "$t")" --conns "$conns" \
      --per-conn "$per" --connect-parallel 256 --timeout-s "$tmo" --expect-content "$sse_content" \
      --expect-deltas "$deltas" --samples "$smp.$i") || log "WARNING: $wl $t: sse_load exit $? (timeout?)"
    [[ $out == requests=* && -s $smp.$i ]] || die "$wl $t: sse_load printed no summary: $out"
    outs+=("$out")
  done
  slice_end "$t" "$wl"
  python3 - "$round" "$wl" "$t" "$conns" "$sl" "$s_cpu" "$s_rec" "$smp" "${outs[@]}" >> "$slices_tsv" <<'PY'
import sys
rnd, wl, t, conns, sl, cpu, rec, smp = sys.argv[1:9]
runs = [dict(x.split("=") for x in s.split()) for s in sys.argv[9:]]
tot = lambda k: sum(int(kv[k]) for kv in runs)  # noqa: E731
with open(smp, "w") as out:  # one header, then every run's rows
    for i in range(len(runs)):
        lines = open(f"{smp}.{i + 1}").read().splitlines(keepends=True)
        out.writelines(lines if i == 0 else lines[1:])
dur_us = round(sum(float(kv["wall_ms"]) for kv in runs) * 1e3)
print("\t".join([rnd, wl, t, conns, sl, cpu, str(tot("requests")), str(dur_us), str(tot("errors")), rec,
                 str(tot("dropped")), str(tot("reordered")), "sse", smp]))
PY
}
round_rows() { # workload conc: the round's row per target (lib/slices.py) into raw.tsv
  local l
  while IFS= read -r l; do printf '%s\n' "$l" >> "$raw"; log "$l"; done \
    < <(python3 "$bench/lib/slices.py" "$slices_tsv" "$round" "$1" "$2")
}
# A workload in a round: each target warmed up, then the slices, the targets alternating and
# the order rotated by one each slice.
wrk_workload() { # workload conc target…
  local wl=$1 conc=$2 t sl; shift 2
  for t in "$@"; do
    run_wrk "$wl" "$t" "$conc" $((warmup * $(t_factor "$t"))) "$dir/warm.$wl.$t.$conc.r$round" \
      || die "wrk warm-up failed: $(cat "$dir/warm.$wl.$t.$conc.r$round.log")"
  done
  for ((sl = 1; sl <= slices; sl++)); do
    for t in $(rotate $((sl - 1)) "$@"); do wrk_slice "$wl" "$t" "$conc" "$sl"; done
  done
  round_rows "$wl" "$conc"
}
sse_workload() { # workload conns per_conn_per_slice expect_deltas n_slices warm(0|1) target…
  local wl=$1 conns=$2 per=$3 deltas=$4 n=$5 warm=$6 t sl A; shift 6
  if [[ $warm == 1 ]]; then   # one stream per connection, not measured
    for t in "$@"; do
      mapfile -t A < <(sse_args "$wl" "$t")
      taskset -c "$load_cpu" "$sse_load" run "${A[@]}" --body-file "$(sse_body_for "$wl" "$t")" --conns "$conns" \
        --per-conn "$(t_factor "$t")" --timeout-s 30 >/dev/null || die "SSE warm-up $wl $t failed"
    done
  fi
  for ((sl = 1; sl <= n; sl++)); do
    for t in $(rotate $((sl - 1)) "$@"); do sse_slice "$wl" "$t" "$conns" "$per" "$deltas" 120 "$sl"; done
  done
  round_rows "$wl" "$conns"
}

# Interleaving: a round runs every workload through every target, so a slow minute of the
# VM lands in one round of every target (the median drops it) instead of in all the rounds
# of one target. Inside a round each target's time is cut into slices (1 s of wrk, a few
# streams) that alternate between the targets, so the targets of a round share the same
# stretch of the VM's drifting speed, and their ratio cancels it (bench/lib/slices.py).
# The target order rotates by one each round and each slice (round 1: direct nginx
# portkey tresor_on tresor_off, round 2: nginx portkey … direct), so no target always runs
# first, or always right after the same neighbour.
rotate() { # K ITEM… → the items rotated left by K, one a line
  local k=$1; shift; local a=("$@") i
  for ((i = 0; i < ${#a[@]}; i++)); do echo "${a[$(( (i + k) % ${#a[@]} ))]}"; done
}
many_targets=()
for t in $sse_many_targets; do [[ $t == portkey && $use_portkey == 0 ]] || many_targets+=("$t"); done
max_conc=$(tr ' ' '\n' <<< "$concs" | sort -n | tail -1)
sse_events=$((sse_chunks + 2))
peak_kb=0
# A fresh Portkey every round, warmed up the same way (2 s of chat and 1 s of transcription
# at c=8, 32 streams). A Node process's CPU per request depends on its history (JIT tiers,
# heap size and the GC work it brings): in one run Portkey's SSE CPU per stream rose by a
# third from round 1 to round 5, so rounds of one long-lived process are not alike and a
# run's median depended on how that one process aged. Every round now measures the same
# state; the restart and the warm-up are outside every measured slice.
fresh_portkey() {
  local A
  stop_pid "$pid_portkey"
  start_portkey
  wait_http "http://127.0.0.1:$port_p/" 30 || die "Portkey did not restart: $(tail -5 "$dir/portkey.log")"
  run_wrk chat portkey 8 2 "$dir/pk-warm.chat.r$round" || die "Portkey warm-up: $(cat "$dir/pk-warm.chat.r$round.log")"
  run_wrk transcription portkey 8 1 "$dir/pk-warm.tr.r$round" || die "Portkey warm-up: $(cat "$dir/pk-warm.tr.r$round.log")"
  mapfile -t A < <(sse_args sse portkey)
  taskset -c "$load_cpu" "$sse_load" run "${A[@]}" --body-file "$dir/sse.json" --conns 8 --per-conn 4 \
    --timeout-s 30 >/dev/null || die "Portkey SSE warm-up failed"
}
per_slice() { echo $(( ($1 + slices - 1) / slices )); }   # N per round → per slice, rounded up
seq_per_slice=$(per_slice "$sse_seq"); conc_per_slice=$(per_slice "$sse_per_conn")
for ((round = 1; round <= rounds; round++)); do
  mapfile -t order < <(rotate $((round - 1)) "${targets[@]}")
  [[ $use_portkey == 0 ]] || fresh_portkey
  section "round $round/$rounds: non-stream chat (order: ${order[*]}; $slices slices of 1 s each)"
  for conc in $concs; do
    if [[ $conc == "$max_conc" ]]; then
      echo 5 > "/proc/$pid_tresor/clear_refs"   # VmHWM := VmRSS: peak of the c=max rounds only
    fi
    wrk_workload chat "$conc" "${order[@]}"
    if [[ $conc == "$max_conc" ]]; then   # the largest peak over the rounds
      kb=$(vm_kb "$pid_tresor" VmHWM); [[ $kb != - ]] && ((kb > peak_kb)) && peak_kb=$kb
    fi
  done
  section "round $round/$rounds: transcription ${audio_kib} KiB, c=$tr_conc"
  wrk_workload transcription "$tr_conc" "${order[@]}"
  section "round $round/$rounds: SSE sequential ($slices x $seq_per_slice streams), $sse_conc concurrent x $slices x $conc_per_slice"
  sse_workload sse_seq 1 "$seq_per_slice" "$sse_chunks" "$slices" 1 "${order[@]}"
  sse_workload sse_conc "$sse_conc" "$conc_per_slice" "$sse_chunks" "$slices" 1 "${order[@]}"
  if ((${#many_targets[@]})); then
    section "round $round/$rounds: SSE $sse_many concurrent paced streams (64 events x ${sse_pace} ms, $sse_many_slices slices)"
    mapfile -t many_order < <(rotate $((round - 1)) "${many_targets[@]}")
    sse_workload sse_many "$sse_many" 1 "$long_chunks" "$sse_many_slices" 0 "${many_order[@]}"
  fi
done
put tresor_peak_rss_kb "$peak_kb"
put peak_conc "$max_conc"
put sse_events_short "$sse_events"
put sse_pace_ms "$sse_pace"
put tresor_rss_after_sse_many_kb "$(vm_kb "$pid_tresor" VmRSS)"

# ---- 6. memory: idle keep-alive connections, soak ------------------------------------------
section "memory: $idle_conns idle keep-alive connections"
sleep 1
rss0=$(vm_kb "$pid_tresor" VmRSS)
put tresor_rss_before_idle_conns_kb "$rss0"
rm -f "$dir/release"
mapfile -t A < <(sse_args chat tresor_off)
taskset -c "$load_cpu" "$sse_load" hold "${A[@]}" --body-file "$dir/chat.json" --conns "$idle_conns" \
  --connect-parallel 256 --timeout-s 60 --release-file "$dir/release" > "$dir/hold.out" 2>&1 &
pid_hold=$!; pids+=("$pid_hold")
wait_line "$dir/hold.out" '^HELD ' 90 || die "hold tool: $(cat "$dir/hold.out")"
sleep 1
rss1=$(vm_kb "$pid_tresor" VmRSS)
out=$(curl -s -m 10 -w '\n%{http_code}' -H "Authorization: Bearer $key" -H 'X-Tresor-Receipt: false' \
  -H 'Content-Type: application/json' --data-binary @"$dir/chat.json" "http://127.0.0.1:$port_t/v1/chat/completions")
new_ok=0; [[ ${out##*$'\n'} == 200 ]] && new_ok=1
touch "$dir/release"
wait "$pid_hold" || true
held=$(grep '^HELD ' "$dir/hold.out"); released=$(grep '^RELEASED ' "$dir/hold.out" || true)
log "$held / $released / new client served: $new_ok / VmRSS $rss0 -> $rss1 kB"
put idle_conns "$idle_conns"
put idle_conns_held "$(sed -E 's/.*ok=([0-9]+).*/\1/' <<< "$held")"
put idle_conns_still_open "$(sed -E 's/.*still_open=([0-9]+).*/\1/' <<< "$released")"
put tresor_rss_idle_conns_kb "$rss1"
put idle_conns_new_client_ok "$new_ok"

if ((soak > 0)); then
  section "soak: wrk c=64 receipts on for $soak s"
  sleep 5
  s0=$(vm_kb "$pid_tresor" VmRSS)
  run_wrk chat tresor_on 64 "$soak" "$dir/soak" || die "soak wrk failed: $(cat "$dir/soak.log")"
  sleep 5
  s1=$(vm_kb "$pid_tresor" VmRSS)
  put soak_seconds "$soak"; put soak_rss_before_kb "$s0"; put soak_rss_after_kb "$s1"
  put soak_summary "$(cat "$dir/soak")"
  log "soak: VmRSS $s0 -> $s1 kB ($(python3 -c "print(f'{($s1-$s0)/$s0*100:+.1f} %')"))"
fi

[[ -z $pid_portkey || $use_portkey == 0 ]] || put portkey_peak_rss_kb "$(vm_kb "$pid_portkey" VmHWM)"
put nginx_proxy_peak_rss_kb "$(for p in $(all_pids "$pid_proxy"); do vm_kb "$p" VmHWM; done | awk '{s+=$1} END {print s}')"
put tresor_peak_rss_whole_run_kb "$(vm_kb "$pid_tresor" VmHWM)"

# ---- 7. callgrind: instructions per request, tresor and nginx (machine-noise free) ------------
# Each proxy runs under valgrind --tool=callgrind, gets a warm-up, then fixed batches of
# requests; `callgrind_control -d` dumps the counters after each batch, and a dump holds
# only the cost since the previous one, so startup and warm-up are never counted: Ir of a
# batch's interval / its requests. nginx runs as one process (daemon off; master_process
# off), through the same proxy.conf as its timed rounds, on the same loads.
cg_report=""
if [[ $use_callgrind != 0 ]]; then
  section "callgrind"
  # The timed anchors are done: stop them so they do not compete with valgrind.
  for p in "$pid_proxy" ${pid_portkey:+"$pid_portkey"}; do stop_pid "$p"; done
  # the multipart body of wrk/transcription.lua, as a file for sse_load
  boundary="----tresorbench7d1f0a9c3e"
  python3 - "$dir/bench.wav" "$dir/transcription.multipart" "$boundary" <<'PY'
import sys
wav, out, b = sys.argv[1:]
audio = open(wav, "rb").read()
head = (f'--{b}\r\nContent-Disposition: form-data; name="model"\r\n\r\nbench-whisper\r\n--{b}\r\n'
        f'Content-Disposition: form-data; name="file"; filename="bench.wav"\r\nContent-Type: audio/wav\r\n\r\n')
open(out, "wb").write(head.encode() + audio + f"\r\n--{b}--\r\n".encode())
PY
  mp_args=(--path /v1/audio/transcriptions --content-type "multipart/form-data; boundary=$boundary")
  put callgrind_requests "$cg_requests"; put callgrind_transcriptions "$cg_transcriptions"; put callgrind_streams "$cg_streams"
  cg_ok=1
  cg_pid=""; cg_base=""; cg_poke=""; cg_n=0; cg_ir=0
  cg_start() { # name poke_url command… : run it under callgrind until poke_url answers
    local name=$1; cg_poke=$2; shift 2
    mkdir -p "$dir/cg-$name"; cg_base="$dir/cg-$name/callgrind.out"; cg_n=0
    (cd "$dir" && exec taskset -c "$proxy_cpu" valgrind --tool=callgrind --callgrind-out-file="$cg_base" \
      --dump-instr=no --collect-jumps=no "$@") >"$dir/cg-$name.log" 2>&1 &
    cg_pid=$!; pids+=("$cg_pid")
    wait_http "$cg_poke" 60 || { log "WARNING: $name under callgrind did not start: $(tail -5 "$dir/cg-$name.log")"; cg_ok=0; return 1; }
  }
  cg_load() { # port conns per_conn body [sse_load args…]
    local port=$1 c=$2 m=$3 b=$4; shift 4
    taskset -c "$load_cpu" "$sse_load" run --port "$port" --header "Authorization: Bearer $key" "$@" \
      --body-file "$b" --conns "$c" --per-conn "$m" --timeout-s 120
  }
  # callgrind_control -d writes callgrind.out.N (N = 1, 2, … per dump) with the costs
  # since the previous dump. valgrind reads the command when a thread next runs; if the
  # proxy sits idle, a poke (tresor /readyz, nginx /_ping: a few thousand Ir, under 0.5 %
  # of a batch) wakes it.
  cg_dump() { # label → cg_ir = Ir of the interval since the last dump (not in a subshell: cg_n)
    cg_n=$((cg_n + 1)); cg_ir=0
    local f="$cg_base.$cg_n" ctl i
    callgrind_control -d "$1" "$cg_pid" >/dev/null 2>&1 &
    ctl=$!
    for i in $(seq 100); do
      kill -0 "$ctl" 2>/dev/null || break
      ((i % 5 == 0)) && curl -s -o /dev/null -m 2 "$cg_poke"
      sleep 0.1
    done
    wait "$ctl" 2>/dev/null || true
    if [[ ! -s $f ]]; then log "WARNING: callgrind dump $1 missing"; cg_ok=0; return; fi
    cp "$f" "$dir/cg.$1.out"
    cg_ir=$(awk '/^summary:/ {print $2; exit}' "$f")
  }
  run_cg() { # label n port conns per_conn body [sse_load args…]
    local label=$1 n=$2 out; shift 2
    out=$(cg_load "$@") || { log "WARNING: callgrind $label load failed: $out"; cg_ok=0; }
    [[ $out == *" ok=$n "* ]] || { log "WARNING: callgrind $label: $out"; cg_ok=0; }
    sleep 0.5   # receipts of the last requests reach the store inside this interval
    cg_dump "$label"
    put "callgrind_ir_per_req_$label" "$((cg_ir / n))"
    log "callgrind $label: $cg_ir Ir / $n = $((cg_ir / n)) Ir per request"
  }
  sse_check=(--expect-content "$sse_content" --expect-deltas "$sse_chunks")
  # cg_batches SUFFIX CHAT_PORT SSE_PORT [header…]: warm-up, then chat, transcription, SSE
  # (labels chat_on, sse_nginx, …: metrics callgrind_ir_per_req_LABEL, dumps cg.LABEL.out)
  cg_batches() {
    local suf=$1 pc=$2 ps=$3; shift 3
    cg_load "$pc" 1 20 "$dir/chat.json" "$@" >/dev/null && cg_load "$pc" 1 5 "$dir/transcription.multipart" "${mp_args[@]}" "$@" >/dev/null \
      && cg_load "$ps" 10 1 "$dir/sse.json" "$@" >/dev/null || cg_ok=0
    cg_dump "warm$suf"
    run_cg "chat$suf" "$cg_requests" "$pc" 1 "$cg_requests" "$dir/chat.json" "$@"
    run_cg "transcription$suf" "$cg_transcriptions" "$pc" 1 "$cg_transcriptions" "$dir/transcription.multipart" "${mp_args[@]}" "$@"
    run_cg "sse$suf" "$cg_streams" "$ps" 10 $((cg_streams / 10)) "$dir/sse.json" "${sse_check[@]}" "$@"
  }

  # tresor: receipts off, then on (the same process; the header turns them off)
  tresor_yaml "$dir/tresor-cg.yaml" "$port_cg" "$dir/tresor-cg.db"
  if cg_start tresor "http://127.0.0.1:$port_cg/readyz" "$router" --config "$dir/tresor-cg.yaml"; then
    cg_batches _off "$port_cg" "$port_cg" --header "X-Tresor-Receipt: false"
    cg_batches _on "$port_cg" "$port_cg"
  fi
  stop_pid "$cg_pid"
  # nginx, one process, the proxy config of the timed rounds on two fresh ports
  render "$bench/nginx/proxy.conf.tmpl" "$dir/proxy-cg.conf" DIR="$dir" PORT_A="$port_a" PORT_B="$port_cgn" \
    PORT_BS="$port_cgns" PORT_S="$port_s" PROXY_CPU_MASK="$(bin_mask $proxy_cpu)" NOFILE="$nofile" WORKER_CONNS="$wconns"
  sed -i -e 's/^master_process on;/master_process off;/' -e 's#/proxy\.pid;#/proxy-cg.pid;#' \
    -e 's#/proxy\.error\.log #/proxy-cg.error.log #' -e '/^worker_cpu_affinity/d' "$dir/proxy-cg.conf"
  grep -q '^master_process off;' "$dir/proxy-cg.conf" || die "proxy-cg.conf: master_process not turned off"
  if cg_start nginx "http://127.0.0.1:$port_cgn/_ping" "$NGINX" -p "$dir" -e "$dir/proxy-cg.error.log" -c "$dir/proxy-cg.conf"; then
    cg_batches _nginx "$port_cgn" "$port_cgns"
  fi
  stop_pid "$cg_pid"
  put callgrind_ok "$cg_ok"

  # hot spots: self cost (bench/lib/cg_self.py: callgrind_annotate mislabels the frames
  # still on the stack at a mid-run dump as self cost) and inclusive cost
  for lab in chat_on sse_on; do
    [[ -s $dir/cg.$lab.out ]] || continue
    what="$cg_requests non-stream requests"; [[ $lab == sse* ]] && what="$cg_streams streams"
    cg_report+="top 15 by self Ir, $lab ($what; cg.$lab.out):"$'\n'
    cg_report+="$(python3 "$bench/lib/cg_self.py" "$dir/cg.$lab.out" 15 | cut -c1-170)"$'\n\n'
    cg_report+="top 15 by inclusive Ir, $lab (callgrind_annotate --inclusive=yes; thread entry and asio scheduler frames left out):"$'\n'
    cg_report+="$(callgrind_annotate --inclusive=yes --threshold=100 --auto=no "$dir/cg.$lab.out" 2>/dev/null \
      | awk '/file:function/ {f = 1; getline; next} f && NF {print}' \
      | grep -Ev 'clone\.S:clone|pthread_create\.c:start_thread|libstdc\+\+\.so[^ ]*\]$|asio/impl/io_context\.ipp|asio/detail/impl/scheduler\.ipp|asio/detail/scheduler_operation\.hpp|std::thread::_State_impl' \
      | head -15 \
      | sed -E "s#$dir/##g" | cut -c1-170 || true)"$'\n\n'
  done
  # keep the profiles of the last run beyond the temp dir (for callgrind_annotate / kcachegrind)
  cg_keep="$tools_cache/callgrind-last"
  rm -rf "$cg_keep"; mkdir -p "$cg_keep"
  cp "$dir"/cg.*.out "$cg_keep/" 2>/dev/null || true
  put callgrind_files "$cg_keep/cg.*.out"
else
  put callgrind "skipped (BENCH_CALLGRIND=0)"
fi

# ---- 8. table, chart, RESULTS.md (the latest run only: history is in git) --------------------
t_end=$(date +%s)
put bench_wall_seconds "$((t_end - t_start))"
report=$(python3 "$bench/lib/report.py" "$raw" "$metrics" "$dir/chart")
echo
echo "$report"
if [[ -n $cg_report ]]; then echo; echo "$cg_report"; fi
echo
echo "total run time: $((t_end - t_start)) s"
reduced=""
if ((rounds < 5 || duration < 5)); then
  reduced="REDUCED run (BENCH_ROUNDS=$rounds, BENCH_DURATION=$duration): a check of the script, not figures to quote"
fi
chart_note="no chart (gnuplot missing)"
if command -v gnuplot >/dev/null 2>&1; then
  subtitle="$(date -u +%Y-%m-%dT%H:%MZ), tresor $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?'), $rounds rounds x $slices slices of 1 s, nproc $ncpu${reduced:+ — REDUCED run}"
  if gnuplot -e "dir='$dir/chart'; out='$dir/results.png'; subtitle='$subtitle'" "$bench/lib/chart.gp" 2>"$dir/gnuplot.log" \
     && [[ -s $dir/results.png ]]; then
    cp "$dir/results.png" "$out_dir/results.png"
    chart_note="![ratios and latencies against nginx and Portkey](results.png)"
    log "chart: $out_dir/results.png"
  else
    chart_note="no chart: gnuplot failed: $(head -3 "$dir/gnuplot.log" | tr '\n' ' ')"
    log "WARNING: $chart_note"
  fi
fi
{
  echo "# bench/run.sh — latest run"
  echo
  echo "Overwritten by every \`bash bench/run.sh\` (earlier runs: \`git log -p bench/RESULTS.md\`)."
  echo
  [[ -z $reduced ]] || { echo "**$reduced**"; echo; }
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- machine: nproc=$ncpu, CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), kernel $(uname -r), load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- tresor-router: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet 2>/dev/null || echo ' (dirty tree)'), server.threads 1, receipts sqlite durability sync, log $([[ $log_on == 0 ]] && echo off || echo on), credits + limits $([[ $credits == 0 ]] && echo off || echo on)"
  echo "- $("$NGINX" -v 2>&1), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), node $(node -v 2>/dev/null || echo -), Portkey: $([[ $use_portkey == 0 ]] && echo "${portkey_note:-off}" || echo '@portkey-ai/gateway 1.15.2 (@hono/node-server 1.11.5)'), $(valgrind --version 2>/dev/null || echo 'no valgrind')"
  echo "- $rounds rounds, targets interleaved and rotated inside each round; pinning: proxy under test CPU $proxy_cpu; upstreams + load CPU $load_cpu; wrk -t1, ${warmup}s warm-up + ${duration} slices of 1 s per target per round, the targets alternating slice by slice; SSE: ${sse_seq} sequential streams and ${sse_conc} connections x ${sse_per_conn} per round in ${slices} slices, ${sse_many} paced streams x ${sse_many_slices} slices; Portkey's slices and warm-ups ${pk_factor}x as long (wrk seconds; SSE: the sse_load run repeated); SSE pace ${sse_pace} ms; bench wall time $((t_end - t_start)) s"
  echo
  echo "$chart_note"
  echo
  echo "$report"
  if [[ -n $cg_report ]]; then echo; echo '```text'; echo "$cg_report"; echo '```'; fi
  echo
  echo "Every round (raw):"
  echo
  echo '```tsv'
  cat "$raw"
  echo '```'
  echo
  echo '```tsv'
  cat "$metrics"
  echo '```'
} > "$out_dir/RESULTS.md.tmp.$$"
mv "$out_dir/RESULTS.md.tmp.$$" "$out_dir/RESULTS.md"
log "wrote $out_dir/RESULTS.md"
