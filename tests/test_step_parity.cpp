// A whole training step, CPU vs CUDA: same weights, same images, same random keys. The loss, the
// correct count, the batch-norm statistics, every gradient and the updated weights must agree,
// for one step and for a few consecutive steps. Skipped without a GPU.
//
// How close is close: the network has kinks (ReLU, max-pool) and batch-norm divides by small
// standard deviations, so a rounding difference can move a pre-activation across zero and send a
// whole channel's gradient elsewhere. The test therefore measures the problem's own sensitivity: a
// third run, on the CPU, starts from weights perturbed by one part in 10^6 (float rounding), and
// the CUDA run must agree with the CPU run about as well as that run does (relative L2 per tensor
// within 1e-3 + 4x the perturbed run's distance). Where nothing is near a kink the bound is 1e-3.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include <iostream>

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
  Array<int32_t> order;
};

constexpr int kCount = 6, kBatch = 4;
const std::vector<int32_t> kOrder{3, 1, 4, 0, 5, 2};

StepRun make_run(std::unique_ptr<Backend> backend, const ModelConfig& config,
                 double perturbation = 0.0) {
  StepRun run;
  run.backend = std::move(backend);
  const Device device = run.backend->device();
  const int size = config.input_size;
  auto pixels = testing::random_values(kCount * size * size, 21, 0.0f, 255.0f);
  std::vector<uint8_t> images(pixels.begin(), pixels.end());
  std::vector<uint8_t> labels{0, 1, 1, 0, 1, 0};
  run.data = ImageSet::upload(device, images.data(), kCount, size, labels.data());
  run.model = std::make_unique<Model>(*run.backend, config, kBatch);
  run.model->initialize(5);
  if (perturbation > 0.0) {
    auto params = testing::to_host(run.model->parameters());
    auto noise = testing::random_values(static_cast<int64_t>(params.size()), 77);
    for (size_t i = 0; i < params.size(); ++i)
      params[i] *= static_cast<float>(1.0 + perturbation * noise[i]);
    copy_bytes(run.model->parameters().data, device, params.data(), Device::Cpu,
               params.size() * sizeof(float));
  }
  // No augmentation here: its 'nearest' fill makes constant border regions, where convolution
  // outputs tie exactly on the CPU but cuDNN's position-dependent summation order breaks the ties
  // by an ulp, so max-pool sends the gradient to a different (equally valid) element. Seen on an
  // H200: pool2's input gradient then differed by 1.8% while every op agreed given equal inputs.
  // (Augmentation has its own CPU-vs-CUDA test.)
  AugmentSettings plain;
  plain.enabled = false;
  run.trainer = std::make_unique<Trainer>(*run.backend, *run.model, kBatch, plain, 9);
  run.order = Array<int32_t>(kCount, device);
  copy_bytes(run.order.data(), device, kOrder.data(), Device::Cpu, run.order.bytes());
  return run;
}

// ||actual - expected|| / ||expected|| over one or more stretches of two arrays.
struct RelativeL2 {
  double diff = 0.0, norm = 0.0;
  void add(const float* actual, const float* expected, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      diff += (double(actual[i]) - expected[i]) * (double(actual[i]) - expected[i]);
      norm += double(expected[i]) * expected[i];
    }
  }
  double value() const { return std::sqrt(diff / std::max(norm, 1e-30)); }
};

double relative_l2(const float* actual, const float* expected, int64_t n) {
  RelativeL2 l2;
  l2.add(actual, expected, n);
  return l2.value();
}

// Tensors compared as one: each on its own, or each layer's together (weight and bias).
struct Group {
  std::string name;
  std::vector<ParameterInfo> tensors;
};

std::vector<Group> each_tensor(const std::vector<ParameterInfo>& infos) {
  std::vector<Group> groups;
  for (const auto& info : infos) groups.push_back({info.name, {info}});
  return groups;
}

