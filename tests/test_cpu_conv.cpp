// The CPU 3x3 'same' convolution: forward against a direct 7-loop convolution in double (batch 1,
// odd sizes, several thread counts), finite-difference checks of the data, filter and bias
// gradients with and without the fused ReLU, and determinism of the filter gradient.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "gradient_check.hpp"
#include "pneumo/backend.hpp"
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

// y[n, k, y, x] = bias[k] + sum over c, ky, kx of w[k, c, ky, kx] x[n, c, y + ky - 1, x + kx - 1].
std::vector<float> direct_convolution(ConstTensorView x, ConstTensorView weight,
                                      ConstTensorView bias, bool fuse_relu) {
  const Shape& s = x.shape;
  const int64_t channels_out = weight.shape[0];
  std::vector<float> xs = to_host(x), ws = to_host(weight), bs = to_host(bias);
  std::vector<float> y(static_cast<size_t>(s.n() * channels_out * s.h() * s.w()));
  for (int64_t n = 0; n < s.n(); ++n)
    for (int64_t k = 0; k < channels_out; ++k)
      for (int64_t oy = 0; oy < s.h(); ++oy)
        for (int64_t ox = 0; ox < s.w(); ++ox) {
          double sum = bs[static_cast<size_t>(k)];
          for (int64_t c = 0; c < s.c(); ++c)
            for (int64_t ky = 0; ky < 3; ++ky)
              for (int64_t kx = 0; kx < 3; ++kx) {
                int64_t iy = oy + ky - 1, ix = ox + kx - 1;
                if (iy < 0 || iy >= s.h() || ix < 0 || ix >= s.w()) continue;
                sum += static_cast<double>(ws[static_cast<size_t>(((k * s.c() + c) * 3 + ky) * 3 + kx)]) *
                       xs[static_cast<size_t>(((n * s.c() + c) * s.h() + iy) * s.w() + ix)];
              }
          if (fuse_relu) sum = std::max(sum, 0.0);
          y[static_cast<size_t>(((n * channels_out + k) * s.h() + oy) * s.w() + ox)] =
              static_cast<float>(sum);
        }
  return y;
}

// One convolution with its inputs and the loss weights L = sum loss_weights * y.
struct ConvProblem {
  ConvProblem(Backend& backend, int64_t n, int64_t c, int64_t h, int64_t w, int64_t k,
              uint32_t seed)
      : backend(backend),
        x(random_tensor({n, c, h, w}, Device::Cpu, seed)),
        weight(random_tensor({k, c, 3, 3}, Device::Cpu, seed + 1, -0.5f, 0.5f)),
        bias(random_tensor({k}, Device::Cpu, seed + 2, -0.5f, 0.5f)),
        y(nan_tensor({n, k, h, w})),
        loss_weights(random_values(n * k * h * w, seed + 3)),
        dy(Tensor::from_host({n, k, h, w}, loss_weights.data(), Device::Cpu)) {}

  double loss(bool fuse_relu) {
    backend.conv2d_forward(x, weight, bias, y, fuse_relu);
    return weighted_sum(y, loss_weights);
  }

  Backend& backend;
  Tensor x, weight, bias, y;
  std::vector<float> loss_weights;
  Tensor dy;  // dL/dy = loss_weights
};

TEST(CpuConv, ForwardMatchesDirectConvolution) {
  // (N, C, H, W, K): batch 1 with odd sizes, a one-pixel-wide image, a single pixel.
  const int64_t shapes[][5] = {{1, 3, 7, 5, 4}, {3, 2, 6, 1, 5}, {2, 1, 1, 1, 2}, {4, 3, 5, 6, 3}};
  for (int threads : {1, 2, 3}) {
    auto backend = make_cpu_backend(threads);
    for (const auto& s : shapes)
      for (bool fuse_relu : {false, true}) {
        ConvProblem p(*backend, s[0], s[1], s[2], s[3], s[4], 7);
        backend->conv2d_forward(p.x, p.weight, p.bias, p.y, fuse_relu);
        EXPECT_TRUE(all_close(to_host(p.y), direct_convolution(p.x, p.weight, p.bias, fuse_relu),
                              1e-5, 1e-5, "conv forward"))
            << backend->name() << ", x " << p.x.shape().str() << ", fuse_relu " << fuse_relu;
      }
  }
}

TEST(CpuConv, DataGradient) {
  auto backend = make_cpu_backend(2);
  ConvProblem p(*backend, 2, 3, 7, 5, 4, 21);
  Tensor dx = nan_tensor(p.x.shape());
  backend->conv2d_backward_data(p.dy, p.weight, dx);
  EXPECT_TRUE(check_gradient("conv dx", p.x, dx, [&] { return p.loss(false); }));
}

