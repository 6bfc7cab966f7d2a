// Device-side helpers shared by the kernels in this folder (device code only, included by .cu
// files): launch geometry for grid-stride loops with 64-bit indices, a block-wide sum, and the
// walks of per-plane and per-channel passes.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "pneumo/error.hpp"
#include "kernels.hpp"

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

// Element-wise passes over (planes, spatial) where each element needs its plane's parameters: the
// plane comes from the block (grid x walks the planes, grid y spans a plane's values), so no
// element pays for a 64-bit division.
inline dim3 plane_grid(int64_t planes, int64_t spatial) {
  const int64_t spans = (spatial + kThreadsPerBlock - 1) / kThreadsPerBlock;
  const int64_t x = std::min<int64_t>(std::max<int64_t>(planes, 1), kMaxBlocks);
  const int64_t y = std::min<int64_t>(std::max<int64_t>(spans, 1), 65535);
  return dim3(static_cast<unsigned int>(x), static_cast<unsigned int>(y));
}

// Calls visit(plane, i) for every element i = plane * spatial + s this thread owns.
template <class Visit>
__device__ __forceinline__ void for_each_plane_element(int64_t planes, int64_t spatial,
                                                       Visit&& visit) {
  for (int64_t plane = blockIdx.x; plane < planes; plane += gridDim.x)
    for (int64_t s = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x; s < spatial;
         s += static_cast<int64_t>(gridDim.y) * blockDim.x)
      visit(plane, plane * spatial + s);
}

// This thread's share of a block's walk over the values of channel `c` in images [first, last)
// of an (N, C, spatial) tensor, as flat indices. Threads walk a plane's contiguous values
// (coalesced), image by image, four of a thread's values at a time where the plane has at least
// four strides left: visit4(i, stride) owns i, i + stride, i + 2 stride and i + 3 stride, so a
// visitor that loads all four before using them keeps four loads in flight per thread (one at a
// time, the reductions moved about 1.1 TB/s on an H200, 2026-12-04); the rest of a plane goes to
// visit1(i). With fewer values per plane than threads (dense layers: one) they walk the chunk's
// (image, value) pairs instead, all through visit1, so no thread idles through whole planes.
template <class Visit4, class Visit1>
__device__ __forceinline__ void for_each_in_chunk_by_four(int64_t c, int64_t first, int64_t last,
                                                          int64_t channels, int64_t spatial,
                                                          Visit4&& visit4, Visit1&& visit1) {
  if (spatial >= blockDim.x) {
    const int64_t stride = blockDim.x;
    for (int64_t n = first; n < last; ++n) {
      const int64_t plane = (n * channels + c) * spatial;
      int64_t s = threadIdx.x;
      for (; s + 3 * stride < spatial; s += 4 * stride) visit4(plane + s, stride);
      for (; s < spatial; s += stride) visit1(plane + s);
    }
  } else {
    for (int64_t i = threadIdx.x; i < (last - first) * spatial; i += blockDim.x) {
      const int64_t n = first + i / spatial, s = i % spatial;
      visit1((n * channels + c) * spatial + s);
    }
  }
}

// The same walk, one value at a time: visit(i) for each of this thread's values, in order.
template <class Visit>
__device__ __forceinline__ void for_each_in_chunk(int64_t c, int64_t first, int64_t last,
                                                  int64_t channels, int64_t spatial,
                                                  Visit&& visit) {
  for_each_in_chunk_by_four(
      c, first, last, channels, spatial,
      [&](int64_t i, int64_t stride) {
        visit(i);
        visit(i + stride);
        visit(i + 2 * stride);
        visit(i + 3 * stride);
      },
      visit);
}

// A per-channel reduction over (N, C, spatial) split as bias_reduction says: block (c, j) takes
// channel c over the images of chunk j.
struct ChunkGeometry {
  int64_t batch, channels, spatial, images_per_chunk;
  __device__ int64_t first() const { return blockIdx.y * images_per_chunk; }
  __device__ int64_t last() const { return min(batch, first() + images_per_chunk); }
  // Calls visit(i) for every value of this block's channel and chunk that this thread owns.
  template <class Visit>
  __device__ void for_each(Visit&& visit) const {
    for_each_in_chunk(blockIdx.x, first(), last(), channels, spatial, visit);
  }
  template <class Visit4, class Visit1>
  __device__ void for_each_by_four(Visit4&& visit4, Visit1&& visit1) const {
    for_each_in_chunk_by_four(blockIdx.x, first(), last(), channels, spatial, visit4, visit1);
  }
};

// The (channels x chunks) grid of such a reduction, after checking that it fits the launch
// limits and that the chunks cover the batch.
inline dim3 chunk_grid(const char* op, const BiasReduction& r, int64_t batch, int64_t channels) {
  PNEUMO_CHECK(channels <= INT32_MAX && r.chunks <= 65535 && r.chunks * r.images_per_chunk >= batch,
               op, ": ", channels, " channels x ", r.chunks, " chunks of ", r.images_per_chunk,
               " images do not fit the grid or do not cover a batch of ", batch);
  return dim3(static_cast<unsigned int>(channels), static_cast<unsigned int>(r.chunks));
}

}  // namespace pneumo::kernels