std::vector<Group> each_layer(const std::vector<ParameterInfo>& infos) {
  std::vector<Group> groups;
  for (const auto& info : infos) {
    const std::string layer = info.name.substr(0, info.name.find('.'));
    if (groups.empty() || groups.back().name != layer) groups.push_back({layer, {}});
    groups.back().tensors.push_back(info);
  }
  return groups;
}

double relative_l2(const Group& group, const std::vector<float>& actual,
                   const std::vector<float>& expected) {
  RelativeL2 l2;
  for (const auto& info : group.tensors)
    l2.add(&actual[size_t(info.offset)], &expected[size_t(info.offset)], info.shape.numel());
  return l2.value();
}

// Per group: distance(cuda, cpu) <= floor + 4 x distance(perturbed cpu, cpu).
void expect_groups_agree(const std::vector<Group>& groups, const std::vector<float>& cpu,
                         const std::vector<float>& cuda, const std::vector<float>& perturbed,
                         const std::string& what, double floor = 1e-3) {
  for (const auto& group : groups) {
    const double to_cuda = relative_l2(group, cuda, cpu);
    const double sensitivity = relative_l2(group, perturbed, cpu);
    EXPECT_LE(to_cuda, floor + 4.0 * sensitivity)
        << what << " " << group.name << ": relative L2 to the CPU run " << to_cuda
        << ", perturbed CPU vs CPU " << sensitivity;
  }
}

std::vector<float> minus(std::vector<float> a, const std::vector<float>& b) {
  for (size_t i = 0; i < a.size(); ++i) a[i] -= b[i];
  return a;
}

void set_from_host(TensorView destination, const std::vector<float>& values) {
  ASSERT_EQ(destination.numel(), static_cast<int64_t>(values.size()));
  copy_bytes(destination.data, destination.device, values.data(), Device::Cpu,
             values.size() * sizeof(float));
}

// Teacher forcing: `to` takes `from`'s weights (nudged by one part in 1/`perturbation` as
// make_run does), batch-norm running statistics and optimizer state.
void copy_state(StepRun& from, StepRun& to, double perturbation = 0.0) {
  auto params = testing::to_host(from.model->parameters());
  if (perturbation > 0.0) {
    auto noise = testing::random_values(static_cast<int64_t>(params.size()), 77);
    for (size_t i = 0; i < params.size(); ++i)
      params[i] *= static_cast<float>(1.0 + perturbation * noise[i]);
  }
  set_from_host(to.model->parameters(), params);
  set_from_host(to.model->buffers(), testing::to_host(from.model->buffers()));
  set_from_host(to.trainer->optimizer_state().view(),
                testing::to_host(from.trainer->optimizer_state().view()));
}

struct StepState {
  std::vector<float> parameters, buffers, optimizer;
};

StepState state_of(StepRun& run) {
  return {testing::to_host(run.model->parameters()), testing::to_host(run.model->buffers()),
          testing::to_host(run.trainer->optimizer_state().view())};
}

