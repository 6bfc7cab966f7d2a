// The Backend interface: every op the network needs, forward and backward. CpuBackend is the
// reference and the fallback; CudaBackend is the product. Both implement exactly the semantics
// written here, and tests run the same op through both and compare.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>

#include "pneumo/augment.hpp"
#include "pneumo/optimizer_step.hpp"
#include "pneumo/random.hpp"
#include "pneumo/tensor.hpp"

namespace pneumo {

// Every op once, as (name, parameter list): Backend declares each op's protected <name>_impl
// from it, and each backend its overrides (PNEUMO_BACKEND_IMPLEMENTS), so the op list is written
// here only. The public entries below carry the contracts.
#define PNEUMO_BACKEND_OPS(OP) \
  OP(conv2d_forward, (ConstTensorView x, ConstTensorView weight, ConstTensorView bias, \
      TensorView y, bool fuse_relu)) \
  OP(conv2d_backward_data, (ConstTensorView dy, ConstTensorView weight, TensorView dx)) \
  OP(conv2d_backward_filter, (ConstTensorView x, ConstTensorView dy, TensorView dweight, \
      TensorView dbias)) \
  OP(relu_forward, (ConstTensorView x, TensorView y)) \
  OP(relu_backward, (ConstTensorView y, ConstTensorView dy, TensorView dx)) \
  OP(maxpool2d_forward, (ConstTensorView x, TensorView y)) \
  OP(maxpool2d_backward, (ConstTensorView x, ConstTensorView y, ConstTensorView dy, \
      TensorView dx)) \
  OP(global_avgpool_forward, (ConstTensorView x, TensorView y)) \
  OP(global_avgpool_backward, (ConstTensorView dy, TensorView dx)) \
  OP(batchnorm_forward_training, (ConstTensorView x, ConstTensorView gamma, \
      ConstTensorView beta, TensorView running_mean, TensorView running_var, \
      double average_factor, double epsilon, TensorView y, TensorView saved_mean, \
      TensorView saved_inv_std)) \
  OP(batchnorm_forward_inference, (ConstTensorView x, ConstTensorView gamma, \
      ConstTensorView beta, ConstTensorView running_mean, ConstTensorView running_var, \
      double epsilon, TensorView y)) \
  OP(batchnorm_backward, (ConstTensorView x, ConstTensorView dy, ConstTensorView gamma, \
      ConstTensorView saved_mean, ConstTensorView saved_inv_std, double epsilon, TensorView dx, \
      TensorView dgamma, TensorView dbeta)) \
  OP(batchnorm_backward_input, (ConstTensorView x, ConstTensorView dy, ConstTensorView gamma, \
      ConstTensorView saved_mean, ConstTensorView saved_inv_std, ConstTensorView sums, \
      double count, TensorView dx)) \
  OP(dropout_forward, (ConstTensorView x, TensorView y, float rate, RngKey key)) \
  OP(dropout_backward, (ConstTensorView dy, TensorView dx, float rate, RngKey key)) \
  OP(dense_forward, (ConstTensorView x, ConstTensorView weight, ConstTensorView bias, \
      TensorView y)) \
  OP(dense_backward, (ConstTensorView x, ConstTensorView weight, ConstTensorView dy, \
      TensorView dx, TensorView dweight, TensorView dbias)) \
  OP(sigmoid_bce, (ConstTensorView logits, ConstTensorView labels, ConstTensorView weights, \
      TensorView dlogits, TensorView stats, int64_t batch_count)) \
  OP(mark_nonfinite, (ConstTensorView value, int64_t step, TensorView marker)) \
  OP(rmsprop_step, (TensorView params, ConstTensorView grads, TensorView mean_square, \
      float learning_rate, float rho, float epsilon)) \
  OP(adamw_step, (TensorView params, ConstTensorView grads, TensorView exp_avg, \
      TensorView exp_avg_sq, const AdamWStep& step)) \
  OP(gather_augment, (const uint8_t* images, int64_t image_count, int size, \
      const int32_t* indices, const AugmentSettings& settings, RngKey key, TensorView out)) \
  OP(gather_values, (const float* values, const int32_t* indices, TensorView out))

// In a backend's class: `PNEUMO_BACKEND_IMPLEMENTS` declares every <name>_impl override.
#define PNEUMO_BACKEND_DECLARE_OVERRIDE(name, params) void name##_impl params override;
#define PNEUMO_BACKEND_IMPLEMENTS PNEUMO_BACKEND_OPS(PNEUMO_BACKEND_DECLARE_OVERRIDE)
#define PNEUMO_BACKEND_DECLARE_IMPL(name, params) virtual void name##_impl params = 0;

// Conventions shared by every op (DESIGN §3):
// - activations are float32 NCHW, contiguous; dense activations are (N, F);
// - convolution: 3x3 kernel, stride 1, 'same' padding (one zero pixel each side), weights
//   (K, C, 3, 3) as PyTorch stores them, cross-correlation (no kernel flip), bias (K);
// - max pooling: 2x2 window, stride 2, 'same': output ceil(H/2) x ceil(W/2); on an odd size the
//   one padding row/column goes on the TOP/LEFT (cuDNN's symmetric padding of 1 with floor
//   rounding gives exactly that) and never wins the max;
// - precision: float32 throughout, except under --precision bf16 (BackendOptions::
//   bf16_convolutions), where each convolution with more than one input channel rounds its
//   operands (x, weight, dy) to bfloat16 (round to nearest even, kernels/bf16.hpp), accumulates
//   in float32, and rounds its result (y before bias and ReLU, dx, dweight) to bfloat16; dbias
//   sums the float32 dy. That is what tensor-core convolutions on bfloat16 tensors give; the CPU
//   backend emulates it, so the two still agree to a stated tolerance. Every other op, the
//   one-channel first convolution included, stays float32;
// - backward ops OVERWRITE their outputs (no accumulation), so callers need not zero them;
// - every op may be asynchronous on its device; read results through Tensor::copy_to_host or
//   after synchronize().
class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;  // e.g. "cpu (2 threads, OpenBLAS)" or "cuda (NVIDIA H100)"
  virtual void synchronize() {}
  // The stream every op is issued on (a cudaStream_t on the CUDA backend; nullptr on the CPU), so
  // that collectives between ranks (NCCL) run in order with the ops.
  virtual void* native_stream() const { return nullptr; }
  // What the backend chose and measured by itself for inputs of batch size `batch`, for
  // benchmarks and reports (CUDA: cuDNN's algorithm searches, and where it timed cuDNN against
  // our kernels, as {"conv_searches": [...], "implementation_choices": [...]}); an empty object
  // where it chooses nothing (the CPU backend).
  virtual nlohmann::json report(int batch) const;

