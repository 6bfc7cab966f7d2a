// Between a live Model (+ its RMSprop state) and a checkpoint: tensors named like PyTorch's
// state_dict (conv1.weight, bn1.running_var, ...) and "optimizer.rmsprop.mean_square.<name>".
#pragma once

#include <string>

#include "pneumo/checkpoint.hpp"
#include "pneumo/model.hpp"

namespace pneumo {

// Copies the model's parameters, batch-norm statistics and (when given) the optimizer's mean
// squares to the host, with `metadata` (architecture and input size are filled from the model).
CheckpointData capture_checkpoint(Model& model, const Tensor* optimizer_state,
                                  CheckpointMetadata metadata);

// Loads weights and statistics (and the optimizer state when `optimizer_state` is given) into
// the model, after checking the architecture and input size; `path` names the file in errors.
void restore_checkpoint(const CheckpointData& data, Model& model, Tensor* optimizer_state,
                        const std::string& path);

// "conv1.weight[4] is nan": the first value no trained model holds (not finite, or a negative
// running variance), or "". restore_checkpoint refuses such a checkpoint; training refuses to
// write one.
std::string first_invalid_value(const CheckpointData& data);

// The model configuration a checkpoint was written for (architecture, input size; the block
// layout is that of the seed network). An architecture or normalisation this build does not know
// is an Error naming `path` (one model among an ensemble's).
ModelConfig model_config_for(const CheckpointMetadata& metadata, const std::string& path);

}  // namespace pneumo
