// Contract of batch normalisation over (N, H, W) per channel, "spatial" (Backend::
// batchnorm_forward_training, batchnorm_forward_inference, batchnorm_backward,
// batchnorm_backward_input), and its argument checks. x is (N, C, H, W); gamma, beta, the running
// and saved statistics are (C) (ChannelLayout).
//
// - training forward: normalise with the batch mean and biased variance; update the running
//   averages as running = (1 - factor) * running + factor * batch, with the UNBIASED batch
//   variance for running_var (cuDNN and PyTorch do this); factor = 1 - Keras momentum (0.01).
//   saved_mean, saved_inv_std (C): the batch mean and 1 / sqrt(biased_var + epsilon), kept for
//   the backward pass;
// - inference forward: normalise with the running statistics;
// - backward: the gradients of the training forward, dx (N, C, H, W), dgamma (C), dbeta (C);
//   with relu_gate, dx is then zeroed where x <= 0 (relu_backward with y = x): the gradient
//   through the ReLU whose output x is. Through dropout in between too: where dropout zeroed an
//   element, its gradient is zero either way (the dropout backward multiplies it by 0), so only
//   the sign of such a zero can differ from relu_backward after dropout_backward. With
//   gate_dropout_rate r as well (x = dropout at rate r of a ReLU's output), dx is then the
//   gradient through that dropout too: times 1 / (1 - r) (dropout_multiplier_from_keep(true, r)),
//   since x > 0 only where the mask kept the element; the same bits as dropout_backward after the
//   gated op (its mask is not drawn). dx_sums (C), when given: the final dx summed over (N, H, W)
//   per channel (the bias gradient of the convolution whose output x is), summed as
//   conv2d_backward_filter sums its dbias on the CPU, in the backend's own order on a GPU;
// - backward input: dx alone, from the channel sums of a batch that may be larger than x
//   (synchronised batch-norm across data-parallel ranks): sums (2, C) holds sum dy (row 0) and
//   sum dy xhat (row 1) over `count` values per channel, xhat = (x - saved_mean) saved_inv_std,
//   and dx = gamma inv_std (dy - sum_dy / count - xhat sum_dy_xhat / count). Given this batch's
//   own dbeta and dgamma as sums and count = N H W, it is the backward op's dx;
// - epsilon: at least cuDNN's minimum (CUDNN_BN_MIN_EPSILON, 1e-5) on every backend, so that a
//   model trained on one backend runs on the other.
#pragma once

#include <initializer_list>

#include "pneumo/ops/checks.hpp"

