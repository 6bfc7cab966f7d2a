// The CPU 2x2 stride-2 'same' max pooling: hand examples of the top/left padding on odd sizes
// (padding never wins, even over negative values), ties going to the first element in row-major
// window order, a brute-force comparison and a finite-difference check of the backward.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "gradient_check.hpp"
#include "pneumo/backend.hpp"
#include "pneumo/error.hpp"
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

Tensor host_tensor(Shape shape, std::vector<float> values) {
  return Tensor::from_host(shape, values.data(), Device::Cpu);
}

TEST(CpuMaxPool, OddSizesPadTopAndLeft) {
  auto backend = make_cpu_backend(2);
  // 3x3 -> 2x2: output (0,0) sees only x(0,0); (0,1) sees row 0, cols 1-2; (1,0) rows 1-2, col 0.
  // All values negative, so a padding zero would win anywhere it took part.
  Tensor x = host_tensor({1, 1, 3, 3}, {-1, -2, -3,  //
                                        -4, -5, -6,  //
                                        -7, -8, -9});
  Tensor y = nan_tensor({1, 1, 2, 2});
  backend->maxpool2d_forward(x, y);
  EXPECT_EQ(to_host(y), (std::vector<float>{-1, -2, -4, -5}));

  // 2x3 -> 1x2: even height (no padding rows), odd width (padding column on the left).
  Tensor x2 = host_tensor({1, 1, 2, 3}, {1, 5, 2,  //
                                         3, 0, 4});
  Tensor y2 = nan_tensor({1, 1, 1, 2});
  backend->maxpool2d_forward(x2, y2);
  EXPECT_EQ(to_host(y2), (std::vector<float>{3, 5}));
}

TEST(CpuMaxPool, TiesGoToFirstElementInRowMajorOrder) {
  auto backend = make_cpu_backend(1);
  // 3x3 with top/left padding; window (1,1) covers x(1..2, 1..2), where three elements tie.
  Tensor x = host_tensor({1, 1, 3, 3}, {2, 2, 2,  //
                                        2, 7, 7,  //
                                        2, 7, 1});
  Tensor y = nan_tensor({1, 1, 2, 2});
  backend->maxpool2d_forward(x, y);
  Tensor dy = host_tensor({1, 1, 2, 2}, {10, 20, 30, 40});
  Tensor dx = nan_tensor(x.shape());
  backend->maxpool2d_backward(x, y, dy, dx);
  // Window (0,1) = x(0,1..2): tie, first wins. Window (1,0) = x(1..2,0): tie, first wins.
  EXPECT_EQ(to_host(dx), (std::vector<float>{10, 20, 0,  //
                                             30, 40, 0,  //
                                             0, 0, 0}));
  // An even window of four equal values.
  Tensor flat = host_tensor({1, 1, 2, 2}, {3, 3, 3, 3});
  Tensor flat_y = nan_tensor({1, 1, 1, 1}), flat_dy = host_tensor({1, 1, 1, 1}, {5});
  Tensor flat_dx = nan_tensor(flat.shape());
  backend->maxpool2d_forward(flat, flat_y);
  backend->maxpool2d_backward(flat, flat_y, flat_dy, flat_dx);
  EXPECT_EQ(to_host(flat_dx), (std::vector<float>{5, 0, 0, 0}));
}

// A NaN is its window's max wherever it stands (the first one, when there are two), and the
// window's gradient goes to it; before 2026-12-07 only a NaN in the window's first place won,
// and a later one was dropped. Windows: a NaN first, second, last, two NaNs, none.
TEST(CpuMaxPool, ANanWinsItsWindowWhereverItStands) {
  auto backend = make_cpu_backend(1);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor x = host_tensor({1, 1, 2, 10}, {nan, 1, 4, nan, 7, 8, 1, nan, 1, 2,  //
                                         5, 2, 3, 6, 9, nan, nan, 3, 3, 4});
  Tensor y = nan_tensor({1, 1, 1, 5});
  backend->maxpool2d_forward(x, y);
  const std::vector<float> ys = to_host(y);
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(std::isnan(ys[i])) << "window " << i;
  EXPECT_EQ(ys[4], 4.0f);
  Tensor dy = host_tensor({1, 1, 1, 5}, {10, 20, 30, 40, 50}), dx = nan_tensor(x.shape());
  backend->maxpool2d_backward(x, y, dy, dx);
  EXPECT_EQ(to_host(dx), (std::vector<float>{10, 0, 0, 20, 0, 0, 0, 40, 0, 0,  //
                                             0, 0, 0, 0, 0, 30, 0, 0, 0, 50}));
}

