// The CPU per-element ops: ReLU and dropout gradients; dropout's keep rate, exact 1/(1-p) scaling
// and shared forward/backward mask; the fused sigmoid + BCE (against the naive formula, at extreme
// logits, the correct count at 0.5, the gradient); the non-finite marker; RMSprop against a hand
// computation.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "gradient_check.hpp"
#include "pneumo/backend.hpp"
#include "elementwise.hpp"
#include "pneumo/random.hpp"
#include "test_util.hpp"

namespace pneumo {
namespace {

using testing::all_close;
using testing::check_gradient;
using testing::FiniteDifference;
using testing::nan_tensor;
using testing::random_tensor;
using testing::random_values;
using testing::to_host;
using testing::weighted_sum;

Tensor host_tensor(Shape shape, const std::vector<float>& values) {
  return Tensor::from_host(shape, values.data(), Device::Cpu);
}

// ---- ReLU -------------------------------------------------------------------------------------

TEST(CpuRelu, ForwardAndGradient) {
  auto backend = make_cpu_backend(2);
  const Shape shape{2, 3, 7, 5};
  Tensor x = random_tensor(shape, Device::Cpu, 131);
  Tensor y = nan_tensor(shape);
  backend->relu_forward(x, y);
  std::vector<float> xs = to_host(x), expected;
  for (float v : xs) expected.push_back(v > 0 ? v : 0);
  EXPECT_EQ(to_host(y), expected);

  std::vector<float> loss_weights = random_values(shape.numel(), 132);
  Tensor dy = host_tensor(shape, loss_weights), dx = nan_tensor(shape);
  backend->relu_backward(y, dy, dx);
  FiniteDifference options;
  EXPECT_TRUE(check_gradient(
      "relu dx", x, dx,
      [&] {
        backend->relu_forward(x, y);
        return weighted_sum(y, loss_weights);
      },
      options, [&](int64_t i) { return std::fabs(xs[static_cast<size_t>(i)]) < 2 * options.step; }));

  // In place: y may alias x, dx may alias dy.
  Tensor in_place = host_tensor(shape, xs);
  backend->relu_forward(in_place, in_place);
  EXPECT_EQ(to_host(in_place), expected);
  backend->relu_backward(y, dy, dy);
  EXPECT_EQ(to_host(dy), to_host(dx));
}

// A NaN passes ReLU both ways (before 2026-12-07 it became 0 and its gradient 0); -0 and 0 give
// +0 and no gradient, as before.
TEST(CpuRelu, ANanPassesThroughBothWays) {
  auto backend = make_cpu_backend(1);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor x = host_tensor({5}, {nan, -1.0f, -0.0f, 0.0f, 2.0f}), y = nan_tensor({5});
  backend->relu_forward(x, y);
  const std::vector<float> ys = to_host(y);
  EXPECT_TRUE(std::isnan(ys[0]));
  for (int i = 1; i < 4; ++i) {
    EXPECT_EQ(ys[i], 0.0f) << i;
    EXPECT_FALSE(std::signbit(ys[i])) << i;
  }
  EXPECT_EQ(ys[4], 2.0f);
  Tensor dy = host_tensor({5}, {1, 2, 3, 4, 5}), dx = nan_tensor({5});
  backend->relu_backward(y, dy, dx);
  EXPECT_EQ(to_host(dx), (std::vector<float>{1, 0, 0, 0, 5}));
}

// ---- Dropout ----------------------------------------------------------------------------------

TEST(CpuDropout, KeepRateScalingAndSharedMask) {
  auto backend = make_cpu_backend(2);
  const float rate = 0.2f;
  const RngKey key = make_key(7, RngStream::kDropout, 3, 11, 1);
  const Shape shape{4, 5, 50, 50};  // 50,000 elements
  Tensor x = random_tensor(shape, Device::Cpu, 141, 0.5f, 1.5f);  // never 0, so drops show
  Tensor y = nan_tensor(shape);
  backend->dropout_forward(x, y, rate, key);
  Tensor dy = random_tensor(shape, Device::Cpu, 142, 0.5f, 1.5f), dx = nan_tensor(shape);
  backend->dropout_backward(dy, dx, rate, key);

  const std::vector<float> xs = to_host(x), ys = to_host(y), dys = to_host(dy), dxs = to_host(dx);
  const float scale = 1.0f / (1.0f - rate);
  int64_t kept = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const bool forward_kept = ys[i] != 0.0f;
    if (forward_kept) {
      ++kept;
      ASSERT_EQ(ys[i], xs[i] * scale) << "element " << i << " not scaled by exactly 1/(1-p)";
      ASSERT_EQ(dxs[i], dys[i] * scale) << "element " << i << " kept forward, not backward";
    } else {
      ASSERT_EQ(dxs[i], 0.0f) << "element " << i << " dropped forward, not backward";
    }
  }
  // Keep count ~ Binomial(n, 1 - p): within 4 standard deviations.
  const double n = static_cast<double>(xs.size());
  const double sigma = std::sqrt(n * rate * (1 - rate));
  EXPECT_NEAR(static_cast<double>(kept), n * (1 - rate), 4 * sigma);

