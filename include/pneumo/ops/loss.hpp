// Contract of the fused loss and the non-finite guard (Backend::sigmoid_bce, mark_nonfinite)
// and their argument checks.
//
// - sigmoid_bce: fused sigmoid + binary cross-entropy on logits. logits, labels: (N) or (N, 1);
//   weights: per-sample weights (N), or data == nullptr for 1. dlogits = weight * (sigmoid(z) - y)
//   / batch_count: the gradient of the batch-mean loss, where batch_count is the images of the
//   whole batch: N on one process, the global batch when a data-parallel rank holds N of its
//   images (then the ranks' gradients add up to one process's). stats (2): stats[0] += sum of
//   weighted losses, stats[1] += count of correct predictions at 0.5; accumulated on the device
//   so an epoch needs one read;
// - mark_nonfinite: value (1), marker (1), both on the device: if value[0] is NaN or infinite and
//   marker[0] is 0, marker[0] = step + 1. Run after each step on the running loss sum, it records
//   the first step whose loss was not finite without a host round trip (0: every step so far was
//   finite).
#pragma once

#include <cstdint>

#include "pneumo/ops/checks.hpp"

namespace pneumo::ops {

inline void check_sigmoid_bce(Device device, ConstTensorView logits, ConstTensorView labels,
                              ConstTensorView weights, ConstTensorView dlogits,
                              ConstTensorView stats, int64_t batch_count) {
  const char* op = "sigmoid_bce";
  expect_on(device, op,
            {{"logits", logits}, {"labels", labels}, {"dlogits", dlogits}, {"stats", stats}});
  const bool weighted = weights.data != nullptr;
  if (weighted) expect_on(device, op, {{"weights", weights}});
  const Shape& shape = logits.shape;
  PNEUMO_CHECK(shape.rank() == 1 || (shape.rank() == 2 && shape[1] == 1), op,
               ": logits have shape ", shape.str(), ", expected (N) or (N, 1)");
  const int64_t batch = shape[0];
  PNEUMO_CHECK(labels.numel() == batch, op, ": labels ", labels.shape.str(),
               " do not match logits ", shape.str());
  PNEUMO_CHECK(!weighted || weights.numel() == batch, op, ": weights ", weights.shape.str(),
               " do not match logits ", shape.str());
  expect_shape(op, "dlogits", dlogits.shape, shape);
  expect_shape(op, "stats", stats.shape, Shape{2});
  PNEUMO_CHECK(batch_count >= batch, op, ": batch_count ", batch_count, " is below the ", batch,
               " logits given");
}

inline void check_mark_nonfinite(Device device, ConstTensorView value, int64_t step,
                                 ConstTensorView marker) {
  const char* op = "mark_nonfinite";
  expect_on(device, op, {{"value", value}, {"marker", marker}});
  PNEUMO_CHECK(value.numel() == 1 && marker.numel() == 1, op, ": value ", value.shape.str(),
               " and marker ", marker.shape.str(), " must hold one element each");
  PNEUMO_CHECK(step >= 0 && step < (int64_t{1} << 24), op, ": step ", step,
               " is outside [0, 2^24) (the marker is a float)");
}

}  // namespace pneumo::ops