  Tensor empty(Shape shape) const { return Tensor(shape, device()); }
  Tensor zeros(Shape shape) const { return Tensor::zeros(shape, device()); }

  // ---- Convolution 3x3 'same', stride 1 ---------------------------------------------------
  // x: (N, C, H, W), weight: (K, C, 3, 3), bias: (K) -> y: (N, K, H, W); y = relu(conv + bias)
  // when fuse_relu, else conv + bias.
  void conv2d_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias, TensorView y,
                      bool fuse_relu);
  // dy: (N, K, H, W), weight: (K, C, 3, 3) -> dx: (N, C, H, W)
  void conv2d_backward_data(ConstTensorView dy, ConstTensorView weight, TensorView dx);
  // x: (N, C, H, W), dy: (N, K, H, W) -> dweight: (K, C, 3, 3), dbias: (K), summed over the batch
  void conv2d_backward_filter(ConstTensorView x, ConstTensorView dy, TensorView dweight,
                              TensorView dbias);

  // ---- ReLU (in place allowed: y may alias x, dx may alias dy) ------------------------------
  void relu_forward(ConstTensorView x, TensorView y);
  // y is the forward output: dx = dy where y > 0, else 0.
  void relu_backward(ConstTensorView y, ConstTensorView dy, TensorView dx);

  // ---- Max pooling 2x2, stride 2, 'same' (top/left padding on odd sizes) ----------------------
  // x: (N, C, H, W) -> y: (N, C, ceil(H/2), ceil(W/2))
  void maxpool2d_forward(ConstTensorView x, TensorView y);
  // Each window's gradient goes to the element that produced its max; on ties, to the first in
  // row-major order within the window.
  void maxpool2d_backward(ConstTensorView x, ConstTensorView y, ConstTensorView dy, TensorView dx);

  // ---- Global average pooling: x (N, C, H, W) -> y (N, C), the mean of each plane -----------
  void global_avgpool_forward(ConstTensorView x, TensorView y);
  // dy (N, C) -> dx (N, C, H, W): dy / (H W) over each plane.
  void global_avgpool_backward(ConstTensorView dy, TensorView dx);

  // ---- Batch normalisation over (N, H, W) per channel ("spatial") ---------------------------
  // Training: normalise with the batch mean and biased variance; update the running averages as
  //   running = (1 - factor) * running + factor * batch, with the UNBIASED batch variance for
  //   running_var (cuDNN and PyTorch do this); factor = 1 - Keras momentum (0.01).
  // saved_mean, saved_inv_std: (C), 1 / sqrt(biased_var + epsilon), kept for the backward pass.
  void batchnorm_forward_training(ConstTensorView x, ConstTensorView gamma, ConstTensorView beta,
                                  TensorView running_mean, TensorView running_var,
                                  double average_factor, double epsilon, TensorView y,
                                  TensorView saved_mean, TensorView saved_inv_std);
  // Inference: normalise with the running statistics.
  void batchnorm_forward_inference(ConstTensorView x, ConstTensorView gamma, ConstTensorView beta,
                                   ConstTensorView running_mean, ConstTensorView running_var,
                                   double epsilon, TensorView y);
  // Gradients of the training forward: dx (N, C, H, W), dgamma (C), dbeta (C).
  void batchnorm_backward(ConstTensorView x, ConstTensorView dy, ConstTensorView gamma,
                          ConstTensorView saved_mean, ConstTensorView saved_inv_std, double epsilon,
                          TensorView dx, TensorView dgamma, TensorView dbeta);
  // dx alone, from the channel sums of a batch that may be larger than x (synchronised batch-norm
  // across data-parallel ranks): sums (2, C) holds sum dy (row 0) and sum dy xhat (row 1) over
  // `count` values per channel, xhat = (x - saved_mean) saved_inv_std, and
  //   dx = gamma inv_std (dy - sum_dy / count - xhat sum_dy_xhat / count).
  // Given this batch's own dbeta and dgamma as sums and count = N H W, it is batchnorm_backward's dx.
  void batchnorm_backward_input(ConstTensorView x, ConstTensorView dy, ConstTensorView gamma,
                                ConstTensorView saved_mean, ConstTensorView saved_inv_std,
                                ConstTensorView sums, double count, TensorView dx);

  // ---- Dropout (inverted; mask = dropout_multiplier(key, element index, rate)) --------------
  // The element index is global: key.first (a multiple of 4) + the flat position in x.
  void dropout_forward(ConstTensorView x, TensorView y, float rate, RngKey key);
  void dropout_backward(ConstTensorView dy, TensorView dx, float rate, RngKey key);

  // ---- Dense (fully connected), row-major, PyTorch layout ----------------------------------
  // x: (N, in), weight: (out, in), bias: (out) -> y: (N, out) = x weight^T + bias
  void dense_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias, TensorView y);
  // dx: (N, in) (skipped when dx.data is null), dweight: (out, in), dbias: (out)
  void dense_backward(ConstTensorView x, ConstTensorView weight, ConstTensorView dy, TensorView dx,
                      TensorView dweight, TensorView dbias);

  // ---- Fused sigmoid + binary cross-entropy on logits ---------------------------------------
  // logits, labels: (N) or (N, 1); weights: per-sample weights (N), or data == nullptr for 1.
  // dlogits = weight * (sigmoid(z) - y) / batch_count: the gradient of the batch-mean loss, where
  // batch_count is the images of the whole batch: N on one process, the global batch when a
  // data-parallel rank holds N of its images (then the ranks' gradients add up to one process's).
  // stats (2): stats[0] += sum of weighted losses, stats[1] += count of correct predictions at
  // 0.5; accumulated on the device so an epoch needs one read.
  void sigmoid_bce(ConstTensorView logits, ConstTensorView labels, ConstTensorView weights,
                   TensorView dlogits, TensorView stats, int64_t batch_count);
  // The whole batch here: batch_count = N.
  void sigmoid_bce(ConstTensorView logits, ConstTensorView labels, ConstTensorView weights,
                   TensorView dlogits, TensorView stats) {
    sigmoid_bce(logits, labels, weights, dlogits, stats, logits.shape.rank() ? logits.shape[0] : 0);
  }

  // ---- Non-finite guard ---------------------------------------------------------------------
  // value (1), marker (1), both on this device: if value[0] is NaN or infinite and marker[0] is
  // 0, marker[0] = step + 1. Run after each step on the running loss sum, it records the first
  // step whose loss was not finite without a host round trip (0: every step so far was finite).
  void mark_nonfinite(ConstTensorView value, int64_t step, TensorView marker);

  // ---- RMSprop over one contiguous parameter buffer (one launch) ----------------------------
  void rmsprop_step(TensorView params, ConstTensorView grads, TensorView mean_square,
                    float learning_rate, float rho, float epsilon);
  // ---- AdamW over the same buffer: exp_avg and exp_avg_sq shaped like params ---------------
  void adamw_step(TensorView params, ConstTensorView grads, TensorView exp_avg,
                  TensorView exp_avg_sq, const AdamWStep& step);

  // ---- Input pipeline ------------------------------------------------------------------------
  // images: uint8 (image_count, size, size) on this device; indices: int32 (N) on this device.
  // out: (N, 1, size, size) float in [0, 1]. With settings.enabled, image slot i is warped by
  // parameters drawn from (key, key.first + i); else a plain gather and scale.
  void gather_augment(const uint8_t* images, int64_t image_count, int size, const int32_t* indices,
                      const AugmentSettings& settings, RngKey key, TensorView out);
  // out[i] = values[indices[i]]; values and indices on this device (labels, sample weights).
  void gather_values(const float* values, const int32_t* indices, TensorView out);

  // Instrumentation: called after every op with its name and the shape of its main operand
  // (`pneumo bench train --layers` records a CUDA event there). One hook at the entry, for
  // every backend; nullptr (the default) costs one test per op.
  using OpObserver = std::function<void(const char* op, const Shape& main_operand)>;
  void set_op_observer(OpObserver observer) { observer_ = std::move(observer); }

 protected:
  // What each backend implements: called by the public entry of the same name (src/core/
  // backend_entry.cpp) after the op's argument checks, which therefore hold for every backend.
  PNEUMO_BACKEND_OPS(PNEUMO_BACKEND_DECLARE_IMPL)

 private:
  void observe(const char* op, const Shape& shape) const {
    if (observer_) observer_(op, shape);
  }
  OpObserver observer_;
};

