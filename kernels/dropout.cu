// Inverted dropout kernel and launcher. The mask is recomputed from (key, element index) by
// pneumo::dropout_multiplier (elementwise.hpp), so forward and backward are the same map and
// the CPU twin draws the very same mask.
#include "cuda/cuda_check.hpp"
#include "kernel_util.cuh"
#include "pneumo/elementwise.hpp"
#include "pneumo/kernels.hpp"

namespace pneumo::kernels {
namespace {

__global__ void dropout_kernel(const float* x, float* y, int64_t n, float rate, RngKey key) {
  for (int64_t i = global_thread_index(); i < n; i += grid_stride())
    y[i] = x[i] * dropout_multiplier(key, static_cast<uint32_t>(i), rate);
}

}  // namespace

void dropout_apply(const float* x, float* y, int64_t n, float rate, RngKey key,
                   cudaStream_t stream) {
  PNEUMO_CHECK(n <= (int64_t{1} << 32), "dropout over ", n,
               " elements: the mask index is 32-bit (at most 2^32 elements per tensor)");
  PNEUMO_CHECK(rate >= 0.0f && rate < 1.0f, "dropout rate ", rate, " outside [0, 1)");
  if (n == 0) return;
  dropout_kernel<<<blocks_for(n), kThreadsPerBlock, 0, stream>>>(x, y, n, rate, key);
  PNEUMO_LAUNCH_CHECK("dropout_kernel", "n=", n, " rate=", rate);
}

}  // namespace pneumo::kernels
