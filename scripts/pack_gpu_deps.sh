#!/usr/bin/env bash
# Packs the source/header-only dependencies that a bare GPU host lacks into .deps/ (git-ignored),
# from this machine's Debian packages: googletest sources, nlohmann/json and CLI11 headers.
# Carry .deps to the GPU host with the checkout; scripts/gpu_check.sh configures with
# -DPNEUMO_DEPS_DIR=.deps. Usage: scripts/pack_gpu_deps.sh [destination, default .deps]
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.deps}

sources=(
  "/usr/src/googletest:googletest"   # Debian package googletest (CMake project, gtest + gmock)
  "/usr/include/nlohmann:nlohmann"   # nlohmann-json3-dev
  "/usr/include/CLI:CLI"             # libcli11-dev
)
for entry in "${sources[@]}"; do
  src=${entry%%:*}
  if [[ ! -d $src ]]; then
    echo "pack_gpu_deps: $src is missing; run scripts/install_deps.sh first" >&2
    exit 1
  fi
done

mkdir -p "$dest"
for entry in "${sources[@]}"; do
  src=${entry%%:*} name=${entry##*:}
  rm -rf "${dest:?}/$name"
  cp -rL "$src" "$dest/$name"
done
# Provenance, so the GPU report can say which versions were built.
{
  echo "packed $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
  dpkg-query -W -f='${Package} ${Version}\n' googletest nlohmann-json3-dev libcli11-dev 2>/dev/null || true
} > "$dest/VERSIONS.txt"
echo "pack_gpu_deps: wrote $dest ($(du -sh "$dest" | cut -f1)): googletest/ nlohmann/ CLI/"
