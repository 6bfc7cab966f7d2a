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
#include "pneumo/live_step.hpp"
#include "pneumo/ops/block_tail.hpp"
#include "pneumo/optimizer_step.hpp"
#include "pneumo/random.hpp"
#include "pneumo/tensor.hpp"

namespace pneumo {

// Every op once, as (name, parameter list): Backend declares each op's protected <name>_impl
// from it, and each backend its overrides (PNEUMO_BACKEND_IMPLEMENTS), so the op list is written
// here only. The contracts are in pneumo/ops/*.hpp, one header per op family.
#define PNEUMO_BACKEND_OPS(OP) \
  OP(conv2d_forward, (ConstTensorView x, ConstTensorView weight, ConstTensorView bias, \
      TensorView y, bool fuse_relu)) \
  OP(conv2d_backward_data, (ConstTensorView dy, ConstTensorView weight, TensorView dx)) \
  OP(conv2d_backward_filter, (ConstTensorView x, ConstTensorView dy, TensorView dweight, \
      TensorView dbias)) \
  OP(conv2d_backward, (ConstTensorView x, ConstTensorView dy, ConstTensorView weight, \
      TensorView dx, TensorView dweight, TensorView dbias)) \
  OP(conv2d_forward_bf16, (ConstBf16NhwcView x, ConstTensorView weight, Bf16NhwcView z)) \
  OP(conv2d_backward_bf16, (ConstBf16NhwcView x, ConstBf16NhwcView dz, ConstTensorView weight, \
      Bf16NhwcView dx, TensorView dweight)) \
  OP(to_bf16_channels_last, (ConstTensorView x, Bf16NhwcView y)) \
  OP(from_bf16_channels_last, (ConstBf16NhwcView x, TensorView y)) \
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
      TensorView dgamma, TensorView dbeta, bool relu_gate, float gate_dropout_rate, \
      TensorView dx_sums)) \
  OP(batchnorm_backward_input, (ConstTensorView x, ConstTensorView dy, ConstTensorView gamma, \
      ConstTensorView saved_mean, ConstTensorView saved_inv_std, ConstTensorView sums, \
      double count, TensorView dx)) \
  OP(block_tail_forward, (ConstTensorView a, ConstTensorView gamma, ConstTensorView beta, \
      TensorView running_mean, TensorView running_var, const BlockTailSettings& settings, \
      TensorView y, TensorView saved_mean, TensorView saved_inv_std)) \
  OP(block_tail_backward, (ConstTensorView a, ConstTensorView dy, ConstTensorView gamma, \
      ConstTensorView beta, ConstTensorView saved_mean, ConstTensorView saved_inv_std, \
      const BlockTailSettings& settings, TensorView da, TensorView dgamma, TensorView dbeta)) \
  OP(block_tail_forward_bf16, (ConstBf16NhwcView z, ConstTensorView bias, ConstTensorView gamma, \
      ConstTensorView beta, TensorView running_mean, TensorView running_var, \
      const BlockTailSettings& settings, Bf16NhwcView y, TensorView saved_mean, \
      TensorView saved_inv_std)) \
  OP(block_tail_backward_bf16, (ConstBf16NhwcView z, ConstTensorView bias, ConstBf16NhwcView dy, \
      ConstTensorView gamma, ConstTensorView beta, ConstTensorView saved_mean, \
      ConstTensorView saved_inv_std, const BlockTailSettings& settings, Bf16NhwcView dz, \
      TensorView dbias, TensorView dgamma, TensorView dbeta)) \
  OP(stem_forward, (ConstTensorView x, ConstTensorView weight, ConstTensorView bias, \
      ConstTensorView gamma, ConstTensorView beta, TensorView running_mean, \
      TensorView running_var, const BlockTailSettings& settings, TensorView y, \
      TensorView saved_mean, TensorView saved_inv_std)) \
  OP(stem_backward, (ConstTensorView x, ConstTensorView dy, ConstTensorView weight, \
      ConstTensorView bias, ConstTensorView gamma, ConstTensorView beta, \
      ConstTensorView saved_mean, ConstTensorView saved_inv_std, \
      const BlockTailSettings& settings, TensorView dweight, TensorView dbias, TensorView dgamma, \
      TensorView dbeta)) \
  OP(dropout_forward, (ConstTensorView x, TensorView y, float rate, RngKey key)) \
  OP(dropout_backward, (ConstTensorView dy, TensorView dx, float rate, RngKey key)) \
  OP(dense_forward, (ConstTensorView x, ConstTensorView weight, ConstTensorView bias, \
      TensorView y)) \
  OP(dense_backward, (ConstTensorView x, ConstTensorView weight, ConstTensorView dy, \
      TensorView dx, TensorView dweight, TensorView dbias)) \
  OP(sigmoid_bce, (ConstTensorView logits, ConstTensorView labels, ConstTensorView weights, \
      TensorView dlogits, TensorView stats, int64_t batch_count)) \
  OP(mark_nonfinite, (ConstTensorView value, int64_t step, TensorView marker, \
      const LiveStep* live)) \
  OP(rmsprop_step, (TensorView params, ConstTensorView grads, TensorView mean_square, \
      float learning_rate, float rho, float epsilon, bool eps_inside, const LiveStep* live)) \
  OP(adamw_step, (TensorView params, ConstTensorView grads, TensorView exp_avg, \
      TensorView exp_avg_sq, const AdamWStep& step, const LiveStep* live)) \
  OP(gather_augment, (const uint8_t* images, int64_t image_count, int size, \
      const int32_t* indices, const AugmentSettings& settings, RngKey key, TensorView out)) \
  OP(gather_values, (const float* values, int64_t value_count, const int32_t* indices, TensorView out)) \
  OP(begin_step, (const LiveStep* table, int64_t table_size, uint32_t* cursor, \
      const int32_t* order, int count, LiveStep* current, int32_t* indices))

