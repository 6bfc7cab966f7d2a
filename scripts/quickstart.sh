#!/usr/bin/env bash
# The main job in one command: installs dependencies, builds pneumo, and trains the seed network
# on the bundled sample (data/sample) for a few epochs, on the GPU when there is one, else the CPU.
# Extra arguments go to `pneumo train` (e.g. --epochs 5 --device cpu). Each run writes a new
# run directory, runs/<date>-<time> (train prints it), so the script can be run again.
set -euo pipefail
case ${1:-} in
  -h | --help)
    sed -n '2,5p' "$0" | sed 's/^# //'
    exit 0
    ;;
esac
cd "$(dirname "$0")/.."
scripts/install_deps.sh
build=${BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --parallel "$(nproc)" --target pneumo
exec "$build/pneumo" train --data data/sample --epochs 3 "$@"
