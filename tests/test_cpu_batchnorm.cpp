// The CPU spatial batch-norm: finite-difference checks of dx, dgamma and dbeta through the
// training forward; the batch statistics and running averages against a hand computation in
// double over two steps (biased variance to normalise, unbiased for running_var); inference using
// the running statistics.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "gradient_check.hpp"
#include "pneumo/backend.hpp"
#include "pneumo/error.hpp"
#include "test_util.hpp"

namespace pneumo {
namespace {

using testing::all_close;
using testing::check_gradient;
using testing::nan_tensor;
using testing::random_tensor;
using testing::random_values;
using testing::to_host;
using testing::weighted_sum;

constexpr double kEpsilon = 1e-3;  // Keras's default

Tensor host_tensor(Shape shape, const std::vector<float>& values) {
  return Tensor::from_host(shape, values.data(), Device::Cpu);
}

// Batch statistics of channel c of x (N, C, H, W), in double.
struct ChannelStats {
  double mean, biased_var, unbiased_var;
};
ChannelStats channel_stats(const std::vector<float>& x, const Shape& s, int64_t c) {
  const int64_t pixels = s.h() * s.w(), count = s.n() * pixels;
  double sum = 0.0, squares = 0.0;
  for (int64_t n = 0; n < s.n(); ++n)
    for (int64_t p = 0; p < pixels; ++p) sum += x[static_cast<size_t>((n * s.c() + c) * pixels + p)];
  const double mean = sum / static_cast<double>(count);
  for (int64_t n = 0; n < s.n(); ++n)
    for (int64_t p = 0; p < pixels; ++p) {
      double d = x[static_cast<size_t>((n * s.c() + c) * pixels + p)] - mean;
      squares += d * d;
    }
  return {mean, squares / static_cast<double>(count), squares / static_cast<double>(count - 1)};
}

// gamma * (x - mean) / sqrt(var + eps) + beta per channel, in double.
std::vector<float> normalise(const std::vector<float>& x, const Shape& s,
                             const std::vector<double>& mean, const std::vector<double>& var,
                             const std::vector<float>& gamma, const std::vector<float>& beta) {
  std::vector<float> y(x.size());
  const int64_t pixels = s.h() * s.w();
  for (size_t i = 0; i < x.size(); ++i) {
    const size_t c = static_cast<size_t>(static_cast<int64_t>(i) / pixels % s.c());
    y[i] = static_cast<float>(gamma[c] * (x[i] - mean[c]) / std::sqrt(var[c] + kEpsilon) + beta[c]);
  }
  return y;
}

TEST(CpuBatchNorm, Gradients) {
  auto backend = make_cpu_backend(2);
  const Shape shape{2, 3, 5, 3};
  Tensor x = random_tensor(shape, Device::Cpu, 71, -2.0f, 3.0f);
  Tensor gamma = random_tensor({3}, Device::Cpu, 72, 0.5f, 1.5f);
  Tensor beta = random_tensor({3}, Device::Cpu, 73);
  Tensor running_mean = Tensor::zeros({3}, Device::Cpu), running_var = Tensor::zeros({3}, Device::Cpu);
  Tensor saved_mean = nan_tensor({3}), saved_inv_std = nan_tensor({3}), y = nan_tensor(shape);
  std::vector<float> loss_weights = random_values(shape.numel(), 74);
  Tensor dy = host_tensor(shape, loss_weights);
  auto loss = [&] {
    backend->batchnorm_forward_training(x, gamma, beta, running_mean, running_var, 0.01, kEpsilon,
                                        y, saved_mean, saved_inv_std);
    return weighted_sum(y, loss_weights);
  };
  loss();
  Tensor dx = nan_tensor(shape), dgamma = nan_tensor({3}), dbeta = nan_tensor({3});
  backend->batchnorm_backward(x, dy, gamma, saved_mean, saved_inv_std, kEpsilon, dx, dgamma, dbeta);
  EXPECT_TRUE(check_gradient("batchnorm dx", x, dx, loss));
  EXPECT_TRUE(check_gradient("batchnorm dgamma", gamma, dgamma, loss));
  EXPECT_TRUE(check_gradient("batchnorm dbeta", beta, dbeta, loss));
}

// A training forward of x over (3, 4, 5, 6) with random gamma and beta, and a dy, for the
// backward's gate tests: its saved statistics, and backward(...) with any gate options.
struct GateProblem {
  GateProblem(Backend& backend, Tensor x_given, uint32_t seed)
      : backend(backend),
        x(std::move(x_given)),
        dy(random_tensor(x.shape(), Device::Cpu, seed)),
        gamma(random_tensor({4}, Device::Cpu, seed + 1, 0.5f, 1.5f)),
        beta(random_tensor({4}, Device::Cpu, seed + 2)),
        saved_mean(nan_tensor({4})),
        saved_inv_std(nan_tensor({4})) {
    Tensor running_mean = Tensor::zeros({4}, Device::Cpu);
    Tensor running_var = Tensor::zeros({4}, Device::Cpu), y = nan_tensor(x.shape());
    backend.batchnorm_forward_training(x, gamma, beta, running_mean, running_var, 0.01, kEpsilon,
                                       y, saved_mean, saved_inv_std);
  }
  struct Gradients {
    Tensor dx, dgamma, dbeta;
  };
  Gradients backward(bool relu_gate = false, float rate = 0.0f, TensorView sums = {}) {
    Gradients g{nan_tensor(x.shape()), nan_tensor({4}), nan_tensor({4})};
    backend.batchnorm_backward(x, dy, gamma, saved_mean, saved_inv_std, kEpsilon, g.dx, g.dgamma,
                               g.dbeta, relu_gate, rate, sums);
    return g;
  }

