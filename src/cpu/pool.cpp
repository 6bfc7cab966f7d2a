// 2x2 stride-2 'same' max pooling on the CPU, and the global average pooling of the GAP head. On an
// odd height or width the one padding row/column is on the top/left (as cuDNN's symmetric padding
// of 1 with floor rounding gives) and never wins; ties go to the first element of the window in
// row-major order, and a window's first NaN wins (takes_max, kernels/pool_window.hpp).

#include "cpu/cpu_backend.hpp"
#include "elementwise.hpp"
#include "pool_window.hpp"
#include "pneumo/error.hpp"
#include "pneumo/op_geometry.hpp"

namespace pneumo::cpu {
namespace {

// The windows of output row oy: its input rows are 2*oy - pad_top + {0, 1}, of which only the
// first can be the padding (on an odd height, for oy = 0); likewise for columns. So a window is
// 1, 2 or 4 real pixels, always including its bottom-right one.
struct WindowRows {
  const float* top;  // null when the top row is the padding
  const float* bottom;
  int64_t top_offset, bottom_offset;  // their offsets in the plane
};

WindowRows window_rows(const float* plane, const PoolGeometry& g, int64_t oy) {
  const int64_t r0 = 2 * oy - g.pad_top();
  return {r0 >= 0 ? plane + r0 * g.width : nullptr, plane + (r0 + 1) * g.width, r0 * g.width,
          (r0 + 1) * g.width};
}

// The max of window (rows, column c0 = 2*ox - pad_left, and c0 + 1) and its offset in the plane:
// candidates are visited in row-major order and one replaces the current when takes_max says so
// (strictly larger, or the first NaN), as the CUDA kernels' window_first_max does.
struct WindowMax {
  float value;
  int64_t offset;
};

// Written as selects rather than a branch: which element wins is data-dependent, and the
// mispredicted branches made the backward pass several times slower.
inline void consider(WindowMax& best, float value, int64_t offset) {
  const bool larger = takes_max(value, best.value);
  best.offset = larger ? offset : best.offset;
  best.value = larger ? value : best.value;
}

inline WindowMax window_max(const WindowRows& rows, int64_t c0) {
  const bool left = c0 >= 0;
  WindowMax best;
  if (rows.top) {
    best = left ? WindowMax{rows.top[c0], rows.top_offset + c0}
                : WindowMax{rows.top[c0 + 1], rows.top_offset + c0 + 1};
    if (left) {
      consider(best, rows.top[c0 + 1], rows.top_offset + c0 + 1);
      consider(best, rows.bottom[c0], rows.bottom_offset + c0);
    }
  } else {
    best = left ? WindowMax{rows.bottom[c0], rows.bottom_offset + c0}
                : WindowMax{rows.bottom[c0 + 1], rows.bottom_offset + c0 + 1};
  }
  if (rows.top || left) consider(best, rows.bottom[c0 + 1], rows.bottom_offset + c0 + 1);
  return best;
}

}  // namespace

void CpuBackend::maxpool2d_forward_impl(ConstTensorView x, TensorView y) {
  const PoolGeometry g = pool_geometry(x.shape);

  const int64_t in_plane = g.height * g.width, out_plane = g.out_height() * g.out_width();
  const int64_t out_width = g.out_width();
  pool_.parallel_for(g.planes(), [&](int64_t begin, int64_t end, int /*worker*/) {
    for (int64_t p = begin; p < end; ++p) {
      const float* plane = x.data + p * in_plane;
      float* out = y.data + p * out_plane;
      for (int64_t oy = 0; oy < g.out_height(); ++oy) {
        const WindowRows rows = window_rows(plane, g, oy);
        for (int64_t ox = 0; ox < out_width; ++ox)
          out[oy * out_width + ox] = window_max(rows, 2 * ox - g.pad_left()).value;
      }
    }
  });
}

// The max is located again from x (y is checked for shape only); when y = maxpool2d_forward(x)
// that is the same element as the first one equal to y, which is what cuDNN picks (for a window
// holding a NaN: its first NaN, where cuDNN's choice is not documented).
void CpuBackend::maxpool2d_backward_impl(ConstTensorView x, ConstTensorView /*y*/,
                                         ConstTensorView dy, TensorView dx) {
  const PoolGeometry g = pool_geometry(x.shape);

  const int64_t in_plane = g.height * g.width, out_plane = g.out_height() * g.out_width();
  const int64_t out_width = g.out_width();
  pool_.parallel_for(g.planes(), [&](int64_t begin, int64_t end, int /*worker*/) {
    for (int64_t p = begin; p < end; ++p) {
      const float* plane = x.data + p * in_plane;
      const float* gradient = dy.data + p * out_plane;
      float* out = dx.data + p * in_plane;
      // The windows tile the plane (stride = window, padding only on the top/left), so writing
      // each window's real pixels, zero and then the gradient at its max, sets every dx once
      // without a separate pass to clear it.
      for (int64_t oy = 0; oy < g.out_height(); ++oy) {
        const WindowRows rows = window_rows(plane, g, oy);
        for (int64_t ox = 0; ox < out_width; ++ox) {
          const int64_t c0 = 2 * ox - g.pad_left();
          if (rows.top && c0 >= 0) out[rows.top_offset + c0] = 0.0f;
          if (rows.top) out[rows.top_offset + c0 + 1] = 0.0f;
          if (c0 >= 0) out[rows.bottom_offset + c0] = 0.0f;
          out[rows.bottom_offset + c0 + 1] = 0.0f;
          out[window_max(rows, c0).offset] = gradient[oy * out_width + ox];
        }
      }
    }
  });
}

void CpuBackend::global_avgpool_forward_impl(ConstTensorView x, TensorView y) {
  const int64_t count = x.shape.h() * x.shape.w();
  for (int64_t p = 0; p < y.numel(); ++p) y.data[p] = plane_mean(x.data + p * count, count);
}

void CpuBackend::global_avgpool_backward_impl(ConstTensorView dy, TensorView dx) {
  const int64_t count = dx.shape.h() * dx.shape.w();
  for (int64_t p = 0; p < dy.numel(); ++p)
    for (int64_t i = 0; i < count; ++i)
      dx.data[p * count + i] = plane_mean_gradient(dy.data[p], count);
}

}  // namespace pneumo::cpu
