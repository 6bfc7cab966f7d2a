// CudaBackend: construction, and every op but convolution (cuda_conv.cpp): batch-norm and max
// pooling through cuDNN descriptors, dense layers through cuBLAS, the rest through our kernels.
// Every op checks that its tensors live on the device (no silent CPU fallback) and opens an NVTX
// range named after the op.
#include "cuda/cuda_backend.hpp"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <iostream>
#include <sstream>

#include "core/nvtx.hpp"
#include "elementwise.hpp"
#include "kernels.hpp"
#include "pneumo/op_geometry.hpp"

namespace pneumo {

namespace {

constexpr float kOne = 1.0f;
constexpr float kZero = 0.0f;

void require_device(const ConstTensorView& t, const char* op, const char* what) {
  PNEUMO_CHECK(t.device == Device::Cuda, op, ": ", what, " ", t.shape.str(), " is in ",
               to_string(t.device), " memory; the CUDA backend takes device tensors only");
  PNEUMO_CHECK(t.data != nullptr || t.numel() == 0, op, ": ", what, " ", t.shape.str(),
               " has no data");
}

// Raw pointers (images, indices, values) must be device memory too: a host pointer would fault
// inside the kernel with a far less helpful message.
void require_device_pointer(const void* ptr, const char* op, const char* what) {
  PNEUMO_CHECK(ptr != nullptr, op, ": ", what, " is null");
  cudaPointerAttributes attributes{};
  PNEUMO_CUDA_CHECK(cudaPointerGetAttributes(&attributes, ptr), op, ": ", what);
  PNEUMO_CHECK(attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged,
               op, ": ", what, " is not device memory; the CUDA backend takes device pointers");
}

struct Named {
  ConstTensorView view;
  const char* name;
};

void require_device(std::initializer_list<Named> tensors, const char* op) {
  for (const Named& t : tensors) require_device(t.view, op, t.name);
}

void require_same_shape(const ConstTensorView& a, const ConstTensorView& b, const char* op,
                        const char* a_name, const char* b_name) {
  PNEUMO_CHECK(a.shape == b.shape, op, ": ", a_name, " ", a.shape.str(), " and ", b_name, " ",
               b.shape.str(), " must have the same shape");
}

void require_numel(const ConstTensorView& t, int64_t numel, const char* op, const char* what) {
  PNEUMO_CHECK(t.numel() == numel, op, ": ", what, " ", t.shape.str(), " must have ", numel,
               " elements");
}

void require_numel(std::initializer_list<Named> tensors, int64_t numel, const char* op) {
  for (const Named& t : tensors) require_numel(t.view, numel, op, t.name);
}

// Batch-norm and pooling take (N, C, H, W) (the entry checks have made sure).
std::array<int64_t, 4> nchw(const Shape& shape, const char* op) {
  PNEUMO_CHECK(shape.rank() == 4, op, ": expected an (N, C, H, W) tensor, got ", shape.str());
  return {shape[0], shape[1], shape[2], shape[3]};
}

// What the tuning cache's decisions hold for: the GPU, its driver, cuDNN, the precision and the
// determinism rule, and this build of pneumo's kernels (PNEUMO_KERNELS_HASH, from CMakeLists.txt:
// their sources and src/cuda's, nvcc's version, the architectures and flags they were compiled
// for).
const char* precision_name(const CudaBackendOptions& options) {
  return options.bf16 ? "bf16" : options.allow_tf32 ? "tf32" : "fp32";
}

std::string tuning_context(int device, const char* precision, bool deterministic) {
  cudaDeviceProp props{};
  PNEUMO_CUDA_CHECK(cudaGetDeviceProperties(&props, device), "device ", device);
  int driver = 0;
  PNEUMO_CUDA_CHECK(cudaDriverGetVersion(&driver), "CUDA driver version");
  return detail::concat(props.name, ", sm_", props.major, props.minor, ", driver ", driver,
                        ", cuDNN ", cudnnGetVersion(), ", ", precision,
                        deterministic ? ", deterministic" : ", fastest",
                        ", pneumo ", PNEUMO_VERSION, " kernels ", PNEUMO_KERNELS_HASH);
}

std::string device_description(int device, const char* precision, bool deterministic) {
  cudaDeviceProp props{};
  PNEUMO_CUDA_CHECK(cudaGetDeviceProperties(&props, device), "device ", device);
  const size_t cudnn_version = cudnnGetVersion();
  std::ostringstream out;
  out << "cuda (" << props.name << ", sm_" << props.major << props.minor << ", cuDNN "
      << cudnn_version / 10000 << "." << (cudnn_version / 100) % 100 << "." << cudnn_version % 100
      << ", " << precision
      << (deterministic ? "" : ", fastest convolution algorithms") << ")";
  return out.str();
}

}  // namespace

// ---- Construction -------------------------------------------------------------------------------

CudaBackend::CudaBackend(CudaBackendOptions options) : options_(options) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    cudaGetLastError();
    throw Error(std::string("CUDA backend: no usable CUDA device (cudaGetDeviceCount: ") +
                (status == cudaSuccess ? "0 devices" : cudaGetErrorString(status)) +
                "); run with --device cpu, or --device auto to fall back to the CPU");
  }
  PNEUMO_CUDA_CHECK(cudaGetDevice(&device_), "CUDA backend");
  PNEUMO_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, device_),
                    "CUDA backend: SM count");
  // The cuDNN sub-libraries load lazily; check them now so a broken install fails here, clearly.
  PNEUMO_CUDNN_CHECK(cudnnOpsVersionCheck(), "cuDNN ops library (libcudnn_ops) ");
  PNEUMO_CUDNN_CHECK(cudnnCnnVersionCheck(), "cuDNN cnn library (libcudnn_cnn) ");
  PNEUMO_CHECK(!(options_.allow_tf32 && options_.bf16),
               "CUDA backend: choose one precision, tf32 or bf16");
  PNEUMO_CHECK(options_.reduction_images_per_chunk >= 0 &&
                   (options_.reduction_images_per_chunk == 0 || options_.tuning_cache.empty()),
               "CUDA backend: reduction_images_per_chunk (for tests) must be 0 or positive, and "
               "without a tuning cache: its timed decisions would not be this split's");
  name_ = device_description(device_, precision_name(options_), options_.deterministic);

  stream_ = cuda::Stream::create();
  tuning_ = cuda::TuningCache(options_.tuning_cache,
                              tuning_context(device_, precision_name(options_),
                                             options_.deterministic));
  chooser_ = cuda::Chooser(stream_.get(), &tuning_);
  cudnn_ = cuda::CudnnHandle::create();
  PNEUMO_CUDNN_CHECK(cudnnSetStream(cudnn_.get(), stream_.get()), "binding cuDNN to the stream");
  cublas_ = cuda::CublasHandle::create();
  PNEUMO_CUBLAS_CHECK(cublasSetStream(cublas_.get(), stream_.get()),
                      "binding cuBLAS to the stream");
  // A workspace of our own (after cublasSetStream, which resets it): without one, a GEMM issued
  // while a step is recorded as a CUDA graph allocates its workspace inside the recording. Sizes
  // as cuBLAS's documentation recommends: 32 MiB on Hopper and newer, 4 MiB before.
  int major = 0;
  PNEUMO_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device_),
                    "CUDA backend: compute capability");
  cublas_workspace_ = Array<uint8_t>(int64_t{major >= 9 ? 32 : 4} << 20, Device::Cuda);
  PNEUMO_CUBLAS_CHECK(cublasSetWorkspace(cublas_.get(), cublas_workspace_.data(),
                                         cublas_workspace_.bytes()),
                      "giving cuBLAS its workspace");
  // CUBLAS_DEFAULT_MATH never uses TF32 for fp32 GEMMs (unless NVIDIA_TF32_OVERRIDE says so).
  PNEUMO_CUBLAS_CHECK(
      cublasSetMathMode(cublas_.get(),
                        options_.allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH),
      options_.allow_tf32 ? "tf32" : "fp32");
}

