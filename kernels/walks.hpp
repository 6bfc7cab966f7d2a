// Which elements each CUDA thread visits in the element-wise passes and per-channel reductions of
// kernels/*.cu, written as plain functions of the thread's place in the grid so that the host can
// run them too: tests/test_kernel_walks.cpp walks every thread of a grid on the CPU and checks
// that each element is visited exactly once. kernel_util.cuh calls them with the place of the
// calling thread (grid_place()).
//
// Every walk hands a thread its values four at a time where it can, a block's width apart
// (visit4(i, stride) owns i, i + stride, i + 2 stride, i + 3 stride): a warp's loads stay
// coalesced, and a visitor that loads all four before storing anything keeps four loads in flight
// per thread instead of one. One at a time, block 1's batch-norm forward and bias gradient moved
// about 1.1 and 1.25 TB/s on an H200 where its ReLU backward (two loads per thread) moved 3.6
// (2026-12-04, batch 256, by the byte counts of profiling/README.md).
#pragma once

#include <cstdint>

#include "pneumo/hostdevice.hpp"

namespace pneumo::kernels {

constexpr int kThreadsPerBlock = 256;
// Enough blocks to fill any current GPU several times over; the walks stride over the rest, so
// sizes beyond 2^31 elements need no larger grids.
constexpr int64_t kMaxBlocks = 8192;
constexpr int64_t kMaxBlocksY = 65535;  // CUDA's limit on gridDim.y
constexpr int64_t kValuesPerThread = 4;

// A thread's place: block (block_x, block_y) of a (blocks_x, blocks_y) grid, thread `thread` of
// `threads` in its block (one-dimensional blocks).
struct GridPlace {
  int64_t block_x, block_y, blocks_x, blocks_y, thread, threads;
};

struct GridSize {
  int64_t x, y;
};

// The grid of a pass over (planes, spatial) where each element needs its plane's parameters
// (for_each_plane_by_four): grid x walks the planes, grid y spans a plane's values, four values
// per thread. A flat pass over n values is one plane of n.
PNEUMO_HD GridSize plane_grid_size(int64_t planes, int64_t spatial) {
  const int64_t span = kValuesPerThread * kThreadsPerBlock;
  const int64_t spans = (spatial + span - 1) / span;
  const int64_t x = planes < 1 ? 1 : (planes < kMaxBlocks ? planes : kMaxBlocks);
  const int64_t y = spans < 1 ? 1 : (spans < kMaxBlocksY ? spans : kMaxBlocksY);
  return {x, y};
}

// Calls visit4(plane, i, stride) or visit1(plane, i) for the elements i = plane * spatial + s
// this thread owns: block y covers spans of 4 x threads values, its threads four each, a block's
// width apart; where a span runs past the plane's end the values left go to visit1. No element
// pays for a division to find its plane.
// After each plane's values, every thread of the block calls end_plane(plane) (the planes a
// block walks are the same for all its threads, so a block-wide step may sit there).
template <class Visit4, class Visit1, class EndPlane>
PNEUMO_HD void for_each_plane_by_four(const GridPlace& p, int64_t planes, int64_t spatial,
                                      Visit4&& visit4, Visit1&& visit1, EndPlane&& end_plane) {
  const int64_t stride = p.threads, span = kValuesPerThread * p.threads;
  for (int64_t plane = p.block_x; plane < planes; plane += p.blocks_x) {
    const int64_t base = plane * spatial;
    for (int64_t s = p.block_y * span + p.thread; s < spatial; s += p.blocks_y * span) {
      if (s + 3 * stride < spatial) {
        visit4(plane, base + s, stride);
      } else {
        for (int64_t t = s; t < spatial; t += stride) visit1(plane, base + t);
      }
    }
    end_plane(plane);
  }
}
template <class Visit4, class Visit1>
PNEUMO_HD void for_each_plane_by_four(const GridPlace& p, int64_t planes, int64_t spatial,
                                      Visit4&& visit4, Visit1&& visit1) {
  for_each_plane_by_four(p, planes, spatial, visit4, visit1, [](int64_t) {});
}

// This thread's share of a block's walk over the values of channel `c` in images [first, last)
// of an (N, C, spatial) tensor, as flat indices, for the per-channel reductions (the block is
// one channel's chunk of images; see ChunkGeometry). Threads walk a plane's contiguous values
// image by image, four at a time where the plane has four strides left (visit4(i, stride)), the
// rest through visit1(i). With fewer values per plane than threads (dense layers: one) they walk
// the chunk's (image, value) pairs instead, all through visit1, so no thread idles through whole
// planes.
template <class Visit4, class Visit1>
PNEUMO_HD void for_each_in_chunk_by_four(int64_t thread, int64_t threads, int64_t c, int64_t first,
                                         int64_t last, int64_t channels, int64_t spatial,
                                         Visit4&& visit4, Visit1&& visit1) {
  if (spatial >= threads) {
    const int64_t stride = threads;
    for (int64_t n = first; n < last; ++n) {
      const int64_t plane = (n * channels + c) * spatial;
      int64_t s = thread;
      for (; s + 3 * stride < spatial; s += 4 * stride) visit4(plane + s, stride);
      for (; s < spatial; s += stride) visit1(plane + s);
    }
  } else {
    for (int64_t i = thread; i < (last - first) * spatial; i += threads) {
      const int64_t n = first + i / spatial, s = i % spatial;
      visit1((n * channels + c) * spatial + s);
    }
  }
}

}  // namespace pneumo::kernels
