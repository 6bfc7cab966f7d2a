// 3x3 'same' stride-1 convolution on the CPU: im2col + GEMM, parallel over the batch with one
// column buffer per worker. The filter gradient sums a fixed number of image groups' partials in
// group order, so any thread count gives the same bits (--threads may differ between a run and
// its resume, between ranks, between machines). Under --precision bf16 the convolutions with more
// than one input channel round their operands and results to bfloat16 (pneumo/ops/conv2d.hpp),
// as the CUDA backend's tensor-core path stores them; accumulation stays float32.
#include <algorithm>
#include <vector>

#include "cpu/channel_sum.hpp"
#include "cpu/channels_last.hpp"
#include "cpu/cpu_backend.hpp"
#include "bf16.hpp"
#include "cpu/gemm.hpp"
#include "elementwise.hpp"
#include "pneumo/error.hpp"
#include "pneumo/op_geometry.hpp"

namespace pneumo::cpu {
namespace {

// Tap (ky, kx) of output pixel (y, x) reads input pixel (y + ky - kPadding, x + kx - kPadding).
constexpr int64_t kKernel = ConvGeometry::kKernel;
constexpr int64_t kPadding = ConvGeometry::kPadding;

// Valid output columns [begin, end) for horizontal tap offset dx = kx - kPadding in [-kPadding,
// kPadding]: those whose input column x + dx lies inside [0, width).
int64_t valid_begin(int64_t dx) { return std::max<int64_t>(0, -dx); }
int64_t valid_end(int64_t width, int64_t dx) { return std::min(width, width - dx); }

// image: (C, H, W) -> col: (C*9, H*W); row (c*kKernel + ky)*kKernel + kx, column y*W + x holds
// image[c, y + ky - kPadding, x + kx - kPadding], or 0 where that falls in the padding.
void im2col(const float* image, const ConvGeometry& g, float* col) {
  const int64_t height = g.height, width = g.width;
  for (int64_t c = 0; c < g.in_channels; ++c)
    for (int64_t ky = 0; ky < kKernel; ++ky)
      for (int64_t kx = 0; kx < kKernel; ++kx) {
        float* row = col + ((c * kKernel + ky) * kKernel + kx) * g.pixels();
        const int64_t dy = ky - kPadding, dx = kx - kPadding;
        const int64_t begin = valid_begin(dx), end = valid_end(width, dx);
        for (int64_t y = 0; y < height; ++y) {
          float* out = row + y * width;
          const int64_t iy = y + dy;
          if (iy < 0 || iy >= height) {
            std::fill(out, out + width, 0.0f);
            continue;
          }
          const float* in = image + (c * height + iy) * width;
          std::fill(out, out + begin, 0.0f);
          std::copy(in + begin + dx, in + end + dx, out + begin);
          std::fill(out + end, out + width, 0.0f);
        }
      }
}

// The adjoint of im2col: image (C, H, W) = sum of col's entries over the taps that read each
// pixel. Overwrites image.
void col2im(const float* col, const ConvGeometry& g, float* image) {
  const int64_t height = g.height, width = g.width;
  std::fill(image, image + g.in_channels * g.pixels(), 0.0f);
  for (int64_t c = 0; c < g.in_channels; ++c)
    for (int64_t ky = 0; ky < kKernel; ++ky)
      for (int64_t kx = 0; kx < kKernel; ++kx) {
        const float* row = col + ((c * kKernel + ky) * kKernel + kx) * g.pixels();
        const int64_t dy = ky - kPadding, dx = kx - kPadding;
        const int64_t begin = valid_begin(dx), end = valid_end(width, dx);
        for (int64_t y = 0; y < height; ++y) {
          const int64_t iy = y + dy;
          if (iy < 0 || iy >= height) continue;
          const float* in = row + y * width;
          float* out = image + (c * height + iy) * width;
          for (int64_t x = begin; x < end; ++x) out[x + dx] += in[x];
        }
      }
}

}  // namespace

bool CpuBackend::rounds_to_bf16(const ConvGeometry& g) const {
  return (bf16_ || conv_rule_bf16_) && g.in_channels > 1;
}

const float* CpuBackend::conv_weight(ConstTensorView weight, const ConvGeometry& g) {
  if (!rounds_to_bf16(g)) return weight.data;
  rounded_weight_.resize(static_cast<size_t>(weight.numel()));
  round_all_to_bf16(weight.data, rounded_weight_.data(), weight.numel());
  return rounded_weight_.data();
}

void CpuBackend::conv2d_forward_impl(ConstTensorView x, ConstTensorView weight,
                                     ConstTensorView bias, TensorView y, bool fuse_relu) {
  const ConvGeometry g = conv_geometry(x.shape, weight.shape);
  const bool bf16 = rounds_to_bf16(g);
  const float* w = conv_weight(weight, g);

  const std::vector<float*> cols = worker_scratch(0, g.taps() * g.pixels());
  pool_.parallel_for(g.batch, [&](int64_t begin, int64_t end, int worker) {
    float* col = cols[static_cast<size_t>(worker)];
    for (int64_t n = begin; n < end; ++n) {
      im2col(x.data + n * g.in_channels * g.pixels(), g, col);
      if (bf16) round_all_to_bf16(col, g.taps() * g.pixels());
      // y_n (K, H*W) = weight (K, C*9) * col (C*9, H*W)
      float* y_n = y.data + n * g.out_channels * g.pixels();
      sgemm(false, false, g.out_channels, g.pixels(), g.taps(), 1.0f, w, g.taps(), col,
            g.pixels(), 0.0f, y_n, g.pixels());
      if (bf16) round_all_to_bf16(y_n, g.out_channels * g.pixels());
      for (int64_t k = 0; k < g.out_channels; ++k) {
        float* plane = y_n + k * g.pixels();
        for (int64_t p = 0; p < g.pixels(); ++p)
          plane[p] = bias_relu(plane[p], bias.data[k], fuse_relu);
      }
    }
  });
}

void CpuBackend::conv2d_backward_data_impl(ConstTensorView dy, ConstTensorView weight,
                                           TensorView dx) {
  const ConvGeometry g = conv_geometry(dx.shape, weight.shape);
  const bool bf16 = rounds_to_bf16(g);
  const float* w = conv_weight(weight, g);

  const std::vector<float*> cols = worker_scratch(0, g.taps() * g.pixels());
  const std::vector<float*> dys = worker_scratch(1, bf16 ? g.out_channels * g.pixels() : 0);
  pool_.parallel_for(g.batch, [&](int64_t begin, int64_t end, int worker) {
    float* col = cols[static_cast<size_t>(worker)];
    for (int64_t n = begin; n < end; ++n) {
      const float* dy_n = dy.data + n * g.out_channels * g.pixels();
      if (bf16) {
        float* rounded = dys[static_cast<size_t>(worker)];
        std::copy(dy_n, dy_n + g.out_channels * g.pixels(), rounded);
        round_all_to_bf16(rounded, g.out_channels * g.pixels());
        dy_n = rounded;
      }
      // col (C*9, H*W) = weight^T (C*9, K) * dy_n (K, H*W), then scattered back onto the image.
      sgemm(true, false, g.taps(), g.pixels(), g.out_channels, 1.0f, w, g.taps(), dy_n,
            g.pixels(), 0.0f, col, g.pixels());
      float* dx_n = dx.data + n * g.in_channels * g.pixels();
      col2im(col, g, dx_n);
      if (bf16) round_all_to_bf16(dx_n, g.in_channels * g.pixels());
    }
  });
}

void CpuBackend::conv2d_backward_filter_impl(ConstTensorView x, ConstTensorView dy,
                                             TensorView dweight, TensorView dbias) {
  const ConvGeometry g = conv_geometry(x.shape, dweight.shape);
  const bool bf16 = rounds_to_bf16(g);

  // Group j of `groups` (a fixed count, not the workers') sums its images in order into
  // partial_j (K, C*9); the partials are then added in group order. By the worker count the bits
  // changed: 139 of conv2's 270 weights' gradients between 1 and 2 threads, and whole runs apart.
  const int64_t weight_count = g.out_channels * g.taps();
  const int64_t groups = std::min<int64_t>(kFilterGradientGroups, g.batch);
  float* partials = tensor_scratch(kFilterPartialsSlot, groups * weight_count);
  const std::vector<float*> cols = worker_scratch(0, g.taps() * g.pixels());
  const std::vector<float*> dys = worker_scratch(1, bf16 ? g.out_channels * g.pixels() : 0);
  pool_.parallel_for(groups, [&](int64_t begin, int64_t end, int worker) {
    float* col = cols[static_cast<size_t>(worker)];
    for (int64_t group = begin; group < end; ++group) {
      float* partial = partials + group * weight_count;
      const int64_t first = group * g.batch / groups, last = (group + 1) * g.batch / groups;
      for (int64_t n = first; n < last; ++n) {
        im2col(x.data + n * g.in_channels * g.pixels(), g, col);
        const float* dy_n = dy.data + n * g.out_channels * g.pixels();
        if (bf16) {
          round_all_to_bf16(col, g.taps() * g.pixels());
          float* rounded = dys[static_cast<size_t>(worker)];
          std::copy(dy_n, dy_n + g.out_channels * g.pixels(), rounded);
          round_all_to_bf16(rounded, g.out_channels * g.pixels());
          dy_n = rounded;
        }
        // partial (K, C*9) (+)= dy_n (K, H*W) * col^T (H*W, C*9)
        sgemm(false, true, g.out_channels, g.taps(), g.pixels(), 1.0f, dy_n, g.pixels(), col,
              g.pixels(), n == first ? 0.0f : 1.0f, partial, g.taps());
      }
    }
  });
  std::fill(dweight.data, dweight.data + weight_count, 0.0f);
  for (int64_t group = 0; group < groups; ++group) {
    const float* partial = partials + group * weight_count;
    for (int64_t i = 0; i < weight_count; ++i) dweight.data[i] += partial[i];
  }
  if (bf16) round_all_to_bf16(dweight.data, weight_count);

  // dbias[k] = sum of dy over (N, H, W), in double, in batch-norm's order (channel_sum's four
  // accumulators: one made every add wait for the last); channels are independent. Not asked for
  // (conv2d_backward's TensorView{}): summed by the layer after.
  if (dbias.shape.rank() == 0) return;
  const ChannelLayout layout{g.batch, g.out_channels, g.pixels()};
  pool_.parallel_for(g.out_channels, [&](int64_t begin, int64_t end, int /*worker*/) {
    for (int64_t k = begin; k < end; ++k)
      dbias.data[k] = static_cast<float>(
          channel_sum(layout, k, [&](int64_t i) { return double{dy.data[i]}; }));
  });
}

// The two calls (dbias, when asked for, with the weight's): the CPU has no conversion or launch to
// share between them.
void CpuBackend::conv2d_backward_impl(ConstTensorView x, ConstTensorView dy,
                                      ConstTensorView weight, TensorView dx, TensorView dweight,
                                      TensorView dbias) {
  conv2d_backward_filter_impl(x, dy, dweight, dbias);
  if (dx.shape.rank() != 0) conv2d_backward_data_impl(dy, weight, dx);
}

// ---- bfloat16 channels-last: the float32 ops on the decoded tensors, the bf16 rule forced ----

namespace {

// conv_rule_bf16_ set for one call.
class ForcedBf16Rule {
 public:
  explicit ForcedBf16Rule(bool& flag) : flag_(flag) { flag_ = true; }
  ~ForcedBf16Rule() { flag_ = false; }
  ForcedBf16Rule(const ForcedBf16Rule&) = delete;
  ForcedBf16Rule& operator=(const ForcedBf16Rule&) = delete;

