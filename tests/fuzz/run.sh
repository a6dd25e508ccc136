#!/usr/bin/env bash
# Runs one libFuzzer target for a while (tests/fuzz/README.md).
#   tests/fuzz/run.sh list               the targets
#   tests/fuzz/run.sh TARGET SECONDS     fuzz TARGET for SECONDS
# Builds the fuzz build ($TRESOR_FUZZ_BUILD_DIR, default build-fuzz/: clang, ASan+UBSan,
# -DTRESOR_FUZZ=ON) when needed. Seeds: tests/fuzz/corpus/TARGET (read only); new inputs
# go to build-fuzz/corpus-work/TARGET, crashes to build-fuzz/artifacts/TARGET/, the log to
# build-fuzz/logs/TARGET.log. Ends with one summary line; exits non-zero on a crash.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="${TRESOR_FUZZ_BUILD_DIR:-$root/build-fuzz}"

targets() { sed -n 's/^set(TRESOR_FUZZ_TARGETS \(.*\)/\1/p; s/^    \([a-z_ ]*\))$/\1/p' "$here/CMakeLists.txt" | tr ' ' '\n' | grep -v '^$'; }

usage() {
  echo "usage: $0 list | $0 TARGET SECONDS" >&2
  exit 2
}

[[ $# -ge 1 ]] || usage
if [[ $1 == list ]]; then
  targets
  exit 0
fi
[[ $# -eq 2 && $2 =~ ^[0-9]+$ ]] || usage
target=$1 seconds=$2
targets | grep -qx "$target" || { echo "unknown target '$target'; $0 list" >&2; exit 2; }

# The build's libraries, plus clang and its libFuzzer runtime, which only this script needs.
"$root/scripts/setup.sh" clang libclang-rt-14-dev

if [[ ! -f $build/build.ninja ]]; then
  launcher=()
  command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTRESOR_FUZZ=ON \
    -DBUILD_TESTING=OFF "${launcher[@]}" >/dev/null
fi
ninja -C "$build" "fuzz_$target" >/dev/null

work="$build/corpus-work/$target"
artifacts="$build/artifacts/$target"
log="$build/logs/$target.log"
mkdir -p "$work" "$artifacts" "$(dirname "$log")"
stamp="$build/logs/$target.start"
touch "$stamp"

args=(-max_total_time="$seconds" -print_final_stats=1 -timeout=10 -artifact_prefix="$artifacts/")
[[ -f $here/$target.dict ]] && args+=(-dict="$here/$target.dict")
status=0
"$build/tests/fuzz/fuzz_$target" "${args[@]}" "$work" "$here/corpus/$target" >"$log" 2>&1 || status=$?

execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
seeds=$(find "$here/corpus/$target" -type f | wc -l)
found=$(find "$work" -type f | wc -l)
corpus="$((seeds + found)) files ($seeds seeds + $found found)"
crashes=$(find "$artifacts" -type f -newer "$stamp" | sort)
if [[ -n $crashes || $status -ne 0 ]]; then
  echo "fuzz $target: ${seconds} s, ${execs:-?} execs, ${rate:-?} execs/s, corpus $corpus, CRASH (exit $status):" \
       ${crashes:-"see $log"}
  grep -m5 -E 'ERROR|property violated|runtime error' "$log" >&2 || true
  exit 1
fi
echo "fuzz $target: ${seconds} s, $execs execs, $rate execs/s, corpus $corpus, 0 crashes"
