// Contract of the fused block tail (Backend::block_tail_forward, block_tail_backward) and its
// argument checks: what follows a block's convolution + ReLU in the seed network, dropout ->
// batch-norm -> 2x2 max pooling, as one op, so that neither the dropout output, the batch-norm
// output nor any of their gradients is ever written to memory.
//
// - a (N, C, H, W): the block's ReLU output (a >= 0 is not required; the backward's ReLU
//   gradient is a > 0); y (N, C, ceil(H/2), ceil(W/2)); gamma, beta, running and saved
//   statistics (C);
// - training forward: d = a * dropout_multiplier(key, index, rate) (pneumo/ops/dropout.hpp's mask,
//   the same element indices; rate 0: d = a), batch-norm of d exactly as
//   batchnorm_forward_training defines it (saved_mean, saved_inv_std, running averages with the
//   unbiased variance), then max pooling with pneumo/ops/pooling.hpp's windows and tie rule;
// - inference forward: no dropout, batch-norm with the running statistics, pooling; it writes
//   saved_mean = running_mean and saved_inv_std = 1 / sqrt(running_var + epsilon), so that the
//   backward takes the same operands after either forward;
// - backward: given dy (the pooled shape) and the forward's gamma, beta and saved statistics,
//   da = d loss / d(pre-ReLU activation): each window's dy goes to the element that won its max
//   (recomputed from a, with beta, so that ties resolve as in the forward; not stored), through
//   batch-norm's backward (training: with the batch statistics' terms; inference: the affine
//   map alone), the dropout mask, and ReLU's gradient (zero where a <= 0), so the convolution
//   before it needs no relu_backward of its own. dgamma = sum dy xhat and dbeta = sum dy at the
//   winning elements (written after either forward; only a training forward's are parameter
//   gradients);
// - the same numbers as the unfused chain dropout_forward -> batchnorm_forward_training ->
//   maxpool2d_forward and its backward then relu_backward, up to the order of the per-channel
//   sums (tests/test_block_tail.cpp compares them on both backends).
//
// The stem (Backend::stem_forward, stem_backward) is block 1 whole: its one-channel 3x3 'same'
// convolution + ReLU, then the tail above, with the convolution's output recomputed from the
// image wherever it is needed instead of stored:
// - x (N, 1, H, W), weight (K, 1, 3, 3), bias (K); a = relu(conv2d(x) + bias) computed as
//   kernels/block_tail_math.hpp's StemPlane does (the direct one-channel kernel's arithmetic);
//   then exactly block_tail_forward on a;
// - backward: block_tail_backward's da, not written, but reduced into the convolution's
//   gradients: dweight[k, 0, t] = sum da x[tap t], dbias[k] = sum da (conv2d_backward_filter's);
//   no dx (the first layer has no input gradient). dgamma and dbeta as the tail's.
//
// The tail in bfloat16, channels-last (Backend::block_tail_forward_bf16, block_tail_backward_bf16):
// the same tail between two --precision bf16 convolutions, reading and writing what they read
// and write (pneumo/tensor.hpp's Bf16NhwcView), so that no conversion pass runs around them:
// - z (N, C, H, W), bfloat16 channels-last: the convolution's sum before its bias (cuDNN's
//   rounded output); bias (C); a = relu(float(z) + bias) in float32, the value the unfused bf16
//   chain hands the tail (pneumo/ops/conv2d.hpp's rule: the result rounded, then the bias);
// - then exactly block_tail_forward / block_tail_backward on a, except the dropout mask's
//   element index: the element's place in z's storage (channels-last), so that a warp's 32
//   neighbouring channels share one mask word (the masks differ from the float32 tail's; both
//   are dropout_multiplier's at their index). first: as above, a multiple of 4;
// - y (N, C, ceil(H/2), ceil(W/2)) bfloat16 channels-last: the pooled output rounded to nearest
//   even, which the next convolution's operand rounding does anyway;
// - backward: dy (the pooled shape) bfloat16 channels-last; dz (shape of z) bfloat16
//   channels-last: the tail's da rounded as the convolution's dy is; dbias (C) = the sum of da
//   over (N, H, W) in float32 before rounding (the convolution's bias gradient); dgamma, dbeta
//   as the tail's.
#pragma once

