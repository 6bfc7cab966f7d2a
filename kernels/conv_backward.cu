// The weight and bias gradients of a 3x3 'same' convolution with one input channel (the first
// layer), with its launcher: cuDNN's deterministic algorithms are slow on this shape (on an H100,
// 6.0 ms at batch 256 where a non-deterministic one takes 1.0 ms), and the work is one pass over
// dy, which gives the bias gradient (dy's sum) on the way.
// Deterministic: each block writes partial sums for its tile, a second kernel adds them in tile
// order. CudaBackend times it against cuDNN's pick on the first call and runs the faster.
#include <cstdint>

#include "cuda_check.hpp"
#include "kernel_util.cuh"
#include "pneumo/error.hpp"
#include "pneumo/op_geometry.hpp"
#include "kernels.hpp"

namespace pneumo::kernels {
namespace {

// The contract's geometry (pneumo/op_geometry.hpp) in the kernel's int arithmetic: tap (ky, kx)
// of output pixel (r, c) reads x[r + ky - kPadding, c + kx - kPadding], zero outside the image.
constexpr int kKernel = static_cast<int>(ConvGeometry::kKernel);
constexpr int kPadding = static_cast<int>(ConvGeometry::kPadding);
constexpr int kTaps = kKernel * kKernel;  // weights per output channel (one input channel)
constexpr int kSums = kTaps + 1;          // a channel's sums: its taps, then dy alone (the bias)

// A block covers kTileRows x kTileCols output pixels of one image; its input tile, with the halo
// of kPadding pixels on each side that the window reads, sits in shared memory.
constexpr int kTileRows = 16, kTileCols = 64;
constexpr int kHaloRows = kTileRows + kKernel - 1, kHaloCols = kTileCols + kKernel - 1;
constexpr int kWarps = kThreadsPerBlock / 32;

struct WgradArgs {
  const float* x;   // (N, 1, H, W)
  const float* dy;  // (N, K, H, W)
  float* partial;   // (K * kSums, blocks), block = image * tiles + tile: an output's partials in
                    // a row
  int height, width, out_channels, tiles_across, tiles;
};

// dweight[k, ky, kx] over this block's pixels: sum of dy[n, k, r, c] x[n, r + ky - kPadding,
// c + kx - kPadding]; dbias[k]: sum of dy[n, k, r, c]. Each warp takes kGroup output channels at
// once (groups warp, warp + 8, ...); its lanes walk the tile's pixels (a row of 32 consecutive
// columns at a time: coalesced dy reads), reading the pixel's window from shared memory once for
// the group and the group's kGroup dy values together (kGroup loads in flight a thread, twice
// that unrolled), then shuffle-add their kSums sums. Each channel's weight sums are added in the
// order one channel at a time added them (pixels lane, lane + 32, ..., then the shuffle tree):
// the same bits for finite x.
constexpr int kGroup = 4;

__global__ void __launch_bounds__(kThreadsPerBlock, 3)
    wgrad_single_channel_partial_kernel(WgradArgs a) {
  __shared__ float s_x[kHaloRows * kHaloCols];
  const int tile = static_cast<int>(blockIdx.x), n = static_cast<int>(blockIdx.y);
  const int row0 = (tile / a.tiles_across) * kTileRows, col0 = (tile % a.tiles_across) * kTileCols;
  const int64_t plane = static_cast<int64_t>(a.height) * a.width;
  const float* x = a.x + n * plane;
  for (int i = threadIdx.x; i < kHaloRows * kHaloCols; i += blockDim.x) {
    const int r = row0 + i / kHaloCols - kPadding, c = col0 + i % kHaloCols - kPadding;
    const bool inside = r >= 0 && r < a.height && c >= 0 && c < a.width;
    s_x[i] = inside ? x[static_cast<int64_t>(r) * a.width + c] : 0.0f;
  }
  __syncthreads();

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t block = static_cast<int64_t>(n) * a.tiles + tile;
  const int64_t blocks = static_cast<int64_t>(gridDim.y) * a.tiles;
  for (int k0 = warp * kGroup; k0 < a.out_channels; k0 += kWarps * kGroup) {
    const int count = min(kGroup, a.out_channels - k0);  // channels of this group that exist
    // Channel j's plane, or the group's last existing one for j >= count (read, never stored):
    // every load below is unconditional, so a thread's loads can all be in flight together.
    const float* dy[kGroup];
#pragma unroll
    for (int j = 0; j < kGroup; ++j)
      dy[j] = a.dy + (static_cast<int64_t>(n) * a.out_channels + k0 + min(j, count - 1)) * plane;
    float sum[kGroup][kSums] = {};
#pragma unroll 2
    for (int p = lane; p < kTileRows * kTileCols; p += 32) {
      const int tr = p / kTileCols, tc = p % kTileCols;
      const int r = row0 + tr, c = col0 + tc;
      // A pixel past the image's edge reads the plane's first value and adds g = 0: with x finite,
      // adding 0 * w to a sum leaves it as it was (the sums start at +0 and never become -0).
      const bool inside = r < a.height && c < a.width;
      const int64_t at = inside ? static_cast<int64_t>(r) * a.width + c : 0;
      float g[kGroup];
#pragma unroll
      for (int j = 0; j < kGroup; ++j) {
        const float value = dy[j][at];
        g[j] = inside ? value : 0.0f;
      }
      const float* window = s_x + tr * kHaloCols + tc;  // x[r - kPadding, c - kPadding]
      float w[kTaps];
#pragma unroll
      for (int ky = 0; ky < kKernel; ++ky)
#pragma unroll
        for (int kx = 0; kx < kKernel; ++kx) w[ky * kKernel + kx] = window[ky * kHaloCols + kx];
#pragma unroll
      for (int j = 0; j < kGroup; ++j) {
#pragma unroll
        for (int t = 0; t < kTaps; ++t) sum[j][t] += g[j] * w[t];
        sum[j][kTaps] += g[j];
      }
    }
#pragma unroll
    for (int j = 0; j < kGroup; ++j)
#pragma unroll
      for (int t = 0; t < kSums; ++t) {
        float v = sum[j][t];
        for (int offset = 16; offset > 0; offset >>= 1)
          v += __shfl_down_sync(0xffffffffu, v, offset);
        if (lane == 0 && j < count) a.partial[((k0 + j) * kSums + t) * blocks + block] = v;
      }
  }
}

// One block per sum o = k kSums + t: its row of partials, added in a fixed order (each thread a
// strided share, coalesced, then the block's tree), into dweight[k, t] or, for t = kTaps, dbias[k].
__global__ void wgrad_single_channel_total_kernel(const float* partial, float* dweight,
                                                  float* dbias, int64_t blocks) {
  const float* row = partial + blockIdx.x * blocks;
  float sum = 0.0f;
  for (int64_t b = threadIdx.x; b < blocks; b += blockDim.x) sum += row[b];
  sum = block_sum(sum);
  if (threadIdx.x != 0) return;
  const unsigned int k = blockIdx.x / kSums, t = blockIdx.x % kSums;
  if (t < kTaps)
    dweight[k * kTaps + t] = sum;
  else
    dbias[k] = sum;
}

int64_t tiles_across(int64_t width) { return (width + kTileCols - 1) / kTileCols; }
int64_t tiles_per_image(int64_t height, int64_t width) {
  return ((height + kTileRows - 1) / kTileRows) * tiles_across(width);
}

}  // namespace

int64_t conv3x3_backward_filter_single_channel_scratch_floats(int64_t batch, int64_t height,
                                                               int64_t width,
                                                               int64_t out_channels) {
  return batch * tiles_per_image(height, width) * out_channels * kSums;
}

void conv3x3_backward_filter_single_channel(const float* x, const float* dy, float* dweight,
                                            float* dbias, float* scratch, int64_t batch,
                                            int64_t height, int64_t width, int64_t out_channels,
                                            cudaStream_t stream) {
  constexpr const char* op = "conv3x3_backward_filter_single_channel";
  PNEUMO_CHECK(batch >= 1 && height >= 1 && width >= 1 && out_channels >= 1 && batch <= 65535 &&
                   height <= 32768 && width <= 32768 && out_channels <= 65535,
               op, ": shape x (", batch, ", 1, ", height, ", ", width, ") -> ", out_channels,
               " is empty or exceeds what the launch geometry covers");
  const int64_t tiles = tiles_per_image(height, width);
  const WgradArgs a{x,
                    dy,
                    scratch,
                    static_cast<int>(height),
                    static_cast<int>(width),
                    static_cast<int>(out_channels),
                    static_cast<int>(tiles_across(width)),
                    static_cast<int>(tiles)};
  const dim3 grid(static_cast<unsigned int>(tiles), static_cast<unsigned int>(batch));
  wgrad_single_channel_partial_kernel<<<grid, kThreadsPerBlock, 0, stream>>>(a);
  PNEUMO_LAUNCH_CHECK("wgrad_single_channel_partial_kernel", "x (", batch, ", 1, ", height, ", ",
                      width, ") -> ", out_channels);
  const int64_t outputs = out_channels * kSums;
  wgrad_single_channel_total_kernel<<<static_cast<unsigned int>(outputs), kThreadsPerBlock, 0,
                                      stream>>>(scratch, dweight, dbias, batch * tiles);
  PNEUMO_LAUNCH_CHECK("wgrad_single_channel_total_kernel", "outputs=", outputs);
}

}  // namespace pneumo::kernels