  Backend& backend;
  Tensor x, dy, gamma, beta, saved_mean, saved_inv_std;
};
const Shape kGateShape{3, 4, 5, 6};

// Bit-equal and finite: two outputs left unwritten (NaN-filled) must not count as equal.
bool same_bytes(ConstTensorView a, ConstTensorView b) {
  const std::vector<float> ha = to_host(a), hb = to_host(b);
  return ha.size() == hb.size() &&
         std::all_of(ha.begin(), ha.end(), [](float v) { return std::isfinite(v); }) &&
         std::memcmp(ha.data(), hb.data(), ha.size() * sizeof(float)) == 0;
}

// relu_gate (x a ReLU's output): dx is relu_backward(x, the ungated dx) exactly, and the
// parameter gradients are the ungated ones. x holds exact zeros and negatives (dropped or never
// positive), so the gate has elements to zero.
TEST(CpuBatchNorm, TheReluGateIsReluBackwardOfTheUngatedGradient) {
  auto backend = make_cpu_backend(2);
  std::vector<float> xs = random_values(kGateShape.numel(), 81, -1.0f, 2.0f);
  for (size_t i = 0; i < xs.size(); i += 7) xs[i] = 0.0f;
  GateProblem p(*backend, host_tensor(kGateShape, xs), 82);
  const GateProblem::Gradients plain = p.backward(), gated = p.backward(/*relu_gate=*/true);
  Tensor expected = nan_tensor(kGateShape);
  backend->relu_backward(p.x, plain.dx, expected);
  EXPECT_TRUE(all_close(to_host(gated.dx), to_host(expected), 0.0, 0.0, "gated dx"));
  EXPECT_TRUE(all_close(to_host(gated.dgamma), to_host(plain.dgamma), 0.0, 0.0, "dgamma"));
  EXPECT_TRUE(all_close(to_host(gated.dbeta), to_host(plain.dbeta), 0.0, 0.0, "dbeta"));
  EXPECT_FALSE(all_close(to_host(gated.dx), to_host(plain.dx), 1e-6, 1e-6)) << "nothing was gated";
}

// gate_dropout_rate (x = dropout of a ReLU's output): dx is dropout_backward of the gated dx,
// bit for bit (the sign of zeros included), without the mask; the parameter gradients unchanged.
TEST(CpuBatchNorm, TheDropoutGateIsDropoutBackwardOfTheGatedGradient) {
  auto backend = make_cpu_backend(2);
  const float rate = 0.2f;
  const RngKey key{11, 3, 0, 2, 0};
  std::vector<float> as = random_values(kGateShape.numel(), 91, -1.0f, 2.0f);
  for (float& v : as) v = std::max(v, 0.0f);  // a ReLU's output
  Tensor x = nan_tensor(kGateShape);
  backend->dropout_forward(host_tensor(kGateShape, as), x, rate, key);
  GateProblem p(*backend, std::move(x), 92);
  const GateProblem::Gradients gated = p.backward(true), folded = p.backward(true, rate);
  Tensor expected = nan_tensor(kGateShape);
  backend->dropout_backward(gated.dx, expected, rate, key);
  EXPECT_TRUE(same_bytes(folded.dx, expected)) << "the folded dx is not dropout_backward's bits";
  EXPECT_TRUE(all_close(to_host(folded.dgamma), to_host(gated.dgamma), 0.0, 0.0, "dgamma"));
  EXPECT_TRUE(all_close(to_host(folded.dbeta), to_host(gated.dbeta), 0.0, 0.0, "dbeta"));
  EXPECT_FALSE(all_close(to_host(folded.dx), to_host(gated.dx), 1e-6, 1e-6))
      << "the dropout's multiplier is missing";
  // The rate rides on the ReLU gate only, and stays a rate.
  EXPECT_THROW(p.backward(false, rate), Error);
  EXPECT_THROW(p.backward(true, 1.0f), Error);
}

// dx_sums: dx summed per channel as the convolution before would sum its bias gradient from it,
// to the bit (the model then skips that convolution's bias pass); nothing else changes.
TEST(CpuBatchNorm, DxSumsAreTheConvolutionsBiasGradient) {
  auto backend = make_cpu_backend(2);
  std::vector<float> xs = random_values(kGateShape.numel(), 101, -1.0f, 2.0f);
  for (size_t i = 0; i < xs.size(); i += 5) xs[i] = 0.0f;
  GateProblem p(*backend, host_tensor(kGateShape, xs), 102);
  Tensor sums = nan_tensor({4});
  const GateProblem::Gradients plain = p.backward(true, 0.2f), summed = p.backward(true, 0.2f, sums);
  EXPECT_TRUE(same_bytes(summed.dx, plain.dx)) << "dx changed";
  EXPECT_TRUE(all_close(to_host(summed.dgamma), to_host(plain.dgamma), 0.0, 0.0, "dgamma"));
  EXPECT_TRUE(all_close(to_host(summed.dbeta), to_host(plain.dbeta), 0.0, 0.0, "dbeta"));
  // The convolution (2 -> 4 channels) whose output x would be, and its bias gradient from dx.
  Tensor conv_x = random_tensor({3, 2, 5, 6}, Device::Cpu, 105);
  Tensor dweight = nan_tensor({4, 2, 3, 3}), dbias = nan_tensor({4});
  backend->conv2d_backward_filter(conv_x, plain.dx, dweight, dbias);
  EXPECT_TRUE(same_bytes(sums, dbias)) << "dx_sums are not conv2d_backward_filter's dbias bits";
  Tensor wrong = nan_tensor({3});
  EXPECT_THROW(p.backward(true, 0.2f, wrong), Error);
}

// Two training steps from running mean 0 and variance 1, with update factor f:
//   running = (1 - f) running + f batch, batch variance unbiased; y uses the biased variance.
TEST(CpuBatchNorm, TrainingStatisticsAndRunningAveragesOverTwoSteps) {
  auto backend = make_cpu_backend(2);
  const Shape shape{3, 2, 3, 5};
  const double factor = 0.1;
  const std::vector<float> gamma_values{1.5f, 0.5f}, beta_values{0.25f, -1.0f};
  Tensor gamma = host_tensor({2}, gamma_values), beta = host_tensor({2}, beta_values);
  Tensor running_mean = host_tensor({2}, {0.0f, 0.0f});
  Tensor running_var = host_tensor({2}, {1.0f, 1.0f});
  std::vector<double> expected_mean{0.0, 0.0}, expected_var{1.0, 1.0};

  for (uint32_t step = 0; step < 2; ++step) {
    // Channel means and spreads far from 0 and 1, different on each step.
    std::vector<float> xs = random_values(shape.numel(), 80 + step, 2.0f + step, 6.0f + 3 * step);
    Tensor x = host_tensor(shape, xs);
    Tensor y = nan_tensor(shape), saved_mean = nan_tensor({2}), saved_inv_std = nan_tensor({2});
    backend->batchnorm_forward_training(x, gamma, beta, running_mean, running_var, factor, kEpsilon,
                                        y, saved_mean, saved_inv_std);

    std::vector<double> batch_mean, batch_biased_var;
    std::vector<float> inv_std;
    for (int64_t c = 0; c < 2; ++c) {
      ChannelStats stats = channel_stats(xs, shape, c);
      batch_mean.push_back(stats.mean);
      batch_biased_var.push_back(stats.biased_var);
      inv_std.push_back(static_cast<float>(1.0 / std::sqrt(stats.biased_var + kEpsilon)));
      expected_mean[c] = (1 - factor) * expected_mean[c] + factor * stats.mean;
      expected_var[c] = (1 - factor) * expected_var[c] + factor * stats.unbiased_var;
    }
    EXPECT_TRUE(all_close(to_host(saved_mean),
                          {static_cast<float>(batch_mean[0]), static_cast<float>(batch_mean[1])},
                          0, 1e-6, "saved_mean"));
    EXPECT_TRUE(all_close(to_host(saved_inv_std), inv_std, 0, 1e-6, "saved_inv_std"));
    EXPECT_TRUE(all_close(to_host(y),
                          normalise(xs, shape, batch_mean, batch_biased_var, gamma_values,
                                    beta_values),
                          1e-5, 1e-5, "y"));
    EXPECT_TRUE(all_close(to_host(running_mean),
                          {static_cast<float>(expected_mean[0]), static_cast<float>(expected_mean[1])},
                          0, 1e-6, "running_mean after step " + std::to_string(step + 1)));
    EXPECT_TRUE(all_close(to_host(running_var),
                          {static_cast<float>(expected_var[0]), static_cast<float>(expected_var[1])},
                          0, 1e-6, "running_var after step " + std::to_string(step + 1)));
  }
}

TEST(CpuBatchNorm, InferenceUsesRunningStatistics) {
  auto backend = make_cpu_backend(1);
  const Shape shape{1, 3, 7, 5};
  std::vector<float> xs = random_values(shape.numel(), 91, -3.0f, 3.0f);
  const std::vector<float> gamma_values{1.0f, 2.0f, 0.5f}, beta_values{0.0f, 0.5f, -0.5f};
  const std::vector<float> mean_values{0.5f, -1.0f, 2.0f}, var_values{4.0f, 0.25f, 1.0f};
  Tensor x = host_tensor(shape, xs), y = nan_tensor(shape);
  backend->batchnorm_forward_inference(x, host_tensor({3}, gamma_values),
                                       host_tensor({3}, beta_values), host_tensor({3}, mean_values),
                                       host_tensor({3}, var_values), kEpsilon, y);
  EXPECT_TRUE(all_close(to_host(y),
                        normalise(xs, shape, {mean_values.begin(), mean_values.end()},
                                  {var_values.begin(), var_values.end()}, gamma_values,
                                  beta_values),
                        1e-6, 1e-6, "inference y"));
}

TEST(CpuBatchNorm, TrainingNeedsTwoValuesPerChannel) {
  auto backend = make_cpu_backend(1);
  Tensor x = random_tensor({1, 2, 1, 1}, Device::Cpu, 5), y = nan_tensor({1, 2, 1, 1});
  Tensor gamma = random_tensor({2}, Device::Cpu, 6), stats = nan_tensor({2});
  Tensor running_mean = nan_tensor({2}), running_var = nan_tensor({2}), inv_std = nan_tensor({2});
  EXPECT_THROW(backend->batchnorm_forward_training(x, gamma, gamma, running_mean, running_var, 0.01,
                                                   kEpsilon, y, stats, inv_std),
               Error);
}

}  // namespace
}  // namespace pneumo
