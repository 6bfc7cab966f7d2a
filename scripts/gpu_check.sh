#!/usr/bin/env bash
# shellcheck disable=SC2317  # the sections are functions, called through GPU_CHECK_ORDER
# Every GPU check in one run, for a bare GPU host: build for the local GPU and the whole test
# suite (CUDA tests really run) first; then the sections in GPU_CHECK_ORDER's order (default
# below; a short budget cuts the last): `pneumo bench train` plain, bf16, with fused block tails
# and with CUDA graphs (each with the recipe end to end); `pneumo bench kernels`; the
# generalisation sweep; compute-sanitizer on a short training and on the CUDA tests; the cold/warm
# tuning cache; the PyTorch reference (eager fp32, compiled channels_last + bf16, the recipe end to
# end cold, more configurations); one NCCL rank; the recipe trained on the full dataset (fp32,
# bf16, fused tails) and evaluated on test; more seeds; Nsight Compute. Writes one Markdown report.
# `scripts/gpu_check.sh --help` prints this header.
#
# Usage:  scripts/gpu_check.sh [OUT_DIR]        (default: $OUT, else gpu_check_out in the repository)
# Needs:  nvcc (CUDA 13), cmake, ninja (or make), python3 whose site-packages hold
#         nvidia/cudnn/{include,lib}, and .deps/ from scripts/pack_gpu_deps.sh (googletest,
#         nlohmann, CLI11 for hosts without them). No network, no apt.
# Knobs:  BUDGET_S (total seconds, default 540: every section's timeout is cut to what is left;
#         past it only the report and the archive, seconds: give the call a timeout ~30 s above),
#         BUILD_DIR (build-gpu), JOBS (nproc), CUDNN_ROOT (skip the python lookup),
#         BUILD_LIMIT_S (the build's limit, default 420; a 2-core dry run needs more),
#         TESTS_LIMIT_S (the test suite's, default 150: 68 s on the H200, so a hung test costs
#         little), GPU_CHECK_WORK (where the check works when OUT_DIR is $OUT, default
#         gpu_check_out in the repository: $OUT then gets only the files that come back, the
#         report refreshed after every section),
#         EXTRA_CMAKE_ARGS (appended to the configure command),
#         SANITIZER_FILTER (gtest filter for the sanitizer runs), SKIP_SANITIZERS=1,
#         SKIP_TESTS=1 (not the test suite: for a second call on a warm machine, 68 s on the H200;
#         the build then makes only pneumo unless the sanitizers are in GPU_CHECK_ORDER),
#         PNEUMO_TRAIN_ARGS (extra `pneumo train` flags), PNEUMO_BENCH_ARGS (`bench train` flags,
#         default "--batch 32 256 --steps 200 --layers"), PNEUMO_BENCH_KERNELS_ARGS, PNEUMO_CACHE,
#         PNEUMO_SEEDS (more seeds of the recipe, default "2 3 4 5"; "" skips them), SKIP_NCU=1,
#         PNEUMO_TUNING_CACHE (the backend's tuning cache, default OUT_DIR/tuning.json),
#         CXX (the compiler a new build folder configures with; the report's toolchain line),
#         SKIP_RUNS=1 (no benchmark, PyTorch, ncu, sweep or full-dataset training: build, tests,
#         caches and the sanitizers, their one-epoch training included),
#         SKIP_TORCH=1, SKIP_TORCH_COMPILE=1 (no torch.compile, nor the cold recipe runs: eager
#         fp32 and bf16, eager TF32 and the profile remain),
#         SKIP_BENCH_EXTRAS=1 (no --deterministic false or tf32 bench train),
#         EXPERIMENTS_PLAN (the generalisation sweep's plan; "" skips it; default on a GPU: the
#         plan waiting for one, configs/experiments/keras-order-150-gpu.json; its runs are kept in
#         build-gpu-data/experiments, so a warm second call continues a cut sweep),
#         EXPERIMENTS_JOBS (the sweep's runs trained at a time, default 4 on a GPU, 1 on the CPU),
#         GPU_CHECK_ORDER (the sections after the build, tests and data, by name, in order; default
#         "bench_main cache_pair torch_eager train_real seeds torch_compile sanitizers bench_fused
#         kernels torch_more sweep nccl bench_extras ncu"; "" is the default too; seeds needs
#         train_real earlier in the same call),
#         GPU_CHECK_COMMIT (the commit the report names; default git's HEAD here, which on a lent
#         GPU may be an older copy's: give the dev machine's `git rev-parse --short HEAD`),
#         PREDICTIONS (the files of speed predictions and aims the report checks; default the
#         newest profiling/predictions-*.json and every profiling/targets-*.json, "" none),
#         GPU_CHECK_DEVICE (cuda; "cpu" dry-runs the script's flow on a machine without a GPU: the
#         pneumo commands then run on the CPU and the CUDA tests fail, as they should there).
# Every section records pass/fail and its time; a failure never stops the run. A section the
# budget cut short is CUT, not a failure. Exit status: 0 when every section that ran passed (or
# was cut), else 1.
set -uo pipefail

case ${1:-} in
  -h | --help)
    sed -n '3,/^set -uo pipefail/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-${OUT:-$root/gpu_check_out}}
