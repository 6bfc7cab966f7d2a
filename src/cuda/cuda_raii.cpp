// Error messages for CUDA/cuDNN/cuBLAS failures, resource creation, and the cuDNN descriptor
// factories. One of the few translation units that touch the cuDNN descriptor API (with
// cuda_conv.cpp and cuda_backend.cpp), so a move to the graph API stays local.
#include "cuda/cuda_raii.hpp"

#include "pneumo/op_geometry.hpp"

#include <climits>
#include <sstream>

namespace pneumo::cuda {

namespace {

int to_int(int64_t value, const char* what) {
  PNEUMO_CHECK(value >= 0 && value <= INT_MAX, what, " = ", value,
               " does not fit the int that cuDNN takes");
  return static_cast<int>(value);
}

}  // namespace

void throw_cudnn_error(cudnnStatus_t status, const char* call, const char* file, int line,
                       const std::string& context) {
  char detail[512] = {0};
  cudnnGetLastErrorString(detail, sizeof(detail));  // cuDNN 9: why the last call failed
  std::ostringstream out;
  out << call << " failed: " << cudnnGetErrorString(status);
  if (detail[0] != '\0') out << " (" << detail << ")";
  out << location_suffix(context, file, line);
  // cuDNN 9 tells device from host (CUDNN_STATUS_ALLOC_FAILED is the host one's old name).
  if (status == CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED)
    throw OutOfMemory(out.str(), /*on_device=*/true, 0);
  if (status == CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED)
    throw OutOfMemory(out.str(), /*on_device=*/false, 0);
  throw Error(out.str());
}

void throw_cublas_error(cublasStatus_t status, const char* call, const char* file, int line,
                        const std::string& context) {
  std::ostringstream out;
  out << call << " failed: " << cublasGetStatusName(status) << " (" << cublasGetStatusString(status)
      << ")" << location_suffix(context, file, line);
  if (status == CUBLAS_STATUS_ALLOC_FAILED) throw OutOfMemory(out.str(), /*on_device=*/true, 0);
  throw Error(out.str());
}

// ---- Resource creation --------------------------------------------------------------------------

cudnnHandle_t CudnnHandleTraits::create() {
  cudnnHandle_t h = nullptr;
  PNEUMO_CUDNN_CHECK(cudnnCreate(&h), "creating the cuDNN handle");
  return h;
}
cudnnTensorDescriptor_t TensorDescriptorTraits::create() {
  cudnnTensorDescriptor_t d = nullptr;
  PNEUMO_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d), "tensor descriptor");
  return d;
}
cudnnFilterDescriptor_t FilterDescriptorTraits::create() {
  cudnnFilterDescriptor_t d = nullptr;
  PNEUMO_CUDNN_CHECK(cudnnCreateFilterDescriptor(&d), "filter descriptor");
  return d;
}
cudnnConvolutionDescriptor_t ConvolutionDescriptorTraits::create() {
  cudnnConvolutionDescriptor_t d = nullptr;
  PNEUMO_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d), "convolution descriptor");
  return d;
}
cudnnPoolingDescriptor_t PoolingDescriptorTraits::create() {
  cudnnPoolingDescriptor_t d = nullptr;
  PNEUMO_CUDNN_CHECK(cudnnCreatePoolingDescriptor(&d), "pooling descriptor");
  return d;
}
cudnnActivationDescriptor_t ActivationDescriptorTraits::create() {
  cudnnActivationDescriptor_t d = nullptr;
  PNEUMO_CUDNN_CHECK(cudnnCreateActivationDescriptor(&d), "activation descriptor");
  return d;
}
cublasHandle_t CublasHandleTraits::create() {
  cublasHandle_t h = nullptr;
  PNEUMO_CUBLAS_CHECK(cublasCreate(&h), "creating the cuBLAS handle");
  return h;
}
cudaStream_t StreamTraits::create() {
  cudaStream_t s = nullptr;
  PNEUMO_CUDA_CHECK(cudaStreamCreate(&s), "creating the backend stream");
  return s;
}
cudaEvent_t EventTraits::create() {
  cudaEvent_t e = nullptr;
  PNEUMO_CUDA_CHECK(cudaEventCreate(&e), "creating an event");
  return e;
}

