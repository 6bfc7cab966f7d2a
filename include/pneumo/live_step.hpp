// The values that change from one training step to the next, read by the device when the step
// runs rather than passed when it is issued: a step recorded once as a CUDA graph and replayed
// for every step of an epoch then draws each step's random numbers and applies its learning
// rate without the host touching it (Trainer::use_step_graphs).
//
// The trainer writes one LiveStep per step of the epoch into a table on the device; the
// `begin_step` op (pneumo/ops/input.hpp) copies the entry under a device-side cursor into the
// step's current LiveStep, gathers the step's image indices from the epoch order, and advances
// the cursor. Ops given a LiveStep pointer read it instead of their by-value arguments: the
// random keys' epoch and step (RngKey::live), the optimizers' learning rate and bias corrections,
// the non-finite guard's step. On the CPU backend the same pointers are host memory and the same
// path runs without a graph, so the CPU tests the bookkeeping the CUDA graph replays.
#pragma once

#include <cstdint>

namespace pneumo {

struct LiveStep {
  uint32_t epoch = 0;
  uint32_t step = 0;              // within the epoch, 0-based
  float learning_rate = 0.0f;
  float bias_correction1 = 1.0f;  // AdamW's 1 - beta^t, computed on the host in double
  float bias_correction2 = 1.0f;
  int32_t first = 0;              // the step's first image in the epoch order
};

}  // namespace pneumo
