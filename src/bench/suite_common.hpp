// What the CPU and CUDA suites of `pneumo bench kernels` share: seeds, tolerances, the poison value
// outputs start from, row labels, and the checks that need more than one comparison.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bench/kernel_bench.hpp"
#include "bench/reference.hpp"
#include "pneumo/error.hpp"

namespace pneumo::bench {

constexpr uint32_t kSeed = 2024;
// Outputs are filled with this before a variant's checked run, so an element it fails to write
// fails the check. It is the float whose four bytes are 0x7E (a cudaMemset pattern), about
// 8.45e37: finite, so a cuDNN call that scales its output by beta = 0 cannot turn it into NaN.
extern const float kPoison;
constexpr int kPoisonByte = 0x7E;

// Tolerances (rtol; atol = rtol * max|expected|, see Comparison). Direct and GEMM-style
// convolutions sum at most 1,152 products in fp32 (1e-4); cuDNN's FFT and Winograd algorithms
// transform the data and lose more (1e-3). Pooling and copies are exact.
constexpr double kConvRtol = 1e-4;
constexpr double kConvTransformRtol = 1e-3;
// Batch-norm: y, dx and the saved statistics are sums of a few terms of fp32 statistics (1e-4);
// dgamma and dbeta sum a whole channel's values, in another order on each backend (1e-3).
constexpr double kBatchNormRtol = 1e-4;
constexpr double kBatchNormSumRtol = 1e-3;
constexpr double kLossGradientRtol = 1e-4;
constexpr double kLossSumRtol = 1e-3;  // float block sums + atomics vs an fp64 sum

// The loss at the batch sizes is launch-bound; a large n shows each path's throughput too.
constexpr int64_t kSyntheticLossSize = int64_t{1} << 20;

extern const char* const kSpeedupNote;
extern const char* const kPoolReference;
extern const char* const kBatchNormReference;
extern const char* const kLossReference;

// Batch-norm's backward as the unfused model calls it on conv2..conv5's outputs (x the dropout of
// a ReLU's output): the ReLU gate carrying the dropout's kept multiplier at the model's rate for
// that block, and dx's channel sums (the convolution's bias gradient). The expected dx is the
// problem's, gated and scaled on the host; the sums are of it, in double. nullopt for conv1's
// output (no sums: its own weight gradient sums its bias).
extern const char* const kGatedBatchNormOp;
struct GatedBatchNormExpected {
  float rate = 0.0f;
  std::vector<float> dx, sums;
};
bool has_gated_batchnorm(const LayerShape& layer);
GatedBatchNormExpected gated_batchnorm_expected(const BatchNormProblem& p, const LayerShape& layer);
Comparison check_gated_batchnorm_backward(const float* dx, const float* dgamma, const float* dbeta,
                                          const float* sums, const BatchNormProblem& p,
                                          const GatedBatchNormExpected& expected);

// A row for one variant of one case, before it is checked and timed.
BenchRow make_row(const char* platform, const std::string& op, const std::string& layer,
                  const std::string& shape, int64_t batch, const std::string& variant,
                  bool baseline);

// The SKIPPED row of a case whose set-up failed (its reference, its backends): variant
// "(whole case)", the message as its note.
BenchRow failed_case_row(const char* platform, const std::string& family, const std::string& layer,
                         int64_t batch, const std::string& why);

// Calls a suite's cases in table order for each batch size the config asks for: every conv
// layer, every pool, batch-norm over every conv layer's output, the loss at the batch size and
// at kSyntheticLossSize, the augmentation, the bf16 conversions (CUDA only), every block's tail
// (fused vs unfused), the dense layers (fp32 and bf16). A case whose set-up throws (a backend
// refusing a shape its reference needs, memory at a large batch) costs that case's rows, not the
// run: suite.case_failed(family, layer, batch, message) records it, and the next case runs.
template <class Suite>
void run_cases(const KernelBenchConfig& config, Suite& suite) {
  const auto guarded = [&](const char* family, const std::string& layer, int64_t batch,
                           const auto& call) {
    try {
      call();
    } catch (const Error& e) {
      suite.case_failed(family, layer, batch, e.what());
    }
  };
  for (int batch : config.batches) {
    if (config.wants("conv"))
      for (const LayerShape& layer : model_layers())
        guarded("conv", layer.conv, batch, [&] { suite.conv(layer, batch); });
    if (config.wants("pool"))
      for (const LayerShape& layer : model_layers())
        guarded("pool", layer.pool, batch, [&] { suite.pool(layer, batch); });
    if (config.wants("batchnorm"))
      for (const LayerShape& layer : model_layers())
        guarded("batchnorm", layer.conv, batch, [&] { suite.batchnorm(layer, batch); });
    if (config.wants("loss")) {
      guarded("loss", "loss", batch, [&] { suite.loss(batch, batch, "loss"); });
      guarded("loss", "loss (synthetic n)", batch,
              [&] { suite.loss(batch, kSyntheticLossSize, "loss (synthetic n)"); });
    }
    if (config.wants("augment")) guarded("augment", "input", batch, [&] { suite.augment(batch); });
    if (config.wants("bf16"))
      for (const LayerShape& layer : model_layers())
        guarded("bf16", layer.conv, batch, [&] { suite.bf16(layer, batch); });
    if (config.wants("tail"))
      for (size_t block = 0; block < model_layers().size(); ++block)
        guarded("tail", "block " + std::to_string(block + 1), batch,
                [&] { suite.tail(block, batch); });
    if (config.wants("dense"))
      for (int layer : {0, 1})
        guarded("dense", layer == 0 ? "fc1" : "fc2", batch, [&] { suite.dense(layer, batch); });
  }
}

// Compact shape labels for the table.
std::string conv_shape_label(const LayerShape& layer);  // "1x150x150 -> 32"
std::string pool_shape_label(const Shape& x);           // "32x150x150 -> 32x75x75"
std::string batchnorm_shape_label(const Shape& x);      // "32x150x150"
std::string loss_shape_label(int64_t n);                // "n=32"
std::string augment_shape_label(int size);              // "150x150 u8 -> f32"
std::string conv_reference_label(const std::vector<int64_t>& images);

// The checked images of y (N, K, S, S), concatenated: (images.size(), K, S, S).
std::vector<float> select_images(const float* y, const Shape& y_shape,
                                 const std::vector<int64_t>& images);
Shape checked_shape(const Shape& y_shape, const std::vector<int64_t>& images);

// Batch-norm's outputs against the problem's: forward y, then the saved mean and inverse
// standard deviation; backward dx, then dgamma and dbeta. The first failing comparison, else y's
// (dx's).
Comparison check_batchnorm_forward(const float* y, const float* mean, const float* inv_std,
                                   const BatchNormProblem& p);
Comparison check_batchnorm_backward(const float* dx, const float* dgamma, const float* dbeta,
                                    const BatchNormProblem& p);

// dlogits (rtol kLossGradientRtol), then stats: the loss sum (kLossSumRtol) and the correct
// count (exact). Returns the first failing comparison, else the gradient's.
Comparison check_loss(const float* dlogits, const float* stats, const LossProblem& p);

}  // namespace pneumo::bench