[[ $out == /* ]] || out=$PWD/$out  # a relative OUT_DIR is the caller's, not the repository's
cd "$root" || exit 1
mkdir -p "$out"
out=$(cd "$out" && pwd)
# On a lent GPU ($OUT) only eight files come back, and only what is under $OUT when the call ends:
# the check works in a folder of its own (GPU_CHECK_WORK) and copies the few files that come back
# into $OUT after every section (publish), so a call the device tool stops early still returns
# the report as it stood; the archive of everything else is made at the end.
returned=""
if [[ -n ${OUT:-} && $out == "$(cd "$OUT" 2>/dev/null && pwd)" ]]; then
  returned=$out
  out=${GPU_CHECK_WORK:-$root/gpu_check_out}
  [[ $out == /* ]] || out=$root/$out
  [[ $out == "$returned" ]] && { echo "gpu_check: GPU_CHECK_WORK must not be \$OUT" >&2; exit 2; }
  rm -rf "$out"  # a warm machine keeps the last call's folder; this call's files only
fi
mkdir -p "$out/logs"
report=$out/gpu_check_report.md
build=${BUILD_DIR:-$root/build-gpu}
jobs=${JOBS:-$(nproc)}
budget=${BUDGET_S:-540}
started=$(date +%s)
test_bin=$build/tests/pneumo_tests
cli_bin=$build/pneumo
device=${GPU_CHECK_DEVICE:-cuda}
export PNEUMO_EXPECT_CUDA=1  # a CUDA test that finds no device fails instead of skipping
# The backend's remembered choices (--tuning-cache auto) go to a file of this check's own, which
# comes back with the report; the cold/warm recipe runs (cache_pair) use another, new one.
export PNEUMO_TUNING_CACHE=${PNEUMO_TUNING_CACHE:-$out/tuning.json}
# The speed predictions written before this run (the newest profiling/predictions-*.json) and the
# issues' aims (profiling/targets-*.json); PREDICTIONS names other files (space-separated), ""
# none. The report checks each against the rows measured.
prediction_files=("$root"/profiling/predictions-*.json)  # by name: dated, so the newest last
if [[ -v PREDICTIONS ]]; then
  read -r -a prediction_files <<< "$PREDICTIONS"
else
  prediction_files=("${prediction_files[-1]}" "$root"/profiling/targets-*.json)
fi
predictions=()
for prediction_file in "${prediction_files[@]}"; do
  [[ -f $prediction_file ]] && predictions+=("$prediction_file")
done

# Sanitizers run the small-shape CUDA tests, with one convolution shape (each conv test runs
# every cuDNN algorithm in its search, slow under instrumentation); the model shapes and the
# TF32/plan-cache tests add minutes and nothing a small shape misses.
default_filter='AwkwardShapes/ConvParity.*/n2_c5_8x6_k3:AwkwardShapes/MaxPoolParity.*'
default_filter+=':AwkwardShapes/BatchNormParity.*:AwkwardShapes/DropoutParity.*'
default_filter+=':AwkwardShapes/DenseParity.*:BatchSizes/*:Implementations/*:Parity.*'
default_filter+=':ConvDirectCuda.*:StepParity.*:Shapes/Bf16ConvParity.*/n2_c12_9x7_k16'
default_filter+=':BlockTailCuda.MatchesTheCudaUnfusedChain:StemCuda.MatchesTheCudaConvolutionThenTail'
default_filter+=':StepGraphsCuda.LiveOpsAndBeginStepMatchTheCpu'
# The bfloat16 tails (shared memory, barriers), a batch split into chunks with a short last one,
# and the empty batches.
default_filter+=':BlockTailBf16Cuda.MatchesTheCpuTwin:ShortLastChunk/BatchNormParity.*/n7_c8_5x5'
default_filter+=':EmptyBatchCuda.*'
default_filter+=':-*Tf32*:*ConvPlans*'
sanitizer_filter=${SANITIZER_FILTER:-$default_filter}

# ---- Bookkeeping ----------------------------------------------------------------------------------
names=() results=() seconds=() logs=() notes=()
any_failed=0

remaining() { echo $((budget - ($(date +%s) - started))); }
# A limit of at most N seconds for work outside run() (a cut sweep's table, an ncu report's
# import), cut to what is left of the budget, 5 s at the least: past the budget only the report
# and the archive remain (seconds), so a call's timeout a little above BUDGET_S ends the script
# itself, which keeps only the eight files that come back (a call stopped earlier returns eight
# of its files, unchosen).
within_budget() {
  local left=$(( $(remaining) - 5 ))
  (( left > $1 )) && left=$1
  (( left < 5 )) && left=5
  echo "$left"
}
# What no copy or archive of the check's files takes: checkpoints (tens of MB; scores and logs say
# what they hold) and the temporary files of a checkpoint write a cut section left.
archive_excludes=(--exclude='*.safetensors' --exclude='*.safetensors.tmp.*')

write_report() {
  {
    echo "# pneumo GPU check"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ), host: $(hostname)"
    if [[ -n ${GPU_CHECK_COMMIT:-} ]]; then  # the device's copy of .git may be an older one's
      echo "- commit: $GPU_CHECK_COMMIT (GPU_CHECK_COMMIT, as the caller gave it)"
    else
      echo "- commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet 2>/dev/null || echo ' (with local changes)')"
    fi
    echo "- GPU: ${gpu_line:-unknown}"
    echo "- toolchain: ${toolchain_line:-unknown}"
    echo "- cuDNN: ${cudnn_line:-not located yet}"
    echo "- build: $build (CUDA architectures ${cuda_arch:-?}), elapsed $(( $(date +%s) - started )) s of a $budget s budget"
    echo "- sanitizer runs: gtest filter \`$sanitizer_filter\`; racecheck and synccheck watch only pneumo's kernels"
    echo
    echo "| section | result | seconds | log | note |"
    echo "|---|---|---|---|---|"
    local i
    for i in "${!names[@]}"; do
      echo "| ${names[$i]} | **${results[$i]}** | ${seconds[$i]} | ${logs[$i]} | ${notes[$i]} |"
    done
    echo
    if [[ -s $out/test_summary.md ]]; then
      cat "$out/test_summary.md"
      echo
    fi
    local sweep_file
    for sweep_file in "$out/experiments/results.md" "$out/experiments/test.md"; do
      [[ -s $sweep_file ]] || continue
      echo "## Generalisation sweep: $(basename "$sweep_file")"
      echo
      sed 's/^# /### /' "$sweep_file"
      echo
    done
    if [[ -s $out/seeds.md ]]; then
      echo "## The recipe over seeds (scripts/summarize_runs.py)"
      echo
      cat "$out/seeds.md"
      echo
    fi
    if [[ -s $out/logs/train.log ]]; then  # the clocks of the recipe run: epochs, then the whole run
      echo "## The recipe run's clocks (pneumo train)"
      echo
      echo '```'
      grep -E '^(epoch [0-9]+/[0-9]+  train|run: )' "$out/logs/train.log"  # not the progress lines
      echo '```'
      echo
    fi
    if [[ -s $out/throughput.jsonl ]]; then
      echo "## pneumo against PyTorch (scripts/throughput_table.py)"
      echo
      python3 "$root/scripts/throughput_table.py" "$out/throughput.jsonl" 2>&1
      echo
    fi
    if (( ${#predictions[@]} )) && { [[ -s $out/bench_kernels.jsonl ]] || compgen -G "$out/logs/bench_*.log" > /dev/null; }; then
      echo "## Predictions and aims against this run (scripts/check_predictions.py)"
      local prediction_file
      for prediction_file in "${predictions[@]}"; do
        echo
        python3 "$root/scripts/check_predictions.py" "$prediction_file" "$out" 2>&1
      done
      echo
    fi
    local bench_log
    for bench_log in "$out"/logs/bench_train*.log "$out"/logs/bench_recipe*.log; do  # phases, layers, ops
      [[ -s $bench_log ]] || continue
      echo "## $(basename "$bench_log" .log)"
      grep -v '^{' "$bench_log"
      echo
    done
    if [[ -s $out/logs/torch_profile.log ]]; then  # PyTorch's step, op by op
      echo "## torch_profile"
      grep -v '^{' "$out/logs/torch_profile.log" | grep -v '^\(USDT\|ERROR\|STAGE\|WARNING\):'
      echo
    fi
    if [[ -s $out/conv_plans.txt ]]; then
      echo "## cuDNN algorithm choices (ConvPlansAreFoundOnceAndReused)"
      echo
      echo '```'
      cat "$out/conv_plans.txt"
      echo '```'
      echo
    fi
    for i in "${!names[@]}"; do
      if [[ ${results[$i]} == FAIL || ${results[$i]} == TIMEOUT || ${results[$i]} == CUT ]] && [[ -f $out/${logs[$i]} ]]; then
        echo "## ${names[$i]}: ${results[$i]} (last 60 lines of ${logs[$i]})"
        echo
        echo '```'
        tail -n 60 "$out/${logs[$i]}"
        echo '```'
        echo
      fi
    done
  } > "$report"
  publish
}

# The files that come back from a lent GPU besides the archive, copied into $OUT as they are now.
returned_files=(gpu_check_report.md throughput.jsonl train_epochs.txt evaluate.txt test_metrics.json
                history.csv seeds.md)
publish() {
  [[ -n $returned ]] || return 0
  cp "$out/logs/evaluate.log" "$out/evaluate.txt" 2> /dev/null
  cp "$out/run/test_metrics.json" "$out/run/history.csv" "$out/" 2> /dev/null
  local name
  for name in "${returned_files[@]}"; do
    [[ -f $out/$name ]] && cp "$out/$name" "$returned/.$name.tmp" && mv "$returned/.$name.tmp" "$returned/$name"
  done
  return 0
}

record() {  # record NAME RESULT SECONDS LOG NOTE
  names+=("$1") results+=("$2") seconds+=("$3") logs+=("$4") notes+=("$5")
  [[ $2 == FAIL || $2 == TIMEOUT ]] && any_failed=1
  echo "gpu_check: $1: $2 (${3}s) $5"
  write_report
}

skip() { record "$1" SKIP 0 "" "$2"; }

# Keeps logs small enough to come back from the GPU host: first and last MiB of anything larger.
trim_log() {
  local log=$1 max=$((2 * 1024 * 1024))
  if [[ -f $log && $(stat -c %s "$log") -gt $max ]]; then
    { head -c $((max / 2)) "$log"; printf '\n\n[... trimmed by gpu_check ...]\n\n'; tail -c $((max / 2)) "$log"; } > "$log.tmp"
    mv "$log.tmp" "$log"
  fi
}

# run NAME LIMIT_S LOGNAME NOTE -- COMMAND...: runs with a timeout cut to the remaining budget.
run() {
  local name=$1 limit=$2 logname=$3 note=$4
  shift 5
  local left
  left=$(( $(remaining) - 15 ))
  if (( left < 20 )); then
    skip "$name" "out of time budget"
    return 1
  fi
  local cut=0  # the budget, not the section's own limit, sets its timeout
  (( limit > left )) && limit=$left && cut=1
  local log=$out/logs/$logname.log t0 t1 rc
  t0=$(date +%s.%N)
  timeout --kill-after=15 "$limit" "$@" > "$log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  trim_log "$log"
  local secs result
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  if (( rc == 0 )); then
    result=PASS
  elif (( rc == 1 )) && [[ ${tolerate_test_failures:-0} == 1 ]]; then
    result=PASS  # under a sanitizer: failed tests are the test section's business
    note="$note (no sanitizer errors; some tests failed, see the tests section)"
  elif (( rc == 86 )); then
    result=FAIL
    note="$note (compute-sanitizer reported errors)"
  elif (( (rc == 124 || rc == 137) && cut )); then
    result=CUT  # not a failure of the section: the check ran out of time (see the budget)
    note="$note (cut by the budget after ${limit}s)"
  elif (( rc == 124 || rc == 137 )); then
    result=TIMEOUT
    note="$note (limit ${limit}s)"
  else
    result=FAIL
    note="$note (exit $rc)"
  fi
  record "$name" "$result" "$secs" "logs/$logname.log" "$note"
  return $rc
}

write_report

# ---- 1. The machine -------------------------------------------------------------------------------
for dir in /usr/local/cuda/bin /usr/local/cuda-13.0/bin; do
  [[ -x $dir/nvcc ]] && case ":$PATH:" in *":$dir:"*) ;; *) PATH=$dir:$PATH ;; esac
done
export PATH
gpu_line=$(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>/dev/null | head -n 1)
toolchain_line="$(nvcc --version 2>/dev/null | tail -n 1); $(cmake --version 2>/dev/null | head -n 1); $(${CXX:-g++} --version 2>/dev/null | head -n 1)"
run "nvidia-smi" 30 nvidia_smi "driver and GPU state" -- nvidia-smi

# ---- 2. cuDNN from the Python environment ---------------------------------------------------------
# PyTorch's wheels ship nvidia/cudnn/{include,lib}; the library may exist only as libcudnn.so.9,
# so a temporary root with an unversioned symlink is made for CMake when needed.
locate_cudnn() {
  if [[ -n ${CUDNN_ROOT:-} ]]; then
    echo "$CUDNN_ROOT"
    return 0
  fi
  python3 - <<'PY'
import os, sys
try:
    import nvidia.cudnn as m
except Exception as e:
    sys.exit(f"python3 cannot import nvidia.cudnn: {e}")
for path in list(getattr(m, "__path__", [])) + [os.path.dirname(getattr(m, "__file__", "") or "")]:
    if path and os.path.exists(os.path.join(path, "include", "cudnn.h")):
        print(path)
        sys.exit(0)
sys.exit("nvidia.cudnn has no include/cudnn.h")
PY
}
cudnn_log=$out/logs/cudnn.log
t0=$(date +%s)
cudnn_root=$(locate_cudnn 2> "$cudnn_log")
if [[ -n $cudnn_root && -f $cudnn_root/include/cudnn.h ]]; then
  cudnn_lib=$cudnn_root/lib
  [[ -d $cudnn_lib ]] || cudnn_lib=$cudnn_root/lib64
  cudnn_version=$(awk '/#define CUDNN_(MAJOR|MINOR|PATCHLEVEL)/ { v = v (v ? "." : "") $3 } END { print v }' \
    "$cudnn_root/include/cudnn_version.h" 2>/dev/null)
  if [[ ! -e $cudnn_lib/libcudnn.so ]]; then
    # A fixed place beside the build folder (git-ignored), so a re-run's CMake cache stays valid.
    shim=$build-cudnn-shim
    rm -rf "$shim"
    mkdir -p "$shim/lib"
    ln -s "$cudnn_root/include" "$shim/include"
    for f in "$cudnn_lib"/*; do ln -s "$f" "$shim/lib/"; done
    versioned=$(find "$cudnn_lib" -maxdepth 1 -name "libcudnn.so.*" | sort -V | head -n 1)
    ln -sf "$versioned" "$shim/lib/libcudnn.so"
    echo "made $shim/lib/libcudnn.so -> $versioned" >> "$cudnn_log"
    cudnn_cmake_root=$shim
  else
    cudnn_cmake_root=$cudnn_root
  fi
  # The loader needs cuDNN's folder, the toolkit's libraries (cuBLAS 13), and the Python
  # environment's other NVIDIA libraries that cuDNN may load at run time (cuBLASLt, NVRTC).
  toolkit_lib=$(dirname "$(dirname "$(command -v nvcc)")")/lib64
  extra=""
  for d in "$(dirname "$cudnn_root")"/*/lib; do
    [[ -d $d && $d != "$cudnn_lib" ]] && extra=$extra:$d
  done
  export LD_LIBRARY_PATH=$cudnn_lib:$toolkit_lib$extra${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >> "$cudnn_log"
  cudnn_line="$cudnn_version at $cudnn_root"
  record "locate cuDNN" PASS $(( $(date +%s) - t0 )) logs/cudnn.log "$cudnn_version"
else
  cudnn_cmake_root=""
  cudnn_line="not found (see logs/cudnn.log); CMake searches the toolkit"
  record "locate cuDNN" FAIL $(( $(date +%s) - t0 )) logs/cudnn.log "no nvidia.cudnn in python3"
fi

# ---- 3. Configure and build ------------------------------------------------------------------------
cuda_arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')
[[ $cuda_arch =~ ^[0-9]+$ ]] || cuda_arch=native
generator=Ninja
command -v ninja > /dev/null || generator="Unix Makefiles"
deps_dir=$root/.deps
[[ -d $deps_dir ]] || echo "gpu_check: warning: $deps_dir is missing (run scripts/pack_gpu_deps.sh and carry .deps)"
# NCCL: the toolkit's when it has one, else the Python environment's (nvidia.nccl), for the
# one-rank NCCL run (the nccl section).
nccl_root=$(python3 -c 'import nvidia.nccl as m, os; p = list(m.__path__)[0]; print(p if os.path.exists(os.path.join(p, "include", "nccl.h")) else "")' 2>/dev/null || true)
configure_command() {  # fills cmake_command for CUDA architectures $1
  cmake_command=(cmake -S "$root" -B "$build" -G "$generator" -DCMAKE_BUILD_TYPE=Release
    -DPNEUMO_WITH_OPENCV=OFF -DPNEUMO_WITH_BLAS=OFF -DPNEUMO_DEPS_DIR="$deps_dir" -DPNEUMO_WERROR=OFF
    -DCMAKE_CUDA_ARCHITECTURES="$1")
  # shellcheck disable=SC2206  # EXTRA_CMAKE_ARGS is a list of words on purpose
  [[ -n ${EXTRA_CMAKE_ARGS:-} ]] && cmake_command+=($EXTRA_CMAKE_ARGS)
  [[ -n $nccl_root ]] && cmake_command+=(-DNCCL_ROOT="$nccl_root")
  if [[ -n $cudnn_cmake_root ]]; then  # explicit paths also replace a stale cached search
    cmake_command+=(-DCUDNN_ROOT="$cudnn_cmake_root"
      -DCUDNN_INCLUDE_DIR="$cudnn_cmake_root/include" -DCUDNN_LIBRARY="$cudnn_cmake_root/lib/libcudnn.so")
  fi
}
configure_command "$cuda_arch"
configured=0
if run "configure" 120 configure "CUDA arch $cuda_arch, $generator" -- "${cmake_command[@]}"; then
  configured=1
elif [[ $cuda_arch != 90 ]]; then  # 'native' needs a GPU at configure time; 90 is the H100
  rm -rf "$build"
  cuda_arch=90
  configure_command 90
  run "configure (retry, sm_90)" 120 configure_retry "CUDA arch 90" -- "${cmake_command[@]}" &&
    configured=1
fi
# The binaries an earlier call built are removed first: a build that fails or is cut on a warm
# machine left them, and every section then tested and timed them under this commit's name. A
# build that did not finish fails the check (its sections are skipped: nothing was checked).
rm -f "$cli_bin" "$test_bin"
# A second call without the test suite or the sanitizers needs only pneumo (seconds, where a tree
# laid down again with new times would rebuild every target).
build_targets=()
[[ ${SKIP_TESTS:-0} == 1 && " ${GPU_CHECK_ORDER:-sanitizers} " != *" sanitizers "* ]] &&
  build_targets=(--target pneumo)
if (( configured )); then
  run "build" "${BUILD_LIMIT_S:-420}" build "$jobs jobs${build_targets:+, pneumo only}" -- \
    cmake --build "$build" --parallel "$jobs" "${build_targets[@]}" || any_failed=1
else
  skip "build" "not configured"
  any_failed=1
fi

# ---- 4. The whole test suite ---------------------------------------------------------------------------
summarize_tests() {  # summarize_tests XML: counts, failures and skips into test_summary.md
  python3 - "$1" > "$out/test_summary.md" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception as e:
    print(f"## Tests\n\nno XML report ({e})")
    sys.exit(0)
cases = list(root.iter("testcase"))
failed, skipped = [], []
for c in cases:
    name = f"{c.get('classname')}.{c.get('name')}"
    if c.find("failure") is not None:
        failed.append((name, c.find("failure").get("message", "").splitlines()[:6]))
    elif c.get("result") == "skipped" or c.find("skipped") is not None:
        skipped.append(name)
print("## Tests")
print()
print(f"{len(cases)} tests: {len(cases) - len(failed) - len(skipped)} passed, "
      f"{len(failed)} failed, {len(skipped)} skipped (time {root.get('time', '?')} s)")
ties = [c for c in cases if "MaxPoolTies" in (c.get("classname") or "")]
for c in ties:
    impl = (c.get("name") or "").split("/")[-1]
    if c.find("failure") is not None:
        verdict = "does NOT follow"
    elif c.get("result") == "skipped":
        verdict = "was not checked (skipped):"
    else:
        verdict = "follows"
    print(f"- max-pool backward, {impl}: {verdict} the interface's tie rule (first maximum in "
          "row-major order gets the gradient)")
if failed:
    print("\nFailed:")
    for name, lines in failed:
        print(f"- `{name}`")
        for line in lines:
            print(f"    {line}")
if skipped:
    print("\nSkipped:")
    for name in skipped[:40]:
        print(f"- `{name}`")
    if len(skipped) > 40:
        print(f"- ... and {len(skipped) - 40} more")
PY
}
if [[ ${SKIP_TESTS:-0} == 1 ]]; then
  skip "tests (all)" "SKIP_TESTS=1 (a second call on a warm machine whose first ran them)"
elif [[ -x $test_bin ]]; then
  # With poisoned allocations (NaN bytes, host and device), as scripts/test.sh runs the suite.
  run "tests (all)" "${TESTS_LIMIT_S:-150}" tests "PNEUMO_EXPECT_CUDA=1, PNEUMO_POISON_ALLOCATIONS=1" -- \
    env PNEUMO_POISON_ALLOCATIONS=1 "$test_bin" --gtest_output="xml:$out/tests.xml"
  summarize_tests "$out/tests.xml"
  grep -A 30 '^\[ conv plans \]' "$out/logs/tests.log" > "$out/conv_plans.txt" 2>/dev/null || true
  write_report
else
  skip "tests (all)" "no test binary (build failed)"
fi

# From here, most telling first (a short budget cuts from the end): the step's speed in issue #15's
# four configurations, our kernels against cuDNN, the generalisation sweep waiting for a GPU, the
# sanitizers (all the new kernels have yet to meet them), the tuning cache cold and warm, compiled
# PyTorch; then everything else (the default order is GPU_CHECK_ORDER's, at the end).

# ---- 5. Data: the sample, and the full dataset when carried --------------------------------------------
# The host has no OpenCV for C++, so caches are built with Python's OpenCV: the full dataset from
# .xfer/full (scripts/pack_gpu_data.py; carry .xfer) and the bundled sample from data/sample.
data_root=$build-data
sample_cache=$data_root/sample
full_cache=${PNEUMO_CACHE:-}
if [[ -n $full_cache && ! -f $full_cache/meta.json ]]; then
  # A PNEUMO_CACHE that names no cache trains nothing (every full-data section would fail on it).
  skip "full cache" "PNEUMO_CACHE=$full_cache holds no meta.json: no pneumo cache there"
  full_cache=""
fi
run "sample cache (python)" 60 sample_cache "data/sample via scripts/unpack_gpu_data.py" -- \
  python3 "$root/scripts/unpack_gpu_data.py" tree "$root/data/sample" "$sample_cache"
if [[ -z $full_cache && -d $root/.xfer/full ]]; then
  full_cache=$data_root/full
  run "full cache (python)" 90 full_cache "unpacked from .xfer/full" -- \
    python3 "$root/scripts/unpack_gpu_data.py" packed "$root/.xfer/full" "$full_cache" || full_cache=""
fi
bench_args=${PNEUMO_BENCH_ARGS:---batch 32 256 --steps 200 --layers}
runs_ok=0
[[ ${SKIP_RUNS:-0} != 1 && -x $cli_bin ]] && runs_ok=1


# PyTorch with CUDA on this host (its sections are skipped without it).
# The probe's output (torch's version, or why it cannot run) is kept: a broken import would
# otherwise skip every PyTorch section with no reason.
torch_ok=0
if [[ ${SKIP_TORCH:-0} != 1 && ${SKIP_RUNS:-0} != 1 ]]; then
  if python3 -c "import torch; assert torch.cuda.is_available(), 'torch.cuda.is_available() is False'; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'cuDNN', torch.backends.cudnn.version())" \
      > "$out/logs/torch_probe.log" 2>&1; then
    torch_ok=1
  elif [[ $device == cuda ]]; then
    record "torch probe" FAIL 0 logs/torch_probe.log "python3 cannot run torch on the GPU: every PyTorch section is skipped"
  else
    record "torch probe" SKIP 0 logs/torch_probe.log "no CUDA torch here (a dry run): every PyTorch section is skipped"
  fi
fi

# Every section below is a function; GPU_CHECK_ORDER (names, in order) says which run and when.
# The default runs them all, most telling first; a short budget cuts from the end.

# ---- 6. The step's speed: plain, bf16, fused block tails, CUDA graphs -----------------------------------
# Each also times the recipe end to end (12 epochs + validation, random images, a new backend: its
# "measure": "recipe" line).
sec_bench_main() {
  if (( ! runs_ok )); then
    skip "bench train" "SKIP_RUNS=1 or no pneumo binary"
    return
  fi
  # shellcheck disable=SC2086  # the *_ARGS variables are lists of words on purpose
  run "bench train" 120 bench_train "the recipe end to end; whole step, device-resident random images" -- \
    "$cli_bin" bench train --device "$device" $bench_args
  # --precision bf16: tensor-core convolutions and dense GEMMs; --layers shows the conversions.
  # shellcheck disable=SC2086
  run "bench train (bf16)" 120 bench_train_bf16 "--precision bf16: recipe end to end and the step" -- \
    "$cli_bin" bench train --device "$device" --precision bf16 $bench_args
}
sec_bench_fused() {
  (( runs_ok )) || return
  # Each block's dropout -> batch-norm -> max pool as one fused op (kernels/batchnorm.cu): it
  # becomes the default only if this is faster (and bench kernels' tail rows say where).
  # shellcheck disable=SC2086
  run "bench train (fused block tails)" 120 bench_train_fused_tails \
    "--fused-block-tails: recipe end to end and the step" -- \
    "$cli_bin" bench train --device "$device" --fused-block-tails $bench_args
  # The epochs' full-batch steps recorded once as a CUDA graph and replayed (--cuda-graph),
  # validation at batch 256 (--val-batch); "step_graphs" in its JSON says how many steps
  # replayed, or why none did.
  # shellcheck disable=SC2086
  run "bench train (CUDA graphs)" 120 bench_train_graphs \
    "--cuda-graph --val-batch 256: recipe end to end and the epoch" -- \
    "$cli_bin" bench train --device "$device" --cuda-graph --val-batch 256 $bench_args
  # Every speed option at once (bf16, fused tails, graphs, validation at 256): the fastest
  # pneumo a user can ask for today, beside the PyTorch rows. Since 2026-12-05 bf16 with fused
  # tails keeps blocks 2-5 in bfloat16 channels-last (ModelConfig::bf16_activations).
  # shellcheck disable=SC2086
  run "bench train (bf16, fused tails, CUDA graphs)" 120 bench_train_all_options \
    "--precision bf16 --fused-block-tails --cuda-graph --val-batch 256" -- \
    "$cli_bin" bench train --device "$device" --precision bf16 --fused-block-tails --cuda-graph \
    --val-batch 256 $bench_args
}

# ---- 7. Our kernels against cuDNN ----------------------------------------------------------------------
# Each variant validated before it is timed (profiling/README.md); the table is the log, every row
# also in bench_kernels.jsonl / .csv.
sec_kernels() {
  if (( runs_ok )); then
    # shellcheck disable=SC2086
    run "bench kernels" 180 bench_kernels "our kernels vs cuDNN, every op family (conv, pool, batch-norm, loss, augment, bf16, tails, dense), batch 32 and 256" -- \
      "$cli_bin" bench kernels --device "$device" --json "$out/bench_kernels.jsonl" \
      --csv "$out/bench_kernels.csv" ${PNEUMO_BENCH_KERNELS_ARGS:-}
  fi
}

# ---- 8. compute-sanitizer: a short training (the sample, one epoch), then the CUDA tests ---------------
sec_sanitizers() {
  sanitizer=$(command -v compute-sanitizer || true)
  for candidate in "$(dirname "$(command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)")/compute-sanitizer" \
                   /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
    [[ -z $sanitizer && -x $candidate ]] && sanitizer=$candidate
  done
  if [[ ${SKIP_SANITIZERS:-0} == 1 ]]; then
    skip "compute-sanitizer" "SKIP_SANITIZERS=1"
  elif [[ -z $sanitizer ]]; then
    skip "compute-sanitizer" "compute-sanitizer not found"
  else
    if [[ -x $cli_bin && -f $sample_cache/meta.json ]]; then
      rm -rf "$build-data/sanitized_run"  # a second run on the same build folder starts afresh
      run "sanitizer memcheck (training)" 120 sanitizer_train "1 epoch on data/sample, batch 8" -- \
        "$sanitizer" --tool memcheck --error-exitcode 86 --print-limit 50 "$cli_bin" train \
        --data "$sample_cache" --device "$device" --epochs 1 --batch 8 --out "$build-data/sanitized_run"
    fi
    if [[ -x $test_bin ]]; then
      # memcheck/initcheck watch every kernel (a bad argument of ours faults inside cuDNN's);
      # racecheck and synccheck only ours (shared memory and barriers inside the libraries are not
      # ours to fix). Most telling first: the budget cuts the last ones if time runs short.
      tolerate_test_failures=1
      for spec in "memcheck:120:" "racecheck:90:--kernel-name kns=pneumo" \
                  "synccheck:45:--kernel-name kns=pneumo" "initcheck:90:"; do
        IFS=: read -r tool limit extra <<< "$spec"
        # shellcheck disable=SC2086  # $extra is two words on purpose
        run "sanitizer $tool" "$limit" "sanitizer_$tool" "${extra:+our kernels only}" -- \
          "$sanitizer" --tool "$tool" --error-exitcode 86 --print-limit 50 $extra \
          "$test_bin" --gtest_filter="$sanitizer_filter"
      done
      tolerate_test_failures=0
    else
      skip "compute-sanitizer (tests)" "no test binary"
    fi
  fi
}

# ---- 9. The same network in PyTorch on the same GPU, uncompiled: fp32 (the weakest a user runs), bf16 ----
sec_torch_eager() {
  if (( ! torch_ok )); then
    skip "torch reference" "SKIP_TORCH=1, SKIP_RUNS=1 or python3 has no CUDA-enabled torch"
    return
  fi
  # fp32 (the issue's "3x eager" anchor) and channels_last + bf16 autocast, uncompiled.
  run "torch reference (eager, eager-bf16)" 120 torch_eager "profiling/torch_reference.py" -- \
    python3 "$root/profiling/torch_reference.py" --batch 32 256 --steps 200 --configs eager,eager-bf16
}

# ---- 10. Real data: the recipe trained on the full dataset, evaluated on test -----------------------------
sec_train_real() {
  if [[ ${SKIP_RUNS:-0} == 1 ]]; then
    skip "train (recipe)" "SKIP_RUNS=1"
  elif [[ ! -x $cli_bin ]]; then
    skip "train (recipe)" "no pneumo binary"
  elif [[ -z $full_cache ]]; then
    skip "train (recipe)" "no full cache (carry .xfer from scripts/pack_gpu_data.py, or set PNEUMO_CACHE)"
  else
    # shellcheck disable=SC2086
    run "train (recipe)" 240 train "${PNEUMO_TRAIN_ARGS:-the seed recipe, 12 epochs}" -- "$cli_bin" train \
      --data "$full_cache" --device "$device" --out "$out/run" ${PNEUMO_TRAIN_ARGS:-}
    grep -E "^epoch [0-9]+/[0-9]+  train|reduc|model:" "$out/logs/train.log" > "$out/train_epochs.txt" 2>/dev/null
    if [[ -f $out/run/model.safetensors ]]; then
      run "evaluate (test)" 60 evaluate "test split, threshold stored with the model" -- "$cli_bin" evaluate \
        --model "$out/run/model.safetensors" --data "$full_cache" --split test --device "$device" \
        --json "$out/run/test_metrics.json"
    fi
    # The same recipe with --precision bf16 (convolutions on tensor cores): its validation metrics
    # (run_bf16/metrics_val.json) beside the fp32 run's; test is not read for it here.
    # shellcheck disable=SC2086
    run "train (recipe, bf16)" 240 train_bf16 "--precision bf16, validation only" -- "$cli_bin" train \
      --data "$full_cache" --device "$device" --precision bf16 --out "$out/run_bf16" ${PNEUMO_TRAIN_ARGS:-}
    # And with --fused-block-tails (the same model through the fused tail and stem kernels): its
    # validation metrics and epoch times (run_fused/) beside the unfused run's; test not read.
    # shellcheck disable=SC2086
    run "train (recipe, fused block tails)" 240 train_fused "--fused-block-tails, validation only" -- \
      "$cli_bin" train --data "$full_cache" --device "$device" --fused-block-tails true \
      --out "$out/run_fused" ${PNEUMO_TRAIN_ARGS:-}
  fi
}

# ---- 11. PyTorch as a user who cares about speed runs it, and where its step spends its time -------------
sec_torch_compile() {
  if (( torch_ok )); then
    if [[ ${SKIP_TORCH_COMPILE:-0} == 1 ]]; then
      skip "torch reference (compile)" "SKIP_TORCH_COMPILE=1"
    else
      # channels_last + bf16 autocast, compiled; its first step (first_step_s) holds the
      # compilation. max-autotune comes later, on its own clock.
      run "torch reference (compile-bf16)" 150 torch_compile_bf16 "channels_last + bf16 autocast, torch.compile" -- \
        python3 "$root/profiling/torch_reference.py" --batch 32 256 --steps 100 --configs compile-bf16
      # The same with CUDA graphs (mode reduce-overhead): compiled PyTorch without its host
      # overhead, the fair anchor at batch 32 (max-autotune's graphs come last, in torch_more).
      run "torch reference (compile-graphs-bf16)" 150 torch_compile_graphs_bf16 \
        "channels_last + bf16 autocast, torch.compile mode reduce-overhead (CUDA graphs)" -- \
        python3 "$root/profiling/torch_reference.py" --batch 32 256 --steps 100 --configs compile-graphs-bf16
      # The recipe end to end, as bench train's recipe line times pneumo's: a new process and an
      # empty compile cache each, so that the compilation is inside the clock as pneumo's cold
      # start is inside its own. (TRITON_CACHE_DIR, when the host sets it, would keep Triton's
      # kernels warm outside TORCHINDUCTOR_CACHE_DIR.) The compiled one compiles three static graphs
      # (training at 32 and at the last partial batch, validation at 32: its last batch padded,
      # as pneumo pads it), hence its longer limit.
      # Then the compiled one again in a new process on the same compile cache: the warm start a
      # user's second run gets, beside pneumo's recipe on a warm tuning cache (each line says
      # which: "compile_cache", "tuning_cache").
      for config in eager compile-bf16 compile-bf16-warm; do
        limit=120 temperature=cold
        case $config in
          eager) compile_cache=$(mktemp -d) ;;
          compile-bf16) compile_cache=$(mktemp -d) limit=240 ;;
          *-warm) temperature=warm ;;  # the folder the cold run before it filled
        esac
        run "torch recipe (${config%-warm}, $temperature)" "$limit" "torch_recipe_$config" \
          "12 epochs + validation, batch 32, $temperature" -- \
          env -u TRITON_CACHE_DIR TORCHINDUCTOR_CACHE_DIR="$compile_cache" \
          python3 "$root/profiling/torch_reference.py" \
          --batch 32 --configs "${config%-warm}" --recipe-epochs 12 --recipe-only
      done
    fi
    # Where PyTorch's step spends its device time, op by op and kernel by kernel, to set beside
    # bench train's per-op table (tables in the report, rows in torch_profile.jsonl).
    run "torch profile (eager)" 60 torch_profile "torch.profiler, 20 steps per batch size" -- \
      python3 "$root/profiling/torch_reference.py" --batch 32 256 --steps 20 --profile
    grep '^{' "$out/logs/torch_profile.log" > "$out/torch_profile.jsonl" 2> /dev/null
  fi
}