CudaBackend::~CudaBackend() {
  // Let queued work finish before its descriptors and workspace go away; errors cannot be
  // reported from a destructor (save() warns rather than throws).
  if (stream_) cudaStreamSynchronize(stream_.get());
  tuning_.save();
}

// The host waits here anyway (an epoch's end, a pass's results): the moment to write decisions
// made since the last time, so that a run killed later keeps them.
void CudaBackend::synchronize() {
  PNEUMO_NVTX_RANGE("synchronize");
  PNEUMO_CUDA_CHECK(cudaStreamSynchronize(stream_.get()), "CudaBackend::synchronize");
  tuning_.save();
}

cublasMath_t CudaBackend::gemm_math_mode() const {
  cublasMath_t mode = CUBLAS_DEFAULT_MATH;
  PNEUMO_CUBLAS_CHECK(cublasGetMathMode(cublas_.get(), &mode), "reading cuBLAS's math mode");
  return mode;
}

cudnnMathType_t CudaBackend::conv_math_type() const {
  // CUDNN_DEFAULT_MATH would allow TF32 for fp32 data on Ampere and newer; FMA_MATH forbids it.
  return options_.allow_tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
}

void CudaBackend::ensure_workspace(size_t bytes) {
  if (bytes <= workspace_.bytes()) return;
  // Free the old block before allocating the new one (no peak of both); queued work that may
  // still read it must finish first.
  PNEUMO_CUDA_CHECK(cudaStreamSynchronize(stream_.get()), "growing the workspace to ", bytes,
                    " bytes");
  const size_t old_bytes = workspace_.bytes();
  workspace_ = Array<uint8_t>();
  ++memory_generation_;  // recordings holding the old block are stale
  try {
    workspace_ = Array<uint8_t>(static_cast<int64_t>(bytes), Device::Cuda);
  } catch (const OutOfMemory&) {
    // The plans chosen so far were sized for the old block: put one of that size back (it fit a
    // moment ago) before the caller hears of the failure; a caller may try a smaller request. If
    // even that fails the workspace stays empty, and each call grows it again (workspace_of).
    try {
      if (old_bytes > 0) workspace_ = Array<uint8_t>(static_cast<int64_t>(old_bytes), Device::Cuda);
    } catch (const OutOfMemory&) {
    }
    throw;
  }
}

size_t CudaBackend::search_workspace_limit() const {
  size_t free_bytes = 0, total_bytes = 0;
  PNEUMO_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes), "sizing the search workspace");
  constexpr size_t kGiB = size_t{1} << 30;
  return std::max(workspace_.bytes(), std::min(kGiB, free_bytes / 2));
}

kernels::BiasReduction CudaBackend::reduction(int64_t batch, int64_t channels) const {
  if (options_.reduction_images_per_chunk > 0)
    return kernels::reduction_of_chunk_size(batch, channels, options_.reduction_images_per_chunk);
  return kernels::bias_reduction(batch, channels, sm_count_);
}

kernels::BiasReduction CudaBackend::tail_bf16_reduction(int64_t batch, int64_t channels) const {
  // partial_floats is channels x chunks either way.
  if (options_.reduction_images_per_chunk > 0)
    return kernels::reduction_of_chunk_size(batch, channels, options_.reduction_images_per_chunk);
  return kernels::tail_bf16_reduction(batch, channels, sm_count_);
}

void CudaBackend::bias_gradient_kernel(const float* dy, float* dbias, int64_t batch,
                                       int64_t channels, int64_t spatial) {
  const kernels::BiasReduction split = reduction(batch, channels);
  ensure_workspace(static_cast<size_t>(split.partial_floats) * sizeof(float));
  kernels::bias_backward(dy, dbias, reinterpret_cast<float*>(workspace_.data()), split, batch,
                         channels, spatial, stream_.get());
}

