// Contract of the 3x3 convolution ops (Backend::conv2d_forward, conv2d_backward_data,
// conv2d_backward_filter, and conv2d_backward: both gradients in one call): what every backend
// computes, and the argument checks the public entry runs for every backend before the backend's
// implementation.
//
// - 3x3 kernel, stride 1, 'same' padding (one zero pixel each side: ConvGeometry), weights
//   (K, C, 3, 3) as PyTorch stores them, cross-correlation (no kernel flip), bias (K);
// - forward: x (N, C, H, W), weight, bias -> y (N, K, H, W) = conv + bias, then ReLU when
//   fuse_relu;
// - backward data: dy (N, K, H, W), weight -> dx (N, C, H, W);
// - backward filter: x, dy -> dweight (K, C, 3, 3) and dbias (K), summed over the batch;
// - backward, both gradients: x, dy, weight -> dweight and dbias as backward filter, then dx as
//   backward data, or no dx when dx is TensorView{} (rank 0: a network's first layer). The same numbers
//   as the two calls, bit for bit; a backend may share work between them (under --precision bf16
//   the CUDA backend converts dy to bfloat16 once for both). When x is the very view the last
//   conv2d_forward with this weight read, and this is the first conv2d_backward since, it must
//   hold what it held then (as any framework's saved tensors must): the backend may reuse what
//   that forward derived from it (CUDA, bf16: x's bfloat16 copy). A different view, another
//   shape, or a second conv2d_backward after one forward is read afresh. dbias may be
//   TensorView{} with more than one input channel: the layer after summed dy already
//   (Backend::batchnorm_backward's dx_sums);
// - precision: float32, except under --precision bf16 (BackendOptions::bf16), where
//   each convolution with more than one input channel rounds its operands (x, weight, dy) to
//   bfloat16 (round to nearest even, kernels/bf16.hpp), accumulates in float32, and rounds its
//   result (y before bias and ReLU, dx, dweight) to bfloat16; dbias sums the float32 dy. That is
//   what tensor-core convolutions on bfloat16 tensors give; the CPU backend emulates it, so the
//   two still agree to a stated tolerance. The one-channel first convolution stays float32.
// - bfloat16 channels-last (conv2d_forward_bf16, conv2d_backward_bf16: the convolutions between
//   bfloat16 block tails, pneumo/ops/block_tail.hpp): x, z, dz and dx are Bf16NhwcViews
//   (pneumo/tensor.hpp), the weight and dweight float32 as above; the bf16 rule above always,
//   whatever the backend's precision, and more than one input channel. No bias: z is the rounded
//   sum (the tail adds the bias), and the backward gives no dbias (the tail sums it); dweight
//   from x and dz, rounded, then dx (unless dx has no data) rounded: what conv2d_forward and
//   conv2d_backward give under --precision bf16 on the decoded tensors with a zero bias.
// - Conversions (to_bf16_channels_last, from_bf16_channels_last): an (N, C, H, W) float32 tensor
//   to bfloat16 channels-last, rounded to nearest even, and back (exact).
#pragma once

#include "pneumo/ops/checks.hpp"

