// The whole arithmetic and index math of the hand-written 3x3 'same' convolution forward kernels
// (kernels/conv_direct.cu), as __host__ __device__ functions of (block, thread). The kernels are
// thin shells around them; tests/test_conv_direct.cpp runs the very same functions on the CPU, block
// by block and phase by phase (a __syncthreads() is a phase boundary), so the tiling is checked
// without a GPU. Nothing here may use a CUDA-only intrinsic outside an __CUDA_ARCH__ branch.
#pragma once

#include <cmath>
#include <cstdint>
#include <stdexcept>

#include "elementwise.hpp"
#include "pneumo/hostdevice.hpp"
#include "pneumo/op_geometry.hpp"

namespace pneumo::kernels::conv3x3 {

// The contract's geometry (pneumo/op_geometry.hpp) in the int arithmetic of the kernels: tap
// (ky, kx) of output pixel (y, x) reads input pixel (y + ky - kPadding, x + kx - kPadding), zero
// outside the image.
constexpr int kKernel = static_cast<int>(ConvGeometry::kKernel);    // taps per row and column
constexpr int kPadding = static_cast<int>(ConvGeometry::kPadding);  // zero pixels on each side
constexpr int kTaps = kKernel * kKernel;  // weights per (output, input) channel pair
constexpr int kHalo = kKernel - 1;  // extra input rows (columns) a block of output rows reads
static_assert(kHalo == 2 * kPadding, "'same': the output has the input's height and width");

// x: (batch, in_channels, height, width), weight: (out_channels, in_channels, kKernel, kKernel)
// (PyTorch), bias: (out_channels) -> y: (batch, out_channels, height, width) = conv(x) + bias,
// then ReLU when `relu`: what CudaBackend::conv2d_forward computes. Padding: kPadding zero pixels
// on every side.
struct ConvArgs {
  const float* x;
  const float* weight;
  const float* bias;
  float* y;
  int batch, in_channels, out_channels, height, width;
  bool relu;
  bool vector_stores;  // single-channel kernel only: y is 16-byte aligned and H*W % 4 == 0
};

PNEUMO_HD float finish_output(float accumulated, float bias, bool relu) {
  const float value = accumulated + bias;
  return relu ? pneumo::relu(value) : value;
}

// Four consecutive floats at dst: one 16-byte store on the device. The caller guarantees the
// alignment; the host (emulation) path checks it, so a broken guarantee fails the CPU tests.
PNEUMO_HD void store4(float* dst, const float (&v)[4]) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<float4*>(dst) = make_float4(v[0], v[1], v[2], v[3]);
#else
  if (reinterpret_cast<uintptr_t>(dst) % 16 != 0)
    throw std::logic_error("conv3x3::store4: destination is not 16-byte aligned");
  for (int i = 0; i < 4; ++i) dst[i] = v[i];
#endif
}

// Whether the single-channel kernel may write y (N, K, plane) with float4 stores: every channel's
// plane then starts on a 16-byte boundary. The launcher and the CPU emulation both ask this.
inline bool vector_stores_possible(const float* y, int64_t plane) {
  return plane % 4 == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0;
}

