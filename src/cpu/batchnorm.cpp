// Spatial batch normalisation on the CPU: per-channel statistics over (N, H, W) in double,
// biased variance for normalising, unbiased for running_var (as cuDNN and PyTorch keep it).
// Channels are independent, so they are spread over the workers.
#include <cmath>

#include "cpu/channel_sum.hpp"
#include "cpu/cpu_backend.hpp"
#include "elementwise.hpp"
#include "pneumo/error.hpp"
#include "pneumo/op_geometry.hpp"

namespace pneumo::cpu {

void CpuBackend::batchnorm_forward_training_impl(ConstTensorView x, ConstTensorView gamma,
                                                 ConstTensorView beta, TensorView running_mean,
                                                 TensorView running_var, double average_factor,
                                                 double epsilon, TensorView y,
                                                 TensorView saved_mean, TensorView saved_inv_std) {
  const ChannelLayout layout = channel_layout(x.shape);
  const int64_t count = layout.count();

  pool_.parallel_for(layout.channels, [&](int64_t begin, int64_t end, int /*worker*/) {
    for (int64_t c = begin; c < end; ++c) {
      // Two passes in double: no cancellation even when the mean dwarfs the spread.
      const double sum = channel_sum(layout, c, [&](int64_t i) { return double{x.data[i]}; });
      const double mean = sum / static_cast<double>(count);
      const double squares = channel_sum(layout, c, [&](int64_t i) {
        const double deviation = x.data[i] - mean;
        return deviation * deviation;
      });
      const double biased_var = squares / static_cast<double>(count);
      const double unbiased_var = squares / static_cast<double>(count - 1);
      const double inv_std = 1.0 / std::sqrt(biased_var + epsilon);

      saved_mean.data[c] = static_cast<float>(mean);
      saved_inv_std.data[c] = static_cast<float>(inv_std);
      running_mean.data[c] =
          static_cast<float>((1.0 - average_factor) * running_mean.data[c] + average_factor * mean);
      running_var.data[c] = static_cast<float>((1.0 - average_factor) * running_var.data[c] +
                                               average_factor * unbiased_var);
      const float mean_f = saved_mean.data[c], inv_std_f = saved_inv_std.data[c];
      for_each_in_channel(layout, c, [&](int64_t i) {
        y.data[i] = batchnorm_apply(x.data[i], mean_f, inv_std_f, gamma.data[c], beta.data[c]);
      });
    }
  });
}

void CpuBackend::batchnorm_forward_inference_impl(ConstTensorView x, ConstTensorView gamma,
                                                  ConstTensorView beta,
                                                  ConstTensorView running_mean,
                                                  ConstTensorView running_var, double epsilon,
                                                  TensorView y) {
  const ChannelLayout layout = channel_layout(x.shape);

  pool_.parallel_for(layout.channels, [&](int64_t begin, int64_t end, int /*worker*/) {
    for (int64_t c = begin; c < end; ++c) {
      const float inv_std =
          static_cast<float>(1.0 / std::sqrt(static_cast<double>(running_var.data[c]) + epsilon));
      for_each_in_channel(layout, c, [&](int64_t i) {
        y.data[i] =
            batchnorm_apply(x.data[i], running_mean.data[c], inv_std, gamma.data[c], beta.data[c]);
      });
    }
  });
}

// With xhat = (x - mean) inv_std and M values per channel:
//   dbeta = sum dy,  dgamma = sum dy xhat,  dx = gamma inv_std (dy - dbeta / M - xhat dgamma / M).
// epsilon is not needed: saved_inv_std already holds it.
void CpuBackend::batchnorm_backward_impl(ConstTensorView x, ConstTensorView dy,
                                         ConstTensorView gamma, ConstTensorView saved_mean,
                                         ConstTensorView saved_inv_std, double /*epsilon*/,
                                         TensorView dx, TensorView dgamma, TensorView dbeta,
                                         bool relu_gate, float gate_dropout_rate,
                                         TensorView dx_sums) {
  const bool sums = dx_sums.shape.rank() != 0;
  const ChannelLayout layout = channel_layout(x.shape);
  const float kept = dropout_multiplier_from_keep(true, gate_dropout_rate);
  const double count = static_cast<double>(layout.count());

  pool_.parallel_for(layout.channels, [&](int64_t begin, int64_t end, int /*worker*/) {
    for (int64_t c = begin; c < end; ++c) {
      const double mean = saved_mean.data[c], inv_std = saved_inv_std.data[c];
      const double sum_dy = channel_sum(layout, c, [&](int64_t i) { return double{dy.data[i]}; });
      const double sum_dy_xhat = channel_sum(
          layout, c, [&](int64_t i) { return dy.data[i] * (x.data[i] - mean) * inv_std; });
      dbeta.data[c] = static_cast<float>(sum_dy);
      dgamma.data[c] = static_cast<float>(sum_dy_xhat);
      // The channel's factors in double, then the per-element formula the CUDA kernel uses.
      const float scale = static_cast<float>(gamma.data[c] * inv_std);
      const float mean_dy = static_cast<float>(sum_dy / count);
      const float mean_dy_xhat = static_cast<float>(sum_dy_xhat / count);
      for_each_in_channel(layout, c, [&](int64_t i) {
        dx.data[i] = relu_gated(relu_gate, x.data[i],
                                batchnorm_input_gradient(x.data[i], dy.data[i], saved_mean.data[c],
                                                         saved_inv_std.data[c], scale, mean_dy,
                                                         mean_dy_xhat),
                                kept);
      });
      // As conv2d_backward_filter sums its dbias (the same values in the same order: its bits).
      if (sums)
        dx_sums.data[c] = static_cast<float>(
            channel_sum(layout, c, [&](int64_t i) { return double{dx.data[i]}; }));
    }
  });
}

void CpuBackend::batchnorm_backward_input_impl(ConstTensorView x, ConstTensorView dy,
                                               ConstTensorView gamma, ConstTensorView saved_mean,
                                               ConstTensorView saved_inv_std,
                                               ConstTensorView sums, double count,
                                               TensorView dx) {
  const ChannelLayout layout = channel_layout(x.shape);
  pool_.parallel_for(layout.channels, [&](int64_t begin, int64_t end, int /*worker*/) {
    for (int64_t c = begin; c < end; ++c) {
      const BatchNormChannelFactors f =
          batchnorm_factors_from_sums(sums.data[c], sums.data[layout.channels + c], count,
                                      gamma.data[c], saved_inv_std.data[c]);
      for_each_in_channel(layout, c, [&](int64_t i) {
        dx.data[i] = batchnorm_input_gradient(x.data[i], dy.data[i], saved_mean.data[c],
                                              saved_inv_std.data[c], f.scale, f.mean_dy,
                                              f.mean_dy_xhat);
      });
    }
  });
}

}  // namespace pneumo::cpu
