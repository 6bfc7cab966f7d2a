// Per-element ops on the CPU: ReLU, dropout, the fused sigmoid + BCE loss, the non-finite marker
// and RMSprop. Each loop body is one call into kernels/elementwise.hpp, the same functions the CUDA
// kernels call (dropout's mask: cpu/dropout_mask.cpp, held to those functions bit for bit by its
// tests). ReLU and dropout run on the thread pool (dropout's generator made it a quarter of
// a training step's time single-threaded; cpu/dropout_mask.cpp now draws it eight calls at a
// time); the rest are tiny.
#include "elementwise.hpp"

#include <cmath>
#include <cstdint>

#include "cpu/cpu_backend.hpp"
#include "cpu/dropout_mask.hpp"
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
  for_range(pool_, x.numel(), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) y.data[i] = pneumo::relu(x.data[i]);
  });
}

void CpuBackend::relu_backward_impl(ConstTensorView y, ConstTensorView dy, TensorView dx) {
  for_range(pool_, y.numel(), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) dx.data[i] = pneumo::relu_backward(y.data[i], dy.data[i]);
  });
}

namespace {

// The mask of dropout_group (the kernel's), drawn eight Philox calls at a time where the CPU
// allows (cpu/dropout_mask.hpp); forward and backward are this map. Any split of the range gives
// the same values.
void apply_dropout(ThreadPool& pool, ConstTensorView in, TensorView out, float rate, RngKey key) {
  for_range(pool, in.numel(), [&](int64_t begin, int64_t end) {
    apply_dropout_range(in.data, out.data, rate, key, begin, end);
  });
}

}  // namespace

void CpuBackend::dropout_forward_impl(ConstTensorView x, TensorView y, float rate, RngKey key) {
  apply_dropout(pool_, x, y, rate, key);
}

void CpuBackend::dropout_backward_impl(ConstTensorView dy, TensorView dx, float rate, RngKey key) {
  apply_dropout(pool_, dy, dx, rate, key);
}

void CpuBackend::sigmoid_bce_impl(ConstTensorView logits, ConstTensorView labels,
                                  ConstTensorView weights, TensorView dlogits, TensorView stats,
                                  int64_t batch_count) {
  const bool weighted = weights.data != nullptr;
  const Shape& shape = logits.shape;
  const int64_t batch = shape[0];

  double loss_sum = 0.0, correct = 0.0;
  for (int64_t i = 0; i < batch; ++i) {
    BceElement e =
        pneumo::sigmoid_bce(logits.data[i], labels.data[i], weighted ? weights.data[i] : 1.0f);
    loss_sum += e.loss;
    correct += e.correct;
    dlogits.data[i] = e.gradient / static_cast<float>(batch_count);
  }
  stats.data[0] += static_cast<float>(loss_sum);
  stats.data[1] += static_cast<float>(correct);
}

void CpuBackend::mark_nonfinite_impl(ConstTensorView value, int64_t step, TensorView marker,
                                     const LiveStep* live) {
  marker.data[0] =
      nonfinite_marker(value.data[0], marker.data[0], nonfinite_step_plus_one(step, live));
}

void CpuBackend::rmsprop_step_impl(TensorView params, ConstTensorView grads, TensorView mean_square,
                                   float learning_rate, float rho, float epsilon, bool eps_inside,
                                   const LiveStep* live) {
  learning_rate = with_live_learning_rate(learning_rate, live);
  for (int64_t i = 0; i < params.numel(); ++i)
    rmsprop_update(params.data[i], mean_square.data[i], grads.data[i], learning_rate, rho, epsilon,
                   eps_inside);
}

void CpuBackend::adamw_step_impl(TensorView params, ConstTensorView grads, TensorView exp_avg,
                                 TensorView exp_avg_sq, const AdamWStep& given,
                                 const LiveStep* live) {
  const AdamWStep step = with_live_values(given, live);
  for (int64_t i = 0; i < params.numel(); ++i)
    adamw_update(params.data[i], exp_avg.data[i], exp_avg_sq.data[i], grads.data[i], step);
}

}  // namespace pneumo::cpu
