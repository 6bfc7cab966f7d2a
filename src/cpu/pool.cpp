// 2x2 stride-2 'same' max pooling on the CPU. On an odd height or width the one padding
// row/column is on the top/left (as cuDNN's symmetric padding of 1 with floor rounding gives) and
// never wins; ties go to the first element of the window in row-major order.
#include <algorithm>

#include "cpu/cpu_backend.hpp"
#include "pneumo/error.hpp"

namespace pneumo::cpu {
namespace {

struct PoolGeometry {
  int64_t batch, channels, height, width;
  int64_t out_height() const { return (height + 1) / 2; }
  int64_t out_width() const { return (width + 1) / 2; }
  // Output row oy covers input rows 2*oy - pad_top + {0, 1}; likewise for columns.
  int64_t pad_top() const { return height % 2; }
  int64_t pad_left() const { return width % 2; }
  int64_t planes() const { return batch * channels; }
  Shape input() const { return {batch, channels, height, width}; }
  Shape output() const { return {batch, channels, out_height(), out_width()}; }
};

PoolGeometry pool_geometry(const char* op, const Shape& x) {
  expect_rank(op, "x", x, 4);
  return {x.n(), x.c(), x.h(), x.w()};
}

// Index within `plane` (H, W) of the max of output window (oy, ox): padding is skipped and ties
// go to the first element in row-major window order (only a strictly larger value replaces it).
int64_t window_argmax(const float* plane, const PoolGeometry& g, int64_t oy, int64_t ox) {
  int64_t best = -1;
  for (int64_t iy = 2 * oy - g.pad_top(); iy < 2 * oy - g.pad_top() + 2; ++iy) {
    if (iy < 0 || iy >= g.height) continue;
    for (int64_t ix = 2 * ox - g.pad_left(); ix < 2 * ox - g.pad_left() + 2; ++ix) {
      if (ix < 0 || ix >= g.width) continue;
      int64_t index = iy * g.width + ix;
      if (best < 0 || plane[index] > plane[best]) best = index;
    }
  }
  return best;  // every window holds at least one real pixel
}

}  // namespace

void CpuBackend::maxpool2d_forward(ConstTensorView x, TensorView y) {
  const char* op = "maxpool2d_forward";
  expect_on_cpu(op, {{"x", x}, {"y", y}});
  const PoolGeometry g = pool_geometry(op, x.shape);
  expect_shape(op, "y", y.shape, g.output());

  const int64_t in_plane = g.height * g.width, out_plane = g.out_height() * g.out_width();
  pool_.parallel_for(g.planes(), [&](int64_t begin, int64_t end, int /*worker*/) {
    for (int64_t p = begin; p < end; ++p) {
      const float* plane = x.data + p * in_plane;
      float* out = y.data + p * out_plane;
      for (int64_t oy = 0; oy < g.out_height(); ++oy)
        for (int64_t ox = 0; ox < g.out_width(); ++ox)
          out[oy * g.out_width() + ox] = plane[window_argmax(plane, g, oy, ox)];
    }
  });
}

// The max is located again from x (y is checked for shape only); when y = maxpool2d_forward(x)
// that is the same element as the first one equal to y, which is what cuDNN picks.
void CpuBackend::maxpool2d_backward(ConstTensorView x, ConstTensorView y, ConstTensorView dy,
                                    TensorView dx) {
  const char* op = "maxpool2d_backward";
  expect_on_cpu(op, {{"x", x}, {"y", y}, {"dy", dy}, {"dx", dx}});
  const PoolGeometry g = pool_geometry(op, x.shape);
  expect_shape(op, "y", y.shape, g.output());
  expect_shape(op, "dy", dy.shape, g.output());
  expect_shape(op, "dx", dx.shape, g.input());

  const int64_t in_plane = g.height * g.width, out_plane = g.out_height() * g.out_width();
  pool_.parallel_for(g.planes(), [&](int64_t begin, int64_t end, int /*worker*/) {
    for (int64_t p = begin; p < end; ++p) {
      const float* plane = x.data + p * in_plane;
      const float* gradient = dy.data + p * out_plane;
      float* out = dx.data + p * in_plane;
      std::fill(out, out + in_plane, 0.0f);
      // Windows do not overlap (stride = window), so each input gets at most one gradient.
      for (int64_t oy = 0; oy < g.out_height(); ++oy)
        for (int64_t ox = 0; ox < g.out_width(); ++ox)
          out[window_argmax(plane, g, oy, ox)] = gradient[oy * g.out_width() + ox];
    }
  });
}

}  // namespace pneumo::cpu
