// The fused block tail and the fused stem on the CPU (pneumo/ops/block_tail.hpp): dropout ->
// batch-norm -> max pooling and its backward, channel by channel over the workers; the stem first
// recomputes block 1's activation from the image (and ends its backward in the convolution's
// weight and bias gradients). Each channel's activations are gathered into a worker's buffer, its
// dropout multipliers drawn once per call (cpu/dropout_mask.hpp, as dropout_forward draws them);
// the statistics use batch-norm's own summation (cpu/channel_sum.hpp), and the windows and
// element gradients are kernels/block_tail_math.hpp, the code the CUDA kernels run.
#include <algorithm>
#include <cmath>
#include <vector>

#include "bf16.hpp"
#include "block_tail_math.hpp"
#include "cpu/channel_sum.hpp"
#include "cpu/channels_last.hpp"
#include "cpu/cpu_backend.hpp"
#include "cpu/dropout_mask.hpp"
#include "pneumo/op_geometry.hpp"

namespace pneumo::cpu {
namespace {

// One channel of the block: its activations a, dropped values d, multipliers m (with dropout)
// and, backward, gradients g before the ReLU, plane after plane: buffer index n * pixels + p for
// tensor element (n * C + c) * pixels + p.
struct ChannelValues {
  std::vector<float> a, d, m, g;
  std::vector<int> winner;  // backward: each window's winning position, kept for its second pass
  std::vector<PoolWindow> windows;  // backward: a plane's windows
  std::vector<float> dz;            // backward: one image's dz plane

  // plane_a(n, out): writes image n's plane of a to out.
  template <class PlaneA>
  void fill(const ChannelLayout& layout, int64_t c, const BlockTailChannel& ch, PlaneA&& plane_a) {
    const auto count = static_cast<size_t>(layout.count());
    a.resize(count);
    d.resize(count);
    m.assign(ch.rate > 0.0f ? count : 0, 1.0f);
    for (int64_t n = 0; n < layout.batch; ++n) {
      const int64_t first = (n * layout.channels + c) * layout.pixels;
      float* an = a.data() + n * layout.pixels;
      float* dn = d.data() + n * layout.pixels;
      plane_a(n, an);
      if (ch.rate > 0.0f) {
        float* mn = m.data() + n * layout.pixels;
        dropout_multipliers(ch.key, ch.rate, first, first + layout.pixels, mn);
        for (int64_t p = 0; p < layout.pixels; ++p) dn[p] = an[p] * mn[p];
      } else {
        for (int64_t p = 0; p < layout.pixels; ++p) dn[p] = an[p];
      }
    }
  }

