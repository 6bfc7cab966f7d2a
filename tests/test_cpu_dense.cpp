// The CPU dense layer (PyTorch layout, y = x W^T + b): forward against a naive product, and
// finite-difference checks of dx, dweight and dbias, including the skipped-dx form; under
// --precision bf16, the three products against sums in double of the bfloat16-rounded operands.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "bf16.hpp"
#include "gradient_check.hpp"
#include "pneumo/backend.hpp"
#include "test_util.hpp"

namespace pneumo {
namespace {

using testing::all_close;
using testing::check_gradient;
using testing::largest_difference;
using testing::nan_tensor;
using testing::random_tensor;
using testing::random_values;
using testing::to_host;
using testing::weighted_sum;

struct DenseProblem {
  // x: (batch, inputs), weight: (outputs, inputs), bias: (outputs) -> y: (batch, outputs)
  DenseProblem(Backend& backend, int64_t batch, int64_t inputs, int64_t outputs, uint32_t seed)
      : backend(backend),
        x(random_tensor({batch, inputs}, Device::Cpu, seed)),
        weight(random_tensor({outputs, inputs}, Device::Cpu, seed + 1)),
        bias(random_tensor({outputs}, Device::Cpu, seed + 2)),
        y(nan_tensor({batch, outputs})),
        loss_weights(random_values(batch * outputs, seed + 3)),
        dy(Tensor::from_host({batch, outputs}, loss_weights.data(), Device::Cpu)) {}

  double loss() {
    backend.dense_forward(x, weight, bias, y);
    return weighted_sum(y, loss_weights);
  }