#include "pneumo/ops/batchnorm.hpp"
#include "pneumo/ops/checks.hpp"
#include "pneumo/random.hpp"

namespace pneumo {

struct BlockTailSettings {
  bool training = true;
  float dropout_rate = 0.0f;  // training only; 0: no dropout in this block
  // The dropout mask's key; first: the global element index of a's element 0, a multiple of 4.
  RngKey dropout_key;
  double average_factor = 0.01;  // running = (1 - factor) running + factor batch (training)
  double epsilon = 1e-3;
};

}  // namespace pneumo

namespace pneumo::ops {

inline void check_block_tail_settings(const char* op, const ChannelLayout& layout,
                                      const BlockTailSettings& s) {
  PNEUMO_CHECK(s.dropout_rate >= 0.0f && s.dropout_rate < 1.0f, op, ": dropout rate ",
               s.dropout_rate, " outside [0, 1)");
  PNEUMO_CHECK(s.dropout_key.first % 4 == 0, op, ": the global offset ", s.dropout_key.first,
               " is not a multiple of 4 (masks are drawn four elements at a time)");
  // Only a mask drawn needs the index: at rate 0 every multiplier is 1 whatever the bits (block 1,
  // inference), so a larger batch there (a validation pass at --val-batch 4096, 224 px) goes on.
  PNEUMO_CHECK(s.dropout_rate == 0.0f ||
                   layout.batch * layout.channels * layout.pixels + s.dropout_key.first <=
                       (int64_t{1} << 32),
               op, ": the dropout mask index of ", layout.batch * layout.channels * layout.pixels,
               " elements from element ", s.dropout_key.first, " goes past 32 bits");
  PNEUMO_CHECK(s.average_factor >= 0.0 && s.average_factor <= 1.0, op, ": average_factor ",
               s.average_factor, " outside [0, 1]");
  check_batchnorm_epsilon(op, s.epsilon);
}

// The tail's operands: a (N, C, H, W), the named tensors (C) and those shaped as a (`alike`), all
// on `device`; `pooled` the pooled shape. Returns a's layout.
inline ChannelLayout checked_tail(Device device, const char* op, ConstTensorView a,
                                  std::initializer_list<NamedView> alike, const NamedView& pooled,
                                  std::initializer_list<NamedView> per_channel) {
  expect_on(device, op, {{"a", a}, pooled});
  expect_on(device, op, alike);
  expect_on(device, op, per_channel);
  const ChannelLayout layout = checked_channel_layout(op, a.shape);
  expect_shapes(op, layout.channel_shape(), per_channel);
  expect_shape(op, pooled.first, pooled.second.shape, pool_geometry(a.shape).output());
  for (const auto& [name, view] : alike) expect_shape(op, name, view.shape, a.shape);
  return layout;
}

inline void check_block_tail_forward(Device device, ConstTensorView a, ConstTensorView gamma,
                                     ConstTensorView beta, ConstTensorView running_mean,
                                     ConstTensorView running_var, const BlockTailSettings& s,
                                     ConstTensorView y, ConstTensorView saved_mean,
                                     ConstTensorView saved_inv_std) {
  const char* op = "block_tail_forward";
  const ChannelLayout layout = checked_tail(device, op, a, {}, {"y", y},
                                            {{"gamma", gamma},
                                             {"beta", beta},
                                             {"running_mean", running_mean},
                                             {"running_var", running_var},
                                             {"saved_mean", saved_mean},
                                             {"saved_inv_std", saved_inv_std}});
  PNEUMO_CHECK(!s.training || layout.count() > 1, op, ": a ", a.shape.str(),
               " has one value per channel; the batch variance needs at least two");
  check_block_tail_settings(op, layout, s);
}

inline void check_block_tail_backward(Device device, ConstTensorView a, ConstTensorView dy,
                                      ConstTensorView gamma, ConstTensorView beta,
                                      ConstTensorView saved_mean,
                                      ConstTensorView saved_inv_std, const BlockTailSettings& s,
                                      ConstTensorView da, ConstTensorView dgamma,
                                      ConstTensorView dbeta) {
  const char* op = "block_tail_backward";
  const ChannelLayout layout = checked_tail(device, op, a, {{"da", da}}, {"dy", dy},
                                            {{"gamma", gamma},
                                             {"beta", beta},
                                             {"saved_mean", saved_mean},
                                             {"saved_inv_std", saved_inv_std},
                                             {"dgamma", dgamma},
                                             {"dbeta", dbeta}});
  check_block_tail_settings(op, layout, s);
}

}  // namespace pneumo::ops

