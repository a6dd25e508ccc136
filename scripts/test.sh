#!/usr/bin/env bash
# The whole test suite: installs dependencies, builds, runs ctest (Catch2 unit tests,
# integration tests against the real gateway binary and fake upstreams, and the
# official openai SDK client tests). This is what CI runs.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${TRESOR_BUILD_DIR:-$root/build}"
export TRESOR_BUILD_DIR="$build"

"$root/scripts/setup.sh"
(cd "$root/tests/client" && npm ci --no-audit --no-fund --loglevel=error)
"$root/scripts/build.sh"
cd "$build"
ctest --output-on-failure --timeout 600 "$@"
