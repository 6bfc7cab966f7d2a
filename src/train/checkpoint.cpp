// Checkpoints on top of safetensors: typed metadata <-> string metadata, float32 tensors, the
// compatibility check, and the flat-buffer <-> named-tensor copies the trainer needs.
#include "pneumo/checkpoint.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "core/checksum.hpp"
#include "core/json_structure.hpp"
#include "core/json_text.hpp"
#include "pneumo/error.hpp"
#include "pneumo/safetensors.hpp"

namespace pneumo {

using nlohmann::json;

namespace {

// Metadata keys with a typed field; anything else in a file goes to CheckpointMetadata::extra.
const std::set<std::string>& reserved_keys() {
  static const std::set<std::string> keys{
      "format",         "format_version", "architecture",   "input_size",  "channels",
      "classes",        "normalisation",  "decision_threshold", "threshold_rule", "epoch",
      "step",           "seed",           "learning_rate",  "optimizer",   "callback_state",
      "config",         "epoch_step",     "epoch_loss_sum", "epoch_correct",
      "weights_epoch",  "epoch_seconds",  "tensors_crc32", "metadata_crc32"};
  return keys;
}

// CRC-32 of every metadata entry but the two checksums, in key order, each key and value followed
// by a NUL: a damaged digit that still parses (a learning rate, an epoch, a threshold) would
// otherwise load as a silently different state.
std::string metadata_crc(const std::map<std::string, std::string>& metadata) {
  uint32_t crc = 0;
  const char nul = '\0';
  for (const auto& [key, value] : metadata) {
    if (key == "tensors_crc32" || key == "metadata_crc32") continue;
    crc = crc32(key.data(), key.size(), crc);
    crc = crc32(&nul, 1, crc);
    crc = crc32(value.data(), value.size(), crc);
    crc = crc32(&nul, 1, crc);
  }
  return hex32(crc);
}

// Files written by other tools, or by pneumo before 2026-12-05, may lack the key.
void check_metadata_crc(const std::map<std::string, std::string>& metadata,
                        const std::string& path) {
  const auto stored = metadata.find("metadata_crc32");
  if (stored == metadata.end()) return;
  const std::string crc = metadata_crc(metadata);
  if (crc != stored->second)
    throw Error(detail::concat("checkpoint ", path, " is corrupt: its metadata has CRC-32 ", crc,
                               " but the file records ", stored->second.substr(0, 16),
                               " (damaged, or edited by hand; use another copy)"));
}

std::vector<int64_t> dims_of(const Shape& shape) {
  std::vector<int64_t> dims;
  for (int axis = 0; axis < shape.rank(); ++axis) dims.push_back(shape[axis]);
  return dims;
}

std::string dims_string(const std::vector<int64_t>& dims) {
  std::string text = "(";
  for (size_t i = 0; i < dims.size(); ++i) text += (i ? ", " : "") + std::to_string(dims[i]);
  return text + ")";
}

// JSON in metadata values (callback state, configuration) is a few levels deep. A hostile file
// could nest a value 100,000 levels deep in a few hundred kilobytes: nlohmann parses that without
// recursion, but copying or printing it later (dump(), the copy constructor) recurses once per
// level and overflows the stack, so such values are refused here, where the file is named.
constexpr int kMaxMetadataJsonDepth = 64;

// Reads typed fields out of the string metadata, naming the file and key on any problem.
class MetadataReader {
 public:
  MetadataReader(const std::map<std::string, std::string>& metadata, const std::string& path)
      : metadata_(metadata), path_(path) {}

  const std::string& text(const char* key) const {
    auto it = metadata_.find(key);
    if (it == metadata_.end())
      throw Error(detail::concat("checkpoint ", path_, " lacks the metadata field '", key, "'"));
    return it->second;
  }
  bool has(const char* key) const { return metadata_.count(key) > 0; }
  // Two passes, as the safetensors header's: a SAX pass refuses deep nesting and a key given
  // twice, then the plain parse. Not nlohmann's parse callback, which rescans the enclosing object
  // each time a child closes: 80,000 empty objects in a config took 25 s on the dev VM.
  json value(const char* key) const {
    const std::string& field = text(key);
    const JsonStructure structure =
        check_json_structure(field.data(), field.data() + field.size(), kMaxMetadataJsonDepth);
    if (structure.too_deep)
      throw Error(detail::concat("checkpoint ", path_, ": metadata field '", key,
                                 "' nests JSON deeper than ", kMaxMetadataJsonDepth, " levels"));
    if (!structure.repeated_key.empty())
      throw Error(detail::concat("checkpoint ", path_, ": metadata field '", key, "' gives \"",
                                 structure.repeated_key, "\" twice"));
    if (structure.valid) {
      try {
        return json::parse(field);
      } catch (const json::exception&) {
      }
    }
    throw Error(detail::concat("checkpoint ", path_, ": metadata field '", key,
                               "' is not valid JSON: ", field.substr(0, 60)));
  }
  int64_t integer(const char* key, int64_t lowest, int64_t highest) const {
    json parsed = value(key);
    if (!parsed.is_number_integer() || parsed.get<int64_t>() < lowest ||
        parsed.get<int64_t>() > highest ||
        (parsed.is_number_unsigned() &&
         parsed.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())))
      throw bad(key, "an integer in [" + std::to_string(lowest) + ", " + std::to_string(highest) + "]");
    return parsed.get<int64_t>();
  }
  uint64_t unsigned_integer(const char* key) const {
    json parsed = value(key);
    if (!parsed.is_number_unsigned()) throw bad(key, "a non-negative integer");
    return parsed.get<uint64_t>();
  }
  double number(const char* key) const {
    json parsed = value(key);
    if (!parsed.is_number()) throw bad(key, "a number");
    return parsed.get<double>();
  }

