// Shared pieces of the two `pneumo bench kernels` suites (see suite_common.hpp).
#include "bench/suite_common.hpp"

#include <cstring>
#include <sstream>
#include <string>

#include "elementwise.hpp"
#include "pneumo/model.hpp"

namespace pneumo::bench {

namespace {
float poison_value() {
  const uint32_t bits = 0x7E7E7E7Eu;
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}
}  // namespace

const float kPoison = poison_value();

const char* const kSpeedupNote =
    "speed-up: median of the fastest valid baseline of the same op, layer and shape (cuDNN for "
    "convolution and pooling, the unfused path for the loss, a plain copy of the output bytes for "
    "augmentation, a copy of the fp32 tensor for the bf16 conversions, the unfused chain for the "
    "block tail (the conversions around the fp32 fused tail for its bf16 rows), the fp32 GEMMs "
    "for the dense layers, cuDNN for batch-norm) divided by this row's median; GB/s counts "
    "compulsory traffic (each input read once, each output written once, in fp32), the same for "
    "every variant of an op, except: the augmentation's copy of the output bytes and the fp32 "
    "copy beside the bf16 conversions count their own read and write (8 bytes per element), and "
    "batch-norm's rows count the two passes its statistics take (forward 3x the tensor, x read "
    "twice; backward and the gated rows 5x), 1.5x and 1.67x what one read and one write give";
const char* const kPoolReference = "reference loops (first maximum of each window), all elements, exact";
const char* const kBatchNormReference =
    "fp64 loops, all elements: y, dx and the saved statistics rtol 1e-4, dgamma and dbeta 1e-3";
const char* const kLossReference =
    "fp64 loop, all elements: dlogits rtol 1e-4, loss sum rtol 1e-3, correct count exact";

std::string conv_shape_label(const LayerShape& layer) {
  std::ostringstream out;
  out << layer.in_channels << "x" << layer.size << "x" << layer.size << " -> "
      << layer.out_channels;
  return out.str();
}

std::string pool_shape_label(const Shape& x) {
  std::ostringstream out;
  out << x.c() << "x" << x.h() << "x" << x.w() << " -> " << x.c() << "x" << (x.h() + 1) / 2 << "x"
      << (x.w() + 1) / 2;
  return out.str();
}

std::string batchnorm_shape_label(const Shape& x) {
  std::ostringstream out;
  out << x.c() << "x" << x.h() << "x" << x.w();
  return out.str();
}

std::string loss_shape_label(int64_t n) { return "n=" + std::to_string(n); }

std::string augment_shape_label(int size) {
  return std::to_string(size) + "x" + std::to_string(size) + " u8 -> f32";
}

std::string conv_reference_label(const std::vector<int64_t>& images) {
  std::ostringstream out;
  out << "fp64 loops on images {";
  for (size_t i = 0; i < images.size(); ++i) out << (i ? ", " : "") << images[i];
  out << "} of the batch";
  return out.str();
}

Shape checked_shape(const Shape& y_shape, const std::vector<int64_t>& images) {
  return {static_cast<int64_t>(images.size()), y_shape.c(), y_shape.h(), y_shape.w()};
}

std::vector<float> select_images(const float* y, const Shape& y_shape,
                                 const std::vector<int64_t>& images) {
  const int64_t per_image = y_shape.c() * y_shape.h() * y_shape.w();
  std::vector<float> out(images.size() * static_cast<size_t>(per_image));
  for (size_t i = 0; i < images.size(); ++i)
    std::memcpy(out.data() + i * static_cast<size_t>(per_image), y + images[i] * per_image,
                static_cast<size_t>(per_image) * sizeof(float));
  return out;
}

Comparison check_loss(const float* dlogits, const float* stats, const LossProblem& p) {
  const int64_t n = static_cast<int64_t>(p.logits.size());
  const Comparison gradient =
      compare_outputs(dlogits, p.expected.dlogits.data(), Shape{n}, kLossGradientRtol);
  if (!gradient.passed()) return gradient;
  const Comparison loss = compare_outputs(stats, p.expected.stats.data(), Shape{1}, kLossSumRtol);
  if (!loss.passed()) return loss;
  const Comparison correct = compare_outputs(stats + 1, p.expected.stats.data() + 1, Shape{1}, 0.0);
  if (!correct.passed()) return correct;
  return gradient;
}

// A batch-norm output the shape of x (kBatchNormRtol), then two per-channel ones (channel_rtol):
// the first comparison that fails, else the first.
static Comparison check_batchnorm_outputs(const BatchNormProblem& p, const float* tensor,
                                          const std::vector<float>& tensor_expected,
                                          const float* a, const std::vector<float>& a_expected,
                                          const float* b, const std::vector<float>& b_expected,
                                          double channel_rtol) {
  const Comparison comparisons[] = {
      compare_outputs(tensor, tensor_expected.data(), p.x, kBatchNormRtol),
      compare_outputs(a, a_expected.data(), p.channel, channel_rtol),
      compare_outputs(b, b_expected.data(), p.channel, channel_rtol)};
  for (const Comparison& c : comparisons)
    if (!c.passed()) return c;
  return comparisons[0];
}

Comparison check_batchnorm_forward(const float* y, const float* mean, const float* inv_std,
                                   const BatchNormProblem& p) {
  return check_batchnorm_outputs(p, y, p.y_expected, mean, p.mean_expected, inv_std,
                                 p.inv_std_expected, kBatchNormRtol);
}

Comparison check_batchnorm_backward(const float* dx, const float* dgamma, const float* dbeta,
                                    const BatchNormProblem& p) {
  return check_batchnorm_outputs(p, dx, p.dx_expected, dgamma, p.dgamma_expected, dbeta,
                                 p.dbeta_expected, kBatchNormSumRtol);
}

const char* const kGatedBatchNormOp = "batchnorm_backward (ReLU + dropout gate, dx sums)";

bool has_gated_batchnorm(const LayerShape& layer) { return layer.in_channels > 1; }

GatedBatchNormExpected gated_batchnorm_expected(const BatchNormProblem& p,
                                                const LayerShape& layer) {
  PNEUMO_CHECK(has_gated_batchnorm(layer), layer.conv, ": no gated batch-norm case");
  const size_t block = static_cast<size_t>(std::stoi(layer.conv.substr(4)) - 1);  // "convK"
  GatedBatchNormExpected e;
  e.rate = ModelConfig{}.conv_dropout.at(block);
  const float kept = dropout_multiplier_from_keep(true, e.rate);
  const int64_t k = p.x.c(), per_channel = p.x.h() * p.x.w();
  e.dx.resize(p.dx_expected.size());
  std::vector<double> sums(static_cast<size_t>(k), 0.0);
  for (size_t i = 0; i < e.dx.size(); ++i) {
    e.dx[i] = p.x_values[i] > 0.0f ? p.dx_expected[i] * kept : 0.0f;
    sums[static_cast<size_t>((static_cast<int64_t>(i) / per_channel) % k)] += e.dx[i];
  }
  e.sums.assign(sums.begin(), sums.end());
  return e;
}

Comparison check_gated_batchnorm_backward(const float* dx, const float* dgamma, const float* dbeta,
                                          const float* sums, const BatchNormProblem& p,
                                          const GatedBatchNormExpected& expected) {
  const Comparison first =
      check_batchnorm_outputs(p, dx, expected.dx, dgamma, p.dgamma_expected, dbeta,
                              p.dbeta_expected, kBatchNormSumRtol);
  if (!first.passed()) return first;
  const Comparison summed =
      compare_outputs(sums, expected.sums.data(), p.channel, kBatchNormSumRtol);
  return summed.passed() ? first : summed;
}

BenchRow make_row(const char* platform, const std::string& op, const std::string& layer,
                  const std::string& shape, int64_t batch, const std::string& variant,
                  bool baseline) {
  BenchRow r;
  r.platform = platform;
  r.op = op;
  r.layer = layer;
  r.shape = shape;
  r.batch = batch;
  r.variant = variant;
  r.baseline = baseline;
  return r;
}

BenchRow failed_case_row(const char* platform, const std::string& family, const std::string& layer,
                         int64_t batch, const std::string& why) {
  BenchRow r = make_row(platform, family, layer, "", batch, "(whole case)", false);
  r.status = Status::Skipped;
  r.note = "case not run: " + why;
  log_row(r);
  return r;
}

}  // namespace pneumo::bench
