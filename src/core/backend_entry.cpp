// The public entry of every Backend op: the op's argument checks (one place, every backend), the
// backend's implementation (the protected *_impl method), then the instrumentation hook.
#include "pneumo/backend.hpp"

namespace pneumo {

void Backend::conv2d_forward(ConstTensorView x, ConstTensorView weight,
                                    ConstTensorView bias, TensorView y, bool fuse_relu) {
  conv2d_forward_impl(x, weight, bias, y, fuse_relu);
  observe("conv2d_forward", x.shape);
}

void Backend::conv2d_backward_data(ConstTensorView dy, ConstTensorView weight,
                                          TensorView dx) {
  conv2d_backward_data_impl(dy, weight, dx);
  observe("conv2d_backward_data", dx.shape);
}

void Backend::conv2d_backward_filter(ConstTensorView x, ConstTensorView dy,
                                            TensorView dweight, TensorView dbias) {
  conv2d_backward_filter_impl(x, dy, dweight, dbias);
  observe("conv2d_backward_filter", x.shape);
}

void Backend::relu_forward(ConstTensorView x, TensorView y) {
  relu_forward_impl(x, y);
  observe("relu_forward", x.shape);
}

void Backend::relu_backward(ConstTensorView y, ConstTensorView dy, TensorView dx) {
  relu_backward_impl(y, dy, dx);
  observe("relu_backward", y.shape);
}

void Backend::maxpool2d_forward(ConstTensorView x, TensorView y) {
  maxpool2d_forward_impl(x, y);
  observe("maxpool2d_forward", x.shape);
}

void Backend::global_avgpool_forward(ConstTensorView x, TensorView y) {
  global_avgpool_forward_impl(x, y);
  observe("global_avgpool_forward", x.shape);
}

void Backend::global_avgpool_backward(ConstTensorView dy, TensorView dx) {
  global_avgpool_backward_impl(dy, dx);
  observe("global_avgpool_backward", dx.shape);
}

void Backend::maxpool2d_backward(ConstTensorView x, ConstTensorView y, ConstTensorView dy,
                                        TensorView dx) {
  maxpool2d_backward_impl(x, y, dy, dx);
  observe("maxpool2d_backward", x.shape);
}

void Backend::batchnorm_forward_training(ConstTensorView x, ConstTensorView gamma,
                                                ConstTensorView beta, TensorView running_mean,
                                                TensorView running_var, double average_factor,
                                                double epsilon, TensorView y,
                                                TensorView saved_mean, TensorView saved_inv_std) {
  batchnorm_forward_training_impl(x, gamma, beta, running_mean, running_var, average_factor,
                                    epsilon, y, saved_mean, saved_inv_std);
  observe("batchnorm_forward_training", x.shape);
}

void Backend::batchnorm_forward_inference(ConstTensorView x, ConstTensorView gamma,
                                                 ConstTensorView beta,
                                                 ConstTensorView running_mean,
                                                 ConstTensorView running_var, double epsilon,
                                                 TensorView y) {
  batchnorm_forward_inference_impl(x, gamma, beta, running_mean, running_var, epsilon, y);
  observe("batchnorm_forward_inference", x.shape);
}

void Backend::batchnorm_backward(ConstTensorView x, ConstTensorView dy,
                                        ConstTensorView gamma, ConstTensorView saved_mean,
                                        ConstTensorView saved_inv_std, double epsilon,
                                        TensorView dx, TensorView dgamma, TensorView dbeta) {
  batchnorm_backward_impl(x, dy, gamma, saved_mean, saved_inv_std, epsilon, dx, dgamma, dbeta);
  observe("batchnorm_backward", x.shape);
}

void Backend::dropout_forward(ConstTensorView x, TensorView y, float rate, RngKey key) {
  dropout_forward_impl(x, y, rate, key);
  observe("dropout_forward", x.shape);
}

void Backend::dropout_backward(ConstTensorView dy, TensorView dx, float rate, RngKey key) {
  dropout_backward_impl(dy, dx, rate, key);
  observe("dropout_backward", dy.shape);
}

void Backend::dense_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                                   TensorView y) {
  dense_forward_impl(x, weight, bias, y);
  observe("dense_forward", x.shape);
}

void Backend::dense_backward(ConstTensorView x, ConstTensorView weight, ConstTensorView dy,
                                    TensorView dx, TensorView dweight, TensorView dbias) {
  dense_backward_impl(x, weight, dy, dx, dweight, dbias);
  observe("dense_backward", x.shape);
}

void Backend::sigmoid_bce(ConstTensorView logits, ConstTensorView labels,
                                 ConstTensorView weights, TensorView dlogits, TensorView stats) {
  sigmoid_bce_impl(logits, labels, weights, dlogits, stats);
  observe("sigmoid_bce", logits.shape);
}

void Backend::mark_nonfinite(ConstTensorView value, int64_t step, TensorView marker) {
  mark_nonfinite_impl(value, step, marker);
  observe("mark_nonfinite", value.shape);
}

void Backend::rmsprop_step(TensorView params, ConstTensorView grads,
                                  TensorView mean_square, float learning_rate, float rho,
                                  float epsilon) {
  rmsprop_step_impl(params, grads, mean_square, learning_rate, rho, epsilon);
  observe("rmsprop_step", params.shape);
}

void Backend::adamw_step(TensorView params, ConstTensorView grads, TensorView exp_avg,
                                TensorView exp_avg_sq, const AdamWStep& step) {
  adamw_step_impl(params, grads, exp_avg, exp_avg_sq, step);
  observe("adamw_step", params.shape);
}

void Backend::gather_augment(const uint8_t* images, int64_t image_count, int size,
                                    const int32_t* indices, const AugmentSettings& settings,
                                    RngKey key, TensorView out) {
  gather_augment_impl(images, image_count, size, indices, settings, key, out);
  observe("gather_augment", out.shape);
}

void Backend::gather_values(const float* values, const int32_t* indices, TensorView out) {
  gather_values_impl(values, indices, out);
  observe("gather_values", out.shape);
}

}  // namespace pneumo