// Steps 2 to 4 (the second and fourth on the 2-image tail), each started from the CPU run's
// state: before each, `candidate` takes it and `perturbed` takes it nudged (copy_state), so an
// error cannot compound over the steps and each is held to the first step's kind of bound (a
// free run's bound grew with the drift: a candidate that skipped the fourth update passed). Per
// step: the gradients per tensor and the update of the weights per layer, the running statistics' and the
// optimizer state's change. Then the inference logits of the last step's weights.
void expect_later_steps_agree(StepRun& cpu, StepRun& perturbed, StepRun& candidate,
                              const std::string& what) {
  const auto tensors = each_tensor(cpu.model->parameter_infos());
  const auto buffers = each_tensor(cpu.model->buffer_infos());
  for (uint32_t step = 1; step < 4; ++step) {
    const int first = (step % 2) * kBatch;
    const int n = first == 0 ? kBatch : kCount - kBatch;
    copy_state(cpu, candidate);
    copy_state(cpu, perturbed, 1e-6);
    const StepState before = state_of(cpu);
    for (StepRun* run : {&cpu, &perturbed, &candidate})
      run->trainer->train_step(run->data, run->order.data() + first, n, 0, step);
    const std::string at = what + " at step " + std::to_string(step + 1) + ":";
    expect_groups_agree(tensors, testing::to_host(cpu.model->gradients()),
                        testing::to_host(candidate.model->gradients()),
                        testing::to_host(perturbed.model->gradients()), at + " gradient");
    const StepState after = state_of(cpu), mine = state_of(candidate),
                    nudged = state_of(perturbed);
    // The nudged run starts 1e-6 away: its update is taken from its own start.
    std::vector<float> nudged_start = before.parameters;
    {
      auto noise = testing::random_values(static_cast<int64_t>(nudged_start.size()), 77);
      for (size_t i = 0; i < nudged_start.size(); ++i)
        nudged_start[i] *= static_cast<float>(1.0 + 1e-6 * noise[i]);
    }
    // Per layer: one perturbed run is a poor estimate of a one-element tensor's sensitivity.
    expect_groups_agree(each_layer(cpu.model->parameter_infos()),
                        minus(after.parameters, before.parameters),
                        minus(mine.parameters, before.parameters),
                        minus(nudged.parameters, nudged_start), at + " weight update", 1e-2);
    expect_groups_agree(buffers, minus(after.buffers, before.buffers),
                        minus(mine.buffers, before.buffers), minus(nudged.buffers, before.buffers),
                        at + " running statistics' change", 1e-2);
    const auto state_change = minus(after.optimizer, before.optimizer);
    const double to_candidate =
        relative_l2(minus(mine.optimizer, before.optimizer).data(), state_change.data(),
                    static_cast<int64_t>(state_change.size()));
    const double sensitivity =
        relative_l2(minus(nudged.optimizer, before.optimizer).data(), state_change.data(),
                    static_cast<int64_t>(state_change.size()));
    EXPECT_LE(to_candidate, 1e-2 + 4 * sensitivity)
        << at << " optimizer state's change " << to_candidate << ", perturbed " << sensitivity;
  }
  auto logits_cpu = cpu.trainer->predict_logits(cpu.data);
  auto logits = candidate.trainer->predict_logits(candidate.data);
  auto logits_perturbed = perturbed.trainer->predict_logits(perturbed.data);
  const double to_candidate = relative_l2(logits.data(), logits_cpu.data(), kCount);
  const double sensitivity = relative_l2(logits_perturbed.data(), logits_cpu.data(), kCount);
  EXPECT_LE(to_candidate, 1e-2 + 4 * sensitivity)
      << what << " logits after 4 steps: " << to_candidate << ", perturbed " << sensitivity;
}

// Inside the real models after one step: every layer's output and the gradient it passed back,
// CUDA vs CPU, in layer order. The first stage that disagrees is the culprit.
TEST(StepParity, EveryLayerOfTheModelAgreesAfterOneStep) {
  PNEUMO_REQUIRE_CUDA();
  ModelConfig config;
  config.input_size = 40;
  StepRun cpu = make_run(make_cpu_backend(0), config);
  StepRun cuda = make_run(make_cuda_backend(BackendOptions{}), config);
  for (StepRun* run : {&cpu, &cuda})
    run->trainer->train_step(run->data, run->order.data(), kBatch, 0, 0);
  auto report = [&](const std::string& what, ConstTensorView a, ConstTensorView e) {
    if (e.data == nullptr) return;
    auto ha = testing::to_host(a), he = testing::to_host(e);
    const double d = relative_l2(ha.data(), he.data(), static_cast<int64_t>(he.size()));
    std::cout << "[ layer ] " << what << " " << e.shape.str() << ": relative L2 " << d << "\n";
    EXPECT_LE(d, 1e-3) << what;
  };
  for (size_t i = 0; i < cpu.model->last_outputs().size(); ++i)
    report(cpu.model->layer_name(i) + " output", cuda.model->last_outputs()[i],
           cpu.model->last_outputs()[i]);
  for (size_t i = cpu.model->last_input_gradients().size(); i-- > 0;)
    report(cpu.model->layer_name(i) + " d input", cuda.model->last_input_gradients()[i],
           cpu.model->last_input_gradients()[i]);
}

