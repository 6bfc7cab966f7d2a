// `pneumo train --inject-fault KIND@STEP`: the narrow hook the tests of interruption and NaN
// handling use to break a run on purpose. Hidden from --help and never recorded with a run; the
// training loop only sees an optional before-step callback.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "pneumo/tensor.hpp"

namespace pneumo {
class Model;
}

namespace pneumo::cli {

struct Fault {
  enum class Kind { NanLoss, NanWeight, InfState, Signal } kind = Kind::NanLoss;
  int signal = 0;
  int64_t step = 1;  // the step it hits, counted from 1 over the whole run
  int validation_epoch = 0;  // nan / sigint / sigterm @valE: as epoch E's validation starts
};

// "nan@K", "nan-weight@K", "inf-state@K", "sigint@K", "sigterm@K" (K >= 1), "nan@valE",
// "sigint@valE", "sigterm@valE" (E >= 1); throws pneumo::Error otherwise.
Fault parse_fault(const std::string& text);

// The callback run before each step of an epoch (its argument: the step within the epoch, from
// 0), acting just before global step fault.step. nan: the output layer's bias turns NaN (every
// logit does); nan-weight: the first weight of conv1 (ReLU and max pooling pass the NaN on to
// the loss); inf-state: conv1's first weight's mean square in the optimizer state (RMSprop's, or
// AdamW's second moment) turns infinite, as an overflowing one would: that weight's updates
// become 0, so loss, weights and validation stay finite and only the check before a checkpoint
// sees it;
// sigint / sigterm: that signal is raised (the run finishes the step, then stops).
std::function<void(int64_t)> fault_hook(const Fault& fault, Model& model,
                                        TensorView optimizer_state, int64_t steps_before_epoch);

// Called as epoch `epoch` (from 0)'s validation pass starts: a fault @valE strikes there when E
// is that epoch (nan: the output layer's bias turns NaN, so every validation logit does).
void fault_before_validation(const Fault& fault, Model& model, int epoch);

}  // namespace pneumo::cli