  // Another step draws another mask.
  Tensor other = nan_tensor(shape);
  backend->dropout_forward(x, other, rate, make_key(7, RngStream::kDropout, 3, 12, 1));
  EXPECT_NE(to_host(other), ys);
}

// The CPU twin walks the tensor in groups of four on several threads; every element must still
// get exactly dropout_multiplier(key, index, rate), the rule the parity test holds the kernel to,
// at sizes that end inside a group and that split across the workers, in place too.
TEST(CpuDropout, EveryElementGetsTheMultiplierOfItsIndex) {
  const float rate = 0.25f;
  const RngKey key = make_key(3, RngStream::kDropout, 1, 5, 2);
  for (int threads : {1, 3}) {
    auto backend = make_cpu_backend(threads);
    for (int64_t n : {1, 3, 4, 5, 4097, 65537, 200003}) {
      SCOPED_TRACE(::testing::Message() << threads << " threads, " << n << " elements");
      Tensor x = random_tensor({n}, Device::Cpu, 161, 0.5f, 1.5f), y = nan_tensor({n});
      backend->dropout_forward(x, y, rate, key);
      const std::vector<float> xs = to_host(x), ys = to_host(y);
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(ys[size_t(i)],
                  xs[size_t(i)] * dropout_multiplier(key, static_cast<uint32_t>(i), rate))
            << "element " << i;
      backend->dropout_backward(x, x, rate, key);  // in place
      ASSERT_EQ(to_host(x), ys);
    }
  }
}

TEST(CpuDropout, Gradient) {
  auto backend = make_cpu_backend(1);
  const Shape shape{1, 3, 7, 5};
  const float rate = 0.3f;
  const RngKey key = make_key(1, RngStream::kDropout, 0, 2);
  Tensor x = random_tensor(shape, Device::Cpu, 151), y = nan_tensor(shape);
  std::vector<float> loss_weights = random_values(shape.numel(), 152);
  Tensor dy = host_tensor(shape, loss_weights), dx = nan_tensor(shape);
  backend->dropout_backward(dy, dx, rate, key);
  EXPECT_TRUE(check_gradient("dropout dx", x, dx, [&] {
    backend->dropout_forward(x, y, rate, key);
    return weighted_sum(y, loss_weights);
  }));
}

// ---- Sigmoid + binary cross-entropy -----------------------------------------------------------

struct LossResult {
  std::vector<float> dlogits;
  float loss_sum, correct;
};

LossResult run_loss(Backend& backend, const std::vector<float>& logits,
                    const std::vector<float>& labels, const std::vector<float>* weights) {
  const int64_t n = static_cast<int64_t>(logits.size());
  Tensor z = host_tensor({n, 1}, logits), y = host_tensor({n}, labels);
  Tensor w = weights ? host_tensor({n}, *weights) : Tensor();
  Tensor dlogits = nan_tensor({n, 1}), stats = Tensor::zeros({2}, Device::Cpu);
  backend.sigmoid_bce(z, y, weights ? ConstTensorView(w) : ConstTensorView(), dlogits, stats);
  std::vector<float> s = to_host(stats);
  return {to_host(dlogits), s[0], s[1]};
}

TEST(CpuSigmoidBce, MatchesNaiveFormulaForModerateLogits) {
  auto backend = make_cpu_backend(1);
  const std::vector<float> logits = random_values(9, 161, -6.0f, 6.0f);
  const std::vector<float> labels{0, 1, 1, 0, 1, 0, 0.25f, 1, 0};
  const std::vector<float> weights = random_values(9, 162, 0.5f, 2.0f);
  LossResult result = run_loss(*backend, logits, labels, &weights);
  double expected_sum = 0.0;
  std::vector<float> expected_gradient;
  for (size_t i = 0; i < logits.size(); ++i) {
    const double s = 1.0 / (1.0 + std::exp(-static_cast<double>(logits[i])));
    expected_sum += weights[i] * -(labels[i] * std::log(s) + (1 - labels[i]) * std::log(1 - s));
    expected_gradient.push_back(static_cast<float>(weights[i] * (s - labels[i]) / 9.0));
  }
  EXPECT_NEAR(result.loss_sum, expected_sum, 1e-5 * expected_sum);
  EXPECT_TRUE(all_close(result.dlogits, expected_gradient, 1e-7, 1e-5, "dlogits"));
}

// One rank's shard of a data-parallel batch: the gradient is of the whole batch's mean loss
// (divided by batch_count, the global batch), the sums are the shard's own.
TEST(CpuSigmoidBce, AShardsGradientIsDividedByTheWholeBatch) {
  auto backend = make_cpu_backend(1);
  const std::vector<float> logits = random_values(5, 163, -3.0f, 3.0f);
  const std::vector<float> labels{0, 1, 1, 0, 1};
  const int64_t n = 5, batch_count = 12;  // 5 of 12 images on this rank
  Tensor z = host_tensor({n}, logits), y = host_tensor({n}, labels);
  Tensor dlogits = nan_tensor({n}), stats = Tensor::zeros({2}, Device::Cpu);
  backend->sigmoid_bce(z, y, ConstTensorView(), dlogits, stats, batch_count);
  std::vector<float> expected_gradient;
  double expected_sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const double s = 1.0 / (1.0 + std::exp(-static_cast<double>(logits[i])));
    expected_sum += -(labels[i] * std::log(s) + (1 - labels[i]) * std::log(1 - s));
    expected_gradient.push_back(static_cast<float>((s - labels[i]) / batch_count));
  }
  EXPECT_TRUE(all_close(to_host(dlogits), expected_gradient, 1e-8, 1e-5, "shard dlogits"));
  EXPECT_NEAR(to_host(stats)[0], expected_sum, 1e-5 * expected_sum);
}

