// CudaBackend: the Backend interface on one NVIDIA GPU. Convolution, batch-norm and pooling go
// through cuDNN descriptors, dense layers through cuBLAS, and the per-element ops through the
// project's kernels (kernels/*.cu). All work is enqueued on one stream owned by the backend.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include "cuda/cuda_raii.hpp"
#include "cuda/cudnn_graph_conv.hpp"
#include "pneumo/backend.hpp"
#include "kernels.hpp"

namespace pneumo {

struct CudaBackendOptions {
  // fp32 (false): cuDNN CUDNN_FMA_MATH and cuBLAS CUBLAS_DEFAULT_MATH, no TF32 anywhere.
  // tf32 (true): CUDNN_TENSOR_OP_MATH and CUBLAS_TF32_TENSOR_OP_MATH (about 1e-3 relative error).
  bool allow_tf32 = false;
  // Convolution algorithms: the fastest deterministic one cuDNN measured (true), or the fastest.
  bool deterministic = true;
  // Where the project has its own kernel for an op cuDNN also does (max pooling forward and
  // backward, kernels/pooling.cu; the 3x3 convolution forward with one input channel, the first
  // layer, kernels/conv_direct.cu, and its weight gradient, kernels/conv_backward.cu; a
  // convolution's bias gradient, kernels/activation.cu; batch-norm training forward and backward,
  // kernels/batchnorm.cu): always cuDNN, always ours, or (the default) both timed once per shape
  // on the first call and the faster kept, as cuDNN's own algorithms are. Both are
  // deterministic, and the two poolings give identical bits. Tests force each.
  enum class Implementation { Cudnn, Kernel, Fastest };
  Implementation pooling = Implementation::Fastest;
  Implementation single_channel_conv = Implementation::Fastest;
  Implementation conv_bias_gradient = Implementation::Fastest;
  Implementation batchnorm = Implementation::Fastest;
  // Backward data and backward filter of convolutions with several input channels: the legacy
  // cudnnFind* pick (Cudnn, the default), the fastest engine of cuDNN's graph API
  // (cuda::GraphConvPlan; Kernel), or whichever of the two is faster (Fastest), both under the
  // same determinism and precision rules. On an H100 in fp32 the graph engines matched the legacy
  // picks within a few percent at batch 32 and 256 while their search added 1.4 s to the first
  // epoch, so they are opt-in (bench train --graph-engines).
  Implementation conv_engines = Implementation::Cudnn;
};

// cuDNN or our kernel for one op and input shape: which runs, and what the timing saw.
struct ImplementationChoice {
  std::string op;  // maxpool2d_forward, maxpool2d_backward, conv2d_forward,
                   // conv2d_backward_filter, conv2d_bias_gradient, batchnorm_forward_training
                   // or batchnorm_backward
  std::array<int64_t, 4> input{};  // N, C, H, W
  bool kernel = false;             // true: our kernel runs; false: cuDNN
  // Mean of back-to-back calls after a warm-up one; -1 when the option forced the choice.
  float cudnn_ms = -1, kernel_ms = -1;
  // Set when our kernel was faster but its outputs disagreed with cuDNN's (cuDNN then runs).
  std::string rejected;
};

// One algorithm as cuDNN's search (cudnnFind...Ex) measured it, for reports and benchmarks.
struct ConvAlgoTrial {
  int algo = 0;
  cudnnStatus_t status = CUDNN_STATUS_SUCCESS;
  float ms = 0;
  size_t workspace = 0;
  bool deterministic = false;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
};

// Every algorithm one direction's search tried, and the one kept.
struct ConvSearch {
  std::array<int64_t, 5> shape{};  // N, C, H, W, K
  const char* direction = "";      // "forward", "backward_data" or "backward_filter"
  int chosen = -1;
  std::vector<ConvAlgoTrial> trials;  // as cuDNN returned them, fastest first
};

// Empty when `actual` is within 1e-3 of `expected`'s largest magnitude everywhere, else the first
// element that is not (a NaN on either side never agrees), labelled with `name`. How CudaBackend
// checks our kernel's outputs against cuDNN's before keeping it.
std::string output_disagreement(const std::vector<float>& expected,
                                const std::vector<float>& actual, const char* name);

class CudaBackend final : public Backend {
 public:
  // Uses the current CUDA device; throws pneumo::Error when there is none or a library refuses.
  explicit CudaBackend(CudaBackendOptions options = {});
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  Device device() const override { return Device::Cuda; }
  std::string name() const override { return name_; }
  void synchronize() override;
  nlohmann::json report(int batch) const override;  // cuda_report.cpp

