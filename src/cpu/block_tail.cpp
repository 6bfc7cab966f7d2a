// The fused block tail on the CPU (pneumo/ops/block_tail.hpp): dropout -> batch-norm -> max
// pooling and its backward, channel by channel over the workers. Each channel's dropout
// multipliers are drawn once per call into a worker's buffer (one Philox call per four
// elements, as dropout_forward draws them); the statistics use batch-norm's own summation
// (cpu/channel_sum.hpp), and the windows and element gradients are kernels/block_tail_math.hpp,
// the code the CUDA kernels run.
#include <cmath>
#include <vector>

#include "block_tail_math.hpp"
#include "cpu/channel_sum.hpp"
#include "cpu/cpu_backend.hpp"
#include "pneumo/op_geometry.hpp"

namespace pneumo::cpu {
namespace {

// m[j] = the dropout multiplier of element begin + j of the tensor, j < end - begin.
void fill_masks(const BlockTailChannel& ch, int64_t begin, int64_t end, float* m) {
  int64_t i = begin;
  while (i < end) {
    const uint32_t global = static_cast<uint32_t>(i) + ch.key.first;
    const Philox4 bits = philox4x32(ch.key, global >> 2);
    for (uint32_t j = global & 3u; j < 4u && i < end; ++j, ++i)
      m[i - begin] = dropout_multiplier_from_bits(bits.v[j], ch.rate);
  }
}

// One channel's dropped values d (and, with dropout, its multipliers m), plane after plane:
// buffer index n * pixels + p for tensor index (n * C + c) * pixels + p.
struct ChannelValues {
  std::vector<float> d, m;