namespace pneumo::ops {

// The stem's operands: x (N, 1, H, W), weight (K, 1, 3, 3), bias and the per-channel tensors (K).
// Returns the activation's shape (N, K, H, W).
inline Shape checked_stem(const char* op, ConstTensorView x, ConstTensorView weight,
                          std::initializer_list<NamedView> per_channel) {
  expect_rank(op, "x", x.shape, 4);
  PNEUMO_CHECK(x.shape.c() == 1, op, ": x ", x.shape.str(), " must have one channel");
  PNEUMO_CHECK(x.shape.h() * x.shape.w() < (int64_t{1} << 32), op, ": x ", x.shape.str(),
               " has planes of 2^32 pixels or more (the stem finds a pixel by 32-bit division)");
  expect_rank(op, "weight", weight.shape, 4);
  const int64_t k = weight.shape[0];
  expect_shape(op, "weight", weight.shape, Shape{k, 1, 3, 3});
  expect_shapes(op, Shape{k}, per_channel);
  return {x.shape.n(), k, x.shape.h(), x.shape.w()};
}

inline void check_stem_forward(Device device, ConstTensorView x, ConstTensorView weight,
                               ConstTensorView bias, ConstTensorView gamma, ConstTensorView beta,
                               ConstTensorView running_mean, ConstTensorView running_var,
                               const BlockTailSettings& s, ConstTensorView y,
                               ConstTensorView saved_mean, ConstTensorView saved_inv_std) {
  const char* op = "stem_forward";
  const std::initializer_list<NamedView> per_channel{
      {"bias", bias},         {"gamma", gamma},           {"beta", beta},
      {"running_mean", running_mean}, {"running_var", running_var}, {"saved_mean", saved_mean},
      {"saved_inv_std", saved_inv_std}};
  expect_on(device, op, {{"x", x}, {"weight", weight}, {"y", y}});
  expect_on(device, op, per_channel);
  const Shape a = checked_stem(op, x, weight, per_channel);
  expect_shape(op, "y", y.shape, pool_geometry(a).output());
  const ChannelLayout layout = channel_layout(a);
  PNEUMO_CHECK(!s.training || layout.count() > 1, op, ": x ", x.shape.str(),
               " has one value per channel; the batch variance needs at least two");
  check_block_tail_settings(op, layout, s);
}

inline void check_stem_backward(Device device, ConstTensorView x, ConstTensorView dy,
                                ConstTensorView weight, ConstTensorView bias,
                                ConstTensorView gamma, ConstTensorView beta,
                                ConstTensorView saved_mean, ConstTensorView saved_inv_std,
                                const BlockTailSettings& s, ConstTensorView dweight,
                                ConstTensorView dbias, ConstTensorView dgamma,
                                ConstTensorView dbeta) {
  const char* op = "stem_backward";
  const std::initializer_list<NamedView> per_channel{
      {"bias", bias},   {"gamma", gamma}, {"beta", beta},   {"saved_mean", saved_mean},
      {"saved_inv_std", saved_inv_std},   {"dbias", dbias}, {"dgamma", dgamma}, {"dbeta", dbeta}};
  expect_on(device, op, {{"x", x}, {"dy", dy}, {"weight", weight}, {"dweight", dweight}});
  expect_on(device, op, per_channel);
  const Shape a = checked_stem(op, x, weight, per_channel);
  expect_shape(op, "dy", dy.shape, pool_geometry(a).output());
  expect_shape(op, "dweight", dweight.shape, weight.shape);
  check_block_tail_settings(op, channel_layout(a), s);
}

}  // namespace pneumo::ops

