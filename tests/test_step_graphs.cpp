// Step graphs (Trainer::use_step_graphs, --cuda-graph): each step's changing values read on the
// device from a per-epoch table (pneumo/live_step.hpp). On the CPU the live path runs without a
// graph and must give the bits of the ordinary path; on CUDA the recorded and replayed steps must
// train as the ops issued one by one do. The ops that read a LiveStep are checked one by one
// against the same op given the values directly.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "pneumo/distributed.hpp"
#include "pneumo/error.hpp"
#include "pneumo/model.hpp"
#include "pneumo/sampling.hpp"
#include "pneumo/trainer.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"

namespace pneumo {
namespace {

using testing::largest_relative_difference;
using testing::to_host;

constexpr int kSize = 24, kCount = 44, kBatch = 8;  // 5 full steps and one of 4 an epoch

std::vector<uint8_t> pixels() { return testing::random_pixels(kCount, kSize, 17); }

std::vector<uint8_t> labels() {
  std::vector<uint8_t> l(kCount);
  for (int i = 0; i < kCount; ++i) l[size_t(i)] = static_cast<uint8_t>(i % 3 != 0);
  return l;
}

// One model and trainer on `backend`, trained for three epochs: the learning rate changes after
// the first, and the third starts at step 2 (as a resumed epoch does). With `validate`, each epoch
// is followed by a prediction pass at three times the training batch (--val-batch), which may grow
// the backend's workspaces and so move memory a recording holds.
struct ThreeEpochs {
  Model model;
  Trainer trainer;
  double loss_sum = 0.0;
  std::vector<float> last_logits;

