// Hand-written 3x3 'same' convolution forward kernels and their launchers: y = conv(x) + bias, then
// ReLU (what CudaBackend::conv2d_forward computes), in one pass with the bias and ReLU fused. One
// kernel specialised for a single input channel (the first layer), one tiled direct kernel for any
// channel count. All index math lives in conv_direct_tiles.hpp (shared with the CPU emulation in
// the tests); these kernels only place the phases between barriers. `pneumo bench kernels` times
// them against every cuDNN forward algorithm; CudaBackend times the single-channel one against
// cuDNN's pick on the first layer and runs the faster (the tiled one it does not use).
#include <cstdint>
#include <string>

#include "conv_direct_tiles.hpp"
#include "cuda_check.hpp"
#include "pneumo/error.hpp"
#include "kernels.hpp"

namespace pneumo::kernels {
namespace {

using conv3x3::ConvArgs;

template <int K>
__global__ void __launch_bounds__(conv3x3::single_channel::kThreads)
    conv3x3_single_channel_kernel(ConvArgs a) {
  __shared__ float s_weight[K * conv3x3::kTaps];
  __shared__ float s_bias[K];
  const int thread = static_cast<int>(threadIdx.x);
  conv3x3::single_channel::stage_weights<K>(a, thread, s_weight, s_bias);
  __syncthreads();
  conv3x3::single_channel::compute_pixels<K>(a, s_weight, s_bias, static_cast<int>(blockIdx.x),
                                             static_cast<int>(blockIdx.y), thread);
}

__global__ void __launch_bounds__(conv3x3::tiled::kThreads) conv3x3_tiled_kernel(ConvArgs a) {
  namespace t = conv3x3::tiled;
  __shared__ float s_input[t::kSharedInput];
  __shared__ float s_weight[t::kSharedWeight];
  const t::BlockIndex block{static_cast<int>(blockIdx.x), static_cast<int>(blockIdx.y),
                            static_cast<int>(blockIdx.z)};
  const int thread = static_cast<int>(threadIdx.x);
  t::Accumulators acc;
  t::clear(acc);
  for (int c0 = 0; c0 < a.in_channels; c0 += t::kChunkC) {
    t::stage_chunk(a, block, c0, thread, s_input, s_weight);
    __syncthreads();
    t::accumulate_chunk(s_input, s_weight, thread, acc);
    __syncthreads();  // the next chunk overwrites what this one read
  }
  t::store_tile(a, block, thread, acc);
}

// Checks shared by both launchers; returns the arguments with int dimensions.
ConvArgs make_args(const char* op, const float* x, const float* weight, const float* bias, float* y,
                   int64_t batch, int64_t in_channels, int64_t height, int64_t width,
                   int64_t out_channels, bool relu) {
  PNEUMO_CHECK(batch >= 0 && in_channels >= 1 && height >= 1 && width >= 1 && out_channels >= 1,
               op, ": bad shape x (", batch, ", ", in_channels, ", ", height, ", ", width,
               ") -> ", out_channels, " channels");
  // Grid limits (y and z are 16-bit) and 32-bit row/column arithmetic inside the kernels.
  PNEUMO_CHECK(batch <= 65535 && height <= 32768 && width <= 32768 && in_channels <= 65535 &&
                   out_channels <= 65535,
               op, ": shape x (", batch, ", ", in_channels, ", ", height, ", ", width, ") -> ",
               out_channels, " exceeds what the launch geometry covers");
  PNEUMO_CHECK(batch == 0 || (x && weight && bias && y), op, ": null pointer");
  return {x,
          weight,
          bias,
          y,
          static_cast<int>(batch),
          static_cast<int>(in_channels),
          static_cast<int>(out_channels),
          static_cast<int>(height),
          static_cast<int>(width),
          relu,
          false};
}

}  // namespace

bool conv3x3_single_channel_supported(int64_t in_channels, int64_t out_channels) {
  return in_channels == 1 && (out_channels == 16 || out_channels == 32 || out_channels == 64);
}

void conv3x3_forward_single_channel(const float* x, const float* weight, const float* bias, float* y,
                                    int64_t batch, int64_t height, int64_t width,
                                    int64_t out_channels, bool relu, cudaStream_t stream) {
  constexpr const char* op = "conv3x3_forward_single_channel";
  PNEUMO_CHECK(conv3x3_single_channel_supported(1, out_channels), op,
               ": takes 16, 32 or 64 output channels, got ", out_channels);
  ConvArgs a = make_args(op, x, weight, bias, y, batch, 1, height, width, out_channels, relu);
  if (batch == 0) return;
  a.vector_stores = conv3x3::vector_stores_possible(y, height * width);
  namespace s = conv3x3::single_channel;
  const dim3 grid(static_cast<unsigned>(s::blocks_per_plane(a.height, a.width)),
                  static_cast<unsigned>(batch));
  switch (out_channels) {
    case 16:
      conv3x3_single_channel_kernel<16><<<grid, s::kThreads, 0, stream>>>(a);
      break;
    case 32:
      conv3x3_single_channel_kernel<32><<<grid, s::kThreads, 0, stream>>>(a);
      break;
    default:
      conv3x3_single_channel_kernel<64><<<grid, s::kThreads, 0, stream>>>(a);
      break;
  }
  PNEUMO_LAUNCH_CHECK("conv3x3_single_channel_kernel", "x (", batch, ", 1, ", height, ", ", width,
                      ") -> K=", out_channels, ", grid ", grid.x, "x", grid.y);
}

void conv3x3_forward_tiled(const float* x, const float* weight, const float* bias, float* y,
                           int64_t batch, int64_t in_channels, int64_t height, int64_t width,
                           int64_t out_channels, bool relu, cudaStream_t stream) {
  constexpr const char* op = "conv3x3_forward_tiled";
  const ConvArgs a =
      make_args(op, x, weight, bias, y, batch, in_channels, height, width, out_channels, relu);
  if (batch == 0) return;
  namespace t = conv3x3::tiled;
  const t::TileGrid g = t::tile_grid(a);
  PNEUMO_CHECK(g.k_tiles <= 65535, op, ": ", out_channels, " output channels exceed the grid");
  const dim3 grid(static_cast<unsigned>(g.tiles()), static_cast<unsigned>(g.k_tiles),
                  static_cast<unsigned>(batch));
  conv3x3_tiled_kernel<<<grid, t::kThreads, 0, stream>>>(a);
  PNEUMO_LAUNCH_CHECK("conv3x3_tiled_kernel", "x (", batch, ", ", in_channels, ", ", height, ", ",
                      width, ") -> K=", out_channels, ", grid ", grid.x, "x", grid.y, "x", grid.z);
}

}  // namespace pneumo::kernels