  void conv2d_forward_impl(ConstTensorView x, ConstTensorView weight, ConstTensorView bias, TensorView y,
                      bool fuse_relu) override;
  void conv2d_backward_data_impl(ConstTensorView dy, ConstTensorView weight, TensorView dx) override;
  void conv2d_backward_filter_impl(ConstTensorView x, ConstTensorView dy, TensorView dweight,
                              TensorView dbias) override;

  void relu_forward_impl(ConstTensorView x, TensorView y) override;
  void relu_backward_impl(ConstTensorView y, ConstTensorView dy, TensorView dx) override;

  void maxpool2d_forward_impl(ConstTensorView x, TensorView y) override;
  void maxpool2d_backward_impl(ConstTensorView x, ConstTensorView y, ConstTensorView dy,
                          TensorView dx) override;
  void global_avgpool_forward_impl(ConstTensorView x, TensorView y) override;
  void global_avgpool_backward_impl(ConstTensorView dy, TensorView dx) override;

  void batchnorm_forward_training_impl(ConstTensorView x, ConstTensorView gamma, ConstTensorView beta,
                                  TensorView running_mean, TensorView running_var,
                                  double average_factor, double epsilon, TensorView y,
                                  TensorView saved_mean, TensorView saved_inv_std) override;
  void batchnorm_forward_inference_impl(ConstTensorView x, ConstTensorView gamma, ConstTensorView beta,
                                   ConstTensorView running_mean, ConstTensorView running_var,
                                   double epsilon, TensorView y) override;
  void batchnorm_backward_impl(ConstTensorView x, ConstTensorView dy, ConstTensorView gamma,
                          ConstTensorView saved_mean, ConstTensorView saved_inv_std, double epsilon,
                          TensorView dx, TensorView dgamma, TensorView dbeta) override;

  void dropout_forward_impl(ConstTensorView x, TensorView y, float rate, RngKey key) override;
  void dropout_backward_impl(ConstTensorView dy, TensorView dx, float rate, RngKey key) override;

  void dense_forward_impl(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                     TensorView y) override;
  void dense_backward_impl(ConstTensorView x, ConstTensorView weight, ConstTensorView dy, TensorView dx,
                      TensorView dweight, TensorView dbias) override;

  void sigmoid_bce_impl(ConstTensorView logits, ConstTensorView labels, ConstTensorView weights,
                   TensorView dlogits, TensorView stats) override;

  void mark_nonfinite_impl(ConstTensorView value, int64_t step, TensorView marker) override;
  void rmsprop_step_impl(TensorView params, ConstTensorView grads, TensorView mean_square,
                    float learning_rate, float rho, float epsilon) override;
  void adamw_step_impl(TensorView params, ConstTensorView grads, TensorView exp_avg,
                  TensorView exp_avg_sq, const AdamWStep& step) override;

  void gather_augment_impl(const uint8_t* images, int64_t image_count, int size, const int32_t* indices,
                      const AugmentSettings& settings, RngKey key, TensorView out) override;
  void gather_values_impl(const float* values, const int32_t* indices, TensorView out) override;

