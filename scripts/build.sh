#!/usr/bin/env bash
# Configures and builds tresor-router (and its fake upstream and tests) into build/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${TRESOR_BUILD_DIR:-$root/build}"
extra=()
command -v ccache >/dev/null 2>&1 && extra+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE="${TRESOR_BUILD_TYPE:-RelWithDebInfo}" "${extra[@]}" "$@" >/dev/null
ninja -C "$build"
