// The trainer's own device work on the CUDA backend, against the CPU backend: per-image loss
// weights (class weights) and smoothed labels gathered by the step's indices on the device and
// applied in the loss, and a NaN loss reported with the epoch and step it appeared in (the marker
// written on the device and read back). Skipped without a GPU; the same checks also run with a
// second CPU backend in the CUDA one's place, so their logic is known good everywhere. On the CPU
// alone: the class weights checked by the loss's linearity in them, not against another backend.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "pneumo/backend.hpp"
#include "pneumo/error.hpp"
#include "pneumo/model.hpp"
#include "pneumo/sampling.hpp"
#include "pneumo/trainer.hpp"
#include "test_util.hpp"

namespace pneumo {
namespace {

constexpr int kSize = 24, kCount = 40, kBatch = 8;  // 5 steps per epoch

std::vector<uint8_t> pixels() { return testing::random_pixels(kCount, kSize, 41); }

std::vector<uint8_t> labels() {
  std::vector<uint8_t> l(kCount);
  for (int i = 0; i < kCount; ++i) l[size_t(i)] = static_cast<uint8_t>(i % 3 != 0);
  return l;
}

struct Run {
  std::unique_ptr<Backend> backend;
  Model model;
  Trainer trainer;
  ImageSet data;
  std::vector<uint8_t> label_bytes = labels();

  explicit Run(std::unique_ptr<Backend> b)
      : backend(std::move(b)),
        model(*backend, config(), kBatch),
        trainer(*backend, model, kBatch, AugmentSettings{}, 7) {
    const std::vector<uint8_t> image_bytes = pixels();
    data = ImageSet::upload(backend->device(), image_bytes.data(), kCount, kSize,
                            label_bytes.data());
    model.initialize(3);
  }
  static ModelConfig config() {
    ModelConfig c;
    c.input_size = kSize;
    return c;
  }
  std::vector<int32_t> order(uint32_t epoch) const {
    return epoch_indices(label_bytes, BalanceMode::None, 5, epoch);
  }
};

// One epoch with the learning rate at 0 (the weights never move, so the epoch's loss is a
// function of the data, the augmentation and dropout draws, and the loss's weights and targets
// alone), with or without class weights (0.4 for NORMAL, 1.6 for PNEUMONIA) and smoothing 0.1.
struct LossSettings {
  bool weighted = false;
  float normal = 1.0f, pneumonia = 1.0f;  // the class weights, when weighted
  float smoothing = 0.0f;
};
EpochStats frozen_epoch(std::unique_ptr<Backend> backend, const LossSettings& loss) {
  Run run(std::move(backend));
  run.trainer.optimizer().learning_rate = 0.0f;
  if (loss.weighted) {
    std::vector<float> weights(kCount);
    for (int i = 0; i < kCount; ++i)
      weights[size_t(i)] = run.label_bytes[size_t(i)] ? loss.pneumonia : loss.normal;
    run.data.set_weights(weights);
  }
  if (loss.smoothing > 0) run.data.smooth_labels(run.label_bytes, loss.smoothing);
  return run.trainer.train_epoch(run.data, run.order(0), 0);
}
EpochStats frozen_epoch(std::unique_ptr<Backend> backend, bool weighted) {
  return frozen_epoch(std::move(backend), weighted ? LossSettings{true, 0.4f, 1.6f, 0.1f}
                                                   : LossSettings{});
}

void weighted_and_smoothed_loss_agrees(const std::function<std::unique_ptr<Backend>()>& other) {
  const EpochStats cpu = frozen_epoch(make_cpu_backend(1), true);
  const EpochStats plain = frozen_epoch(make_cpu_backend(1), false);
  const EpochStats actual = frozen_epoch(other(), true);
  EXPECT_NEAR(actual.loss, cpu.loss, 1e-5 + 1e-4 * cpu.loss);
  EXPECT_GT(std::fabs(cpu.loss - plain.loss), 1e-3 * plain.loss)
      << "weights and smoothing change nothing: the comparison tests nothing";
}

// The class weights reach the loss: with the weights frozen an epoch's loss sum is linear in
// them, L(a, b) = a L(1, 0) + b L(0, 1), and L(1, 0) + L(0, 1) is the unweighted sum. Weights
// dropped on the way (every image weighing 1) give L(1, 0) = L(0, 1) = the unweighted sum.
TEST(TrainerClassWeights, TheEpochLossIsLinearInTheClassWeights) {
  const double normal_only =
      frozen_epoch(make_cpu_backend(1), LossSettings{true, 1.0f, 0.0f}).loss_sum;
  const double pneumonia_only =
      frozen_epoch(make_cpu_backend(1), LossSettings{true, 0.0f, 1.0f}).loss_sum;
  const double mixed = frozen_epoch(make_cpu_backend(1), LossSettings{true, 0.7f, 2.3f}).loss_sum;
  const double plain = frozen_epoch(make_cpu_backend(1), LossSettings{}).loss_sum;
  ASSERT_GT(normal_only, 0.0);
  ASSERT_GT(pneumonia_only, 0.0);
  EXPECT_NEAR(normal_only + pneumonia_only, plain, 1e-5 * plain);
  EXPECT_NEAR(mixed, 0.7 * normal_only + 2.3 * pneumonia_only, 1e-5 * mixed);
  EXPECT_LT(std::max(normal_only, pneumonia_only), 0.9 * plain)
      << "each class carries part of the loss, not all of it";
}

// A NaN written into fc2's bias (on the model's device) before step 3 of epoch 2, with and
// without a progress callback (its path reads the loss every step).
void a_nan_is_reported_with_its_step(const std::function<std::unique_ptr<Backend>()>& make) {
  for (bool with_progress : {false, true}) {
    Run run(make());
    EpochOptions options;
    options.before_step = [&](int64_t step) {
      if (step != 3) return;
      const float nan = std::numeric_limits<float>::quiet_NaN();
      TensorView weights = run.model.parameters();
      copy_bytes(weights.data + weights.numel() - 1, weights.device, &nan, Device::Cpu,
                 sizeof(float));
    };
    StepCallback progress = [](int64_t, int64_t, const EpochStats&) {};
    try {
      run.trainer.train_epoch(run.data, run.order(2), 2,
                              with_progress ? progress : StepCallback{}, options);
      ADD_FAILURE() << "a NaN loss went unreported (progress " << with_progress << ")";
    } catch (const NonFiniteLoss& e) {
      EXPECT_EQ(e.step(), 3);
      EXPECT_EQ(e.epoch(), 2u);
      const std::string message = e.what();
      EXPECT_NE(message.find("at step 4 of 5 in epoch 3"), std::string::npos) << message;
    }
  }
}

std::unique_ptr<Backend> cuda() { return make_cuda_backend(BackendOptions{}); }

TEST(TrainerCuda, WeightedAndSmoothedLossMatchesTheCpu) {
  PNEUMO_REQUIRE_CUDA();
  weighted_and_smoothed_loss_agrees(cuda);
}

TEST(TrainerCuda, ANanLossIsReportedWithTheStepItAppearedIn) {
  PNEUMO_REQUIRE_CUDA();
  a_nan_is_reported_with_its_step(cuda);
}

TEST(TrainerCuda, TheChecksHoldWithASecondCpuBackend) {
  weighted_and_smoothed_loss_agrees([] { return make_cpu_backend(2); });
  a_nan_is_reported_with_its_step([] { return make_cpu_backend(2); });
}

}  // namespace
}  // namespace pneumo
