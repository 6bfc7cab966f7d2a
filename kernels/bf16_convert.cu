// float32 <-> bfloat16 conversions around the tensor-core convolutions of --precision bf16: the
// activations stay float32 NCHW between ops; a convolution with more than one input channel reads
// bfloat16 copies stored channels-last (NHWC for x and dy, KRSC for the weight), the layout
// cuDNN's tensor-core engines read, and its bfloat16 result comes back as float32 NCHW, with the
// bias and ReLU of the forward pass on the way. Rounding is pneumo::bf16_from_float (bf16.hpp),
// the CPU backend's emulation uses the same function.
#include <cstdint>

#include "bf16.hpp"
#include "cuda_check.hpp"
#include "elementwise.hpp"
#include "kernel_util.cuh"
#include "kernels.hpp"

namespace pneumo::kernels {
namespace {

// One thread per destination element: dst[(n spatial + s) channels + c] = src[(n channels + c)
// spatial + s]. Writes are contiguous across a warp; reads stride by `spatial`.
__global__ void to_bf16_channels_last_kernel(const float* src, uint16_t* dst, int64_t total,
                                             int64_t channels, int64_t spatial) {
  for (int64_t i = global_thread_index(); i < total; i += grid_stride()) {
    const int64_t c = i % channels, s = (i / channels) % spatial, n = i / (channels * spatial);
    dst[i] = pneumo::bf16_from_float(src[(n * channels + c) * spatial + s]);
  }
}

// One thread per destination element: dst[(n channels + c) spatial + s] = src[(n spatial + s)
// channels + c] (+ bias[c], then ReLU).
__global__ void from_bf16_channels_last_kernel(const uint16_t* src, float* dst, int64_t total,
                                               int64_t channels, int64_t spatial,
                                               const float* bias, bool apply_relu) {
  for (int64_t i = global_thread_index(); i < total; i += grid_stride()) {
    const int64_t s = i % spatial, c = (i / spatial) % channels, n = i / (channels * spatial);
    float value = pneumo::float_from_bf16(src[(n * spatial + s) * channels + c]);
    if (bias != nullptr) value += bias[c];
    dst[i] = apply_relu ? pneumo::relu(value) : value;
  }
}

}  // namespace

void to_bf16_channels_last(const float* src, uint16_t* dst, int64_t batch, int64_t channels,
                           int64_t spatial, cudaStream_t stream) {
  const int64_t total = batch * channels * spatial;
  if (total == 0) return;
  to_bf16_channels_last_kernel<<<blocks_for(total), kThreadsPerBlock, 0, stream>>>(
      src, dst, total, channels, spatial);
  PNEUMO_LAUNCH_CHECK("to_bf16_channels_last_kernel", "batch=", batch, " channels=", channels,
                      " spatial=", spatial);
}

void from_bf16_channels_last(const uint16_t* src, float* dst, int64_t batch, int64_t channels,
                             int64_t spatial, const float* bias, bool relu, cudaStream_t stream) {
  const int64_t total = batch * channels * spatial;
  if (total == 0) return;
  from_bf16_channels_last_kernel<<<blocks_for(total), kThreadsPerBlock, 0, stream>>>(
      src, dst, total, channels, spatial, bias, relu);
  PNEUMO_LAUNCH_CHECK("from_bf16_channels_last_kernel", "batch=", batch, " channels=", channels,
                      " spatial=", spatial);
}

}  // namespace pneumo::kernels
