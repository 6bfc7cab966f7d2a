// The CPU backend's emulation of --precision bf16 (pneumo/ops/conv2d.hpp's precision rule)
// against direct convolutions in double: operands rounded to bfloat16, sums in double, results
// rounded once. The CPU sums in float32, so a result may land one bfloat16 step away where the
// exact sum sits next to a rounding boundary; nearly all must match exactly. Each test also shows
// that it would see the option ignored: without the operands' rounding, far fewer results match.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "bf16.hpp"
#include "pneumo/backend.hpp"
#include "bf16_agreement.hpp"
#include "channels_last.hpp"
#include "test_util.hpp"
#include <gtest/gtest-spi.h>

namespace pneumo {
namespace {

using testing::bf16_agreement;
using testing::Bf16Agreement;
using testing::random_values;

struct Dims {
  int64_t n, c, h, w, k;
  Shape x() const { return {n, c, h, w}; }
  Shape y() const { return {n, k, h, w}; }
  Shape weight() const { return {k, c, 3, 3}; }
};

struct Operands {  // x (N, C, H, W), w (K, C, 3, 3), dy (N, K, H, W)
  std::vector<float> x, w, dy;
};

Operands random_operands(const Dims& d, uint32_t seed) {
  return {random_values(d.x().numel(), seed), random_values(d.weight().numel(), seed + 1),
          random_values(d.y().numel(), seed + 2)};
}

Operands rounded(Operands o) {
  for (auto* values : {&o.x, &o.w, &o.dy})
    for (float& v : *values) v = round_to_bf16(v);
  return o;
}

// The three sums of a 3x3 'same' convolution, in double, each result rounded to float and then
// to bfloat16: y = conv(x, w) (no bias), dx = conv^T(dy, w), dw = sum over the batch of dy * x.
struct Sums {
  std::vector<float> y, dx, dw;
};

Sums direct_sums(const Dims& d, const Operands& o) {
  std::vector<double> y(d.y().numel(), 0.0), dx(d.x().numel(), 0.0), dw(d.weight().numel(), 0.0);
  for (int64_t n = 0; n < d.n; ++n)
    for (int64_t k = 0; k < d.k; ++k)
      for (int64_t c = 0; c < d.c; ++c)
        for (int64_t oy = 0; oy < d.h; ++oy)
          for (int64_t ox = 0; ox < d.w; ++ox)
            for (int64_t ky = 0; ky < 3; ++ky)
              for (int64_t kx = 0; kx < 3; ++kx) {
                const int64_t iy = oy + ky - 1, ix = ox + kx - 1;
                if (iy < 0 || iy >= d.h || ix < 0 || ix >= d.w) continue;
                const auto xi = static_cast<size_t>(((n * d.c + c) * d.h + iy) * d.w + ix);
                const auto yi = static_cast<size_t>(((n * d.k + k) * d.h + oy) * d.w + ox);
                const auto wi = static_cast<size_t>(((k * d.c + c) * 3 + ky) * 3 + kx);
                y[yi] += static_cast<double>(o.w[wi]) * o.x[xi];
                dx[xi] += static_cast<double>(o.w[wi]) * o.dy[yi];
                dw[wi] += static_cast<double>(o.dy[yi]) * o.x[xi];
              }
  const auto finish = [](const std::vector<double>& sums) {
    std::vector<float> out(sums.size());
    for (size_t i = 0; i < sums.size(); ++i) out[i] = round_to_bf16(static_cast<float>(sums[i]));
    return out;
  };
  return {finish(y), finish(dx), finish(dw)};
}

// The backend's three results for the operands (bias 0, no ReLU: y is the rounded sum itself).
Sums backend_sums(Backend& backend, const Dims& d, const Operands& o) {
  Tensor x = Tensor::from_host(d.x(), o.x.data(), Device::Cpu);
  Tensor w = Tensor::from_host(d.weight(), o.w.data(), Device::Cpu);
  Tensor dy = Tensor::from_host(d.y(), o.dy.data(), Device::Cpu);
  Tensor bias = Tensor::zeros({d.k}, Device::Cpu), dbias = Tensor::zeros({d.k}, Device::Cpu);
  Tensor y = Tensor::zeros(d.y(), Device::Cpu), dx = Tensor::zeros(d.x(), Device::Cpu);
  Tensor dw = Tensor::zeros(d.weight(), Device::Cpu);
  backend.conv2d_forward(x, w, bias, y, /*fuse_relu=*/false);
  backend.conv2d_backward_data(dy, w, dx);
  backend.conv2d_backward_filter(x, dy, dw, dbias);
  return {testing::to_host(y), testing::to_host(dx), testing::to_host(dw)};
}

void expect_emulates(const std::vector<float>& got, const std::vector<float>& want,
                     const std::vector<float>& unrounded_operands, const char* what) {
  const Bf16Agreement a = bf16_agreement(got, want);
  EXPECT_GE(a.exact, 0.97) << what << ": share equal to the rounded-operand reference";
  EXPECT_LE(a.worst_steps, 1.0) << what << ": no result more than one bfloat16 step away";
  for (float v : got) ASSERT_EQ(round_to_bf16(v), v) << what << ": every result is a bfloat16 value";
  // The test can fail: the same sums of the unrounded operands match far less often.
  EXPECT_LT(bf16_agreement(unrounded_operands, want).exact, 0.9)
      << what << ": the operands' rounding should change many results";
}

TEST(CpuBf16Conv, EveryDirectionRoundsOperandsAndResults) {
  const Dims d{2, 8, 6, 7, 4};
  const Operands o = random_operands(d, 11);
  const Sums want = direct_sums(d, rounded(o));
  const Sums unrounded = direct_sums(d, o);
  for (int threads : {1, 2}) {
    auto backend = make_cpu_backend(threads, /*bf16=*/true);
    const Sums got = backend_sums(*backend, d, o);
    expect_emulates(got.y, want.y, unrounded.y, "forward");
    expect_emulates(got.dx, want.dx, unrounded.dx, "backward data");
    expect_emulates(got.dw, want.dw, unrounded.dw, "backward filter");
  }
}

TEST(CpuBf16Conv, Float32BackendDoesNotRound) {
  const Dims d{2, 8, 6, 7, 4};
  const Operands o = random_operands(d, 11);
  const Sums want = direct_sums(d, rounded(o));
  auto backend = make_cpu_backend(1);
  const Sums got = backend_sums(*backend, d, o);
  EXPECT_LT(bf16_agreement(got.y, want.y).exact, 0.5);
  int64_t off_grid = 0;
  for (float v : got.y) off_grid += round_to_bf16(v) != v;
  EXPECT_GT(off_grid, static_cast<int64_t>(got.y.size() / 2));
}

TEST(CpuBf16Conv, BiasAndReluComeAfterTheRounding) {
  const Dims d{1, 3, 4, 5, 2};
  Operands o = random_operands(d, 5);
  const Sums want = direct_sums(d, rounded(o));
  const std::vector<float> bias_values{0.3f, -0.2f};
  Tensor x = Tensor::from_host(d.x(), o.x.data(), Device::Cpu);
  Tensor w = Tensor::from_host(d.weight(), o.w.data(), Device::Cpu);
  Tensor bias = Tensor::from_host({d.k}, bias_values.data(), Device::Cpu);
  Tensor y = Tensor::zeros(d.y(), Device::Cpu);
  auto backend = make_cpu_backend(1, true);
  backend->conv2d_forward(x, w, bias, y, /*fuse_relu=*/true);
  const std::vector<float> got = testing::to_host(y);
  const int64_t plane = d.h * d.w;
  int64_t exact = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const float expected = std::max(want.y[i] + bias_values[i / static_cast<size_t>(plane) % 2], 0.0f);
    exact += got[i] == expected;
    ASSERT_NEAR(got[i], expected, std::ldexp(std::fabs(want.y[i]), -7) + 1e-7) << i;
  }
  EXPECT_GE(exact, static_cast<int64_t>(got.size()) * 9 / 10);
}

TEST(CpuBf16Conv, OneChannelConvolutionStaysFloat32) {
  const Dims d{2, 1, 5, 6, 3};
  const Operands o = random_operands(d, 3);
  auto fp32 = make_cpu_backend(1), bf16 = make_cpu_backend(1, true);
  const Sums a = backend_sums(*fp32, d, o), b = backend_sums(*bf16, d, o);
  EXPECT_EQ(a.y, b.y);
  EXPECT_EQ(a.dx, b.dx);
  EXPECT_EQ(a.dw, b.dw);
  EXPECT_NE(bf16->name().find("bf16"), std::string::npos) << bf16->name();
}

// The channels-last convolutions (pneumo/ops/conv2d.hpp) are the bf16 rule's float32 ops on the
// decoded tensors, bit for bit, and follow that rule on a float32 backend too.
TEST(CpuBf16Conv, ChannelsLastOpsAreTheFloatOpsOnDecodedTensors) {
  auto bf16 = make_cpu_backend(2, /*bf16=*/true);
  auto fp32 = make_cpu_backend(2);
  testing::expect_channels_last_conv_is_the_float_ops(*bf16, *fp32, {2, 12, 9, 7}, 16, 61);
  testing::expect_channels_last_conv_is_the_float_ops(*bf16, *bf16, {3, 3, 5, 6}, 4, 71);
}

// The comparison above can fail: the float32 backend's own ops do not round.
TEST(CpuBf16Conv, TheChannelsLastCheckSeesFloat32Ops) {
  auto fp32 = make_cpu_backend(2);
  ::testing::TestPartResultArray failures;
  {
    ::testing::ScopedFakeTestPartResultReporter reporter(
        ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &failures);
    testing::expect_channels_last_conv_is_the_float_ops(*fp32, *fp32, {2, 12, 9, 7}, 16, 61);
  }
  EXPECT_EQ(failures.size(), 3) << "z, dx and dweight should each differ";
}

TEST(CpuBf16Conv, ChannelsLastConversionsRoundAndComeBackExactly) {
  auto cpu = make_cpu_backend(1);
  const Shape shape{2, 3, 4, 5};
  const std::vector<float> values = random_values(shape.numel(), 81);
  const Tensor x = Tensor::from_host(shape, values.data(), Device::Cpu);
  testing::Bf16Tensor bits(shape, Device::Cpu);
  Tensor back(shape, Device::Cpu);
  cpu->to_bf16_channels_last(x, bits.view());
  cpu->from_bf16_channels_last(bits.view(), back);
  std::vector<float> expected(values);
  for (float& v : expected) v = round_to_bf16(v);
  EXPECT_EQ(bits.host_nchw(), expected);
  EXPECT_EQ(testing::to_host(back), expected);
}

}  // namespace
}  // namespace pneumo
