#!/usr/bin/env bash
# Installs what pneumo builds against, from Debian packages. Idempotent: when everything is
# already there it only checks (a second or two) and installs nothing.
# The CUDA toolkit (nvcc, cuDNN 9, cuBLAS, NVTX3) is expected at /usr/local/cuda; it is not a
# Debian package here.
set -euo pipefail

packages=(
  cmake ninja-build g++ pkg-config
  libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev  # image decoding, warpAffine
  zlib1g-dev                   # checking a PNG's compressed image data before libpng reads it
  libopenblas-dev              # CPU backend GEMMs
  libgtest-dev                 # tests
  nlohmann-json3-dev           # JSON: cache metadata, checkpoints' headers, reports
  libcli11-dev                 # command line
  libopenmpi-dev openmpi-bin   # data-parallel ranks (mpirun); CI runs two CPU ranks
  clang-14 libclang-rt-14-dev  # fuzz targets: clang with libFuzzer and its sanitizer runtimes
  llvm-14                      # llvm-symbolizer, for file:line frames in the fuzzers' reports
  shellcheck                   # tests: every shell script linted (the GPU check's above all)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "install_deps: installing ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
else
  echo "install_deps: all packages present"
fi

# numpy is only used by tests that check the cache loads in NumPy, safetensors by the test that
# checks checkpoints load in Python, pyflakes by the test that lints the Python scripts; those
# tests (or their parts) skip when the packages are absent.
if command -v python3 >/dev/null; then
  for module in numpy safetensors pyflakes; do
    python3 -c "import $module" 2>/dev/null ||
      python3 -m pip install -q "$module" 2>/dev/null ||
      echo "install_deps: python package $module not installed (optional)"
  done
fi

if [[ ! -x /usr/local/cuda/bin/nvcc ]]; then
  echo "install_deps: warning: /usr/local/cuda/bin/nvcc not found; the build needs the CUDA toolkit" >&2
fi