# ---- 12. The first epoch's overhead with a cold and then a warm tuning cache (the same new file) -------
sec_cache_pair() {
  (( runs_ok )) || return
  for temperature in cold warm; do
    run "recipe, $temperature tuning cache" 90 "bench_recipe_$temperature" \
      "12 epochs + validation, batch 32, $temperature cache" -- \
      "$cli_bin" bench train --device "$device" --batch 32 --steps 1 --warmup 0 \
      --recipe-epochs 12 --tuning-cache "$out/tuning_recipe.json"
  done
  # The H200's warm first epoch was still 35% over a steady one (2026-12-04). CUDA loads each
  # kernel at its first launch by default (lazy loading); loading every module at start-up
  # moves that cost into the set-up time, so this run says how much of the 35% it is.
  run "recipe, warm tuning cache, eager module loading" 90 bench_recipe_warm_eager \
    "CUDA_MODULE_LOADING=EAGER" -- \
    env CUDA_MODULE_LOADING=EAGER "$cli_bin" bench train --device "$device" --batch 32 --steps 1 \
    --warmup 0 --recipe-epochs 12 --tuning-cache "$out/tuning_recipe.json"
  # And op by op: the first two epochs synchronised at every op, each op's time in both, so the
  # rest of the overhead has names (slower epochs: read the difference, not the seconds).
  run "recipe, warm tuning cache, first calls op by op" 90 bench_recipe_first_calls \
    "--first-calls, 2 epochs" -- \
    "$cli_bin" bench train --device "$device" --batch 32 --steps 1 --warmup 0 --recipe-epochs 2 \
    --first-calls --tuning-cache "$out/tuning_recipe.json"
  # Without the epoch's last, partial batch (26 images at batch 32): if new batch shapes are what
  # the warm first epoch pays for, this run's overhead is at most half the plain warm run's.
  run "recipe, warm tuning cache, --drop-last" 90 bench_recipe_warm_drop_last \
    "no partial batch: every step at batch 32" -- \
    "$cli_bin" bench train --device "$device" --batch 32 --steps 1 --warmup 0 --recipe-epochs 12 \
    --drop-last --tuning-cache "$out/tuning_recipe.json"
}