// ---- Descriptors --------------------------------------------------------------------------------

TensorDescriptor make_tensor_descriptor(int64_t n, int64_t c, int64_t h, int64_t w) {
  TensorDescriptor desc = TensorDescriptor::create();
  PNEUMO_CUDNN_CHECK(
      cudnnSetTensor4dDescriptor(desc.get(), CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, to_int(n, "N"),
                                 to_int(c, "C"), to_int(h, "H"), to_int(w, "W")),
      "tensor (", n, ", ", c, ", ", h, ", ", w, ")");
  return desc;
}

TensorDescriptor make_tensor_descriptor(const Shape& shape) {
  if (shape.rank() == 4) return make_tensor_descriptor(shape[0], shape[1], shape[2], shape[3]);
  PNEUMO_CHECK(shape.rank() == 2, "expected an (N, C, H, W) or (N, F) tensor, got ", shape.str());
  return make_tensor_descriptor(shape[0], shape[1], 1, 1);
}

FilterDescriptor make_filter_descriptor(int64_t k, int64_t c, int64_t kh, int64_t kw) {
  FilterDescriptor desc = FilterDescriptor::create();
  PNEUMO_CUDNN_CHECK(
      cudnnSetFilter4dDescriptor(desc.get(), CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, to_int(k, "K"),
                                 to_int(c, "C"), to_int(kh, "KH"), to_int(kw, "KW")),
      "filter (", k, ", ", c, ", ", kh, ", ", kw, ")");
  return desc;
}

ConvolutionDescriptor make_conv3x3_same_descriptor(cudnnMathType_t math_type) {
  ConvolutionDescriptor desc = ConvolutionDescriptor::create();
  // pad 1, stride 1, dilation 1: output size = input size for a 3x3 kernel (ConvGeometry).
  constexpr int pad = static_cast<int>(ConvGeometry::kPadding);
  PNEUMO_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(desc.get(), pad, pad, 1, 1, 1, 1,
                                                     CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
                     "3x3 same convolution");
  PNEUMO_CUDNN_CHECK(cudnnSetConvolutionMathType(desc.get(), math_type), "math type ",
                     math_type_name(math_type));
  return desc;
}

PoolingDescriptor make_maxpool2x2_same_descriptor(int64_t height, int64_t width) {
  PoolingDescriptor desc = PoolingDescriptor::create();
  const PoolGeometry g{1, 1, height, width};
  // Output = 1 + floor((size + 2 pad - 2) / 2) = ceil(size / 2) with pad = size % 2. Window i
  // covers rows [2i - pad, 2i - pad + 1], so the padding row read is row -1 (top/left) only.
  // cuDNN never lets a padded element win a max. The deterministic mode makes the backward pass
  // reproducible; ties go to one element of the window (see maxpool2d_backward). A NaN in a
  // window is its max, as in our kernels (takes_max, kernels/pool_window.hpp).
  PNEUMO_CUDNN_CHECK(cudnnSetPooling2dDescriptor(
                         desc.get(), CUDNN_POOLING_MAX_DETERMINISTIC, CUDNN_PROPAGATE_NAN, 2, 2,
                         static_cast<int>(g.pad_top()), static_cast<int>(g.pad_left()), 2, 2),
                     "2x2 max pool for H=", height, " W=", width);
  return desc;
}

ActivationDescriptor make_relu_descriptor() {
  ActivationDescriptor desc = ActivationDescriptor::create();
  // NaN handling as pneumo::relu (a NaN passes through).
  PNEUMO_CUDNN_CHECK(
      cudnnSetActivationDescriptor(desc.get(), CUDNN_ACTIVATION_RELU, CUDNN_PROPAGATE_NAN, 0.0),
      "ReLU activation");
  return desc;
}

const char* math_type_name(cudnnMathType_t math_type) {
  switch (math_type) {
    case CUDNN_DEFAULT_MATH:
      return "CUDNN_DEFAULT_MATH";
    case CUDNN_TENSOR_OP_MATH:
      return "CUDNN_TENSOR_OP_MATH";
    case CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION:
      return "CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION";
    case CUDNN_FMA_MATH:
      return "CUDNN_FMA_MATH";
  }
  return "unknown math type";
}

}  // namespace pneumo::cuda