// ---- Single input channel (the first layer: (N, 1, 150, 150) -> 32 channels) ---------------------
// The layer is bound by its output stores (32 floats written per input pixel read), so each thread
// takes four consecutive pixels of the flattened H*W plane and writes them for every output
// channel as one float4: a warp writes 512 contiguous bytes per channel. The 3x3 neighbourhoods are
// read straight from global memory (the image is small and stays in L1); the K x kTaps weights and
// the bias sit in shared memory, read by all threads at the same address (a broadcast).
namespace single_channel {

constexpr int kThreads = 256;
constexpr int kPixelsPerThread = 4;

// Pixel groups in one image plane; grid: x = ceil(groups / kThreads) blocks, y = image.
PNEUMO_HD int64_t groups_per_plane(int height, int width) {
  return (static_cast<int64_t>(height) * width + kPixelsPerThread - 1) / kPixelsPerThread;
}
inline int64_t blocks_per_plane(int height, int width) {
  return (groups_per_plane(height, width) + kThreads - 1) / kThreads;
}

// Phase 1 (before __syncthreads): the block copies weight (K, 1, kKernel, kKernel) and bias (K)
// into s_weight (K * kTaps) and s_bias (K).
template <int K>
PNEUMO_HD void stage_weights(const ConvArgs& a, int thread, float* s_weight, float* s_bias) {
  for (int i = thread; i < K * kTaps; i += kThreads) s_weight[i] = a.weight[i];
  for (int i = thread; i < K; i += kThreads) s_bias[i] = a.bias[i];
}

// Phase 2: thread `thread` of block (block_x, image) computes pixels [4g, 4g + 4) of the plane
// (fewer at its end) for all K output channels.
template <int K>
PNEUMO_HD void compute_pixels(const ConvArgs& a, const float* s_weight, const float* s_bias,
                              int block_x, int image, int thread) {
  const int64_t group = static_cast<int64_t>(block_x) * kThreads + thread;
  if (group >= groups_per_plane(a.height, a.width)) return;
  const int64_t plane = static_cast<int64_t>(a.height) * a.width;
  const int64_t first = group * kPixelsPerThread;
  const float* image_x = a.x + static_cast<int64_t>(image) * plane;
  // taps[q][ky * kKernel + kx]: input at (row + ky - kPadding, col + kx - kPadding) of pixel
  // first + q, 0 outside.
  float taps[kPixelsPerThread][kTaps];
  int valid = 0;
  for (int q = 0; q < kPixelsPerThread; ++q) {
    const int64_t p = first + q;
    const bool inside = p < plane;
    valid += inside ? 1 : 0;
    const int row = inside ? static_cast<int>(p / a.width) : 0;
    const int col = inside ? static_cast<int>(p % a.width) : 0;
    for (int ky = 0; ky < kKernel; ++ky)
      for (int kx = 0; kx < kKernel; ++kx) {
        const int iy = row + ky - kPadding, ix = col + kx - kPadding;
        const bool read = inside && iy >= 0 && iy < a.height && ix >= 0 && ix < a.width;
        taps[q][ky * kKernel + kx] = read ? image_x[static_cast<int64_t>(iy) * a.width + ix] : 0.0f;
      }
  }
  // y (N, K, H, W): channel k of this image starts at (image * K + k) * plane; `first` is a
  // multiple of 4, so with vector_stores (plane % 4 == 0, y aligned) every float4 is aligned.
  float* out = a.y + static_cast<int64_t>(image) * K * plane + first;
  const bool vector = a.vector_stores && valid == kPixelsPerThread;
  for (int k = 0; k < K; ++k) {
    float v[kPixelsPerThread];
    for (int q = 0; q < kPixelsPerThread; ++q) {
      float acc = 0.0f;
      for (int t = 0; t < kTaps; ++t) acc = fmaf(s_weight[k * kTaps + t], taps[q][t], acc);
      v[q] = finish_output(acc, s_bias[k], a.relu);
    }
    float* dst = out + static_cast<int64_t>(k) * plane;
    if (vector) {
      store4(dst, v);
    } else {
      for (int q = 0; q < kPixelsPerThread; ++q)  // constant bound: v stays in registers
        if (q < valid) dst[q] = v[q];
    }
  }
}

}  // namespace single_channel