TEST(CpuConv, FilterAndBiasGradients) {
  auto backend = make_cpu_backend(2);
  ConvProblem p(*backend, 3, 3, 7, 5, 4, 31);
  Tensor dweight = nan_tensor(p.weight.shape()), dbias = nan_tensor(p.bias.shape());
  backend->conv2d_backward_filter(p.x, p.dy, dweight, dbias);
  EXPECT_TRUE(check_gradient("conv dweight", p.weight, dweight, [&] { return p.loss(false); }));
  EXPECT_TRUE(check_gradient("conv dbias", p.bias, dbias, [&] { return p.loss(false); }));
}

// With the fused ReLU, an output whose pre-activation z lies within a step's effect of 0 makes
// the loss kinked there. Perturbing an input by h moves each z it feeds by at most h * (largest
// coefficient); such inputs are skipped. A small step keeps the skips rare.
TEST(CpuConv, FusedReluGradients) {
  auto backend = make_cpu_backend(2);
  ConvProblem p(*backend, 2, 3, 5, 4, 4, 41);
  const Shape xs = p.x.shape();
  const int64_t channels_out = p.weight.shape()[0];
  FiniteDifference options;
  options.step = 1e-3;
  options.atol = 2e-3;

  // Pre-activations, and the gradient through the ReLU: dz = relu_backward(y, dL/dy).
  Tensor z({xs.n(), channels_out, xs.h(), xs.w()}, Device::Cpu);
  backend->conv2d_forward(p.x, p.weight, p.bias, z, false);
  backend->conv2d_forward(p.x, p.weight, p.bias, p.y, true);
  Tensor dz = nan_tensor(z.shape());
  backend->relu_backward(p.y, p.dy, dz);
  const std::vector<float> zs = to_host(z);
  auto max_abs = [](const std::vector<float>& v) {
    float m = 0.0f;
    for (float e : v) m = std::max(m, std::fabs(e));
    return m;
  };
  // Is any z[n, k, y, x] with n, k, y, x in the given ranges within `margin` of 0?
  auto any_z_near_zero = [&](int64_t n0, int64_t n1, int64_t k0, int64_t k1, int64_t y0,
                             int64_t y1, int64_t x0, int64_t x1, double margin) {
    for (int64_t n = std::max<int64_t>(n0, 0); n < std::min(n1, xs.n()); ++n)
      for (int64_t k = k0; k < k1; ++k)
        for (int64_t y = std::max<int64_t>(y0, 0); y < std::min(y1, xs.h()); ++y)
          for (int64_t x = std::max<int64_t>(x0, 0); x < std::min(x1, xs.w()); ++x)
            if (std::fabs(zs[static_cast<size_t>(((n * channels_out + k) * xs.h() + y) * xs.w() + x)]) <
                margin)
              return true;
    return false;
  };
  const double step = options.step;
  const double data_margin = 2 * step * max_abs(to_host(p.weight));
  const double weight_margin = 2 * step * max_abs(to_host(p.x));

  Tensor dx = nan_tensor(xs);
  backend->conv2d_backward_data(dz, p.weight, dx);
  EXPECT_TRUE(check_gradient("fused-ReLU conv dx", p.x, dx, [&] { return p.loss(true); }, options,
                             [&](int64_t i) {
                               // x[n, c, y, x] feeds z[n, :, y-1..y+1, x-1..x+1].
                               int64_t x = i % xs.w(), y = i / xs.w() % xs.h();
                               int64_t n = i / (xs.w() * xs.h() * xs.c());
                               return any_z_near_zero(n, n + 1, 0, channels_out, y - 1, y + 2,
                                                      x - 1, x + 2, data_margin);
                             }));

  Tensor dweight = nan_tensor(p.weight.shape()), dbias = nan_tensor(p.bias.shape());
  backend->conv2d_backward_filter(p.x, dz, dweight, dbias);
  const int64_t taps = xs.c() * 9;
  EXPECT_TRUE(check_gradient("fused-ReLU conv dweight", p.weight, dweight,
                             [&] { return p.loss(true); }, options, [&](int64_t i) {
                               // weight[k, ...] feeds every z of output channel k.
                               int64_t k = i / taps;
                               return any_z_near_zero(0, xs.n(), k, k + 1, 0, xs.h(), 0, xs.w(),
                                                      weight_margin);
                             }));
  EXPECT_TRUE(check_gradient("fused-ReLU conv dbias", p.bias, dbias, [&] { return p.loss(true); },
                             options, [&](int64_t k) {
                               return any_z_near_zero(0, xs.n(), k, k + 1, 0, xs.h(), 0, xs.w(),
                                                      2 * step);
                             }));
}