enum class DeviceChoice { Auto, Cpu, Cuda };

struct BackendOptions {
  DeviceChoice device = DeviceChoice::Auto;
  bool allow_tf32 = false;          // --precision tf32
  bool bf16_convolutions = false;   // --precision bf16 (the precision rule above)
  int cpu_threads = 0;      // 0: all hardware threads
  // CUDA convolutions: keep the fastest deterministic cuDNN algorithm (true), or the fastest of
  // all (false; backward passes may then add in a different order from run to run).
  bool deterministic = true;
  // CUDA: cuDNN for every op where the backend also has a kernel of its own, instead of timing
  // both and keeping the faster (`bench train --cudnn-only`: the comparison on one card).
  bool cudnn_only = false;
  // CUDA: also time cuDNN's graph-API engines for convolution backward passes on first use
  // (`bench train --graph-engines`; off by default: on an H100 they matched the legacy picks
  // while their search lengthened the first epoch).
  bool graph_engines = false;
  // CUDA: the file that remembers the backend's timed choices and cuDNN's algorithm picks across
  // runs, per GPU, driver, cuDNN, precision and shape (`--tuning-cache`); empty: none.
  std::string tuning_cache;
};

// Creates the backend the options ask for. Auto takes CUDA when a device exists, else the CPU
// with a one-line notice on stderr; Cuda without a device throws a clear pneumo::Error.
std::unique_ptr<Backend> make_backend(const BackendOptions& options);
std::unique_ptr<Backend> make_cpu_backend(int threads = 0, bool bf16_convolutions = false);
// Throws without a GPU. Takes the CUDA fields of `options` (its device is ignored).
std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& options);

}  // namespace pneumo