  // ---- Introspection (tests, reports, benchmarks) -----------------------------------------------
  cudaStream_t stream() const { return stream_.get(); }
  const CudaBackendOptions& options() const { return options_; }
  size_t workspace_bytes() const { return workspace_.bytes(); }
  size_t conv_plan_count() const { return conv_plans_.size(); }
  // One line per cached convolution shape: the algorithms cuDNN's search chose, their
  // workspace, math type and whether bias+ReLU ran fused.
  std::string describe_conv_plans() const;
  // Every search run so far, in shape order, forward then backward data then backward filter.
  std::vector<ConvSearch> conv_searches() const;
  // Every cuDNN-or-ours choice made so far (pooling, then single-channel convolutions).
  std::vector<ImplementationChoice> implementation_choices() const;

 private:
  // cuDNN or our kernel, decided on an op's first call for its shape (run_chosen).
  struct Choice {
    bool decided = false, kernel = false;
    float cudnn_ms = -1, kernel_ms = -1;
    std::string rejected;
  };
  // An output both implementations write, compared before our kernel is kept.
  struct Output {
    const float* data;
    int64_t count;
    const char* name;
  };
  // Everything cuDNN needs for one convolution shape (N, C, H, W) -> K, built on first use. Each
  // direction's algorithm is found by measuring (cudnnFind...Ex) the first time that direction
  // runs, then reused: no search and no allocation on later steps.
  struct ConvPlan {
    cuda::TensorDescriptor x, y, bias;  // (N, C, H, W), (N, K, H, W), (1, K, 1, 1)
    cuda::FilterDescriptor weight;      // (K, C, 3, 3)
    cuda::ActivationDescriptor relu;
    // One convolution descriptor per direction: each carries its chosen algorithm's math type.
    cuda::ConvolutionDescriptor forward_conv, backward_data_conv, backward_filter_conv;
    bool has_forward = false, has_backward_data = false, has_backward_filter = false;
    cudnnConvolutionFwdAlgo_t forward_algo{};
    cudnnConvolutionBwdDataAlgo_t backward_data_algo{};
    cudnnConvolutionBwdFilterAlgo_t backward_filter_algo{};
    size_t forward_workspace = 0, backward_data_workspace = 0, backward_filter_workspace = 0;
    float forward_ms = 0, backward_data_ms = 0, backward_filter_ms = 0;
    std::vector<ConvAlgoTrial> forward_trials, backward_data_trials, backward_filter_trials;
    // cudnnConvolutionBiasActivationForward is tried once with the chosen algorithm; if cuDNN
    // refuses, this shape runs conv + our bias/ReLU kernel from then on (refusal kept for reports).
    enum class Fusion { Untried, Fused, Unfused } relu_fusion = Fusion::Untried;
    cudnnStatus_t relu_fusion_refusal = CUDNN_STATUS_SUCCESS;
    Choice single_channel;  // forward: cuDNN or conv3x3_forward_single_channel (C = 1 only)
    Choice single_channel_filter;  // weight gradient: cuDNN or ours (C = 1 only)
    Choice bias_gradient;   // cudnnConvolutionBackwardBias or kernels::bias_backward
    // Backward data and filter: the legacy pick, or the graph API's fastest engine (the
    // choice's "kernel" side); the graph plans stay empty until searched.
    Choice graph_backward_data, graph_backward_filter;
    cuda::GraphConvPlan graph_data_plan, graph_filter_plan;
  };
  using ConvKey = std::array<int64_t, 5>;  // N, C, H, W, K

  struct PoolPlan {
    cuda::TensorDescriptor x, y;  // (N, C, H, W), (N, C, ceil(H/2), ceil(W/2))
    cuda::PoolingDescriptor pool;
    Choice forward, backward;
  };
  struct BatchNormPlan {
    cuda::TensorDescriptor x;      // (N, C, H, W); (N, F) is taken as (N, F, 1, 1)
    cuda::TensorDescriptor stats;  // (1, C, 1, 1), derived by cuDNN for spatial mode
    Choice forward, backward;      // training forward and backward: cuDNN or kernels/batchnorm.cu
  };
  using ShapeKey = std::array<int64_t, 4>;