  // Channel c from NCHW tensors of a and of the multipliers (`m_all` null without dropout).
  void fill_planes(const ChannelLayout& layout, int64_t c, const float* a_all,
                   const float* m_all) {
    const auto count = static_cast<size_t>(layout.count());
    a.resize(count);
    d.resize(count);
    m.resize(m_all == nullptr ? 0 : count);
    for (int64_t n = 0; n < layout.batch; ++n) {
      const int64_t first = (n * layout.channels + c) * layout.pixels;
      float* an = a.data() + n * layout.pixels;
      float* dn = d.data() + n * layout.pixels;
      std::copy_n(a_all + first, layout.pixels, an);
      if (m.empty()) {
        std::copy_n(an, layout.pixels, dn);
        continue;
      }
      float* mn = m.data() + n * layout.pixels;
      std::copy_n(m_all + first, layout.pixels, mn);
      for (int64_t p = 0; p < layout.pixels; ++p) dn[p] = an[p] * mn[p];
    }
  }
};

// The buffer as a one-channel tensor: channel_sum over it walks d in the order it walks the
// channel in the tensor, so the sums are batch-norm's to the bit.
ChannelLayout buffer_layout(const ChannelLayout& layout) { return {layout.batch, 1, layout.pixels}; }

// The channel's constants for the windows over d: d is already dropped, so rate 0 there.
BlockTailChannel on_dropped(BlockTailChannel ch) {
  ch.rate = 0.0f;
  return ch;
}

// Forward of channel c from its filled values: statistics (training) or the running ones, then
// the pooled output into y.
void forward_channel(const ChannelValues& v, const ChannelLayout& layout, const PoolGeometry& g,
                     int64_t c, BlockTailChannel ch, const BlockTailSettings& s,
                     TensorView running_mean, TensorView running_var, TensorView y,
                     TensorView saved_mean, TensorView saved_inv_std) {
  const auto count = static_cast<double>(layout.count());
  if (s.training) {
    // batchnorm_forward_training's arithmetic on d, in its summation order.
    const float* d = v.d.data();
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
    saved_inv_std.data[c] =
        static_cast<float>(1.0 / std::sqrt(static_cast<double>(running_var.data[c]) + s.epsilon));
  }
  ch.mean = saved_mean.data[c];
  ch.inv_std = saved_inv_std.data[c];
  const BlockTailChannel on_d = on_dropped(ch);
  const int64_t out_plane = g.out_height() * g.out_width();
  for (int64_t n = 0; n < layout.batch; ++n) {
    const float* plane = v.d.data() + n * layout.pixels;
    float* out = y.data + (n * layout.channels + c) * out_plane;
    for (int64_t oy = 0; oy < g.out_height(); ++oy)
      for (int64_t ox = 0; ox < g.out_width(); ++ox)
        out[oy * g.out_width() + ox] = block_tail_winner(plane, 0, pool_window(g, oy, ox), on_d).value;
  }
}

// Backward of channel c from its filled values: dgamma, dbeta, and g (the gradient before the
// ReLU) in the buffer.
void backward_channel(ChannelValues& v, const ChannelLayout& layout, const PoolGeometry& g,
                      int64_t c, const BlockTailChannel& ch, const BlockTailSettings& s,
                      ConstTensorView dy, ConstTensorView gamma, TensorView dgamma,
                      TensorView dbeta) {
  const int64_t out_plane = g.out_height() * g.out_width();
  const BlockTailChannel on_d = on_dropped(ch);
  // A plane's windows, the same in every image: found once, not twice per image.
  std::vector<PoolWindow>& windows = v.windows;
  windows.resize(static_cast<size_t>(out_plane));
  for (int64_t oy = 0; oy < g.out_height(); ++oy)
    for (int64_t ox = 0; ox < g.out_width(); ++ox)
      windows[static_cast<size_t>(oy * g.out_width() + ox)] = pool_window(g, oy, ox);
  // Each window's winner, found once and kept for both passes (a worker's buffer, reused: a
  // fresh one per channel cost a page-faulting allocation each time).
  std::vector<int>& winner = v.winner;
  winner.resize(static_cast<size_t>(layout.batch * out_plane));
  double sum_dy = 0.0, sum_dy_xhat = 0.0;
  for (int64_t n = 0; n < layout.batch; ++n) {
    const float* plane = v.d.data() + n * layout.pixels;
    const float* dy_plane = dy.data + (n * layout.channels + c) * out_plane;
    for (int64_t o = 0; o < out_plane; ++o) {
      const PoolWindow& w = windows[static_cast<size_t>(o)];
      const int won = block_tail_winner(plane, 0, w, on_d).position;
      winner[static_cast<size_t>(n * out_plane + o)] = won;
      sum_dy += dy_plane[o];
      sum_dy_xhat += double{dy_plane[o]} * block_tail_xhat(plane, 0, w.offset(won), on_d);
    }
  }
  dbeta.data[c] = static_cast<float>(sum_dy);
  dgamma.data[c] = static_cast<float>(sum_dy_xhat);
  // Inference: batch-norm is affine per channel, so its gradient has no mean terms.
  const BatchNormChannelFactors f = batchnorm_factors_from_sums(
      s.training ? sum_dy : 0.0, s.training ? sum_dy_xhat : 0.0,
      static_cast<double>(layout.count()), gamma.data[c], ch.inv_std);
  // Each element's gradient from its dz: the window's dy at its winner, 0 at the others (the
  // windows tile the plane). Scattered into a plane first, so the element loop runs in memory
  // order and vectorises; block_tail_gradient is the same function of the same values either way.
  v.g.resize(v.a.size());
  std::vector<float>& dz = v.dz;
  dz.resize(static_cast<size_t>(layout.pixels));
  for (int64_t n = 0; n < layout.batch; ++n) {
    const float* dy_plane = dy.data + (n * layout.channels + c) * out_plane;
    std::fill(dz.begin(), dz.end(), 0.0f);
    for (int64_t o = 0; o < out_plane; ++o) {
      const PoolWindow& w = windows[static_cast<size_t>(o)];
      dz[static_cast<size_t>(w.offset(winner[static_cast<size_t>(n * out_plane + o)]))] =
          dy_plane[o];
    }
    const int64_t base = n * layout.pixels;
    const float* a = v.a.data() + base;
    float* g = v.g.data() + base;
    if (ch.rate > 0.0f) {
      const float* m = v.m.data() + base;
      for (int64_t p = 0; p < layout.pixels; ++p)
        g[p] = block_tail_gradient(a[p], m[p], dz[static_cast<size_t>(p)], ch, f.scale, f.mean_dy,
                                   f.mean_dy_xhat);
    } else {
      for (int64_t p = 0; p < layout.pixels; ++p)
        g[p] = block_tail_gradient(a[p], 1.0f, dz[static_cast<size_t>(p)], ch, f.scale, f.mean_dy,
                                   f.mean_dy_xhat);
    }
  }
}

BlockTailChannel channel_constants(const BlockTailSettings& s, float gamma, float beta) {
  return {0.0f, 0.0f, gamma, beta, s.training ? s.dropout_rate : 0.0f, s.dropout_key};
}

// The backward's: with the forward's saved statistics of channel c.
BlockTailChannel saved_constants(const BlockTailSettings& s, ConstTensorView gamma,
                                 ConstTensorView beta, ConstTensorView saved_mean,
                                 ConstTensorView saved_inv_std, int64_t c) {
  BlockTailChannel ch = channel_constants(s, gamma.data[c], beta.data[c]);
  ch.mean = saved_mean.data[c];
  ch.inv_std = saved_inv_std.data[c];
  return ch;
}

// Image n's plane of channel c of a stored tensor, into out.
void copy_plane(ConstTensorView a, const ChannelLayout& layout, int64_t c, int64_t n, float* out) {
  const float* plane = a.data + (n * layout.channels + c) * layout.pixels;
  std::copy(plane, plane + layout.pixels, out);
}

// out[p] = plane(p) over a plane: the stem's activations. The edge pixels go through at(); the
// interior ones (every tap inside the image) through one loop without its bounds tests, which
// the compiler vectorises: the same taps in the same order, so the same bits.
inline __attribute__((always_inline)) void stem_activations_body(const StemPlane& plane,
                                                                 float* __restrict out) {
  const int64_t h = plane.height, w = plane.width;
  const float* k = plane.w;
  for (int64_t r = 0; r < h; ++r) {
    float* row = out + r * w;
    if (r == 0 || r == h - 1 || w < 3) {
      for (int64_t c = 0; c < w; ++c) row[c] = plane.at(r, c);
      continue;
    }
    const float* __restrict up = plane.x + (r - 1) * w;
    const float* __restrict mid = up + w;
    const float* __restrict down = mid + w;
    row[0] = plane.at(r, 0);
    for (int64_t c = 1; c < w - 1; ++c) {
      float acc = fmaf(k[0], up[c - 1], 0.0f);
      acc = fmaf(k[1], up[c], acc);
      acc = fmaf(k[2], up[c + 1], acc);
      acc = fmaf(k[3], mid[c - 1], acc);
      acc = fmaf(k[4], mid[c], acc);
      acc = fmaf(k[5], mid[c + 1], acc);
      acc = fmaf(k[6], down[c - 1], acc);
      acc = fmaf(k[7], down[c], acc);
      acc = fmaf(k[8], down[c + 1], acc);
      row[c] = relu(acc + plane.bias);
    }
    row[w - 1] = plane.at(r, w - 1);
  }
}
// Its fused multiply-adds are a library call without the FMA instruction set (about ten times
// slower here); on a CPU that has it (and AVX2, for eight lanes), the same loop compiled for it
// runs instead. fmaf rounds once either way, so the bits are the same.
void stem_activations_portable(const StemPlane& plane, float* out) {
  stem_activations_body(plane, out);
}
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) void stem_activations_fma(const StemPlane& plane, float* out) {
  stem_activations_body(plane, out);
}
void stem_activations(const StemPlane& plane, float* out) {
  static const bool fma = __builtin_cpu_supports("fma") && __builtin_cpu_supports("avx2");
  fma ? stem_activations_fma(plane, out) : stem_activations_portable(plane, out);
}
#else
void stem_activations(const StemPlane& plane, float* out) { stem_activations_portable(plane, out); }
#endif

// Block 1's activation plane of channel k for image n, recomputed from x.
StemPlane stem_plane(ConstTensorView x, ConstTensorView weight, ConstTensorView bias, int64_t k,
                     int64_t n) {
  StemPlane sp{x.data + n * x.shape.h() * x.shape.w(), x.shape.h(), x.shape.w(), {}, bias.data[k]};
  for (int t = 0; t < 9; ++t) sp.w[t] = weight.data[k * 9 + t];
  return sp;
}

}  // namespace

