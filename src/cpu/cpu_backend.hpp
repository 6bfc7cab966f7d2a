// CpuBackend: the reference implementation of every Backend op (the trusted twin CUDA is tested
// against, and the fallback without a GPU). Ops are split by family over src/cpu/*.cpp; their
// argument checks run before them, in Backend's public entry (src/core/backend_entry.cpp).
#pragma once

#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "cpu/parallel.hpp"
#include "pneumo/backend.hpp"

namespace pneumo::cpu {

// One op at a time: the backend's scratch buffers are shared between calls, so a CpuBackend must
// not be called from several threads at once (it parallelises internally).
class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads);  // 0: one per hardware thread

  Device device() const override { return Device::Cpu; }
  std::string name() const override;
  int threads() const { return pool_.size(); }

  void conv2d_forward_impl(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                      TensorView y, bool fuse_relu) override;
  void conv2d_backward_data_impl(ConstTensorView dy, ConstTensorView weight, TensorView dx) override;
  void conv2d_backward_filter_impl(ConstTensorView x, ConstTensorView dy, TensorView dweight,
                              TensorView dbias) override;

  void relu_forward_impl(ConstTensorView x, TensorView y) override;
  void relu_backward_impl(ConstTensorView y, ConstTensorView dy, TensorView dx) override;

  void maxpool2d_forward_impl(ConstTensorView x, TensorView y) override;
  void maxpool2d_backward_impl(ConstTensorView x, ConstTensorView y, ConstTensorView dy,
                          TensorView dx) override;
  void global_avgpool_forward_impl(ConstTensorView x, TensorView y) override;
  void global_avgpool_backward_impl(ConstTensorView dy, TensorView dx) override;

  void batchnorm_forward_training_impl(ConstTensorView x, ConstTensorView gamma, ConstTensorView beta,
                                  TensorView running_mean, TensorView running_var,
                                  double average_factor, double epsilon, TensorView y,
                                  TensorView saved_mean, TensorView saved_inv_std) override;
  void batchnorm_forward_inference_impl(ConstTensorView x, ConstTensorView gamma, ConstTensorView beta,
                                   ConstTensorView running_mean, ConstTensorView running_var,
                                   double epsilon, TensorView y) override;
  void batchnorm_backward_impl(ConstTensorView x, ConstTensorView dy, ConstTensorView gamma,
                          ConstTensorView saved_mean, ConstTensorView saved_inv_std,
                          double epsilon, TensorView dx, TensorView dgamma,
                          TensorView dbeta) override;

  void dropout_forward_impl(ConstTensorView x, TensorView y, float rate, RngKey key) override;
  void dropout_backward_impl(ConstTensorView dy, TensorView dx, float rate, RngKey key) override;

  void dense_forward_impl(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                     TensorView y) override;
  void dense_backward_impl(ConstTensorView x, ConstTensorView weight, ConstTensorView dy,
                      TensorView dx, TensorView dweight, TensorView dbias) override;

  void sigmoid_bce_impl(ConstTensorView logits, ConstTensorView labels, ConstTensorView weights,
                   TensorView dlogits, TensorView stats) override;

  void mark_nonfinite_impl(ConstTensorView value, int64_t step, TensorView marker) override;
  void rmsprop_step_impl(TensorView params, ConstTensorView grads, TensorView mean_square,
                    float learning_rate, float rho, float epsilon) override;
  void adamw_step_impl(TensorView params, ConstTensorView grads, TensorView exp_avg,
                  TensorView exp_avg_sq, const AdamWStep& step) override;

  void gather_augment_impl(const uint8_t* images, int64_t image_count, int size,
                      const int32_t* indices, const AugmentSettings& settings, RngKey key,
                      TensorView out) override;
  void gather_values_impl(const float* values, const int32_t* indices, TensorView out) override;

 private:
  // Scratch buffer number `slot` of every worker, each at least `count` floats (kept and reused
  // across calls). Call before parallel_for: buffers are grown only from the calling thread.
  std::vector<float*> worker_scratch(int slot, int64_t count);
  static constexpr int kScratchSlots = 2;  // im2col columns, filter-gradient partial sums

  ThreadPool pool_;
  std::vector<std::vector<std::vector<float>>> scratch_;  // [worker][slot]
};

}  // namespace pneumo::cpu
