// The per-step constants of the AdamW update (Backend::adamw_step), shared by the backend
// interface and the per-element update in kernels/elementwise.hpp.
#pragma once

namespace pneumo {

// Computed once on the host in double: bias corrections 1 - beta^t for step t (counted from 1
// over the whole run).
struct AdamWStep {
  float learning_rate, beta1, beta2, epsilon, weight_decay;
  float bias_correction1, bias_correction2;
};

}  // namespace pneumo