TEST(StepParity, OneStepAndSeveralStepsAgree) {
  PNEUMO_REQUIRE_CUDA();
  ModelConfig config;
  config.input_size = 40;  // pools 40 -> 20 -> 10 -> 5 -> 3 -> 2: odd sizes included
  StepRun cpu = make_run(make_cpu_backend(0), config);
  StepRun perturbed = make_run(make_cpu_backend(0), config, 1e-6);
  StepRun cuda = make_run(make_cuda_backend(BackendOptions{}), config);
  ASSERT_EQ(cuda.model->parameters().device, Device::Cuda);
  ASSERT_EQ(cuda.data.images.device(), Device::Cuda);
  const auto before = testing::to_host(cpu.model->parameters());

  for (StepRun* run : {&cpu, &perturbed, &cuda})
    run->trainer->train_step(run->data, run->order.data(), kBatch, 0, 0);
  const EpochStats loss_cpu = cpu.trainer->read_stats(kBatch);
  const EpochStats loss_cuda = cuda.trainer->read_stats(kBatch);
  EXPECT_NEAR(loss_cuda.loss, loss_cpu.loss, 1e-5 + 1e-4 * loss_cpu.loss);
  EXPECT_EQ(loss_cuda.accuracy, loss_cpu.accuracy);
  EXPECT_TRUE(testing::all_close(cuda.model->buffers(), cpu.model->buffers(), 1e-5, 1e-4,
                                 "batch-norm running statistics"));
  const auto g_cpu = testing::to_host(cpu.model->gradients());
  expect_groups_agree(each_tensor(cpu.model->parameter_infos()), g_cpu,
                       testing::to_host(cuda.model->gradients()),
                       testing::to_host(perturbed.model->gradients()), "gradient");

  // Updated weights. RMSprop's first step is lr g / (sqrt(1 - rho) |g| + eps): lr sqrt(10) sign(g)
  // for a gradient well above eps, but a weight whose gradient is within rounding of zero may step
  // the other way, or (|g| near eps) by another fraction of the step. Seen on an H100: 36 of
  // 470k weights moved by 1e-6 to 1e-4 unlike the CPU run, every tensor's gradient agreeing. So
  // each CUDA weight must be the update of its own gradient (the optimizer is exact per element),
  // and no more weights may step differently from the CPU run than the perturbed run shows.
  const auto p_cpu = testing::to_host(cpu.model->parameters());
  const auto p_cuda = testing::to_host(cuda.model->parameters());
  const auto p_perturbed = testing::to_host(perturbed.model->parameters());
  const auto g_cuda = testing::to_host(cuda.model->gradients());
  const OptimizerSettings& opt = cuda.trainer->optimizer();
  const double first_step = opt.learning_rate / std::sqrt(1.0 - opt.rho);
  int64_t differ = 0, perturbed_differ = 0, inexact = 0;
  for (size_t i = 0; i < p_cpu.size(); ++i) {
    const double g = g_cuda[i];
    const double own = before[i] - opt.learning_rate * g /
                                       (std::sqrt(1.0 - opt.rho) * std::fabs(g) + opt.epsilon);
    if (std::fabs(p_cuda[i] - own) > 1e-6 + 1e-5 * std::fabs(own) && inexact++ < 5)
      ADD_FAILURE() << "parameter " << i << " is " << p_cuda[i] << " after the CUDA step, its own"
                    << " gradient " << g << " gives " << own;
    const double moved = std::fabs(double(p_cpu[i]) - before[i]);
    if (std::fabs(double(p_cuda[i]) - p_cpu[i]) > 1e-6 + 1e-3 * moved) ++differ;
    if (std::fabs(double(p_perturbed[i]) - p_cpu[i]) > 1e-6 + 1e-3 * moved) ++perturbed_differ;
  }
  EXPECT_EQ(inexact, 0) << "weights not updated by RMSprop from their own gradient on CUDA";
  EXPECT_LE(differ, 4 * perturbed_differ + int64_t(p_cpu.size()) / 1000)
      << differ << " weights stepped differently on CUDA; " << perturbed_differ
      << " on the perturbed CPU run (first step " << first_step << ")";

  // Three more steps (the second batch is the 2-image tail), each from the CPU run's state. Seen
  // once on an H100 under compute-sanitizer memcheck in a free run of four steps (cuDNN's timed
  // choice may differ there): fc2.bias, a single number, moved 5.6% unlike the CPU run and 0.4%
  // on the perturbed run, every first-step check passing.
  expect_later_steps_agree(cpu, perturbed, cuda, "CUDA");
}