  ThreeEpochs(Backend& backend, OptimizerKind kind, bool graphs, bool validate = false)
      : model(backend, config(), validate ? 3 * kBatch : kBatch),
        trainer(backend, model, kBatch, AugmentSettings{}, 9) {
    model.initialize(4);
    trainer.use_optimizer(kind);
    trainer.use_step_graphs(graphs);
    if (validate) trainer.set_predict_batch(3 * kBatch);
    const std::vector<uint8_t> image_bytes = pixels(), label_bytes = labels();
    const ImageSet data =
        ImageSet::upload(backend.device(), image_bytes.data(), kCount, kSize, label_bytes.data());
    for (uint32_t epoch = 0; epoch < 3; ++epoch) {
      if (epoch == 1) trainer.optimizer().learning_rate = 3e-4f;
      EpochOptions options;
      if (epoch == 2) options.first_step = 2;
      const auto order = epoch_indices(label_bytes, BalanceMode::None, 5, epoch);
      loss_sum += trainer.train_epoch(data, order, epoch, {}, options).loss_sum;
      if (validate) last_logits = trainer.predict_logits(data);
    }
  }
  static ModelConfig config() {
    ModelConfig c;
    c.input_size = kSize;
    return c;
  }
};

TEST(StepGraphs, TheCpuLivePathTrainsBitForBitAsTheIssuedPath) {
  for (const bool validate : {false, true})
  for (OptimizerKind kind : {OptimizerKind::RmsProp, OptimizerKind::AdamW}) {
    SCOPED_TRACE(std::string(optimizer_name(kind)) + (validate ? ", validating" : ""));
    auto backend = make_cpu_backend(2);
    ThreeEpochs issued(*backend, kind, false, validate);
    ThreeEpochs live(*backend, kind, true, validate);
    EXPECT_EQ(live.last_logits, issued.last_logits);
    EXPECT_EQ(to_host(live.model.parameters()), to_host(issued.model.parameters()));
    EXPECT_EQ(to_host(live.model.buffers()), to_host(issued.model.buffers()));
    EXPECT_EQ(to_host(live.trainer.optimizer_state()), to_host(issued.trainer.optimizer_state()));
    EXPECT_EQ(live.loss_sum, issued.loss_sum);
    EXPECT_EQ(live.trainer.optimizer_steps(), issued.trainer.optimizer_steps());
    // Nothing recorded on the CPU, and it says why; every step went through the live path.
    const Trainer::StepGraphStats& stats = live.trainer.step_graph_stats();
    EXPECT_EQ(stats.recorded, 0);
    EXPECT_EQ(stats.replayed, 0);
    EXPECT_EQ(stats.issued, 6 + 6 + 4);
    EXPECT_NE(stats.refused.find("records no graphs"), std::string::npos) << stats.refused;
  }
}

// Synchronised batch-norm reads statistics back to the host inside the step, which a recording
// cannot hold (on CUDA the capture failed with a raw stream-capture error and every later step of
// the run went op by op): the trainer refuses to record it, says why, and still trains every step.
TEST(StepGraphs, SynchronisedBatchNormIsNotRecordedAndSaysWhy) {
  auto backend = make_cpu_backend(2);
  Model model(*backend, ThreeEpochs::config(), kBatch);
  model.initialize(4);
  model.synchronise_batchnorm(&single_process());
  Trainer trainer(*backend, model, kBatch, AugmentSettings{}, 9);
  trainer.use_step_graphs(true);
  const std::vector<uint8_t> image_bytes = pixels(), label_bytes = labels();
  const ImageSet data =
      ImageSet::upload(backend->device(), image_bytes.data(), kCount, kSize, label_bytes.data());
  trainer.train_epoch(data, epoch_indices(label_bytes, BalanceMode::None, 5, 0), 0, {}, {});
  const Trainer::StepGraphStats& stats = trainer.step_graph_stats();
  EXPECT_NE(stats.refused.find("synchronised batch-norm"), std::string::npos) << stats.refused;
  EXPECT_EQ(stats.recorded, 0);
  EXPECT_EQ(stats.issued, 6);
}

std::vector<LiveStep> three_steps() {
  std::vector<LiveStep> table(3);
  for (uint32_t i = 0; i < 3; ++i) {
    table[i].epoch = 4;
    table[i].step = i;
    table[i].learning_rate = 0.1f * static_cast<float>(i + 1);
    table[i].first = static_cast<int32_t>(2 * i);
  }
  return table;
}

TEST(StepGraphs, BeginStepTakesTheEntryUnderTheCursorAndAdvancesIt) {
  auto backend = make_cpu_backend(1);
  const std::vector<LiveStep> table = three_steps();
  const std::vector<int32_t> order = {10, 11, 12, 13, 14, 15};
  uint32_t cursor = 1;
  LiveStep current;
  std::vector<int32_t> indices(2, -1);
  backend->begin_step(table.data(), 3, &cursor, order.data(), 2, &current, indices.data());
  EXPECT_EQ(cursor, 2u);
  EXPECT_EQ(current.step, 1u);
  EXPECT_EQ(current.epoch, 4u);
  EXPECT_EQ(current.learning_rate, 0.2f);
  EXPECT_EQ(indices, (std::vector<int32_t>{12, 13}));
  cursor = 3;
  EXPECT_THROW(
      backend->begin_step(table.data(), 3, &cursor, order.data(), 2, &current, indices.data()),
      Error);
  EXPECT_THROW(
      backend->begin_step(table.data(), 3, &cursor, order.data(), 0, &current, indices.data()),
      Error);
}

// What each op that takes a LiveStep gives with one (values on the backend's device), and what
// it gives with the same values passed directly, and with the values passed but no LiveStep.
struct LiveOpResults {
  std::vector<float> live, direct, passed;
};

std::vector<LiveOpResults> live_ops(Backend& backend) {
  const Device device = backend.device();
  LiveStep host_live;
  host_live.epoch = 3;
  host_live.step = 6;
  host_live.learning_rate = 2e-3f;
  host_live.bias_correction1 = 0.25f;
  host_live.bias_correction2 = 0.0625f;
  Array<LiveStep> live(1, device);
  copy_bytes(live.data(), device, &host_live, Device::Cpu, sizeof(LiveStep));
  const Shape shape{37};
  auto tensor = [&](uint32_t seed) { return testing::random_tensor(shape, device, seed); };
  std::vector<LiveOpResults> results;

  {  // dropout: the key's epoch and step
    const Tensor x = tensor(1);
    auto run = [&](RngKey key) {
      Tensor y = backend.empty(shape);
      backend.dropout_forward(x, y, 0.4f, key);
      return to_host(y);
    };
    RngKey live_key{5, 16, 0, 0, 0, live.data()};
    results.push_back({run(live_key), run(RngKey{5, 16, 3, 6, 0}), run(RngKey{5, 16, 0, 0, 0})});
  }
  {  // RMSprop: the learning rate
    auto run = [&](float lr, const LiveStep* l) {
      Tensor p = tensor(2), ms = Tensor::zeros(shape, device);
      backend.rmsprop_step(p, tensor(3), ms, lr, 0.9f, 1e-7f, false, l);
      return to_host(p);
    };
    results.push_back({run(0.5f, live.data()), run(2e-3f, nullptr), run(0.5f, nullptr)});
  }
  {  // AdamW: the learning rate and both bias corrections
    auto run = [&](AdamWStep s, const LiveStep* l) {
      Tensor p = tensor(4), m = tensor(5), v = testing::random_tensor(shape, device, 6, 0.0f, 1.0f);
      backend.adamw_step(p, tensor(7), m, v, s, l);
      return to_host(p);
    };
    const AdamWStep passed{0.5f, 0.9f, 0.999f, 1e-8f, 0.01f, 0.9f, 0.5f};
    AdamWStep direct = passed;
    direct.learning_rate = 2e-3f;
    direct.bias_correction1 = 0.25f;
    direct.bias_correction2 = 0.0625f;
    results.push_back({run(passed, live.data()), run(direct, nullptr), run(passed, nullptr)});
  }
  {  // the non-finite guard: the step it records
    auto run = [&](int64_t step, const LiveStep* l) {
      const float inf = INFINITY;
      const Tensor value = Tensor::from_host({1}, &inf, device);
      Tensor marker = Tensor::zeros({1}, device);
      backend.mark_nonfinite(value, step, marker, l);
      return to_host(marker);
    };
    results.push_back({run(1, live.data()), run(6, nullptr), run(1, nullptr)});
  }
  return results;
}

TEST(StepGraphs, OpsReadTheLiveStepInsteadOfTheValuesPassed) {
  auto backend = make_cpu_backend(1);
  const char* names[] = {"dropout", "rmsprop", "adamw", "mark_nonfinite"};
  const auto results = live_ops(*backend);
  for (size_t i = 0; i < results.size(); ++i) {
    SCOPED_TRACE(names[i]);
    EXPECT_EQ(results[i].live, results[i].direct);
    EXPECT_NE(results[i].live, results[i].passed);  // the test can tell the two apart
  }
}

TEST(StepGraphsCuda, LiveOpsAndBeginStepMatchTheCpu) {
  PNEUMO_REQUIRE_CUDA();
  auto cpu = make_cpu_backend(1);
  auto cuda = make_cuda_backend(BackendOptions{});
  const auto expected = live_ops(*cpu), actual = live_ops(*cuda);
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    SCOPED_TRACE(i);
    // Dropout and the guard are exact; the optimizers agree to the last few bits (FMA).
    EXPECT_TRUE(testing::all_close(actual[i].live, expected[i].live, 1e-6, 1e-5, "live"));
    EXPECT_TRUE(testing::all_close(actual[i].live, actual[i].direct, 0.0, 0.0, "live vs direct"));
  }

