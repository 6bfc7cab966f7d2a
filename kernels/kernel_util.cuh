// Device-side helpers shared by the kernels in this folder (device code only, included by .cu
// files): launch geometry for grid-stride loops with 64-bit indices, a block-wide sum, the walks
// of per-plane and per-channel passes (walks.hpp, from the calling thread's place) and the
// element-wise maps built on them.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "pneumo/error.hpp"
#include "kernels.hpp"
#include "walks.hpp"

namespace pneumo::kernels {

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

// a / b and a % b for a >= 0, b > 0, in 32 bits when both fit (every index of this model's
// tensors does: block 1 at batch 256 holds 1.8e8 values) and in 64 otherwise. A 64-bit division
// is a long emulated sequence; one per element made the pooling kernels compute-bound.
__device__ __forceinline__ int64_t div_index(int64_t a, int64_t b) {
  if (((a | b) >> 32) == 0) return static_cast<uint32_t>(a) / static_cast<uint32_t>(b);
  return a / b;
}
__device__ __forceinline__ int64_t mod_index(int64_t a, int64_t b) {
  if (((a | b) >> 32) == 0) return static_cast<uint32_t>(a) % static_cast<uint32_t>(b);
  return a % b;
}

__device__ __forceinline__ GridPlace grid_place() {
  return {blockIdx.x, blockIdx.y, gridDim.x, gridDim.y, threadIdx.x, blockDim.x};
}

// The launch grid of for_each_plane_by_four / map_planes over (planes, spatial).
inline dim3 plane_grid(int64_t planes, int64_t spatial) {
  const GridSize g = plane_grid_size(planes, spatial);
  return dim3(static_cast<unsigned int>(g.x), static_cast<unsigned int>(g.y));
}

// visit(plane, i) for every element i = plane * spatial + s this thread owns (plane_grid's
// walk), one at a time in order: for visitors that store between loads (the fused tails').
template <class Visit>
__device__ __forceinline__ void for_each_plane_element(int64_t planes, int64_t spatial,
                                                       Visit&& visit) {
  for_each_plane_by_four(
      grid_place(), planes, spatial,
      [&](int64_t plane, int64_t i, int64_t stride) {
        for (int k = 0; k < 4; ++k) visit(plane, i + k * stride);
      },
      visit);
}

// Four values a stride apart, loaded (or stored) together.
template <class T>
struct Four {
  T v[4];
};
template <class T>
__device__ __forceinline__ Four<T> load_four(const T* p, int64_t i, int64_t stride) {
  return {{p[i], p[i + stride], p[i + 2 * stride], p[i + 3 * stride]}};
}
template <class T>
__device__ __forceinline__ void store_four(T* p, int64_t i, int64_t stride, const Four<T>& f) {
  for (int k = 0; k < 4; ++k) p[i + k * stride] = f.v[k];
}

// out[i] = f(plane, a[i]) over (planes, spatial), launched on plane_grid: each thread loads its
// four values before it stores any, so out may alias a and four loads are in flight per thread.
template <class Out, class A, class F>
__device__ __forceinline__ void map_planes(Out* out, const A* a, int64_t planes, int64_t spatial,
                                           F&& f) {
  for_each_plane_by_four(
      grid_place(), planes, spatial,
      [&](int64_t plane, int64_t i, int64_t stride) {
        const Four<A> va = load_four(a, i, stride);
        Four<Out> r;
        for (int k = 0; k < 4; ++k) r.v[k] = f(plane, va.v[k]);
        store_four(out, i, stride, r);
      },
      [&](int64_t plane, int64_t i) { out[i] = f(plane, a[i]); });
}

// out[i] = f(plane, a[i], b[i]), the same way (eight loads in flight per thread); each(out[i])
// sees every value this thread wrote, in order, and end_plane(plane) follows each plane's
// (for_each_plane_by_four's hook).
template <class Out, class A, class B, class F, class Each, class EndPlane>
__device__ __forceinline__ void map_planes(Out* out, const A* a, const B* b, int64_t planes,
                                           int64_t spatial, F&& f, Each&& each,
                                           EndPlane&& end_plane) {
  for_each_plane_by_four(
      grid_place(), planes, spatial,
      [&](int64_t plane, int64_t i, int64_t stride) {
        const Four<A> va = load_four(a, i, stride);
        const Four<B> vb = load_four(b, i, stride);
        Four<Out> r;
        for (int k = 0; k < 4; ++k) r.v[k] = f(plane, va.v[k], vb.v[k]);
        store_four(out, i, stride, r);
        for (int k = 0; k < 4; ++k) each(r.v[k]);
      },
      [&](int64_t plane, int64_t i) {
        const Out r = f(plane, a[i], b[i]);
        out[i] = r;
        each(r);
      },
      end_plane);
}
template <class Out, class A, class B, class F>
__device__ __forceinline__ void map_planes(Out* out, const A* a, const B* b, int64_t planes,
                                           int64_t spatial, F&& f) {
  map_planes(out, a, b, planes, spatial, f, [](Out) {}, [](int64_t) {});
}

// map_planes with two inputs, and the sum of each plane's outputs: block (x, y) writes the sum of
// the outputs it computed in plane p to partial[p * gridDim.y + y] (each thread's in order, then
// block_sum's fixed tree: the same bits on every run). plane_sums_total adds them per channel.
template <class Out, class A, class B, class F>
__device__ __forceinline__ void map_planes_summed(Out* out, const A* a, const B* b,
                                                  int64_t planes, int64_t spatial, float* partial,
                                                  F&& f) {
  float sum = 0.0f;
  map_planes(
      out, a, b, planes, spatial, f, [&](Out r) { sum += r; },
      [&](int64_t plane) {
        const float total = block_sum(sum);
        if (threadIdx.x == 0) partial[plane * gridDim.y + blockIdx.y] = total;
        sum = 0.0f;
      });
}

// A block's walk over channel c in images [first, last) (walks.hpp's for_each_in_chunk_by_four
// for the calling thread), one value at a time: visit(i) for each of this thread's values, in
// order.
template <class Visit>
__device__ __forceinline__ void for_each_in_chunk(int64_t c, int64_t first, int64_t last,
                                                  int64_t channels, int64_t spatial,
                                                  Visit&& visit) {
  for_each_in_chunk_by_four(
      threadIdx.x, blockDim.x, c, first, last, channels, spatial,
      [&](int64_t i, int64_t stride) {
        for (int k = 0; k < 4; ++k) visit(i + k * stride);
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
    for_each_in_chunk_by_four(threadIdx.x, blockDim.x, blockIdx.x, first(), last(), channels,
                              spatial, visit4, visit1);
  }
};

// The (channels x chunks) grid of such a reduction, after checking that it fits the launch
// limits and that the chunks cover the batch with none empty (an empty last chunk would count
// a negative number of values where the partials are combined; an empty batch has one chunk).
inline dim3 chunk_grid(const char* op, const BiasReduction& r, int64_t batch, int64_t channels) {
  PNEUMO_CHECK(channels <= INT32_MAX && r.chunks >= 1 && r.chunks <= 65535 &&
                   r.chunks * r.images_per_chunk >= batch &&
                   (batch == 0 || (r.chunks - 1) * r.images_per_chunk < batch),
               op, ": ", channels, " channels x ", r.chunks, " chunks of ", r.images_per_chunk,
               " images do not fit the grid or do not cover a batch of ", batch, " exactly");
  return dim3(static_cast<unsigned int>(channels), static_cast<unsigned int>(r.chunks));
}

}  // namespace pneumo::kernels
