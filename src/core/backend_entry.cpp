// The public entry of every Backend op: its contract's argument checks (pneumo/ops/<family>.hpp),
// run here once for every backend, then the backend's implementation (the protected *_impl
// method), then the instrumentation hook. A backend adds only what its own device needs (where
// raw pointers point, library limits).
#include "pneumo/backend.hpp"
#include "pneumo/ops/batchnorm.hpp"
#include "pneumo/ops/block_tail.hpp"
#include "pneumo/ops/conv2d.hpp"
#include "pneumo/ops/dense.hpp"
#include "pneumo/ops/dropout.hpp"
#include "pneumo/ops/input.hpp"
#include "pneumo/ops/loss.hpp"
#include "pneumo/ops/optimizer.hpp"
#include "pneumo/ops/pooling.hpp"
#include "pneumo/ops/relu.hpp"

namespace pneumo {

// ---- Convolution: pneumo/ops/conv2d.hpp ---------------------------------------------------------

void Backend::conv2d_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                             TensorView y, bool fuse_relu) {
  ops::check_conv2d_forward(device(), x, weight, bias, y);
  conv2d_forward_impl(x, weight, bias, y, fuse_relu);
  observe("conv2d_forward", x.shape);
}

void Backend::conv2d_backward_data(ConstTensorView dy, ConstTensorView weight, TensorView dx) {
  ops::check_conv2d_backward_data(device(), dy, weight, dx);
  conv2d_backward_data_impl(dy, weight, dx);
  observe("conv2d_backward_data", dx.shape);
}

void Backend::conv2d_backward_filter(ConstTensorView x, ConstTensorView dy, TensorView dweight,
                                     TensorView dbias) {
  ops::check_conv2d_backward_filter(device(), x, dy, dweight, dbias);
  conv2d_backward_filter_impl(x, dy, dweight, dbias);
  observe("conv2d_backward_filter", x.shape);
}

void Backend::conv2d_backward(ConstTensorView x, ConstTensorView dy, ConstTensorView weight,
                              TensorView dx, TensorView dweight, TensorView dbias) {
  ops::check_conv2d_backward(device(), x, dy, weight, dx, dweight, dbias);
  conv2d_backward_impl(x, dy, weight, dx, dweight, dbias);
  observe("conv2d_backward", x.shape);
}

void Backend::conv2d_forward_bf16(ConstBf16NhwcView x, ConstTensorView weight, Bf16NhwcView z) {
  ops::check_conv2d_forward_bf16(device(), x, weight, z);
  conv2d_forward_bf16_impl(x, weight, z);
  observe("conv2d_forward_bf16", x.shape);
}

void Backend::conv2d_backward_bf16(ConstBf16NhwcView x, ConstBf16NhwcView dz,
                                   ConstTensorView weight, Bf16NhwcView dx, TensorView dweight) {
  ops::check_conv2d_backward_bf16(device(), x, dz, weight, dx, dweight);
  conv2d_backward_bf16_impl(x, dz, weight, dx, dweight);
  observe("conv2d_backward_bf16", x.shape);
}

void Backend::to_bf16_channels_last(ConstTensorView x, Bf16NhwcView y) {
  ops::check_to_bf16_channels_last(device(), x, y);
  to_bf16_channels_last_impl(x, y);
  observe("to_bf16_channels_last", x.shape);
}

void Backend::from_bf16_channels_last(ConstBf16NhwcView x, TensorView y) {
  ops::check_from_bf16_channels_last(device(), x, y);
  from_bf16_channels_last_impl(x, y);
  observe("from_bf16_channels_last", x.shape);
}

// ---- ReLU: pneumo/ops/relu.hpp ------------------------------------------------------------------

void Backend::relu_forward(ConstTensorView x, TensorView y) {
  ops::check_relu_forward(device(), x, y);
  relu_forward_impl(x, y);
  observe("relu_forward", x.shape);
}

void Backend::relu_backward(ConstTensorView y, ConstTensorView dy, TensorView dx) {
  ops::check_relu_backward(device(), y, dy, dx);
  relu_backward_impl(y, dy, dx);
  observe("relu_backward", y.shape);
}

