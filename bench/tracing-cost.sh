#!/usr/bin/env bash
# What tracing costs a request, and what a broken collector costs it (issue 20): the same
# gateway and load (wrk, non-stream chat to tresor-fake-upstream, receipts off so the store
# does not dominate) with tracing off, with a collector that answers, with a collector that is
# down (a closed port) and with one that accepts and never answers. The variants are
# interleaved round by round (off, ok, down, hang, off, …) so that the VM's drift hits all of
# them alike; each figure is the median of the rounds with its min–max. CPU per request is
# the gateway's user+system time over the requests wrk completed.
#
#   bash bench/tracing-cost.sh            # 5 rounds of 10 s per variant (about 4 minutes)
#   ROUNDS=3 SECONDS_PER_RUN=5 CONC=32 bash bench/tracing-cost.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
build="${TRESOR_BUILD_DIR:-$root/build}"
ROUNDS="${ROUNDS:-5}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-10}"
CONC="${CONC:-32}"
command -v wrk >/dev/null || { echo "tracing-cost: needs wrk (apt-get install -y wrk)" >&2; exit 1; }
router="$build/tresor-router"
fake="$build/tresor-fake-upstream"
[[ -x "$router" && -x "$fake" ]] || { echo "tracing-cost: build first (bash scripts/build.sh)" >&2; exit 1; }

dir="$(mktemp -d /tmp/tresor-tracing-cost-XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

# The upstream.
"$fake" --listen 127.0.0.1:0 --chunks 5 > "$dir/fake.out" 2>&1 &
pids+=($!)
for _ in $(seq 200); do grep -q '^LISTENING' "$dir/fake.out" && break; sleep 0.05; done
fake_port="$(sed -n 's/^LISTENING \([0-9]*\).*/\1/p' "$dir/fake.out")"

# Two collectors: one answers 200 to every export, one reads the export and never answers.
sink() { # mode port
  node -e '
    const http = require("http"); const [mode, port] = process.argv.slice(1);
    http.createServer((q, r) => { q.on("data", () => {}); q.on("end", () => { if (mode === "ok") r.end(); }); })
      .listen(Number(port), "127.0.0.1");' "$1" "$2" &
  pids+=($!)
  wait_port "$2"
}
ok_port="$(free_port)"; sink ok "$ok_port"
hang_port="$(free_port)"; sink hang "$hang_port"
down_port="$(free_port)"  # nothing listens there

key="tr-$(python3 -c "import secrets; print(secrets.token_hex(48))")"
key_sha="$("$router" hash-key "$key")"
config() { # variant port
  local endpoint=""
  case "$1" in
    ok) endpoint="http://127.0.0.1:$ok_port" ;;
    down) endpoint="http://127.0.0.1:$down_port" ;;
    hang) endpoint="http://127.0.0.1:$hang_port" ;;
  esac
  cat <<EOF
server: {listen: "127.0.0.1:$2", threads: 1, drain_seconds: 1}
providers:
  fake: {base_url: "http://127.0.0.1:$fake_port/v1", api_key: "k", max_connections: 1024}
routes:
  - {id: "local/fake/m", provider: fake, upstream_model: "m", type: chat}
auth:
  keys: [{sha256: "$key_sha", customer: "bench"}]
receipts: {signing_key_file: "$dir/receipt.pem"}
log: {enabled: false}
store: "sqlite:$dir/tresor-$1.db"
EOF
  [[ -n "$endpoint" ]] && printf 'tracing: {otlp_endpoint: "%s", export_timeout_ms: 5000}\n' "$endpoint"
  return 0
}

cat > "$dir/chat.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"model":"local/fake/m","messages":[{"role":"user","content":"Hello"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $key"
wrk.headers["X-Tresor-Receipt"] = "false"
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %.0f %.0f %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
EOF

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run_variant() { # variant round
  local port; port="$(free_port)"
  config "$1" "$port" > "$dir/$1.yaml"
  "$router" --config "$dir/$1.yaml" > "$dir/$1.log" 2>&1 &
  local gw=$!
  wait_port "$port" || { echo "gateway ($1) did not start: $(tail -5 "$dir/$1.log")" >&2; exit 1; }
  wrk -t1 -c"$CONC" -d2s -s "$dir/chat.lua" "http://127.0.0.1:$port/v1/chat/completions" > /dev/null
  local before; before="$(cpu_ticks "$gw")"
  local out; out="$(wrk -t1 -c"$CONC" -d"${SECONDS_PER_RUN}s" -s "$dir/chat.lua" "http://127.0.0.1:$port/v1/chat/completions")"
  local after; after="$(cpu_ticks "$gw")"
  local dropped; dropped="$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^tresor_trace_spans_total\{result="dropped/ {s += $2} END {print s + 0}')"
  kill "$gw"; wait "$gw" 2>/dev/null || true
  # requests duration_us p50_us p99_us errors
  read -r _ requests duration p50 p99 errors <<< "$(grep '^RESULT' <<< "$out")"
  local hz; hz="$(getconf CLK_TCK)"
  echo "$1 $2 $requests $duration $p50 $p99 $errors $(( (after - before) * 1000000 / hz )) $dropped" >> "$dir/results"
}

variants=(off ok down hang)
for round in $(seq "$ROUNDS"); do
  for v in "${variants[@]}"; do run_variant "$v" "$round"; done
  echo "round $round of $ROUNDS done" >&2
done

python3 - "$dir/results" "$CONC" "$SECONDS_PER_RUN" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
by = {}
for v, _round, req, dur, p50, p99, errors, cpu_us, dropped in rows:
    by.setdefault(v, []).append(dict(rps=int(req) / (int(dur) / 1e6), p50=float(p50) / 1000, p99=float(p99) / 1000,
                                     errors=int(errors), cpu=int(cpu_us) / max(int(req), 1), dropped=int(dropped)))
def fig(v, k):
    xs = [r[k] for r in by[v]]
    return statistics.median(xs), min(xs), max(xs)
base = {k: fig("off", k)[0] for k in ("rps", "p50", "p99", "cpu")}
print(f"tracing cost: {len(by['off'])} rounds, wrk -c{sys.argv[2]} {sys.argv[3]} s, non-stream chat, receipts off")
print("| collector | req/s | p50 ms | p99 ms | CPU µs/request | CPU vs off | errors | spans dropped |")
print("|---|---|---|---|---|---|---|---|")
names = {"off": "tracing off", "ok": "answers 200", "down": "down (closed port)", "hang": "hangs (never answers)"}
for v in ("off", "ok", "down", "hang"):
    cells = []
    for k, f in (("rps", "{:.0f}"), ("p50", "{:.2f}"), ("p99", "{:.2f}"), ("cpu", "{:.1f}")):
        m, lo, hi = fig(v, k)
        cells.append(f"{f.format(m)} ({f.format(lo)}–{f.format(hi)})")
    ratio = fig(v, "cpu")[0] / base["cpu"]
    errors = sum(r["errors"] for r in by[v])
    dropped = sum(r["dropped"] for r in by[v])
    print(f"| {names[v]} | " + " | ".join(cells) + f" | {ratio:.2f}× | {errors} | {dropped} |")
EOF
