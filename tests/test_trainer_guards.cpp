// What keeps a run from losing work, at the Trainer level on the CPU: an epoch stopped by the stop
// flag and resumed from where it stood ends bit for bit like an uninterrupted one; an allocation
// that cannot fit is an OutOfMemory error naming its size, not a crash. (A NaN loss reported with
// the step it first appeared in: test_trainer_cuda.cpp, on a CPU backend and on the GPU.)
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <vector>

#include "pneumo/error.hpp"
#include "pneumo/model.hpp"
#include "pneumo/sampling.hpp"
#include "pneumo/trainer.hpp"
#include "test_util.hpp"

namespace pneumo {
namespace {

constexpr int kSize = 24, kCount = 40, kBatch = 8;  // 5 steps per epoch

struct SmallRun {
  std::unique_ptr<Backend> backend = make_cpu_backend(2);
  std::vector<uint8_t> images, labels;
  ImageSet data;
  Model model;
  Trainer trainer;

  static ModelConfig config() {
    ModelConfig c;
    c.input_size = kSize;
    return c;
  }
  SmallRun()
      : images(pixels()),
        labels(label_values()),
        data(ImageSet::upload(Device::Cpu, images.data(), kCount, kSize, labels.data())),
        model(*backend, config(), kBatch),
        trainer(*backend, model, kBatch, AugmentSettings{}, 7) {  // augmentation on
    model.initialize(3);
  }
  static std::vector<uint8_t> pixels() { return testing::random_pixels(kCount, kSize, 11); }
  static std::vector<uint8_t> label_values() {
    std::vector<uint8_t> l(kCount);
    for (int i = 0; i < kCount; ++i) l[size_t(i)] = static_cast<uint8_t>(i % 3 == 0);
    return l;
  }
  std::vector<int32_t> order(uint32_t epoch) const {
    return epoch_indices(labels, BalanceMode::None, 5, epoch);
  }
};

std::vector<float> host_values(ConstTensorView view) { return testing::to_host(view); }

TEST(TrainerGuards, WholeBatchesLeavesOutThePartialBatchOnly) {
  EXPECT_EQ(whole_batches({5, 3, 9, 1, 7, 2, 8}, 3), (std::vector<int32_t>{5, 3, 9, 1, 7, 2}));
  EXPECT_EQ(whole_batches({5, 3, 9, 1, 7, 2}, 3), (std::vector<int32_t>{5, 3, 9, 1, 7, 2}));
  EXPECT_EQ(whole_batches({4, 6}, 2), (std::vector<int32_t>{4, 6}));
  try {
    whole_batches({1, 2, 3}, 4);
    ADD_FAILURE() << "an order without a full batch was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--drop-last: an epoch of 3 training images holds no "
                                         "full batch of 4"),
              std::string::npos)
        << e.what();
  }
}

