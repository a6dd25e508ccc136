#!/usr/bin/env bash
# The whole test suite: installs dependencies, builds, runs ctest (Catch2 unit tests,
# integration tests against the real gateway binary and fake upstreams, and the
# official openai SDK client tests) — then the same suite again on an
# AddressSanitizer + UndefinedBehaviorSanitizer build. This is what CI runs.
# TRESOR_SKIP_SANITIZE=1 skips the second pass (a quicker local loop).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${TRESOR_BUILD_DIR:-$root/build}"

"$root/scripts/setup.sh"
(cd "$root/tests/client" && npm ci --no-audit --no-fund --loglevel=error)
(cd "$root/tests/browser" && npm ci --no-audit --no-fund --loglevel=error)

echo "== build and test: $build"
TRESOR_BUILD_DIR="$build" "$root/scripts/build.sh"
(cd "$build" && TRESOR_BUILD_DIR="$build" ctest --output-on-failure --timeout 600 "$@")

if [ "${TRESOR_SKIP_SANITIZE:-0}" != 1 ]; then
  asan="${TRESOR_SANITIZE_BUILD_DIR:-$root/build-asan}"
  echo "== build and test with address,undefined sanitizers: $asan"
  TRESOR_BUILD_DIR="$asan" "$root/scripts/build.sh" -DTRESOR_SANITIZE=address,undefined
  # UBSan only prints by default: make any finding fail the run. Leak checking is off:
  # the gateway is stopped by signal and process-lifetime singletons would be reported.
  (cd "$asan" && TRESOR_BUILD_DIR="$asan" \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
    ctest --output-on-failure --timeout 900 "$@")
fi
