// Hand-written 2x2 / stride-2 'same' max pooling, forward and backward, with launchers: the twin
// of the cuDNN path (same padding convention: one padding row/column on the TOP/LEFT of an odd
// axis, never winning the max), with the interface's tie rule made explicit: the first maximum in
// row-major order within the window takes the gradient. CudaBackend times it against cuDNN on
// each shape's first call and runs the faster; tests and benchmarks check both. Also the global
// average pooling of the optional GAP head (per-plane math in kernels/elementwise.hpp).
#include "cuda_check.hpp"
#include "kernel_util.cuh"
#include "elementwise.hpp"
#include "kernels.hpp"
#include "pneumo/op_geometry.hpp"
#include "pool_window.hpp"

namespace pneumo::kernels {
namespace {

using pneumo::PoolGeometry;

// The geometry is the contract's (pneumo/op_geometry.hpp), shared with the checks, the CPU twin
// and the bench reference; the kernels index one plane at a time, so batch and channels are 1.
PoolGeometry plane_geometry(int64_t height, int64_t width) { return {1, 1, height, width}; }

// Output cell `cell` of a plane: its window (pool_window.hpp), the cell's row and column by a
// 32-bit division (div_index: three 64-bit divisions of a flat index per cell held these kernels
// to about 53-56% of an H200's DRAM bandwidth, 2026-12-04).
__device__ __forceinline__ PoolWindow cell_window(const PoolGeometry& g, int64_t cell) {
  const int64_t oy = div_index(cell, g.out_width());
  return pool_window(g, oy, cell - oy * g.out_width());
}

// The window's first maximum (window_first_max, the tie rule the fused tail shares).
__device__ __forceinline__ WindowWinner cell_max(const float* plane, const PoolWindow& w) {
  return window_first_max(w, [&](int p) { return plane[w.offset(p)]; });
}

// Output planes walked as map_planes walks them (plane_grid over the pooled cells): a thread's
// four cells' windows are read before any result is stored.
__global__ void maxpool2d_forward_kernel(const float* x, float* y, int64_t planes, PoolGeometry g) {
  const int64_t in_plane = g.height * g.width, out_plane = g.out_height() * g.out_width();
  auto pooled = [&](int64_t plane, int64_t i) {
    return cell_max(x + plane * in_plane, cell_window(g, i - plane * out_plane)).value;
  };
  for_each_plane_by_four(
      grid_place(), planes, out_plane,
      [&](int64_t plane, int64_t i, int64_t stride) {
        Four<float> r;
        for (int k = 0; k < 4; ++k) r.v[k] = pooled(plane, i + k * stride);
        store_four(y, i, stride, r);
      },
      [&](int64_t plane, int64_t i) { y[i] = pooled(plane, i); });
}

// Each output cell writes its whole window of dx: dy at the winner, 0 elsewhere (windows tile
// the input, so every element is written once). A thread's four cells' winners and dy are read
// before it writes.
__global__ void maxpool2d_backward_kernel(const float* x, const float* dy, float* dx,
                                          int64_t planes, PoolGeometry g) {
  const int64_t in_plane = g.height * g.width, out_plane = g.out_height() * g.out_width();
  auto winner = [&](int64_t plane, int64_t i) {
    return cell_max(x + plane * in_plane, cell_window(g, i - plane * out_plane)).position;
  };
  auto write_window = [&](int64_t plane, int64_t i, int won, float gradient) {
    const PoolWindow w = cell_window(g, i - plane * out_plane);
    float* out = dx + plane * in_plane;
    for_each_real_position(w, [&](int p) { out[w.offset(p)] = p == won ? gradient : 0.0f; });
  };
  for_each_plane_by_four(
      grid_place(), planes, out_plane,
      [&](int64_t plane, int64_t i, int64_t stride) {
        int won[4];
        const Four<float> gradient = load_four(dy, i, stride);
        for (int k = 0; k < 4; ++k) won[k] = winner(plane, i + k * stride);
        for (int k = 0; k < 4; ++k) write_window(plane, i + k * stride, won[k], gradient.v[k]);
      },
      [&](int64_t plane, int64_t i) { write_window(plane, i, winner(plane, i), dy[i]); });
}

// One thread per plane: the plane is small (the last block's 5x5), and a sequential sum in the
// shared plane_mean keeps the CPU twin's result bit for bit.
__global__ void global_avgpool_forward_kernel(const float* x, float* y, int64_t planes,
                                              int64_t count) {
  for (int64_t p = global_thread_index(); p < planes; p += grid_stride())
    y[p] = plane_mean(x + p * count, count);
}

__global__ void global_avgpool_backward_kernel(const float* dy, float* dx, int64_t total,
                                               int64_t count) {
  for (int64_t i = global_thread_index(); i < total; i += grid_stride())
    dx[i] = plane_mean_gradient(dy[i / count], count);
}

}  // namespace

void global_avgpool_forward(const float* x, float* y, int64_t planes, int64_t count,
                            cudaStream_t stream) {
  if (planes == 0 || count == 0) return;
  global_avgpool_forward_kernel<<<blocks_for(planes), kThreadsPerBlock, 0, stream>>>(x, y, planes,
                                                                                   count);
  PNEUMO_LAUNCH_CHECK("global_avgpool_forward_kernel", "planes=", planes, " count=", count);
}

void global_avgpool_backward(const float* dy, float* dx, int64_t planes, int64_t count,
                             cudaStream_t stream) {
  const int64_t total = planes * count;
  if (total == 0) return;
  global_avgpool_backward_kernel<<<blocks_for(total), kThreadsPerBlock, 0, stream>>>(dy, dx, total,
                                                                                   count);
  PNEUMO_LAUNCH_CHECK("global_avgpool_backward_kernel", "planes=", planes, " count=", count);
}

void maxpool2d_forward(const float* x, float* y, int64_t planes, int64_t height, int64_t width,
                       cudaStream_t stream) {
  const PoolGeometry g = plane_geometry(height, width);
  const int64_t total = planes * g.out_height() * g.out_width();
  if (total == 0) return;
  maxpool2d_forward_kernel<<<plane_grid(planes, g.out_height() * g.out_width()), kThreadsPerBlock,
                             0, stream>>>(x, y, planes, g);
  PNEUMO_LAUNCH_CHECK("maxpool2d_forward_kernel", "planes=", planes, " H=", height, " W=", width);
}

void maxpool2d_backward(const float* x, const float* dy, float* dx, int64_t planes, int64_t height,
                        int64_t width, cudaStream_t stream) {
  const PoolGeometry g = plane_geometry(height, width);
  const int64_t total = planes * g.out_height() * g.out_width();
  if (total == 0) return;
  maxpool2d_backward_kernel<<<plane_grid(planes, g.out_height() * g.out_width()), kThreadsPerBlock,
                              0, stream>>>(x, dy, dx, planes, g);
  PNEUMO_LAUNCH_CHECK("maxpool2d_backward_kernel", "planes=", planes, " H=", height, " W=", width);
}

}  // namespace pneumo::kernels
