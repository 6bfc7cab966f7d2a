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
#include <utility>
#include <vector>

#include "cuda/chooser.hpp"
#include "cuda/cuda_raii.hpp"
#include "cuda/cudnn_graph_conv.hpp"
#include "kernels.hpp"
#include "pneumo/backend.hpp"

namespace pneumo {

struct CudaBackendOptions {
  // fp32 (false): cuDNN CUDNN_FMA_MATH and cuBLAS CUBLAS_DEFAULT_MATH, no TF32 anywhere.
  // tf32 (true): CUDNN_TENSOR_OP_MATH and CUBLAS_TF32_TENSOR_OP_MATH (about 1e-3 relative error).
  bool allow_tf32 = false;
  // bf16 (true): convolutions with more than one input channel run on tensor cores on bfloat16
  // copies of their operands, stored channels-last, through cuDNN's graph API, and the dense
  // layers' GEMMs on bfloat16 copies through cublasGemmEx (the precision rules of
  // pneumo/ops/conv2d.hpp and pneumo/ops/dense.hpp; kernels/bf16_convert.cu converts). The
  // one-channel first layer, batch-norm, pooling and the optimizer stay float32.
  bool bf16 = false;
  // Convolution algorithms: the fastest deterministic one cuDNN measured (true), or the fastest.
  bool deterministic = true;
  // Where the project has its own kernel for an op cuDNN also does (max pooling forward and
  // backward, kernels/pooling.cu; the 3x3 convolution forward with one input channel, the first
  // layer, kernels/conv_direct.cu, and its weight gradient, kernels/conv_backward.cu; a
  // convolution's bias gradient, kernels/activation.cu; batch-norm training forward and backward,
  // kernels/batchnorm.cu): always cuDNN, always ours, or (the default) both timed once per shape
  // on the first call and the faster kept, as cuDNN's own algorithms are. Both are
  // deterministic, and the two poolings give identical bits. Tests force each.
  using Implementation = cuda::Implementation;
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
  // The file the timed decisions (cuDNN or ours, per op and shape) and cuDNN's algorithm picks
  // are remembered in across runs (cuda/tuning_cache.hpp); empty: remembered for this backend's
  // life only. Forced choices and the graph API's engines are never cached.
  std::string tuning_cache;
  // Tests only: the per-channel reductions of our batch-norm, fused tail and stem kernels and of
  // the bias gradient (not the one-channel weight gradient's, which splits its own way) in
  // chunks of this many images, the last one short where the batch does not divide, instead of
  // the split the SM count picks (on a 132-SM GPU the parity tests' small batches get one image
  // per chunk). 0: the SM count's.
  int64_t reduction_images_per_chunk = 0;
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
  std::string source;  // "timed", "forced", "cache" or "cache (batch N)" (cuda::Choice::source)
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

// What one direction's algorithm search kept (or the tuning cache recalled).
struct ConvAlgorithmPick {
  int algo = 0;  // the algorithm's id (cudnnConvolution*Algo_t)
  size_t workspace = 0;
  float ms = 0;
  // The math type the kept entry was measured with (an algorithm id may appear under several);
  // without TF32 the descriptor runs it as FMA_MATH whatever this says.
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  std::vector<ConvAlgoTrial> trials;  // as cuDNN returned them, fastest first; none when recalled
  std::string source;                 // "searched", "cache" or "cache (batch N)"
  int kept = -1;                      // the kept trial's place in `trials` (-1: recalled)
};

// One direction's pick, with the layer shape and direction it was made for.
struct ConvSearch {
  std::array<int64_t, 5> shape{};  // N, C, H, W, K
  const char* direction = "";      // "forward", "backward_data" or "backward_filter"
  ConvAlgorithmPick pick;
};

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
  void* native_stream() const override { return stream_.get(); }
  nlohmann::json report(int batch) const override;  // cuda_report.cpp
  // A CUDA graph captured from the stream (cuda_graph.cpp).
  std::unique_ptr<Recording> record(const std::function<void()>& issue) override;
  // Every op of the interface (include/pneumo/backend.hpp); the checks ran before.
  PNEUMO_BACKEND_IMPLEMENTS

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
  cuda::TuningCache& tuning_cache() { return tuning_; }
  // cuBLAS's math mode on this backend's handle, as cublasGetMathMode reads it back (TF32 tensor
  // ops under allow_tf32, the default, which never uses TF32 for fp32, otherwise).
  cublasMath_t gemm_math_mode() const;

  // Our kernels' per-channel reduction split for (batch, channels) on this GPU (or as
  // options.reduction_images_per_chunk forces it); the bfloat16 tails' split, over tiles of
  // channels.
  kernels::BiasReduction reduction(int64_t batch, int64_t channels) const;
  kernels::BiasReduction tail_bf16_reduction(int64_t batch, int64_t channels) const;

