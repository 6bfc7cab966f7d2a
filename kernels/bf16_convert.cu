// float32 <-> bfloat16 conversions around the tensor-core convolutions of --precision bf16: the
// activations stay float32 NCHW between ops; a convolution with more than one input channel reads
// bfloat16 copies stored channels-last (NHWC for x and dy, KRSC for the weight), the layout
// cuDNN's tensor-core engines read, and its bfloat16 result comes back as float32 NCHW, with the
// bias and ReLU of the forward pass on the way. Rounding is pneumo::bf16_from_float (bf16.hpp),
// the CPU backend's emulation uses the same function.
#include <algorithm>
#include <cstdint>

#include "bf16.hpp"
#include "cuda_check.hpp"
#include "elementwise.hpp"
#include "kernel_util.cuh"
#include "kernels.hpp"

namespace pneumo::kernels {
namespace {

// The two layouts are transposes of each other within an image: NCHW is (channels, spatial),
// channels-last (spatial, channels). Where either side is 1 they coincide, and a per-element pass
// reads and writes contiguously; otherwise each block moves one kTile x kTile tile through shared
// memory, reading it along the source's contiguous axis and writing it along the destination's,
// so neither side strides through memory (the per-element pass on a transpose reads, or writes,
// one 32-byte sector per element). A block takes the same tile of kImagesPerBlock images at once,
// all of their loads issued before the first store: with one image a block, each block's short
// load-sync-store chain left these conversions at 27-31% of an H200's DRAM bandwidth (2026-12-04,
// batch 256) where a device-to-device copy of the fp32 tensor reached 80-87%.
constexpr int kTile = 32;
constexpr int kTileRows = 8;  // blockDim (kTile, kTileRows): each thread moves kTile / kTileRows
constexpr int kRowsPerThread = kTile / kTileRows;
constexpr int kImagesPerBlock = 4;

bool same_order(int64_t channels, int64_t spatial) { return channels == 1 || spatial == 1; }

// Grid (column tiles, row tiles, groups of kImagesPerBlock images, the last strided past 65535)
// for transpose_tiles.
dim3 tile_grid(int64_t batch, int64_t rows, int64_t cols) {
  PNEUMO_CHECK((rows + kTile - 1) / kTile <= 65535, "bf16 conversion: ", rows,
               " rows need more than 65535 tiles");
  const int64_t groups = (batch + kImagesPerBlock - 1) / kImagesPerBlock;
  return dim3(static_cast<unsigned int>((cols + kTile - 1) / kTile),
              static_cast<unsigned int>((rows + kTile - 1) / kTile),
              static_cast<unsigned int>(std::min<int64_t>(groups, 65535)));
}

// Each image of `src` is a (rows, cols) row-major matrix; its transpose, (cols, rows), goes to
// `dst`, one kTile x kTile tile of kImagesPerBlock images per block (tile_grid): read along the
// source's rows, written along the destination's. load(value) converts on the way in,
// store(value, column) on the way out (`column`: the element's column in the source, its channel
// when the source is channels-last).
template <class In, class Out, class Load, class Store>
__device__ void transpose_tiles(const In* src, Out* dst, int64_t batch, int64_t rows,
                                int64_t cols, Load load, Store store) {
  __shared__ float tile[kImagesPerBlock][kTile][kTile + 1];  // +1: no bank conflicts going out
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t image = rows * cols;
  for (int64_t n0 = static_cast<int64_t>(blockIdx.z) * kImagesPerBlock; n0 < batch;
       n0 += static_cast<int64_t>(gridDim.z) * kImagesPerBlock) {
    // The group's loads into registers first (kImagesPerBlock x kRowsPerThread in flight).
    float values[kImagesPerBlock][kRowsPerThread];
#pragma unroll
    for (int j = 0; j < kImagesPerBlock; ++j)
#pragma unroll
      for (int q = 0; q < kRowsPerThread; ++q) {
        const int64_t r = r0 + threadIdx.y + q * kTileRows, c = c0 + threadIdx.x;
        values[j][q] = n0 + j < batch && r < rows && c < cols
                           ? load(src[(n0 + j) * image + r * cols + c])
                           : 0.0f;
      }
#pragma unroll
    for (int j = 0; j < kImagesPerBlock; ++j)
#pragma unroll
      for (int q = 0; q < kRowsPerThread; ++q)
        tile[j][threadIdx.y + q * kTileRows][threadIdx.x] = values[j][q];
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kImagesPerBlock; ++j)
#pragma unroll
      for (int q = 0; q < kRowsPerThread; ++q) {
        const int64_t c = c0 + threadIdx.y + q * kTileRows, r = r0 + threadIdx.x;
        if (n0 + j < batch && r < rows && c < cols)
          dst[(n0 + j) * image + c * rows + r] =
              store(tile[j][threadIdx.x][threadIdx.y + q * kTileRows], c);
      }
    __syncthreads();  // the tiles are refilled for the next group
  }
}

// pneumo::bias_relu with channel c's bias; without a bias, ReLU alone (when asked).
__device__ __forceinline__ float biased(float value, const float* bias, int64_t c, bool relu) {
  if (bias != nullptr) return pneumo::bias_relu(value, bias[c], relu);
  return relu ? pneumo::relu(value) : value;
}

// Layouts that coincide (channels or spatial 1): dst[i] = bf16(src[i]).
__global__ void to_bf16_flat_kernel(const float* src, uint16_t* dst, int64_t total) {
  for (int64_t i = global_thread_index(); i < total; i += grid_stride())
    dst[i] = pneumo::bf16_from_float(src[i]);
}

// (channels, spatial) -> (spatial, channels), rounded to bfloat16.
__global__ void to_bf16_tiled_kernel(const float* src, uint16_t* dst, int64_t batch,
                                     int64_t channels, int64_t spatial) {
  transpose_tiles(
      src, dst, batch, channels, spatial, [](float v) { return v; },
      [](float v, int64_t) { return pneumo::bf16_from_float(v); });
}

// Layouts that coincide: dst[i] = float(src[i]) (+ bias of i's channel, then ReLU).
__global__ void from_bf16_flat_kernel(const uint16_t* src, float* dst, int64_t total,
                                      int64_t channels, int64_t spatial, const float* bias,
                                      bool apply_relu) {
  for (int64_t i = global_thread_index(); i < total; i += grid_stride()) {
    const int64_t c = spatial == 1 ? i % channels : 0;
    dst[i] = biased(pneumo::float_from_bf16(src[i]), bias, c, apply_relu);
  }
}

// (spatial, channels) bfloat16 -> (channels, spatial) float32 (+ bias[c], then ReLU).
__global__ void from_bf16_tiled_kernel(const uint16_t* src, float* dst, int64_t batch,
                                       int64_t channels, int64_t spatial, const float* bias,
                                       bool apply_relu) {
  transpose_tiles(
      src, dst, batch, spatial, channels, [](uint16_t v) { return pneumo::float_from_bf16(v); },
      [=](float v, int64_t c) { return biased(v, bias, c, apply_relu); });
}

}  // namespace

