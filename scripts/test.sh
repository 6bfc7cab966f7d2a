#!/usr/bin/env bash
# The test command: installs dependencies, builds everything (CUDA sources included) and runs the
# whole GoogleTest suite through ctest. CUDA tests skip on machines without a GPU. Then the same
# suite under AddressSanitizer + UBSan (scripts/sanitize.sh, its own build folder) and a short run
# of each fuzz target (scripts/fuzz.sh, PNEUMO_FUZZ_SECONDS each, default 60). PNEUMO_CI_QUICK=1
# stops after the normal suite (for quick local runs; CI always runs everything).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
build=${BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" --parallel "$(nproc)"
# Host memory comes filled with NaN bytes in every test (tensor.hpp): a read of memory never
# written fails every time instead of when the heap happens to hold a NaN (the sanitizer stage
# inherits it).
export PNEUMO_POISON_ALLOCATIONS=1
ctest --test-dir "$build" --output-on-failure --parallel "$(nproc)" --timeout 900

if [[ ${PNEUMO_CI_QUICK:-0} == 1 ]]; then
  echo "test: PNEUMO_CI_QUICK=1: skipping the sanitizer build and the fuzz run"
  exit 0
fi
start=$SECONDS
scripts/sanitize.sh
echo "test: sanitizer stage (build + suite) took $((SECONDS - start)) s"
start=$SECONDS
scripts/fuzz.sh "${PNEUMO_FUZZ_SECONDS:-60}"
echo "test: fuzz stage (build + run) took $((SECONDS - start)) s"