 private:
  // cuDNN or our kernel per (op, shape): the tuner's types (chooser.hpp).
  using Choice = cuda::Choice;
  using Output = cuda::Output;
  // Everything cuDNN needs for one convolution shape (N, C, H, W) -> K, built on first use. Each
  // direction's algorithm is found by measuring (cudnnFind...Ex) the first time that direction
  // runs, then reused: no search and no allocation on later steps.
  struct ConvPlan {
    cuda::TensorDescriptor x, y, bias;  // (N, C, H, W), (N, K, H, W), (1, K, 1, 1)
    cuda::FilterDescriptor weight;      // (K, C, 3, 3)
    cuda::ActivationDescriptor relu;
    // One per direction: its descriptor (carrying the pick's math type) and, once that direction
    // has run, its algorithm.
    struct Direction {
      cuda::ConvolutionDescriptor conv;
      bool found = false;
      ConvAlgorithmPick pick;
    };
    Direction forward, backward_data, backward_filter;
    cudnnConvolutionFwdAlgo_t forward_algo() const {
      return static_cast<cudnnConvolutionFwdAlgo_t>(forward.pick.algo);
    }
    cudnnConvolutionBwdDataAlgo_t backward_data_algo() const {
      return static_cast<cudnnConvolutionBwdDataAlgo_t>(backward_data.pick.algo);
    }
    cudnnConvolutionBwdFilterAlgo_t backward_filter_algo() const {
      return static_cast<cudnnConvolutionBwdFilterAlgo_t>(backward_filter.pick.algo);
    }
    // cudnnConvolutionBiasActivationForward is tried once with the chosen algorithm; if cuDNN
    // refuses, this shape runs conv + our bias/ReLU kernel from then on (refusal kept for reports).
    enum class Fusion { Untried, Fused, Unfused } relu_fusion = Fusion::Untried;
    cudnnStatus_t relu_fusion_refusal = CUDNN_STATUS_SUCCESS;
    Choice single_channel;         // forward: cuDNN or conv3x3_forward_single_channel (C = 1 only)
    Choice single_channel_filter;  // weight and bias gradients: cuDNN or ours (C = 1 only)
    Choice bias_gradient;  // C > 1: cudnnConvolutionBackwardBias or kernels::bias_backward
    // Backward data and filter: the legacy pick, or the graph API's fastest engine (the
    // choice's "kernel" side); the graph plans stay empty until searched.
    Choice graph_backward_data, graph_backward_filter;
    cuda::GraphConvPlan graph_data_plan, graph_filter_plan;
    // --precision bf16: the graph-API plans on bfloat16 channels-last copies (empty until used).
    cuda::GraphConvPlan bf16_forward, bf16_backward_data, bf16_backward_filter;
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
    // Training forward and backward (without and with the ReLU gate, and the gate with dx's
    // channel sums: cuDNN pays a pass for each, our kernel does not, so each is decided on its
    // own): cuDNN or kernels/batchnorm.cu.
    Choice forward, backward, backward_relu_gate, backward_relu_gate_sums;
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
  void keep_pick(ConvPlan::Direction& direction, ConvAlgorithmPick pick, const std::string& what);
  PoolPlan& pool_plan(const Shape& x_shape);
  BatchNormPlan& batchnorm_plan(const Shape& x_shape);
  // Grows the one workspace to at least `bytes` (first use of a shape only).
  void ensure_workspace(size_t bytes);
  // The workspace for a call that needs `bytes` of it: grown first if smaller (as after a failed
  // growth that could not put the old block back), so no call gets a block smaller than it says.
  void* workspace_of(size_t bytes) {
    ensure_workspace(bytes);
    return workspace_.data();
  }
  float* tail_scratch(const kernels::BlockTailArgs& t, const kernels::BiasReduction& split);
  // Most workspace an algorithm search may use: the smaller of 1 GiB and half the free memory.
  size_t search_workspace_limit() const;
  cudnnMathType_t conv_math_type() const;
  // The graph API's engine search for one direction of a plan's shape, on the real buffers; on
  // failure the choice keeps the legacy pick and records why.
  void search_graph_engine(Choice& choice, cuda::GraphConvPlan& graph, const Shape& x_shape,
                           int64_t k, cuda::ConvDirection direction, const float* x,
                           const float* weight, const float* y);
  // dbias[c] = sum of dy (batch, channels, spatial) over batch and spatial, by our kernel (its
  // partial sums live in the workspace).
  void bias_gradient_kernel(const float* dy, float* dbias, int64_t batch, int64_t channels,
                            int64_t spatial);
  void conv_forward_cudnn(ConvPlan& plan, ConstTensorView x, ConstTensorView weight,
                          ConstTensorView bias, TensorView y, bool fuse_relu);