  void fill(ConstTensorView a, const ChannelLayout& layout, int64_t c, const BlockTailChannel& ch) {
    const auto count = static_cast<size_t>(layout.count());
    d.resize(count);
    m.assign(ch.rate > 0.0f ? count : 0, 1.0f);
    for (int64_t n = 0; n < layout.batch; ++n) {
      const int64_t first = (n * layout.channels + c) * layout.pixels;
      float* dn = d.data() + n * layout.pixels;
      if (ch.rate > 0.0f) {
        float* mn = m.data() + n * layout.pixels;
        fill_masks(ch, first, first + layout.pixels, mn);
        for (int64_t p = 0; p < layout.pixels; ++p) dn[p] = a.data[first + p] * mn[p];
      } else {
        for (int64_t p = 0; p < layout.pixels; ++p) dn[p] = a.data[first + p];
      }
    }
  }
};

// The buffer as a one-channel tensor: channel_sum over it walks d in the order it walks the
// channel in the tensor, so the sums are batch-norm's to the bit.
ChannelLayout buffer_layout(const ChannelLayout& layout) {
  return {layout.batch, 1, layout.pixels};
}

// The channel's constants for the windows over d: d is already dropped, so rate 0 there.
BlockTailChannel on_dropped(BlockTailChannel ch) {
  ch.rate = 0.0f;
  return ch;
}

}  // namespace

void CpuBackend::block_tail_forward_impl(ConstTensorView a, ConstTensorView gamma,
                                         ConstTensorView beta, TensorView running_mean,
                                         TensorView running_var, const BlockTailSettings& s,
                                         TensorView y, TensorView saved_mean,
                                         TensorView saved_inv_std) {
  const ChannelLayout layout = channel_layout(a.shape);
  const PoolGeometry g = pool_geometry(a.shape);
  const int64_t out_plane = g.out_height() * g.out_width();
  const auto count = static_cast<double>(layout.count());

  pool_.parallel_for(layout.channels, [&](int64_t begin, int64_t end, int /*worker*/) {
    ChannelValues values;
    for (int64_t c = begin; c < end; ++c) {
      BlockTailChannel ch{0.0f, 0.0f, gamma.data[c], beta.data[c],
                          s.training ? s.dropout_rate : 0.0f, s.dropout_key};
      values.fill(a, layout, c, ch);
      if (s.training) {
        // batchnorm_forward_training's arithmetic on d, in its summation order.
        const float* d = values.d.data();
        const ChannelLayout one = buffer_layout(layout);
        const double mean = channel_sum(one, 0, [&](int64_t i) { return double{d[i]}; }) / count;
        const double squares = channel_sum(one, 0, [&](int64_t i) {
          const double deviation = d[i] - mean;
          return deviation * deviation;
        });
        const double inv_std = 1.0 / std::sqrt(squares / count + s.epsilon);
        saved_mean.data[c] = static_cast<float>(mean);
        saved_inv_std.data[c] = static_cast<float>(inv_std);
        running_mean.data[c] = static_cast<float>((1.0 - s.average_factor) * running_mean.data[c] +
                                                  s.average_factor * mean);
        running_var.data[c] = static_cast<float>((1.0 - s.average_factor) * running_var.data[c] +
                                                 s.average_factor * squares / (count - 1.0));
      } else {
        saved_mean.data[c] = running_mean.data[c];
        saved_inv_std.data[c] = static_cast<float>(
            1.0 / std::sqrt(static_cast<double>(running_var.data[c]) + s.epsilon));
      }
      ch.mean = saved_mean.data[c];
      ch.inv_std = saved_inv_std.data[c];
      const BlockTailChannel on_d = on_dropped(ch);
      for (int64_t n = 0; n < layout.batch; ++n) {
        const float* plane = values.d.data() + n * layout.pixels;
        float* out = y.data + (n * layout.channels + c) * out_plane;
        for (int64_t oy = 0; oy < g.out_height(); ++oy)
          for (int64_t ox = 0; ox < g.out_width(); ++ox)
            out[oy * g.out_width() + ox] =
                block_tail_winner(plane, 0, pool_window(g, oy, ox), on_d).value;
      }
    }
  });
}

void CpuBackend::block_tail_backward_impl(ConstTensorView a, ConstTensorView dy,
                                          ConstTensorView gamma, ConstTensorView beta,
                                          ConstTensorView saved_mean,
                                          ConstTensorView saved_inv_std,
                                          const BlockTailSettings& s, TensorView da,
                                          TensorView dgamma, TensorView dbeta) {
  const ChannelLayout layout = channel_layout(a.shape);
  const PoolGeometry g = pool_geometry(a.shape);
  const int64_t out_plane = g.out_height() * g.out_width();
  const auto count = static_cast<double>(layout.count());

  pool_.parallel_for(layout.channels, [&](int64_t begin, int64_t end, int /*worker*/) {
    ChannelValues values;
    for (int64_t c = begin; c < end; ++c) {
      const BlockTailChannel ch{saved_mean.data[c], saved_inv_std.data[c], gamma.data[c],
                                beta.data[c], s.training ? s.dropout_rate : 0.0f, s.dropout_key};
      const BlockTailChannel on_d = on_dropped(ch);
      values.fill(a, layout, c, ch);
      // Each window's winner, found once and kept for both passes (slot per pooled output).
      std::vector<int> winner(static_cast<size_t>(layout.batch * out_plane));
      double sum_dy = 0.0, sum_dy_xhat = 0.0;
      for (int64_t n = 0; n < layout.batch; ++n) {
        const float* plane = values.d.data() + n * layout.pixels;
        const float* dy_plane = dy.data + (n * layout.channels + c) * out_plane;
        for (int64_t o = 0; o < out_plane; ++o) {
          const PoolWindow w = pool_window(g, o / g.out_width(), o % g.out_width());
          const int slot = block_tail_winner(plane, 0, w, on_d).slot;
          winner[static_cast<size_t>(n * out_plane + o)] = slot;
          sum_dy += dy_plane[o];
          sum_dy_xhat += double{dy_plane[o]} * block_tail_xhat(plane, 0, w.offset[slot], on_d);
        }
      }
      dbeta.data[c] = static_cast<float>(sum_dy);
      dgamma.data[c] = static_cast<float>(sum_dy_xhat);
      // Inference: batch-norm is affine per channel, so its gradient has no mean terms.
      const BatchNormChannelFactors f = batchnorm_factors_from_sums(
          s.training ? sum_dy : 0.0, s.training ? sum_dy_xhat : 0.0, count, gamma.data[c],
          saved_inv_std.data[c]);
      for (int64_t n = 0; n < layout.batch; ++n) {
        const int64_t first = (n * layout.channels + c) * layout.pixels;
        const float* dy_plane = dy.data + (n * layout.channels + c) * out_plane;
        for (int64_t o = 0; o < out_plane; ++o) {
          const PoolWindow w = pool_window(g, o / g.out_width(), o % g.out_width());
          const int slot = winner[static_cast<size_t>(n * out_plane + o)];
          for (int k = 0; k < w.count; ++k) {
            const int64_t p = w.offset[k];
            const float mask = ch.rate > 0.0f ? values.m[static_cast<size_t>(n * layout.pixels + p)]
                                              : 1.0f;
            da.data[first + p] =
                block_tail_gradient(a.data[first + p], mask, k == slot ? dy_plane[o] : 0.0f, ch,
                                    f.scale, f.mean_dy, f.mean_dy_xhat);
          }
        }
      }
    }
  });
}

}  // namespace pneumo::cpu
