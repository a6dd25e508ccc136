-- Non-stream chat POST. Env: BENCH_KEY (bearer), BENCH_RECEIPT ("false" adds
-- X-Tresor-Receipt: false), BENCH_OUT (file the summary line is appended to).
wrk.method = "POST"
wrk.body = '{"model":"bench-model","messages":[{"role":"user","content":"Hello, how are you?"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "none")
if os.getenv("BENCH_RECEIPT") == "false" then
  wrk.headers["X-Tresor-Receipt"] = "false"
end

function done(summary, latency, requests)
  local e = summary.errors
  local line = string.format(
    "requests=%d duration_us=%d p50_us=%d p99_us=%d mean_us=%.1f status_err=%d connect_err=%d read_err=%d write_err=%d timeout_err=%d",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, e.status, e.connect, e.read, e.write, e.timeout)
  local out = os.getenv("BENCH_OUT")
  if out then
    local f = io.open(out, "w"); f:write(line .. "\n"); f:close()
  end
  io.write("SUMMARY " .. line .. "\n")
end