TEST(CpuSigmoidBce, ExtremeLogitsStayFinite) {
  auto backend = make_cpu_backend(1);
  // Confidently wrong (loss ~ 100) and confidently right (loss ~ 0), both signs.
  const std::vector<float> logits{100, -100, 100, -100}, labels{0, 1, 1, 0};
  for (size_t i = 0; i < logits.size(); ++i) {
    LossResult r = run_loss(*backend, {logits[i]}, {labels[i]}, nullptr);
    const bool wrong = (logits[i] > 0) != (labels[i] > 0.5f);
    ASSERT_TRUE(std::isfinite(r.loss_sum) && std::isfinite(r.dlogits[0])) << "logit " << logits[i];
    EXPECT_NEAR(r.loss_sum, wrong ? 100.0 : 0.0, 1e-4) << "logit " << logits[i];
    EXPECT_NEAR(r.dlogits[0], wrong ? (labels[i] > 0.5f ? -1.0 : 1.0) : 0.0, 1e-6);
    EXPECT_EQ(r.correct, wrong ? 0.0f : 1.0f);
  }
}

TEST(CpuSigmoidBce, CorrectCountAtHalfAndStatsAccumulate) {
  auto backend = make_cpu_backend(1);
  // p > 0.5 (z > 0) predicts positive; z = 0 exactly (p = 0.5) predicts negative.
  const std::vector<float> logits{0.0f, 0.0f, 0.1f, -0.1f, 3.0f}, labels{0, 1, 1, 1, 0};
  Tensor z = host_tensor({5}, logits), y = host_tensor({5}, labels);
  Tensor dlogits = nan_tensor({5}), stats = host_tensor({2}, {1.5f, 2.0f});
  backend->sigmoid_bce(z, y, ConstTensorView(), dlogits, stats);
  backend->sigmoid_bce(z, y, ConstTensorView(), dlogits, stats);
  std::vector<float> s = to_host(stats);
  EXPECT_EQ(s[1], 2.0f + 2 * 2.0f);  // labels 0 at z = 0 and 1 at z = 0.1 are right, each call
  double one_call = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const double p = 1.0 / (1.0 + std::exp(-static_cast<double>(logits[i])));
    one_call += -(labels[i] * std::log(p) + (1 - labels[i]) * std::log(1 - p));
  }
  EXPECT_NEAR(s[0], 1.5 + 2 * one_call, 1e-5);
}