std::vector<ImplementationChoice> CudaBackend::implementation_choices() const {
  std::vector<ImplementationChoice> choices;
  auto add = [&](const char* op, const ShapeKey& input, const Choice& c) {
    if (c.decided)
      choices.push_back({op, input, c.kernel, c.cudnn_ms, c.kernel_ms, c.rejected, c.source});
  };
  for (const auto& [key, plan] : pool_plans_) {
    add("maxpool2d_forward", key, plan.forward);
    add("maxpool2d_backward", key, plan.backward);
  }
  for (const auto& [key, plan] : batchnorm_plans_) {
    add("batchnorm_forward_training", key, plan.forward);
    add("batchnorm_backward", key, plan.backward);
    add("batchnorm_backward (ReLU gate)", key, plan.backward_relu_gate);
    add("batchnorm_backward (ReLU gate, dx sums)", key, plan.backward_relu_gate_sums);
  }
  for (const auto& [key, plan] : conv_plans_) {
    add("conv2d_forward", {key[0], key[1], key[2], key[3]}, plan.single_channel);
    add("conv2d_backward_filter", {key[0], key[1], key[2], key[3]}, plan.single_channel_filter);
    add("conv2d_backward_data (graph API)", {key[0], key[1], key[2], key[3]},
        plan.graph_backward_data);
    add("conv2d_backward_filter (graph API)", {key[0], key[1], key[2], key[3]},
        plan.graph_backward_filter);
    add("conv2d_bias_gradient", {key[0], key[4], key[2], key[3]}, plan.bias_gradient);
  }
  return choices;
}

// ---- ReLU ---------------------------------------------------------------------------------------

void CudaBackend::relu_forward_impl(ConstTensorView x, TensorView y) {
  PNEUMO_NVTX_RANGE("relu_forward");
  kernels::relu_forward(x.data, y.data, x.numel(), stream_.get());
}

void CudaBackend::relu_backward_impl(ConstTensorView y, ConstTensorView dy, TensorView dx) {
  PNEUMO_NVTX_RANGE("relu_backward");
  kernels::relu_backward(y.data, dy.data, dx.data, y.numel(), stream_.get());
}

// ---- Max pooling --------------------------------------------------------------------------------

CudaBackend::PoolPlan& CudaBackend::pool_plan(const Shape& x_shape) {
  const ShapeKey key = nchw(x_shape, "maxpool2d");
  auto found = pool_plans_.find(key);
  if (found != pool_plans_.end()) return found->second;
  const auto [n, c, h, w] = key;
  const PoolGeometry g = pool_geometry(x_shape);
  PoolPlan plan{cuda::make_tensor_descriptor(n, c, h, w),
                cuda::make_tensor_descriptor(n, c, g.out_height(), g.out_width()),
                cuda::make_maxpool2x2_same_descriptor(h, w),
                Choice({"maxpool2d_forward", {n, c, h, w}}),
                Choice({"maxpool2d_backward", {n, c, h, w}})};
  // Guard the padding convention: cuDNN must produce ceil(H/2) x ceil(W/2).
  int out_n = 0, out_c = 0, out_h = 0, out_w = 0;
  PNEUMO_CUDNN_CHECK(cudnnGetPooling2dForwardOutputDim(plan.pool.get(), plan.x.get(), &out_n,
                                                       &out_c, &out_h, &out_w),
                     "maxpool2d x=", x_shape.str());
  PNEUMO_CHECK(out_h == g.out_height() && out_w == g.out_width(), "cuDNN pools ", x_shape.str(),
               " to ", out_h, "x", out_w, ", expected ceil(H/2) x ceil(W/2)");
  return pool_plans_.emplace(key, std::move(plan)).first->second;
}

void CudaBackend::maxpool2d_forward_impl(ConstTensorView x, TensorView y) {
  PNEUMO_NVTX_RANGE("maxpool2d_forward");
  const auto [n, c, h, w] = nchw(x.shape, "maxpool2d_forward");
  if (x.numel() == 0) return;
  const int64_t planes = n * c, height = h, width = w;  // lambdas cannot capture bindings
  PoolPlan& plan = pool_plan(x.shape);
  chooser_.run(
      plan.forward, options_.pooling,
      [&] {
        PNEUMO_CUDNN_CHECK(cudnnPoolingForward(cudnn_.get(), plan.pool.get(), &kOne, plan.x.get(),
                                               x.data, &kZero, plan.y.get(), y.data),
                           "maxpool2d_forward x=", x.shape.str(), " y=", y.shape.str());
      },
      [&] { kernels::maxpool2d_forward(x.data, y.data, planes, height, width, stream_.get()); },
      {{y.data, y.numel(), "y"}});
}

void CudaBackend::global_avgpool_forward_impl(ConstTensorView x, TensorView y) {
  PNEUMO_NVTX_RANGE("global_avgpool_forward");
  const auto [n, c, h, w] = nchw(x.shape, "global_avgpool_forward");
  kernels::global_avgpool_forward(x.data, y.data, n * c, h * w, stream_.get());
}

void CudaBackend::global_avgpool_backward_impl(ConstTensorView dy, TensorView dx) {
  PNEUMO_NVTX_RANGE("global_avgpool_backward");
  const auto [n, c, h, w] = nchw(dx.shape, "global_avgpool_backward");
  kernels::global_avgpool_backward(dy.data, dx.data, n * c, h * w, stream_.get());
}

