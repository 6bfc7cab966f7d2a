// Contract of the pooling ops (Backend::maxpool2d_forward, maxpool2d_backward,
// global_avgpool_forward, global_avgpool_backward) and their argument checks.
//
// - max pooling: 2x2 window, stride 2, 'same' (PoolGeometry): x (N, C, H, W) -> y (N, C,
//   ceil(H/2), ceil(W/2)); on an odd size the one padding row/column goes on the TOP/LEFT
//   (cuDNN's symmetric padding of 1 with floor rounding gives exactly that) and never wins the
//   max; a NaN in a window is its max (the first NaN, in row-major order), so a NaN activation
//   is not lost on the way to the loss. Backward: each window's gradient goes to the element
//   that produced its max; on ties, to the first in row-major order within the window (cuDNN's
//   backward, where a window holds a NaN, sends it where cuDNN chooses: not documented);
// - global average pooling: x (N, C, H, W) -> y (N, C), the mean of each plane; backward:
//   dy (N, C) -> dx (N, C, H, W) = dy / (H W) over each plane.
#pragma once

#include "pneumo/ops/checks.hpp"

namespace pneumo::ops {

inline void check_maxpool2d_forward(Device device, ConstTensorView x, ConstTensorView y) {
  const char* op = "maxpool2d_forward";
  expect_on(device, op, {{"x", x}, {"y", y}});
  expect_rank(op, "x", x.shape, 4);
  expect_shape(op, "y", y.shape, pool_geometry(x.shape).output());
}

inline void check_maxpool2d_backward(Device device, ConstTensorView x, ConstTensorView y,
                                     ConstTensorView dy, ConstTensorView dx) {
  const char* op = "maxpool2d_backward";
  expect_on(device, op, {{"x", x}, {"y", y}, {"dy", dy}, {"dx", dx}});
  expect_rank(op, "x", x.shape, 4);
  const PoolGeometry g = pool_geometry(x.shape);
  expect_shape(op, "y", y.shape, g.output());
  expect_shape(op, "dy", dy.shape, g.output());
  expect_shape(op, "dx", dx.shape, g.input());
}

inline void check_global_avgpool_forward(Device device, ConstTensorView x, ConstTensorView y) {
  const char* op = "global_avgpool_forward";
  expect_on(device, op, {{"x", x}, {"y", y}});
  expect_rank(op, "x", x.shape, 4);
  expect_shape(op, "y", y.shape, Shape{x.shape.n(), x.shape.c()});
}

inline void check_global_avgpool_backward(Device device, ConstTensorView dy, ConstTensorView dx) {
  const char* op = "global_avgpool_backward";
  expect_on(device, op, {{"dy", dy}, {"dx", dx}});
  expect_rank(op, "dx", dx.shape, 4);
  expect_shape(op, "dy", dy.shape, Shape{dx.shape.n(), dx.shape.c()});
}

}  // namespace pneumo::ops
