#!/usr/bin/env bash
# Installs what building and testing tresor-router need, on Debian 12 (bookworm).
# Idempotent and quick when everything is already there; works on a brand-new machine.
# Extra Debian packages a tool needs besides (coverage: gcovr; fuzzing: clang) may be
# given as arguments: scripts/setup.sh gcovr
set -euo pipefail

packages=(g++ cmake ninja-build pkg-config libboost1.81-dev libboost-json1.81-dev libsimdjson-dev
          libspdlog-dev libyaml-cpp-dev catch2 libsqlite3-dev libhiredis-dev libssl-dev libjemalloc-dev zlib1g-dev
          redis-server sqlite3 openssl ca-certificates curl
          prometheus-cpp-dev prometheus  # prometheus: promtool parses /metrics in the tests
          espeak-ng sox libsox-fmt-mp3 ffmpeg  # test audio for the transcription tests
          golang-go golang-golang-x-mod-dev  # tests/log-verify: Go's sumdb/tlog and note check the transparency log
          chromium)  # tests/browser: the status page in headless Chromium (puppeteer-core)
command -v node >/dev/null 2>&1 || packages+=(nodejs npm)
packages+=(gnuplot-nox)  # bench/run.sh draws bench/results.png (issue 20)
packages+=("$@")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