void CudaBackend::maxpool2d_backward_impl(ConstTensorView x, ConstTensorView y, ConstTensorView dy,
                                          TensorView dx) {
  PNEUMO_NVTX_RANGE("maxpool2d_backward");
  const auto [n, c, h, w] = nchw(x.shape, "maxpool2d_backward");
  if (x.numel() == 0) return;
  const int64_t planes = n * c, height = h, width = w;  // lambdas cannot capture bindings
  // Both recompute each window's argmax (cuDNN from x and y, ours from x) and route dy to one
  // element per window (windows do not overlap at stride 2). Which element cuDNN gives a tie is
  // not documented: the tests MaxPoolTies.* check both against the interface's rule (first in
  // row-major order).
  PoolPlan& plan = pool_plan(x.shape);
  chooser_.run(
      plan.backward, options_.pooling,
      [&] {
        PNEUMO_CUDNN_CHECK(cudnnPoolingBackward(cudnn_.get(), plan.pool.get(), &kOne, plan.y.get(),
                                                y.data, plan.y.get(), dy.data, plan.x.get(), x.data,
                                                &kZero, plan.x.get(), dx.data),
                           "maxpool2d_backward x=", x.shape.str(), " dy=", dy.shape.str());
      },
      [&] {
        kernels::maxpool2d_backward(x.data, dy.data, dx.data, planes, height, width, stream_.get());
      },
      {{dx.data, dx.numel(), "dx"}});
}

// ---- Batch normalisation ------------------------------------------------------------------------

CudaBackend::BatchNormPlan& CudaBackend::batchnorm_plan(const Shape& x_shape) {
  const ShapeKey key = nchw(x_shape, "batchnorm");
  auto found = batchnorm_plans_.find(key);
  if (found != batchnorm_plans_.end()) return found->second;
  const std::vector<int64_t> dims(key.begin(), key.end());
  BatchNormPlan plan{cuda::make_tensor_descriptor(key[0], key[1], key[2], key[3]),
                     cuda::TensorDescriptor::create(),
                     Choice({"batchnorm_forward_training", dims}),
                     Choice({"batchnorm_backward", dims}),
                     Choice({"batchnorm_backward_relu_gate", dims}),
                     Choice({"batchnorm_backward_relu_gate_sums", dims})};
  PNEUMO_CUDNN_CHECK(
      cudnnDeriveBNTensorDescriptor(plan.stats.get(), plan.x.get(), CUDNN_BATCHNORM_SPATIAL),
      "batchnorm x=", x_shape.str());
  return batchnorm_plans_.emplace(key, std::move(plan)).first->second;
}

void CudaBackend::batchnorm_forward_training_impl(ConstTensorView x, ConstTensorView gamma,
                                                  ConstTensorView beta, TensorView running_mean,
                                                  TensorView running_var, double average_factor,
                                                  double epsilon, TensorView y,
                                                  TensorView saved_mean, TensorView saved_inv_std) {
  PNEUMO_NVTX_RANGE("batchnorm_forward_training");
  constexpr const char* op = "batchnorm_forward_training";
  const auto [n, c, h, w] = nchw(x.shape, op);
  BatchNormPlan& plan = batchnorm_plan(x.shape);
  const int64_t spatial = h * w;  // plain copies: lambdas cannot capture structured bindings
  const int64_t batch = n, channels = c;
  const kernels::BiasReduction split = reduction(batch, channels);
  ensure_workspace(
      static_cast<size_t>(kernels::batchnorm_scratch_floats(split, channels) + 2 * channels) *
      sizeof(float));
  float* scratch = reinterpret_cast<float*>(workspace_.data());
  // running = (1 - factor) running + factor batch, with the unbiased batch variance; saved
  // statistics are the batch mean and 1 / sqrt(biased variance + epsilon). Trial runs (the
  // tuner timing both candidates) update copies of the running averages, kept after the kernels'
  // scratch, so the model's are updated once, by the kept candidate.
  float* const trial_mean = scratch + kernels::batchnorm_scratch_floats(split, channels);
  float* const trial_var = trial_mean + channels;
  if (!plan.forward.decided) {
    const size_t bytes = static_cast<size_t>(channels) * sizeof(float);
    PNEUMO_CUDA_CHECK(cudaMemcpyAsync(trial_mean, running_mean.data, bytes,
                                      cudaMemcpyDeviceToDevice, stream_.get()),
                      op, ": copying running_mean for timing");
    PNEUMO_CUDA_CHECK(cudaMemcpyAsync(trial_var, running_var.data, bytes, cudaMemcpyDeviceToDevice,
                                      stream_.get()),
                      op, ": copying running_var for timing");
  }
  auto mean_for = [&](cuda::Run run) {
    return run == cuda::Run::Kept ? running_mean.data : trial_mean;
  };
  auto var_for = [&](cuda::Run run) {
    return run == cuda::Run::Kept ? running_var.data : trial_var;
  };
  const cuda::Candidate cudnn = [&](cuda::Run run) {
    PNEUMO_CUDNN_CHECK(
        cudnnBatchNormalizationForwardTraining(
            cudnn_.get(), CUDNN_BATCHNORM_SPATIAL, &kOne, &kZero, plan.x.get(), x.data,
            plan.x.get(), y.data, plan.stats.get(), gamma.data, beta.data, average_factor,
            mean_for(run), var_for(run), epsilon, saved_mean.data, saved_inv_std.data),
        op, " x=", x.shape.str(), " factor=", average_factor, " epsilon=", epsilon);
  };
  const cuda::Candidate kernel = [&](cuda::Run run) {
    kernels::batchnorm_forward_training(x.data, gamma.data, beta.data, mean_for(run), var_for(run),
                                        average_factor, epsilon, y.data, saved_mean.data,
                                        saved_inv_std.data, scratch, split, batch, channels,
                                        spatial, stream_.get());
  };
  chooser_.run(plan.forward, options_.batchnorm, cudnn, kernel,
               {{y.data, y.numel(), "y"},
                {saved_mean.data, channels, "saved_mean"},
                {saved_inv_std.data, channels, "saved_inv_std"}});
}

