// Contract of the optimizer steps (Backend::rmsprop_step, adamw_step) and their argument checks.
// Each updates one contiguous parameter buffer in one launch, per element (elementwise.hpp's
// rmsprop_update and adamw_update: the arithmetic and its epsilon convention are written there).
//
// - rmsprop_step: params, grads, mean_square alike; rho in [0, 1];
// - adamw_step: params, grads, exp_avg, exp_avg_sq alike; the per-step constants (bias
//   corrections, computed on the host in double, step counted from 1) in AdamWStep.
#pragma once

#include "pneumo/ops/checks.hpp"
#include "pneumo/optimizer_step.hpp"

namespace pneumo::ops {

inline void check_rmsprop_step(Device device, ConstTensorView params, ConstTensorView grads,
                               ConstTensorView mean_square, float rho) {
  const char* op = "rmsprop_step";
  expect_on(device, op, {{"params", params}, {"grads", grads}, {"mean_square", mean_square}});
  expect_shape(op, "grads", grads.shape, params.shape);
  expect_shape(op, "mean_square", mean_square.shape, params.shape);
  PNEUMO_CHECK(rho >= 0.0f && rho <= 1.0f, op, ": rho ", rho, " outside [0, 1]");
}

inline void check_adamw_step(Device device, ConstTensorView params, ConstTensorView grads,
                             ConstTensorView exp_avg, ConstTensorView exp_avg_sq,
                             const AdamWStep& step) {
  const char* op = "adamw_step";
  expect_on(
      device, op,
      {{"params", params}, {"grads", grads}, {"exp_avg", exp_avg}, {"exp_avg_sq", exp_avg_sq}});
  expect_shapes(op, params.shape,
                {{"grads", grads}, {"exp_avg", exp_avg}, {"exp_avg_sq", exp_avg_sq}});
  PNEUMO_CHECK(step.bias_correction1 > 0.0f && step.bias_correction2 > 0.0f, op,
               ": bias corrections must be positive (step counted from 1), got ",
               step.bias_correction1, " and ", step.bias_correction2);
}

}  // namespace pneumo::ops