  const std::vector<LiveStep> host_table = three_steps();
  const std::vector<int32_t> host_order = {10, 11, 12, 13, 14, 15};
  Array<LiveStep> table(3, Device::Cuda), current(1, Device::Cuda);
  Array<int32_t> order(6, Device::Cuda), indices(2, Device::Cuda);
  Array<uint32_t> cursor(1, Device::Cuda);
  copy_bytes(table.data(), Device::Cuda, host_table.data(), Device::Cpu, table.bytes());
  copy_bytes(order.data(), Device::Cuda, host_order.data(), Device::Cpu, order.bytes());
  const uint32_t two = 2;
  copy_bytes(cursor.data(), Device::Cuda, &two, Device::Cpu, sizeof(two));
  cuda->begin_step(table.data(), 3, cursor.data(), order.data(), 2, current.data(), indices.data());
  cuda->synchronize();
  uint32_t cursor_after = 0;
  LiveStep current_after;
  std::vector<int32_t> indices_after(2);
  copy_bytes(&cursor_after, Device::Cpu, cursor.data(), Device::Cuda, sizeof(cursor_after));
  copy_bytes(&current_after, Device::Cpu, current.data(), Device::Cuda, sizeof(current_after));
  copy_bytes(indices_after.data(), Device::Cpu, indices.data(), Device::Cuda, indices.bytes());
  EXPECT_EQ(cursor_after, 3u);
  EXPECT_EQ(current_after.step, 2u);
  EXPECT_EQ(current_after.learning_rate, host_table[2].learning_rate);
  EXPECT_EQ(indices_after, (std::vector<int32_t>{14, 15}));
}

TEST(StepGraphsCuda, ReplayedStepsTrainAsTheOpsIssuedOneByOne) {
  PNEUMO_REQUIRE_CUDA();
  for (OptimizerKind kind : {OptimizerKind::RmsProp, OptimizerKind::AdamW}) {
    SCOPED_TRACE(optimizer_name(kind));
    // One backend for both runs: the same algorithm picks and kernel-or-cuDNN choices.
    auto backend = make_cuda_backend(BackendOptions{});
    ThreeEpochs issued(*backend, kind, false);
    ThreeEpochs replayed(*backend, kind, true);
    const Trainer::StepGraphStats& stats = replayed.trainer.step_graph_stats();
    EXPECT_TRUE(stats.refused.empty()) << stats.refused;
    EXPECT_GE(stats.recorded, 1);
    // Per epoch: the partial batch op by op; the first full step of the run too (first calls).
    EXPECT_GE(stats.replayed, 5 + 5 + 3 - 1);
    // The same kernels on the same numbers: equal but for the order of atomic additions.
    EXPECT_LT(largest_relative_difference(to_host(replayed.model.parameters()),
                                          to_host(issued.model.parameters()), 1e-3),
              1e-4);
    EXPECT_NEAR(replayed.loss_sum, issued.loss_sum, 1e-3 * std::abs(issued.loss_sum));
  }
}

// With a prediction pass at a larger batch after each epoch (validation at --val-batch), whose
// first calls may grow the workspaces a recording holds: a recording made on moved memory must
// never replay (the trainer records again, or issues op by op), so the run still trains as the
// issued one. How many recordings that takes depends on cuDNN's picks, so only "at least one
// replay" is asked of the counts. The replayed run gets a backend of its own, whose workspaces
// start empty and grow during the run, with the first one's decisions from a tuning cache file, so
// both run the same algorithms and kernels.
TEST(StepGraphsCuda, ValidationBetweenEpochsLeavesTheReplaysRight) {
  PNEUMO_REQUIRE_CUDA();
  testing::TempDir dir;
  BackendOptions options;
  options.tuning_cache = dir.file("tuning.json");
  auto backend = make_cuda_backend(options);
  ThreeEpochs issued(*backend, OptimizerKind::RmsProp, false, /*validate=*/true);
  backend->synchronize();  // writes the decisions made
  auto fresh = make_cuda_backend(options);
  ThreeEpochs replayed(*fresh, OptimizerKind::RmsProp, true, /*validate=*/true);
  const Trainer::StepGraphStats& stats = replayed.trainer.step_graph_stats();
  EXPECT_TRUE(stats.refused.empty()) << stats.refused;
  EXPECT_GE(stats.replayed, 1);
  EXPECT_EQ(stats.replayed + stats.issued, 6 + 6 + 4);
  EXPECT_LT(largest_relative_difference(to_host(replayed.model.parameters()),
                                        to_host(issued.model.parameters()), 1e-3),
            1e-4);
  EXPECT_TRUE(testing::all_close(replayed.last_logits, issued.last_logits, 1e-5, 1e-4, "logits"));
}

}  // namespace
}  // namespace pneumo
