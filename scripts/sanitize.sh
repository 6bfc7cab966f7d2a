#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer build of pneumo, its tests and the fuzz-target
# replays (-DPNEUMO_SANITIZE=ON, g++), in its own build folder, then the whole ctest suite on it.
#   scripts/sanitize.sh                 (build folder: $ASAN_BUILD_DIR, default build-asan)
# Any sanitizer report fails the test that triggered it. CUDA sources are compiled as in the normal
# build but are not instrumented (nvcc has no ASan); CUDA tests skip on machines without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${ASAN_BUILD_DIR:-build-asan}

# -O1 -g1 for the C++ code (the usual choice for ASan): with both sanitizers, g++ compiles a test
# file 2.4 times slower at -O3 (test_callbacks.cpp: 50 s against 21 s), and -g1's line tables put
# file:line into reports for 14% more. NDEBUG as in the normal build. CUDA code keeps its flags.
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -g1 -DNDEBUG" \
  -DPNEUMO_SANITIZE=ON
cmake --build "$build" --parallel "$(nproc)"

# halt_on_error / -fno-sanitize-recover: the first report ends the process with a non-zero status.
# allocator_may_return_null: malloc, calloc and nothrow new return null for an allocation ASan
#   cannot serve, as they would without ASan (OpenBLAS and OpenCV allocate with malloc). A throwing
#   operator new still aborts with an out-of-memory report rather than throwing std::bad_alloc:
#   the sanitizer runtimes of g++ 12 and clang 14 both do that, whatever this option says.
# detect_leaks: LeakSanitizer at exit; a leak fails the test.
# check_initialization_order: static initialisers that read another file's uninitialised globals.
# protect_shadow_gap=0: lets the CUDA driver map memory where ASan would otherwise reserve it (the
#   usual advice for ASan with CUDA; not yet tried on a GPU host); the price is that a wild access
#   into that gap is no longer trapped there.
asan_defaults=halt_on_error=1:allocator_may_return_null=1:detect_leaks=1
asan_defaults+=:check_initialization_order=1:protect_shadow_gap=0
export ASAN_OPTIONS=${ASAN_OPTIONS:-$asan_defaults}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
ctest --test-dir "$build" --output-on-failure --parallel "$(nproc)" --timeout 1800