// ---- Pooling: pneumo/ops/pooling.hpp ------------------------------------------------------------

void Backend::maxpool2d_forward(ConstTensorView x, TensorView y) {
  ops::check_maxpool2d_forward(device(), x, y);
  maxpool2d_forward_impl(x, y);
  observe("maxpool2d_forward", x.shape);
}

void Backend::maxpool2d_backward(ConstTensorView x, ConstTensorView y, ConstTensorView dy,
                                 TensorView dx) {
  ops::check_maxpool2d_backward(device(), x, y, dy, dx);
  maxpool2d_backward_impl(x, y, dy, dx);
  observe("maxpool2d_backward", x.shape);
}

void Backend::global_avgpool_forward(ConstTensorView x, TensorView y) {
  ops::check_global_avgpool_forward(device(), x, y);
  global_avgpool_forward_impl(x, y);
  observe("global_avgpool_forward", x.shape);
}

void Backend::global_avgpool_backward(ConstTensorView dy, TensorView dx) {
  ops::check_global_avgpool_backward(device(), dy, dx);
  global_avgpool_backward_impl(dy, dx);
  observe("global_avgpool_backward", dx.shape);
}

// ---- Batch normalisation: pneumo/ops/batchnorm.hpp ----------------------------------------------

void Backend::batchnorm_forward_training(ConstTensorView x, ConstTensorView gamma,
                                         ConstTensorView beta, TensorView running_mean,
                                         TensorView running_var, double average_factor,
                                         double epsilon, TensorView y, TensorView saved_mean,
                                         TensorView saved_inv_std) {
  ops::check_batchnorm_forward_training(device(), x, gamma, beta, running_mean, running_var,
                                        average_factor, epsilon, y, saved_mean, saved_inv_std);
  batchnorm_forward_training_impl(x, gamma, beta, running_mean, running_var, average_factor,
                                  epsilon, y, saved_mean, saved_inv_std);
  observe("batchnorm_forward_training", x.shape);
}

void Backend::batchnorm_forward_inference(ConstTensorView x, ConstTensorView gamma,
                                          ConstTensorView beta, ConstTensorView running_mean,
                                          ConstTensorView running_var, double epsilon,
                                          TensorView y) {
  ops::check_batchnorm_forward_inference(device(), x, gamma, beta, running_mean, running_var,
                                         epsilon, y);
  batchnorm_forward_inference_impl(x, gamma, beta, running_mean, running_var, epsilon, y);
  observe("batchnorm_forward_inference", x.shape);
}

void Backend::batchnorm_backward(ConstTensorView x, ConstTensorView dy, ConstTensorView gamma,
                                 ConstTensorView saved_mean, ConstTensorView saved_inv_std,
                                 double epsilon, TensorView dx, TensorView dgamma,
                                 TensorView dbeta, bool relu_gate, float gate_dropout_rate,
                                 TensorView dx_sums) {
  ops::check_batchnorm_backward(device(), x, dy, gamma, saved_mean, saved_inv_std, epsilon, dx,
                                dgamma, dbeta, relu_gate, gate_dropout_rate, dx_sums);
  batchnorm_backward_impl(x, dy, gamma, saved_mean, saved_inv_std, epsilon, dx, dgamma, dbeta,
                          relu_gate, gate_dropout_rate, dx_sums);
  observe("batchnorm_backward", x.shape);
}

void Backend::batchnorm_backward_input(ConstTensorView x, ConstTensorView dy,
                                       ConstTensorView gamma, ConstTensorView saved_mean,
                                       ConstTensorView saved_inv_std, ConstTensorView sums,
                                       double count, TensorView dx) {
  ops::check_batchnorm_backward_input(device(), x, dy, gamma, saved_mean, saved_inv_std, sums,
                                      count, dx);
  batchnorm_backward_input_impl(x, dy, gamma, saved_mean, saved_inv_std, sums, count, dx);
  observe("batchnorm_backward_input", x.shape);
}

// ---- Block tail: pneumo/ops/block_tail.hpp -----------------------------------------------------