void CpuBackend::block_tail_forward_impl(ConstTensorView a, ConstTensorView gamma,
                                         ConstTensorView beta, TensorView running_mean,
                                         TensorView running_var, const BlockTailSettings& s,
                                         TensorView y, TensorView saved_mean,
                                         TensorView saved_inv_std) {
  const ChannelLayout layout = channel_layout(a.shape);
  const PoolGeometry g = pool_geometry(a.shape);
  pool_.parallel_for(layout.channels, [&](int64_t begin, int64_t end, int /*worker*/) {
    ChannelValues values;
    for (int64_t c = begin; c < end; ++c) {
      const BlockTailChannel ch = channel_constants(s, gamma.data[c], beta.data[c]);
      values.fill(layout, c, ch,
                  [&](int64_t n, float* out) { copy_plane(a, layout, c, n, out); });
      forward_channel(values, layout, g, c, ch, s, running_mean, running_var, y, saved_mean,
                      saved_inv_std);
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
  pool_.parallel_for(layout.channels, [&](int64_t begin, int64_t end, int /*worker*/) {
    ChannelValues values;
    for (int64_t c = begin; c < end; ++c) {
      const BlockTailChannel ch = saved_constants(s, gamma, beta, saved_mean, saved_inv_std, c);
      values.fill(layout, c, ch,
                  [&](int64_t n, float* out) { copy_plane(a, layout, c, n, out); });
      backward_channel(values, layout, g, c, ch, s, dy, gamma, dgamma, dbeta);
      for (int64_t n = 0; n < layout.batch; ++n)
        std::copy(values.g.begin() + n * layout.pixels, values.g.begin() + (n + 1) * layout.pixels,
                  da.data + (n * layout.channels + c) * layout.pixels);
    }
  });
}

void CpuBackend::stem_forward_impl(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                                   ConstTensorView gamma, ConstTensorView beta,
                                   TensorView running_mean, TensorView running_var,
                                   const BlockTailSettings& s, TensorView y, TensorView saved_mean,
                                   TensorView saved_inv_std) {
  const Shape a_shape{x.shape.n(), weight.shape[0], x.shape.h(), x.shape.w()};
  const ChannelLayout layout = channel_layout(a_shape);
  const PoolGeometry g = pool_geometry(a_shape);
  pool_.parallel_for(layout.channels, [&](int64_t begin, int64_t end, int /*worker*/) {
    ChannelValues values;
    for (int64_t k = begin; k < end; ++k) {
      const BlockTailChannel ch = channel_constants(s, gamma.data[k], beta.data[k]);
      values.fill(layout, k, ch, [&](int64_t n, float* out) {
        stem_activations(stem_plane(x, weight, bias, k, n), out);
      });
      forward_channel(values, layout, g, k, ch, s, running_mean, running_var, y, saved_mean,
                      saved_inv_std);
    }
  });
}

void CpuBackend::stem_backward_impl(ConstTensorView x, ConstTensorView dy, ConstTensorView weight,
                                    ConstTensorView bias, ConstTensorView gamma,
                                    ConstTensorView beta, ConstTensorView saved_mean,
                                    ConstTensorView saved_inv_std, const BlockTailSettings& s,
                                    TensorView dweight, TensorView dbias, TensorView dgamma,
                                    TensorView dbeta) {
  const Shape a_shape{x.shape.n(), weight.shape[0], x.shape.h(), x.shape.w()};
  const ChannelLayout layout = channel_layout(a_shape);
  const PoolGeometry g = pool_geometry(a_shape);
  pool_.parallel_for(layout.channels, [&](int64_t begin, int64_t end, int /*worker*/) {
    ChannelValues values;
    for (int64_t k = begin; k < end; ++k) {
      const BlockTailChannel ch = saved_constants(s, gamma, beta, saved_mean, saved_inv_std, k);
      values.fill(layout, k, ch, [&](int64_t n, float* out) {
        stem_activations(stem_plane(x, weight, bias, k, n), out);
      });
      backward_channel(values, layout, g, k, ch, s, dy, gamma, dgamma, dbeta);
      // The convolution's gradients from g, in double: dbias = sum g, dw[t] = sum g x[tap t].
      // Pixel by pixel (rows and columns, no division): most are 0 after the ReLU and pooling.
      double db = 0.0, dw[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
      const int64_t height = x.shape.h(), width = x.shape.w();
      for (int64_t n = 0; n < layout.batch; ++n) {
        const float* xn = x.data + n * layout.pixels;
        const float* gn = values.g.data() + n * layout.pixels;
        for (int64_t r = 0; r < height; ++r)
          for (int64_t c = 0; c < width; ++c) {
            const double gv = gn[r * width + c];
            if (gv == 0.0) continue;
            db += gv;
            for (int ky = 0; ky < 3; ++ky) {
              const int64_t iy = r + ky - 1;
              if (iy < 0 || iy >= height) continue;
              for (int kx = 0; kx < 3; ++kx) {
                const int64_t ix = c + kx - 1;
                if (ix >= 0 && ix < width) dw[ky * 3 + kx] += gv * xn[iy * width + ix];
              }
            }
          }
      }
      dbias.data[k] = static_cast<float>(db);
      for (int t = 0; t < 9; ++t) dweight.data[k * 9 + t] = static_cast<float>(dw[t]);
    }
  });
}

// ---- The tail in bfloat16, channels-last: the float32 tail's channel code on a = relu(z + bias),
// with the multipliers at z's storage indices and the conversions at the edges.

namespace {

// z's values as the float32 tail reads them, in NCHW order: a = relu(z + bias) and, with
// dropout, m = each element's multiplier, drawn at its channels-last storage index (m is null
// without). Images split over the workers; each draws its image's multipliers in storage order
// into its buffer of `buffers` (one image's worth each; unused without dropout) and transposes
// them with the activations, so z is read once, front to back (a walk channel by channel over
// channels-last storage reads every cache line once per channel in it).
void planes_from_channels_last(ThreadPool& pool, ConstBf16NhwcView z, const float* bias,
                               const BlockTailChannel& ch, const std::vector<float*>& buffers,
                               float* a, float* m) {
  const ChannelLayout layout = channel_layout(z.shape);
  const int64_t image = layout.channels * layout.pixels;
  pool.parallel_for(layout.batch, [&](int64_t first, int64_t last, int worker) {
    float* storage = buffers[static_cast<size_t>(worker)];
    for (int64_t n = first; n < last; ++n) {
      if (m != nullptr) dropout_multipliers(ch.key, ch.rate, n * image, (n + 1) * image, storage);
      for (int64_t p = 0; p < layout.pixels; ++p) {
        const uint16_t* zp = z.data + (n * layout.pixels + p) * layout.channels;
        const float* mp = m == nullptr ? nullptr : storage + p * layout.channels;
        for (int64_t c = 0; c < layout.channels; ++c) {
          const int64_t i = (n * layout.channels + c) * layout.pixels + p;
          a[i] = bias_relu(float_from_bf16(zp[c]), bias[c], /*apply_relu=*/true);
          if (m != nullptr) m[i] = mp[c];
        }
      }
    }
  });
}

}  // namespace

// Scratch slots: 0 a, 1 the multipliers, 2 the pooled output (forward) or dy (backward), 3 dz,
// each float32 NCHW.
CpuBackend::Bf16TailPlanes CpuBackend::bf16_tail_planes(ConstBf16NhwcView z, ConstTensorView bias,
                                                        const BlockTailSettings& s) {
  const BlockTailChannel drawn = channel_constants(s, 0.0f, 0.0f);
  float* a = tensor_scratch(0, z.numel());
  float* m = drawn.rate > 0.0f ? tensor_scratch(1, z.numel()) : nullptr;
  // Worker scratch slot 0 (im2col's, free between ops): one image of multipliers each.
  const int64_t image = z.shape.c() * z.shape.h() * z.shape.w();
  planes_from_channels_last(pool_, z, bias.data, drawn,
                            worker_scratch(0, m == nullptr ? 0 : image), a, m);
  return {a, m};
}

void CpuBackend::block_tail_forward_bf16_impl(ConstBf16NhwcView z, ConstTensorView bias,
                                              ConstTensorView gamma, ConstTensorView beta,
                                              TensorView running_mean, TensorView running_var,
                                              const BlockTailSettings& s, Bf16NhwcView y,
                                              TensorView saved_mean, TensorView saved_inv_std) {
  const ChannelLayout layout = channel_layout(z.shape);
  const PoolGeometry g = pool_geometry(z.shape);
  const Bf16TailPlanes planes = bf16_tail_planes(z, bias, s);
  const TensorView pooled = tensor_scratch(2, y.shape);  // rounded into y at the end
  pool_.parallel_for(layout.channels, [&](int64_t begin, int64_t end, int /*worker*/) {
    ChannelValues values;
    for (int64_t c = begin; c < end; ++c) {
      const BlockTailChannel ch = channel_constants(s, gamma.data[c], beta.data[c]);
      values.fill_planes(layout, c, planes.a, planes.m);
      forward_channel(values, layout, g, c, ch, s, running_mean, running_var, pooled, saved_mean,
                      saved_inv_std);
    }
  });
  encode_channels_last(pool_, pooled.data, pooled.shape, y.data);
}

void CpuBackend::block_tail_backward_bf16_impl(ConstBf16NhwcView z, ConstTensorView bias,
                                               ConstBf16NhwcView dy, ConstTensorView gamma,
                                               ConstTensorView beta, ConstTensorView saved_mean,
                                               ConstTensorView saved_inv_std,
                                               const BlockTailSettings& s, Bf16NhwcView dz,
                                               TensorView dbias, TensorView dgamma,
                                               TensorView dbeta) {
  const ChannelLayout layout = channel_layout(z.shape);
  const PoolGeometry g = pool_geometry(z.shape);
  const Bf16TailPlanes planes = bf16_tail_planes(z, bias, s);
  const TensorView dy_nchw = tensor_scratch(2, dy.shape);
  decode_channels_last(pool_, dy.data, dy.shape, dy_nchw.data);
  const TensorView dz_nchw = tensor_scratch(3, z.shape);  // rounded into dz at the end
  pool_.parallel_for(layout.channels, [&](int64_t begin, int64_t end, int /*worker*/) {
    ChannelValues values;
    for (int64_t c = begin; c < end; ++c) {
      const BlockTailChannel ch = saved_constants(s, gamma, beta, saved_mean, saved_inv_std, c);
      values.fill_planes(layout, c, planes.a, planes.m);
      backward_channel(values, layout, g, c, ch, s, dy_nchw, gamma, dgamma, dbeta);
      const float* gc = values.g.data();
      dbias.data[c] = static_cast<float>(
          channel_sum(buffer_layout(layout), 0, [&](int64_t i) { return double{gc[i]}; }));
      for (int64_t n = 0; n < layout.batch; ++n)
        std::copy_n(gc + n * layout.pixels, layout.pixels,
                    dz_nchw.data + (n * layout.channels + c) * layout.pixels);
    }
  });
  encode_channels_last(pool_, dz_nchw.data, z.shape, dz.data);
}

}  // namespace pneumo::cpu
