// The CPU dense layer (PyTorch layout, y = x W^T + b): forward against a naive product, and
// finite-difference checks of dx, dweight and dbias, including the skipped-dx form.
#include <gtest/gtest.h>

#include <vector>

#include "gradient_check.hpp"
#include "pneumo/backend.hpp"
#include "test_util.hpp"

namespace pneumo {
namespace {

using testing::all_close;
using testing::check_gradient;
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

}  // namespace
}  // namespace pneumo
