// Inputs and references for `pneumo bench kernels`: deterministic random inputs shaped like the
// model's tensors, and naive fp64 loops for each op, independent of both backends, that every
// variant (CPU or CUDA) is checked against. Augmentation is the exception: its reference is the
// CPU twin augment_batch_cpu (the per-pixel math both backends share, docs/conventions.md).
#pragma once

#include <cstdint>
#include <vector>

#include "bench/kernel_bench.hpp"
#include "pneumo/augment.hpp"
#include "pneumo/random.hpp"
#include "pneumo/tensor.hpp"

namespace pneumo::bench {

std::vector<float> uniform_values(int64_t count, uint32_t seed, float lo, float hi);

// ---- Convolution --------------------------------------------------------------------------------
struct ConvProblem {
  Shape x, weight, y;  // (N, C, S, S), (K, C, 3, 3), (N, K, S, S)
  std::vector<float> x_values, weight_values, bias_values;
  double flops() const;  // 2 x N x K x S x S x C x 9
  double bytes() const;  // x, weight and bias read once, y written once
};
// x in [0, 1) for the first layer (images), in [-1, 1) after it (normalised activations);
// weights He-uniform (+-sqrt(6 / (9 C))); bias in [-0.1, 0.1).
ConvProblem make_conv_problem(const LayerShape& layer, int64_t batch, uint32_t seed);
// The images a conv output is checked on: the first, the middle and the last (distinct), so a
// batch-indexing error anywhere shows without an fp64 pass over the whole batch.
std::vector<int64_t> checked_images(int64_t batch);
// relu(conv3x3_same(x) + bias) in fp64 for those images, rounded to float:
// (images.size(), K, S, S).
std::vector<float> reference_conv(const ConvProblem& p, const std::vector<int64_t>& images);

// ---- Max pooling 2x2 / stride 2 'same' (top/left padding on odd sizes) ---------------------------
// Values (4 r + position in window) / 2^22 - 0.5 with r random: exact in float, never tied inside a
// 2x2 window (tie-breaking is a convention of its own, tested by MaxPoolTies.*).
std::vector<float> tie_free_pool_input(const Shape& x, uint32_t seed);
Shape pooled_shape(const Shape& x);
std::vector<float> reference_maxpool_forward(const std::vector<float>& x, const Shape& x_shape);
// The window's gradient goes to its (first) maximum; every other element gets 0.
std::vector<float> reference_maxpool_backward(const std::vector<float>& x,
                                              const std::vector<float>& dy, const Shape& x_shape);

// One pool shape with everything both directions need: x tie-free, y and dx from the references
// above (max pooling involves no rounding), dy uniform in [-1, 1).
struct PoolProblem {
  Shape x, y;
  std::vector<float> x_values, y_expected, dy_values, dx_expected;
  double forward_bytes() const;   // x read, y written
  double backward_bytes() const;  // x and dy read, dx written
};
// The pool over conv layer `layer`'s output: (N, K, S, S) -> (N, K, ceil(S/2), ceil(S/2)).
PoolProblem make_pool_problem(const LayerShape& layer, int64_t batch, uint32_t seed);

// ---- Batch normalisation, training (per channel over N, H, W) ----------------------------------
// Conv layer `layer`'s output (N, K, S, S) with each channel's mean far from zero (x in [-1, 3)),
// gamma in [0.5, 1.5), beta in [-0.5, 0.5), dy in [-1, 1); the expected forward outputs (y, the
// saved mean and 1 / sqrt(biased variance + epsilon)) and the backward's (dx, dgamma, dbeta, with
// the batch's own statistics), from fp64 loops as cudnnBatchNormalizationForwardTraining and
// cudnnBatchNormalizationBackward define them.
struct BatchNormProblem {
  static constexpr double kEpsilon = 1e-3;   // Keras' default, the model's
  static constexpr double kFactor = 0.01;    // running averages: 1 - Keras momentum 0.99
  Shape x, channel;                          // (N, K, S, S), (K)
  std::vector<float> x_values, gamma, beta, dy_values;
  std::vector<float> y_expected, mean_expected, inv_std_expected;
  std::vector<float> dx_expected, dgamma_expected, dbeta_expected;
  // What a two-pass kernel has to move: x read twice (statistics, then normalise) and y written;
  // backward x and dy read twice (the sums, then dx) and dx written. The per-channel vectors are
  // left out (kilobytes).
  double forward_bytes() const;
  double backward_bytes() const;
};
BatchNormProblem make_batchnorm_problem(const LayerShape& layer, int64_t batch, uint32_t seed);

// ---- Fused sigmoid + binary cross-entropy ---------------------------------------------------------
// Logits in [-6, 6) with |z| >= 1e-3 (the correct count at 0.5 is then the same from z or from
// sigmoid(z)), labels 0 or 1.
std::vector<float> bce_logits(int64_t n, uint32_t seed);
std::vector<float> bce_labels(int64_t n, uint32_t seed);
struct BceReference {
  std::vector<float> dlogits;  // (p - y) / n
  std::vector<float> stats;    // {sum of losses, correct count}
};
BceReference reference_sigmoid_bce(const std::vector<float>& logits,
                                   const std::vector<float>& labels);
struct LossProblem {
  std::vector<float> logits, labels;  // (n)
  BceReference expected;
  double bytes() const;  // logits and labels read, dlogits written
};
LossProblem make_loss_problem(int64_t n, uint32_t seed);

// ---- Augmentation ---------------------------------------------------------------------------------
struct AugmentProblem {
  int size = 150;
  int64_t image_count = 0;       // max(256, 4 N): a batch never reads one image twice in a row
  std::vector<uint8_t> images;   // (image_count, size, size)
  std::vector<int32_t> indices;  // (N)
  AugmentSettings settings;      // the recipe's defaults
  RngKey key;
  double output_bytes() const;   // N x size x size x 4
  double bytes() const;          // gathered uint8 pixels read + float pixels written
};
AugmentProblem make_augment_problem(int64_t batch, uint32_t seed);
// augment_batch_cpu's output (N, 1, size, size), with augmentation on or off.
std::vector<float> reference_augment(const AugmentProblem& p, bool enabled);

}  // namespace pneumo::bench
