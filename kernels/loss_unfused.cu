// The unfused sigmoid + binary cross-entropy path, as a baseline for `pneumo bench kernels` only:
// given p = sigmoid(z) from a separate activation pass (cuDNN's activation forward), one kernel
// reduces the loss and correct count, another writes the gradient. The fused kernel (loss.cu)
// does all three in one pass over the logits; training never runs these.
#include "cuda_check.hpp"
#include "kernel_util.cuh"
#include "kernels.hpp"

namespace pneumo::kernels {
namespace {

// Keras clips probabilities to [epsilon, 1 - epsilon] (epsilon 1e-7) before its logarithms.
constexpr float kProbabilityClip = 1e-7f;

__device__ __forceinline__ float weight_of(const float* weights, int64_t i) {
  return weights ? weights[i] : 1.0f;
}

// probabilities, labels, weights (nullable): (n); stats (2) accumulated.
__global__ void bce_loss_kernel(const float* probabilities, const float* labels,
                                const float* weights, float* stats, int64_t n) {
  float loss_sum = 0.0f, correct_sum = 0.0f;
  for (int64_t i = global_thread_index(); i < n; i += grid_stride()) {
    const float p = probabilities[i], y = labels[i];
    const float clipped = fminf(fmaxf(p, kProbabilityClip), 1.0f - kProbabilityClip);
    loss_sum += -weight_of(weights, i) * (y * logf(clipped) + (1.0f - y) * log1pf(-clipped));
    correct_sum += ((p > 0.5f) == (y > 0.5f)) ? 1.0f : 0.0f;
  }
  loss_sum = block_sum(loss_sum);
  correct_sum = block_sum(correct_sum);
  if (threadIdx.x == 0) {
    atomicAdd(&stats[0], loss_sum);
    atomicAdd(&stats[1], correct_sum);
  }
}

__global__ void bce_gradient_kernel(const float* probabilities, const float* labels,
                                    const float* weights, float* dlogits, int64_t n) {
  const float batch = static_cast<float>(n);
  for (int64_t i = global_thread_index(); i < n; i += grid_stride())
    dlogits[i] = weight_of(weights, i) * (probabilities[i] - labels[i]) / batch;
}

}  // namespace

void bce_loss_from_probabilities(const float* probabilities, const float* labels,
                                 const float* weights, float* stats, int64_t n,
                                 cudaStream_t stream) {
  if (n == 0) return;
  bce_loss_kernel<<<blocks_for(n), kThreadsPerBlock, 0, stream>>>(probabilities, labels, weights,
                                                                  stats, n);
  PNEUMO_LAUNCH_CHECK("bce_loss_kernel", "n=", n);
}

void bce_gradient_from_probabilities(const float* probabilities, const float* labels,
                                     const float* weights, float* dlogits, int64_t n,
                                     cudaStream_t stream) {
  if (n == 0) return;
  bce_gradient_kernel<<<blocks_for(n), kThreadsPerBlock, 0, stream>>>(probabilities, labels,
                                                                      weights, dlogits, n);
  PNEUMO_LAUNCH_CHECK("bce_gradient_kernel", "n=", n);
}

}  // namespace pneumo::kernels