 private:
  Error bad(const char* key, const std::string& expected) const {
    return Error(detail::concat("checkpoint ", path_, ": metadata field '", key, "' must be ",
                                expected, ", got '", detail::excerpt(text(key), 60), "'"));
  }
  const std::map<std::string, std::string>& metadata_;
  const std::string& path_;
};

std::map<std::string, std::string> encode_metadata(const CheckpointMetadata& m,
                                                   const std::string& path) {
  for (const auto& [key, value] : m.extra)
    if (reserved_keys().count(key))
      throw Error(detail::concat("checkpoint ", path, ": extra metadata key '", key,
                                 "' collides with a typed field"));
  if (!(m.decision_threshold >= 0.0 && m.decision_threshold <= 1.0))
    throw Error(detail::concat("checkpoint ", path, ": decision threshold ", m.decision_threshold,
                               " is outside [0, 1]"));
  if (!std::isfinite(m.learning_rate))
    throw Error(detail::concat("checkpoint ", path, ": learning rate ", m.learning_rate,
                               " is not finite"));
  if (!std::isfinite(m.epoch_loss_sum) || !std::isfinite(m.epoch_correct))
    throw Error(detail::concat("checkpoint ", path, ": the interrupted epoch's sums (",
                               m.epoch_loss_sum, ", ", m.epoch_correct, ") are not finite"));
  std::map<std::string, std::string> out = m.extra;
  out["format"] = kCheckpointFormat;
  out["format_version"] = std::to_string(m.format_version);
  out["architecture"] = m.architecture;
  out["input_size"] = std::to_string(m.input_size);
  out["channels"] = std::to_string(m.channels);
  out["classes"] = json(m.classes).dump();
  out["normalisation"] = m.normalisation;
  out["decision_threshold"] = json(m.decision_threshold).dump();  // shortest exact form
  out["threshold_rule"] = m.threshold_rule;
  out["epoch"] = std::to_string(m.epoch);
  out["step"] = std::to_string(m.step);
  out["weights_epoch"] = std::to_string(m.weights_epoch);
  out["epoch_step"] = std::to_string(m.epoch_step);
  out["epoch_loss_sum"] = json(m.epoch_loss_sum).dump();
  out["epoch_correct"] = json(m.epoch_correct).dump();
  out["epoch_seconds"] = json(m.epoch_seconds).dump();
  out["seed"] = std::to_string(m.seed);
  out["learning_rate"] = json(m.learning_rate).dump();
  out["optimizer"] = m.optimizer;
  out["callback_state"] = m.callback_state.dump();
  out["config"] = json_text(m.config);  // it holds paths: any bytes
  return out;
}

CheckpointMetadata decode_metadata(const std::map<std::string, std::string>& metadata,
                                   const std::string& path) {
  auto format = metadata.find("format");
  if (format == metadata.end() || format->second != kCheckpointFormat)
    throw Error(detail::concat(path, " is a safetensors file but not a pneumo checkpoint (its "
                               "metadata lacks \"format\": \"", kCheckpointFormat, "\")"));
  MetadataReader read(metadata, path);
  CheckpointMetadata m;
  m.format_version = static_cast<int>(read.integer("format_version", 1, 1 << 20));
  if (m.format_version > kCheckpointFormatVersion)
    throw Error(detail::concat("checkpoint ", path, " has format version ", m.format_version,
                               "; this build of pneumo reads up to version ",
                               kCheckpointFormatVersion, " (upgrade pneumo)"));
  m.architecture = read.text("architecture");
  m.input_size = static_cast<int>(read.integer("input_size", 1, 1 << 16));
  m.channels = static_cast<int>(read.integer("channels", 1, 1 << 16));
  json classes = read.value("classes");
  if (!classes.is_array())
    throw Error(detail::concat("checkpoint ", path, ": metadata field 'classes' must be a list"));
  m.classes.clear();
  for (const json& name : classes) {
    if (!name.is_string())
      throw Error(detail::concat("checkpoint ", path, ": class names must be strings"));
    m.classes.push_back(name.get<std::string>());
  }
  m.normalisation = read.text("normalisation");
  m.decision_threshold = read.number("decision_threshold");
  if (!(m.decision_threshold >= 0.0 && m.decision_threshold <= 1.0))
    throw Error(detail::concat("checkpoint ", path, ": decision threshold ", m.decision_threshold,
                               " is outside [0, 1]"));
  m.threshold_rule = read.text("threshold_rule");
  m.epoch = static_cast<int>(read.integer("epoch", 0, std::numeric_limits<int>::max()));
  m.step = read.integer("step", 0, std::numeric_limits<int64_t>::max());
  m.weights_epoch = read.has("weights_epoch")
                        ? static_cast<int>(read.integer("weights_epoch", 0, m.epoch))
                        : m.epoch;
  // Position inside an interrupted epoch; absent (0) in checkpoints written at epoch ends by
  // earlier versions.
  if (read.has("epoch_step"))
    m.epoch_step = read.integer("epoch_step", 0, std::numeric_limits<int64_t>::max());
  if (read.has("epoch_loss_sum")) m.epoch_loss_sum = read.number("epoch_loss_sum");
  if (read.has("epoch_correct")) m.epoch_correct = read.number("epoch_correct");
  if (read.has("epoch_seconds")) m.epoch_seconds = read.number("epoch_seconds");
  if (!(m.epoch_seconds >= 0.0) || !std::isfinite(m.epoch_seconds))
    throw Error(detail::concat("checkpoint ", path, ": epoch_seconds ", m.epoch_seconds,
                               " is not a finite number >= 0"));
  m.seed = read.unsigned_integer("seed");
  m.learning_rate = read.number("learning_rate");
  m.optimizer = read.text("optimizer");
  m.callback_state = read.value("callback_state");
  m.config = read.value("config");
  for (const auto& [key, value] : metadata)
    if (!reserved_keys().count(key)) m.extra[key] = value;
  return m;
}

}  // namespace

