// Bias and ReLU kernels with their launchers: bias (+ ReLU) after a convolution or dense layer
// when cuDNN's fused path is not taken, the bias gradient (a deterministic two-pass reduction),
// and ReLU forward/backward.
// Per-element math is pneumo::relu / pneumo::relu_backward (elementwise.hpp), as on the CPU.
#include <algorithm>

#include "cuda_check.hpp"
#include "kernel_util.cuh"
#include "elementwise.hpp"
#include "kernels.hpp"

namespace pneumo::kernels {
namespace {

// y: (batch, channels, spatial) as batch x channels planes, in place (map_planes): planes of a
// span (4 x 256 values) or more.
__global__ void bias_activation_kernel(float* y, const float* bias, int64_t planes,
                                       int64_t channels, int64_t spatial, bool apply_relu) {
  map_planes(y, y, planes, spatial, [&](int64_t plane, float v) {
    return pneumo::bias_relu(v, bias[mod_index(plane, channels)], apply_relu);
  });
}

// Smaller planes (a dense layer's are one value): one thread a value over the flat tensor, the
// channel from the index, so no block idles past its plane's end.
__global__ void bias_activation_small_planes_kernel(float* y, const float* bias, int64_t total,
                                                    int64_t channels, int64_t spatial,
                                                    bool apply_relu) {
  for (int64_t i = global_thread_index(); i < total; i += grid_stride())
    y[i] = pneumo::bias_relu(y[i], bias[mod_index(div_index(i, spatial), channels)], apply_relu);
}

// Block (c, j) sums dy[n, c, s] over the images n of chunk j and every s, in a fixed order, into
// partial[c * chunks + j].
__global__ void bias_partial_kernel(const float* dy, float* partial, ChunkGeometry g) {
  float sum = 0.0f;
  g.for_each([&](int64_t i) { sum += dy[i]; });  // four at a time: four loads in flight
  sum = block_sum(sum);
  if (threadIdx.x == 0) partial[blockIdx.x * gridDim.y + blockIdx.y] = sum;
}

// dbias[c] = its chunks' partial sums, added in chunk order in double (as every other finalise
// kernel merges its partials, and as the CPU twin sums).
__global__ void bias_total_kernel(const float* partial, float* dbias, int64_t channels,
                                  int64_t chunks) {
  for (int64_t c = global_thread_index(); c < channels; c += grid_stride()) {
    double sum = 0.0;
    for (int64_t j = 0; j < chunks; ++j) sum += partial[c * chunks + j];
    dbias[c] = static_cast<float>(sum);
  }
}

// Flat passes: one plane of n values.
__global__ void relu_forward_kernel(const float* x, float* y, int64_t n) {
  map_planes(y, x, 1, n, [](int64_t, float v) { return pneumo::relu(v); });
}

__global__ void relu_backward_kernel(const float* y, const float* dy, float* dx, int64_t n,
                                     float kept) {
  map_planes(dx, y, dy, 1, n, [kept](int64_t, float yv, float dyv) {
    return pneumo::relu_gated(true, yv, dyv, kept);
  });
}

}  // namespace

void bias_activation_forward(float* y, const float* bias, int64_t batch, int64_t channels,
                             int64_t spatial, bool relu, cudaStream_t stream) {
  const int64_t total = batch * channels * spatial;
  if (total == 0) return;
  if (spatial >= kValuesPerThread * kThreadsPerBlock) {
    bias_activation_kernel<<<plane_grid(batch * channels, spatial), kThreadsPerBlock, 0,
                             stream>>>(y, bias, batch * channels, channels, spatial, relu);
  } else {
    bias_activation_small_planes_kernel<<<blocks_for(total), kThreadsPerBlock, 0, stream>>>(
        y, bias, total, channels, spatial, relu);
  }
  PNEUMO_LAUNCH_CHECK("bias_activation_kernel", "batch=", batch, " channels=", channels,
                      " spatial=", spatial);
}

BiasReduction bias_reduction(int64_t batch, int64_t channels, int sm_count, int blocks_per_sm) {
  // About blocks_per_sm blocks per SM in all, each over whole images of one channel.
  const int64_t images = std::max<int64_t>(batch, 1);
  const int64_t wanted_blocks =
      std::max<int64_t>(blocks_per_sm, 1) * std::max<int64_t>(sm_count, 1);
  const int64_t wanted_chunks = std::clamp<int64_t>(
      (wanted_blocks + channels - 1) / std::max<int64_t>(channels, 1), 1, images);
  return reduction_of_chunk_size(batch, channels, (images + wanted_chunks - 1) / wanted_chunks);
}

BiasReduction reduction_of_chunk_size(int64_t batch, int64_t channels, int64_t images_per_chunk) {
  const int64_t images = std::max<int64_t>(batch, 1);
  BiasReduction r;
  r.images_per_chunk = std::clamp<int64_t>(images_per_chunk, 1, images);
  r.chunks = (images + r.images_per_chunk - 1) / r.images_per_chunk;
  r.partial_floats = channels * r.chunks;
  return r;
}

void bias_backward(const float* dy, float* dbias, float* partial, const BiasReduction& reduction,
                   int64_t batch, int64_t channels, int64_t spatial, cudaStream_t stream) {
  if (channels == 0) return;
  const dim3 grid = chunk_grid("bias_backward", reduction, batch, channels);
  bias_partial_kernel<<<grid, kThreadsPerBlock, 0, stream>>>(
      dy, partial, {batch, channels, spatial, reduction.images_per_chunk});
  PNEUMO_LAUNCH_CHECK("bias_partial_kernel", "batch=", batch, " channels=", channels,
                      " spatial=", spatial, " chunks=", reduction.chunks);
  bias_total_kernel<<<blocks_for(channels), kThreadsPerBlock, 0, stream>>>(partial, dbias, channels,
                                                                           reduction.chunks);
  PNEUMO_LAUNCH_CHECK("bias_total_kernel", "channels=", channels, " chunks=", reduction.chunks);
}

void relu_forward(const float* x, float* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  relu_forward_kernel<<<plane_grid(1, n), kThreadsPerBlock, 0, stream>>>(x, y, n);
  PNEUMO_LAUNCH_CHECK("relu_forward_kernel", "n=", n);
}

void relu_backward(const float* y, const float* dy, float* dx, int64_t n, cudaStream_t stream,
                   float kept) {
  if (n == 0) return;
  relu_backward_kernel<<<plane_grid(1, n), kThreadsPerBlock, 0, stream>>>(y, dy, dx, n, kept);
  PNEUMO_LAUNCH_CHECK("relu_backward_kernel", "n=", n);
}

}  // namespace pneumo::kernels
