// Move-only owners for every CUDA-side resource the backend holds (cuDNN handle and descriptors,
// cuBLAS handle, stream, event), the cuDNN/cuBLAS error checks, and the few factory functions that
// fill cuDNN descriptors. Device buffers are pneumo::Array / Tensor (include/pneumo/tensor.hpp).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <string>
#include <utility>

#include "cuda_check.hpp"
#include "pneumo/error.hpp"
#include "pneumo/tensor.hpp"

namespace pneumo::cuda {

[[noreturn]] void throw_cudnn_error(cudnnStatus_t status, const char* call, const char* file,
                                    int line, const std::string& context);
[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* call, const char* file,
                                     int line, const std::string& context);

}  // namespace pneumo::cuda

// PNEUMO_CUDNN_CHECK(cudnnPoolingForward(...), "maxpool2d_forward x=", x.shape.str()): throws
// pneumo::Error with the stringified call, cuDNN's status and last error message, and the context.
#define PNEUMO_CUDNN_CHECK(call, ...)                                                    \
  do {                                                                                   \
    const cudnnStatus_t pneumo_cudnn_status_ = (call);                                   \
    if (pneumo_cudnn_status_ != CUDNN_STATUS_SUCCESS)                                    \
      ::pneumo::cuda::throw_cudnn_error(pneumo_cudnn_status_, #call, __FILE__, __LINE__, \
                                        ::pneumo::detail::concat(__VA_ARGS__));          \
  } while (0)

#define PNEUMO_CUBLAS_CHECK(call, ...)                                                     \
  do {                                                                                     \
    const cublasStatus_t pneumo_cublas_status_ = (call);                                   \
    if (pneumo_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                    \
      ::pneumo::cuda::throw_cublas_error(pneumo_cublas_status_, #call, __FILE__, __LINE__, \
                                         ::pneumo::detail::concat(__VA_ARGS__));           \
  } while (0)

namespace pneumo::cuda {

// One owned handle of type Handle (a pointer type), released by Traits::destroy. Move-only;
// move-assignment releases what the target held before taking the other's handle.
// Traits: `static void destroy(Handle) noexcept;` and `static Handle create();` (throws).
template <class Handle, class Traits>
class Resource {
 public:
  Resource() = default;
  explicit Resource(Handle handle) : handle_(handle) {}
  ~Resource() { reset(); }
  Resource(const Resource&) = delete;
  Resource& operator=(const Resource&) = delete;
  Resource(Resource&& other) noexcept : handle_(std::exchange(other.handle_, Handle{})) {}
  Resource& operator=(Resource&& other) noexcept {
    if (this != &other) {
      reset();
      handle_ = std::exchange(other.handle_, Handle{});
    }
    return *this;
  }

  static Resource create() { return Resource(Traits::create()); }
  Handle get() const { return handle_; }
  explicit operator bool() const { return handle_ != Handle{}; }
  void reset() noexcept {
    if (handle_ != Handle{}) Traits::destroy(handle_);
    handle_ = Handle{};
  }

 private:
  Handle handle_{};
};

// The traits: creation throws a pneumo::Error naming the call; destruction cannot report errors
// (it runs in destructors), so its status is dropped.
struct CudnnHandleTraits {
  static cudnnHandle_t create();
  static void destroy(cudnnHandle_t h) noexcept { cudnnDestroy(h); }
};
struct TensorDescriptorTraits {
  static cudnnTensorDescriptor_t create();
  static void destroy(cudnnTensorDescriptor_t d) noexcept { cudnnDestroyTensorDescriptor(d); }
};
struct FilterDescriptorTraits {
  static cudnnFilterDescriptor_t create();
  static void destroy(cudnnFilterDescriptor_t d) noexcept { cudnnDestroyFilterDescriptor(d); }
};
struct ConvolutionDescriptorTraits {
  static cudnnConvolutionDescriptor_t create();
  static void destroy(cudnnConvolutionDescriptor_t d) noexcept {
    cudnnDestroyConvolutionDescriptor(d);
  }
};
struct PoolingDescriptorTraits {
  static cudnnPoolingDescriptor_t create();
  static void destroy(cudnnPoolingDescriptor_t d) noexcept { cudnnDestroyPoolingDescriptor(d); }
};
struct ActivationDescriptorTraits {
  static cudnnActivationDescriptor_t create();
  static void destroy(cudnnActivationDescriptor_t d) noexcept {
    cudnnDestroyActivationDescriptor(d);
  }
};
struct CublasHandleTraits {
  static cublasHandle_t create();
  static void destroy(cublasHandle_t h) noexcept { cublasDestroy(h); }
};
struct StreamTraits {
  static cudaStream_t create();  // a blocking stream: cudaMemcpy on the legacy stream waits for it
  static void destroy(cudaStream_t s) noexcept { cudaStreamDestroy(s); }
};
struct EventTraits {
  static cudaEvent_t create();
  static void destroy(cudaEvent_t e) noexcept { cudaEventDestroy(e); }
};

using CudnnHandle = Resource<cudnnHandle_t, CudnnHandleTraits>;
using TensorDescriptor = Resource<cudnnTensorDescriptor_t, TensorDescriptorTraits>;
using FilterDescriptor = Resource<cudnnFilterDescriptor_t, FilterDescriptorTraits>;
using ConvolutionDescriptor = Resource<cudnnConvolutionDescriptor_t, ConvolutionDescriptorTraits>;
using PoolingDescriptor = Resource<cudnnPoolingDescriptor_t, PoolingDescriptorTraits>;
using ActivationDescriptor = Resource<cudnnActivationDescriptor_t, ActivationDescriptorTraits>;
using CublasHandle = Resource<cublasHandle_t, CublasHandleTraits>;
using Stream = Resource<cudaStream_t, StreamTraits>;
using Event = Resource<cudaEvent_t, EventTraits>;

// ---- Descriptor factories (host-only calls: they work without a GPU) ----------------------------
// Dense NCHW float32 tensor (n, c, h, w).
TensorDescriptor make_tensor_descriptor(int64_t n, int64_t c, int64_t h, int64_t w);
// A rank-4 shape as is; a rank-2 shape (N, F) as (N, F, 1, 1).
TensorDescriptor make_tensor_descriptor(const Shape& shape);
// Filter (k, c, kh, kw), NCHW float32 (PyTorch's conv weight layout).
FilterDescriptor make_filter_descriptor(int64_t k, int64_t c, int64_t kh, int64_t kw);
// 3x3 'same' cross-correlation, stride 1, float32 accumulation, with the given math type.
ConvolutionDescriptor make_conv3x3_same_descriptor(cudnnMathType_t math_type);
// The 2x2 / stride-2 'same' max pool: padding PoolGeometry's pad_top / pad_left (1 on an odd
// axis). cuDNN pads both sides but rounds the output size down, so the one padding row/column
// ever read sits on the top/left and the output is ceil(size / 2) (pneumo/op_geometry.hpp).
PoolingDescriptor make_maxpool2x2_same_descriptor(int64_t height, int64_t width);
ActivationDescriptor make_relu_descriptor();

// Names for messages and reports.
const char* math_type_name(cudnnMathType_t math_type);

}  // namespace pneumo::cuda