// Brute force: output (oy, ox) is the max over input rows 2*oy - H%2 + {0,1} and columns
// 2*ox - W%2 + {0,1} that exist.
std::vector<float> brute_force_maxpool(ConstTensorView x) {
  const Shape& s = x.shape;
  const int64_t out_h = (s.h() + 1) / 2, out_w = (s.w() + 1) / 2;
  std::vector<float> xs = to_host(x), y;
  for (int64_t plane = 0; plane < s.n() * s.c(); ++plane)
    for (int64_t oy = 0; oy < out_h; ++oy)
      for (int64_t ox = 0; ox < out_w; ++ox) {
        float best = -INFINITY;
        for (int64_t iy = 2 * oy - s.h() % 2; iy < 2 * oy - s.h() % 2 + 2; ++iy)
          for (int64_t ix = 2 * ox - s.w() % 2; ix < 2 * ox - s.w() % 2 + 2; ++ix)
            if (iy >= 0 && iy < s.h() && ix >= 0 && ix < s.w())
              best = std::max(best, xs[static_cast<size_t>((plane * s.h() + iy) * s.w() + ix)]);
        y.push_back(best);
      }
  return y;
}

TEST(CpuMaxPool, ForwardMatchesBruteForce) {
  auto backend = make_cpu_backend(3);
  const int64_t shapes[][4] = {{2, 3, 5, 7}, {1, 1, 1, 1}, {3, 2, 4, 6}, {1, 2, 6, 1}};
  for (const auto& s : shapes) {
    Tensor x = random_tensor({s[0], s[1], s[2], s[3]}, Device::Cpu, 3);
    Tensor y = nan_tensor({s[0], s[1], (s[2] + 1) / 2, (s[3] + 1) / 2});
    backend->maxpool2d_forward(x, y);
    EXPECT_TRUE(all_close(to_host(y), brute_force_maxpool(x), 0.0, 0.0, "maxpool forward"))
        << "x " << x.shape().str();
  }
}

// x: (2, 2, 5, 7) -> y: (2, 2, 3, 4). Inputs whose window has its top two values within two
// steps of each other are skipped: there the max can change hands within a step.
TEST(CpuMaxPool, BackwardGradient) {
  auto backend = make_cpu_backend(2);
  const int64_t height = 5, width = 7;
  Tensor x = random_tensor({2, 2, height, width}, Device::Cpu, 61);
  Tensor y = nan_tensor({2, 2, 3, 4});
  std::vector<float> loss_weights = random_values(y.numel(), 62);
  Tensor dy = host_tensor(y.shape(), loss_weights);
  backend->maxpool2d_forward(x, y);
  Tensor dx = nan_tensor(x.shape());
  backend->maxpool2d_backward(x, y, dy, dx);

  FiniteDifference options;
  const std::vector<float> xs = to_host(x);
  auto near_tie = [&](int64_t i) {
    const int64_t plane = i / (height * width), iy = i / width % height, ix = i % width;
    // The window holding (iy, ix), with the top/left padding of odd sizes.
    const int64_t y0 = (iy + height % 2) / 2 * 2 - height % 2;
    const int64_t x0 = (ix + width % 2) / 2 * 2 - width % 2;
    std::vector<float> window;
    for (int64_t wy = std::max<int64_t>(y0, 0); wy < std::min(y0 + 2, height); ++wy)
      for (int64_t wx = std::max<int64_t>(x0, 0); wx < std::min(x0 + 2, width); ++wx)
        window.push_back(xs[static_cast<size_t>((plane * height + wy) * width + wx)]);
    if (window.size() < 2) return false;
    std::sort(window.rbegin(), window.rend());
    return window[0] - window[1] < 2 * options.step;
  };
  EXPECT_TRUE(check_gradient(
      "maxpool dx", x, dx,
      [&] {
        backend->maxpool2d_forward(x, y);
        return weighted_sum(y, loss_weights);
      },
      options, near_tie));
}

// ---- Global average pooling (the GAP head) ----------------------------------------------------

TEST(CpuGlobalAvgPool, MeansOfEachPlaneAndTheirGradient) {
  auto backend = make_cpu_backend(1);
  // Two images, three channels, odd 3x5 planes.
  Tensor x = random_tensor({2, 3, 3, 5}, Device::Cpu, 71);
  Tensor y = nan_tensor({2, 3});
  backend->global_avgpool_forward(x, y);
  const std::vector<float> xs = to_host(x), ys = to_host(y);
  for (int p = 0; p < 6; ++p) {
    double mean = 0.0;
    for (int i = 0; i < 15; ++i) mean += xs[static_cast<size_t>(p * 15 + i)];
    EXPECT_NEAR(ys[static_cast<size_t>(p)], mean / 15.0, 1e-6) << "plane " << p;
  }
  const std::vector<float> loss_weights = random_values(6, 72);
  Tensor dy = host_tensor({2, 3}, loss_weights);
  Tensor dx = nan_tensor(x.shape());
  backend->global_avgpool_backward(dy, dx);
  EXPECT_TRUE(check_gradient(
      "global average pool dx", x, dx,
      [&] {
        backend->global_avgpool_forward(x, y);
        return weighted_sum(y, loss_weights);
      }));
  EXPECT_THROW(backend->global_avgpool_forward(x, nan_tensor({2, 4})), Error);
  EXPECT_THROW(backend->global_avgpool_backward(nan_tensor({3, 3}), dx), Error);
}

}  // namespace
}  // namespace pneumo
