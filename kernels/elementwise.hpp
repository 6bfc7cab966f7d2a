// Per-element math shared by the CUDA kernels and their CPU twins (docs/conventions.md): each function
// here is the whole arithmetic of one element of an op, so the tested code is the shipped code.
#pragma once

#include <cmath>
#include <cstdint>

#include "pneumo/hostdevice.hpp"
#include "pneumo/optimizer_step.hpp"
#include "pneumo/random.hpp"

namespace pneumo {

// ---- ReLU -------------------------------------------------------------------------------------
// A NaN passes through both directions (PyTorch's rule; cuDNN's under CUDNN_PROPAGATE_NAN), so a
// NaN activation reaches the loss, whose check stops the run, instead of turning into a 0.
PNEUMO_HD float relu(float x) { return x <= 0.0f ? 0.0f : x; }
// A convolution's output plus its channel's bias, then ReLU when asked: the CPU convolution, the
// CUDA bias kernel and the bf16 conversion back to float32 all finish this way.
PNEUMO_HD float bias_relu(float value, float bias, bool apply_relu) {
  value += bias;
  return apply_relu ? relu(value) : value;
}
// Gradient through ReLU given its output y (y > 0 exactly where x > 0; y is NaN where x is).
PNEUMO_HD float relu_backward(float y, float dy) { return y <= 0.0f ? 0.0f : dy; }

// ---- Dropout (inverted) ---------------------------------------------------------------------
// Multiplier of element `index`: 0 with probability `rate`, else 1 / (1 - rate). The mask is a
// pure function of (key, index), so the backward pass recomputes it instead of storing it. One
// Philox call yields four 32-bit words; element i uses word i % 4 of block i / 4.
PNEUMO_HD bool dropout_keeps(uint32_t bits, float rate) {
  return !(uniform_from_bits(bits) < rate);
}
PNEUMO_HD float dropout_multiplier_from_keep(bool keep, float rate) {
  return keep ? 1.0f / (1.0f - rate) : 0.0f;
}
PNEUMO_HD float dropout_multiplier_from_bits(uint32_t bits, float rate) {
  return dropout_multiplier_from_keep(dropout_keeps(bits, rate), rate);
}

// `index` is local: the element's place in the global batch is key.first + index.
PNEUMO_HD float dropout_multiplier(RngKey key, uint32_t index, float rate) {
  index += key.first;
  return dropout_multiplier_from_bits(philox4x32(key, index >> 2).v[index & 3u], rate);
}

// The Philox words of local group `group` (elements 4 group .. 4 group + 3): key.first is a
// multiple of 4 (the ops' entries check it), so local groups are global groups.
PNEUMO_HD Philox4 dropout_group_bits(RngKey key, uint32_t group) {
  return philox4x32(key, group + key.first / 4u);
}

// values[j] *= the multiplier of the group's element j, for its first `count` elements.
PNEUMO_HD void dropout_scale_group(float* values, int count, uint32_t group, float rate,
                                   RngKey key) {
  const Philox4 bits = dropout_group_bits(key, group);
  for (int j = 0; j < count; ++j) values[j] *= dropout_multiplier_from_bits(bits.v[j], rate);
}

// y = x * mask over elements [4 * group, 4 * group + 4) that are below n, from one Philox call:
// the values of dropout_multiplier element by element, at a quarter of the generator's cost. y may
// alias x: the four values are all read before any is written (on the GPU, four loads in flight
// per thread). The kernel and the CPU twin both walk the tensor in these groups; key.first is a
// multiple of 4 (the op's entry checks it), so local groups are global groups.
PNEUMO_HD void dropout_group(const float* x, float* y, int64_t n, uint32_t group, float rate,
                             RngKey key) {
  const int64_t first = static_cast<int64_t>(group) * 4;
  const int count = n - first < 4 ? static_cast<int>(n - first) : 4;
  float values[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int j = 0; j < count; ++j) values[j] = x[first + j];
  dropout_scale_group(values, count, group, rate, key);
  for (int j = 0; j < count; ++j) y[first + j] = values[j];
}

// The mask of 32 elements as one word, for ops that need an element's multiplier several times
// (the fused block tail reads each one in up to five passes): bit j is set when local element
// 32 * word + j is below n and kept. Eight Philox calls, the groups dropout_group draws (key.first
// a multiple of 4), so dropout_multiplier_from_keep of a bit is dropout_multiplier's value.
PNEUMO_HD uint32_t dropout_keep_word(RngKey key, int64_t n, uint32_t word, float rate) {
  uint32_t keep = 0;
  for (uint32_t g = 0; g < 8; ++g) {
    const int64_t first = static_cast<int64_t>(word) * 32 + 4 * g;
    if (first >= n) break;
    const Philox4 bits = dropout_group_bits(key, 8u * word + g);
    for (uint32_t j = 0; j < 4; ++j)
      if (first + j < n && dropout_keeps(bits.v[j], rate)) keep |= 1u << (4 * g + j);
  }
  return keep;
}

// Local element `index`'s multiplier from the words dropout_keep_word wrote.
PNEUMO_HD float dropout_multiplier_from_words(const uint32_t* keep, int64_t index, float rate) {
  return dropout_multiplier_from_keep(((keep[index >> 5] >> (index & 31)) & 1u) != 0, rate);
}

// ---- Fused sigmoid + binary cross-entropy on a logit -----------------------------------------
struct BceElement {
  float loss;      // -[y log p + (1 - y) log(1 - p)], p = sigmoid(z), weighted
  float gradient;  // d loss / d z = weight * (p - y), before dividing by the batch size
  float correct;   // 1 when (p > 0.5) == (y > 0.5), i.e. (z > 0) == (y > 0.5)
};

// Stable for any logit: loss = max(z, 0) - z y + log1p(exp(-|z|)); never inf or NaN for finite z.
PNEUMO_HD BceElement sigmoid_bce(float z, float y, float weight) {
  float abs_z = fabsf(z);
  float e = expf(-abs_z);  // in (0, 1]
  float loss = fmaxf(z, 0.0f) - z * y + log1pf(e);
  // sigmoid without overflow: for z >= 0, 1 / (1 + e); for z < 0, e / (1 + e).
  float p = z >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
  bool predicted_positive = z > 0.0f;
  bool positive = y > 0.5f;
  return {weight * loss, weight * (p - y), predicted_positive == positive ? 1.0f : 0.0f};
}

// ---- RMSprop (no momentum, not centred) -------------------------------------------------------
// mean_square <- rho * mean_square + (1 - rho) g^2, then
//   outside (torch.optim.RMSprop; Keras 2 and tf.keras <= 2.10 without momentum):
//     param <- param - lr g / (sqrt(mean_square) + eps)
//   inside (Keras 2.11+ and 3, TensorFlow's ApplyRMSProp kernel):
//     param <- param - lr g / sqrt(mean_square + eps)
// They differ wherever mean_square is not far above eps: a first step from a gradient of 1e-4 is
// 10x larger outside, and after one recipe epoch at 96 px about 28% of the weights (most of fc1)
// stepped more than 10% further outside than inside would.
PNEUMO_HD void rmsprop_update(float& param, float& mean_square, float grad, float lr, float rho,
                              float eps, bool eps_inside) {
  mean_square = rho * mean_square + (1.0f - rho) * grad * grad;
  param -= lr * grad / (eps_inside ? sqrtf(mean_square + eps) : sqrtf(mean_square) + eps);
}

// ---- AdamW (decoupled weight decay), as PyTorch's torch.optim.AdamW --------------------------
// The per-step constants (AdamWStep) are in pneumo/optimizer_step.hpp.
// param <- param (1 - lr wd); m <- beta1 m + (1 - beta1) g; v <- beta2 v + (1 - beta2) g^2;
// param <- param - (lr / c1) m / (sqrt(v) / sqrt(c2) + eps), with epsilon outside the root.
PNEUMO_HD void adamw_update(float& param, float& exp_avg, float& exp_avg_sq, float grad,
                            const AdamWStep& s) {
  param *= 1.0f - s.learning_rate * s.weight_decay;
  exp_avg = s.beta1 * exp_avg + (1.0f - s.beta1) * grad;
  exp_avg_sq = s.beta2 * exp_avg_sq + (1.0f - s.beta2) * grad * grad;
  const float denominator = sqrtf(exp_avg_sq) / sqrtf(s.bias_correction2) + s.epsilon;
  param -= (s.learning_rate / s.bias_correction1) * exp_avg / denominator;
}

// ---- Global average pooling (N, C, H, W) -> (N, C) ------------------------------------------
// The mean of one plane of `count` values, summed in order in float: both twins call this per
// plane, so they agree bit for bit (the planes of this network's last block are 5x5 or smaller).
PNEUMO_HD float plane_mean(const float* plane, int64_t count) {
  float sum = 0.0f;
  for (int64_t i = 0; i < count; ++i) sum += plane[i];
  return sum / static_cast<float>(count);
}
// Every element of a plane receives the plane's output gradient divided by the plane's size.
PNEUMO_HD float plane_mean_gradient(float dy, int64_t count) {
  return dy / static_cast<float>(count);
}

// ---- Label smoothing ------------------------------------------------------------------------
// The target a label y in {0, 1} trains towards: y (1 - s) + s / 2, as Keras' BinaryCrossentropy
// (label_smoothing=s) does; the fused loss takes it as its soft label and still counts a
// prediction correct by (z > 0) == (target > 0.5).
PNEUMO_HD float smoothed_label(float label, float smoothing) {
  return label * (1.0f - smoothing) + 0.5f * smoothing;
}

// ---- Non-finite marker ----------------------------------------------------------------------
PNEUMO_HD bool is_finite(float x) {
#ifdef __CUDA_ARCH__
  return isfinite(x);
#else
  return std::isfinite(x);
#endif
}

// New value of the marker after a step whose loss is `value`: it holds 0 until the first step with
// a NaN or infinite loss, then that step + 1, and keeps it whatever follows.
PNEUMO_HD float nonfinite_marker(float value, float marker, float step_plus_one) {
  return marker == 0.0f && !is_finite(value) ? step_plus_one : marker;
}

// The marker's value for `step`: live->step + 1 where live is set (pneumo/live_step.hpp).
PNEUMO_HD float nonfinite_step_plus_one(int64_t step, const LiveStep* live) {
  return static_cast<float>((live ? static_cast<int64_t>(live->step) : step) + 1);
}

// ---- Batch-norm per element -----------------------------------------------------------------
PNEUMO_HD float batchnorm_apply(float x, float mean, float inv_std, float gamma, float beta) {
  return gamma * (x - mean) * inv_std + beta;
}

// Batch-norm's input gradient for one element, from its channel's factors over the M values:
// scale = gamma inv_std, mean_dy = sum dy / M, mean_dy_xhat = sum dy xhat / M, with
// xhat = (x - mean) inv_std. The CPU backend and kernels/batchnorm.cu both call it, with the
// factors computed in double.
PNEUMO_HD float batchnorm_input_gradient(float x, float dy, float mean, float inv_std, float scale,
                                         float mean_dy, float mean_dy_xhat) {
  const float xhat = (x - mean) * inv_std;
  return scale * (dy - mean_dy - xhat * mean_dy_xhat);
}

// batchnorm_input_gradient's dx, through the gradient of the ReLU whose output x is when
// `relu_gate` (Backend::batchnorm_backward's flag): relu_backward's pass folded in. `kept`: with
// an inverted dropout between the ReLU and batch-norm, its multiplier of a kept element
// (dropout_multiplier_from_keep(true, rate)), else 1. x > 0 only where the mask kept the element,
// so wherever the gated dx is not zero dropout_backward would multiply it by `kept`, and where it
// is zero by `kept` or 0: the same bits as dropout_backward after the gate, without the mask
// (except where x is NaN, which passes the gate even where the mask dropped it: NaN * 0).
// Always multiplied (times 1 changes no bits), so that loops over it stay branch-free: a test of
// kept == 1 here stopped the CPU's loop from vectorising (batch-norm's backward 3x slower).
PNEUMO_HD float relu_gated(bool relu_gate, float x, float dx, float kept = 1.0f) {
  return relu_gate ? relu_backward(x, dx) * kept : dx;
}

// The factors above for one channel from the batch's sums over `count` values (sum dy and
// sum dy xhat, e.g. added up over every rank of a data-parallel run), in double.
struct BatchNormChannelFactors {
  float scale, mean_dy, mean_dy_xhat;
};
PNEUMO_HD BatchNormChannelFactors batchnorm_factors_from_sums(double sum_dy, double sum_dy_xhat,
                                                              double count, float gamma,
                                                              float inv_std) {
  return {static_cast<float>(gamma * static_cast<double>(inv_std)),
          static_cast<float>(sum_dy / count), static_cast<float>(sum_dy_xhat / count)};
}

}  // namespace pneumo