namespace pneumo::ops {

constexpr double kMinBatchNormEpsilon = 1e-5;

inline void check_batchnorm_epsilon(const char* op, double epsilon) {
  PNEUMO_CHECK(epsilon >= kMinBatchNormEpsilon, op, ": epsilon ", epsilon, " is below the minimum ",
               kMinBatchNormEpsilon, " (cuDNN's)");
}

inline ChannelLayout checked_channel_layout(const char* op, const Shape& x) {
  expect_rank(op, "x", x, 4);
  return channel_layout(x);
}

// The operands both forward ops take: x and y (N, C, H, W) alike, gamma, beta and the running
// statistics (C), all on `device`. Returns x's layout.
inline ChannelLayout checked_batchnorm_forward(Device device, const char* op, ConstTensorView x,
                                               ConstTensorView gamma, ConstTensorView beta,
                                               ConstTensorView running_mean,
                                               ConstTensorView running_var, ConstTensorView y) {
  const std::initializer_list<NamedView> per_channel{{"gamma", gamma},
                                                     {"beta", beta},
                                                     {"running_mean", running_mean},
                                                     {"running_var", running_var}};
  expect_on(device, op, {{"x", x}});
  expect_on(device, op, per_channel);
  expect_on(device, op, {{"y", y}});
  const ChannelLayout layout = checked_channel_layout(op, x.shape);
  expect_shapes(op, layout.channel_shape(), per_channel);
  expect_shape(op, "y", y.shape, x.shape);
  return layout;
}

inline void check_batchnorm_forward_training(Device device, ConstTensorView x,
                                             ConstTensorView gamma, ConstTensorView beta,
                                             ConstTensorView running_mean,
                                             ConstTensorView running_var, double average_factor,
                                             double epsilon, ConstTensorView y,
                                             ConstTensorView saved_mean,
                                             ConstTensorView saved_inv_std) {
  const char* op = "batchnorm_forward_training";
  const ChannelLayout layout =
      checked_batchnorm_forward(device, op, x, gamma, beta, running_mean, running_var, y);
  expect_on(device, op, {{"saved_mean", saved_mean}, {"saved_inv_std", saved_inv_std}});
  expect_shapes(op, layout.channel_shape(),
                {{"saved_mean", saved_mean}, {"saved_inv_std", saved_inv_std}});
  PNEUMO_CHECK(layout.count() > 1, op, ": x ", x.shape.str(),
               " has one value per channel; the batch variance needs at least two");
  PNEUMO_CHECK(average_factor >= 0.0 && average_factor <= 1.0, op, ": average_factor ",
               average_factor, " outside [0, 1]");
  check_batchnorm_epsilon(op, epsilon);
}

inline void check_batchnorm_forward_inference(Device device, ConstTensorView x,
                                              ConstTensorView gamma, ConstTensorView beta,
                                              ConstTensorView running_mean,
                                              ConstTensorView running_var, double epsilon,
                                              ConstTensorView y) {
  const char* op = "batchnorm_forward_inference";
  checked_batchnorm_forward(device, op, x, gamma, beta, running_mean, running_var, y);
  check_batchnorm_epsilon(op, epsilon);
}

// The operands both backward ops take: x, dy, dx (N, C, H, W) alike, gamma and the saved
// statistics (C), all on `device`. Returns x's layout.
inline ChannelLayout checked_batchnorm_backward(Device device, const char* op, ConstTensorView x,
                                                ConstTensorView dy, ConstTensorView gamma,
                                                ConstTensorView saved_mean,
                                                ConstTensorView saved_inv_std, ConstTensorView dx) {
  expect_on(device, op,
            {{"x", x},
             {"dy", dy},
             {"gamma", gamma},
             {"saved_mean", saved_mean},
             {"saved_inv_std", saved_inv_std},
             {"dx", dx}});
  const ChannelLayout layout = checked_channel_layout(op, x.shape);
  expect_shape(op, "dy", dy.shape, x.shape);
  expect_shape(op, "dx", dx.shape, x.shape);
  expect_shapes(op, layout.channel_shape(),
                {{"gamma", gamma}, {"saved_mean", saved_mean}, {"saved_inv_std", saved_inv_std}});
  return layout;
}

inline void check_batchnorm_backward(Device device, ConstTensorView x, ConstTensorView dy,
                                     ConstTensorView gamma, ConstTensorView saved_mean,
                                     ConstTensorView saved_inv_std, double epsilon,
                                     ConstTensorView dx, ConstTensorView dgamma,
                                     ConstTensorView dbeta, bool relu_gate = false,
                                     float gate_dropout_rate = 0.0f,
                                     ConstTensorView dx_sums = {}) {
  const char* op = "batchnorm_backward";
  const ChannelLayout layout =
      checked_batchnorm_backward(device, op, x, dy, gamma, saved_mean, saved_inv_std, dx);
  expect_on(device, op, {{"dgamma", dgamma}, {"dbeta", dbeta}});
  expect_shapes(op, layout.channel_shape(), {{"dgamma", dgamma}, {"dbeta", dbeta}});
  check_batchnorm_epsilon(op, epsilon);
  PNEUMO_CHECK(gate_dropout_rate >= 0.0f && gate_dropout_rate < 1.0f, op,
               ": gate_dropout_rate ", gate_dropout_rate, " outside [0, 1)");
  PNEUMO_CHECK(relu_gate || gate_dropout_rate == 0.0f, op, ": gate_dropout_rate ",
               gate_dropout_rate, " without relu_gate (the dropout's gradient rides on the gate)");
  if (dx_sums.shape.rank() != 0) {  // TensorView{}: not asked for
    expect_on(device, op, {{"dx_sums", dx_sums}});
    expect_shape(op, "dx_sums", dx_sums.shape, layout.channel_shape());
  }
}

inline void check_batchnorm_backward_input(Device device, ConstTensorView x, ConstTensorView dy,
                                           ConstTensorView gamma, ConstTensorView saved_mean,
                                           ConstTensorView saved_inv_std, ConstTensorView sums,
                                           double count, ConstTensorView dx) {
  const char* op = "batchnorm_backward_input";
  const ChannelLayout layout =
      checked_batchnorm_backward(device, op, x, dy, gamma, saved_mean, saved_inv_std, dx);
  expect_on(device, op, {{"sums", sums}});
  expect_shape(op, "sums", sums.shape, Shape{2, layout.channels});
  PNEUMO_CHECK(count >= static_cast<double>(layout.count()), op, ": count ", count,
               " is below the ", layout.count(), " values per channel of x");
}

}  // namespace pneumo::ops
