// The per-step constants of the AdamW update (Backend::adamw_step), shared by the backend
// interface and the per-element update in kernels/elementwise.hpp.
#pragma once

#include "pneumo/hostdevice.hpp"
#include "pneumo/live_step.hpp"

namespace pneumo {

// Computed once on the host in double: bias corrections 1 - beta^t for step t (counted from 1
// over the whole run).
struct AdamWStep {
  float learning_rate, beta1, beta2, epsilon, weight_decay;
  float bias_correction1, bias_correction2;
};

// RMSprop's learning rate: live's where it is set (a step recorded once and replayed:
// pneumo/live_step.hpp), else the one passed.
PNEUMO_HD float with_live_learning_rate(float learning_rate, const LiveStep* live) {
  return live ? live->learning_rate : learning_rate;
}

// The step's constants with the learning rate and bias corrections of `live` where it is set.
PNEUMO_HD AdamWStep with_live_values(AdamWStep step, const LiveStep* live) {
  if (live) {
    step.learning_rate = live->learning_rate;
    step.bias_correction1 = live->bias_correction1;
    step.bias_correction2 = live->bias_correction2;
  }
  return step;
}

}  // namespace pneumo
