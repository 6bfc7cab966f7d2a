#!/usr/bin/env bash
# Builds the libFuzzer targets in tests/fuzz/ and runs each for a while; fails on any crash.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s; targets: safetensors npy)
# Each target is compiled with clang++ -fsanitize=fuzzer,address,undefined from the reader sources
# alone (no CUDA, no CMake project), into $FUZZ_DIR (default build-fuzz/). The targets run side by
# side, each on one core, starting from the checked-in seeds (tests/fuzz/corpus/<target>/), the
# saved crash inputs (tests/fuzz/regressions/<target>/) and what earlier runs here found
# ($FUZZ_DIR/corpus/<target>/). A crashing input is written to $FUZZ_DIR/artifacts/; to keep it as
# a regression, copy it to tests/fuzz/regressions/<target>/ and add a unit test.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(safetensors npy)
out=${FUZZ_DIR:-build-fuzz}
cxx=${FUZZ_CXX:-$(command -v clang++-14 || echo clang++)}
# clang's sanitizers print file:line frames when they find llvm-symbolizer (llvm-14 ships it here).
if [[ -z ${ASAN_SYMBOLIZER_PATH:-} && -x /usr/lib/llvm-14/bin/llvm-symbolizer ]]; then
  export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer
fi
mkdir -p "$out/artifacts"

common_sources=(src/core/atomic_file.cpp src/core/error.cpp)
declare -A sources=(
  [safetensors]="src/train/safetensors.cpp src/core/json_structure.cpp"
  [npy]="src/data/npy.cpp"
)
# shellcheck disable=SC2054  # the commas are clang's list of sanitizers, one word
flags=(-std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
       -fno-sanitize-recover=all -Iinclude -Isrc -Itests/fuzz -Wall -Wextra -Werror)

for target in "${targets[@]}"; do
  [[ -n ${sources[$target]:-} ]] || { echo "fuzz: unknown target '$target'" >&2; exit 2; }
  echo "fuzz: building fuzz_$target with $cxx"
  # shellcheck disable=SC2086  # the source list is split on purpose
  "$cxx" "${flags[@]}" -o "$out/fuzz_$target" "tests/fuzz/fuzz_$target.cpp" ${sources[$target]} \
    "${common_sources[@]}"
done

# UBSan findings abort (-fno-sanitize-recover) with a stack trace; ASan stops at the first error.
# libFuzzer's own limits stay at their defaults: a single allocation above its 2 GB RSS limit is
# reported as a crash, which is what a reader that trusts a hostile size field would do.
export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1:print_summary=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

pids=()
for target in "${targets[@]}"; do
  corpus="$out/corpus/$target"
  mkdir -p "$corpus"
  inputs=("$corpus" "tests/fuzz/corpus/$target")
  [[ -d tests/fuzz/regressions/$target ]] && inputs+=("tests/fuzz/regressions/$target")
  echo "fuzz: running fuzz_$target for $seconds s (log: $out/fuzz_$target.log)"
  "$out/fuzz_$target" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
    -dict="tests/fuzz/$target.dict" -artifact_prefix="$out/artifacts/$target-" \
    "${inputs[@]}" >"$out/fuzz_$target.log" 2>&1 &
  pids+=($!)
done

status=0
for i in "${!targets[@]}"; do
  target=${targets[$i]}
  if wait "${pids[$i]}"; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/fuzz_$target.log")
    cov=$(grep -o 'cov: [0-9]*' "$out/fuzz_$target.log" | tail -1)
    echo "fuzz: fuzz_$target: no crash in $seconds s ($runs inputs, $cov)"
  else
    status=1
    echo "fuzz: fuzz_$target FAILED; end of its log:" >&2
    tail -n 60 "$out/fuzz_$target.log" >&2
    ls "$out"/artifacts/"$target"-* >&2 2>/dev/null || true
  fi
done
exit "$status"
