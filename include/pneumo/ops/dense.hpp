// Contract of the dense (fully connected) layer (Backend::dense_forward, dense_backward) and its
// argument checks. Row-major, PyTorch layout.
//
// - forward: x (N, in), weight (out, in), bias (out) -> y (N, out) = x weight^T + bias;
// - backward: dx (N, in) (skipped when dx.data is null: the first layer's input needs none),
//   dweight (out, in), dbias (out);
// - precision: float32, except under --precision bf16 (BackendOptions::bf16), where each of the
//   three products rounds its operands (x, weight, dy) to bfloat16 (round to nearest even,
//   kernels/bf16.hpp) and sums them in float32 (tensor-core GEMMs on bfloat16 matrices); unlike a
//   convolution's, the results (y, dx, dweight) stay float32 (cuBLAS writes them so), and dbias
//   sums the float32 dy. The CPU backend emulates it.
#pragma once

#include "pneumo/ops/checks.hpp"

namespace pneumo::ops {

inline DenseGeometry checked_dense_geometry(const char* op, const Shape& x, const Shape& weight) {
  expect_rank(op, "x", x, 2);
  expect_rank(op, "weight", weight, 2);
  const DenseGeometry g = dense_geometry(x, weight);
  expect_shape(op, "weight", weight, Shape{g.outputs, g.inputs});
  return g;
}

inline void check_dense_forward(Device device, ConstTensorView x, ConstTensorView weight,
                                ConstTensorView bias, ConstTensorView y) {
  const char* op = "dense_forward";
  expect_on(device, op, {{"x", x}, {"weight", weight}, {"bias", bias}, {"y", y}});
  const DenseGeometry g = checked_dense_geometry(op, x.shape, weight.shape);
  expect_shape(op, "bias", bias.shape, Shape{g.outputs});
  expect_shape(op, "y", y.shape, Shape{g.batch, g.outputs});
}

inline void check_dense_backward(Device device, ConstTensorView x, ConstTensorView weight,
                                 ConstTensorView dy, ConstTensorView dx, ConstTensorView dweight,
                                 ConstTensorView dbias) {
  const char* op = "dense_backward";
  expect_on(device, op,
            {{"x", x}, {"weight", weight}, {"dy", dy}, {"dweight", dweight}, {"dbias", dbias}});
  const DenseGeometry g = checked_dense_geometry(op, x.shape, weight.shape);
  expect_shape(op, "dy", dy.shape, Shape{g.batch, g.outputs});
  expect_shape(op, "dweight", dweight.shape, weight.shape);
  expect_shape(op, "dbias", dbias.shape, Shape{g.outputs});
  if (dx.data != nullptr) {  // null: the first layer's input needs no gradient
    expect_on(device, op, {{"dx", dx}});
    expect_shape(op, "dx", dx.shape, x.shape);
  }
}

}  // namespace pneumo::ops