void CudaBackend::batchnorm_forward_inference_impl(ConstTensorView x, ConstTensorView gamma,
                                                   ConstTensorView beta,
                                                   ConstTensorView running_mean,
                                                   ConstTensorView running_var, double epsilon,
                                                   TensorView y) {
  PNEUMO_NVTX_RANGE("batchnorm_forward_inference");
  constexpr const char* op = "batchnorm_forward_inference";
  if (x.numel() == 0) return;  // nothing to write; cuDNN refuses a descriptor with N = 0
  BatchNormPlan& plan = batchnorm_plan(x.shape);
  PNEUMO_CUDNN_CHECK(cudnnBatchNormalizationForwardInference(
                         cudnn_.get(), CUDNN_BATCHNORM_SPATIAL, &kOne, &kZero, plan.x.get(), x.data,
                         plan.x.get(), y.data, plan.stats.get(), gamma.data, beta.data,
                         running_mean.data, running_var.data, epsilon),
                     op, " x=", x.shape.str(), " epsilon=", epsilon);
}

void CudaBackend::batchnorm_backward_impl(ConstTensorView x, ConstTensorView dy,
                                          ConstTensorView gamma, ConstTensorView saved_mean,
                                          ConstTensorView saved_inv_std, double epsilon,
                                          TensorView dx, TensorView dgamma, TensorView dbeta,
                                          bool relu_gate, float gate_dropout_rate,
                                          TensorView dx_sums) {
  PNEUMO_NVTX_RANGE("batchnorm_backward");
  constexpr const char* op = "batchnorm_backward";
  const float kept = dropout_multiplier_from_keep(true, gate_dropout_rate);
  const bool sums = dx_sums.shape.rank() != 0;
  if (x.numel() == 0) {  // the gradients of nothing are zero, as on the CPU; cuDNN refuses N = 0
    kernels::zero_floats(dgamma.data, dgamma.numel(), stream_.get());
    kernels::zero_floats(dbeta.data, dbeta.numel(), stream_.get());
    if (sums) kernels::zero_floats(dx_sums.data, dx_sums.numel(), stream_.get());
    return;
  }
  BatchNormPlan& plan = batchnorm_plan(x.shape);
  const std::array<int64_t, 4> dims = nchw(x.shape, op);
  const int64_t batch = dims[0], c = dims[1], spatial = dims[2] * dims[3];
  const kernels::BiasReduction split = reduction(batch, c);
  ensure_workspace(static_cast<size_t>(kernels::batchnorm_scratch_floats(split, c) +
                                       (sums ? kernels::batchnorm_dx_sums_floats(batch, c, spatial)
                                             : 0)) *
                   sizeof(float));
  Choice& choice = sums ? plan.backward_relu_gate_sums
                        : (relu_gate ? plan.backward_relu_gate : plan.backward);
  std::vector<cuda::Output> outputs{
      {dx.data, dx.numel(), "dx"}, {dgamma.data, c, "dgamma"}, {dbeta.data, c, "dbeta"}};
  if (sums) outputs.push_back({dx_sums.data, c, "dx_sums"});
  chooser_.run(
      choice, options_.batchnorm,
      [&] {
        // alpha/beta pairs (1, 0): dx, dgamma and dbeta are overwritten, not accumulated.
        PNEUMO_CUDNN_CHECK(
            cudnnBatchNormalizationBackward(
                cudnn_.get(), CUDNN_BATCHNORM_SPATIAL, &kOne, &kZero, &kOne, &kZero, plan.x.get(),
                x.data, plan.x.get(), dy.data, plan.x.get(), dx.data, plan.stats.get(), gamma.data,
                dgamma.data, dbeta.data, epsilon, saved_mean.data, saved_inv_std.data),
            op, " x=", x.shape.str(), " epsilon=", epsilon);
        // cuDNN's legacy backward has no ReLU gate: our ReLU backward (and the dropout's kept
        // multiplier), in place, one more pass; and the sums, another.
        if (relu_gate)
          kernels::relu_backward(x.data, dx.data, dx.data, dx.numel(), stream_.get(), kept);
        if (sums) bias_gradient_kernel(dx.data, dx_sums.data, batch, c, spatial);
      },
      [&] {
        kernels::batchnorm_backward(x.data, dy.data, gamma.data, saved_mean.data,
                                    saved_inv_std.data, dx.data, dgamma.data, dbeta.data,
                                    reinterpret_cast<float*>(workspace_.data()), split, batch, c,
                                    spatial, stream_.get(), relu_gate, kept,
                                    sums ? dx_sums.data : nullptr);
      },
      outputs);
}

// Our kernel only: cuDNN's legacy API has no backward from sums given.
void CudaBackend::batchnorm_backward_input_impl(ConstTensorView x, ConstTensorView dy,
                                                ConstTensorView gamma, ConstTensorView saved_mean,
                                                ConstTensorView saved_inv_std,
                                                ConstTensorView sums, double count,
                                                TensorView dx) {
  PNEUMO_NVTX_RANGE("batchnorm_backward_input");
  const std::array<int64_t, 4> dims = nchw(x.shape, "batchnorm_backward_input");
  ensure_workspace(static_cast<size_t>(3 * dims[1]) * sizeof(float));
  kernels::batchnorm_backward_input(x.data, dy.data, gamma.data, saved_mean.data,
                                    saved_inv_std.data, sums.data, count, dx.data,
                                    reinterpret_cast<float*>(workspace_.data()), dims[0], dims[1],
                                    dims[2] * dims[3], stream_.get());
}

// ---- Dropout ------------------------------------------------------------------------------------

// ---- The fused block tail (kernels/batchnorm.cu) ------------------------------------------------
// No cuDNN twin and no per-op choice: whether a model runs its blocks' tails fused or as the
// unfused chain is the model's (ModelConfig::fused_block_tails, `--fused-block-tails`), timed
// against each other by `pneumo bench train` and `bench kernels`.

