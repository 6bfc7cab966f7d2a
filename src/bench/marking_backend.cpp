// MarkingBackend: each op forwarded to the backend it wraps, then marked (see the header).
#include "bench/marking_backend.hpp"

#include <nlohmann/json.hpp>

namespace pneumo::bench {

nlohmann::json MarkingBackend::report(int batch) const { return inner_.report(batch); }

void MarkingBackend::conv2d_forward(ConstTensorView x, ConstTensorView weight,
                                    ConstTensorView bias, TensorView y, bool fuse_relu) {
  inner_.conv2d_forward(x, weight, bias, y, fuse_relu);
  mark("conv2d_forward", x.shape);
}

void MarkingBackend::conv2d_backward_data(ConstTensorView dy, ConstTensorView weight,
                                          TensorView dx) {
  inner_.conv2d_backward_data(dy, weight, dx);
  mark("conv2d_backward_data", dx.shape);
}

void MarkingBackend::conv2d_backward_filter(ConstTensorView x, ConstTensorView dy,
                                            TensorView dweight, TensorView dbias) {
  inner_.conv2d_backward_filter(x, dy, dweight, dbias);
  mark("conv2d_backward_filter", x.shape);
}

void MarkingBackend::relu_forward(ConstTensorView x, TensorView y) {
  inner_.relu_forward(x, y);
  mark("relu_forward", x.shape);
}

void MarkingBackend::relu_backward(ConstTensorView y, ConstTensorView dy, TensorView dx) {
  inner_.relu_backward(y, dy, dx);
  mark("relu_backward", y.shape);
}

void MarkingBackend::maxpool2d_forward(ConstTensorView x, TensorView y) {
  inner_.maxpool2d_forward(x, y);
  mark("maxpool2d_forward", x.shape);
}

void MarkingBackend::global_avgpool_forward(ConstTensorView x, TensorView y) {
  inner_.global_avgpool_forward(x, y);
  mark("global_avgpool_forward", x.shape);
}

void MarkingBackend::global_avgpool_backward(ConstTensorView dy, TensorView dx) {
  inner_.global_avgpool_backward(dy, dx);
  mark("global_avgpool_backward", dx.shape);
}

void MarkingBackend::maxpool2d_backward(ConstTensorView x, ConstTensorView y, ConstTensorView dy,
                                        TensorView dx) {
  inner_.maxpool2d_backward(x, y, dy, dx);
  mark("maxpool2d_backward", x.shape);
}

void MarkingBackend::batchnorm_forward_training(ConstTensorView x, ConstTensorView gamma,
                                                ConstTensorView beta, TensorView running_mean,
                                                TensorView running_var, double average_factor,
                                                double epsilon, TensorView y,
                                                TensorView saved_mean, TensorView saved_inv_std) {
  inner_.batchnorm_forward_training(x, gamma, beta, running_mean, running_var, average_factor,
                                    epsilon, y, saved_mean, saved_inv_std);
  mark("batchnorm_forward_training", x.shape);
}

void MarkingBackend::batchnorm_forward_inference(ConstTensorView x, ConstTensorView gamma,
                                                 ConstTensorView beta,
                                                 ConstTensorView running_mean,
                                                 ConstTensorView running_var, double epsilon,
                                                 TensorView y) {
  inner_.batchnorm_forward_inference(x, gamma, beta, running_mean, running_var, epsilon, y);
  mark("batchnorm_forward_inference", x.shape);
}

void MarkingBackend::batchnorm_backward(ConstTensorView x, ConstTensorView dy,
                                        ConstTensorView gamma, ConstTensorView saved_mean,
                                        ConstTensorView saved_inv_std, double epsilon,
                                        TensorView dx, TensorView dgamma, TensorView dbeta) {
  inner_.batchnorm_backward(x, dy, gamma, saved_mean, saved_inv_std, epsilon, dx, dgamma, dbeta);
  mark("batchnorm_backward", x.shape);
}

void MarkingBackend::dropout_forward(ConstTensorView x, TensorView y, float rate, RngKey key) {
  inner_.dropout_forward(x, y, rate, key);
  mark("dropout_forward", x.shape);
}

void MarkingBackend::dropout_backward(ConstTensorView dy, TensorView dx, float rate, RngKey key) {
  inner_.dropout_backward(dy, dx, rate, key);
  mark("dropout_backward", dy.shape);
}

void MarkingBackend::dense_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                                   TensorView y) {
  inner_.dense_forward(x, weight, bias, y);
  mark("dense_forward", x.shape);
}

void MarkingBackend::dense_backward(ConstTensorView x, ConstTensorView weight, ConstTensorView dy,
                                    TensorView dx, TensorView dweight, TensorView dbias) {
  inner_.dense_backward(x, weight, dy, dx, dweight, dbias);
  mark("dense_backward", x.shape);
}

void MarkingBackend::sigmoid_bce(ConstTensorView logits, ConstTensorView labels,
                                 ConstTensorView weights, TensorView dlogits, TensorView stats) {
  inner_.sigmoid_bce(logits, labels, weights, dlogits, stats);
  mark("sigmoid_bce", logits.shape);
}

void MarkingBackend::mark_nonfinite(ConstTensorView value, int64_t step, TensorView marker) {
  inner_.mark_nonfinite(value, step, marker);
  mark("mark_nonfinite", value.shape);
}

void MarkingBackend::rmsprop_step(TensorView params, ConstTensorView grads,
                                  TensorView mean_square, float learning_rate, float rho,
                                  float epsilon) {
  inner_.rmsprop_step(params, grads, mean_square, learning_rate, rho, epsilon);
  mark("rmsprop_step", params.shape);
}

void MarkingBackend::adamw_step(TensorView params, ConstTensorView grads, TensorView exp_avg,
                                TensorView exp_avg_sq, const AdamWStep& step) {
  inner_.adamw_step(params, grads, exp_avg, exp_avg_sq, step);
  mark("adamw_step", params.shape);
}

void MarkingBackend::gather_augment(const uint8_t* images, int64_t image_count, int size,
                                    const int32_t* indices, const AugmentSettings& settings,
                                    RngKey key, TensorView out) {
  inner_.gather_augment(images, image_count, size, indices, settings, key, out);
  mark("gather_augment", out.shape);
}

void MarkingBackend::gather_values(const float* values, const int32_t* indices, TensorView out) {
  inner_.gather_values(values, indices, out);
  mark("gather_values", out.shape);
}

}  // namespace pneumo::bench
