-- Shared by the wrk scripts. Env: BENCH_KEY (bearer), BENCH_HEADERS (extra "Name: value"
-- headers separated by "|": X-Tresor-Receipt: false, Portkey's routing headers),
-- BENCH_OUT (file the summary line is written to).
local M = {}

function M.headers()
  wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "none")
  for h in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^|]+") do
    local k, v = string.match(h, "^%s*([^:]+):%s*(.-)%s*$")
    if k then wrk.headers[k] = v end
  end
end

function M.done(summary, latency, requests)
  local e = summary.errors
  local line = string.format(
    "requests=%d duration_us=%d p50_us=%d p99_us=%d mean_us=%.1f status_err=%d connect_err=%d read_err=%d write_err=%d timeout_err=%d",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, e.status, e.connect, e.read, e.write, e.timeout)
  local out = os.getenv("BENCH_OUT")
  if out then
    local f = io.open(out, "w"); f:write(line .. "\n"); f:close()
    -- The latency distribution as 1,000 quantiles (0.05 %, 0.15 %, … 99.95 %), each
    -- standing for 1/1,000 of the requests: bench/lib/slices.py merges the slices of a
    -- round into one distribution (wrk's stats object has no per-bucket access).
    local q = io.open(out .. ".q", "w")
    for i = 0, 999 do q:write(latency:percentile(i / 10 + 0.05), "\n") end
    q:close()
  end
  io.write("SUMMARY " .. line .. "\n")
end

return M