// L = mean weighted loss = stats[0] / N; dlogits must be dL/dz.
TEST(CpuSigmoidBce, Gradient) {
  auto backend = make_cpu_backend(1);
  const int64_t n = 7;
  Tensor z = random_tensor({n}, Device::Cpu, 171, -4.0f, 4.0f);
  Tensor labels = host_tensor({n}, {0, 1, 1, 0, 0.25f, 1, 0});
  Tensor weights = random_tensor({n}, Device::Cpu, 172, 0.5f, 2.0f);
  Tensor dlogits = nan_tensor({n}), stats = Tensor::zeros({2}, Device::Cpu);
  auto mean_loss = [&] {
    Tensor scratch = nan_tensor({n}), s = Tensor::zeros({2}, Device::Cpu);
    backend->sigmoid_bce(z, labels, weights, scratch, s);
    return static_cast<double>(to_host(s)[0]) / n;
  };
  backend->sigmoid_bce(z, labels, weights, dlogits, stats);
  EXPECT_TRUE(check_gradient("sigmoid_bce dlogits", z, dlogits, mean_loss));
}

// ---- Non-finite marker ------------------------------------------------------------------------

// The marker keeps the first bad step (+1) and ignores later ones; finite values leave it at 0.
TEST(CpuMarkNonfinite, RecordsTheFirstStepWhoseValueIsNotFinite) {
  auto backend = make_cpu_backend(1);
  Tensor marker = Tensor::zeros({1}, Device::Cpu);
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> values{1.0f, -3e38f, 0.0f, nan, inf, 2.0f};
  for (size_t step = 0; step < values.size(); ++step) {
    Tensor value = host_tensor({1}, {values[step]});
    backend->mark_nonfinite(value, static_cast<int64_t>(step), marker);
    EXPECT_EQ(to_host(marker)[0], step < 3 ? 0.0f : 4.0f) << "after step " << step;
  }
  Tensor other = Tensor::zeros({1}, Device::Cpu);
  backend->mark_nonfinite(host_tensor({1}, {-inf}), 0, other);
  EXPECT_EQ(to_host(other)[0], 1.0f) << "step 0 is recorded as 1, not as 'none'";
}

// ---- RMSprop ----------------------------------------------------------------------------------

