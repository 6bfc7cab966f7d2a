// RMSprop and AdamW kernels and launchers: one launch over the whole contiguous parameter buffer
// (layers hold views into it). Per-element math is pneumo::rmsprop_update and
// pneumo::adamw_update (elementwise.hpp), as on the CPU.
#include "cuda_check.hpp"
#include "kernel_util.cuh"
#include "elementwise.hpp"
#include "kernels.hpp"

namespace pneumo::kernels {
namespace {

__global__ void rmsprop_kernel(float* params, const float* grads, float* mean_square, int64_t n,
                               float learning_rate, float rho, float epsilon, bool eps_inside,
                               const LiveStep* live) {
  learning_rate = with_live_learning_rate(learning_rate, live);
  for (int64_t i = global_thread_index(); i < n; i += grid_stride()) {
    float param = params[i], ms = mean_square[i];
    rmsprop_update(param, ms, grads[i], learning_rate, rho, epsilon, eps_inside);
    params[i] = param;
    mean_square[i] = ms;
  }
}

__global__ void adamw_kernel(float* params, const float* grads, float* exp_avg, float* exp_avg_sq,
                             int64_t n, AdamWStep given, const LiveStep* live) {
  const AdamWStep step = with_live_values(given, live);
  for (int64_t i = global_thread_index(); i < n; i += grid_stride()) {
    float param = params[i], m = exp_avg[i], v = exp_avg_sq[i];
    adamw_update(param, m, v, grads[i], step);
    params[i] = param;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
  }
}

}  // namespace

void adamw_step(float* params, const float* grads, float* exp_avg, float* exp_avg_sq, int64_t n,
                const AdamWStep& step, const LiveStep* live, cudaStream_t stream) {
  if (n == 0) return;
  adamw_kernel<<<blocks_for(n), kThreadsPerBlock, 0, stream>>>(params, grads, exp_avg, exp_avg_sq,
                                                               n, step, live);
  PNEUMO_LAUNCH_CHECK("adamw_kernel", "n=", n, " lr=", step.learning_rate,
                      " weight_decay=", step.weight_decay);
}

void rmsprop_step(float* params, const float* grads, float* mean_square, int64_t n,
                  float learning_rate, float rho, float epsilon, bool eps_inside,
                  const LiveStep* live, cudaStream_t stream) {
  if (n == 0) return;
  rmsprop_kernel<<<blocks_for(n), kThreadsPerBlock, 0, stream>>>(
      params, grads, mean_square, n, learning_rate, rho, epsilon, eps_inside, live);
  PNEUMO_LAUNCH_CHECK("rmsprop_kernel", "n=", n, " lr=", learning_rate, " rho=", rho,
                      " eps=", epsilon);
}

}  // namespace pneumo::kernels
