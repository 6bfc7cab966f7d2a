// Per-element ops on the CPU: ReLU, dropout, the fused sigmoid + BCE loss, the non-finite marker
// and RMSprop. Each loop body is one call into kernels/elementwise.hpp, the same functions the CUDA
// kernels call. ReLU and dropout run on the thread pool (dropout's generator made it a quarter of
// a training step's time single-threaded); the rest are tiny.
#include "elementwise.hpp"

#include <cmath>
#include <cstdint>

#include "cpu/cpu_backend.hpp"
#include "pneumo/error.hpp"

namespace pneumo::cpu {

// Member names (relu_backward, sigmoid_bce) hide the per-element functions of the same name, so
// those are called with their namespace.

namespace {

// body(begin, end) over [0, count): on the pool, or on this thread when the range is too small to
// be worth waking the workers for. Per-element work only: the split never changes a result.
template <class Body>
void for_range(ThreadPool& pool, int64_t count, const Body& body) {
  constexpr int64_t kInline = int64_t{1} << 14;
  if (count < kInline) {
    if (count > 0) body(0, count);
    return;
  }
  pool.parallel_for(count, [&](int64_t begin, int64_t end, int /*worker*/) { body(begin, end); });
}

}  // namespace

void CpuBackend::relu_forward_impl(ConstTensorView x, TensorView y) {
  const char* op = "relu_forward";
  expect_on_cpu(op, {{"x", x}, {"y", y}});
  expect_shape(op, "y", y.shape, x.shape);
  for_range(pool_, x.numel(), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) y.data[i] = pneumo::relu(x.data[i]);
  });
}

void CpuBackend::relu_backward_impl(ConstTensorView y, ConstTensorView dy, TensorView dx) {
  const char* op = "relu_backward";
  expect_on_cpu(op, {{"y", y}, {"dy", dy}, {"dx", dx}});
  expect_shape(op, "dy", dy.shape, y.shape);
  expect_shape(op, "dx", dx.shape, y.shape);
  for_range(pool_, y.numel(), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      dx.data[i] = pneumo::relu_backward(y.data[i], dy.data[i]);
  });
}

namespace {

// Dropout masks are indexed by the element's flat position as a 32-bit counter.
void check_dropout(const char* op, ConstTensorView input, TensorView output, float rate) {
  expect_on_cpu(op, {{"input", input}, {"output", output}});
  expect_shape(op, "output", output.shape, input.shape);
  PNEUMO_CHECK(rate >= 0.0f && rate < 1.0f, op, ": rate ", rate, " outside [0, 1)");
  PNEUMO_CHECK(input.numel() <= (int64_t{1} << 32), op, ": ", input.shape.str(),
               " has more elements than the 32-bit mask index covers");
}

// In groups of four elements, as the kernel (dropout_group); forward and backward are this map.
void apply_dropout(ThreadPool& pool, ConstTensorView in, TensorView out, float rate, RngKey key) {
  const int64_t n = in.numel();
  for_range(pool, (n + 3) / 4, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g)
      dropout_group(in.data, out.data, n, static_cast<uint32_t>(g), rate, key);
  });
}

}  // namespace

void CpuBackend::dropout_forward_impl(ConstTensorView x, TensorView y, float rate, RngKey key) {
  check_dropout("dropout_forward", x, y, rate);
  apply_dropout(pool_, x, y, rate, key);
}

void CpuBackend::dropout_backward_impl(ConstTensorView dy, TensorView dx, float rate, RngKey key) {
  check_dropout("dropout_backward", dy, dx, rate);
  apply_dropout(pool_, dy, dx, rate, key);
}

