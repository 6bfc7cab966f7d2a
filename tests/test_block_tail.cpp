// The fused block tail (pneumo/ops/block_tail.hpp) against the unfused chain it replaces:
// dropout_forward -> batchnorm_forward_training -> maxpool2d_forward, and maxpool2d_backward ->
// batchnorm_backward -> dropout_backward -> relu_backward (each of those tested against its own
// independent reference elsewhere). On the CPU, then a whole model step (fused vs unfused layers),
// then CUDA against the CPU (skipped without a GPU).
//
// Inputs are ReLU outputs quantised to quarters, so windows hold exact ties (zeros above all,
// and equal positives): the winner rule and its recomputation in the backward pass are exercised,
// not only random values that never tie.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include "bf16.hpp"
#include "block_tail_math.hpp"
#include "pneumo/backend.hpp"
#include "pneumo/distributed.hpp"
#include "pneumo/model.hpp"
#include "channels_last.hpp"
#include "cuda/cuda_backend.hpp"
#include "test_util.hpp"

namespace pneumo {
namespace {

using testing::all_close;
using testing::Bf16Tensor;
using testing::to_host;

// A ReLU output with ties: max(0, v) rounded to quarters, v uniform in [-1, 2).
Tensor relu_output(Shape shape, Device device, uint32_t seed) {
  auto values = testing::random_values(shape.numel(), seed, -1.0f, 2.0f);
  for (float& v : values) v = std::round(std::max(v, 0.0f) * 4.0f) / 4.0f;
  return Tensor::from_host(shape, values.data(), device);
}

// A CUDA backend whose per-channel sums run in chunks of 3 images (the last one short where the
// batch does not divide): the SM count's split gives these tests' batches one image per chunk
// on a large GPU, which never merges a chunk of several images.
std::unique_ptr<Backend> chunked_cuda_backend() {
  CudaBackendOptions options;
  options.reduction_images_per_chunk = 3;
  return std::make_unique<CudaBackend>(options);
}

struct TailCase {
  Shape shape;
  float rate;
  uint32_t first;  // dropout key offset (a data-parallel rank's shard)
  bool training;
};

// Everything one direction of either path produces.
struct TailResult {
  std::vector<float> y, saved_mean, saved_inv_std, running_mean, running_var, da, dgamma, dbeta;
};

struct TailOperands {
  Tensor a, gamma, beta, running_mean, running_var, dy;
};

TailOperands operands(const TailCase& c, Device device) {
  const Shape channels{c.shape.c()};
  const Shape pooled = pool_geometry(c.shape).output();
  return {relu_output(c.shape, device, 3),
          testing::random_tensor(channels, device, 4, 0.5f, 1.5f),
          testing::random_tensor(channels, device, 5, -0.5f, 0.5f),
          testing::random_tensor(channels, device, 6, -0.2f, 0.2f),
          testing::random_tensor(channels, device, 7, 0.5f, 2.0f),
          testing::random_tensor(pooled, device, 8)};
}

BlockTailSettings settings_for(const TailCase& c) {
  BlockTailSettings s;
  s.training = c.training;
  s.dropout_rate = c.rate;
  s.dropout_key = RngKey{42, 9, 2, 5, c.first};
  s.average_factor = 0.01;
  s.epsilon = 1e-3;
  return s;
}

TailResult run_fused(Backend& backend, const TailCase& c) {
  TailOperands o = operands(c, backend.device());
  const BlockTailSettings s = settings_for(c);
  const Shape channels{c.shape.c()};
  Tensor y = backend.empty(pool_geometry(c.shape).output());
  Tensor saved_mean = backend.empty(channels), saved_inv_std = backend.empty(channels);
  Tensor da = backend.empty(c.shape), dgamma = backend.empty(channels),
         dbeta = backend.empty(channels);
  backend.block_tail_forward(o.a, o.gamma, o.beta, o.running_mean, o.running_var, s, y, saved_mean,
                             saved_inv_std);
  backend.block_tail_backward(o.a, o.dy, o.gamma, o.beta, saved_mean, saved_inv_std, s, da, dgamma,
                              dbeta);
  backend.synchronize();
  return {to_host(y),           to_host(saved_mean), to_host(saved_inv_std),
          to_host(o.running_mean), to_host(o.running_var), to_host(da),
          to_host(dgamma),      to_host(dbeta)};
}

TailResult run_chain(Backend& backend, const TailCase& c) {
  TailOperands o = operands(c, backend.device());
  const BlockTailSettings s = settings_for(c);
  const Shape channels{c.shape.c()};
  Tensor d = backend.empty(c.shape), z = backend.empty(c.shape);
  Tensor y = backend.empty(pool_geometry(c.shape).output());
  Tensor saved_mean = backend.empty(channels), saved_inv_std = backend.empty(channels);
  Tensor dz = backend.empty(c.shape), dd = backend.empty(c.shape), dm = backend.empty(c.shape),
         da = backend.empty(c.shape);
  Tensor dgamma = backend.zeros(channels), dbeta = backend.zeros(channels);
  const bool dropout = c.training && c.rate > 0.0f;
  if (dropout)
    backend.dropout_forward(o.a, d, c.rate, s.dropout_key);
  else
    d.copy_from(o.a);
  if (c.training) {
    backend.batchnorm_forward_training(d, o.gamma, o.beta, o.running_mean, o.running_var,
                                       s.average_factor, s.epsilon, z, saved_mean, saved_inv_std);
  } else {
    backend.batchnorm_forward_inference(d, o.gamma, o.beta, o.running_mean, o.running_var,
                                        s.epsilon, z);
    // The fused op's documented saved statistics after an inference forward.
    auto mean = to_host(o.running_mean), var = to_host(o.running_var);
    std::vector<float> inv(var.size());
    for (size_t k = 0; k < var.size(); ++k)
      inv[k] = static_cast<float>(1.0 / std::sqrt(double{var[k]} + s.epsilon));
    saved_mean.copy_from(ConstTensorView(mean.data(), channels, Device::Cpu));
    saved_inv_std.copy_from(ConstTensorView(inv.data(), channels, Device::Cpu));
  }
  backend.maxpool2d_forward(z, y);
  backend.maxpool2d_backward(z, y, o.dy, dz);
  if (c.training) {
    backend.batchnorm_backward(d, dz, o.gamma, saved_mean, saved_inv_std, s.epsilon, dd, dgamma,
                               dbeta);
  } else {
    // Inference: the affine map's gradient, dz gamma inv_std (what BatchNorm2d's backward does
    // after an inference forward); dgamma and dbeta as sums at the winners, from the host.
    Tensor zero = backend.zeros(channels);
    backend.batchnorm_forward_inference(dz, o.gamma, zero, zero, o.running_var, s.epsilon, dd);
    auto dzh = to_host(dz), dh = to_host(d);
    auto mean = to_host(saved_mean), inv = to_host(saved_inv_std);
    const ChannelLayout l = channel_layout(c.shape);
    std::vector<float> g(static_cast<size_t>(l.channels)), b(static_cast<size_t>(l.channels));
    for (int64_t n = 0; n < l.batch; ++n)
      for (int64_t k = 0; k < l.channels; ++k)
        for (int64_t p = 0; p < l.pixels; ++p) {
          const size_t i = static_cast<size_t>((n * l.channels + k) * l.pixels + p);
          b[static_cast<size_t>(k)] += dzh[i];
          g[static_cast<size_t>(k)] += dzh[i] * (dh[i] - mean[static_cast<size_t>(k)]) *
                                       inv[static_cast<size_t>(k)];
        }
    dgamma.copy_from(ConstTensorView(g.data(), channels, Device::Cpu));
    dbeta.copy_from(ConstTensorView(b.data(), channels, Device::Cpu));
  }
  if (dropout)
    backend.dropout_backward(dd, dm, c.rate, s.dropout_key);
  else
    dm.copy_from(dd);
  backend.relu_backward(o.a, dm, da);
  backend.synchronize();
  return {to_host(y),           to_host(saved_mean), to_host(saved_inv_std),
          to_host(o.running_mean), to_host(o.running_var), to_host(da),
          to_host(dgamma),      to_host(dbeta)};
}

// Per-channel sums over a large batch (dgamma, dbeta, the stem's dweight and dbias) add up
// hundreds of thousands of terms with cancellation: the GPU in float partials, the CPU in double.
// Compared as a whole, in relative L2, where elementwise tolerances would measure the
// cancellation rather than the op.
::testing::AssertionResult sums_close(const std::vector<float>& actual,
                                      const std::vector<float>& expected, double tolerance,
                                      const char* what) {
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < expected.size() && i < actual.size(); ++i) {
    diff += (double{actual[i]} - expected[i]) * (double{actual[i]} - expected[i]);
    norm += double{expected[i]} * expected[i];
  }
  const double relative = std::sqrt(diff / std::max(norm, 1e-30));
  if (actual.size() == expected.size() && std::isfinite(relative) && relative <= tolerance)
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": relative L2 " << relative << " > "
                                       << tolerance;
}

// Large: the per-channel sums compared by sums_close(1e-4) instead of elementwise.
void expect_same(const TailResult& fused, const TailResult& chain, double forward_tol,
                 double backward_tol, bool large = false) {
  EXPECT_TRUE(all_close(fused.saved_mean, chain.saved_mean, forward_tol, forward_tol, "saved_mean"));
  EXPECT_TRUE(all_close(fused.saved_inv_std, chain.saved_inv_std, forward_tol, forward_tol,
                        "saved_inv_std"));
  EXPECT_TRUE(all_close(fused.running_mean, chain.running_mean, forward_tol, forward_tol,
                        "running_mean"));
  EXPECT_TRUE(all_close(fused.running_var, chain.running_var, forward_tol, forward_tol,
                        "running_var"));
  EXPECT_TRUE(all_close(fused.y, chain.y, forward_tol, forward_tol, "y"));
  EXPECT_TRUE(all_close(fused.da, chain.da, backward_tol, backward_tol, "da"));
  if (large) {
    EXPECT_TRUE(sums_close(fused.dgamma, chain.dgamma, 1e-4, "dgamma"));
    EXPECT_TRUE(sums_close(fused.dbeta, chain.dbeta, 1e-4, "dbeta"));
    return;
  }
  EXPECT_TRUE(all_close(fused.dgamma, chain.dgamma, backward_tol, backward_tol, "dgamma"));
  EXPECT_TRUE(all_close(fused.dbeta, chain.dbeta, backward_tol, backward_tol, "dbeta"));
}

const TailCase kCases[] = {
    {{3, 4, 6, 6}, 0.2f, 0, true},    // even sizes, dropout
    {{2, 3, 5, 7}, 0.0f, 0, true},    // odd sizes: top/left padding windows of 1 and 2
    {{2, 5, 7, 5}, 0.1f, 12, true},   // dropout from a shard's offset, odd sizes
    {{3, 4, 6, 5}, 0.2f, 0, false},   // inference: running statistics, no dropout
};

TEST(BlockTail, CpuMatchesTheUnfusedChain) {
  auto cpu = make_cpu_backend(2);
  for (const TailCase& c : kCases) {
    SCOPED_TRACE(c.shape.str() + " rate " + std::to_string(c.rate) +
                 (c.training ? " training" : " inference"));
    // The forward's statistics use batch-norm's own summation: equal but for the last bit.
    expect_same(run_fused(*cpu, c), run_chain(*cpu, c), 1e-6, 2e-5);
  }
}

// The comparison above can fail: with the dropout mask left out of the fused forward (rate 0
// given to the fused op only), the outputs must differ. Tried by hand as well: the tie rule
// swapped (>= for >) in block_tail_winner fails CpuMatchesTheUnfusedChain (da, every case), and
// ReLU's gradient left out of block_tail_gradient fails it and FusedModelStepMatches... too.
TEST(BlockTail, TheComparisonSeesAMissingDropout) {
  auto cpu = make_cpu_backend(1);
  TailCase with{{3, 4, 6, 6}, 0.2f, 0, true};
  TailCase without = with;
  without.rate = 0.0f;
  const TailResult fused = run_fused(*cpu, without), chain = run_chain(*cpu, with);
  EXPECT_FALSE(all_close(fused.y, chain.y, 1e-4, 1e-4));
  EXPECT_FALSE(all_close(fused.da, chain.da, 1e-4, 1e-4));
}

TEST(BlockTail, RefusesBadArguments) {
  auto cpu = make_cpu_backend(1);
  TailOperands o = operands({{2, 3, 4, 4}, 0.1f, 0, true}, Device::Cpu);
  Tensor saved_mean = cpu->empty({3}), saved_inv_std = cpu->empty({3});
  BlockTailSettings s;
  Tensor wrong = cpu->empty({2, 3, 4, 4});  // not the pooled shape
  EXPECT_THROW(cpu->block_tail_forward(o.a, o.gamma, o.beta, o.running_mean, o.running_var, s,
                                       wrong, saved_mean, saved_inv_std),
               Error);
  Tensor y = cpu->empty({2, 3, 2, 2});
  s.dropout_key.first = 6;  // not a multiple of 4
  EXPECT_THROW(cpu->block_tail_forward(o.a, o.gamma, o.beta, o.running_mean, o.running_var, s, y,
                                       saved_mean, saved_inv_std),
               Error);
  s.dropout_key.first = 0;
  s.dropout_rate = 1.0f;
  EXPECT_THROW(cpu->block_tail_forward(o.a, o.gamma, o.beta, o.running_mean, o.running_var, s, y,
                                       saved_mean, saved_inv_std),
               Error);
}

// A whole model, fused tails against the unfused layers: same initial weights, same batch, one
// training forward + backward and one inference forward. Logits, every gradient and the running
// statistics agree; the parameter list (names, offsets) is the same, so checkpoints are too.
struct ModelStep {
  std::vector<float> logits, gradients, buffers, inference_logits;
  std::vector<float> initial_buffers;  // the running statistics before the step
  std::vector<ParameterInfo> infos;
  std::vector<std::string> layers;  // the model's layer names, in order
};

// Dropout in block 1 too (the recipe has none there), so the stem's mask is exercised, and the
// batch as a data-parallel rank's shard starting at image 3 of the global batch, so the masks'
// global offsets are: the fused layers must draw what the Dropout layers draw.
ModelStep model_step(Backend& backend, const ModelConfig& config) {
  constexpr int kBatch = 3;
  Model model(backend, config, kBatch);
  model.initialize(11);
  Tensor x = testing::random_tensor({kBatch, 1, 24, 24}, backend.device(), 12, 0.0f, 1.0f);
  ModelStep out;
  out.initial_buffers = to_host(model.buffers());
  out.logits = to_host(model.forward(x, /*training=*/true, RngKey{7, 0, 1, 2, 3}));
  std::vector<float> dl{0.5f, -1.0f, 0.25f};
  Tensor dlogits = Tensor::from_host({kBatch, 1}, dl.data(), backend.device());
  model.backward(dlogits);
  out.gradients = to_host(model.gradients());
  out.buffers = to_host(model.buffers());
  out.inference_logits = to_host(model.forward(x, /*training=*/false));
  out.infos = model.parameter_infos();
  for (size_t i = 0; i < model.layer_count(); ++i) out.layers.push_back(model.layer_name(i));
  return out;
}

ModelStep model_step(Backend& backend, bool fused) {
  ModelConfig config;
  config.input_size = 24;
  config.conv_dropout = {0.1f, 0.1f, 0.0f, 0.2f, 0.2f};
  config.fused_block_tails = fused;
  return model_step(backend, config);
}

// Relative L2 of each parameter's gradient against the expected one.
void expect_gradients_close(const ModelStep& got, const ModelStep& want, double tolerance) {
  for (const ParameterInfo& info : want.infos) {
    double diff = 0.0, norm = 0.0;
    for (int64_t i = info.offset; i < info.offset + info.shape.numel(); ++i) {
      const double d = double{got.gradients[size_t(i)]} - want.gradients[size_t(i)];
      diff += d * d;
      norm += double{want.gradients[size_t(i)]} * want.gradients[size_t(i)];
    }
    EXPECT_LE(std::sqrt(diff / std::max(norm, 1e-30)), tolerance) << info.name;
  }
}

// The dropout mask's 32-bit element index limits a training tail with dropout only: at rate 0
// (block 1, inference) every multiplier is 1 whatever the bits, so a batch past 2^32 elements
// (a validation pass at --val-batch 4096 and 224 px: 4096 x 32 x 224 x 224) goes on.
TEST(BlockTail, TheMaskIndexLimitHoldsOnlyWhereAMaskIsDrawn) {
  const ChannelLayout huge{4096, 32, 224 * 224};
  ASSERT_GT(huge.batch * huge.channels * huge.pixels, int64_t{1} << 32);
  BlockTailSettings settings;
  settings.dropout_rate = 0.0f;
  EXPECT_NO_THROW(ops::check_block_tail_settings("block_tail_forward", huge, settings));
  settings.dropout_rate = 0.2f;
  EXPECT_THROW(ops::check_block_tail_settings("block_tail_forward", huge, settings), Error);
  const ChannelLayout fits{16, 32, 224 * 224};
  EXPECT_NO_THROW(ops::check_block_tail_settings("block_tail_forward", fits, settings));
}

TEST(BlockTail, FusedModelStepMatchesTheUnfusedModel) {
  auto cpu = make_cpu_backend(2);
  const ModelStep unfused = model_step(*cpu, false), fused = model_step(*cpu, true);
  // The two ran different layers (a flag that stopped reaching the model would compare a model
  // with itself): the stem and the tails on one side, the Dropout layers on the other.
  auto has = [](const ModelStep& step, const std::string& name) {
    return std::find(step.layers.begin(), step.layers.end(), name) != step.layers.end();
  };
  for (const char* name : {"stem", "tail2", "tail5"}) {
    EXPECT_TRUE(has(fused, name)) << name << " missing from the fused model";
    EXPECT_FALSE(has(unfused, name)) << name << " in the unfused model";
  }
  EXPECT_TRUE(has(unfused, "dropout2"));
  EXPECT_FALSE(has(fused, "dropout2"));
  ASSERT_EQ(fused.infos.size(), unfused.infos.size());
  for (size_t i = 0; i < fused.infos.size(); ++i) {
    EXPECT_EQ(fused.infos[i].name, unfused.infos[i].name);
    EXPECT_EQ(fused.infos[i].offset, unfused.infos[i].offset);
  }
  EXPECT_TRUE(all_close(fused.logits, unfused.logits, 1e-5, 1e-5, "training logits"));
  EXPECT_TRUE(all_close(fused.buffers, unfused.buffers, 1e-6, 1e-5, "running statistics"));
  // Per tensor, relative L2: the stem recomputes conv1 with fused multiply-adds where the unfused
  // model's im2col GEMM sums in another order, so every later value differs in its last bits and
  // an element next to a max-pool or ReLU kink can differ more (seen: 562 of 458,881 gradient
  // elements beyond 1e-4 elementwise, the worst 6x that).
  expect_gradients_close(fused, unfused, 1e-4);
  EXPECT_TRUE(all_close(fused.inference_logits, unfused.inference_logits, 1e-5, 1e-5,
                        "inference logits"));
}

TEST(BlockTail, FusedTailsRefuseSynchronisedBatchNorm) {
  auto cpu = make_cpu_backend(1);
  ModelConfig config;
  config.input_size = 24;
  config.fused_block_tails = true;
  Model model(*cpu, config, 2);
  auto group = make_communicator();  // one process here: a group of one
  EXPECT_THROW(model.synchronise_batchnorm(group.get()), Error);
  EXPECT_NO_THROW(model.synchronise_batchnorm(nullptr));
}

// ---- The stem: block 1 whole, its convolution recomputed ---------------------------------------

struct StemResult {
  std::vector<float> y, saved_mean, saved_inv_std, running_mean, running_var, dweight, dbias,
      dgamma, dbeta;
};

struct StemOperands {
  Tensor x, weight, bias, gamma, beta, running_mean, running_var, dy;
};

StemOperands stem_operands(const Shape& x, int64_t k, Device device) {
  const Shape c{k};
  return {testing::random_tensor(x, device, 13, 0.0f, 1.0f),
          testing::random_tensor({k, 1, 3, 3}, device, 14, -0.5f, 0.5f),
          testing::random_tensor(c, device, 15, -0.1f, 0.1f),
          testing::random_tensor(c, device, 4, 0.5f, 1.5f),
          testing::random_tensor(c, device, 5, -0.5f, 0.5f),
          testing::random_tensor(c, device, 6, -0.2f, 0.2f),
          testing::random_tensor(c, device, 7, 0.5f, 2.0f),
          testing::random_tensor(pool_geometry({x.n(), k, x.h(), x.w()}).output(), device, 8)};
}

// fused: stem_forward/backward; else conv2d_forward (+ ReLU) -> block_tail_forward, and
// block_tail_backward -> conv2d_backward_filter.
StemResult run_stem(Backend& backend, const Shape& x_shape, int64_t k, const BlockTailSettings& s,
                    bool fused) {
  StemOperands o = stem_operands(x_shape, k, backend.device());
  const Shape c{k}, a_shape{x_shape.n(), k, x_shape.h(), x_shape.w()};
  Tensor y = backend.empty(pool_geometry(a_shape).output());
  Tensor saved_mean = backend.empty(c), saved_inv_std = backend.empty(c);
  Tensor dweight = backend.empty({k, 1, 3, 3}), dbias = backend.empty(c), dgamma = backend.empty(c),
         dbeta = backend.empty(c);
  if (fused) {
    backend.stem_forward(o.x, o.weight, o.bias, o.gamma, o.beta, o.running_mean, o.running_var, s,
                         y, saved_mean, saved_inv_std);
    backend.stem_backward(o.x, o.dy, o.weight, o.bias, o.gamma, o.beta, saved_mean,
                          saved_inv_std, s, dweight, dbias, dgamma, dbeta);
  } else {
    Tensor a = backend.empty(a_shape), da = backend.empty(a_shape);
    backend.conv2d_forward(o.x, o.weight, o.bias, a, /*fuse_relu=*/true);
    backend.block_tail_forward(a, o.gamma, o.beta, o.running_mean, o.running_var, s, y,
                               saved_mean, saved_inv_std);
    backend.block_tail_backward(a, o.dy, o.gamma, o.beta, saved_mean, saved_inv_std, s, da,
                                dgamma, dbeta);
    backend.conv2d_backward_filter(o.x, da, dweight, dbias);
  }
  backend.synchronize();
  return {to_host(y),       to_host(saved_mean), to_host(saved_inv_std), to_host(o.running_mean),
          to_host(o.running_var), to_host(dweight), to_host(dbias),  to_host(dgamma),
          to_host(dbeta)};
}

void expect_same(const StemResult& a, const StemResult& b, double forward_tol,
                 double backward_tol, bool large = false) {
  EXPECT_TRUE(all_close(a.saved_mean, b.saved_mean, forward_tol, forward_tol, "saved_mean"));
  EXPECT_TRUE(all_close(a.saved_inv_std, b.saved_inv_std, forward_tol, forward_tol, "inv_std"));
  EXPECT_TRUE(all_close(a.running_mean, b.running_mean, forward_tol, forward_tol, "running_mean"));
  EXPECT_TRUE(all_close(a.running_var, b.running_var, forward_tol, forward_tol, "running_var"));
  EXPECT_TRUE(all_close(a.y, b.y, forward_tol, forward_tol, "y"));
  if (large) {
    EXPECT_TRUE(sums_close(a.dweight, b.dweight, 1e-4, "dweight"));
    EXPECT_TRUE(sums_close(a.dbias, b.dbias, 1e-4, "dbias"));
    EXPECT_TRUE(sums_close(a.dgamma, b.dgamma, 1e-4, "dgamma"));
    EXPECT_TRUE(sums_close(a.dbeta, b.dbeta, 1e-4, "dbeta"));
    return;
  }
  EXPECT_TRUE(all_close(a.dweight, b.dweight, backward_tol, backward_tol, "dweight"));
  EXPECT_TRUE(all_close(a.dbias, b.dbias, backward_tol, backward_tol, "dbias"));
  EXPECT_TRUE(all_close(a.dgamma, b.dgamma, backward_tol, backward_tol, "dgamma"));
  EXPECT_TRUE(all_close(a.dbeta, b.dbeta, backward_tol, backward_tol, "dbeta"));
}

struct StemCase {
  Shape x;
  int64_t k;
  float rate;
  bool training;
};
const StemCase kStemCases[] = {{{3, 1, 10, 10}, 4, 0.0f, true},
                               {{2, 1, 9, 7}, 3, 0.2f, true},
                               {{2, 1, 8, 9}, 5, 0.0f, false}};

BlockTailSettings stem_settings(const StemCase& c) {
  BlockTailSettings s = settings_for({c.x, c.rate, 0, c.training});
  return s;
}

TEST(Stem, CpuMatchesConvolutionThenTail) {
  auto cpu = make_cpu_backend(2);
  for (const StemCase& c : kStemCases) {
    SCOPED_TRACE(c.x.str() + " k " + std::to_string(c.k) + " rate " + std::to_string(c.rate) +
                 (c.training ? " training" : " inference"));
    // The im2col convolution sums its 9 taps in another order than the stem's fused
    // multiply-adds, so the activations differ in the last bits.
    expect_same(run_stem(*cpu, c.x, c.k, stem_settings(c), true),
                run_stem(*cpu, c.x, c.k, stem_settings(c), false), 1e-5, 1e-4);
  }
}

// The windows' four positions name the elements their offsets do, on even and odd planes (odd
// ones pad the top row or left column: those positions are not real), the real ones tile the
// plane, and the stem's window (a 4 x 4 patch read once) gives each real position the
// activation and the taps that StemPlane::at and the image give it.
TEST(Stem, WindowPositionsAndTheStemsPatchAgreeWithThePlane) {
  for (auto [height, width] : {std::pair{6, 8}, {5, 7}, {1, 1}, {3, 2}, {2, 5}}) {
    SCOPED_TRACE(std::to_string(height) + " x " + std::to_string(width));
    const PoolGeometry g{1, 1, height, width};
    const auto image = testing::random_values(height * width, 3, -1.0f, 1.0f);
    StemPlane plane{image.data(), height, width, {}, 0.05f};
    for (int t = 0; t < 9; ++t) plane.w[t] = 0.1f * static_cast<float>(t - 4);
    std::vector<int> covered(static_cast<size_t>(height * width), 0);
    for (int64_t oy = 0; oy < g.out_height(); ++oy)
      for (int64_t ox = 0; ox < g.out_width(); ++ox) {
        const PoolWindow w = pool_window(g, oy, ox);
        const StemWindow stem = plane.window(w);
        int real = 0;
        for (int p = 0; p < 4; ++p) {
          const int64_t row = w.row(p), col = w.col(p);
          ASSERT_EQ(w.real(p), row >= 0 && col >= 0);
          if (!w.real(p)) continue;
          ++real;
          ASSERT_TRUE(row < height && col < width) << "window " << oy << ", " << ox;
          ASSERT_EQ(w.offset(p), row * width + col);
          ++covered[size_t(w.offset(p))];
          ASSERT_EQ(stem.in_window(w, p), plane.at(row, col)) << "position " << p;
          ASSERT_EQ(plane(w.offset(p)), plane.at(row, col));
          ASSERT_EQ(PlaneValues{image.data()}.in_window(w, p), image[size_t(w.offset(p))]);
          for (int t = 0; t < 9; ++t) {
            const int64_t iy = row + t / 3 - 1, ix = col + t % 3 - 1;
            const bool inside = iy >= 0 && iy < height && ix >= 0 && ix < width;
            ASSERT_EQ(stem.tap(p, t), inside ? image[size_t(iy * width + ix)] : 0.0f);
          }
        }
        ASSERT_GE(real, 1) << "a window with no real element";
      }
    for (int count : covered) ASSERT_EQ(count, 1) << "the windows do not tile the plane";
  }
}

TEST(Stem, RefusesAnImageWithMoreThanOneChannel) {
  auto cpu = make_cpu_backend(1);
  StemOperands o = stem_operands({2, 1, 6, 6}, 3, Device::Cpu);
  Tensor x2 = cpu->zeros({2, 2, 6, 6});
  Tensor y = cpu->empty({2, 3, 3, 3}), m = cpu->empty({3}), v = cpu->empty({3});
  EXPECT_THROW(cpu->stem_forward(x2, o.weight, o.bias, o.gamma, o.beta, o.running_mean,
                                 o.running_var, {}, y, m, v),
               Error);
  Tensor bad_y = cpu->empty({2, 3, 6, 6});
  EXPECT_THROW(cpu->stem_forward(o.x, o.weight, o.bias, o.gamma, o.beta, o.running_mean,
                                 o.running_var, {}, bad_y, m, v),
               Error);
}

TEST(StemCuda, MatchesTheCpuTwin) {
  PNEUMO_REQUIRE_CUDA();
  auto cpu = make_cpu_backend(2);
  auto cuda = make_cuda_backend(BackendOptions{});
  for (const StemCase& c : kStemCases) {
    SCOPED_TRACE(c.x.str() + " k " + std::to_string(c.k));
    expect_same(run_stem(*cuda, c.x, c.k, stem_settings(c), true),
                run_stem(*cpu, c.x, c.k, stem_settings(c), true), 1e-5, 1e-4);
  }
  // The recipe's block 1: 150 px, 32 channels, batch 4.
  const StemCase big{{4, 1, 150, 150}, 32, 0.0f, true};
  const StemResult want = run_stem(*cpu, big.x, big.k, stem_settings(big), true);
  expect_same(run_stem(*cuda, big.x, big.k, stem_settings(big), true), want, 1e-5, 1e-4, true);
  // Its sums in chunks of 3 + 1 images; and batches of 3 + 3 + 1 and 3 + 2, small.
  auto chunked = chunked_cuda_backend();
  SCOPED_TRACE("chunks of 3 images");
  expect_same(run_stem(*chunked, big.x, big.k, stem_settings(big), true), want, 1e-5, 1e-4, true);
  for (const StemCase& c : {StemCase{{7, 1, 9, 8}, 4, 0.2f, true}, StemCase{{5, 1, 10, 7}, 6, 0.0f, true}})
    expect_same(run_stem(*chunked, c.x, c.k, stem_settings(c), true),
                run_stem(*cpu, c.x, c.k, stem_settings(c), true), 1e-5, 1e-4);
}

TEST(StemCuda, MatchesTheCudaConvolutionThenTail) {
  PNEUMO_REQUIRE_CUDA();
  auto cuda = make_cuda_backend(BackendOptions{});
  for (const StemCase& c : kStemCases) {
    SCOPED_TRACE(c.x.str() + " k " + std::to_string(c.k));
    expect_same(run_stem(*cuda, c.x, c.k, stem_settings(c), true),
                run_stem(*cuda, c.x, c.k, stem_settings(c), false), 1e-5, 1e-4);
  }
}

// CUDA against the CPU twin, op by op: the same windows and masks (shared code), statistics
// summed in another order, so a tolerance; ties are exact in these inputs, so a winner chosen
// differently would show as a large error in da.
TEST(BlockTailCuda, MatchesTheCpuTwin) {
  PNEUMO_REQUIRE_CUDA();
  auto cpu = make_cpu_backend(2);
  BackendOptions options;
  auto cuda = make_cuda_backend(options);
  for (const TailCase& c : kCases) {
    SCOPED_TRACE(c.shape.str() + " rate " + std::to_string(c.rate));
    expect_same(run_fused(*cuda, c), run_fused(*cpu, c), 1e-5, 1e-4);
  }
  // A block of the recipe's size: block 2 at 150 px, batch 8, dropout 0.1.
  const TailCase big{{8, 64, 75, 75}, 0.1f, 0, true};
  const TailResult want = run_fused(*cpu, big);
  expect_same(run_fused(*cuda, big), want, 1e-5, 1e-4, true);
  // Its sums in chunks of 3 + 3 + 2 images; and batches of 3 + 3 + 1 and 3 + 2, small.
  auto chunked = chunked_cuda_backend();
  SCOPED_TRACE("chunks of 3 images");
  expect_same(run_fused(*chunked, big), want, 1e-5, 1e-4, true);
  for (const TailCase& c : {TailCase{{7, 4, 6, 5}, 0.2f, 0, true}, TailCase{{5, 6, 7, 6}, 0.0f, 0, true}})
    expect_same(run_fused(*chunked, c), run_fused(*cpu, c), 1e-5, 1e-4);
}

TEST(BlockTailCuda, MatchesTheCudaUnfusedChain) {
  PNEUMO_REQUIRE_CUDA();
  BackendOptions options;
  auto cuda = make_cuda_backend(options);
  for (const TailCase& c : kCases) {
    SCOPED_TRACE(c.shape.str() + " rate " + std::to_string(c.rate));
    expect_same(run_fused(*cuda, c), run_chain(*cuda, c), 1e-5, 1e-4);
  }
}

// An empty batch (a data-parallel rank's empty shard, an inference pass over nothing) still
// writes every per-channel output, as every backward op does: the saved statistics of an
// inference forward are the running ones, the parameter gradients zero. The outputs start at 7,
// so one left unwritten shows.
void expect_empty_batch_writes_its_outputs(Backend& backend) {
  const int64_t k = 3;
  const Shape c{k}, x_shape{0, 1, 6, 6}, a_shape{0, k, 6, 6};
  StemOperands o = stem_operands({1, 1, 6, 6}, k, backend.device());  // per-channel operands
  Tensor x = backend.empty(x_shape), a = backend.empty(a_shape), da = backend.empty(a_shape);
  Tensor y = backend.empty(pool_geometry(a_shape).output()), dy = backend.empty(y.shape());
  const std::vector<float> sevens(9 * k, 7.0f);
  const auto filled = [&](Shape shape) {
    return Tensor::from_host(shape, sevens.data(), backend.device());
  };
  const BlockTailSettings s = settings_for({a_shape, 0.0f, 0, /*training=*/false});
  const std::vector<float> running_mean = to_host(o.running_mean);
  const std::vector<float> running_var = to_host(o.running_var);
  for (bool stem : {false, true}) {
    SCOPED_TRACE(stem ? "stem" : "block tail");
    Tensor saved_mean = filled(c), saved_inv_std = filled(c), dgamma = filled(c),
           dbeta = filled(c), dweight = filled({k, 1, 3, 3}), dbias = filled(c);
    if (stem) {
      backend.stem_forward(x, o.weight, o.bias, o.gamma, o.beta, o.running_mean, o.running_var, s,
                           y, saved_mean, saved_inv_std);
      backend.stem_backward(x, dy, o.weight, o.bias, o.gamma, o.beta, saved_mean, saved_inv_std, s,
                            dweight, dbias, dgamma, dbeta);
    } else {
      backend.block_tail_forward(a, o.gamma, o.beta, o.running_mean, o.running_var, s, y,
                                 saved_mean, saved_inv_std);
      backend.block_tail_backward(a, dy, o.gamma, o.beta, saved_mean, saved_inv_std, s, da,
                                  dgamma, dbeta);
    }
    backend.synchronize();
    std::vector<float> inv_std(static_cast<size_t>(k));
    for (size_t j = 0; j < inv_std.size(); ++j)
      inv_std[j] =
          static_cast<float>(1.0 / std::sqrt(static_cast<double>(running_var[j]) + s.epsilon));
    EXPECT_EQ(to_host(saved_mean), running_mean);
    EXPECT_TRUE(all_close(to_host(saved_inv_std), inv_std, 1e-6, 1e-6, "saved_inv_std"));
    EXPECT_EQ(to_host(dgamma), std::vector<float>(k, 0.0f));
    EXPECT_EQ(to_host(dbeta), std::vector<float>(k, 0.0f));
    if (stem) {
      EXPECT_EQ(to_host(dweight), std::vector<float>(9 * k, 0.0f));
      EXPECT_EQ(to_host(dbias), std::vector<float>(k, 0.0f));
    }
  }
}

// The bfloat16 tail too: inference forward writes the running statistics as the saved ones, the
// backward zero gradients (dbias included).
void expect_empty_bf16_batch_writes_its_outputs(Backend& backend) {
  const int64_t k = 3;
  const Shape c{k}, z_shape{0, k, 6, 6}, pooled = pool_geometry(z_shape).output();
  StemOperands o = stem_operands({1, 1, 6, 6}, k, backend.device());  // per-channel operands
  Bf16Tensor z(z_shape, backend.device()), y(pooled, backend.device()),
      dy(pooled, backend.device()), dz(z_shape, backend.device());
  const std::vector<float> sevens(k, 7.0f);
  const auto filled = [&] { return Tensor::from_host(c, sevens.data(), backend.device()); };
  Tensor saved_mean = filled(), saved_inv_std = filled(), dbias = filled(), dgamma = filled(),
         dbeta = filled();
  const BlockTailSettings s = settings_for({z_shape, 0.0f, 0, /*training=*/false});
  backend.block_tail_forward_bf16(z.view(), o.bias, o.gamma, o.beta, o.running_mean,
                                  o.running_var, s, y.view(), saved_mean, saved_inv_std);
  backend.block_tail_backward_bf16(z.view(), o.bias, dy.view(), o.gamma, o.beta, saved_mean,
                                   saved_inv_std, s, dz.view(), dbias, dgamma, dbeta);
  backend.synchronize();
  EXPECT_EQ(to_host(saved_mean), to_host(o.running_mean));
  for (const Tensor* t : {&dbias, &dgamma, &dbeta})
    EXPECT_EQ(to_host(*t), std::vector<float>(k, 0.0f));
}

// The unfused batch-norm ops on an empty batch: inference writes nothing (and does not fail),
// the backward zero gradients (dx_sums included). On CUDA both built a cuDNN descriptor with
// N = 0, which cuDNN refuses.
void expect_empty_batchnorm_writes_its_outputs(Backend& backend) {
  const int64_t k = 3;
  const Shape c{k}, x_shape{0, k, 6, 6};
  StemOperands o = stem_operands({1, 1, 6, 6}, k, backend.device());  // per-channel operands
  Tensor x = backend.empty(x_shape), y = backend.empty(x_shape), dy = backend.empty(x_shape),
         dx = backend.empty(x_shape);
  const std::vector<float> sevens(k, 7.0f);
  const auto filled = [&] { return Tensor::from_host(c, sevens.data(), backend.device()); };
  backend.batchnorm_forward_inference(x, o.gamma, o.beta, o.running_mean, o.running_var, 1e-3, y);
  Tensor dgamma = filled(), dbeta = filled(), dx_sums = filled();
  backend.batchnorm_backward(x, dy, o.gamma, o.running_mean, o.running_var, 1e-3, dx, dgamma,
                             dbeta, /*relu_gate=*/true, 0.0f, dx_sums);
  backend.synchronize();
  for (const Tensor* t : {&dgamma, &dbeta, &dx_sums})
    EXPECT_EQ(to_host(*t), std::vector<float>(k, 0.0f));
}

// Each backend through the three checks above: the unfused batch-norm, the fused tails and
// stem, the bfloat16 tail.
void expect_every_empty_batch_writes_its_outputs(Backend& backend) {
  {
    SCOPED_TRACE("batch-norm");
    expect_empty_batchnorm_writes_its_outputs(backend);
  }
  {
    SCOPED_TRACE("fused tail and stem");
    expect_empty_batch_writes_its_outputs(backend);
  }
  SCOPED_TRACE("bfloat16 tail");
  expect_empty_bf16_batch_writes_its_outputs(backend);
}

TEST(EmptyBatch, EveryOpWritesItsPerChannelOutputs) {
  auto cpu = make_cpu_backend(1);
  expect_every_empty_batch_writes_its_outputs(*cpu);
}

TEST(EmptyBatchCuda, EveryOpWritesItsPerChannelOutputs) {
  PNEUMO_REQUIRE_CUDA();
  auto cuda = make_cuda_backend(BackendOptions{});
  expect_every_empty_batch_writes_its_outputs(*cuda);
}

// ---- The tail in bfloat16, channels-last (block_tail_forward_bf16 / block_tail_backward_bf16) ----
// Its contract is the float32 tail on a = relu(z + bias) with the mask at z's channels-last
// storage index, and the conversions at the edges. The reference builds exactly that from the
// float32 CPU tail: a and the dropped values d = a m on the host (dropout_multiplier at each
// element's channels-last index), the tail run on d without dropout (so its mask is the host's),
// and the backward's result times m: the tail's gradient is relu_backward(a, dd m), and on d
// without dropout it gives relu_backward(d, dd), equal to dd where a > 0 and the element was
// kept (d > 0 there too), so times m it is the same float product.

// z in quarters over [-1.5, 2) (ties in windows, exact in bfloat16), bias per channel in
// quarters too, so that a = relu(z + bias) ties where z does; dy rounded to bfloat16.
struct Bf16TailInputs {
  std::vector<float> z, bias, dy;  // NCHW
};
Bf16TailInputs bf16_tail_inputs(const TailCase& c) {
  Bf16TailInputs in;
  in.z = testing::random_values(c.shape.numel(), 13, -1.5f, 2.0f);
  for (float& v : in.z) v = std::round(v * 4.0f) / 4.0f;
  in.bias = testing::random_values(c.shape.c(), 14, -0.5f, 0.5f);
  for (float& v : in.bias) v = std::round(v * 4.0f) / 4.0f;
  in.dy = testing::random_values(pool_geometry(c.shape).output().numel(), 15);
  for (float& v : in.dy) v = round_to_bf16(v);
  return in;
}

struct Bf16TailResult {
  TailResult tail;            // y and da (here dz) decoded to NCHW floats
  std::vector<float> dbias;
};

Bf16TailResult run_bf16_tail(Backend& backend, const TailCase& c) {
  const Bf16TailInputs in = bf16_tail_inputs(c);
  TailOperands o = operands(c, backend.device());
  const BlockTailSettings s = settings_for(c);
  const Shape channels{c.shape.c()}, pooled = pool_geometry(c.shape).output();
  const Device device = backend.device();
  Bf16Tensor z(c.shape, in.z, device), dy(pooled, in.dy, device);
  Bf16Tensor y(pooled, device), dz(c.shape, device);
  Tensor bias = Tensor::from_host(channels, in.bias.data(), device);
  Tensor saved_mean = backend.empty(channels), saved_inv_std = backend.empty(channels);
  Tensor dbias = backend.empty(channels), dgamma = backend.empty(channels),
         dbeta = backend.empty(channels);
  backend.block_tail_forward_bf16(z.view(), bias, o.gamma, o.beta, o.running_mean, o.running_var,
                                  s, y.view(), saved_mean, saved_inv_std);
  backend.block_tail_backward_bf16(z.view(), bias, dy.view(), o.gamma, o.beta, saved_mean,
                                   saved_inv_std, s, dz.view(), dbias, dgamma, dbeta);
  backend.synchronize();
  return {{y.host_nchw(), to_host(saved_mean), to_host(saved_inv_std), to_host(o.running_mean),
           to_host(o.running_var), dz.host_nchw(), to_host(dgamma), to_host(dbeta)},
          to_host(dbias)};
}

// The contract's composition on the CPU (see above), rounded where the op rounds.
Bf16TailResult bf16_tail_reference(const TailCase& c) {
  const Bf16TailInputs in = bf16_tail_inputs(c);
  auto cpu = make_cpu_backend(1);
  TailOperands o = operands(c, Device::Cpu);
  BlockTailSettings s = settings_for(c);
  const ChannelLayout l = channel_layout(c.shape);
  const Shape channels{c.shape.c()}, pooled = pool_geometry(c.shape).output();
  std::vector<float> a(in.z.size()), m(in.z.size(), 1.0f), d(in.z.size());
  for (int64_t n = 0; n < l.batch; ++n)
    for (int64_t k = 0; k < l.channels; ++k)
      for (int64_t p = 0; p < l.pixels; ++p) {
        const auto i = static_cast<size_t>((n * l.channels + k) * l.pixels + p);
        const auto storage = static_cast<uint32_t>((n * l.pixels + p) * l.channels + k);
        a[i] = std::max(in.z[i] + in.bias[static_cast<size_t>(k)], 0.0f);
        if (c.training && c.rate > 0.0f) m[i] = dropout_multiplier(s.dropout_key, storage, c.rate);
        d[i] = c.training && c.rate > 0.0f ? a[i] * m[i] : a[i];
      }
  s.dropout_rate = 0.0f;  // the mask is in d
  Tensor dt = Tensor::from_host(c.shape, d.data(), Device::Cpu);
  Tensor dyt = Tensor::from_host(pooled, in.dy.data(), Device::Cpu);
  Tensor y(pooled, Device::Cpu), saved_mean(channels, Device::Cpu),
      saved_inv_std(channels, Device::Cpu), g(c.shape, Device::Cpu), dgamma(channels, Device::Cpu),
      dbeta(channels, Device::Cpu);
  cpu->block_tail_forward(dt, o.gamma, o.beta, o.running_mean, o.running_var, s, y, saved_mean,
                          saved_inv_std);
  cpu->block_tail_backward(dt, dyt, o.gamma, o.beta, saved_mean, saved_inv_std, s, g, dgamma,
                           dbeta);
  Bf16TailResult r{{to_host(y), to_host(saved_mean), to_host(saved_inv_std),
                    to_host(o.running_mean), to_host(o.running_var), to_host(g), to_host(dgamma),
                    to_host(dbeta)},
                   std::vector<float>(static_cast<size_t>(l.channels), 0.0f)};
  std::vector<double> bias_sums(static_cast<size_t>(l.channels), 0.0);
  for (size_t i = 0; i < r.tail.da.size(); ++i) {
    const float da = c.training && c.rate > 0.0f ? r.tail.da[i] * m[i] : r.tail.da[i];
    bias_sums[static_cast<size_t>((static_cast<int64_t>(i) / l.pixels) % l.channels)] += da;
    r.tail.da[i] = round_to_bf16(da);
  }
  for (float& v : r.tail.y) v = round_to_bf16(v);
  for (size_t k = 0; k < bias_sums.size(); ++k) r.dbias[k] = static_cast<float>(bias_sums[k]);
  return r;
}

const TailCase kBf16Cases[] = {
    {{3, 40, 6, 6}, 0.2f, 0, true},   // more channels than a tile of 32, dropout
    {{2, 3, 5, 7}, 0.0f, 0, true},    // odd sizes: padding windows
    {{2, 5, 7, 5}, 0.1f, 12, true},   // dropout from a shard's offset, odd sizes
    {{3, 4, 6, 5}, 0.2f, 0, false},   // inference: running statistics, no dropout
};

// The CPU op is the composition exactly: the same floats in the same order, so equal, except
// dbias, which the op sums in batch-norm's order and the reference in memory order.
TEST(BlockTailBf16, CpuIsTheFloatTailOnTheDecodedInput) {
  auto cpu = make_cpu_backend(2);
  for (const TailCase& c : kBf16Cases) {
    SCOPED_TRACE(c.shape.str() + " rate " + std::to_string(c.rate));
    const Bf16TailResult got = run_bf16_tail(*cpu, c), want = bf16_tail_reference(c);
    expect_same(got.tail, want.tail, 0.0, 0.0);
    EXPECT_TRUE(all_close(got.dbias, want.dbias, 1e-6, 1e-6, "dbias"));
  }
}

// The comparison above can fail: the reference with the float32 tail's mask (its NCHW index)
// instead of the channels-last one differs from the op wherever dropout runs.
TEST(BlockTailBf16, TheMaskIndexIsTheChannelsLastOne) {
  auto cpu = make_cpu_backend(1);
  const TailCase c = kBf16Cases[0];
  const Bf16TailResult got = run_bf16_tail(*cpu, c);
  // The float32 tail on a = relu(z + bias) with its own (NCHW-indexed) dropout.
  const Bf16TailInputs in = bf16_tail_inputs(c);
  const ChannelLayout l = channel_layout(c.shape);
  std::vector<float> a(in.z.size());
  for (size_t i = 0; i < a.size(); ++i)
    a[i] = std::max(in.z[i] + in.bias[(static_cast<int64_t>(i) / l.pixels) % l.channels], 0.0f);
  TailOperands o = operands(c, Device::Cpu);
  Tensor at = Tensor::from_host(c.shape, a.data(), Device::Cpu);
  Tensor y(pool_geometry(c.shape).output(), Device::Cpu), mean(Shape{c.shape.c()}, Device::Cpu),
      inv_std(Shape{c.shape.c()}, Device::Cpu);
  cpu->block_tail_forward(at, o.gamma, o.beta, o.running_mean, o.running_var, settings_for(c), y,
                          mean, inv_std);
  EXPECT_FALSE(all_close(got.tail.saved_mean, to_host(mean), 1e-6, 1e-6, "saved_mean"));
}

// CUDA against the CPU twin: statistics summed in another order, so y and dz may differ by a
// bfloat16 step (2^-8 relative) where the float32 values straddle a rounding boundary.
TEST(BlockTailBf16Cuda, MatchesTheCpuTwin) {
  PNEUMO_REQUIRE_CUDA();
  auto cpu = make_cpu_backend(2);
  auto cuda = make_cuda_backend(BackendOptions{});
  const auto expect_close = [](const Bf16TailResult& got, const Bf16TailResult& want,
                               bool large) {
    TailResult g = got.tail;
    EXPECT_TRUE(all_close(g.y, want.tail.y, 1e-4, 1.0 / 128, "y"));
    EXPECT_TRUE(all_close(g.da, want.tail.da, 1e-4, 1.0 / 128, "dz"));
    g.y = want.tail.y;  // compared above, at a bfloat16 step
    g.da = want.tail.da;
    expect_same(g, want.tail, 1e-5, 1e-4, large);
    EXPECT_TRUE(sums_close(got.dbias, want.dbias, 1e-4, "dbias"));
  };
  for (const TailCase& c : kBf16Cases) {
    SCOPED_TRACE(c.shape.str() + " rate " + std::to_string(c.rate));
    expect_close(run_bf16_tail(*cuda, c), run_bf16_tail(*cpu, c), false);
  }
  const TailCase big{{8, 64, 75, 75}, 0.1f, 0, true};  // block 2's tail at 150 px, batch 8
  const Bf16TailResult want = run_bf16_tail(*cpu, big);
  expect_close(run_bf16_tail(*cuda, big), want, true);
  // Its sums in chunks of 3 + 3 + 2 images; and batches of 3 + 3 + 1 and 3 + 2, small.
  auto chunked = chunked_cuda_backend();
  SCOPED_TRACE("chunks of 3 images");
  expect_close(run_bf16_tail(*chunked, big), want, true);
  for (const TailCase& c : {TailCase{{7, 40, 6, 5}, 0.2f, 0, true}, TailCase{{5, 16, 7, 6}, 0.0f, 0, true}})
    expect_close(run_bf16_tail(*chunked, c), run_bf16_tail(*cpu, c), false);
}

// ---- The model's bfloat16 stretch (ModelConfig::bf16_activations) -----------------------------

ModelConfig stretch_config(bool bf16_activations, std::vector<float> rates) {
  ModelConfig config;
  config.input_size = 24;
  config.conv_dropout = std::move(rates);
  config.fused_block_tails = true;
  config.bf16_activations = bf16_activations;
  return config;
}

// On a --precision bf16 backend without dropout, the stretch is the float32 tails' arithmetic
// forward (each tail's output rounded where the next convolution rounds it, block 5's where fc1
// does): logits and running statistics equal. Backward it rounds the head's gradient of block 5's
// output to bfloat16, which the float32 tail read unrounded: gradients within that rounding.
TEST(BlockTailBf16, ModelStretchIsTheFloatTailsUpToTheHeadsGradientRounding) {
  auto cpu = make_cpu_backend(2, /*bf16=*/true);
  const std::vector<float> none{0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  const ModelStep tails = model_step(*cpu, stretch_config(false, none));
  const ModelStep stretch = model_step(*cpu, stretch_config(true, none));
  ASSERT_EQ(stretch.infos.size(), tails.infos.size());
  for (size_t i = 0; i < tails.infos.size(); ++i) {
    EXPECT_EQ(stretch.infos[i].name, tails.infos[i].name);
    EXPECT_EQ(stretch.infos[i].offset, tails.infos[i].offset);
  }
  EXPECT_EQ(stretch.logits, tails.logits);
  EXPECT_EQ(stretch.buffers, tails.buffers);
  EXPECT_EQ(stretch.inference_logits, tails.inference_logits);
  // Seen on the dev VM: relative L2 0.0013 (conv5.bias) growing to 0.008 (bn1.bias) as the
  // rounding's effect passes through each block's batch-norm (fc1 and fc2 equal).
  expect_gradients_close(stretch, tails, 2e-2);
}

TEST(BlockTailBf16, ModelStretchNeedsFusedTails) {
  auto cpu = make_cpu_backend(1, /*bf16=*/true);
  ModelConfig config = stretch_config(true, {0.0f, 0.1f, 0.0f, 0.2f, 0.2f});
  config.fused_block_tails = false;
  EXPECT_THROW(Model(*cpu, config, 2), Error);
}

// CUDA against the CPU twin, a step with dropout: the same masks (channels-last indices on
// both), statistics and convolutions summed in other orders.
TEST(BlockTailBf16Cuda, ModelStretchMatchesTheCpu) {
  PNEUMO_REQUIRE_CUDA();
  auto cpu = make_cpu_backend(2, /*bf16=*/true);
  BackendOptions options;
  options.bf16 = true;
  auto cuda = make_cuda_backend(options);
  const ModelConfig config = stretch_config(true, {0.1f, 0.1f, 0.0f, 0.2f, 0.2f});
  const ModelStep want = model_step(*cpu, config), got = model_step(*cuda, config);
  EXPECT_TRUE(all_close(got.logits, want.logits, 1e-2, 1e-2, "training logits"));
  // The running statistics as their move in the step (0.01 of the batch statistic minus the
  // old value): their values, 0.99 old value, would hide a batch variance off by a factor of 2.
  ASSERT_EQ(got.initial_buffers, want.initial_buffers);
  const std::vector<float> got_move = testing::moved(got.buffers, got.initial_buffers);
  const std::vector<float> want_move = testing::moved(want.buffers, want.initial_buffers);
  // 1e-4 of a move is 1e-2 of a batch statistic: the bf16 convolutions' outputs, rounded where
  // their sums in another order straddle a step, move the statistics by less; a wrong variance
  // (a factor of 2, a biased one at these sizes' counts) by more.
  EXPECT_TRUE(all_close(got_move, want_move, 1e-4, 1e-2, "running statistics' move"));
  EXPECT_TRUE(all_close(got.inference_logits, want.inference_logits, 1e-2, 1e-2,
                        "inference logits"));
  expect_gradients_close(got, want, 3e-2);
}

}  // namespace
}  // namespace pneumo
