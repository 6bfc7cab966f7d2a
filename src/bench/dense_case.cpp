// The dense layers for both suites of `pneumo bench kernels` (dense_case.hpp).
#include "bench/dense_case.hpp"

#include <cmath>

#include "bench/reference.hpp"
#include "bench/suite_common.hpp"
#include "bf16.hpp"
#include "pneumo/model.hpp"
#include "pneumo/op_geometry.hpp"

namespace pneumo::bench {

const char* const kDenseReference =
    "sums in double of the operands as the precision reads them (bfloat16-rounded for bf16)";

namespace {

std::vector<float> rounded(std::vector<float> values) {
  round_all_to_bf16(values.data(), static_cast<int64_t>(values.size()));
  return values;
}

std::vector<float> download(const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  t.copy_to_host(out.data());
  return out;
}

Comparison compare(const Tensor& actual, const std::vector<double>& expected) {
  const std::vector<float> e(expected.begin(), expected.end());
  return compare_outputs(download(actual).data(), e.data(), actual.shape(), kDenseRtol);
}

}  // namespace

DenseCase::DenseCase(int layer, int64_t batch, Device device)
    : layer_(layer), batch_(batch) {
  // fc1 reads the last block's pooled output, flattened (256 x 5 x 5 at 150 px).
  const LayerShape& last = model_layers().back();
  const int64_t flattened =
      pool_geometry(Shape{1, last.out_channels, last.size, last.size}).output().numel();
  const int64_t hidden = ModelConfig{}.hidden;
  in_ = layer == 0 ? flattened : hidden;
  out_ = layer == 0 ? hidden : 1;
  // Activations in [-1, 1), weights at PyTorch's initial scale 1/sqrt(in).
  const float bound = 1.0f / std::sqrt(static_cast<float>(in_));
  const std::vector<float> x = uniform_values(batch * in_, kSeed + 21, -1.0f, 1.0f);
  const std::vector<float> w = uniform_values(out_ * in_, kSeed + 22, -bound, bound);
  const std::vector<float> b = uniform_values(out_, kSeed + 23, -bound, bound);
  const std::vector<float> dy = uniform_values(batch * out_, kSeed + 24, -1.0f, 1.0f);
  x_ = Tensor::from_host({batch, in_}, x.data(), device);
  weight_ = Tensor::from_host({out_, in_}, w.data(), device);
  bias_ = Tensor::from_host({out_}, b.data(), device);
  dy_ = Tensor::from_host({batch, out_}, dy.data(), device);
  y_ = Tensor({batch, out_}, device);
  dx_ = Tensor({batch, in_}, device);
  dweight_ = Tensor({out_, in_}, device);
  dbias_ = Tensor({out_}, device);
  fp32_ = sums(x, w, b, dy, batch, in_, out_);
  bf16_ = sums(rounded(x), rounded(w), b, rounded(dy), batch, in_, out_);
  bf16_.dbias = fp32_.dbias;  // the bias gradient sums the float32 dy
}

DenseCase::Expected DenseCase::sums(const std::vector<float>& x, const std::vector<float>& w,
                                    const std::vector<float>& b, const std::vector<float>& dy,
                                    int64_t batch, int64_t in, int64_t out) {
  Expected e;
  e.y.assign(static_cast<size_t>(batch * out), 0.0);
  e.dx.assign(static_cast<size_t>(batch * in), 0.0);
  e.dweight.assign(static_cast<size_t>(out * in), 0.0);
  e.dbias.assign(static_cast<size_t>(out), 0.0);
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t o = 0; o < out; ++o) {
      const auto no = static_cast<size_t>(n * out + o);
      const double g = dy[no];
      double sum = b[static_cast<size_t>(o)];
      for (int64_t i = 0; i < in; ++i) {
        const auto ni = static_cast<size_t>(n * in + i), oi = static_cast<size_t>(o * in + i);
        sum += static_cast<double>(x[ni]) * w[oi];
        e.dx[ni] += g * w[oi];
        e.dweight[oi] += g * x[ni];
      }
      e.y[no] = sum;
      e.dbias[static_cast<size_t>(o)] += g;
    }
  return e;
}

void DenseCase::forward(Backend& backend) { backend.dense_forward(x_, weight_, bias_, y_); }

void DenseCase::backward(Backend& backend) {
  backend.dense_backward(x_, weight_, dy_, dx_, dweight_, dbias_);
}

void DenseCase::poison_outputs() {
  for (Tensor* t : {&y_, &dx_, &dweight_, &dbias_}) {
    const std::vector<float> poison(static_cast<size_t>(t->numel()), kPoison);
    t->copy_from(ConstTensorView(poison.data(), t->shape(), Device::Cpu));
  }
}

Comparison DenseCase::check_forward(bool bf16) const {
  return compare(y_, bf16 ? bf16_.y : fp32_.y);
}

Comparison DenseCase::check_backward(bool bf16) const {
  const Expected& e = bf16 ? bf16_ : fp32_;
  const Comparison dx = compare(dx_, e.dx);
  if (!dx.passed()) return dx;
  const Comparison db = compare(dbias_, e.dbias);
  if (!db.passed()) return db;
  return compare(dweight_, e.dweight);
}

BenchRow DenseCase::row(const char* platform, bool backward, int64_t batch,
                        const std::string& variant, bool baseline) const {
  BenchRow r = make_row(platform, backward ? "dense_backward" : "dense_forward", layer(),
                        shape_label(), batch, variant, baseline);
  r.reference = kDenseReference;
  r.flops = backward ? backward_flops() : forward_flops();
  r.bytes = backward ? backward_bytes() : forward_bytes();
  return r;
}

std::string DenseCase::layer() const { return layer_ == 0 ? "fc1" : "fc2"; }

std::string DenseCase::shape_label() const {
  return std::to_string(in_) + " -> " + std::to_string(out_);
}

double DenseCase::forward_flops() const { return 2.0 * batch_ * in_ * out_; }
double DenseCase::backward_flops() const { return 4.0 * batch_ * in_ * out_; }

double DenseCase::forward_bytes() const {
  return sizeof(float) * static_cast<double>(batch_ * in_ + out_ * in_ + out_ + batch_ * out_);
}
double DenseCase::backward_bytes() const {
  return sizeof(float) *
         static_cast<double>(2 * (batch_ * in_ + out_ * in_) + batch_ * out_ + out_);
}

}  // namespace pneumo::bench
