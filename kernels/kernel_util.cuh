// Device-side helpers shared by the kernels in this folder (device code only, included by .cu
// files): launch geometry for grid-stride loops with 64-bit indices, and a block-wide sum.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace pneumo::kernels {

constexpr int kThreadsPerBlock = 256;
// Enough blocks to fill any current GPU several times over; grid-stride loops cover the rest, so
// sizes beyond 2^31 elements need no larger grids.
constexpr int64_t kMaxBlocks = 8192;

// Blocks for a grid-stride loop over n elements (n > 0; launchers return early on n == 0).
inline unsigned int blocks_for(int64_t n) {
  return static_cast<unsigned int>(
      std::min<int64_t>((n + kThreadsPerBlock - 1) / kThreadsPerBlock, kMaxBlocks));
}

__device__ __forceinline__ int64_t global_thread_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_stride() {
  return static_cast<int64_t>(blockDim.x) * gridDim.x;
}

// Sum of `value` over the block (blockDim.x == kThreadsPerBlock); the result is valid in
// thread 0. Every thread of the block must call it. Safe to call several times in a row.
__device__ __forceinline__ float block_sum(float value) {
  constexpr int kWarps = kThreadsPerBlock / 32;
  __shared__ float warp_sums[kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int offset = 16; offset > 0; offset >>= 1)
    value += __shfl_down_sync(0xffffffffu, value, offset);
  if (lane == 0) warp_sums[warp] = value;
  __syncthreads();
  float total = 0.0f;
  if (warp == 0) {
    total = lane < kWarps ? warp_sums[lane] : 0.0f;
    for (int offset = 16; offset > 0; offset >>= 1)
      total += __shfl_down_sync(0xffffffffu, total, offset);
  }
  __syncthreads();  // warp_sums is reused by the next call
  return total;
}

}  // namespace pneumo::kernels