  ConvPlan& conv_plan(const Shape& x_shape, int64_t out_channels);
  size_t reserve_search_workspace(size_t wanted);
  void find_forward_algorithm(ConvPlan& plan, ConstTensorView x, ConstTensorView weight,
                              TensorView y);
  void find_backward_data_algorithm(ConvPlan& plan, ConstTensorView dy, ConstTensorView weight,
                                    TensorView dx);
  void find_backward_filter_algorithm(ConvPlan& plan, ConstTensorView x, ConstTensorView dy,
                                      TensorView dweight);
  PoolPlan& pool_plan(const Shape& x_shape);
  BatchNormPlan& batchnorm_plan(const Shape& x_shape);
  // Grows the one workspace to at least `bytes` (first use of a shape only).
  void ensure_workspace(size_t bytes);
  // Most workspace an algorithm search may use: the smaller of 1 GiB and half the free memory.
  size_t search_workspace_limit() const;
  cudnnMathType_t conv_math_type() const;
  // Runs `cudnn` or `kernel` (two ways to the same `outputs`) as `choice` says, deciding on the
  // first call: as `option` forces, or by timing both on the real buffers and keeping the faster,
  // our kernel only if its outputs then agree with cuDNN's (a safety net for a kernel that has
  // never met this GPU; a disagreement is printed once and kept in the choice).
  void run_chosen(Choice& choice, CudaBackendOptions::Implementation option,
                  const std::function<void()>& cudnn, const std::function<void()>& kernel,
                  std::initializer_list<Output> outputs);
  // The decision alone (run_chosen's first step), for ops whose timing runs must not touch the
  // real state (batch-norm's running averages).
  void decide(Choice& choice, CudaBackendOptions::Implementation option,
              const std::function<void()>& cudnn, const std::function<void()>& kernel,
              std::initializer_list<Output> outputs);
  // Empty when `kernel` writes what `cudnn` writes (within 1e-3 of each output's largest
  // magnitude; outputs over 2^21 values on their first and last 2^20, each part against its own
  // largest), else where they differ.
  std::string disagreement(const std::function<void()>& cudnn, const std::function<void()>& kernel,
                           std::initializer_list<Output> outputs);
  // The graph API's engine search for one direction of a plan's shape, on the real buffers; on
  // failure the choice keeps the legacy pick and records why.
  void search_graph_engine(Choice& choice, cuda::GraphConvPlan& graph, const Shape& x_shape,
                           int64_t k, cuda::ConvDirection direction, const float* x,
                           const float* weight, const float* y);
  // Our kernels' per-channel reduction split for (batch, channels) on this GPU.
  kernels::BiasReduction reduction(int64_t batch, int64_t channels) const;
  float mean_ms(const std::function<void()>& run);
  // dbias[c] = sum of dy (batch, channels, spatial) over batch and spatial, by our kernel (its
  // partial sums live in the workspace).
  void bias_gradient_kernel(const float* dy, float* dbias, int64_t batch, int64_t channels,
                            int64_t spatial);
  void conv_forward_cudnn(ConvPlan& plan, ConstTensorView x, ConstTensorView weight,
                          ConstTensorView bias, TensorView y, bool fuse_relu);

  CudaBackendOptions options_;
  int device_ = 0;
  int sm_count_ = 1;
  std::string name_;
  // Declaration order is destruction order reversed: plans and workspace go first, the stream
  // last (the library handles are bound to it).
  cuda::Stream stream_;
  cuda::CudnnHandle cudnn_;
  cuda::CublasHandle cublas_;
  Array<uint8_t> workspace_;
  std::map<ConvKey, ConvPlan> conv_plans_;
  std::map<ShapeKey, PoolPlan> pool_plans_;
  std::map<ShapeKey, BatchNormPlan> batchnorm_plans_;
};

}  // namespace pneumo
