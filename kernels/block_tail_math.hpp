// Per-element and per-window arithmetic of the fused block tail (pneumo/ops/block_tail.hpp),
// shared by kernels/batchnorm.cu and the CPU twin (src/cpu/block_tail.cpp): the value batch-norm
// sees, the pooling window's winner (recomputed by the backward pass instead of stored), one
// element's gradient, and the stem's activation recomputed from the image (StemPlane). Each is the
// composition of the unfused ops' own element functions (elementwise.hpp), so the fused ops
// compute what the chain does.
#pragma once

#include <cmath>
#include <cstdint>

#include "elementwise.hpp"
#include "pneumo/hostdevice.hpp"
#include "pneumo/op_geometry.hpp"
#include "pneumo/random.hpp"

namespace pneumo {

// The block tail's per-element constants for one channel and one call.
struct BlockTailChannel {
  float mean, inv_std, gamma, beta;
  float rate;  // dropout rate; 0 in inference and in blocks without dropout
  RngKey key;  // dropout key, key.first a multiple of 4 (the op's entry checks it)
  // With dropout (rate > 0) on the GPU: the call's mask, dropout_keep_word's words over the whole
  // tensor, drawn once per pass instead of one Philox call per element read (up to five a
  // training step). The CPU twin draws its multipliers itself and calls with rate 0.
  const uint32_t* keep = nullptr;
};

// The dropout multiplier of element `index` (local to the tensor): 1 without dropout.
PNEUMO_HD float block_tail_mask(const BlockTailChannel& ch, int64_t index) {
  return ch.rate > 0.0f ? dropout_multiplier_from_words(ch.keep, index, ch.rate) : 1.0f;
}

// What batch-norm normalises: a through dropout, as dropout_forward writes it (x * multiplier).
PNEUMO_HD float block_tail_dropped(float a, const BlockTailChannel& ch, int64_t index) {
  return ch.rate > 0.0f ? a * block_tail_mask(ch, index) : a;
}

// What max pooling sees: batch-norm of the dropped value, as batchnorm_apply computes it.
PNEUMO_HD float block_tail_normalized(float a, const BlockTailChannel& ch, int64_t index) {
  return batchnorm_apply(block_tail_dropped(a, ch, index), ch.mean, ch.inv_std, ch.gamma, ch.beta);
}

// The window of pooled output (oy, ox) in a plane of g.height x g.width: its real elements (1, 2
// or 4 of them, row-major; padding rows/columns left out) as offsets in the plane and as rows and
// columns (so that the stem, which recomputes an element from its neighbours, divides nothing).
struct PoolWindow {
  int count;
  int64_t offset[4];
  int64_t row[4], col[4];
};

PNEUMO_HD PoolWindow pool_window(const PoolGeometry& g, int64_t oy, int64_t ox) {
  PoolWindow w{0, {0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}};
  const int64_t r0 = 2 * oy - g.pad_top(), c0 = 2 * ox - g.pad_left();
  for (int64_t r = r0; r < r0 + 2; ++r)
    for (int64_t c = c0; c < c0 + 2; ++c)
      if (r >= 0 && c >= 0) {
        w.offset[w.count] = r * g.width + c;
        w.row[w.count] = r;
        w.col[w.count++] = c;
      }
  return w;
}

// The window's max and which of its elements holds it: visited in row-major order, a value
// replaces the current best only when strictly larger (ties go to the first; a NaN never
// replaces anything), pneumo/ops/pooling.hpp's rule. `plane` points at a's plane, `plane_index`
// is the plane's first element's index in the tensor (for the dropout mask).
struct WindowWinner {
  float value;
  int slot;  // index into PoolWindow::offset
};

// `activation.in_window(w, k)`: a at the window's element k (a pointer read, or block 1's
// activation recomputed from the image: StemPlane).
template <class Activation>
PNEUMO_HD WindowWinner block_tail_winner_of(const Activation& activation, int64_t plane_index,
                                            const PoolWindow& w, const BlockTailChannel& ch) {
  WindowWinner best{
      block_tail_normalized(activation.in_window(w, 0), ch, plane_index + w.offset[0]), 0};
  for (int k = 1; k < w.count; ++k) {
    const float v =
        block_tail_normalized(activation.in_window(w, k), ch, plane_index + w.offset[k]);
    if (v > best.value) best = {v, k};
  }
  return best;
}

struct PlaneValues {
  const float* a;
  PNEUMO_HD float operator()(int64_t offset) const { return a[offset]; }
  PNEUMO_HD float in_window(const PoolWindow& w, int k) const { return a[w.offset[k]]; }
};

PNEUMO_HD WindowWinner block_tail_winner(const float* plane, int64_t plane_index,
                                         const PoolWindow& w, const BlockTailChannel& ch) {
  return block_tail_winner_of(PlaneValues{plane}, plane_index, w, ch);
}

// ---- Block 1 whole (the stem): its one-channel convolution recomputed, never stored ----------
// a = relu(bias + sum over the 3x3 taps, row-major, of w[t] x[tap], fused multiply-adds from 0,
// zero padding): the arithmetic of the direct one-channel kernel (conv_direct_tiles.hpp), so the
// recomputed activation is the stored one's bits where that kernel runs.
struct StemPlane {
  const float* x;  // the image's plane (one channel)
  int64_t height, width;
  float w[9];
  float bias;
  // Planes hold fewer than 2^32 pixels (checked_stem), so one 32-bit division finds the pixel.
  PNEUMO_HD float operator()(int64_t offset) const {
    const auto o = static_cast<uint32_t>(offset), w = static_cast<uint32_t>(width);
    return at(o / w, o % w);
  }
  PNEUMO_HD float in_window(const PoolWindow& w, int k) const { return at(w.row[k], w.col[k]); }
  PNEUMO_HD float at(int64_t row, int64_t col) const {
    float acc = 0.0f;
    for (int ky = 0; ky < 3; ++ky)
      for (int kx = 0; kx < 3; ++kx) {
        const int64_t iy = row + ky - 1, ix = col + kx - 1;
        const float tap = iy >= 0 && iy < height && ix >= 0 && ix < width ? x[iy * width + ix] : 0.0f;
        acc = fmaf(w[ky * 3 + kx], tap, acc);
      }
    return relu(acc + bias);
  }
  // The input under tap t of pixel (row, col) (0 in the padding): what d loss / d w[t] multiplies.
  PNEUMO_HD float tap(int64_t row, int64_t col, int t) const {
    const int64_t iy = row + t / 3 - 1, ix = col + t % 3 - 1;
    return iy >= 0 && iy < height && ix >= 0 && ix < width ? x[iy * width + ix] : 0.0f;
  }
};

// The normalised value xhat = (d - mean) inv_std of the element at `offset`, for dgamma's sum.
PNEUMO_HD float block_tail_xhat(const float* plane, int64_t plane_index, int64_t offset,
                                const BlockTailChannel& ch) {
  return (block_tail_dropped(plane[offset], ch, plane_index + offset) - ch.mean) * ch.inv_std;
}

// da of one element: dz (the window's dy at its winner, 0 elsewhere) through batch-norm's
// backward (batchnorm_input_gradient with the channel's factors), the dropout mask (`mask`, the
// element's block_tail_mask) and ReLU's gradient at a: relu_backward(a, dropout(batchnorm
// backward(dz))), as the unfused ops compute it.
PNEUMO_HD float block_tail_gradient(float a, float mask, float dz, const BlockTailChannel& ch,
                                    float scale, float mean_dy, float mean_dy_xhat) {
  const float d = ch.rate > 0.0f ? a * mask : a;
  const float dd = batchnorm_input_gradient(d, dz, ch.mean, ch.inv_std, scale, mean_dy,
                                            mean_dy_xhat);
  return relu_backward(a, ch.rate > 0.0f ? dd * mask : dd);
}

}  // namespace pneumo