# ---- 13. More configurations of bench train: no augmentation, cuDNN only, fastest, TF32 ---------------
# shellcheck disable=SC2086  # $bench_args is a list of words on purpose
sec_bench_extras() {
  (( runs_ok )) || return
  run "bench train (no augment)" 60 bench_train_plain "as PyTorch's reference: no augmentation" -- \
    "$cli_bin" bench train --device "$device" --augment false --recipe-epochs 0 $bench_args
  # The same with cuDNN for every op where the backend would time a kernel of its own against
  # it: the before/after of those choices on this card.
  run "bench train (cuDNN only)" 60 bench_train_cudnn_only "--cudnn-only, no augmentation" -- \
    "$cli_bin" bench train --device "$device" --augment false --recipe-epochs 0 --cudnn-only $bench_args
  if [[ ${SKIP_BENCH_EXTRAS:-0} == 1 ]]; then
    skip "bench train (fastest, tf32)" "SKIP_BENCH_EXTRAS=1"
  else
    run "bench train (fastest algorithms)" 60 bench_train_fastest "--deterministic false, no augmentation" -- \
      "$cli_bin" bench train --device "$device" --augment false --recipe-epochs 0 --deterministic false $bench_args
    run "bench train (tf32)" 60 bench_train_tf32 "--precision tf32, no augmentation" -- \
      "$cli_bin" bench train --device "$device" --augment false --recipe-epochs 0 --precision tf32 $bench_args
    # cuDNN's graph-API engines (off by default: no gain in fp32 on an H100) where TF32 opens
    # many more of them.
    run "bench train (tf32, graph engines)" 60 bench_train_tf32_graph "--graph-engines" -- \
      "$cli_bin" bench train --device "$device" --augment false --recipe-epochs 0 --precision tf32 \
      --graph-engines $bench_args
  fi
}

