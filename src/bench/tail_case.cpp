// One block's tail, fused and unfused, for both suites of `pneumo bench kernels` (tail_case.hpp).
#include "bench/tail_case.hpp"

#include <cmath>
#include <optional>
#include <random>
#include <sstream>

#include "bench/suite_common.hpp"
#include "pneumo/model.hpp"

namespace pneumo::bench {

const char* const kTailReference =
    "the unfused chain (dropout, batch-norm with its ReLU and dropout gate, max-pool) on the same "
    "device";

namespace {

// A ReLU output with exact ties (about a third zeros, the rest quarters up to 2), uniform in
// [lo, hi) otherwise: what a block's tail is given.
Tensor values(const Shape& shape, Device device, uint32_t seed, float lo, float hi, bool relu) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> host(static_cast<size_t>(shape.numel()));
  for (float& v : host) {
    v = dist(gen);
    if (relu) v = std::round(std::max(v, 0.0f) * 4.0f) / 4.0f;
  }
  return Tensor::from_host(shape, host.data(), device);
}

std::vector<float> download(const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  t.copy_to_host(out.data());
  return out;
}

void fill(Tensor& t, float value) {
  std::vector<float> host(static_cast<size_t>(t.numel()), value);
  t.copy_from(ConstTensorView(host.data(), t.shape(), Device::Cpu));
}

}  // namespace

TailCase::TailCase(size_t block, int64_t batch, Device device) : block_(block) {
  const LayerShape& l = model_layers().at(block);
  const Shape a{batch, l.out_channels, l.size, l.size}, c{l.out_channels};
  const Shape pooled = pool_geometry(a).output();
  settings_.training = true;
  settings_.dropout_rate = ModelConfig{}.conv_dropout.at(block);
  settings_.dropout_key = RngKey{kSeed, 9, 0, 1, 0};
  settings_.average_factor = 1.0 - ModelConfig{}.batchnorm_momentum;
  settings_.epsilon = ModelConfig{}.batchnorm_epsilon;
  a_ = values(a, device, kSeed + 1, -1.0f, 2.0f, true);
  gamma_ = values(c, device, kSeed + 2, 0.5f, 1.5f, false);
  beta_ = values(c, device, kSeed + 3, -0.5f, 0.5f, false);
  running_mean_ = Tensor::zeros(c, device);
  running_var_ = values(c, device, kSeed + 4, 1.0f, 1.0f + 1e-6f, false);
  saved_mean_ = Tensor(c, device);
  saved_inv_std_ = Tensor(c, device);
  y_ = Tensor(pooled, device);
  dy_ = values(pooled, device, kSeed + 5, -1.0f, 1.0f, false);
  da_ = Tensor(a, device);
  dgamma_ = Tensor(c, device);
  dbeta_ = Tensor(c, device);
  if (l.in_channels == 1) {
    const Shape w{l.out_channels, 1, 3, 3};
    x_ = values({batch, 1, l.size, l.size}, device, kSeed + 6, 0.0f, 1.0f, false);
    weight_ = values(w, device, kSeed + 7, -0.5f, 0.5f, false);
    bias_ = values(c, device, kSeed + 8, -0.1f, 0.1f, false);
    dweight_ = Tensor(w, device);
    dbias_ = Tensor(c, device);
  }
}

void TailCase::conv_forward(Backend& backend) {
  backend.conv2d_forward(x_, weight_, bias_, a_, /*fuse_relu=*/true);
}

void TailCase::conv_backward(Backend& backend) {
  backend.conv2d_backward_filter(x_, da_, dweight_, dbias_);
}

void TailCase::stem_forward(Backend& backend) {
  backend.stem_forward(x_, weight_, bias_, gamma_, beta_, running_mean_, running_var_, settings_,
                       y_, saved_mean_, saved_inv_std_);
}

void TailCase::stem_backward(Backend& backend) {
  backend.stem_backward(x_, dy_, weight_, bias_, gamma_, beta_, saved_mean_, saved_inv_std_,
                        settings_, dweight_, dbias_, dgamma_, dbeta_);
}

double TailCase::stem_forward_bytes() const {
  return static_cast<double>(x_.numel() + y_.numel()) * sizeof(float);
}

double TailCase::stem_backward_bytes() const {
  return static_cast<double>(x_.numel() + dy_.numel() + dweight_.numel() + dbias_.numel()) *
         sizeof(float);
}

void TailCase::fused_forward(Backend& backend) {
  backend.block_tail_forward(a_, gamma_, beta_, running_mean_, running_var_, settings_, y_,
                             saved_mean_, saved_inv_std_);
}