void Backend::block_tail_forward(ConstTensorView a, ConstTensorView gamma, ConstTensorView beta,
                                 TensorView running_mean, TensorView running_var,
                                 const BlockTailSettings& settings, TensorView y,
                                 TensorView saved_mean, TensorView saved_inv_std) {
  ops::check_block_tail_forward(device(), a, gamma, beta, running_mean, running_var, settings, y,
                                saved_mean, saved_inv_std);
  block_tail_forward_impl(a, gamma, beta, running_mean, running_var, settings, y, saved_mean,
                          saved_inv_std);
  observe("block_tail_forward", a.shape);
}

void Backend::block_tail_backward(ConstTensorView a, ConstTensorView dy, ConstTensorView gamma,
                                  ConstTensorView beta, ConstTensorView saved_mean,
                                  ConstTensorView saved_inv_std, const BlockTailSettings& settings,
                                  TensorView da, TensorView dgamma, TensorView dbeta) {
  ops::check_block_tail_backward(device(), a, dy, gamma, beta, saved_mean, saved_inv_std,
                                 settings, da, dgamma, dbeta);
  block_tail_backward_impl(a, dy, gamma, beta, saved_mean, saved_inv_std, settings, da, dgamma,
                           dbeta);
  observe("block_tail_backward", a.shape);
}

void Backend::block_tail_forward_bf16(ConstBf16NhwcView z, ConstTensorView bias,
                                      ConstTensorView gamma, ConstTensorView beta,
                                      TensorView running_mean, TensorView running_var,
                                      const BlockTailSettings& settings, Bf16NhwcView y,
                                      TensorView saved_mean, TensorView saved_inv_std) {
  ops::check_block_tail_forward_bf16(device(), z, bias, gamma, beta, running_mean, running_var,
                                     settings, y, saved_mean, saved_inv_std);
  block_tail_forward_bf16_impl(z, bias, gamma, beta, running_mean, running_var, settings, y,
                               saved_mean, saved_inv_std);
  observe("block_tail_forward_bf16", z.shape);
}

void Backend::block_tail_backward_bf16(ConstBf16NhwcView z, ConstTensorView bias,
                                       ConstBf16NhwcView dy, ConstTensorView gamma,
                                       ConstTensorView beta, ConstTensorView saved_mean,
                                       ConstTensorView saved_inv_std,
                                       const BlockTailSettings& settings, Bf16NhwcView dz,
                                       TensorView dbias, TensorView dgamma, TensorView dbeta) {
  ops::check_block_tail_backward_bf16(device(), z, bias, dy, gamma, beta, saved_mean,
                                      saved_inv_std, settings, dz, dbias, dgamma, dbeta);
  block_tail_backward_bf16_impl(z, bias, dy, gamma, beta, saved_mean, saved_inv_std, settings, dz,
                                dbias, dgamma, dbeta);
  observe("block_tail_backward_bf16", z.shape);
}

void Backend::stem_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                           ConstTensorView gamma, ConstTensorView beta, TensorView running_mean,
                           TensorView running_var, const BlockTailSettings& settings, TensorView y,
                           TensorView saved_mean, TensorView saved_inv_std) {
  ops::check_stem_forward(device(), x, weight, bias, gamma, beta, running_mean, running_var,
                          settings, y, saved_mean, saved_inv_std);
  stem_forward_impl(x, weight, bias, gamma, beta, running_mean, running_var, settings, y,
                    saved_mean, saved_inv_std);
  observe("stem_forward", x.shape);
}

void Backend::stem_backward(ConstTensorView x, ConstTensorView dy, ConstTensorView weight,
                            ConstTensorView bias, ConstTensorView gamma, ConstTensorView beta,
                            ConstTensorView saved_mean, ConstTensorView saved_inv_std,
                            const BlockTailSettings& settings, TensorView dweight,
                            TensorView dbias, TensorView dgamma, TensorView dbeta) {
  ops::check_stem_backward(device(), x, dy, weight, bias, gamma, beta, saved_mean, saved_inv_std,
                           settings, dweight, dbias, dgamma, dbeta);
  stem_backward_impl(x, dy, weight, bias, gamma, beta, saved_mean, saved_inv_std, settings,
                     dweight, dbias, dgamma, dbeta);
  observe("stem_backward", x.shape);
}

// ---- Dropout: pneumo/ops/dropout.hpp ------------------------------------------------------------