// In a backend's class: `PNEUMO_BACKEND_IMPLEMENTS` declares every <name>_impl override.
#define PNEUMO_BACKEND_DECLARE_OVERRIDE(name, params) void name##_impl params override;
#define PNEUMO_BACKEND_IMPLEMENTS PNEUMO_BACKEND_OPS(PNEUMO_BACKEND_DECLARE_OVERRIDE)
#define PNEUMO_BACKEND_DECLARE_IMPL(name, params) virtual void name##_impl params = 0;

// A sequence of one backend's ops recorded once and replayed as one launch (a CUDA graph): the
// same kernels on the same memory with the same arguments; what must change between replays is
// read from device memory (pneumo/live_step.hpp). Must not outlive its backend.
class Recording {
 public:
  virtual ~Recording() = default;
  virtual void replay() = 0;  // asynchronous, on the backend's stream
  // False once the backend has moved memory the recording uses (a grown workspace): record again.
  virtual bool current() const = 0;
};

// Conventions shared by every op (docs/conventions.md); each op's own contract (shapes, layouts,
// semantics, and the argument checks its public entry runs for every backend) is in its
// header, pneumo/ops/<family>.hpp, named beside each group below:
// - activations are float32 NCHW, contiguous; dense activations are (N, F); float32 throughout,
//   except the operands of the convolutions and dense layers under --precision bf16
//   (pneumo/ops/conv2d.hpp, pneumo/ops/dense.hpp), and the bfloat16 channels-last tensors of the
//   *_bf16 ops (pneumo/tensor.hpp's Bf16NhwcView);
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
  // our kernels, as {"conv_searches": [...], "implementation_choices": [...]}, and the tuning
  // cache's use as "tuning_cache"); an empty object where it chooses nothing (the CPU backend).
  virtual nlohmann::json report(int batch) const;
  // Records the ops `issue` puts on the device, without running them, for replay; nullptr where
  // the backend cannot record (the CPU). Each op must already have run at the recorded shapes:
  // a first call chooses algorithms, times and allocates, which a recording cannot hold. Throws
  // pneumo::Error when the device refuses to record an op.
  virtual std::unique_ptr<Recording> record(const std::function<void()>& issue);

  Tensor empty(Shape shape) const { return Tensor(shape, device()); }
  Tensor zeros(Shape shape) const { return Tensor::zeros(shape, device()); }

  // ---- Convolution 3x3 'same', stride 1: pneumo/ops/conv2d.hpp ------------------------------
  // x (N, C, H, W), weight (K, C, 3, 3), bias (K) -> y (N, K, H, W), ReLU'd when fuse_relu.
  void conv2d_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias, TensorView y,
                      bool fuse_relu);
  void conv2d_backward_data(ConstTensorView dy, ConstTensorView weight, TensorView dx);
  void conv2d_backward_filter(ConstTensorView x, ConstTensorView dy, TensorView dweight,
                              TensorView dbias);
  // Both gradients, as conv2d_backward_filter then conv2d_backward_data (none when dx is
  // TensorView{}): what a network's backward calls, so a backend can share their work.
  void conv2d_backward(ConstTensorView x, ConstTensorView dy, ConstTensorView weight,
                       TensorView dx, TensorView dweight, TensorView dbias);

  // The convolutions between bfloat16 block tails: channels-last bfloat16 x, z (the rounded sum,
  // no bias), dz and dx (none when its data is null); float32 weight and dweight; no dbias.
  void conv2d_forward_bf16(ConstBf16NhwcView x, ConstTensorView weight, Bf16NhwcView z);
  void conv2d_backward_bf16(ConstBf16NhwcView x, ConstBf16NhwcView dz, ConstTensorView weight,
                            Bf16NhwcView dx, TensorView dweight);
  // (N, C, H, W) float32 <-> bfloat16 channels-last (rounded to nearest even; back exactly).
  void to_bf16_channels_last(ConstTensorView x, Bf16NhwcView y);
  void from_bf16_channels_last(ConstBf16NhwcView x, TensorView y);

  // ---- ReLU (in place allowed): pneumo/ops/relu.hpp -----------------------------------------
  void relu_forward(ConstTensorView x, TensorView y);
  void relu_backward(ConstTensorView y, ConstTensorView dy, TensorView dx);  // y: forward output

  // ---- Max pooling 2x2 'same', global average pooling: pneumo/ops/pooling.hpp ---------------
  void maxpool2d_forward(ConstTensorView x, TensorView y);
  void maxpool2d_backward(ConstTensorView x, ConstTensorView y, ConstTensorView dy, TensorView dx);
  void global_avgpool_forward(ConstTensorView x, TensorView y);
  void global_avgpool_backward(ConstTensorView dy, TensorView dx);

  // ---- Batch normalisation per channel: pneumo/ops/batchnorm.hpp ----------------------------
  void batchnorm_forward_training(ConstTensorView x, ConstTensorView gamma, ConstTensorView beta,
                                  TensorView running_mean, TensorView running_var,
                                  double average_factor, double epsilon, TensorView y,
                                  TensorView saved_mean, TensorView saved_inv_std);
  void batchnorm_forward_inference(ConstTensorView x, ConstTensorView gamma, ConstTensorView beta,
                                   ConstTensorView running_mean, ConstTensorView running_var,
                                   double epsilon, TensorView y);
  // relu_gate: x is a ReLU's output (directly, or through dropout); dx then also goes through
  // that ReLU's gradient, so the layer before needs no relu_backward pass of its own.
  // gate_dropout_rate (with relu_gate): x is the output of an inverted dropout at this rate of a
  // ReLU's output, and dx goes through that dropout's gradient too (no dropout_backward pass).
  // dx_sums (C), unless TensorView{}: dx summed per channel, the gradient of a bias added to the
  // layer before's output (its convolution's dbias), so that no pass reads dx again for it.
  void batchnorm_backward(ConstTensorView x, ConstTensorView dy, ConstTensorView gamma,
                          ConstTensorView saved_mean, ConstTensorView saved_inv_std, double epsilon,
                          TensorView dx, TensorView dgamma, TensorView dbeta,
                          bool relu_gate = false, float gate_dropout_rate = 0.0f,
                          TensorView dx_sums = {});
  void batchnorm_backward_input(ConstTensorView x, ConstTensorView dy, ConstTensorView gamma,
                                ConstTensorView saved_mean, ConstTensorView saved_inv_std,
                                ConstTensorView sums, double count, TensorView dx);

  // ---- Dropout -> batch-norm -> max pooling fused, a block's tail: pneumo/ops/block_tail.hpp ---
  // a (N, C, H, W) the block's ReLU output -> y (N, C, ceil(H/2), ceil(W/2)); the backward gives
  // the gradient before the ReLU.
  void block_tail_forward(ConstTensorView a, ConstTensorView gamma, ConstTensorView beta,
                          TensorView running_mean, TensorView running_var,
                          const BlockTailSettings& settings, TensorView y, TensorView saved_mean,
                          TensorView saved_inv_std);
  void block_tail_backward(ConstTensorView a, ConstTensorView dy, ConstTensorView gamma,
                           ConstTensorView beta, ConstTensorView saved_mean,
                           ConstTensorView saved_inv_std, const BlockTailSettings& settings,
                           TensorView da, TensorView dgamma, TensorView dbeta);
  // The same tail between two bfloat16 convolutions: z their channels-last bfloat16 output
  // before the bias; y, dy and dz bfloat16 channels-last; dbias the convolution's bias gradient.
  void block_tail_forward_bf16(ConstBf16NhwcView z, ConstTensorView bias, ConstTensorView gamma,
                               ConstTensorView beta, TensorView running_mean,
                               TensorView running_var, const BlockTailSettings& settings,
                               Bf16NhwcView y, TensorView saved_mean, TensorView saved_inv_std);
  void block_tail_backward_bf16(ConstBf16NhwcView z, ConstTensorView bias, ConstBf16NhwcView dy,
                                ConstTensorView gamma, ConstTensorView beta,
                                ConstTensorView saved_mean, ConstTensorView saved_inv_std,
                                const BlockTailSettings& settings, Bf16NhwcView dz,
                                TensorView dbias, TensorView dgamma, TensorView dbeta);
  // The stem: block 1 whole, x (N, 1, H, W) -> conv 3x3 + ReLU -> the tail above, the
  // convolution's output recomputed, never stored; the backward ends in its weight and bias
  // gradients (no dx).
  void stem_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                    ConstTensorView gamma, ConstTensorView beta, TensorView running_mean,
                    TensorView running_var, const BlockTailSettings& settings, TensorView y,
                    TensorView saved_mean, TensorView saved_inv_std);
  void stem_backward(ConstTensorView x, ConstTensorView dy, ConstTensorView weight,
                     ConstTensorView bias, ConstTensorView gamma, ConstTensorView beta,
                     ConstTensorView saved_mean, ConstTensorView saved_inv_std,
                     const BlockTailSettings& settings, TensorView dweight, TensorView dbias,
                     TensorView dgamma, TensorView dbeta);

  // ---- Dropout, inverted, masks keyed by global element index: pneumo/ops/dropout.hpp -------
  void dropout_forward(ConstTensorView x, TensorView y, float rate, RngKey key);
  void dropout_backward(ConstTensorView dy, TensorView dx, float rate, RngKey key);

  // ---- Dense, row-major, PyTorch layout: pneumo/ops/dense.hpp -------------------------------
  void dense_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias, TensorView y);
  void dense_backward(ConstTensorView x, ConstTensorView weight, ConstTensorView dy, TensorView dx,
                      TensorView dweight, TensorView dbias);

  // ---- Fused sigmoid + binary cross-entropy, non-finite guard: pneumo/ops/loss.hpp ----------
  void sigmoid_bce(ConstTensorView logits, ConstTensorView labels, ConstTensorView weights,
                   TensorView dlogits, TensorView stats, int64_t batch_count);
  // The whole batch here: batch_count = N.
  void sigmoid_bce(ConstTensorView logits, ConstTensorView labels, ConstTensorView weights,
                   TensorView dlogits, TensorView stats) {
    sigmoid_bce(logits, labels, weights, dlogits, stats, logits.shape.rank() ? logits.shape[0] : 0);
  }
  // live set: the step is read from live->step when the guard runs (pneumo/live_step.hpp).
  void mark_nonfinite(ConstTensorView value, int64_t step, TensorView marker,
                      const LiveStep* live = nullptr);

  // ---- RMSprop and AdamW over one contiguous buffer: pneumo/ops/optimizer.hpp ---------------
  // live set: the learning rate (and AdamW's bias corrections) are read from it when the step
  // runs; the other constants stay as passed.
  // eps_inside: epsilon under the square root (Keras 2.11+ and 3) rather than added to it
  // (PyTorch; Keras 2 and tf.keras <= 2.10 without momentum).
  void rmsprop_step(TensorView params, ConstTensorView grads, TensorView mean_square,
                    float learning_rate, float rho, float epsilon, bool eps_inside = false,
                    const LiveStep* live = nullptr);
  void adamw_step(TensorView params, ConstTensorView grads, TensorView exp_avg,
                  TensorView exp_avg_sq, const AdamWStep& step, const LiveStep* live = nullptr);

  // ---- Input pipeline: pneumo/ops/input.hpp -------------------------------------------------
  void gather_augment(const uint8_t* images, int64_t image_count, int size, const int32_t* indices,
                      const AugmentSettings& settings, RngKey key, TensorView out);
  void gather_values(const float* values, int64_t value_count, const int32_t* indices,
                     TensorView out);
  // The start of a step whose values live on the device (pneumo/live_step.hpp): with
  // i = *cursor, *current = table[i], indices[j] = order[table[i].first + j] for j < count, then
  // *cursor = i + 1. table (table_size entries), cursor, order, current and indices all on the
  // backend's device; i must be below table_size (the CPU checks it; CUDA traps).
  void begin_step(const LiveStep* table, int64_t table_size, uint32_t* cursor,
                  const int32_t* order, int count, LiveStep* current, int32_t* indices);

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