void CpuBackend::sigmoid_bce_impl(ConstTensorView logits, ConstTensorView labels,
                             ConstTensorView weights, TensorView dlogits, TensorView stats) {
  const char* op = "sigmoid_bce";
  expect_on_cpu(op, {{"logits", logits}, {"labels", labels}, {"dlogits", dlogits},
                     {"stats", stats}});
  const bool weighted = weights.data != nullptr;
  if (weighted) expect_on_cpu(op, {{"weights", weights}});
  const Shape& shape = logits.shape;
  PNEUMO_CHECK(shape.rank() == 1 || (shape.rank() == 2 && shape[1] == 1), op, ": logits have shape ",
               shape.str(), ", expected (N) or (N, 1)");
  const int64_t batch = shape[0];
  PNEUMO_CHECK(labels.numel() == batch, op, ": labels ", labels.shape.str(),
               " do not match logits ", shape.str());
  PNEUMO_CHECK(!weighted || weights.numel() == batch, op, ": weights ", weights.shape.str(),
               " do not match logits ", shape.str());
  expect_shape(op, "dlogits", dlogits.shape, shape);
  expect_shape(op, "stats", stats.shape, Shape{2});

  double loss_sum = 0.0, correct = 0.0;
  for (int64_t i = 0; i < batch; ++i) {
    BceElement e = pneumo::sigmoid_bce(logits.data[i], labels.data[i],
                                       weighted ? weights.data[i] : 1.0f);
    loss_sum += e.loss;
    correct += e.correct;
    dlogits.data[i] = e.gradient / static_cast<float>(batch);
  }
  stats.data[0] += static_cast<float>(loss_sum);
  stats.data[1] += static_cast<float>(correct);
}

void CpuBackend::mark_nonfinite_impl(ConstTensorView value, int64_t step, TensorView marker) {
  const char* op = "mark_nonfinite";
  expect_on_cpu(op, {{"value", value}, {"marker", marker}});
  PNEUMO_CHECK(value.numel() == 1 && marker.numel() == 1, op, ": value ", value.shape.str(),
               " and marker ", marker.shape.str(), " must hold one element each");
  PNEUMO_CHECK(step >= 0 && step < (int64_t{1} << 24), op, ": step ", step,
               " is outside [0, 2^24) (the marker is a float)");
  marker.data[0] = nonfinite_marker(value.data[0], marker.data[0], static_cast<float>(step + 1));
}

void CpuBackend::rmsprop_step_impl(TensorView params, ConstTensorView grads, TensorView mean_square,
                              float learning_rate, float rho, float epsilon) {
  const char* op = "rmsprop_step";
  expect_on_cpu(op, {{"params", params}, {"grads", grads}, {"mean_square", mean_square}});
  expect_shape(op, "grads", grads.shape, params.shape);
  expect_shape(op, "mean_square", mean_square.shape, params.shape);
  PNEUMO_CHECK(rho >= 0.0f && rho <= 1.0f, op, ": rho ", rho, " outside [0, 1]");
  for (int64_t i = 0; i < params.numel(); ++i)
    rmsprop_update(params.data[i], mean_square.data[i], grads.data[i], learning_rate, rho,
                   epsilon);
}

void CpuBackend::adamw_step_impl(TensorView params, ConstTensorView grads, TensorView exp_avg,
                            TensorView exp_avg_sq, const AdamWStep& step) {
  const char* op = "adamw_step";
  expect_on_cpu(op, {{"params", params}, {"grads", grads}, {"exp_avg", exp_avg},
                     {"exp_avg_sq", exp_avg_sq}});
  expect_shape(op, "grads", grads.shape, params.shape);
  expect_shape(op, "exp_avg", exp_avg.shape, params.shape);
  expect_shape(op, "exp_avg_sq", exp_avg_sq.shape, params.shape);
  PNEUMO_CHECK(step.bias_correction1 > 0.0f && step.bias_correction2 > 0.0f, op,
               ": bias corrections must be positive (step counted from 1), got ",
               step.bias_correction1, " and ", step.bias_correction2);
  for (int64_t i = 0; i < params.numel(); ++i)
    adamw_update(params.data[i], exp_avg.data[i], exp_avg_sq.data[i], grads.data[i], step);
}

}  // namespace pneumo::cpu
