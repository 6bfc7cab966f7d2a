#!/usr/bin/env bash
# The kernel benchmark's GPU checks in one short run, for a bare GPU host with little device time:
# build pneumo + pneumo_tests for the local GPU, run the tests of our conv kernels and of the
# benchmark (CUDA tests really run), compute-sanitizer (memcheck, racecheck, synccheck) on our conv
# kernels, then `pneumo bench kernels --device cuda` itself, optionally Nsight Compute on the conv
# kernels. Every step is logged; SUMMARY.md says what passed. (scripts/gpu_check.sh is the full
# GPU check; the cuDNN lookup below is the same as its.)
#
# Usage:  profiling/gpu_bench_kernels.sh [OUT_DIR]          (default: $OUT, else ./bench_kernels_out)
# Knobs:  BUILD_DIR (build-gpu), JOBS (nproc), SKIP_BUILD=1 (use binaries already in BUILD_DIR),
#         BENCH_ARGS (extra arguments for the full benchmark, e.g. "--batches 32"), NCU=1 (profile
#         the conv kernels with Nsight Compute), CUDNN_ROOT (skip the python lookup).
# Needs:  nvcc, cmake, python3 with nvidia/cudnn, and .deps/ from scripts/pack_gpu_deps.sh.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
out=${1:-${OUT:-$root/bench_kernels_out}}
mkdir -p "$out/logs"
out=$(cd "$out" && pwd)
build=${BUILD_DIR:-$root/build-gpu}
jobs=${JOBS:-$(nproc)}
summary=$out/SUMMARY.md
failed=0
for dir in /usr/local/cuda/bin /usr/local/cuda-13.0/bin; do
  [[ -x $dir/nvcc ]] && PATH=$dir:$PATH
done
export PATH PNEUMO_EXPECT_CUDA=1

{
  echo "# pneumo bench kernels: GPU checks"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.sm,clocks.max.mem --format=csv,noheader 2>/dev/null | head -n 1)"
  echo
  echo "| step | result | seconds | log |"
  echo "|---|---|---|---|"
} > "$summary"

# step NAME LIMIT_S LOG -- COMMAND...: runs with a timeout, records the result in SUMMARY.md.
step() {
  local name=$1 limit=$2 logname=$3
  local log=$out/logs/$logname.log
  shift 4
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
  local rc=$? result=PASS
  if (( rc == 124 || rc == 137 )); then result="TIMEOUT (${limit}s)"; elif (( rc != 0 )); then result="FAIL (exit $rc)"; fi
  [[ $result == PASS ]] || failed=1
  echo "| $name | $result | $((SECONDS - t0)) | logs/$logname.log |" >> "$summary"
  echo "gpu_bench_kernels: $name: $result"
  return $rc
}