namespace {
kernels::BlockTailArgs tail_args(ConstTensorView a, ConstTensorView gamma, ConstTensorView beta,
                                 float* running_mean, float* running_var, const float* saved_mean,
                                 const float* saved_inv_std, const BlockTailSettings& s) {
  kernels::BlockTailArgs t{};
  t.a = a.data;
  t.gamma = gamma.data;
  t.beta = beta.data;
  t.running_mean = running_mean;
  t.running_var = running_var;
  // The backward only reads them; the struct serves both directions.
  t.saved_mean = const_cast<float*>(saved_mean);
  t.saved_inv_std = const_cast<float*>(saved_inv_std);
  t.training = s.training;
  t.rate = s.dropout_rate;
  t.key = s.dropout_key;
  t.factor = s.average_factor;
  t.epsilon = s.epsilon;
  t.batch = a.shape.n();
  t.channels = a.shape.c();
  t.height = a.shape.h();
  t.width = a.shape.w();
  return t;
}

// The stem's: the tail's arguments, with the image and the convolution instead of a.
kernels::BlockTailArgs stem_args(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                                 ConstTensorView gamma, ConstTensorView beta, float* running_mean,
                                 float* running_var, const float* saved_mean,
                                 const float* saved_inv_std, const BlockTailSettings& s) {
  kernels::BlockTailArgs t =
      tail_args(x, gamma, beta, running_mean, running_var, saved_mean, saved_inv_std, s);
  t.a = nullptr;
  t.x = x.data;
  t.weight = weight.data;
  t.conv_bias = bias.data;
  t.channels = weight.shape[0];
  return t;
}

// The bfloat16 tail's: the tail's arguments with z and the convolution's bias instead of a.
kernels::BlockTailArgs bf16_tail_args(ConstBf16NhwcView z, ConstTensorView bias,
                                      ConstTensorView gamma, ConstTensorView beta,
                                      float* running_mean, float* running_var,
                                      const float* saved_mean, const float* saved_inv_std,
                                      const BlockTailSettings& s) {
  kernels::BlockTailArgs t = tail_args(ConstTensorView{nullptr, z.shape, z.device}, gamma, beta,
                                       running_mean, running_var, saved_mean, saved_inv_std, s);
  t.z = z.data;
  t.conv_bias = bias.data;
  return t;
}
}  // namespace

// The scratch every tail and stem launch takes (batch-norm's sums, the stem's weight sums, the
// dropout mask's words).
float* CudaBackend::tail_scratch(const kernels::BlockTailArgs& t,
                                 const kernels::BiasReduction& split) {
  ensure_workspace(static_cast<size_t>(kernels::tail_scratch_floats(t, split)) * sizeof(float));
  return reinterpret_cast<float*>(workspace_.data());
}

void CudaBackend::block_tail_forward_impl(ConstTensorView a, ConstTensorView gamma,
                                          ConstTensorView beta, TensorView running_mean,
                                          TensorView running_var, const BlockTailSettings& s,
                                          TensorView y, TensorView saved_mean,
                                          TensorView saved_inv_std) {
  PNEUMO_NVTX_RANGE("block_tail_forward");
  const kernels::BlockTailArgs t = tail_args(a, gamma, beta, running_mean.data, running_var.data,
                                             saved_mean.data, saved_inv_std.data, s);
  const kernels::BiasReduction split = reduction(t.batch, t.channels);
  kernels::block_tail_forward(t, y.data, tail_scratch(t, split), split, stream_.get());
}

void CudaBackend::block_tail_backward_impl(ConstTensorView a, ConstTensorView dy,
                                           ConstTensorView gamma, ConstTensorView beta,
                                           ConstTensorView saved_mean,
                                           ConstTensorView saved_inv_std,
                                           const BlockTailSettings& s, TensorView da,
                                           TensorView dgamma, TensorView dbeta) {
  PNEUMO_NVTX_RANGE("block_tail_backward");
  const kernels::BlockTailArgs t =
      tail_args(a, gamma, beta, nullptr, nullptr, saved_mean.data, saved_inv_std.data, s);
  const kernels::BiasReduction split = reduction(t.batch, t.channels);
  kernels::block_tail_backward(t, dy.data, da.data, dgamma.data, dbeta.data,
                               tail_scratch(t, split), split, stream_.get());
}

void CudaBackend::block_tail_forward_bf16_impl(ConstBf16NhwcView z, ConstTensorView bias,
                                               ConstTensorView gamma, ConstTensorView beta,
                                               TensorView running_mean, TensorView running_var,
                                               const BlockTailSettings& s, Bf16NhwcView y,
                                               TensorView saved_mean, TensorView saved_inv_std) {
  PNEUMO_NVTX_RANGE("block_tail_forward_bf16");
  const kernels::BlockTailArgs t =
      bf16_tail_args(z, bias, gamma, beta, running_mean.data, running_var.data, saved_mean.data,
                     saved_inv_std.data, s);
  const kernels::BiasReduction split = tail_bf16_reduction(t.batch, t.channels);
  kernels::block_tail_forward_bf16(t, y.data, tail_scratch(t, split), split, stream_.get());
}

void CudaBackend::block_tail_backward_bf16_impl(ConstBf16NhwcView z, ConstTensorView bias,
                                                ConstBf16NhwcView dy, ConstTensorView gamma,
                                                ConstTensorView beta, ConstTensorView saved_mean,
                                                ConstTensorView saved_inv_std,
                                                const BlockTailSettings& s, Bf16NhwcView dz,
                                                TensorView dbias, TensorView dgamma,
                                                TensorView dbeta) {
  PNEUMO_NVTX_RANGE("block_tail_backward_bf16");
  const kernels::BlockTailArgs t = bf16_tail_args(z, bias, gamma, beta, nullptr, nullptr,
                                                  saved_mean.data, saved_inv_std.data, s);
  const kernels::BiasReduction split = tail_bf16_reduction(t.batch, t.channels);
  kernels::block_tail_backward_bf16(t, dy.data, dz.data, dbias.data, dgamma.data, dbeta.data,
                                    tail_scratch(t, split), split, stream_.get());
}