namespace pneumo::ops {

// The geometry of the input-side tensor (N, C, H, W) and the weight (K, C, 3, 3), both checked.
inline ConvGeometry checked_conv_geometry(const char* op, const char* input_name,
                                          const Shape& input, const Shape& weight) {
  expect_rank(op, input_name, input, 4);
  expect_rank(op, "weight", weight, 4);
  const ConvGeometry g = conv_geometry(input, weight);
  expect_shape(op, "weight", weight, g.weight());
  return g;
}

inline void check_conv2d_forward(Device device, ConstTensorView x, ConstTensorView weight,
                                 ConstTensorView bias, ConstTensorView y) {
  const char* op = "conv2d_forward";
  expect_on(device, op, {{"x", x}, {"weight", weight}, {"bias", bias}, {"y", y}});
  const ConvGeometry g = checked_conv_geometry(op, "x", x.shape, weight.shape);
  expect_shape(op, "bias", bias.shape, Shape{g.out_channels});
  expect_shape(op, "y", y.shape, g.output());
}

inline void check_conv2d_backward_data(Device device, ConstTensorView dy, ConstTensorView weight,
                                       ConstTensorView dx) {
  const char* op = "conv2d_backward_data";
  expect_on(device, op, {{"dy", dy}, {"weight", weight}, {"dx", dx}});
  const ConvGeometry g = checked_conv_geometry(op, "dx", dx.shape, weight.shape);
  expect_shape(op, "dy", dy.shape, g.output());
}

inline void check_conv2d_backward_filter(Device device, ConstTensorView x, ConstTensorView dy,
                                         ConstTensorView dweight, ConstTensorView dbias) {
  const char* op = "conv2d_backward_filter";
  expect_on(device, op, {{"x", x}, {"dy", dy}, {"dweight", dweight}, {"dbias", dbias}});
  const ConvGeometry g = checked_conv_geometry(op, "x", x.shape, dweight.shape);
  expect_shape(op, "dy", dy.shape, g.output());
  expect_shape(op, "dbias", dbias.shape, Shape{g.out_channels});
}

inline void check_conv2d_backward(Device device, ConstTensorView x, ConstTensorView dy,
                                  ConstTensorView weight, ConstTensorView dx,
                                  ConstTensorView dweight, ConstTensorView dbias) {
  const char* op = "conv2d_backward";
  expect_on(device, op, {{"x", x}, {"dy", dy}, {"weight", weight}, {"dweight", dweight}});
  const ConvGeometry g = checked_conv_geometry(op, "x", x.shape, weight.shape);
  expect_shape(op, "dy", dy.shape, g.output());
  expect_shape(op, "dweight", dweight.shape, g.weight());
  if (dbias.shape.rank() != 0) {
    expect_on(device, op, {{"dbias", dbias}});
    expect_shape(op, "dbias", dbias.shape, Shape{g.out_channels});
  } else {
    PNEUMO_CHECK(g.in_channels > 1, op, ": dbias is needed with one input channel (its weight ",
                 "gradient's pass sums it)");
  }
  if (dx.shape.rank() == 0) return;  // TensorView{}: no input gradient asked for
  expect_on(device, op, {{"dx", dx}});
  expect_shape(op, "dx", dx.shape, x.shape);
}

// The bfloat16 channels-last convolutions: x's and the weight's geometry, with more than one
// input channel.
inline ConvGeometry checked_conv_bf16(Device device, const char* op, ConstBf16NhwcView x,
                                      ConstTensorView weight) {
  expect_on(device, op, {{"weight", weight}});
  const ConvGeometry g = checked_conv_geometry(op, "x", x.shape, weight.shape);
  expect_bf16(device, op, "x", x, x.shape);
  PNEUMO_CHECK(g.in_channels > 1, op, ": x ", x.shape.str(),
               " has one channel; the one-channel first convolution stays float32");
  return g;
}

inline void check_conv2d_forward_bf16(Device device, ConstBf16NhwcView x, ConstTensorView weight,
                                      ConstBf16NhwcView z) {
  const char* op = "conv2d_forward_bf16";
  const ConvGeometry g = checked_conv_bf16(device, op, x, weight);
  expect_bf16(device, op, "z", z, g.output());
}

inline void check_conv2d_backward_bf16(Device device, ConstBf16NhwcView x, ConstBf16NhwcView dz,
                                       ConstTensorView weight, ConstBf16NhwcView dx,
                                       ConstTensorView dweight) {
  const char* op = "conv2d_backward_bf16";
  const ConvGeometry g = checked_conv_bf16(device, op, x, weight);
  expect_bf16(device, op, "dz", dz, g.output());
  expect_on(device, op, {{"dweight", dweight}});
  expect_shape(op, "dweight", dweight.shape, g.weight());
  if (dx.data != nullptr) expect_bf16(device, op, "dx", dx, x.shape);
}

// The conversions: the output has the input's (N, C, H, W) shape.
inline void check_to_bf16_channels_last(Device device, ConstTensorView x, ConstBf16NhwcView y) {
  const char* op = "to_bf16_channels_last";
  expect_on(device, op, {{"x", x}});
  expect_rank(op, "x", x.shape, 4);
  expect_bf16(device, op, "y", y, x.shape);
}

inline void check_from_bf16_channels_last(Device device, ConstBf16NhwcView x, ConstTensorView y) {
  const char* op = "from_bf16_channels_last";
  expect_bf16(device, op, "x", x, x.shape);
  expect_rank(op, "x", x.shape, 4);
  expect_on(device, op, {{"y", y}});
  expect_shape(op, "y", y.shape, x.shape);
}

}  // namespace pneumo::ops
