// RMSprop kernel and launcher: one launch over the whole contiguous parameter buffer (layers hold
// views into it). Per-element math is pneumo::rmsprop_update (elementwise.hpp), as on the CPU.
#include "cuda/cuda_check.hpp"
#include "kernel_util.cuh"
#include "pneumo/elementwise.hpp"
#include "pneumo/kernels.hpp"

namespace pneumo::kernels {
namespace {

__global__ void rmsprop_kernel(float* params, const float* grads, float* mean_square, int64_t n,
                               float learning_rate, float rho, float epsilon) {
  for (int64_t i = global_thread_index(); i < n; i += grid_stride()) {
    float param = params[i], ms = mean_square[i];
    rmsprop_update(param, ms, grads[i], learning_rate, rho, epsilon);
    params[i] = param;
    mean_square[i] = ms;
  }
}

}  // namespace

void rmsprop_step(float* params, const float* grads, float* mean_square, int64_t n,
                  float learning_rate, float rho, float epsilon, cudaStream_t stream) {
  if (n == 0) return;
  rmsprop_kernel<<<blocks_for(n), kThreadsPerBlock, 0, stream>>>(params, grads, mean_square, n,
                                                                 learning_rate, rho, epsilon);
  PNEUMO_LAUNCH_CHECK("rmsprop_kernel", "n=", n, " lr=", learning_rate, " rho=", rho,
                      " eps=", epsilon);
}

}  // namespace pneumo::kernels