void to_bf16_channels_last(const float* src, uint16_t* dst, int64_t batch, int64_t channels,
                           int64_t spatial, cudaStream_t stream) {
  const int64_t total = batch * channels * spatial;
  if (total == 0) return;
  if (same_order(channels, spatial)) {
    to_bf16_flat_kernel<<<blocks_for(total), kThreadsPerBlock, 0, stream>>>(src, dst, total);
  } else {
    to_bf16_tiled_kernel<<<tile_grid(batch, channels, spatial), dim3(kTile, kTileRows), 0,
                           stream>>>(src, dst, batch, channels, spatial);
  }
  PNEUMO_LAUNCH_CHECK("to_bf16_channels_last", "batch=", batch, " channels=", channels,
                      " spatial=", spatial);
}

void from_bf16_channels_last(const uint16_t* src, float* dst, int64_t batch, int64_t channels,
                             int64_t spatial, const float* bias, bool relu, cudaStream_t stream) {
  const int64_t total = batch * channels * spatial;
  if (total == 0) return;
  if (same_order(channels, spatial)) {
    from_bf16_flat_kernel<<<blocks_for(total), kThreadsPerBlock, 0, stream>>>(
        src, dst, total, channels, spatial, bias, relu);
  } else {
    from_bf16_tiled_kernel<<<tile_grid(batch, spatial, channels), dim3(kTile, kTileRows), 0,
                             stream>>>(src, dst, batch, channels, spatial, bias, relu);
  }
  PNEUMO_LAUNCH_CHECK("from_bf16_channels_last", "batch=", batch, " channels=", channels,
                      " spatial=", spatial);
}

}  // namespace pneumo::kernels