const NamedTensor* CheckpointData::find(const std::string& name) const {
  for (const auto& tensor : tensors)
    if (tensor.name == name) return &tensor;
  return nullptr;
}

void save_checkpoint(const std::string& path, const CheckpointData& data) {
  SafetensorsWriter writer;
  uint32_t crc = 0;  // of the data section: the tensors' bytes in the order they are added
  for (const auto& tensor : data.tensors) {
    uint64_t numel = 1;
    for (int64_t dim : tensor.shape) {
      if (dim < 0 || __builtin_mul_overflow(numel, static_cast<uint64_t>(dim), &numel))
        throw Error(detail::concat("checkpoint ", path, ": tensor ", tensor.name,
                                   " has an invalid shape ", dims_string(tensor.shape)));
    }
    if (numel != tensor.values.size())
      throw Error(detail::concat("checkpoint ", path, ": tensor ", tensor.name, " has shape ",
                                 dims_string(tensor.shape), " (", numel, " values) but holds ",
                                 tensor.values.size()));
    writer.add_f32(tensor.name, tensor.shape, tensor.values.data());
    crc = crc32(tensor.values.data(), tensor.values.size() * sizeof(float), crc);
  }
  std::map<std::string, std::string> metadata = encode_metadata(data.metadata, path);
  metadata["tensors_crc32"] = hex32(crc);
  metadata["metadata_crc32"] = metadata_crc(metadata);
  for (const auto& [key, value] : metadata) writer.set_metadata(key, value);
  writer.write(path);
}

CheckpointData load_checkpoint(const std::string& path) {
  SafetensorsFile file = SafetensorsFile::read(path);
  CheckpointData data;
  check_metadata_crc(file.metadata(), path);
  data.metadata = decode_metadata(file.metadata(), path);
  // Safetensors has no checksum of its own: bytes changed inside the tensor data would load as
  // silently different weights. Files written by other tools may lack the key.
  if (auto stored = file.metadata().find("tensors_crc32"); stored != file.metadata().end()) {
    uint32_t crc = 0;
    for (const auto& entry : file.tensors())  // in data order: the whole data section
      crc = crc32(file.raw_bytes(entry), entry.byte_size(), crc);
    if (hex32(crc) != stored->second)
      throw Error(detail::concat("checkpoint ", path, " is corrupt: its tensor data has CRC-32 ",
                                 hex32(crc), " but the file records ", stored->second.substr(0, 16),
                                 " (damaged on disk or in transfer; use another copy)"));
  }
  for (const auto& entry : file.tensors()) {
    if (entry.dtype != DType::F32)
      throw Error(detail::concat("checkpoint ", path, ": tensor ", entry.name, " is ",
                                 dtype_name(entry.dtype), "; pneumo checkpoints hold F32 only"));
    data.tensors.push_back({entry.name, entry.shape, file.to_f32(entry.name)});
  }
  return data;
}