// ---- Fused block tails ---------------------------------------------------------------------------

// Four steps (the second and fourth on the 2-image tail) of `candidate` against the CPU's
// unfused model, within the problem's own sensitivity (a perturbed unfused CPU run): the first
// step's gradients per tensor, then each later step from the CPU run's state
// (expect_later_steps_agree). A fixed tolerance on the running statistics passed with OpenBLAS's
// convolution sums and failed with the built-in GEMM's (the GPU check's build), the perturbed run
// moving as far: they too are held to the sensitivity.
void expect_steps_agree(StepRun& candidate, const ModelConfig& config, const std::string& what) {
  ModelConfig unfused = config;
  unfused.fused_block_tails = false;
  StepRun cpu = make_run(make_cpu_backend(0), unfused);
  StepRun perturbed = make_run(make_cpu_backend(0), unfused, 1e-6);
  const auto buffers_before = testing::to_host(cpu.model->buffers());
  for (StepRun* run : {&cpu, &perturbed, &candidate})
    run->trainer->train_step(run->data, run->order.data(), kBatch, 0, 0);
  expect_groups_agree(each_tensor(cpu.model->parameter_infos()),
                      testing::to_host(cpu.model->gradients()),
                      testing::to_host(candidate.model->gradients()),
                      testing::to_host(perturbed.model->gradients()), what + " gradient");
  expect_groups_agree(each_tensor(cpu.model->buffer_infos()),
                      minus(testing::to_host(cpu.model->buffers()), buffers_before),
                      minus(testing::to_host(candidate.model->buffers()), buffers_before),
                      minus(testing::to_host(perturbed.model->buffers()), buffers_before),
                      what + " batch-norm running statistics' change", 1e-2);
  expect_later_steps_agree(cpu, perturbed, candidate, what);
}

TEST(StepParityFusedTails, CpuFusedTrainsAsTheUnfusedModel) {
  ModelConfig config;
  config.input_size = 40;
  config.fused_block_tails = true;
  StepRun fused = make_run(make_cpu_backend(0), config);
  expect_steps_agree(fused, config, "CPU fused tails");
}

TEST(StepParityFusedTails, CudaFusedTrainsAsTheCpuUnfusedModel) {
  PNEUMO_REQUIRE_CUDA();
  ModelConfig config;
  config.input_size = 40;
  config.fused_block_tails = true;
  StepRun fused = make_run(make_cuda_backend(BackendOptions{}), config);
  expect_steps_agree(fused, config, "CUDA fused tails");
}

// ---- --precision bf16 ---------------------------------------------------------------------------

// Relative L2 of every layer's output, run a against run b, after each ran one step.
std::vector<double> layer_distances(const StepRun& a, const StepRun& b) {
  std::vector<double> d;
  for (size_t i = 0; i < b.model->last_outputs().size(); ++i) {
    const auto ha = testing::to_host(a.model->last_outputs()[i]);
    const auto hb = testing::to_host(b.model->last_outputs()[i]);
    d.push_back(relative_l2(ha.data(), hb.data(), static_cast<int64_t>(hb.size())));
  }
  return d;
}

size_t layer_index(const Model& model, const std::string& name) {
  for (size_t i = 0; i < model.last_outputs().size(); ++i)
    if (model.layer_name(i) == name) return i;
  ADD_FAILURE() << "no layer " << name;
  return 0;
}