# ---- 14. The other PyTorch configurations: max-autotune with CUDA graphs, compiled fp32, TF32 ----------
sec_torch_more() {
  (( torch_ok )) || return
  if [[ ${SKIP_TORCH_COMPILE:-0} != 1 ]]; then
    # One process per batch: each compiles cold with autotuning, and a limit that stops one
    # keeps the other's line.
    for max_batch in 32 256; do
      run "torch reference (compile-max-bf16, batch $max_batch)" 180 "torch_compile_max_$max_batch" \
        "max-autotune + CUDA graphs, channels_last + bf16" -- \
        python3 "$root/profiling/torch_reference.py" --batch "$max_batch" --steps 100 \
        --configs compile-max-bf16
    done
    run "torch reference (compile fp32)" 150 torch_compile_more "torch.compile without bf16" -- \
      python3 "$root/profiling/torch_reference.py" --batch 32 256 --steps 100 --configs compile
  fi
  run "torch reference (eager, tf32)" 60 torch_eager_tf32 "--tf32" -- \
    python3 "$root/profiling/torch_reference.py" --batch 32 256 --steps 200 --tf32
}

# ---- 15. NCCL: one rank ------------------------------------------------------------------------------
# The data-parallel code path on one GPU: one rank, gradients through NCCL. (No MPI on the GPU
# host: the group of one bootstraps NCCL itself. Several GPUs: not here.) NCCL_DEBUG=INFO puts
# NCCL's own start-up lines in the log (proof it ran, and the reason if it cannot start); the
# same training without NCCL must end with the same weights (one rank's sum is its own buffer).
sec_nccl() {
  if (( runs_ok )) && [[ -f $sample_cache/meta.json ]]; then
    rm -rf "$build-data/nccl_run" "$build-data/nccl_reference_run"
    [[ -n $nccl_root ]] && export LD_LIBRARY_PATH=$nccl_root/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    nccl_args=(--data "$sample_cache" --device "$device" --epochs 2 --batch 16)
    if run "train, one rank through NCCL" 90 nccl_train "2 epochs on data/sample, --all-reduce nccl" -- \
        env NCCL_DEBUG=INFO "$cli_bin" train "${nccl_args[@]}" --all-reduce nccl \
        --out "$build-data/nccl_run" &&
      run "train, the same without NCCL" 60 nccl_reference "--all-reduce auto (one process)" -- \
        "$cli_bin" train "${nccl_args[@]}" --out "$build-data/nccl_reference_run"; then
      run "NCCL weights = one process's" 30 nccl_compare "compare_weights.py, tolerance 1e-6" -- \
        python3 "$root/scripts/compare_weights.py" "$build-data/nccl_run/model.safetensors" \
        "$build-data/nccl_reference_run/model.safetensors" --tolerance 1e-6
    fi
  fi
}

