// The hand-written 3x3 convolution kernels (kernels/conv_direct.cu) against the CPU backend.
// Without a GPU: the kernels' own phase functions (conv_direct_tiles.hpp) run on the CPU over the
// launchers' grids, block by block, with shared memory poisoned with NaN before each stage (a read
// of an unstaged slot shows up) and guard zones around the output (a stray write shows up). With a
// GPU: the real launchers on every layer shape of the model at batch 2, and on awkward shapes.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "conv_direct_tiles.hpp"
#include "pneumo/backend.hpp"
#include "pneumo/error.hpp"
#include "kernels.hpp"
#include "test_util.hpp"

namespace pneumo {
namespace {

using kernels::conv3x3::ConvArgs;
namespace single = kernels::conv3x3::single_channel;
namespace tiled = kernels::conv3x3::tiled;
using testing::all_close;
using testing::random_values;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

struct ConvCase {
  int n, c, h, w, k;
  bool relu;
  std::string str() const {
    std::ostringstream out;
    out << "x (" << n << ", " << c << ", " << h << ", " << w << ") -> " << k
        << (relu ? " relu" : "");
    return out.str();
  }
  Shape x() const { return {n, c, h, w}; }
  Shape weight() const { return {k, c, 3, 3}; }
  Shape y() const { return {n, k, h, w}; }
};

// The model's layers (docs/recipe.md) at batch n.
std::vector<ConvCase> model_layers(int n) {
  return {{n, 1, 150, 150, 32, true},
          {n, 32, 75, 75, 64, true},
          {n, 64, 38, 38, 64, true},
          {n, 64, 19, 19, 128, true},
          {n, 128, 10, 10, 256, true}};
}

struct ConvData {
  std::vector<float> x, weight, bias;
};
ConvData random_inputs(const ConvCase& cc, uint32_t seed) {
  const float scale = 1.0f / std::sqrt(9.0f * static_cast<float>(cc.c));
  return {random_values(cc.x().numel(), seed, -1.0f, 1.0f),
          random_values(cc.weight().numel(), seed + 1, -scale, scale),
          random_values(cc.k, seed + 2, -0.1f, 0.1f)};
}

std::vector<float> cpu_reference(const ConvCase& cc, const ConvData& d) {
  auto cpu = make_cpu_backend(2);
  Tensor y(cc.y(), Device::Cpu);
  cpu->conv2d_forward({d.x.data(), cc.x(), Device::Cpu}, {d.weight.data(), cc.weight(), Device::Cpu},
                      {d.bias.data(), {cc.k}, Device::Cpu}, y, cc.relu);
  return testing::to_host(y);
}

// all_close with atol = rtol * max|expected|, as the backend parity tests judge convolutions.
::testing::AssertionResult close_to(const std::vector<float>& actual,
                                    const std::vector<float>& expected, double rtol,
                                    const std::string& what) {
  double scale = 0.0;
  for (float e : expected) scale = std::max(scale, static_cast<double>(std::fabs(e)));
  return all_close(actual, expected, rtol * std::max(scale, 1e-20), rtol, what);
}

// Output with guard zones: `guard` floats of a sentinel on both sides of the NaN-filled body.
// 4096 floats (more than a row of any shape here) keep the body 16-byte aligned.
struct GuardedOutput {
  static constexpr int64_t kGuard = 4096;
  static constexpr float kSentinel = 12345.0f;
  std::vector<float> storage;
  int64_t count;
  explicit GuardedOutput(int64_t n) : storage(static_cast<size_t>(n + 2 * kGuard), kSentinel), count(n) {
    std::fill(body(), body() + n, kNaN);
  }
  float* body() { return storage.data() + kGuard; }
  std::vector<float> values() const {
    return {storage.begin() + kGuard, storage.begin() + kGuard + count};
  }
  bool guards_intact() const {
    for (int64_t i = 0; i < kGuard; ++i)
      if (storage[static_cast<size_t>(i)] != kSentinel ||
          storage[static_cast<size_t>(kGuard + count + i)] != kSentinel)
        return false;
    return true;
  }
};

ConvArgs args_for(const ConvCase& cc, const ConvData& d, float* y) {
  return {d.x.data(), d.weight.data(), d.bias.data(), y, cc.n, cc.c, cc.k, cc.h, cc.w, cc.relu,
          false};
}

// ---- CPU emulation of the kernels ---------------------------------------------------------------

// The single-channel kernel over its launch grid: x = pixel-group blocks, y = image.
template <int K>
void emulate_single_channel(ConvArgs a) {
  a.vector_stores = kernels::conv3x3::vector_stores_possible(
      a.y, static_cast<int64_t>(a.height) * a.width);
  std::vector<float> s_weight(K * 9), s_bias(K);
  for (int image = 0; image < a.batch; ++image)
    for (int64_t block = 0; block < single::blocks_per_plane(a.height, a.width); ++block) {
      std::fill(s_weight.begin(), s_weight.end(), kNaN);
      std::fill(s_bias.begin(), s_bias.end(), kNaN);
      for (int t = 0; t < single::kThreads; ++t)
        single::stage_weights<K>(a, t, s_weight.data(), s_bias.data());
      for (int t = 0; t < single::kThreads; ++t)
        single::compute_pixels<K>(a, s_weight.data(), s_bias.data(), static_cast<int>(block),
                                  image, t);
    }
}

void emulate_single_channel_any(const ConvArgs& a) {
  switch (a.out_channels) {
    case 16: return emulate_single_channel<16>(a);
    case 32: return emulate_single_channel<32>(a);
    case 64: return emulate_single_channel<64>(a);
    default: FAIL() << "no single-channel kernel for K=" << a.out_channels;
  }
}

// The tiled kernel over its grid (tile, k tile, image); each __syncthreads() is a phase boundary.
void emulate_tiled(const ConvArgs& a) {
  const tiled::TileGrid g = tiled::tile_grid(a);
  std::vector<float> s_input(tiled::kSharedInput), s_weight(tiled::kSharedWeight);
  std::vector<tiled::Accumulators> acc(tiled::kThreads);
  for (int image = 0; image < a.batch; ++image)
    for (int k_tile = 0; k_tile < g.k_tiles; ++k_tile)
      for (int tile = 0; tile < g.tiles(); ++tile) {
        const tiled::BlockIndex b{tile, k_tile, image};
        for (auto& each : acc) tiled::clear(each);
        for (int c0 = 0; c0 < a.in_channels; c0 += tiled::kChunkC) {
          std::fill(s_input.begin(), s_input.end(), kNaN);
          std::fill(s_weight.begin(), s_weight.end(), kNaN);
          for (int t = 0; t < tiled::kThreads; ++t)
            tiled::stage_chunk(a, b, c0, t, s_input.data(), s_weight.data());
          for (int t = 0; t < tiled::kThreads; ++t)
            tiled::accumulate_chunk(s_input.data(), s_weight.data(), t, acc[static_cast<size_t>(t)]);
        }
        for (int t = 0; t < tiled::kThreads; ++t)
          tiled::store_tile(a, b, t, acc[static_cast<size_t>(t)]);
      }
}

// Runs an emulation into a guarded output and checks it against the CPU backend.
template <class Emulate>
void expect_emulation_matches(const ConvCase& cc, Emulate emulate, int64_t misalign = 0) {
  SCOPED_TRACE(cc.str());
  const ConvData d = random_inputs(cc, 17);
  const std::vector<float> expected = cpu_reference(cc, d);
  GuardedOutput out(cc.y().numel() + misalign);
  ASSERT_NO_THROW(emulate(args_for(cc, d, out.body() + misalign)));
  EXPECT_TRUE(out.guards_intact()) << "a write landed outside y";
  std::vector<float> values = out.values();
  values.erase(values.begin(), values.begin() + misalign);
  EXPECT_TRUE(close_to(values, expected, 1e-4, "emulated y vs CPU backend"));
}

TEST(ConvDirectEmulation, SingleChannelModelLayer) {
  expect_emulation_matches({2, 1, 150, 150, 32, true}, emulate_single_channel_any);
}

TEST(ConvDirectEmulation, SingleChannelAwkwardShapes) {
  for (const ConvCase& cc : std::vector<ConvCase>{{1, 1, 5, 7, 16, false},  // H*W % 4 != 0
                                                  {3, 1, 6, 6, 64, true},   // float4 path
                                                  {1, 1, 1, 1, 32, true},
                                                  {2, 1, 2, 3, 32, false},
                                                  {1, 1, 33, 40, 32, true}})  // > 1 block per plane
    expect_emulation_matches(cc, emulate_single_channel_any);
}

TEST(ConvDirectEmulation, SingleChannelMisalignedOutputFallsBackToScalarStores) {
  // H*W % 4 == 0 but y is 4 bytes past a 16-byte boundary: float4 stores must not be used
  // (store4's host path throws if they were).
  expect_emulation_matches({2, 1, 8, 8, 32, true}, emulate_single_channel_any, 1);
}

TEST(ConvDirectEmulation, TiledEveryModelLayer) {
  for (const ConvCase& cc : model_layers(1)) expect_emulation_matches(cc, emulate_tiled);
}

TEST(ConvDirectEmulation, TiledAwkwardShapes) {
  for (const ConvCase& cc : std::vector<ConvCase>{
           {2, 5, 9, 17, 70, true},    // partial channel chunk, two k tiles, edge tiles
           {1, 9, 1, 1, 3, false},     // 1x1 image: only the centre tap is inside
           {1, 16, 8, 16, 64, false},  // exactly one tile
           {3, 8, 24, 33, 65, true}})  // several tiles, one channel past a k tile
    expect_emulation_matches(cc, emulate_tiled);
}

// ---- Launcher argument checks (refused before any launch, so these run without a GPU) ----------

// `call` throws pneumo::Error for the reason `why`, not from a launch (without a GPU, or with a
// grid past the device's limits, the launch check throws pneumo::Error too: the type alone would
// pass with the argument checks gone).
::testing::AssertionResult refused_because(const std::function<void()>& call,
                                           const std::string& why) {
  try {
    call();
  } catch (const Error& e) {
    const std::string text = e.what();
    if (text.find(why) != std::string::npos) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "refused for another reason: " << text;
  }
  return ::testing::AssertionFailure() << "accepted";
}

TEST(ConvDirectLaunchers, RefuseShapesTheyDoNotCover) {
  float dummy = 0.0f;
  EXPECT_FALSE(kernels::conv3x3_single_channel_supported(2, 32));
  EXPECT_FALSE(kernels::conv3x3_single_channel_supported(1, 48));
  EXPECT_TRUE(kernels::conv3x3_single_channel_supported(1, 32));
  EXPECT_TRUE(refused_because(
      [&] {
        kernels::conv3x3_forward_single_channel(&dummy, &dummy, &dummy, &dummy, 1, 4, 4, 48, true,
                                                nullptr);
      },
      "takes 16, 32 or 64 output channels, got 48"));
  EXPECT_TRUE(refused_because(
      [&] {
        kernels::conv3x3_forward_tiled(&dummy, &dummy, &dummy, &dummy, 70000, 4, 4, 4, 8, true,
                                       nullptr);
      },
      "exceeds what the launch geometry covers"));
  EXPECT_TRUE(refused_because(
      [&] {
        kernels::conv3x3_forward_tiled(nullptr, &dummy, &dummy, &dummy, 1, 4, 4, 4, 8, true,
                                       nullptr);
      },
      ": null pointer"));
}

// ---- The real kernels on a GPU ------------------------------------------------------------------

enum class Kernel { SingleChannel, Tiled };

// Runs a launcher on the device (output pre-filled with NaN) and returns y on the host.
std::vector<float> run_on_device(Kernel kernel, const ConvCase& cc, const ConvData& d) {
  Tensor x = Tensor::from_host(cc.x(), d.x.data(), Device::Cuda);
  Tensor w = Tensor::from_host(cc.weight(), d.weight.data(), Device::Cuda);
  Tensor b = Tensor::from_host({cc.k}, d.bias.data(), Device::Cuda);
  Tensor y(cc.y(), Device::Cuda);
  EXPECT_EQ(cudaMemset(y.data(), 0xFF, static_cast<size_t>(y.numel()) * sizeof(float)),
            cudaSuccess);  // all-ones bytes: NaN
  if (kernel == Kernel::SingleChannel)
    kernels::conv3x3_forward_single_channel(x.data(), w.data(), b.data(), y.data(), cc.n, cc.h,
                                            cc.w, cc.k, cc.relu, nullptr);
  else
    kernels::conv3x3_forward_tiled(x.data(), w.data(), b.data(), y.data(), cc.n, cc.c, cc.h, cc.w,
                                   cc.k, cc.relu, nullptr);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return testing::to_host(y);
}

void expect_device_matches(Kernel kernel, const ConvCase& cc) {
  SCOPED_TRACE(cc.str() + (kernel == Kernel::SingleChannel ? " single-channel" : " tiled"));
  const ConvData d = random_inputs(cc, 29);
  const std::vector<float> expected = cpu_reference(cc, d);
  const std::vector<float> actual = run_on_device(kernel, cc, d);
  EXPECT_TRUE(close_to(actual, expected, 1e-4, "device y vs CPU backend"));
}

TEST(ConvDirectCuda, SingleChannelKernelMatchesCpuOnTheFirstLayer) {
  PNEUMO_REQUIRE_CUDA();
  expect_device_matches(Kernel::SingleChannel, model_layers(2)[0]);
  // The device runs the same arithmetic as the emulation, in the same order.
  const ConvCase cc = model_layers(2)[0];
  const ConvData d = random_inputs(cc, 29);
  GuardedOutput emulated(cc.y().numel());
  emulate_single_channel_any(args_for(cc, d, emulated.body()));
  EXPECT_TRUE(close_to(run_on_device(Kernel::SingleChannel, cc, d), emulated.values(), 1e-6,
                       "device y vs CPU emulation"));
}

TEST(ConvDirectCuda, SingleChannelKernelAwkwardShapes) {
  PNEUMO_REQUIRE_CUDA();
  for (const ConvCase& cc : std::vector<ConvCase>{
           {1, 1, 5, 7, 16, false}, {3, 1, 6, 6, 64, true}, {1, 1, 1, 1, 32, true},
           {2, 1, 2, 3, 32, false}, {1, 1, 33, 40, 32, true}})
    expect_device_matches(Kernel::SingleChannel, cc);
}

TEST(ConvDirectCuda, TiledKernelMatchesCpuOnEveryModelLayer) {
  PNEUMO_REQUIRE_CUDA();
  for (const ConvCase& cc : model_layers(2)) expect_device_matches(Kernel::Tiled, cc);
}

TEST(ConvDirectCuda, TiledKernelAwkwardShapes) {
  PNEUMO_REQUIRE_CUDA();
  for (const ConvCase& cc : std::vector<ConvCase>{{2, 5, 9, 17, 70, true},
                                                  {1, 9, 1, 1, 3, false},
                                                  {1, 16, 8, 16, 64, false},
                                                  {3, 8, 24, 33, 65, true}})
    expect_device_matches(Kernel::Tiled, cc);
}

}  // namespace
}  // namespace pneumo
