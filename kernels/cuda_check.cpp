// The CUDA runtime error path (see cuda_check.hpp).
#include "cuda_check.hpp"

#include <cuda_runtime.h>

#include <sstream>

namespace pneumo::cuda {

std::string location_suffix(const std::string& context, const char* file, int line) {
  std::ostringstream out;
  if (!context.empty()) out << " [" << context << "]";
  out << " at " << file << ":" << line;
  return out.str();
}

void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line,
                      const std::string& context) {
  std::ostringstream out;
  out << call << " failed: " << cudaGetErrorString(status) << " (" << cudaGetErrorName(status)
      << ")" << location_suffix(context, file, line);
  if (status == cudaErrorMemoryAllocation) throw OutOfMemory(out.str(), /*on_device=*/true, 0);
  throw Error(out.str());
}

}  // namespace pneumo::cuda
