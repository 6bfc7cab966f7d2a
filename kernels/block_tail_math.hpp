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
#include "pool_window.hpp"
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

// `activation.in_window(w, p)`: a at the window's position p (a pointer read, or block 1's
// activation recomputed from the image: StemWindow).
// The winner is pooling's (window_first_max) over the normalised dropped values; `plane_index` is
// the plane's first element's index in the tensor (for the dropout mask).
template <class Activation>
PNEUMO_HD WindowWinner block_tail_winner_of(const Activation& activation, int64_t plane_index,
                                            const PoolWindow& w, const BlockTailChannel& ch) {
  return window_first_max(w, [&](int p) {
    return block_tail_normalized(activation.in_window(w, p), ch, plane_index + w.offset(p));
  });
}

struct PlaneValues {
  const float* a;
  PNEUMO_HD float operator()(int64_t offset) const { return a[offset]; }
  PNEUMO_HD float in_window(const PoolWindow& w, int p) const { return a[w.offset(p)]; }
  PNEUMO_HD PlaneValues window(const PoolWindow&) const { return *this; }  // as StemPlane's
};

PNEUMO_HD WindowWinner block_tail_winner(const float* plane, int64_t plane_index,
                                         const PoolWindow& w, const BlockTailChannel& ch) {
  return block_tail_winner_of(PlaneValues{plane}, plane_index, w, ch);
}

// ---- Block 1 whole (the stem): its one-channel convolution recomputed, never stored ----------
// a = relu(bias + sum over the 3x3 taps, row-major, of w[t] x[tap], fused multiply-adds from 0,
// zero padding): the arithmetic of the direct one-channel kernel (conv_direct_tiles.hpp), so the
// recomputed activation is the stored one's bits where that kernel runs.

// A pooling window's pixels as the stem sees them: the 4 x 4 patch of the image their taps cover
// (rows row0 - 1 .. row0 + 2 and the same columns, 0 outside the image), read once instead of
// nine reads per pixel, and each real position's activation computed from it (StemPlane::window).
struct StemWindow {
  float patch[4][4];
  float a[4];  // by position; 0 at a padding position
  // Selected, not indexed: p is often known only at run time (the winner's), and an indexed
  // register array would be moved to local memory.
  PNEUMO_HD float in_window(const PoolWindow&, int p) const {
    return p == 0 ? a[0] : p == 1 ? a[1] : p == 2 ? a[2] : a[3];
  }
  // The input under tap t of position p: what d loss / d w[t] multiplies.
  PNEUMO_HD float tap(int p, int t) const { return patch[p / 2 + t / 3][p % 2 + t % 3]; }
};

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
  // The window's patch and activations: each activation sums the same taps in the same order as
  // at(), so the same bits.
  PNEUMO_HD StemWindow window(const PoolWindow& win) const {
    StemWindow s{};
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) {
        const int64_t iy = win.row0 - 1 + i, ix = win.col0 - 1 + j;
        s.patch[i][j] = iy >= 0 && iy < height && ix >= 0 && ix < width ? x[iy * width + ix] : 0.0f;
      }
    for (int p = 0; p < 4; ++p) {
      float acc = 0.0f;
      for (int t = 0; t < 9; ++t) acc = fmaf(w[t], s.tap(p, t), acc);
      s.a[p] = win.real(p) ? relu(acc + bias) : 0.0f;
    }
    return s;
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
