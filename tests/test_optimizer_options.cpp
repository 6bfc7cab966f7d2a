// The training options the generalisation work added to the optimizer and the loss: AdamW against
// PyTorch's update written out in double, the Trainer's optimizer state and step count, and label
// smoothing of the training targets.
#include <gtest/gtest.h>

#include <cmath>

#include "cli/commands/flag_text.hpp"
#include "pneumo/backend.hpp"
#include "elementwise.hpp"
#include "pneumo/model.hpp"
#include "pneumo/trainer.hpp"
#include "test_util.hpp"

namespace pneumo {
namespace {

using testing::all_close;
using testing::random_values;
using testing::to_host;

Tensor host_tensor(Shape shape, const std::vector<float>& values) {
  return Tensor::from_host(shape, values.data(), Device::Cpu);
}

AdamWStep adamw_constants(double lr, double beta1, double beta2, double eps, double wd, int t) {
  return {float(lr), float(beta1), float(beta2), float(eps), float(wd),
          float(1.0 - std::pow(beta1, t)), float(1.0 - std::pow(beta2, t))};
}

// torch.optim.AdamW's single-tensor update, step by step, in double.
TEST(CpuAdamW, MatchesPyTorchsUpdateInDoubleOverFourSteps) {
  auto backend = make_cpu_backend(1);
  // The hyper-parameters as float32 holds them (0.999f is not 0.999), then everything in double.
  const double lr = double(1e-2f), beta1 = double(0.9f), beta2 = double(0.999f),
               eps = double(1e-8f), wd = double(0.1f);
  const std::vector<float> initial{0.5f, -1.0f, 2.0f, 0.0f, 1e-3f, -3.0f};
  std::vector<double> param(initial.begin(), initial.end()), m(6, 0.0), v(6, 0.0);
  Tensor p = host_tensor({6}, initial), exp_avg = Tensor::zeros({6}, Device::Cpu),
         exp_avg_sq = Tensor::zeros({6}, Device::Cpu);
  for (int t = 1; t <= 4; ++t) {
    std::vector<float> g = random_values(6, 300 + t, -1.0f, 1.0f);
    g[3] = 0.0f;  // no gradient: only the decay moves it (and it is 0)
    backend->adamw_step(p, host_tensor({6}, g), exp_avg, exp_avg_sq,
                        adamw_constants(lr, beta1, beta2, eps, wd, t));
    const double c1 = 1.0 - std::pow(beta1, t), c2 = 1.0 - std::pow(beta2, t);
    for (size_t i = 0; i < 6; ++i) {
      param[i] *= 1.0 - lr * wd;
      m[i] = beta1 * m[i] + (1.0 - beta1) * g[i];
      v[i] = beta2 * v[i] + (1.0 - beta2) * g[i] * g[i];
      param[i] -= (lr / c1) * m[i] / (std::sqrt(v[i]) / std::sqrt(c2) + eps);
    }
    EXPECT_TRUE(all_close(to_host(p), {param.begin(), param.end()}, 1e-6, 1e-5,
                          "params after step " + std::to_string(t)));
    EXPECT_TRUE(all_close(to_host(exp_avg), {m.begin(), m.end()}, 1e-8, 1e-5, "exp_avg"));
    EXPECT_TRUE(all_close(to_host(exp_avg_sq), {v.begin(), v.end()}, 1e-10, 1e-5, "exp_avg_sq"));
  }
}

TEST(CpuAdamW, WeightDecayIsDecoupledFromTheGradient) {
  auto backend = make_cpu_backend(1);
  // A zero gradient leaves the moments at 0, so the only change is param *= 1 - lr * wd.
  Tensor p = host_tensor({3}, {2.0f, -4.0f, 0.5f});
  Tensor m = Tensor::zeros({3}, Device::Cpu), v = Tensor::zeros({3}, Device::Cpu);
  backend->adamw_step(p, host_tensor({3}, {0.0f, 0.0f, 0.0f}), m, v,
                      adamw_constants(0.1, 0.9, 0.999, 1e-8, 0.5, 1));
  const std::vector<float> after = to_host(p);
  EXPECT_FLOAT_EQ(after[0], 2.0f * 0.95f);
  EXPECT_FLOAT_EQ(after[1], -4.0f * 0.95f);
  EXPECT_FLOAT_EQ(after[2], 0.5f * 0.95f);
  // The first step with a gradient moves a parameter by lr (the bias correction makes
  // m / sqrt(v) = sign(g)), whatever the gradient's size.
  Tensor q = host_tensor({2}, {1.0f, 1.0f});
  Tensor m2 = Tensor::zeros({2}, Device::Cpu), v2 = Tensor::zeros({2}, Device::Cpu);
  backend->adamw_step(q, host_tensor({2}, {1e-3f, -50.0f}), m2, v2,
                      adamw_constants(0.01, 0.9, 0.999, 1e-8, 0.0, 1));
  EXPECT_NEAR(to_host(q)[0], 0.99, 1e-5);
  EXPECT_NEAR(to_host(q)[1], 1.01, 1e-6);
}

TEST(CpuAdamW, RefusesMismatchedStateAndAStepZero) {
  auto backend = make_cpu_backend(1);
  Tensor p = Tensor::zeros({4}, Device::Cpu), g = Tensor::zeros({4}, Device::Cpu);
  Tensor small = Tensor::zeros({3}, Device::Cpu), v = Tensor::zeros({4}, Device::Cpu);
  EXPECT_THROW(backend->adamw_step(p, g, small, v, adamw_constants(1e-3, 0.9, 0.999, 1e-8, 0, 1)),
               Error);
  EXPECT_THROW(backend->adamw_step(p, g, v, v, adamw_constants(1e-3, 0.9, 0.999, 1e-8, 0, 0)),
               Error);
}

TEST(Trainer, AdamWHoldsTwoMomentsAndCountsItsSteps) {
  auto backend = make_cpu_backend(1);
  ModelConfig config;
  config.input_size = 16;
  Model model(*backend, config, 4);
  model.initialize(2);
  AugmentSettings none;
  none.enabled = false;
  Trainer trainer(*backend, model, 4, none, 1);
  EXPECT_EQ(trainer.optimizer_state().numel(), model.parameters().numel());  // RMSprop
  trainer.use_optimizer(OptimizerKind::AdamW);
  ASSERT_EQ(trainer.optimizer_state().numel(), 2 * model.parameters().numel());
  std::vector<uint8_t> images(4 * 16 * 16), labels{0, 1, 0, 1};
  for (size_t i = 0; i < images.size(); ++i) images[i] = static_cast<uint8_t>(i * 7);
  ImageSet data = ImageSet::upload(Device::Cpu, images.data(), 4, 16, labels.data());
  const std::vector<float> before = to_host(model.parameters());
  trainer.train_epoch(data, {0, 1, 2, 3}, 0);
  trainer.train_epoch(data, {3, 2, 1, 0}, 1);
  EXPECT_EQ(trainer.optimizer_steps(), 2);
  const std::vector<float> state = to_host(trainer.optimizer_state());
  const size_t n = before.size();
  double first = 0.0, second = 0.0;
  for (size_t i = 0; i < n; ++i) {
    first += std::fabs(state[i]);
    second += state[n + i];
    ASSERT_GE(state[n + i], 0.0f) << "a second moment is never negative";
  }
  EXPECT_GT(first, 0.0);
  EXPECT_GT(second, 0.0);
  EXPECT_NE(to_host(model.parameters()), before);
  EXPECT_THROW(cli::parse_optimizer("sgd"), Error);
  EXPECT_STREQ(optimizer_name(cli::parse_optimizer("adamw")), "adamw");
}

TEST(LabelSmoothing, TrainingTargetsMoveTowardsOneHalf) {
  EXPECT_FLOAT_EQ(smoothed_label(0.0f, 0.2f), 0.1f);
  EXPECT_FLOAT_EQ(smoothed_label(1.0f, 0.2f), 0.9f);
  EXPECT_FLOAT_EQ(smoothed_label(1.0f, 0.0f), 1.0f);
  std::vector<uint8_t> images(3 * 4), labels{1, 0, 1};
  ImageSet set = ImageSet::upload(Device::Cpu, images.data(), 3, 2, labels.data());
  EXPECT_EQ(to_host(set.labels), std::vector<float>({1.0f, 0.0f, 1.0f}));
  set.smooth_labels(labels, 0.1f);
  const std::vector<float> targets = to_host(set.labels);
  EXPECT_FLOAT_EQ(targets[0], 0.95f);
  EXPECT_FLOAT_EQ(targets[1], 0.05f);
  EXPECT_FLOAT_EQ(targets[2], 0.95f);
  EXPECT_THROW(set.smooth_labels({1, 0}, 0.1f), Error);
  EXPECT_THROW(set.smooth_labels(labels, 1.0f), Error);
  // The fused loss trains towards the soft target: its gradient is p - 0.95 for a positive.
  auto backend = make_cpu_backend(1);
  Tensor z = host_tensor({1}, {0.0f}), dlogits = Tensor::zeros({1}, Device::Cpu);
  // stats accumulate (loss sum, correct count): start them off zero so an untouched one shows.
  Tensor stats = host_tensor({2}, {1.0f, 7.0f});
  backend->sigmoid_bce(z, ConstTensorView{set.labels.data(), {1}, Device::Cpu}, {}, dlogits, stats);
  EXPECT_FLOAT_EQ(to_host(dlogits)[0], 0.5f - 0.95f);
  // The loss at p = 0.5 is ln 2 whatever the target.
  EXPECT_NEAR(to_host(stats)[0], 1.0f + std::log(2.0f), 1e-6);
  EXPECT_FLOAT_EQ(to_host(stats)[1], 7.0f) << "z = 0 predicts NORMAL; the target is PNEUMONIA";
}

}  // namespace
}  // namespace pneumo