  // ---- --precision bf16 (cuda_conv.cpp) ----
  // Whether a convolution with `in_channels` input channels takes the bfloat16 path.
  bool runs_bf16(int64_t in_channels) const {
    return options_.bf16 && in_channels > 1;
  }
  // The bfloat16 channels-last copies of one convolution's x (or dx), y (or dy) and weight (or
  // dweight), or of one dense layer's x, dy and weight, in one device block grown on demand
  // (256-byte aligned parts).
  struct Bf16Buffers {
    uint16_t *x = nullptr, *y = nullptr, *weight = nullptr;
  };
  Bf16Buffers bf16_buffers(int64_t x_elements, int64_t y_elements, int64_t weight_elements);
  const void* dense_operand(ConstTensorView t, uint16_t* copy);  // cuda_backend.cpp
  // The graph-API plan of one direction for a shape, searched on first use on the buffers (their
  // inputs already converted); throws a clear error when no engine runs it.
  const cuda::GraphConvPlan& bf16_plan(cuda::GraphConvPlan& plan, cuda::ConvDirection direction,
                                       const Shape& x_shape, int64_t k, const Bf16Buffers& b);
  void conv_forward_bf16(ConvPlan& plan, ConstTensorView x, ConstTensorView weight,
                         ConstTensorView bias, TensorView y, bool fuse_relu);
  void conv_backward_data_bf16(ConvPlan& plan, ConstTensorView dy, ConstTensorView weight,
                               TensorView dx);
  void conv_backward_filter_bf16(ConvPlan& plan, ConstTensorView x, ConstTensorView dy,
                                 TensorView dweight);
  // Both gradients (conv2d_backward) from one bfloat16 copy of dy, and x's copy from the forward
  // when there is one (`kept`, from take_kept_input; nullptr converts x).
  void conv_backward_bf16(ConvPlan& plan, ConstTensorView x, ConstTensorView dy,
                          ConstTensorView weight, TensorView dx, TensorView dweight,
                          uint16_t* kept);
  // The bfloat16 copy of x the last forward with this weight made, when that forward read this x
  // (same address and shape; the contract of conv2d_backward: x unchanged since) and no
  // conv2d_backward with this weight has run since; else nullptr. Either way the entry is marked
  // used, so it answers nullptr until the next forward: every conv2d_backward calls this once.
  uint16_t* take_kept_input(ConstTensorView x, ConstTensorView weight);
  // The copy a bfloat16 forward with this weight converts x into (grown on demand, kept for the
  // backward that follows).
  uint16_t* keep_input(ConstTensorView x, ConstTensorView weight);
  // The two backward directions from copies already in `b`: dweight from b.x and b.y (the result
  // passes through b.weight), dx from b.y and the weight (converted into b.weight here; the result
  // passes through b.x, so x's copy is spent).
  void filter_from_bf16(ConvPlan& plan, const Shape& x_shape, const Bf16Buffers& b,
                        TensorView dweight);
  void data_from_bf16(ConvPlan& plan, ConstTensorView weight, const Bf16Buffers& b, TensorView dx);
  // dbias of a convolution with more than one input channel: cuDNN's or our kernel, by the
  // Chooser (plan.bias_gradient).
  void conv_bias_gradient(ConvPlan& plan, ConstTensorView dy, TensorView dbias);
  void cudnn_bias_gradient(ConvPlan& plan, ConstTensorView dy, TensorView dbias);

  CudaBackendOptions options_;
  int device_ = 0;
  int sm_count_ = 1;
  std::string name_;
  // Declaration order is destruction order reversed: plans and workspace go first, the stream
  // last (the library handles are bound to it).
  cuda::Stream stream_;
  cuda::TuningCache tuning_;  // decisions remembered across runs (before the chooser using it)
  cuda::Chooser chooser_;     // cuDNN or our kernel, per (op, shape)
  cuda::CudnnHandle cudnn_;
  Array<uint8_t> cublas_workspace_;  // cuBLAS's, set once (before the handle: freed after it)
  cuda::CublasHandle cublas_;
  Array<uint8_t> workspace_;
  Array<uint8_t> bf16_scratch_;  // Bf16Buffers (--precision bf16 only)
  // --precision bf16: each convolution's forward input as its bfloat16 channels-last copy, by the
  // address of the layer's weight, for the weight gradient of the backward that follows.
  struct KeptInput {
    Array<uint16_t> copy;
    const float* x = nullptr;  // what the copy was made from; nullptr once a backward ran
    Shape shape;
  };
  std::map<const float*, KeptInput> kept_inputs_;
  // Counts the reallocations of workspace_, bf16_scratch_ and the kept inputs: a recording made
  // before one holds freed memory (Recording::current).
  uint64_t memory_generation_ = 0;
  std::map<ConvKey, ConvPlan> conv_plans_;
  std::map<ShapeKey, PoolPlan> pool_plans_;
  std::map<ShapeKey, BatchNormPlan> batchnorm_plans_;
};

}  // namespace pneumo
