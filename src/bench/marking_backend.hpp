// A Backend that forwards every op to another one and, after each, calls a marker with the op's
// name and the shape of its main operand ("conv2d_backward_filter", (32, 1, 150, 150)).
// `pneumo bench train --layers` records a CUDA event there, which splits a training step into
// the ops it enqueues; with no marker set it only forwards.
#pragma once

#include <functional>
#include <string>

#include "pneumo/backend.hpp"

namespace pneumo::bench {

class MarkingBackend final : public Backend {
 public:
  using Marker = std::function<void(const char* op, const Shape& shape)>;

  explicit MarkingBackend(Backend& inner) : inner_(inner) {}
  void set_marker(Marker marker) { marker_ = std::move(marker); }
  Backend& inner() { return inner_; }

  Device device() const override { return inner_.device(); }
  std::string name() const override { return inner_.name(); }
  void synchronize() override { inner_.synchronize(); }
  nlohmann::json report(int batch) const override;

  void conv2d_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                      TensorView y, bool fuse_relu) override;
  void conv2d_backward_data(ConstTensorView dy, ConstTensorView weight, TensorView dx) override;
  void conv2d_backward_filter(ConstTensorView x, ConstTensorView dy, TensorView dweight,
                              TensorView dbias) override;
  void relu_forward(ConstTensorView x, TensorView y) override;
  void relu_backward(ConstTensorView y, ConstTensorView dy, TensorView dx) override;
  void maxpool2d_forward(ConstTensorView x, TensorView y) override;
  void maxpool2d_backward(ConstTensorView x, ConstTensorView y, ConstTensorView dy,
                          TensorView dx) override;
  void global_avgpool_forward(ConstTensorView x, TensorView y) override;
  void global_avgpool_backward(ConstTensorView dy, TensorView dx) override;
  void batchnorm_forward_training(ConstTensorView x, ConstTensorView gamma, ConstTensorView beta,
                                  TensorView running_mean, TensorView running_var,
                                  double average_factor, double epsilon, TensorView y,
                                  TensorView saved_mean, TensorView saved_inv_std) override;
  void batchnorm_forward_inference(ConstTensorView x, ConstTensorView gamma, ConstTensorView beta,
                                   ConstTensorView running_mean, ConstTensorView running_var,
                                   double epsilon, TensorView y) override;
  void batchnorm_backward(ConstTensorView x, ConstTensorView dy, ConstTensorView gamma,
                          ConstTensorView saved_mean, ConstTensorView saved_inv_std,
                          double epsilon, TensorView dx, TensorView dgamma,
                          TensorView dbeta) override;
  void dropout_forward(ConstTensorView x, TensorView y, float rate, RngKey key) override;
  void dropout_backward(ConstTensorView dy, TensorView dx, float rate, RngKey key) override;
  void dense_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                     TensorView y) override;
  void dense_backward(ConstTensorView x, ConstTensorView weight, ConstTensorView dy, TensorView dx,
                      TensorView dweight, TensorView dbias) override;
  void sigmoid_bce(ConstTensorView logits, ConstTensorView labels, ConstTensorView weights,
                   TensorView dlogits, TensorView stats) override;
  void mark_nonfinite(ConstTensorView value, int64_t step, TensorView marker) override;
  void rmsprop_step(TensorView params, ConstTensorView grads, TensorView mean_square,
                    float learning_rate, float rho, float epsilon) override;
  void adamw_step(TensorView params, ConstTensorView grads, TensorView exp_avg,
                  TensorView exp_avg_sq, const AdamWStep& step) override;
  void gather_augment(const uint8_t* images, int64_t image_count, int size,
                      const int32_t* indices, const AugmentSettings& settings, RngKey key,
                      TensorView out) override;
  void gather_values(const float* values, const int32_t* indices, TensorView out) override;

 private:
  void mark(const char* op, const Shape& shape) const {
    if (marker_) marker_(op, shape);
  }

  Backend& inner_;
  Marker marker_;
};

}  // namespace pneumo::bench