CheckpointMetadata read_checkpoint_metadata(const std::string& path) {
  const SafetensorsFile file = SafetensorsFile::read(path);
  check_metadata_crc(file.metadata(), path);
  return decode_metadata(file.metadata(), path);
}

std::vector<std::string> optimizer_state_prefixes(const std::string& optimizer) {
  if (optimizer == "rmsprop") return {kRmspropMeanSquarePrefix};
  if (optimizer == "adamw") return {kAdamwExpAvgPrefix, kAdamwExpAvgSqPrefix};
  throw Error("unknown optimizer '" + optimizer + "' (this build knows rmsprop and adamw)");
}

void validate_compatible(const CheckpointMetadata& metadata, const std::string& architecture,
                         int input_size, const std::string& path) {
  if (metadata.architecture != architecture || metadata.input_size != input_size) {
    // The flags that set them, where they are ours: --head picks the architecture, --size the
    // input size.
    const auto head_of = [](const std::string& name) {
      return name == "seed-cnn-v1" ? "flatten" : name == "seed-cnn-v1-gap" ? "gap" : "";
    };
    std::string flags;
    if (metadata.architecture != architecture && *head_of(metadata.architecture) &&
        *head_of(architecture))
      flags = detail::concat(" (--head ", head_of(architecture), "; the checkpoint's: --head ",
                             head_of(metadata.architecture), ")");
    // The size comes from --size, or (--size 0, the default) from the cache --data names: the
    // flag may not have been typed at all (a resume on a cache of another size).
    if (metadata.input_size != input_size)
      flags += detail::concat(flags.empty() ? " (" : " and (", "the input size is --size, or the "
                              "size a --data cache was prepared at when --size is 0; give the "
                              "checkpoint's ", metadata.input_size, ", or a --data prepared at it)");
    throw Error(detail::concat("checkpoint ", path, " was trained for architecture ",
                               metadata.architecture, " at input size ", metadata.input_size,
                               "; this run uses ", architecture, " at ", input_size, flags));
  }
  // The label of an output is its index into `classes`: another list (or order) would name every
  // prediction wrongly; the network reads one grey channel.
  const CheckpointMetadata ours;
  if (metadata.classes != ours.classes)
    throw Error(detail::concat("checkpoint ", path, " names its classes ",
                               nlohmann::json(metadata.classes).dump(), "; pneumo's models are ",
                               nlohmann::json(ours.classes).dump(), " in that order"));
  if (metadata.channels != ours.channels)
    throw Error(detail::concat("checkpoint ", path, " was trained on ", metadata.channels,
                               "-channel images; pneumo's models read one grey channel"));
}

std::vector<NamedTensor> tensors_from_flat(const float* flat, int64_t flat_size,
                                           const std::vector<ParameterInfo>& infos,
                                           const std::string& prefix) {
  std::vector<NamedTensor> tensors;
  for (const auto& info : infos) {
    int64_t count = info.shape.numel();
    if (info.offset < 0 || count < 0 || info.offset + count > flat_size)
      throw Error(detail::concat("tensor ", prefix, info.name, " ", info.shape.str(),
                                 " at offset ", info.offset, " lies outside the flat buffer of ",
                                 flat_size, " values"));
    tensors.push_back({prefix + info.name, dims_of(info.shape),
                       std::vector<float>(flat + info.offset, flat + info.offset + count)});
  }
  return tensors;
}

void tensors_to_flat(const CheckpointData& data, const std::vector<ParameterInfo>& infos,
                     const std::string& prefix, float* flat, int64_t flat_size,
                     const std::string& source) {
  for (const auto& info : infos) {
    std::string name = prefix + info.name;
    const NamedTensor* tensor = data.find(name);
    if (!tensor)
      throw Error(detail::concat("checkpoint ", source, " has no tensor ", name,
                                 " (it was saved from a different model or optimizer)"));
    std::vector<int64_t> expected = dims_of(info.shape);
    if (tensor->shape != expected)
      throw Error(detail::concat("checkpoint ", source, ": tensor ", name, " has shape ",
                                 dims_string(tensor->shape), " but this model expects ",
                                 dims_string(expected)));
    int64_t count = info.shape.numel();
    if (info.offset < 0 || info.offset + count > flat_size ||
        static_cast<int64_t>(tensor->values.size()) != count)
      throw Error(detail::concat("tensor ", name, " ", info.shape.str(), " at offset ",
                                 info.offset, " does not fit the flat buffer of ", flat_size,
                                 " values"));
    std::copy(tensor->values.begin(), tensor->values.end(), flat + info.offset);
  }
}

}  // namespace pneumo