TEST(CpuRmsprop, MatchesHandComputationOverThreeSteps) {
  auto backend = make_cpu_backend(1);
  const float lr = 1e-2f, rho = 0.9f, eps = 1e-7f;
  const std::vector<float> initial{0.5f, -1.0f, 2.0f, 0.0f, 1e-3f};
  std::vector<double> params{initial.begin(), initial.end()}, mean_square(5, 0.0);
  Tensor p = host_tensor({5}, initial);
  Tensor ms = Tensor::zeros({5}, Device::Cpu);
  for (uint32_t step = 0; step < 3; ++step) {
    std::vector<float> grads = random_values(5, 181 + step);
    grads[3] = 0.0f;  // a zero gradient leaves its parameter in place
    backend->rmsprop_step(p, host_tensor({5}, grads), ms, lr, rho, eps);
    for (size_t i = 0; i < 5; ++i) {
      mean_square[i] = rho * mean_square[i] + (1.0 - rho) * grads[i] * grads[i];
      params[i] -= lr * grads[i] / (std::sqrt(mean_square[i]) + eps);
    }
    if (step == 0) {
      // From mean_square 0 the first step moves every parameter by lr * sign(g) / sqrt(1 - rho)
      // (the epsilon aside, for gradients far above it): 0.5 -> 0.5 - 0.01 sqrt(10) for g > 0.
      const std::vector<float> after = to_host(p);
      for (size_t i = 0; i < 5; ++i) {
        if (grads[i] == 0.0f) continue;
        EXPECT_NEAR(after[i], initial[i] - std::copysign(0.0316227766, grads[i]), 1e-6);
      }
    }
    EXPECT_TRUE(all_close(to_host(ms), {mean_square.begin(), mean_square.end()}, 0, 1e-6,
                          "mean_square after step " + std::to_string(step + 1)));
    EXPECT_TRUE(all_close(to_host(p), {params.begin(), params.end()}, 1e-7, 1e-6,
                          "params after step " + std::to_string(step + 1)));
  }
}

// Small gradients, where the two placements of epsilon part: outside (PyTorch) a first step from
// g = 1e-4 is lr g / (sqrt(0.1) 1e-4 + 1e-7) = 3.15 lr; inside (Keras 2.11+ and 3)
// lr g / sqrt(1e-9 + 1e-7) = 0.315 lr. Each placement matches its own hand computation over three steps.
TEST(CpuRmsprop, EpsilonInsideTheRootIsKerasForm) {
  auto backend = make_cpu_backend(1);
  const float lr = 1e-3f, rho = 0.9f, eps = 1e-7f;
  const std::vector<float> grads{1e-4f, -3e-5f, 2e-6f, 5e-3f};
  for (bool inside : {false, true}) {
    std::vector<double> params(4, 0.0), mean_square(4, 0.0);
    Tensor p = Tensor::zeros({4}, Device::Cpu), ms = Tensor::zeros({4}, Device::Cpu);
    for (int step = 0; step < 3; ++step) {
      backend->rmsprop_step(p, host_tensor({4}, grads), ms, lr, rho, eps, inside);
      for (size_t i = 0; i < 4; ++i) {
        mean_square[i] = rho * mean_square[i] + (1.0 - rho) * grads[i] * grads[i];
        params[i] -= lr * grads[i] /
                     (inside ? std::sqrt(mean_square[i] + eps) : std::sqrt(mean_square[i]) + eps);
      }
      EXPECT_TRUE(all_close(to_host(p), {params.begin(), params.end()}, 0, 1e-5,
                            std::string(inside ? "inside" : "outside") + ", step " +
                                std::to_string(step + 1)));
    }
  }
  Tensor outside = Tensor::zeros({1}, Device::Cpu), inside = Tensor::zeros({1}, Device::Cpu);
  Tensor ms_a = Tensor::zeros({1}, Device::Cpu), ms_b = Tensor::zeros({1}, Device::Cpu);
  backend->rmsprop_step(outside, host_tensor({1}, {1e-4f}), ms_a, lr, rho, eps, false);
  backend->rmsprop_step(inside, host_tensor({1}, {1e-4f}), ms_b, lr, rho, eps, true);
  EXPECT_NEAR(to_host(outside)[0], -3.152e-3, 2e-6);
  EXPECT_NEAR(to_host(inside)[0], -3.147e-4, 2e-7);
}

}  // namespace
}  // namespace pneumo
