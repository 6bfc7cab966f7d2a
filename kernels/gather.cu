// Gather kernel and launcher: per-sample values (labels, sample weights) picked by the batch's
// dataset indices, all on the device.
#include "cuda_check.hpp"
#include "kernel_util.cuh"
#include "kernels.hpp"

namespace pneumo::kernels {
namespace {

__global__ void gather_values_kernel(const float* values, const int32_t* indices, float* out,
                                     int64_t n) {
  for (int64_t i = global_thread_index(); i < n; i += grid_stride()) out[i] = values[indices[i]];
}

}  // namespace

void gather_values(const float* values, const int32_t* indices, float* out, int64_t n,
                   cudaStream_t stream) {
  if (n == 0) return;
  gather_values_kernel<<<blocks_for(n), kThreadsPerBlock, 0, stream>>>(values, indices, out, n);
  PNEUMO_LAUNCH_CHECK("gather_values_kernel", "n=", n);
}

}  // namespace pneumo::kernels
