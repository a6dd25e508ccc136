-- Multipart POST /v1/audio/transcriptions: fields model=BENCH_MODEL and file=BENCH_FILE
-- (sent as bench.wav, audio/wav). The body is built once, at load. Env: see common.lua.
package.path = (os.getenv("BENCH_WRK_DIR") or ".") .. "/?.lua;" .. package.path
local common = require("common")
local f = assert(io.open(assert(os.getenv("BENCH_FILE"), "BENCH_FILE unset"), "rb"))
local audio = f:read("*a")
f:close()
local boundary = "----tresorbench7d1f0a9c3e"
wrk.method = "POST"
wrk.body = table.concat({
  "--" .. boundary,
  'Content-Disposition: form-data; name="model"',
  "",
  os.getenv("BENCH_MODEL") or "bench-whisper",
  "--" .. boundary,
  'Content-Disposition: form-data; name="file"; filename="bench.wav"',
  "Content-Type: audio/wav",
  "",
  audio,
  "--" .. boundary .. "--",
  "",
}, "\r\n")
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
common.headers()
done = common.done
