// Bias and ReLU kernels with their launchers: bias (+ ReLU) after a convolution or dense layer
// when cuDNN's fused path is not taken, the bias gradient reduction, and ReLU forward/backward.
// Per-element math is pneumo::relu / pneumo::relu_backward (elementwise.hpp), as on the CPU.
#include "cuda/cuda_check.hpp"
#include "kernel_util.cuh"
#include "pneumo/elementwise.hpp"
#include "pneumo/kernels.hpp"

namespace pneumo::kernels {
namespace {

// y: (batch, channels, spatial) flattened; channel of element i = (i / spatial) % channels.
__global__ void bias_activation_kernel(float* y, const float* bias, int64_t total, int64_t channels,
                                       int64_t spatial, bool apply_relu) {
  for (int64_t i = global_thread_index(); i < total; i += grid_stride()) {
    const float value = y[i] + bias[(i / spatial) % channels];
    y[i] = apply_relu ? pneumo::relu(value) : value;
  }
}

// One block per channel c: sums dy[n, c, s] over n < batch, s < spatial in a fixed order.
__global__ void bias_backward_kernel(const float* dy, float* dbias, int64_t batch, int64_t channels,
                                     int64_t spatial) {
  const int64_t c = blockIdx.x;
  const int64_t count = batch * spatial;
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < count; j += blockDim.x) {
    const int64_t n = j / spatial, s = j - n * spatial;
    sum += dy[(n * channels + c) * spatial + s];
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) dbias[c] = sum;
}

__global__ void relu_forward_kernel(const float* x, float* y, int64_t n) {
  for (int64_t i = global_thread_index(); i < n; i += grid_stride()) y[i] = pneumo::relu(x[i]);
}

__global__ void relu_backward_kernel(const float* y, const float* dy, float* dx, int64_t n) {
  for (int64_t i = global_thread_index(); i < n; i += grid_stride())
    dx[i] = pneumo::relu_backward(y[i], dy[i]);
}

}  // namespace

void bias_activation_forward(float* y, const float* bias, int64_t batch, int64_t channels,
                             int64_t spatial, bool relu, cudaStream_t stream) {
  const int64_t total = batch * channels * spatial;
  if (total == 0) return;
  bias_activation_kernel<<<blocks_for(total), kThreadsPerBlock, 0, stream>>>(
      y, bias, total, channels, spatial, relu);
  PNEUMO_LAUNCH_CHECK("bias_activation_kernel", "batch=", batch, " channels=", channels,
                      " spatial=", spatial);
}

void bias_backward(const float* dy, float* dbias, int64_t batch, int64_t channels, int64_t spatial,
                   cudaStream_t stream) {
  if (channels == 0) return;
  PNEUMO_CHECK(channels <= INT32_MAX, "bias_backward: ", channels, " channels exceed the grid");
  bias_backward_kernel<<<static_cast<unsigned int>(channels), kThreadsPerBlock, 0, stream>>>(
      dy, dbias, batch, channels, spatial);
  PNEUMO_LAUNCH_CHECK("bias_backward_kernel", "batch=", batch, " channels=", channels,
                      " spatial=", spatial);
}

void relu_forward(const float* x, float* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  relu_forward_kernel<<<blocks_for(n), kThreadsPerBlock, 0, stream>>>(x, y, n);
  PNEUMO_LAUNCH_CHECK("relu_forward_kernel", "n=", n);
}

void relu_backward(const float* y, const float* dy, float* dx, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  relu_backward_kernel<<<blocks_for(n), kThreadsPerBlock, 0, stream>>>(y, dy, dx, n);
  PNEUMO_LAUNCH_CHECK("relu_backward_kernel", "n=", n);
}

}  // namespace pneumo::kernels
