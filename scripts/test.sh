#!/usr/bin/env bash
# The test command: installs dependencies, builds everything (CUDA sources included) and runs the
# whole GoogleTest suite through ctest. CUDA tests skip on machines without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
build=${BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" --parallel "$(nproc)"
ctest --test-dir "$build" --output-on-failure --parallel "$(nproc)" --timeout 900