void CudaBackend::stem_forward_impl(ConstTensorView x, ConstTensorView weight,
                                    ConstTensorView bias, ConstTensorView gamma,
                                    ConstTensorView beta, TensorView running_mean,
                                    TensorView running_var, const BlockTailSettings& s,
                                    TensorView y, TensorView saved_mean,
                                    TensorView saved_inv_std) {
  PNEUMO_NVTX_RANGE("stem_forward");
  const kernels::BlockTailArgs t =
      stem_args(x, weight, bias, gamma, beta, running_mean.data, running_var.data,
                saved_mean.data, saved_inv_std.data, s);
  const kernels::BiasReduction split = reduction(t.batch, t.channels);
  kernels::stem_forward(t, y.data, tail_scratch(t, split), split, stream_.get());
}

void CudaBackend::stem_backward_impl(ConstTensorView x, ConstTensorView dy, ConstTensorView weight,
                                     ConstTensorView bias, ConstTensorView gamma,
                                     ConstTensorView beta, ConstTensorView saved_mean,
                                     ConstTensorView saved_inv_std, const BlockTailSettings& s,
                                     TensorView dweight, TensorView dbias, TensorView dgamma,
                                     TensorView dbeta) {
  PNEUMO_NVTX_RANGE("stem_backward");
  const kernels::BlockTailArgs t = stem_args(x, weight, bias, gamma, beta, nullptr, nullptr,
                                             saved_mean.data, saved_inv_std.data, s);
  const kernels::BiasReduction split = reduction(t.batch, t.channels);
  kernels::stem_backward(t, dy.data, dweight.data, dbias.data, dgamma.data, dbeta.data,
                         tail_scratch(t, split), split, stream_.get());
}

void CudaBackend::dropout_forward_impl(ConstTensorView x, TensorView y, float rate, RngKey key) {
  PNEUMO_NVTX_RANGE("dropout_forward");
  kernels::dropout_apply(x.data, y.data, x.numel(), rate, key, stream_.get());
}

void CudaBackend::dropout_backward_impl(ConstTensorView dy, TensorView dx, float rate, RngKey key) {
  PNEUMO_NVTX_RANGE("dropout_backward");
  kernels::dropout_apply(dy.data, dx.data, dy.numel(), rate, key, stream_.get());
}

// ---- Dense (cuBLAS) -----------------------------------------------------------------------------
// cuBLAS is column-major; a row-major (r, c) matrix is its transpose in column-major with
// leading dimension c. So y = x W^T (row-major) is y^T = W x^T (column-major): the operands are
// swapped and W is read transposed in place. No data is ever transposed. Under --precision bf16
// the operands are bfloat16 copies (ops/dense.hpp's precision rule) and the products run on tensor
// cores with float32 sums and float32 results (cublasGemmEx, CUBLAS_COMPUTE_32F).

namespace {

// C (m, n) = op(A) (m, k) . op(B) (k, n), column-major, C float32; A and B float32, or bfloat16.
cublasStatus_t dense_gemm(cublasHandle_t handle, cublasOperation_t op_a, cublasOperation_t op_b,
                          int64_t m, int64_t n, int64_t k, const void* a, int64_t lda,
                          const void* b, int64_t ldb, float* c, int64_t ldc, bool bf16) {
  const auto i = [](int64_t v) { return static_cast<int>(v); };
  if (!bf16)
    return cublasSgemm(handle, op_a, op_b, i(m), i(n), i(k), &kOne, static_cast<const float*>(a),
                       i(lda), static_cast<const float*>(b), i(ldb), &kZero, c, i(ldc));
  return cublasGemmEx(handle, op_a, op_b, i(m), i(n), i(k), &kOne, a, CUDA_R_16BF, i(lda), b,
                      CUDA_R_16BF, i(ldb), &kZero, c, CUDA_R_32F, i(ldc), CUBLAS_COMPUTE_32F,
                      CUBLAS_GEMM_DEFAULT);
}

}  // namespace

// A dense layer's operand as its GEMMs read it: the float32 tensor itself, or (--precision bf16)
// its bfloat16 copy in `copy`, written here. A (rows, cols) matrix read as (rows, cols, 1) keeps
// its layout through the channels-last conversion.
const void* CudaBackend::dense_operand(ConstTensorView t, uint16_t* copy) {
  if (!options_.bf16) return t.data;
  kernels::to_bf16_channels_last(t.data, copy, t.shape[0], t.shape[1], 1, stream_.get());
  return copy;
}

void CudaBackend::dense_forward_impl(ConstTensorView x, ConstTensorView weight,
                                     ConstTensorView bias, TensorView y) {
  PNEUMO_NVTX_RANGE("dense_forward");
  constexpr const char* op = "dense_forward";
  const int64_t out = weight.shape[0], in = weight.shape[1], n = x.shape[0];
  if (n == 0) return;
  const Bf16Buffers b = options_.bf16 ? bf16_buffers(x.numel(), 0, weight.numel()) : Bf16Buffers{};
  const void* xs = dense_operand(x, b.x);
  const void* ws = dense_operand(weight, b.weight);
  // y^T (out, N) = W (out, in) . x^T (in, N); W is stored as column-major (in, out): op T.
  PNEUMO_CUBLAS_CHECK(dense_gemm(cublas_.get(), CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, ws, in, xs,
                                 in, y.data, out, options_.bf16),
                      op, " x=", x.shape.str(), " weight=", weight.shape.str());
  kernels::bias_activation_forward(y.data, bias.data, n, out, 1, false, stream_.get());
}

