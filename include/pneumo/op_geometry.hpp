// The index geometry of each op, as the op contracts define it (include/pneumo/ops/*.hpp):
// one place for the 'same' padding of the 3x3 convolution and of the 2x2 max pooling, the dense
// layer's (N, in) x (out, in) and batch-norm's per-channel layout. Made from shapes by the ops'
// public entry (src/core/backend_entry.cpp, which checks the shapes first) and by the backends.
#pragma once

#include <cstdint>

#include "pneumo/hostdevice.hpp"
#include "pneumo/tensor.hpp"

namespace pneumo {

// 3x3 convolution, stride 1, 'same': one zero pixel of padding on every side, so the output has
// the input's height and width.
struct ConvGeometry {
  static constexpr int64_t kKernel = 3;
  static constexpr int64_t kPadding = 1;
  int64_t batch, in_channels, out_channels, height, width;
  PNEUMO_HD int64_t taps() const { return in_channels * kKernel * kKernel; }  // im2col rows
  PNEUMO_HD int64_t pixels() const { return height * width; }
  Shape output() const { return {batch, out_channels, height, width}; }
  Shape weight() const { return {out_channels, in_channels, kKernel, kKernel}; }
};
// From the input-side tensor (N, C, H, W) and the weight (K, C, 3, 3).
inline ConvGeometry conv_geometry(const Shape& input, const Shape& weight) {
  return {input.n(), input.c(), weight[0], input.h(), input.w()};
}

// 2x2 max pooling, stride 2, 'same': output ceil(H/2) x ceil(W/2); on an odd size the one padding
// row / column is on the top / left (what cuDNN's symmetric padding of 1 with floor rounding
// gives). Output row oy covers input rows 2 oy - pad_top + {0, 1}; likewise for columns.
struct PoolGeometry {
  int64_t batch, channels, height, width;
  PNEUMO_HD int64_t out_height() const { return (height + 1) / 2; }
  PNEUMO_HD int64_t out_width() const { return (width + 1) / 2; }
  PNEUMO_HD int64_t pad_top() const { return height % 2; }
  PNEUMO_HD int64_t pad_left() const { return width % 2; }
  PNEUMO_HD int64_t planes() const { return batch * channels; }
  Shape input() const { return {batch, channels, height, width}; }
  Shape output() const { return {batch, channels, out_height(), out_width()}; }
};
inline PoolGeometry pool_geometry(const Shape& x) { return {x.n(), x.c(), x.h(), x.w()}; }

// Dense: x (N, in), weight (out, in) as PyTorch stores it, y (N, out).
struct DenseGeometry {
  int64_t batch, inputs, outputs;
};
inline DenseGeometry dense_geometry(const Shape& x, const Shape& weight) {
  return {x[0], x[1], weight[0]};
}

// Batch-norm over (N, H, W) per channel of x (N, C, H, W).
struct ChannelLayout {
  int64_t batch, channels, pixels;
  PNEUMO_HD int64_t count() const { return batch * pixels; }  // values per channel
  Shape channel_shape() const { return {channels}; }
};
inline ChannelLayout channel_layout(const Shape& x) { return {x.n(), x.c(), x.h() * x.w()}; }

}  // namespace pneumo
