// `pneumo --version`: the release and what this binary was built with and finds at run time
// (CUDA runtime and driver, cuDNN, cuBLAS, image decoding, CPU GEMM), the facts a bug report or a
// benchmark comparison needs. Every query here works on a machine without a GPU.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <sstream>
#include <string>

#ifdef PNEUMO_WITH_OPENCV
#include <opencv2/core/version.hpp>
#endif

#include "cli/commands/commands.hpp"

#ifndef PNEUMO_VERSION
#error "PNEUMO_VERSION is set by CMakeLists.txt from project(VERSION)"
#endif

namespace pneumo::cli {
namespace {

// CUDA's integer versions are 1000 * major + 10 * minor.
std::string cuda_version(int v) {
  return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10);
}

// cuDNN 9 encodes major * 10000 + minor * 100 + patch.
std::string cudnn_version(size_t v) {
  return std::to_string(v / 10000) + "." + std::to_string(v % 10000 / 100) + "." +
         std::to_string(v % 100);
}

std::string cublas_version() {
  int major = 0, minor = 0, patch = 0;
  if (cublasGetProperty(MAJOR_VERSION, &major) != CUBLAS_STATUS_SUCCESS ||
      cublasGetProperty(MINOR_VERSION, &minor) != CUBLAS_STATUS_SUCCESS ||
      cublasGetProperty(PATCH_LEVEL, &patch) != CUBLAS_STATUS_SUCCESS)
    return "unknown";
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

std::string devices() {
  int driver = 0;
  if (cudaDriverGetVersion(&driver) != cudaSuccess || driver == 0) {
    cudaGetLastError();
    return "no CUDA driver (training runs on the CPU)";
  }
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    return "driver " + cuda_version(driver) + ", no usable GPU (training runs on the CPU)";
  }
  std::string names;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    names += (names.empty() ? "" : ", ") + std::string(prop.name) + " (sm_" +
             std::to_string(prop.major) + std::to_string(prop.minor) + ")";
  }
  return "driver " + cuda_version(driver) + ", " + std::to_string(count) + " GPU(s): " + names;
}

}  // namespace

std::string version_text() {
  int runtime = 0;
  if (cudaRuntimeGetVersion(&runtime) != cudaSuccess) runtime = CUDART_VERSION;
  std::ostringstream out;
  out << "pneumo " << PNEUMO_VERSION << "\n"
      << "  CUDA runtime " << cuda_version(runtime) << "; " << devices() << "\n"
      << "  cuDNN " << cudnn_version(cudnnGetVersion()) << " (built against "
      << cudnn_version(CUDNN_VERSION) << "), cuBLAS " << cublas_version() << "\n"
#ifdef PNEUMO_WITH_OPENCV
      << "  images: OpenCV " << CV_VERSION << "\n"
#else
      << "  images: built without OpenCV (reads prepared caches only)\n"
#endif
#ifdef PNEUMO_WITH_BLAS
      << "  CPU GEMM: system BLAS";
#else
      << "  CPU GEMM: built-in blocked GEMM";
#endif
  return out.str();
}

}  // namespace pneumo::cli