void CudaBackend::dense_backward_impl(ConstTensorView x, ConstTensorView weight, ConstTensorView dy,
                                      TensorView dx, TensorView dweight, TensorView dbias) {
  PNEUMO_NVTX_RANGE("dense_backward");
  constexpr const char* op = "dense_backward";
  const int64_t out = weight.shape[0], in = weight.shape[1], n = x.shape[0];
  if (n == 0) {
    // Empty batch: the sums over it are zero, as conv2d_backward_filter writes them. Not through a
    // GEMM with k = 0: BLAS defines it as C = beta C, but cuBLAS has not always honoured that.
    // On the stream, as every other write of a step: a recorded step may hold it.
    kernels::zero_floats(dweight.data, in * out, stream_.get());
    kernels::zero_floats(dbias.data, out, stream_.get());
    return;
  }
  const bool want_dx = dx.data != nullptr;
  const Bf16Buffers b =
      options_.bf16 ? bf16_buffers(x.numel(), dy.numel(), weight.numel()) : Bf16Buffers{};
  const void* dys = dense_operand(dy, b.y);
  if (want_dx) {
    // dx^T (in, N) = W^T (in, out) . dy^T (out, N); W^T is W's column-major storage: op N.
    PNEUMO_CUBLAS_CHECK(dense_gemm(cublas_.get(), CUBLAS_OP_N, CUBLAS_OP_N, in, n, out,
                                   dense_operand(weight, b.weight), in, dys, out, dx.data, in,
                                   options_.bf16),
                        op, " (dx) x=", x.shape.str(), " weight=", weight.shape.str());
  }
  // dW^T (in, out) = x^T (in, N) . dy (N, out); dy's storage is dy^T (out, N): op T.
  PNEUMO_CUBLAS_CHECK(dense_gemm(cublas_.get(), CUBLAS_OP_N, CUBLAS_OP_T, in, out, n,
                                 dense_operand(x, b.x), in, dys, out, dweight.data, in,
                                 options_.bf16),
                      op, " (dweight) x=", x.shape.str(), " weight=", weight.shape.str());
  bias_gradient_kernel(dy.data, dbias.data, n, out, 1);
}

// ---- Loss, optimizer, input pipeline ------------------------------------------------------------

void CudaBackend::sigmoid_bce_impl(ConstTensorView logits, ConstTensorView labels,
                                   ConstTensorView weights, TensorView dlogits, TensorView stats,
                                   int64_t batch_count) {
  PNEUMO_NVTX_RANGE("sigmoid_bce");
  kernels::sigmoid_bce(logits.data, labels.data, weights.data, dlogits.data, stats.data,
                       logits.shape[0], batch_count, stream_.get());
}

void CudaBackend::mark_nonfinite_impl(ConstTensorView value, int64_t step, TensorView marker,
                                      const LiveStep* live) {
  kernels::mark_nonfinite(value.data, marker.data, step, live, stream_.get());
}

void CudaBackend::rmsprop_step_impl(TensorView params, ConstTensorView grads,
                                    TensorView mean_square, float learning_rate, float rho,
                                    float epsilon, bool eps_inside, const LiveStep* live) {
  PNEUMO_NVTX_RANGE("rmsprop_step");
  kernels::rmsprop_step(params.data, grads.data, mean_square.data, params.numel(), learning_rate,
                        rho, epsilon, eps_inside, live, stream_.get());
}

void CudaBackend::adamw_step_impl(TensorView params, ConstTensorView grads, TensorView exp_avg,
                                  TensorView exp_avg_sq, const AdamWStep& step,
                                  const LiveStep* live) {
  PNEUMO_NVTX_RANGE("adamw_step");
  kernels::adamw_step(params.data, grads.data, exp_avg.data, exp_avg_sq.data, params.numel(), step,
                      live, stream_.get());
}

void CudaBackend::gather_augment_impl(const uint8_t* images, int64_t image_count, int size,
                                      const int32_t* indices, const AugmentSettings& settings,
                                      RngKey key, TensorView out) {
  PNEUMO_NVTX_RANGE("gather_augment");
  constexpr const char* op = "gather_augment";
  const int64_t batch = out.shape[0];
  if (batch == 0) return;
  require_device_pointer(images, op, "images");
  require_device_pointer(indices, op, "indices");
  augment_batch_cuda(images, image_count, size, indices, static_cast<int>(batch), settings, key,
                     out.data, stream_.get());
}

void CudaBackend::gather_values_impl(const float* values, int64_t value_count,
                                     const int32_t* indices, TensorView out) {
  PNEUMO_NVTX_RANGE("gather_values");
  if (out.numel() == 0) return;
  require_device_pointer(values, "gather_values", "values");
  require_device_pointer(indices, "gather_values", "indices");
  kernels::gather_values(values, value_count, indices, out.data, out.numel(), stream_.get());
}

void CudaBackend::begin_step_impl(const LiveStep* table, int64_t table_size, uint32_t* cursor,
                                  const int32_t* order, int count, LiveStep* current,
                                  int32_t* indices) {
  constexpr const char* op = "begin_step";
  require_device_pointer(table, op, "table");
  require_device_pointer(cursor, op, "cursor");
  require_device_pointer(order, op, "order");
  require_device_pointer(current, op, "current");
  require_device_pointer(indices, op, "indices");
  kernels::begin_step(table, table_size, cursor, order, count, current, indices, stream_.get());
}

// ---- Factory ------------------------------------------------------------------------------------

std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& choice) {
  CudaBackendOptions options;
  options.allow_tf32 = choice.allow_tf32;
  options.bf16 = choice.bf16;
  options.deterministic = choice.deterministic;
  options.tuning_cache = choice.tuning_cache;
  if (choice.graph_engines) options.conv_engines = CudaBackendOptions::Implementation::Fastest;
  if (choice.cudnn_only)
    options.pooling = options.single_channel_conv = options.conv_bias_gradient = options.batchnorm =
        options.conv_engines = CudaBackendOptions::Implementation::Cudnn;
  return std::make_unique<CudaBackend>(options);
}

}  // namespace pneumo
