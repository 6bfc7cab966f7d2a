// Contract of ReLU (Backend::relu_forward, relu_backward) and its argument checks.
//
// - forward: y = max(x, 0), element-wise, a NaN staying NaN; y may alias x (in place);
// - backward: y is the forward output: dx = 0 where y <= 0, else dy (a NaN y passes dy); dx may
//   alias dy.
#pragma once

#include "pneumo/ops/checks.hpp"

namespace pneumo::ops {

inline void check_relu_forward(Device device, ConstTensorView x, ConstTensorView y) {
  const char* op = "relu_forward";
  expect_on(device, op, {{"x", x}, {"y", y}});
  expect_shape(op, "y", y.shape, x.shape);
}

inline void check_relu_backward(Device device, ConstTensorView y, ConstTensorView dy,
                                ConstTensorView dx) {
  const char* op = "relu_backward";
  expect_on(device, op, {{"y", y}, {"dy", dy}, {"dx", dx}});
  expect_shape(op, "dy", dy.shape, y.shape);
  expect_shape(op, "dx", dx.shape, y.shape);
}

}  // namespace pneumo::ops
