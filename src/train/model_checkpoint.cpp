// Model <-> checkpoint (see model_checkpoint.hpp). The flat device buffers are copied through the
// host once per save/load; the tensors are named from the model's ParameterInfo lists.
#include "pneumo/model_checkpoint.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "pneumo/error.hpp"

namespace pneumo {

namespace {
std::vector<float> to_host(ConstTensorView view) {
  std::vector<float> host(static_cast<size_t>(view.numel()));
  copy_bytes(host.data(), Device::Cpu, view.data, view.device, host.size() * sizeof(float));
  return host;
}

void append(std::vector<NamedTensor>& out, std::vector<NamedTensor> more) {
  for (auto& t : more) out.push_back(std::move(t));
}

void from_checkpoint(const CheckpointData& data, const std::vector<ParameterInfo>& infos,
                     const std::string& prefix, TensorView target, const std::string& path) {
  std::vector<float> host = to_host(target);  // keeps the alignment gaps as they are
  tensors_to_flat(data, infos, prefix, host.data(), static_cast<int64_t>(host.size()), path);
  copy_bytes(target.data, target.device, host.data(), Device::Cpu, host.size() * sizeof(float));
}

// Every tensor must be one this model (its parameters, buffers and the recorded optimizer's
// state) has: a file with more was saved from another model, even when the names it shares fit.
void check_names(const CheckpointData& data, const Model& model, const std::string& path) {
  std::vector<std::string> known;
  for (const auto* infos : {&model.parameter_infos(), &model.buffer_infos()})
    for (const auto& info : *infos) known.push_back(info.name);
  std::vector<std::string> prefixes;
  if (!data.metadata.optimizer.empty()) prefixes = optimizer_state_prefixes(data.metadata.optimizer);
  for (const auto& prefix : prefixes)
    for (const auto& info : model.parameter_infos()) known.push_back(prefix + info.name);
  for (const auto& tensor : data.tensors)
    if (std::find(known.begin(), known.end(), tensor.name) == known.end())
      throw Error(detail::concat("checkpoint ", path, " holds tensor ", tensor.name,
                                 ", which this model does not have (it was saved from a "
                                 "different model or optimizer)"));
}
}  // namespace

CheckpointData capture_checkpoint(Model& model, const Tensor* optimizer_state,
                                  CheckpointMetadata metadata) {
  CheckpointData data;
  metadata.architecture = model.config().architecture;
  metadata.input_size = model.config().input_size;
  metadata.normalisation = normalization_description(model.config().input_normalization);
  data.metadata = std::move(metadata);
  auto params = to_host(model.parameters());
  append(data.tensors, tensors_from_flat(params.data(), static_cast<int64_t>(params.size()),
                                         model.parameter_infos()));
  auto buffers = to_host(model.buffers());
  append(data.tensors, tensors_from_flat(buffers.data(), static_cast<int64_t>(buffers.size()),
                                         model.buffer_infos()));
  if (optimizer_state) {
    // One slot per prefix, each laid out like the parameter buffer.
    const auto prefixes = optimizer_state_prefixes(data.metadata.optimizer);
    const int64_t slot = model.parameters().numel();
    PNEUMO_CHECK(optimizer_state->numel() == slot * static_cast<int64_t>(prefixes.size()),
                 "optimizer state of ", optimizer_state->numel(), " values does not hold ",
                 prefixes.size(), " slot(s) of ", slot, " for ", data.metadata.optimizer);
    auto state = to_host(optimizer_state->view());
    for (size_t k = 0; k < prefixes.size(); ++k)
      append(data.tensors, tensors_from_flat(state.data() + k * slot, slot,
                                             model.parameter_infos(), prefixes[k]));
  }
  return data;
}

void restore_checkpoint(const CheckpointData& data, Model& model, Tensor* optimizer_state,
                        const std::string& path) {
  validate_compatible(data.metadata, model.config().architecture, model.config().input_size,
                      path);
  const InputNormalization normalization =
      normalization_from_description(data.metadata.normalisation);
  if (normalization != model.config().input_normalization)
    throw Error(detail::concat("checkpoint ", path, " was trained with input normalisation ",
                               normalization_name(normalization), "; this model uses ",
                               normalization_name(model.config().input_normalization)));
  // A checkpoint saved after training diverged, or edited, would predict NaN or nonsense.
  if (const std::string bad = first_invalid_value(data); !bad.empty())
    throw Error(detail::concat("checkpoint ", path, ": ", bad, ", which no trained model holds "
                               "(saved after training diverged, or damaged)"));
  from_checkpoint(data, model.parameter_infos(), "", model.parameters(), path);
  from_checkpoint(data, model.buffer_infos(), "", model.buffers(), path);
  if (optimizer_state) {
    const auto prefixes = optimizer_state_prefixes(data.metadata.optimizer);
    const int64_t slot = model.parameters().numel();
    if (optimizer_state->numel() != slot * static_cast<int64_t>(prefixes.size()))
      throw Error(detail::concat("checkpoint ", path, " holds the state of optimizer ",
                                 data.metadata.optimizer, ", which this run does not use (give "
                                 "--optimizer ", data.metadata.optimizer, " to continue it)"));
    for (size_t k = 0; k < prefixes.size(); ++k)
      from_checkpoint(data, model.parameter_infos(), prefixes[k],
                      TensorView{optimizer_state->data() + k * slot, {slot}, optimizer_state->device()},
                      path);
  }
  check_names(data, model, path);  // after the loads: a missing tensor is the clearer message
}

std::string first_invalid_value(const CheckpointData& data) {
  for (const auto& tensor : data.tensors) {
    // Batch-norm takes the square root of a running variance, RMSprop and AdamW of their mean
    // squares: none of them can be negative.
    const bool variance = tensor.name.size() >= 12 &&
                          tensor.name.compare(tensor.name.size() - 12, 12, ".running_var") == 0;
    const bool mean_square = tensor.name.rfind(kRmspropMeanSquarePrefix, 0) == 0 ||
                             tensor.name.rfind(kAdamwExpAvgSqPrefix, 0) == 0;
    for (size_t i = 0; i < tensor.values.size(); ++i) {
      const float v = tensor.values[i];
      if (!std::isfinite(v) || ((variance || mean_square) && v < 0.0f))
        return detail::concat(tensor.name, "[", i, "] is ", v);
    }
  }
  return "";
}

ModelConfig model_config_for(const CheckpointMetadata& metadata, const std::string& path) {
  ModelConfig config;
  for (ModelHead head : {ModelHead::Flatten, ModelHead::GlobalAverage})
    if (metadata.architecture == architecture_name(head)) config.head = head;
  config.architecture = architecture_name(config.head);
  if (metadata.architecture != config.architecture)
    throw Error(detail::concat("checkpoint ", path, ": architecture '", metadata.architecture,
                               "' is not one this build knows ('",
                               architecture_name(ModelHead::Flatten), "', '",
                               architecture_name(ModelHead::GlobalAverage), "')"));
  config.input_size = metadata.input_size;
  try {
    config.input_normalization = normalization_from_description(metadata.normalisation);
  } catch (const Error& e) {
    throw Error("checkpoint " + path + ": " + e.what());
  }
  return config;
}

}  // namespace pneumo