// One line on how much a run's tuning cache spared it, from report()'s "tuning_cache": "tuning
// cache warm (PATH): N decisions loaded for this GPU and precision, M lookups answered from
// them, 0 decided in this run"; empty where the report has none (the CPU backend).
std::string describe_tuning_cache(const nlohmann::json& report);

enum class DeviceChoice { Auto, Cpu, Cuda };

struct BackendOptions {
  DeviceChoice device = DeviceChoice::Auto;
  bool allow_tf32 = false;          // --precision tf32
  // --precision bf16: the precision rules of pneumo/ops/conv2d.hpp and pneumo/ops/dense.hpp
  bool bf16 = false;
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

// The device make_backend would take for `choice`; throws the pneumo::Error it would throw
// (--device cuda without a GPU), so that a command can refuse before it makes anything.
Device backend_device(DeviceChoice choice);
// Creates the backend the options ask for. Auto takes CUDA when a device exists, else the CPU
// with a one-line notice on stderr; Cuda without a device throws a clear pneumo::Error.
std::unique_ptr<Backend> make_backend(const BackendOptions& options);
std::unique_ptr<Backend> make_cpu_backend(int threads = 0, bool bf16 = false);
// Throws without a GPU. Takes the CUDA fields of `options` (its device is ignored).
std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& options);

}  // namespace pneumo