void TailCase::fused_backward(Backend& backend) {
  backend.block_tail_backward(a_, dy_, gamma_, beta_, saved_mean_, saved_inv_std_, settings_, da_,
                              dgamma_, dbeta_);
}

void TailCase::chain_forward(Backend& backend) {
  const Device device = a_.device();
  if (d_.numel() == 0) {
    d_ = Tensor(a_.shape(), device);
    z_ = Tensor(a_.shape(), device);
    dz_ = Tensor(a_.shape(), device);
  }
  ConstTensorView d = a_;
  if (settings_.dropout_rate > 0.0f) {
    backend.dropout_forward(a_, d_, settings_.dropout_rate, settings_.dropout_key);
    d = d_;
  }
  backend.batchnorm_forward_training(d, gamma_, beta_, running_mean_, running_var_,
                                     settings_.average_factor, settings_.epsilon, z_, saved_mean_,
                                     saved_inv_std_);
  backend.maxpool2d_forward(z_, y_);
}

void TailCase::chain_backward(Backend& backend) {
  PNEUMO_CHECK(d_.numel() > 0, "TailCase: chain_backward before chain_forward");
  const ConstTensorView d = settings_.dropout_rate > 0.0f ? ConstTensorView(d_) : a_;
  backend.maxpool2d_backward(z_, y_, dy_, dz_);
  // As the model's unfused blocks run it (ModelConfig::relu_gate_in_batchnorm): batch-norm's
  // backward applies the ReLU's gradient and the dropout's, so no relu_backward or
  // dropout_backward pass.
  backend.batchnorm_backward(d, dz_, gamma_, saved_mean_, saved_inv_std_, settings_.epsilon, da_,
                             dgamma_, dbeta_, /*relu_gate=*/true, settings_.dropout_rate);
}

void TailCase::poison_y() { fill(y_, kPoison); }

void TailCase::poison_gradients() {
  for (Tensor* t : {&da_, &dgamma_, &dbeta_, &dweight_, &dbias_})
    if (t->numel() > 0) fill(*t, kPoison);
}

TailCase::Gradients TailCase::gradients(bool stem) const {
  Gradients g;
  if (!stem) g.da = download(da_);
  g.dgamma = download(dgamma_);
  g.dbeta = download(dbeta_);
  if (stem) {
    PNEUMO_CHECK(has_stem(), "TailCase: only block 1 has a convolution's gradients");
    g.dweight = download(dweight_);
    g.dbias = download(dbias_);
  }
  return g;
}

Comparison TailCase::check_gradients(const Gradients& expected) const {
  const Gradients now = gradients(!expected.dweight.empty());
  struct Part {
    const std::vector<float>& actual;
    const std::vector<float>& expected;
    Shape shape;
    double rtol;
  };
  const Part parts[] = {{now.da, expected.da, a_.shape(), kTailRtol},
                        {now.dweight, expected.dweight, dweight_.shape(), kStemGradientRtol},
                        {now.dbias, expected.dbias, dbias_.shape(), kStemGradientRtol},
                        {now.dgamma, expected.dgamma, dgamma_.shape(), kTailRtol},
                        {now.dbeta, expected.dbeta, dbeta_.shape(), kTailRtol}};
  std::optional<Comparison> first;
  for (const Part& p : parts) {
    if (p.expected.empty()) continue;
    PNEUMO_CHECK(p.actual.size() == p.expected.size(), "TailCase: a gradient of ",
                 p.expected.size(), " values against one of ", p.actual.size());
    const Comparison c = compare_outputs(p.actual.data(), p.expected.data(), p.shape, p.rtol);
    if (!c.passed()) return c;
    if (!first) first = c;
  }
  PNEUMO_CHECK(first.has_value(), "TailCase: no gradient to check");
  return *first;
}

std::vector<float> TailCase::y() const { return download(y_); }

std::string TailCase::layer() const { return "tail" + std::to_string(block_ + 1); }

std::string TailCase::shape_label() const {
  std::ostringstream out;
  out << pool_shape_label(a_.shape()) << ", dropout " << settings_.dropout_rate;
  return out.str();
}

double TailCase::forward_bytes() const {
  return static_cast<double>(a_.numel() + y_.numel()) * sizeof(float);
}

double TailCase::backward_bytes() const {
  return static_cast<double>(2 * a_.numel() + y_.numel()) * sizeof(float);
}

}  // namespace pneumo::bench