TEST(TrainerGuards, AStoppedEpochResumedWhereItStoodEndsLikeAnUninterruptedOne) {
  SmallRun straight;
  EpochStats expected = straight.trainer.train_epoch(straight.data, straight.order(0), 0);
  ASSERT_EQ(expected.steps, 5);
  ASSERT_FALSE(expected.interrupted);

  SmallRun stopped;
  std::atomic<bool> stop{false};
  EpochOptions first;
  first.stop = &stop;
  first.before_step = [&](int64_t step) {
    if (step == 2) stop = true;  // arrives during step 2: that step still completes
  };
  EpochStats partial = stopped.trainer.train_epoch(stopped.data, stopped.order(0), 0, {}, first);
  EXPECT_TRUE(partial.interrupted);
  EXPECT_EQ(partial.steps, 3);
  EXPECT_EQ(partial.images, 3 * kBatch);

  // What a checkpoint carries: weights, buffers, optimizer state, the epoch's position and sums.
  SmallRun resumed;
  auto copy = [](TensorView to, ConstTensorView from) {
    ASSERT_EQ(to.numel(), from.numel());
    copy_bytes(to.data, to.device, from.data, from.device, size_t(to.numel()) * sizeof(float));
  };
  copy(resumed.model.parameters(), stopped.model.parameters());
  copy(resumed.model.buffers(), stopped.model.buffers());
  copy(resumed.trainer.optimizer_state(), stopped.trainer.optimizer_state());
  EpochOptions rest;
  rest.first_step = partial.steps;
  rest.loss_sum = partial.loss_sum;
  rest.correct = partial.correct;
  EpochStats finished = resumed.trainer.train_epoch(resumed.data, resumed.order(0), 0, {}, rest);
  EXPECT_FALSE(finished.interrupted);
  EXPECT_EQ(finished.steps, 5);
  EXPECT_EQ(finished.loss_sum, expected.loss_sum);
  EXPECT_EQ(finished.correct, expected.correct);
  EXPECT_EQ(finished.loss, expected.loss);
  EXPECT_EQ(host_values(resumed.model.parameters()), host_values(straight.model.parameters()));
  EXPECT_EQ(host_values(resumed.model.buffers()), host_values(straight.model.buffers()));
  EXPECT_EQ(host_values(resumed.trainer.optimizer_state()),
            host_values(straight.trainer.optimizer_state()));
}

TEST(TrainerGuards, AnAllocationThatCannotFitIsAnOutOfMemoryErrorNamingItsSize) {
  const size_t huge = size_t{1} << 60;  // 1 EiB
  try {
    Array<float> a(static_cast<int64_t>(huge / sizeof(float)), Device::Cpu);
    ADD_FAILURE() << "allocated 1 EiB";
  } catch (const OutOfMemory& e) {
    EXPECT_FALSE(e.on_device());
    EXPECT_EQ(e.bytes(), huge);
    EXPECT_NE(std::string(e.what()).find(std::to_string(huge)), std::string::npos) << e.what();
  }
}

// Validation at another batch than training's (--val-batch): the same logits, from fewer,
// fuller passes; a batch the model holds no activations for is refused.
TEST(TrainerGuards, PredictionAtALargerBatchGivesTheSameLogits) {
  auto backend = make_cpu_backend(2);
  const std::vector<uint8_t> images = SmallRun::pixels(), labels = SmallRun::label_values();
  const ImageSet data = ImageSet::upload(Device::Cpu, images.data(), kCount, kSize, labels.data());
  Model model(*backend, SmallRun::config(), 3 * kBatch);
  model.initialize(3);
  Trainer trainer(*backend, model, kBatch, AugmentSettings{}, 7);
  trainer.train_epoch(data, SmallRun{}.order(0), 0);  // running statistics that are not 0 and 1
  EpochStats at_training_batch, at_larger_batch;
  const std::vector<float> expected = trainer.predict_logits(data, &at_training_batch);
  // 40 images: passes of 24 and 16, the second padded to 24 (a shape the backend has met: see
  // Trainer::predict_logits) whose extra 8 logits are dropped.
  trainer.set_predict_batch(3 * kBatch);
  EXPECT_EQ(trainer.predict_batch(), 3 * kBatch);
  std::vector<int64_t> batches;  // the batch of every pass, from the first op of the model
  backend->set_op_observer([&](const char* op, const Shape& shape) {
    if (std::string(op) == "gather_augment") batches.push_back(shape[0]);
  });
  const std::vector<float> logits = trainer.predict_logits(data, &at_larger_batch);
  backend->set_op_observer({});
  EXPECT_EQ(batches, (std::vector<int64_t>{24, 24}));
  EXPECT_TRUE(testing::all_close(logits, expected, 1e-5, 1e-5, "logits"));
  EXPECT_NEAR(at_larger_batch.loss, at_training_batch.loss, 1e-5);
  EXPECT_EQ(at_larger_batch.correct, at_training_batch.correct);
  EXPECT_THROW(trainer.set_predict_batch(3 * kBatch + 1), Error);
  EXPECT_THROW(trainer.set_predict_batch(0), Error);
}

}  // namespace
}  // namespace pneumo
