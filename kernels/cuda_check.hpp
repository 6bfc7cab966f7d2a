// Error checks for the CUDA runtime and for kernel launches: each failure throws pneumo::Error
// naming the failed call (stringified), the file and line, and the shapes the caller adds.
// cuDNN and cuBLAS checks live with their handles in src/cuda/cuda_raii.hpp. Kernels and the
// CUDA backend both use these, so they sit at the kernels' level.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "pneumo/error.hpp"

namespace pneumo::cuda {

// " [<context>] at <file>:<line>" (no brackets when context is empty): the tail of every CUDA,
// cuDNN and cuBLAS error message.
std::string location_suffix(const std::string& context, const char* file, int line);

// Throws "<call> failed: <cudaGetErrorString> (<code name>) [<context>] at <file>:<line>"; an
// allocation failure as OutOfMemory. Defined in cuda_check.cpp, beside the kernels that use it.
[[noreturn]] void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line,
                                   const std::string& context);

}  // namespace pneumo::cuda

// PNEUMO_CUDA_CHECK(cudaMemcpyAsync(...), "x=", x.shape.str()): throws pneumo::Error when the
// runtime call does not return cudaSuccess. The message parts after the call are streamed into
// the error (pass at least one: a shape, or the op's name).
#define PNEUMO_CUDA_CHECK(call, ...)                                                   \
  do {                                                                                 \
    const cudaError_t pneumo_cuda_status_ = (call);                                    \
    if (pneumo_cuda_status_ != cudaSuccess)                                            \
      ::pneumo::cuda::throw_cuda_error(pneumo_cuda_status_, #call, __FILE__, __LINE__, \
                                       ::pneumo::detail::concat(__VA_ARGS__));         \
  } while (0)

// PNEUMO_LAUNCH_CHECK("relu_forward", "n=", n): after every kernel launch. Catches bad launch
// configurations at once; faults inside the kernel surface at the next synchronising call.
#define PNEUMO_LAUNCH_CHECK(kernel_name, ...)                                                     \
  do {                                                                                            \
    const cudaError_t pneumo_launch_status_ = cudaGetLastError();                                 \
    if (pneumo_launch_status_ != cudaSuccess)                                                     \
      ::pneumo::cuda::throw_cuda_error(pneumo_launch_status_, "launch of " kernel_name, __FILE__, \
                                       __LINE__, ::pneumo::detail::concat(__VA_ARGS__));          \
  } while (0)
