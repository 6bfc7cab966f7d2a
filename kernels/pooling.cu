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

namespace pneumo::kernels {
namespace {

using pneumo::PoolGeometry;

// The geometry is the contract's (pneumo/op_geometry.hpp), shared with the checks, the CPU twin
// and the bench reference; the kernels index one plane at a time, so batch and channels are 1.
PoolGeometry plane_geometry(int64_t height, int64_t width) { return {1, 1, height, width}; }

// Offset (within the plane) of the first maximum of output cell (oy, ox)'s window, scanning the
// window row by row; padded positions are skipped. Every window holds at least one real element.
__device__ __forceinline__ int64_t window_argmax(const float* plane, const PoolGeometry& g,
                                                 int64_t oy, int64_t ox) {
  int64_t best_offset = -1;
  float best = 0.0f;
  for (int dy = 0; dy < 2; ++dy) {
    const int64_t row = 2 * oy - g.pad_top() + dy;
    if (row < 0 || row >= g.height) continue;
    for (int dx = 0; dx < 2; ++dx) {
      const int64_t col = 2 * ox - g.pad_left() + dx;
      if (col < 0 || col >= g.width) continue;
      const int64_t offset = row * g.width + col;
      const float value = plane[offset];
      if (best_offset < 0 || value > best) {  // strictly greater: ties keep the first
        best = value;
        best_offset = offset;
      }
    }
  }
  return best_offset;
}

// One thread per output cell; total = planes * out_height * out_width.
__global__ void maxpool2d_forward_kernel(const float* x, float* y, int64_t total, PoolGeometry g) {
  const int64_t out_plane = g.out_height() * g.out_width();
  for (int64_t i = global_thread_index(); i < total; i += grid_stride()) {
    const int64_t p = i / out_plane, cell = i - p * out_plane;
    const float* plane = x + p * g.height * g.width;
    y[i] = plane[window_argmax(plane, g, cell / g.out_width(), cell % g.out_width())];
  }
}

// One thread per output cell writes its whole window of dx: dy at the argmax, 0 elsewhere.
__global__ void maxpool2d_backward_kernel(const float* x, const float* dy, float* dx, int64_t total,
                                          PoolGeometry g) {
  const int64_t out_plane = g.out_height() * g.out_width();
  for (int64_t i = global_thread_index(); i < total; i += grid_stride()) {
    const int64_t p = i / out_plane, cell = i - p * out_plane;
    const int64_t oy = cell / g.out_width(), ox = cell % g.out_width();
    const int64_t plane_offset = p * g.height * g.width;
    const int64_t best = window_argmax(x + plane_offset, g, oy, ox);
    for (int wy = 0; wy < 2; ++wy) {
      const int64_t row = 2 * oy - g.pad_top() + wy;
      if (row < 0 || row >= g.height) continue;
      for (int wx = 0; wx < 2; ++wx) {
        const int64_t col = 2 * ox - g.pad_left() + wx;
        if (col < 0 || col >= g.width) continue;
        const int64_t offset = row * g.width + col;
        dx[plane_offset + offset] = offset == best ? dy[i] : 0.0f;
      }
    }
  }
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
  maxpool2d_forward_kernel<<<blocks_for(total), kThreadsPerBlock, 0, stream>>>(x, y, total, g);
  PNEUMO_LAUNCH_CHECK("maxpool2d_forward_kernel", "planes=", planes, " H=", height, " W=", width);
}

void maxpool2d_backward(const float* x, const float* dy, float* dx, int64_t planes, int64_t height,
                        int64_t width, cudaStream_t stream) {
  const PoolGeometry g = plane_geometry(height, width);
  const int64_t total = planes * g.out_height() * g.out_width();
  if (total == 0) return;
  maxpool2d_backward_kernel<<<blocks_for(total), kThreadsPerBlock, 0, stream>>>(x, dy, dx, total,
                                                                                g);
  PNEUMO_LAUNCH_CHECK("maxpool2d_backward_kernel", "planes=", planes, " H=", height, " W=", width);
}

}  // namespace pneumo::kernels