# ---- cuDNN from the Python environment (as scripts/gpu_check.sh) ---------------------------------
cudnn_root=${CUDNN_ROOT:-$(python3 -c 'import nvidia.cudnn as m, os; print([p for p in m.__path__ if os.path.exists(p + "/include/cudnn.h")][0])' 2>/dev/null)}
cmake_cudnn=()
if [[ -n $cudnn_root && -f $cudnn_root/include/cudnn.h ]]; then
  cudnn_lib=$cudnn_root/lib
  cudnn_cmake_root=$cudnn_root
  if [[ ! -e $cudnn_lib/libcudnn.so ]]; then  # wheels ship only libcudnn.so.9
    cudnn_cmake_root=$build-cudnn-shim
    rm -rf "$cudnn_cmake_root" && mkdir -p "$cudnn_cmake_root/lib"
    ln -s "$cudnn_root/include" "$cudnn_cmake_root/include"
    for f in "$cudnn_lib"/*; do ln -s "$f" "$cudnn_cmake_root/lib/"; done
    ln -sf "$(find "$cudnn_lib" -maxdepth 1 -name 'libcudnn.so.*' | sort -V | head -n 1)" "$cudnn_cmake_root/lib/libcudnn.so"
  fi
  cmake_cudnn=(-DCUDNN_ROOT="$cudnn_cmake_root" -DCUDNN_INCLUDE_DIR="$cudnn_cmake_root/include"
               -DCUDNN_LIBRARY="$cudnn_cmake_root/lib/libcudnn.so")
  extra=""
  for d in "$(dirname "$cudnn_root")"/*/lib; do [[ -d $d && $d != "$cudnn_lib" ]] && extra=$extra:$d; done
  toolkit_lib=$(dirname "$(dirname "$(command -v nvcc)")")/lib64
  export LD_LIBRARY_PATH=$cudnn_lib:$toolkit_lib$extra${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
echo "- cuDNN: ${cudnn_root:-not found in python3; CMake searches the toolkit}" >> "$out/logs/env.txt"

# ---- Build ----------------------------------------------------------------------------------------
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')
[[ $arch =~ ^[0-9]+$ ]] || arch=90
generator=Ninja
command -v ninja > /dev/null || generator="Unix Makefiles"
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  step "configure (sm_$arch)" 120 configure -- cmake -S "$root" -B "$build" -G "$generator" \
    -DCMAKE_BUILD_TYPE=Release -DPNEUMO_WITH_OPENCV=OFF -DPNEUMO_WITH_BLAS=OFF \
    -DPNEUMO_DEPS_DIR="$root/.deps" -DPNEUMO_WERROR=OFF -DCMAKE_CUDA_ARCHITECTURES="$arch" "${cmake_cudnn[@]}"
  step "build pneumo + pneumo_tests" 420 build -- cmake --build "$build" --parallel "$jobs" --target pneumo pneumo_tests
fi
cli=$build/pneumo
tests=$build/tests/pneumo_tests

# ---- Tests of our conv kernels and of the benchmark ------------------------------------------------
step "tests: ConvDirect*, Bench*" 240 tests -- "$tests" --gtest_filter='ConvDirect*:Bench*' \
  --gtest_output="xml:$out/tests.xml"

# ---- compute-sanitizer on our conv kernels ----------------------------------------------------------
sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/compute-sanitizer/compute-sanitizer)
if [[ -x $sanitizer ]]; then
  step "memcheck: ConvDirectCuda.*" 120 memcheck -- "$sanitizer" --tool memcheck --error-exitcode 86 \
    --print-limit 30 "$tests" --gtest_filter='ConvDirectCuda.*'
  step "racecheck: conv3x3 kernels" 120 racecheck -- "$sanitizer" --tool racecheck --error-exitcode 86 \
    --print-limit 30 --kernel-name kns=conv3x3 "$tests" --gtest_filter='ConvDirectCuda.*'
  step "synccheck: conv3x3 kernels" 90 synccheck -- "$sanitizer" --tool synccheck --error-exitcode 86 \
    --print-limit 30 --kernel-name kns=conv3x3 "$tests" --gtest_filter='ConvDirectCuda.*'
else
  echo "| compute-sanitizer | not found | 0 | |" >> "$summary"
fi

# ---- The benchmark ------------------------------------------------------------------------------------
# shellcheck disable=SC2086  # BENCH_ARGS is a list of words on purpose
step "pneumo bench kernels --device cuda" 300 bench_kernels -- "$cli" bench kernels --device cuda \
  --json "$out/bench_kernels.jsonl" --csv "$out/bench_kernels.csv" ${BENCH_ARGS:-}
# The table is the command's stdout; the log also holds one progress line per row (stderr).
grep -v '^\[bench kernels\]' "$out/logs/bench_kernels.log" > "$out/bench_kernels.md"

if [[ ${NCU:-0} == 1 ]] && command -v ncu > /dev/null; then
  step "ncu: conv3x3 kernels, batch 256" 240 ncu -- ncu --clock-control none --set full --import-source yes \
    -k regex:conv3x3 -c 4 -o "$out/conv3x3" -f "$cli" bench kernels --device cuda --ops conv \
    --batches 256 --repeats 1 --warmup 0
  ncu --import "$out/conv3x3.ncu-rep" --page details > "$out/conv3x3_details.txt" 2>&1 || true
fi

{
  echo
  echo "## Table"
  echo
  cat "$out/bench_kernels.md" 2>/dev/null
} >> "$summary"
exit $failed