// The CPU emulation is wired where the rule says: nothing changes before the second convolution
// (the first has one input channel and stays float32), everything from it on does.
TEST(StepParityBf16, TheEmulationChangesTheModelFromTheSecondConvolutionOn) {
  ModelConfig config;
  config.input_size = 40;
  StepRun fp32 = make_run(make_cpu_backend(1), config);
  StepRun bf16 = make_run(make_cpu_backend(1, /*bf16=*/true), config);
  for (StepRun* run : {&fp32, &bf16})
    run->trainer->train_step(run->data, run->order.data(), kBatch, 0, 0);
  const std::vector<double> d = layer_distances(bf16, fp32);
  const size_t conv2 = layer_index(*fp32.model, "conv2");
  for (size_t i = 0; i < d.size(); ++i) {
    if (i < conv2)
      EXPECT_EQ(d[i], 0.0) << fp32.model->layer_name(i) << " changed before conv2";
    else
      EXPECT_GT(d[i], 1e-4) << fp32.model->layer_name(i) << " did not change under bf16";
  }
}

// CUDA bf16 against the CPU's emulation, layer by layer after one step: the two round the same
// operands, so in the first bfloat16 block (conv2 to pool2) they must be much closer to each other
// than either is to float32 (a GPU that ran float32 there sits at 1.2 to 1.5 times the
// float32-vs-emulation distance). Deeper, any float32 difference (a sum in another order) flips
// some bfloat16 roundings and each layer re-rounds, so the two drift apart by as much as the
// emulation does from itself under a 1e-6 nudge of its weights: from conv3 on, the bound allows
// four times that (measured on the CPU with the emulation nudged by 1e-7 as the GPU's stand-in:
// up to 0.67 of the float32 distance at fc2, 18 of 20 seeds over the fixed bound, none over this).
TEST(StepParityBf16, CudaAgreesWithTheEmulationLayerByLayer) {
  PNEUMO_REQUIRE_CUDA();
  ModelConfig config;
  config.input_size = 40;
  BackendOptions bf16_options;
  bf16_options.bf16 = true;
  StepRun fp32 = make_run(make_cpu_backend(0), config);
  StepRun emulated = make_run(make_cpu_backend(0, true), config);
  StepRun nudged = make_run(make_cpu_backend(0, true), config, 1e-6);
  StepRun cuda = make_run(make_cuda_backend(bf16_options), config);
  for (StepRun* run : {&fp32, &emulated, &nudged, &cuda})
    run->trainer->train_step(run->data, run->order.data(), kBatch, 0, 0);
  const std::vector<double> twins = layer_distances(cuda, emulated);
  const std::vector<double> precision = layer_distances(fp32, emulated);
  const std::vector<double> sensitivity = layer_distances(nudged, emulated);
  const size_t conv3 = layer_index(*emulated.model, "conv3");
  for (size_t i = 0; i < twins.size(); ++i) {
    std::cout << "[ bf16 layer ] " << emulated.model->layer_name(i) << ": CUDA vs emulation "
              << twins[i] << ", fp32 vs emulation " << precision[i] << ", nudged emulation "
              << sensitivity[i] << "\n";
    const double drift = i >= conv3 ? 4.0 * sensitivity[i] : 0.0;
    EXPECT_LE(twins[i], 1e-3 + 0.25 * precision[i] + drift) << emulated.model->layer_name(i);
    // From conv3 on that bound lies above the float32 distance itself: a GPU running float32
    // there would pass it. Bfloat16 twins stay well inside that distance (0.09 to 0.53 of it on
    // the H200 of 2026-12-04, 0.67 at most in the CPU stand-in), float32 sits near 1.
    if (i >= conv3 && precision[i] > 2e-3) {
      EXPECT_LT(twins[i], 0.8 * precision[i])
          << emulated.model->layer_name(i) << ": as far from the emulation as float32 is";
    }
  }
}

}  // namespace
}  // namespace pneumo
