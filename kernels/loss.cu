// Fused sigmoid + binary cross-entropy kernel and launcher: loss, gradient and correct count in
// one pass over the logits. Per-element math is pneumo::sigmoid_bce (elementwise.hpp); the batch
// sums are one block's reduction added to the running sums, so an epoch's running loss and
// accuracy stay on the device until read once. Also the one-thread non-finite marker that
// records the first step whose loss was NaN or infinite.
#include "cuda_check.hpp"
#include "kernel_util.cuh"
#include "elementwise.hpp"
#include "kernels.hpp"

namespace pneumo::kernels {
namespace {

// logits, labels, weights (nullable), dlogits: (n); stats: (2) accumulated; batch_count: the
// images of the whole (global) batch, the gradient's divisor.
__global__ void sigmoid_bce_kernel(const float* logits, const float* labels, const float* weights,
                                   float* dlogits, float* stats, int64_t n, int64_t batch_count) {
  const float batch = static_cast<float>(batch_count);
  float loss_sum = 0.0f, correct_sum = 0.0f;
  for (int64_t i = global_thread_index(); i < n; i += grid_stride()) {
    const BceElement e = pneumo::sigmoid_bce(logits[i], labels[i], weights ? weights[i] : 1.0f);
    dlogits[i] = e.gradient / batch;  // gradient of the batch-mean loss
    loss_sum += e.loss;
    correct_sum += e.correct;
  }
  loss_sum = block_sum(loss_sum);
  correct_sum = block_sum(correct_sum);
  if (threadIdx.x == 0) {
    atomicAdd(&stats[0], loss_sum);
    atomicAdd(&stats[1], correct_sum);
  }
}

__global__ void mark_nonfinite_kernel(const float* value, float* marker, int64_t step,
                                      const LiveStep* live) {
  marker[0] = pneumo::nonfinite_marker(value[0], marker[0], pneumo::nonfinite_step_plus_one(step, live));
}

}  // namespace

void mark_nonfinite(const float* value, float* marker, int64_t step, const LiveStep* live,
                    cudaStream_t stream) {
  mark_nonfinite_kernel<<<1, 1, 0, stream>>>(value, marker, step, live);
  PNEUMO_LAUNCH_CHECK("mark_nonfinite_kernel", "step=", step);
}

void sigmoid_bce(const float* logits, const float* labels, const float* weights, float* dlogits,
                 float* stats, int64_t n, int64_t batch_count, cudaStream_t stream) {
  if (n == 0) return;
  // One block, whatever n: with several, their atomicAdds into the running sums land in the order
  // the blocks finish, and the loss (a float sum) would change in its last bits from run to run
  // once a batch passes 256 logits (--batch or --val-batch up to 4096). A batch is at most a few
  // thousand logits, a few grid-stride turns of one block.
  sigmoid_bce_kernel<<<1, kThreadsPerBlock, 0, stream>>>(logits, labels, weights, dlogits, stats,
                                                         n, batch_count);
  PNEUMO_LAUNCH_CHECK("sigmoid_bce_kernel", "n=", n, weights ? " weighted" : " unweighted");
}

}  // namespace pneumo::kernels