 private:
  bool& flag_;
};

}  // namespace

// Scratch slots: 0 x, 1 dz (or z), 2 dx, each float32 NCHW.
void CpuBackend::conv2d_forward_bf16_impl(ConstBf16NhwcView x, ConstTensorView weight,
                                          Bf16NhwcView z) {
  const ForcedBf16Rule rule(conv_rule_bf16_);
  const TensorView xf = tensor_scratch(0, x.shape), zf = tensor_scratch(1, z.shape);
  decode_channels_last(pool_, x.data, x.shape, xf.data);
  const Tensor zero_bias = Tensor::zeros(Shape{weight.shape[0]}, Device::Cpu);
  conv2d_forward_impl(xf, weight, zero_bias, zf, /*fuse_relu=*/false);
  encode_channels_last(pool_, zf.data, z.shape, z.data);  // rounded already: exact
}

void CpuBackend::conv2d_backward_bf16_impl(ConstBf16NhwcView x, ConstBf16NhwcView dz,
                                           ConstTensorView weight, Bf16NhwcView dx,
                                           TensorView dweight) {
  const ForcedBf16Rule rule(conv_rule_bf16_);
  const TensorView xf = tensor_scratch(0, x.shape), dzf = tensor_scratch(1, dz.shape);
  decode_channels_last(pool_, x.data, x.shape, xf.data);
  decode_channels_last(pool_, dz.data, dz.shape, dzf.data);
  conv2d_backward_filter_impl(xf, dzf, dweight, TensorView{});
  if (dx.data == nullptr) return;
  const TensorView dxf = tensor_scratch(2, dx.shape);
  conv2d_backward_data_impl(dzf, weight, dxf);
  encode_channels_last(pool_, dxf.data, dx.shape, dx.data);
}

void CpuBackend::to_bf16_channels_last_impl(ConstTensorView x, Bf16NhwcView y) {
  encode_channels_last(pool_, x.data, x.shape, y.data);
}

void CpuBackend::from_bf16_channels_last_impl(ConstBf16NhwcView x, TensorView y) {
  decode_channels_last(pool_, x.data, x.shape, y.data);
}

}  // namespace pneumo::cpu