namespace pneumo::ops {

// The bfloat16 tail's operands: z and the tensors shaped as z (`alike`), bias and the per-channel
// tensors (C), the pooled one. Returns z's layout.
inline ChannelLayout checked_tail_bf16(Device device, const char* op, ConstBf16NhwcView z,
                                       std::initializer_list<std::pair<const char*, ConstBf16NhwcView>> alike,
                                       const std::pair<const char*, ConstBf16NhwcView>& pooled,
                                       std::initializer_list<NamedView> per_channel) {
  const ChannelLayout layout = checked_channel_layout(op, z.shape);
  expect_bf16(device, op, "z", z, z.shape);
  for (const auto& [name, view] : alike) expect_bf16(device, op, name, view, z.shape);
  expect_bf16(device, op, pooled.first, pooled.second, pool_geometry(z.shape).output());
  expect_on(device, op, per_channel);
  expect_shapes(op, layout.channel_shape(), per_channel);
  return layout;
}

inline void check_block_tail_forward_bf16(Device device, ConstBf16NhwcView z, ConstTensorView bias,
                                          ConstTensorView gamma, ConstTensorView beta,
                                          ConstTensorView running_mean,
                                          ConstTensorView running_var, const BlockTailSettings& s,
                                          ConstBf16NhwcView y, ConstTensorView saved_mean,
                                          ConstTensorView saved_inv_std) {
  const char* op = "block_tail_forward_bf16";
  const ChannelLayout layout = checked_tail_bf16(device, op, z, {}, {"y", y},
                                                 {{"bias", bias},
                                                  {"gamma", gamma},
                                                  {"beta", beta},
                                                  {"running_mean", running_mean},
                                                  {"running_var", running_var},
                                                  {"saved_mean", saved_mean},
                                                  {"saved_inv_std", saved_inv_std}});
  PNEUMO_CHECK(!s.training || layout.count() > 1, op, ": z ", z.shape.str(),
               " has one value per channel; the batch variance needs at least two");
  check_block_tail_settings(op, layout, s);
}

inline void check_block_tail_backward_bf16(Device device, ConstBf16NhwcView z,
                                           ConstTensorView bias, ConstBf16NhwcView dy,
                                           ConstTensorView gamma, ConstTensorView beta,
                                           ConstTensorView saved_mean,
                                           ConstTensorView saved_inv_std,
                                           const BlockTailSettings& s, ConstBf16NhwcView dz,
                                           ConstTensorView dbias, ConstTensorView dgamma,
                                           ConstTensorView dbeta) {
  const char* op = "block_tail_backward_bf16";
  const ChannelLayout layout = checked_tail_bf16(device, op, z, {{"dz", dz}}, {"dy", dy},
                                                 {{"bias", bias},
                                                  {"gamma", gamma},
                                                  {"beta", beta},
                                                  {"saved_mean", saved_mean},
                                                  {"saved_inv_std", saved_inv_std},
                                                  {"dbias", dbias},
                                                  {"dgamma", dgamma},
                                                  {"dbeta", dbeta}});
  check_block_tail_settings(op, layout, s);
}

}  // namespace pneumo::ops