# ---- 16. The generalisation sweep: scripts/experiments.py over a plan of configurations x seeds -------
# Each run scored on its validation split and the stress variants, the plan's rule picks one, and the
# test split is read once for it and the baseline (each seed and their ensemble). On by default on a
# GPU (the plan waiting for one: configs/experiments/keras-order-150-gpu.json); EXPERIMENTS_PLAN=""
# skips it, and a CPU dry run does it only when EXPERIMENTS_PLAN names a plan. The runs live in
# $build-data/experiments/PLAN, which a warm machine keeps between calls (as it keeps the build), so a
# second call continues a cut sweep where it stopped; the tables and every run's scores (not its
# checkpoints) are copied into the report's folder, also when the sweep was cut.
sec_sweep() {
  local default_plan="" default_jobs=1
  [[ $device == cuda ]] && default_plan=$root/configs/experiments/keras-order-150-gpu.json &&
    default_jobs=4  # the H200 trained the bf16 plan's 10 runs four at a time in 90 s
  plan=${EXPERIMENTS_PLAN-$default_plan}
  # A plan whose test split the repository records as read (docs/experiments/*/test.lock, by its
  # sha256) is not swept again: its test split is read once, and a fresh machine has lost the
  # folder whose own lock would say so.
  local read_lock=""
  [[ -n $plan && -f $plan ]] &&
    read_lock=$(grep -l "^plan sha256 $(sha256sum "$plan" | cut -d' ' -f1)" \
      "$root"/docs/experiments/*/test.lock 2>/dev/null | head -1)
  local runs
  runs=$build-data/experiments/$(basename "$plan" .json)  # one folder a plan: another is refused in it
  local sweep=(python3 "$root/scripts/experiments.py" "$plan" --pneumo "$cli_bin" --data "$full_cache"
               --out "$runs")
  if [[ ${SKIP_RUNS:-0} == 1 ]]; then
    skip "generalisation sweep" "SKIP_RUNS=1"
  elif [[ -z $plan ]]; then
    skip "generalisation sweep" "EXPERIMENTS_PLAN empty (or a CPU dry run)"
  elif [[ -n $read_lock ]]; then
    skip "generalisation sweep" "its test split was read already (${read_lock#"$root"/}); name another plan"
  elif [[ ! -x $cli_bin || -z $full_cache ]]; then
    skip "generalisation sweep" "no pneumo binary or no full cache"
  elif [[ -f $runs/test.lock || -f $runs/test.md ]]; then
    # An earlier call on this warm machine read its test split: experiments.py refuses to train
    # a closed sweep, and its files are returned as that call left them.
    skip "generalisation sweep" "closed: an earlier call on this machine read its test split (its test.lock or test.md)"
    copy_sweep_files "$runs"
  else
    run "generalisation sweep" 420 experiments "$(basename "$plan"): train + validation + stress" -- \
      "${sweep[@]}" --jobs "${EXPERIMENTS_JOBS:-$default_jobs}"
    sweep_rc=$?
    local swept=${results[-1]} copy=0  # PASS, FAIL, CUT, TIMEOUT, or SKIP (no budget left)
    local test_step="generalisation sweep (test, once)"
    # The test split is read only after a sweep that finished (a failed or cut one may lack runs),
    # once: experiments.py writes its lock before the first read, so a read the budget cut could
    # never be completed, and one an earlier call on this warm machine made is not made again.
    if [[ $swept == SKIP ]]; then
      skip "$test_step" "the sweep did not run (time budget); test split not read"
    elif (( sweep_rc != 0 )); then
      skip "$test_step" "the sweep step ended $swept; test split not read"
      # The table of the runs that finished (it trains nothing; it names the seeds missing). Not
      # when the plan was refused: the folder's tables would be another plan's.
      [[ -f $runs/plan.json ]] &&
        timeout "$(within_budget 60)" "${sweep[@]}" --table >> "$out/logs/experiments.log" 2>&1 &&
        copy=1
    elif (( $(remaining) - 15 < 60 )); then
      skip "$test_step" "under 60 s of the budget left; a later call on this machine reads it"
      copy=1
    else
      run "$test_step" 120 experiments_test "picked config and baseline" -- "${sweep[@]}" --test
      copy=1
    fi
    (( copy )) && copy_sweep_files "$runs"
  fi
}

# The sweep folder's files, checkpoints left out, into the report's experiments/.
copy_sweep_files() {
  [[ -d $1 ]] || return 0
  mkdir -p "$out/experiments"
  tar cf - "${archive_excludes[@]}" -C "$1" . |
    tar xf - -C "$out/experiments" || notes[-1]+=" (the sweep's files not copied)"
}

# ---- 17. The recipe over more seeds: the run-to-run spread of its validation and test metrics ---------
# Seed 1 is the run of the train_real section, which must run first.
sec_seeds() {
  seeds=${PNEUMO_SEEDS-2 3 4 5}
  if [[ -n $seeds && -x $cli_bin && -n $full_cache && -f $out/run/model.safetensors ]]; then
    seed_runs=("$out/run")
    for seed in $seeds; do
      # shellcheck disable=SC2086
      run "train (seed $seed)" 60 "train_seed$seed" "the recipe with --seed $seed" -- "$cli_bin" train \
        --data "$full_cache" --device "$device" --seed "$seed" --out "$out/seeds/$seed" ${PNEUMO_TRAIN_ARGS:-} ||
        continue
      run "evaluate (seed $seed)" 30 "evaluate_seed$seed" "test split" -- "$cli_bin" evaluate \
        --model "$out/seeds/$seed/model.safetensors" --data "$full_cache" --split test --device "$device" \
        --json "$out/seeds/$seed/test_metrics.json" && seed_runs+=("$out/seeds/$seed")
    done
    python3 "$root/scripts/summarize_runs.py" "${seed_runs[@]}" > "$out/seeds.md" 2>&1
  fi
}

# ---- 18. Nsight Compute: profiling/README.md's two commands, their details pages kept as text ------
# --clock-control none: the lent hosts' clocks are left as they are (ncu locks them by default).
# ncu_capture NAME LABEL NOTE COUNT KERNELS -- PNEUMO_ARGS...: the first COUNT launches of the
# kernels whose names match KERNELS (a regex) in one pneumo run, --set full, kept as
# logs/NAME_details.log (the report itself is deleted at the end of the section).
ncu_capture() {
  local name=$1 label=$2 note=$3 count=$4 kernels=$5
  shift 6
  run "$label" 150 "$name" "$note" -- \
    ncu --clock-control none --set full --import-source yes --kernel-name-base demangled \
    -k regex:"$kernels" -c "$count" -o "$out/$name" -f "$cli_bin" "$@" &&
    timeout "$(within_budget 60)" ncu --import "$out/$name.ncu-rep" --page details \
      > "$out/logs/${name}_details.log" 2>&1
}
sec_ncu() {
  if [[ ${SKIP_NCU:-0} == 1 || ${SKIP_RUNS:-0} == 1 ]]; then
    skip "ncu" "SKIP_NCU=1 or SKIP_RUNS=1"
  elif ! command -v ncu > /dev/null; then
    skip "ncu" "ncu not on PATH"
  elif [[ -x $cli_bin ]]; then
    local at_256=(--device "$device" --batches 256 --repeats 1 --warmup 0)
    # Block 1's batch-norm kernels at batch 256 (ours: the checked run and one timed run of the
    # forward's statistics and normalise passes, the backward's sums and dx): whether they reach
    # the DRAM bandwidth profiling/README.md predicts for them, and if not, what holds them.
    ncu_capture ncu_batchnorm "ncu: batch-norm kernels" "block 1's batch-norm kernels, batch 256" 8 \
      "moments_partial|apply_kernel|gradient_partial|input_gradient" -- \
      bench kernels --ops batchnorm "${at_256[@]}"
    # The fused tails' and the stem's kernels at batch 256: what holds them if their rows still
    # trail the unfused chain (profiling/README.md's prediction for them).
    ncu_capture ncu_tail "ncu: fused tail kernels" "tails and stem, batch 256" 8 \
      "tail_pool|tail_gradient_partial|tail_input_gradient|stem_weight_partial" -- \
      bench kernels --ops tail "${at_256[@]}"
    ncu_capture ncu_conv3x3 "ncu: conv3x3 kernels" "our conv kernels, batch 256" 4 conv3x3 -- \
      bench kernels --ops conv "${at_256[@]}"
    ncu_capture ncu_step "ncu: pneumo kernels in train steps" "augment, dropout, loss, RMSprop, ..." \
      20 "pneumo::" -- bench train --device "$device" --batch 32 --steps 5 --warmup 2 \
      --epoch-images 64 --recipe-epochs 0
    rm -f "$out"/*.ncu-rep  # tens of MB; the details pages above hold what is read from them
  fi
}

# The table of pneumo against PyTorch: every speed row, and the recipe lines of PyTorch's recipe
# runs and of pneumo's cold and warm tuning-cache pair (those logs' one-step rows are not speeds);
# each recipe line says how warm its start was, and the table labels its seconds so. The pair's
# lines carry the log they came from ("log"), so that check_predictions.py tells them from bench
# train's own recipe, which the issue's aims read (three plain fp32 recipes matched one aim).
collect_throughput() {
  {
    cat "$out"/logs/bench_train*.log "$out"/logs/torch_eager*.log "$out"/logs/torch_compile*.log \
      2> /dev/null | grep '^{'
    cat "$out"/logs/torch_recipe*.log 2> /dev/null | grep '^{' | grep -E '"measure": ?"recipe"'
    local pair
    for pair in bench_recipe_cold.log bench_recipe_warm.log; do
      grep '^{' "$out/logs/$pair" 2> /dev/null | grep -E '"measure": ?"recipe"' |
        sed "s/^{/{\"log\": \"$pair\", /"
    done
  } > "$out/throughput.jsonl"
}

# ---- The sections, in order --------------------------------------------------------------------------------
# Issue #15's report first, in the order of its "Done when": the recipe end to end in fp32 and bf16
# with the step's speed (bench_main), the first epoch on a warm tuning cache (cache_pair), PyTorch
# eager fp32 and bf16 beside them (torch_eager), the default precision's 5-seed accuracy
# (train_real, seeds), compiled PyTorch (torch_compile); then the sanitizers (the kernels added
# since the last GPU run have yet to meet them), the other speed options, the kernel rows, and the
# rest. A 555 s first call reaches about torch_compile (2026-12-04's H200 timings); a second call
# on the warm machine names the sections the first did not finish. Until 2026-12-08 the kernel
# rows and the generalisation sweep (15 fp32 runs, about 3 minutes) came second and third, where
# the issue's own measurements would not have fitted in a first call.
default_order="bench_main cache_pair torch_eager train_real seeds torch_compile sanitizers"
default_order+=" bench_fused kernels torch_more sweep nccl bench_extras ncu"
order=${GPU_CHECK_ORDER:-$default_order}
for section in $order; do
  if [[ " $default_order " != *" $section "* ]]; then
    record "GPU_CHECK_ORDER" FAIL 0 "" "no section '$section' (sections: $default_order)"
    continue
  fi
  "sec_$section"
  collect_throughput
  write_report  # and publish: what a stopped call returns
done
collect_throughput
write_report

# The GPU host returns at most 8 files: the report and the key results (published into $OUT after
# every section), and one archive of the rest (checkpoints left out for size), made last.
if [[ -n $returned ]]; then
  tar czf "$returned/.gpu_check_files.tar.gz.tmp" "${archive_excludes[@]}" -C "$out" . &&
    mv "$returned/.gpu_check_files.tar.gz.tmp" "$returned/gpu_check_files.tar.gz"
  rm -f "$returned/.gpu_check_files.tar.gz.tmp"
  report=$returned/gpu_check_report.md
fi
echo "gpu_check: report at $report ($(( $(date +%s) - started )) s)"
exit $any_failed
