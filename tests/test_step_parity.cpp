// A whole training step, CPU vs CUDA: same weights, same images, same random keys. The loss, the
// correct count, every gradient and the updated weights must agree, for one step and for a few
// consecutive steps. Skipped without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "pneumo/model.hpp"
#include "pneumo/trainer.hpp"
#include "test_util.hpp"

namespace pneumo {
namespace {

struct StepRun {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;
  std::unique_ptr<Trainer> trainer;
  ImageSet data;
};

constexpr int kCount = 6, kBatch = 4;

StepRun make_run(std::unique_ptr<Backend> backend, const ModelConfig& config) {
  StepRun run;
  run.backend = std::move(backend);
  const int size = config.input_size;
  auto pixels = testing::random_values(kCount * size * size, 21, 0.0f, 255.0f);
  std::vector<uint8_t> images(pixels.begin(), pixels.end());
  std::vector<uint8_t> labels{0, 1, 1, 0, 1, 0};
  run.data = ImageSet::upload(run.backend->device(), images.data(), kCount, size, labels.data());
  run.model = std::make_unique<Model>(*run.backend, config, kBatch);
  run.model->initialize(5);
  run.trainer = std::make_unique<Trainer>(*run.backend, *run.model, kBatch, AugmentSettings{}, 9);
  return run;
}

// Gradients are compared against the largest magnitude of each named tensor: cuDNN and the CPU
// reduce in different orders, so tiny entries carry relative noise that means nothing.
void expect_gradients_close(Model& cpu, Model& cuda) {
  auto g_cpu = testing::to_host(cpu.gradients()), g_cuda = testing::to_host(cuda.gradients());
  for (const auto& info : cpu.parameter_infos()) {
    std::vector<float> a(g_cuda.begin() + info.offset, g_cuda.begin() + info.offset + info.shape.numel());
    std::vector<float> e(g_cpu.begin() + info.offset, g_cpu.begin() + info.offset + info.shape.numel());
    double scale = 0.0;
    for (float v : e) scale = std::max(scale, double(std::fabs(v)));
    EXPECT_TRUE(testing::all_close(a, e, 2e-3 * scale + 1e-7, 1e-2, "gradient " + info.name));
  }
}

TEST(StepParity, OneStepAndSeveralStepsAgree) {
  PNEUMO_REQUIRE_CUDA();
  ModelConfig config;
  config.input_size = 40;  // pools 40 -> 20 -> 10 -> 5 -> 3 -> 2: odd sizes included
  StepRun cpu = make_run(make_cpu_backend(0), config);
  StepRun cuda = make_run(make_cuda_backend(false), config);
  ASSERT_EQ(cuda.model->parameters().device, Device::Cuda);
  ASSERT_EQ(cuda.data.images.device(), Device::Cuda);

  std::vector<int32_t> order{3, 1, 4, 0, 5, 2};
  auto before = testing::to_host(cpu.model->parameters());
  Array<int32_t> order_cpu(kCount, Device::Cpu), order_cuda(kCount, Device::Cuda);
  copy_bytes(order_cpu.data(), Device::Cpu, order.data(), Device::Cpu, order_cpu.bytes());
  copy_bytes(order_cuda.data(), Device::Cuda, order.data(), Device::Cpu, order_cuda.bytes());
  cpu.trainer->train_step(cpu.data, order_cpu.data(), kBatch, 0, 0);
  cuda.trainer->train_step(cuda.data, order_cuda.data(), kBatch, 0, 0);
  const EpochStats loss_cpu = cpu.trainer->read_stats(kBatch);
  const EpochStats loss_cuda = cuda.trainer->read_stats(kBatch);
  EXPECT_NEAR(loss_cuda.loss, loss_cpu.loss, 1e-5 + 1e-4 * loss_cpu.loss);
  EXPECT_EQ(loss_cuda.accuracy, loss_cpu.accuracy);
  expect_gradients_close(*cpu.model, *cuda.model);
  // Batch-norm running statistics after one update.
  EXPECT_TRUE(testing::all_close(cuda.model->buffers(), cpu.model->buffers(), 1e-5, 1e-4,
                                 "batch-norm running statistics"));
  // Updated weights: RMSprop's first step moves each weight by about lr * sqrt(10) * sign(g),
  // so entries whose gradient is within rounding of zero may differ by up to twice that.
  auto p_cpu = testing::to_host(cpu.model->parameters());
  auto p_cuda = testing::to_host(cuda.model->parameters());
  auto g_cpu = testing::to_host(cpu.model->gradients());
  const double first_step = 1e-3 * std::sqrt(10.0);
  int64_t sign_sensitive = 0;
  for (size_t i = 0; i < p_cpu.size(); ++i) {
    const double moved = std::fabs(double(p_cpu[i]) - before[i]);
    if (std::fabs(g_cpu[i]) < 1e-6f) {
      ++sign_sensitive;
      ASSERT_LE(std::fabs(p_cpu[i] - p_cuda[i]), 2.01 * first_step) << "parameter " << i;
    } else {
      ASSERT_NEAR(p_cuda[i], p_cpu[i], 1e-5 + 1e-3 * moved) << "parameter " << i;
    }
  }
  RecordProperty("sign_sensitive_parameters", static_cast<int>(sign_sensitive));

  // A few more steps (the second batch is the 2-image tail): losses and weights stay together.
  for (uint32_t step = 1; step < 4; ++step) {
    const int first = (step % 2) * kBatch;
    const int n = first == 0 ? kBatch : kCount - kBatch;
    cpu.trainer->train_step(cpu.data, order_cpu.data() + first, n, 0, step);
    cuda.trainer->train_step(cuda.data, order_cuda.data() + first, n, 0, step);
  }
  EXPECT_TRUE(testing::all_close(cuda.model->parameters(), cpu.model->parameters(), 5e-4, 1e-2,
                                 "parameters after 4 steps"));
  EpochStats cpu_eval, cuda_eval;
  auto logits_cpu = cpu.trainer->predict_logits(cpu.data, &cpu_eval);
  auto logits_cuda = cuda.trainer->predict_logits(cuda.data, &cuda_eval);
  EXPECT_TRUE(testing::all_close(logits_cuda, logits_cpu, 1e-3, 1e-2, "logits after 4 steps"));
  EXPECT_NEAR(cuda_eval.loss, cpu_eval.loss, 1e-3 + 1e-2 * cpu_eval.loss);
}

}  // namespace
}  // namespace pneumo