// ---- Any channel count: tiled direct convolution (layers 2-5) -------------------------------------
// A block computes an output tile of kTileRows x kTileCols pixels of one image for kTileK output
// channels. Input channels are walked in chunks of kChunkC: the chunk's input tile (with its halo
// of kPadding pixels on each side) and the matching weights are staged in shared memory, then
// every thread accumulates a register micro-tile of kThreadK channels x kThreadRows x kThreadCols
// pixels, so each shared-memory read feeds several FMAs (per channel: 24 input + 36 weight reads,
// 288 FMAs).
namespace tiled {

constexpr int kThreads = 256;
constexpr int kTileRows = 8, kTileCols = 16;   // output pixels per block
constexpr int kThreadRows = 2, kThreadCols = 4;  // output pixels per thread
constexpr int kPixelThreadsX = kTileCols / kThreadCols;  // 4
constexpr int kPixelThreads = (kTileRows / kThreadRows) * kPixelThreadsX;  // 16
constexpr int kTileK = 64, kThreadK = 4;  // output channels per block, per thread
constexpr int kChannelThreads = kTileK / kThreadK;  // 16
constexpr int kChunkC = 8;  // input channels staged at a time
static_assert(kPixelThreads * kChannelThreads == kThreads, "one thread per micro-tile");

// Shared input tile per channel: (kTileRows + kHalo) x (kTileCols + kHalo) with the halo, stored
// with a row stride of 24 floats: a warp's 16 distinct reads then fall into 2 per bank at most
// (with the unpadded stride kInCols = 18, up to 4). Weights are stored [c * kTaps + tap][k] with a row stride of
// kTileK + 1, so the staging writes (consecutive taps of one k) hit consecutive banks; the reads
// are broadcasts.
constexpr int kInRows = kTileRows + kHalo, kInCols = kTileCols + kHalo;
constexpr int kInStride = 24;
static_assert(kInStride >= kInCols, "a staged row fits in its stride");
constexpr int kInPlane = kInRows * kInStride;
constexpr int kSharedInput = kChunkC * kInPlane;  // floats
constexpr int kWeightStride = kTileK + 1;
constexpr int kSharedWeight = kChunkC * kTaps * kWeightStride;  // floats
static_assert((kSharedInput + kSharedWeight) * 4 <= 48 * 1024, "static shared memory limit");

struct TileGrid {
  int tiles_x, tiles_y, k_tiles;
  PNEUMO_HD int tiles() const { return tiles_x * tiles_y; }
};
// Grid: x = spatial tile (tiles_x * tiles_y), y = output-channel tile, z = image.
PNEUMO_HD TileGrid tile_grid(const ConvArgs& a) {
  return {(a.width + kTileCols - 1) / kTileCols, (a.height + kTileRows - 1) / kTileRows,
          (a.out_channels + kTileK - 1) / kTileK};
}

struct BlockIndex {
  int tile, k_tile, image;
};

struct Accumulators {
  float v[kThreadK][kThreadRows][kThreadCols];
};

PNEUMO_HD void clear(Accumulators& acc) {
  for (int j = 0; j < kThreadK; ++j)
    for (int r = 0; r < kThreadRows; ++r)
      for (int q = 0; q < kThreadCols; ++q) acc.v[j][r][q] = 0.0f;
}

// Thread `thread` owns output rows [row0, row0 + kThreadRows) and columns [col0, col0 +
// kThreadCols) of the tile, for channels k_lane + kChannelThreads * j, j < kThreadK. Lanes of a warp
// share k_lane in pairs of 16, so their weight reads are broadcasts.
struct ThreadTile {
  int row0, col0, k_lane;
};
PNEUMO_HD ThreadTile thread_tile(int thread) {
  const int pixel_thread = thread % kPixelThreads;
  return {(pixel_thread / kPixelThreadsX) * kThreadRows, (pixel_thread % kPixelThreadsX) * kThreadCols,
          thread / kPixelThreads};
}

// Phase 1: the block stages input channels [c0, c0 + kChunkC) of its tile with the halo (zeros
// outside the image and past in_channels), and those channels' weights for its kTileK output
// channels (zeros past out_channels or in_channels).
PNEUMO_HD void stage_chunk(const ConvArgs& a, const BlockIndex& b, int c0, int thread,
                           float* s_input, float* s_weight) {
  const TileGrid g = tile_grid(a);
  const int y0 = (b.tile / g.tiles_x) * kTileRows - kPadding;  // image row of halo row 0
  const int x0 = (b.tile % g.tiles_x) * kTileCols - kPadding;
  const int64_t image_base = static_cast<int64_t>(b.image) * a.in_channels;
  for (int i = thread; i < kChunkC * kInRows * kInCols; i += kThreads) {
    const int c = i / (kInRows * kInCols);
    const int r = (i / kInCols) % kInRows, col = i % kInCols;
    const int channel = c0 + c, iy = y0 + r, ix = x0 + col;
    float value = 0.0f;
    if (channel < a.in_channels && iy >= 0 && iy < a.height && ix >= 0 && ix < a.width)
      value = a.x[((image_base + channel) * a.height + iy) * a.width + ix];
    s_input[c * kInPlane + r * kInStride + col] = value;
  }
  // weight (K, C, kKernel, kKernel): for one k, channels [c0, c0 + kChunkC) are kChunkC * kTaps
  // contiguous floats starting at (k * C + c0) * kTaps, so consecutive i read consecutive
  // addresses.
  const int k0 = b.k_tile * kTileK;
  for (int i = thread; i < kTileK * kChunkC * kTaps; i += kThreads) {
    const int k = i / (kChunkC * kTaps), rest = i % (kChunkC * kTaps);  // rest = c * kTaps + tap
    float value = 0.0f;
    if (k0 + k < a.out_channels && c0 + rest / kTaps < a.in_channels)
      value = a.weight[(static_cast<int64_t>(k0 + k) * a.in_channels + c0) * kTaps + rest];
    s_weight[rest * kWeightStride + k] = value;
  }
}

// Phase 2: the thread adds the staged chunk's contribution to its micro-tile. Output pixel (r, q)
// of the tile reads halo-tile pixel (r + ky, q + kx) for tap (ky, kx): halo row 0 is kPadding
// rows above the tile.
PNEUMO_HD void accumulate_chunk(const float* s_input, const float* s_weight, int thread,
                                Accumulators& acc) {
  const ThreadTile t = thread_tile(thread);
  for (int c = 0; c < kChunkC; ++c) {
    float in[kThreadRows + kHalo][kThreadCols + kHalo];
    const float* plane = s_input + c * kInPlane;
    for (int r = 0; r < kThreadRows + kHalo; ++r)
      for (int q = 0; q < kThreadCols + kHalo; ++q)
        in[r][q] = plane[(t.row0 + r) * kInStride + t.col0 + q];
    for (int ky = 0; ky < kKernel; ++ky)
      for (int kx = 0; kx < kKernel; ++kx) {
        const float* taps = s_weight + (c * kTaps + ky * kKernel + kx) * kWeightStride + t.k_lane;
        float w[kThreadK];
        for (int j = 0; j < kThreadK; ++j) w[j] = taps[j * kChannelThreads];
        for (int j = 0; j < kThreadK; ++j)
          for (int r = 0; r < kThreadRows; ++r)
            for (int q = 0; q < kThreadCols; ++q)
              acc.v[j][r][q] = fmaf(w[j], in[r + ky][q + kx], acc.v[j][r][q]);
      }
  }
}

// Phase 3: bias, ReLU and the store of the micro-tile's pixels that lie inside the image.
PNEUMO_HD void store_tile(const ConvArgs& a, const BlockIndex& b, int thread,
                          const Accumulators& acc) {
  const TileGrid g = tile_grid(a);
  const ThreadTile t = thread_tile(thread);
  const int oy0 = (b.tile / g.tiles_x) * kTileRows + t.row0;
  const int ox0 = (b.tile % g.tiles_x) * kTileCols + t.col0;
  for (int j = 0; j < kThreadK; ++j) {
    const int k = b.k_tile * kTileK + t.k_lane + j * kChannelThreads;
    if (k >= a.out_channels) continue;
    const float bias = a.bias[k];
    float* plane = a.y + (static_cast<int64_t>(b.image) * a.out_channels + k) * a.height * a.width;
    for (int r = 0; r < kThreadRows; ++r) {
      const int oy = oy0 + r;
      if (oy >= a.height) continue;
      for (int q = 0; q < kThreadCols; ++q) {
        const int ox = ox0 + q;
        if (ox >= a.width) continue;
        plane[static_cast<int64_t>(oy) * a.width + ox] = finish_output(acc.v[j][r][q], bias, a.relu);
      }
    }
  }
}

}  // namespace tiled

}  // namespace pneumo::kernels::conv3x3