void Backend::dropout_forward(ConstTensorView x, TensorView y, float rate, RngKey key) {
  ops::check_dropout_forward(device(), x, y, rate, key);
  dropout_forward_impl(x, y, rate, key);
  observe("dropout_forward", x.shape);
}

void Backend::dropout_backward(ConstTensorView dy, TensorView dx, float rate, RngKey key) {
  ops::check_dropout_backward(device(), dy, dx, rate, key);
  dropout_backward_impl(dy, dx, rate, key);
  observe("dropout_backward", dy.shape);
}

// ---- Dense: pneumo/ops/dense.hpp ----------------------------------------------------------------

void Backend::dense_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                            TensorView y) {
  ops::check_dense_forward(device(), x, weight, bias, y);
  dense_forward_impl(x, weight, bias, y);
  observe("dense_forward", x.shape);
}

void Backend::dense_backward(ConstTensorView x, ConstTensorView weight, ConstTensorView dy,
                             TensorView dx, TensorView dweight, TensorView dbias) {
  ops::check_dense_backward(device(), x, weight, dy, dx, dweight, dbias);
  dense_backward_impl(x, weight, dy, dx, dweight, dbias);
  observe("dense_backward", x.shape);
}

// ---- Loss and the non-finite guard: pneumo/ops/loss.hpp -----------------------------------------

void Backend::sigmoid_bce(ConstTensorView logits, ConstTensorView labels, ConstTensorView weights,
                          TensorView dlogits, TensorView stats, int64_t batch_count) {
  ops::check_sigmoid_bce(device(), logits, labels, weights, dlogits, stats, batch_count);
  sigmoid_bce_impl(logits, labels, weights, dlogits, stats, batch_count);
  observe("sigmoid_bce", logits.shape);
}

void Backend::mark_nonfinite(ConstTensorView value, int64_t step, TensorView marker,
                             const LiveStep* live) {
  ops::check_mark_nonfinite(device(), value, step, marker);
  mark_nonfinite_impl(value, step, marker, live);
  observe("mark_nonfinite", value.shape);
}

// ---- Optimizers: pneumo/ops/optimizer.hpp -------------------------------------------------------

void Backend::rmsprop_step(TensorView params, ConstTensorView grads, TensorView mean_square,
                           float learning_rate, float rho, float epsilon, bool eps_inside,
                           const LiveStep* live) {
  ops::check_rmsprop_step(device(), params, grads, mean_square, rho);
  rmsprop_step_impl(params, grads, mean_square, learning_rate, rho, epsilon, eps_inside, live);
  observe("rmsprop_step", params.shape);
}

void Backend::adamw_step(TensorView params, ConstTensorView grads, TensorView exp_avg,
                         TensorView exp_avg_sq, const AdamWStep& step, const LiveStep* live) {
  ops::check_adamw_step(device(), params, grads, exp_avg, exp_avg_sq, step);
  adamw_step_impl(params, grads, exp_avg, exp_avg_sq, step, live);
  observe("adamw_step", params.shape);
}

// ---- Input pipeline: pneumo/ops/input.hpp -------------------------------------------------------

void Backend::gather_augment(const uint8_t* images, int64_t image_count, int size,
                             const int32_t* indices, const AugmentSettings& settings, RngKey key,
                             TensorView out) {
  ops::check_gather_augment(device(), images, size, indices, out);
  gather_augment_impl(images, image_count, size, indices, settings, key, out);
  observe("gather_augment", out.shape);
}

void Backend::gather_values(const float* values, int64_t value_count, const int32_t* indices,
                            TensorView out) {
  ops::check_gather_values(device(), values, value_count, indices, out);
  gather_values_impl(values, value_count, indices, out);
  observe("gather_values", out.shape);
}

void Backend::begin_step(const LiveStep* table, int64_t table_size, uint32_t* cursor,
                         const int32_t* order, int count, LiveStep* current, int32_t* indices) {
  ops::check_begin_step(table, table_size, cursor, order, count, current, indices);
  begin_step_impl(table, table_size, cursor, order, count, current, indices);
  observe("begin_step", Shape{count});
}

}  // namespace pneumo