  Backend& backend;
  Tensor x, weight, bias, y;
  std::vector<float> loss_weights;
  Tensor dy;
};

TEST(CpuDense, ForwardMatchesNaiveProduct) {
  auto backend = make_cpu_backend(2);
  DenseProblem p(*backend, 3, 7, 5, 101);
  backend->dense_forward(p.x, p.weight, p.bias, p.y);
  std::vector<float> xs = to_host(p.x), ws = to_host(p.weight), bs = to_host(p.bias), expected;
  for (size_t n = 0; n < 3; ++n)
    for (size_t o = 0; o < 5; ++o) {
      double sum = bs[o];
      for (size_t i = 0; i < 7; ++i) sum += static_cast<double>(xs[n * 7 + i]) * ws[o * 7 + i];
      expected.push_back(static_cast<float>(sum));
    }
  EXPECT_TRUE(all_close(to_host(p.y), expected, 1e-6, 1e-6, "dense forward"));
}

TEST(CpuDense, Gradients) {
  auto backend = make_cpu_backend(2);
  DenseProblem p(*backend, 3, 5, 4, 111);
  Tensor dx = nan_tensor(p.x.shape()), dweight = nan_tensor(p.weight.shape());
  Tensor dbias = nan_tensor(p.bias.shape());
  backend->dense_backward(p.x, p.weight, p.dy, dx, dweight, dbias);
  auto loss = [&] { return p.loss(); };
  EXPECT_TRUE(check_gradient("dense dx", p.x, dx, loss));
  EXPECT_TRUE(check_gradient("dense dweight", p.weight, dweight, loss));
  EXPECT_TRUE(check_gradient("dense dbias", p.bias, dbias, loss));

  // Batch 1, and dx skipped (null data): the parameter gradients are unchanged by the skip.
  DenseProblem single(*backend, 1, 6, 3, 121);
  Tensor with_dx = nan_tensor(single.x.shape()), dweight_1 = nan_tensor(single.weight.shape());
  Tensor dweight_2 = nan_tensor(single.weight.shape()), dbias_1 = nan_tensor(single.bias.shape());
  Tensor dbias_2 = nan_tensor(single.bias.shape());
  backend->dense_backward(single.x, single.weight, single.dy, with_dx, dweight_1, dbias_1);
  backend->dense_backward(single.x, single.weight, single.dy, TensorView{}, dweight_2, dbias_2);
  EXPECT_TRUE(check_gradient("batch-1 dense dweight", single.weight, dweight_2,
                             [&] { return single.loss(); }));
  EXPECT_EQ(to_host(dweight_1), to_host(dweight_2));
  EXPECT_EQ(to_host(dbias_1), to_host(dbias_2));
}

// ---- --precision bf16 (ops/dense.hpp's precision rule) ----------------------------------------

struct DenseSums {  // y = x W^T (no bias), dx = dy W, dW = dy^T x, each in double, as float
  std::vector<float> y, dx, dw;
};

DenseSums dense_sums(const std::vector<float>& x, const std::vector<float>& w,
                     const std::vector<float>& dy, size_t batch, size_t in, size_t out) {
  std::vector<double> y(batch * out, 0.0), dx(batch * in, 0.0), dw(out * in, 0.0);
  for (size_t n = 0; n < batch; ++n)
    for (size_t o = 0; o < out; ++o)
      for (size_t i = 0; i < in; ++i) {
        y[n * out + o] += static_cast<double>(x[n * in + i]) * w[o * in + i];
        dx[n * in + i] += static_cast<double>(dy[n * out + o]) * w[o * in + i];
        dw[o * in + i] += static_cast<double>(dy[n * out + o]) * x[n * in + i];
      }
  const auto as_float = [](const std::vector<double>& v) {
    return std::vector<float>(v.begin(), v.end());
  };
  return {as_float(y), as_float(dx), as_float(dw)};
}

std::vector<float> rounded(std::vector<float> values) {
  for (float& v : values) v = round_to_bf16(v);
  return values;
}

// The backend's products, float32 sums of bfloat16 operands, sit within float32 summation error
// of the exact sums of the rounded operands, and thousands of times further from the exact sums
// of the unrounded ones (which a backend ignoring the option would land on); the results are
// not rounded to bfloat16 themselves, and dbias is the float32 backend's.
TEST(CpuBf16Dense, EveryProductRoundsItsOperandsAndKeepsFloat32Results) {
  const size_t batch = 6, in = 300, out = 5;
  auto bf16 = make_cpu_backend(2, /*bf16=*/true), fp32 = make_cpu_backend(2);
  for (Backend* backend : {bf16.get(), fp32.get()}) {
    DenseProblem p(*backend, batch, in, out, 131);
    Tensor zero = Tensor::zeros({static_cast<int64_t>(out)}, Device::Cpu);
    Tensor dx = nan_tensor(p.x.shape()), dw = nan_tensor(p.weight.shape());
    Tensor dbias = nan_tensor(p.bias.shape());
    backend->dense_forward(p.x, p.weight, zero, p.y);
    backend->dense_backward(p.x, p.weight, p.dy, dx, dw, dbias);
    const std::vector<float> x = to_host(p.x), w = to_host(p.weight), dy = to_host(p.dy);
    const DenseSums exact = dense_sums(x, w, dy, batch, in, out);
    const DenseSums of_rounded = dense_sums(rounded(x), rounded(w), rounded(dy), batch, in, out);
    const DenseSums& want = backend == bf16.get() ? of_rounded : exact;
    const DenseSums& other = backend == bf16.get() ? exact : of_rounded;
    const std::pair<std::vector<float>, const char*> results[] = {
        {to_host(p.y), "y"}, {to_host(dx), "dx"}, {to_host(dw), "dweight"}};
    const std::vector<float>* wanted[] = {&want.y, &want.dx, &want.dw};
    const std::vector<float>* others[] = {&other.y, &other.dx, &other.dw};
    for (int r = 0; r < 3; ++r) {
      const auto& [got, what] = results[r];
      const double error = largest_difference(got, *wanted[r]);
      EXPECT_LE(error, 2e-5) << backend->name() << " " << what;
      EXPECT_GT(largest_difference(got, *others[r]), 1000 * std::max(error, 1e-7))
          << backend->name() << " " << what << ": the rounding should show";
      if (backend == bf16.get()) {
        int64_t off_grid = 0;
        for (float v : got) off_grid += round_to_bf16(v) != v;
        EXPECT_GT(off_grid, static_cast<int64_t>(got.size()) / 2) << what << " stays float32";
      }
    }
    std::vector<float> sums(out);
    for (size_t o = 0; o < out; ++o) {
      double sum = 0.0;
      for (size_t n = 0; n < batch; ++n) sum += dy[n * out + o];
      sums[o] = static_cast<float>(sum);
    }
    EXPECT_LE(largest_difference(to_host(dbias), sums), 1e-6)
        << backend->name() << " dbias sums the float32 dy";
  }
}

}  // namespace
}  // namespace pneumo
