// Model checkpoints as safetensors files: named float32 tensors (weights, batch-norm statistics,
// optimizer state) plus typed metadata (architecture, input size, classes, normalisation,
// threshold, training position, callback state, configuration). Independent of the Model class.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "pneumo/model.hpp"  // ParameterInfo only: the flat-buffer layout helpers below

namespace pneumo {

// Tensor naming (all float32, row-major, PyTorch layouts and names, docs/conventions.md):
//   <parameter name>                       model parameters: conv1.weight (K, C, 3, 3), conv1.bias,
//                                          bn1.weight (gamma), bn1.bias (beta), fc1.weight (out, in) ...
//   <buffer name>                          non-trainable buffers: bn1.running_mean, bn1.running_var
//   optimizer.rmsprop.mean_square.<name>   RMSprop's running mean of squared gradients, one per
//                                          parameter, same shape as that parameter
//   optimizer.adamw.exp_avg.<name>,        or AdamW's first and second moments (PyTorch's names),
//   optimizer.adamw.exp_avg_sq.<name>      when the metadata's "optimizer" is "adamw"
// A PyTorch model with the same names loads the first two groups with
// model.load_state_dict(safetensors.torch.load_file(path), strict=False) (strict loading would
// also want BatchNorm's num_batches_tracked, which this trainer has no use for).
constexpr const char* kRmspropMeanSquarePrefix = "optimizer.rmsprop.mean_square.";
constexpr const char* kAdamwExpAvgPrefix = "optimizer.adamw.exp_avg.";
constexpr const char* kAdamwExpAvgSqPrefix = "optimizer.adamw.exp_avg_sq.";
inline std::string rmsprop_state_name(const std::string& parameter_name) {
  return kRmspropMeanSquarePrefix + parameter_name;
}

// The tensor-name prefixes of an optimizer's state, one per slot of the Trainer's state buffer:
// "rmsprop" -> {mean_square}, "adamw" -> {exp_avg, exp_avg_sq}. Throws on another name.
std::vector<std::string> optimizer_state_prefixes(const std::string& optimizer);

constexpr const char* kCheckpointFormat = "pneumo-checkpoint";
constexpr int kCheckpointFormatVersion = 1;

// Everything a checkpoint says about itself. Stored as safetensors string metadata, one key per
// field (strings as they are, numbers and JSON values as JSON text), plus "format":
// "pneumo-checkpoint", so Python's safe_open(...).metadata() shows readable fields.
struct CheckpointMetadata {
  int format_version = kCheckpointFormatVersion;
  std::string architecture = "seed-cnn-v1";
  int input_size = 150;  // square images, input_size x input_size
  int channels = 1;
  std::vector<std::string> classes{"NORMAL", "PNEUMONIA"};  // index = label
  std::string normalisation = "x/255, grayscale";
  double decision_threshold = 0.5;     // probability; see predicts_pneumonia in metrics.hpp
  std::string threshold_rule = "default 0.5";  // e.g. "Youden's J on val"
  int epoch = 0;           // epochs completed; a resume starts at this (0-based) epoch
  int64_t step = 0;        // optimizer steps completed
  // The epochs behind the weights: `epoch`, except in a model whose run restored an earlier
  // epoch's weights at its end (--restore-best). Absent in older files: read as `epoch`.
  int weights_epoch = 0;
  // A run interrupted inside epoch `epoch` (by a signal): the steps of that epoch already done
  // and the epoch's loss sum and correct count after them; 0 for checkpoints at epoch ends.
  int64_t epoch_step = 0;
  double epoch_loss_sum = 0.0;
  double epoch_correct = 0.0;
  // ... and the seconds its training steps took until then (over every process that ran them):
  // the resumed epoch's history row adds them, as if it had not stopped. 0 at epoch ends.
  double epoch_seconds = 0.0;
  uint64_t seed = 0;       // the Philox key: with epoch and step it positions every random stream
  // The rate in force when written: inside an epoch, the epoch's; at an epoch's end, the next
  // epoch's under the plateau callback, the finished one's under a schedule (docs/checkpoints.md).
  double learning_rate = 1e-3;
  std::string optimizer = "rmsprop";
  nlohmann::json callback_state = nlohmann::json::object();  // CallbackList::state()
  nlohmann::json config = nlohmann::json::object();          // the run's resolved configuration
  std::map<std::string, std::string> extra;  // any other metadata keys, kept verbatim
};

// One float32 tensor by name.
struct NamedTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;  // row-major; product(shape) of them ([] holds one)
};

struct CheckpointData {
  std::vector<NamedTensor> tensors;
  CheckpointMetadata metadata;
  const NamedTensor* find(const std::string& name) const;  // nullptr when absent
};

// Writes atomically (temporary file, fsync, rename): an interrupted save leaves the previous
// checkpoint intact. Throws pneumo::Error naming the path (unwritable directory, ...) or the
// tensor (values that do not match the shape, duplicate names).
void save_checkpoint(const std::string& path, const CheckpointData& data);

// Reads and validates: a malformed or truncated file, a safetensors file that is not a pneumo
// checkpoint, a newer format version, missing or mistyped metadata, non-float32 tensors and tensor
// data that does not match its checksum are each a pneumo::Error naming the path and the field.
// The checksum: save_checkpoint stores metadata "tensors_crc32", the CRC-32 (zlib's) of the whole
// data section as 8 hex digits (Python: format(zlib.crc32(data[8 + header_length:]), "08x"));
// files without the key (written by other tools) load unchecked.
CheckpointData load_checkpoint(const std::string& path);
CheckpointMetadata read_checkpoint_metadata(const std::string& path);

// Refuses a checkpoint made for another network:
//   "checkpoint runs/a/best.safetensors was trained for architecture seed-cnn-v1 at input size
//    150; this run uses seed-cnn-v2 at 224"
void validate_compatible(const CheckpointMetadata& metadata, const std::string& architecture,
                         int input_size, const std::string& path);

// Flat buffer -> named tensors: one NamedTensor per info (name = prefix + info.name) holding
// flat[info.offset .. info.offset + numel). For the model's parameters and buffers (prefix "")
// and for RMSprop's mean squares (prefix kRmspropMeanSquarePrefix, same infos as the parameters).
std::vector<NamedTensor> tensors_from_flat(const float* flat, int64_t flat_size,
                                           const std::vector<ParameterInfo>& infos,
                                           const std::string& prefix = "");
// Named tensors -> flat buffer: each info's tensor must exist with exactly the info's shape.
// Throws pneumo::Error naming `source` (the checkpoint path) and the tensor otherwise.
void tensors_to_flat(const CheckpointData& data, const std::vector<ParameterInfo>& infos,
                     const std::string& prefix, float* flat, int64_t flat_size,
                     const std::string& source);

}  // namespace pneumo