// conv2d_backward is conv2d_backward_filter then conv2d_backward_data (pneumo/ops/conv2d.hpp),
// bit for bit, in float32 and under the bfloat16 emulation; without dx it writes no dx.
TEST(CpuConv, BothGradientsInOneCallAreTheTwoCalls) {
  for (bool bf16 : {false, true}) {
    auto backend = make_cpu_backend(2, bf16);
    ConvProblem p(*backend, 3, 4, 6, 5, 3, 61);
    Tensor dx = nan_tensor(p.x.shape()), dweight = nan_tensor(p.weight.shape());
    Tensor dbias = nan_tensor(p.bias.shape());
    backend->conv2d_backward_filter(p.x, p.dy, dweight, dbias);
    backend->conv2d_backward_data(p.dy, p.weight, dx);
    for (bool with_dx : {true, false}) {
      Tensor dx2 = nan_tensor(p.x.shape()), dweight2 = nan_tensor(p.weight.shape());
      Tensor dbias2 = nan_tensor(p.bias.shape());
      backend->conv2d_backward(p.x, p.dy, p.weight, with_dx ? TensorView(dx2) : TensorView{},
                               dweight2, dbias2);
      EXPECT_EQ(to_host(dweight2), to_host(dweight)) << "bf16 " << bf16 << ", dx " << with_dx;
      EXPECT_EQ(to_host(dbias2), to_host(dbias)) << "bf16 " << bf16 << ", dx " << with_dx;
      const std::vector<float> got = to_host(dx2);
      if (with_dx)
        EXPECT_EQ(got, to_host(dx)) << "bf16 " << bf16;
      else
        EXPECT_TRUE(std::all_of(got.begin(), got.end(), [](float v) { return std::isnan(v); }))
            << "bf16 " << bf16 << ": dx written";
    }
    // Without dbias (summed by the layer after): the weight gradient alone, dbias not written.
    Tensor dx3 = nan_tensor(p.x.shape()), dweight3 = nan_tensor(p.weight.shape());
    backend->conv2d_backward(p.x, p.dy, p.weight, dx3, dweight3, TensorView{});
    EXPECT_EQ(to_host(dweight3), to_host(dweight)) << "bf16 " << bf16 << ", no dbias";
    EXPECT_EQ(to_host(dx3), to_host(dx)) << "bf16 " << bf16 << ", no dbias";
  }
  // One input channel needs dbias: its weight gradient's pass sums it.
  auto backend = make_cpu_backend(1);
  ConvProblem one(*backend, 2, 1, 5, 5, 3, 62);
  Tensor dweight = nan_tensor(one.weight.shape());
  EXPECT_THROW(backend->conv2d_backward(one.x, one.dy, one.weight, TensorView{}, dweight,
                                        TensorView{}),
               Error);
}

// The filter gradient sums a fixed number of image groups in group order: every thread count
// gives the same bits (--threads may differ between a run and its resume, or between ranks; by
// the worker count 139 of 270 weights' gradients moved between 1 and 2 threads), batches above
// and below the group count alike; and it matches the direct sum.
TEST(CpuConv, FilterGradientHasTheSameBitsForEveryThreadCount) {
  auto one_thread = make_cpu_backend(1);
  for (int64_t batch : {7, 37}) {
    ConvProblem p(*one_thread, batch, 4, 6, 5, 3, 51);
    Tensor serial = nan_tensor(p.weight.shape()), dbias = nan_tensor(p.bias.shape());
    one_thread->conv2d_backward_filter(p.x, p.dy, serial, dbias);
    const std::vector<float> expected = to_host(serial);
    for (int threads : {2, 3, 4, 16}) {
      auto backend = make_cpu_backend(threads);
      Tensor first = nan_tensor(p.weight.shape()), again = nan_tensor(p.weight.shape());
      backend->conv2d_backward_filter(p.x, p.dy, first, dbias);
      backend->conv2d_backward_filter(p.x, p.dy, again, dbias);
      EXPECT_EQ(to_host(first), expected) << threads << " threads, batch " << batch;
      EXPECT_EQ(to_host(again), expected) << threads << " threads, batch " << batch << ", again";
    }
  }
}

}  // namespace
}  // namespace pneumo
