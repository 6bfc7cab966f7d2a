// `pneumo evaluate` and `pneumo predict`: a trained checkpoint applied to a split of a dataset
// (metrics table + JSON) or to image files (one line per image). Both use the threshold stored
// in the checkpoint (tuned on validation) unless told otherwise.
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <optional>

#include "cli/commands/commands.hpp"
#include "pneumo/backend.hpp"
#include "pneumo/checkpoint.hpp"
#include "pneumo/data.hpp"
#include "pneumo/error.hpp"
#include "pneumo/metrics.hpp"
#include "pneumo/model_checkpoint.hpp"
#include "pneumo/sampling.hpp"
#include "pneumo/trainer.hpp"

namespace fs = std::filesystem;

namespace pneumo::cli {

namespace {

// A checkpoint loaded into a model on the chosen backend, ready for inference.
struct LoadedModel {
  CheckpointData checkpoint;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;
  std::unique_ptr<Trainer> runner;
};

// The flags every inference command shares, checked before any file is opened so that a typo is
// reported as such (exit status 2) rather than after a model has been loaded.
struct InferenceFlags {
  DeviceChoice device = DeviceChoice::Auto;
  std::optional<double> threshold;  // nullopt: the checkpoint's own
};

InferenceFlags parse_inference_flags(const std::string& device, int batch,
                                     const std::string& threshold) {
  if (batch < 1 || batch > 4096)
    throw UsageError("--batch must be in [1, 4096], got " + std::to_string(batch));
  InferenceFlags flags;
  try {
    flags.device = parse_device_choice(device);
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  if (threshold == "checkpoint") return flags;
  size_t used = 0;
  double value = -1;
  try {
    value = std::stod(threshold, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != threshold.size() || !(value >= 0.0 && value <= 1.0))
    throw UsageError("--threshold must be 'checkpoint' or a probability in [0, 1], got '" +
                     threshold + "'");
  flags.threshold = value;
  return flags;
}

LoadedModel load_model(const std::string& path, DeviceChoice device, int batch) {
  LoadedModel loaded;
  loaded.checkpoint = load_checkpoint(path);
  BackendOptions options;
  options.device = device;
  loaded.backend = make_backend(options);
  loaded.model = std::make_unique<Model>(*loaded.backend,
                                         model_config_for(loaded.checkpoint.metadata), batch);
  restore_checkpoint(loaded.checkpoint, *loaded.model, nullptr, path);
  AugmentSettings none;
  none.enabled = false;
  loaded.runner = std::make_unique<Trainer>(*loaded.backend, *loaded.model, batch, none, 0);
  return loaded;
}

}  // namespace

int run_evaluate(const EvaluateOptions& options) {
  if (options.model.empty()) throw Error("--model is required");
  if (options.data.empty()) throw Error("--data is required");
  const InferenceFlags flags =
      parse_inference_flags(options.device, options.batch, options.tuned_threshold);
  LoadedModel loaded = load_model(options.model, flags.device, options.batch);
  const CheckpointMetadata& meta = loaded.checkpoint.metadata;
  const double threshold = flags.threshold.value_or(meta.decision_threshold);

  OpenDatasetOptions open_options;
  open_options.size = meta.input_size;
  Dataset dataset = open_dataset(options.data, open_options);
  if (dataset.size != meta.input_size)
    throw Error("the data is prepared at " + std::to_string(dataset.size) + "x" +
                std::to_string(dataset.size) + " but the model expects " +
                std::to_string(meta.input_size) + "x" + std::to_string(meta.input_size));
  Split split;
  if (options.split == "val-carved") {
    // The validation images the run itself carved out of train (same fraction and seed).
    // The seed is the checkpoint's validated "seed" field; the fraction is read from its config.
    const auto& config = meta.config;
    const auto fraction = config.find("val-split");
    if (fraction == config.end() || !fraction->is_string())
      throw Error("checkpoint " + options.model +
                  " does not record its validation split as a string (\"val-split\" in its "
                  "config); use --split val or --split test");
    ValidationOptions rule;
    try {
      rule = parse_val_split(fraction->get<std::string>(), meta.seed);
    } catch (const Error& e) {
      throw Error("checkpoint " + options.model + ": " + e.what());
    }
    split = make_train_val(dataset, rule).val;
  } else {
    split = dataset.split(options.split);
  }
  ImageSet images = ImageSet::upload(loaded.backend->device(), split.images.data(), split.count(),
                                     split.size, split.labels.data());
  const std::vector<float> logits = loaded.runner->predict_logits(images);
  MetricsReport report = evaluate_binary(options.split, logits, split.labels, threshold);
  std::cout << "model: " << options.model << " (epoch " << meta.epoch << ", threshold "
            << threshold << ": " << (options.tuned_threshold == "checkpoint"
                                         ? meta.threshold_rule
                                         : std::string("given on the command line"))
            << ")\n"
            << "data: " << dataset.cache_dir << ", split " << options.split << "\n"
            << "backend: " << loaded.backend->name() << "\n"
            << format_metrics_table(report);
  if (!options.json.empty()) {
    nlohmann::json out = to_json(report);
    out["model"] = options.model;
    out["data"] = dataset.cache_dir;
    std::ofstream file(options.json);
    if (!(file << out.dump(2) << "\n")) throw Error("cannot write " + options.json);
  }
  return 0;
}

int run_predict(const PredictOptions& options) {
  if (options.model.empty()) throw Error("--model is required");
  if (options.inputs.empty()) throw Error("give at least one image or folder to predict");
  const InferenceFlags flags =
      parse_inference_flags(options.device, options.batch, options.threshold);
  LoadedModel loaded = load_model(options.model, flags.device, options.batch);
  const CheckpointMetadata& meta = loaded.checkpoint.metadata;
  const double threshold = flags.threshold.value_or(meta.decision_threshold);
  const int size = meta.input_size;

  std::vector<std::string> files = list_images(options.inputs);
  std::vector<uint8_t> pixels, labels;
  std::vector<std::string> kept;
  int failures = 0;
  for (const auto& file : files) {
    std::vector<uint8_t> image(static_cast<size_t>(size) * size);
    std::string problem = decode_image_file(file, size, image.data());
    if (!problem.empty()) {
      std::cerr << "pneumo: warning: skipping " << file << ": " << problem << "\n";
      ++failures;
      continue;
    }
    pixels.insert(pixels.end(), image.begin(), image.end());
    labels.push_back(0);  // unknown; only the logits are used
    kept.push_back(file);
  }
  if (kept.empty()) throw Error("none of the " + std::to_string(files.size()) +
                                " input files could be read as an image");
  ImageSet images = ImageSet::upload(loaded.backend->device(), pixels.data(),
                                     static_cast<int64_t>(kept.size()), size, labels.data());
  const std::vector<float> logits = loaded.runner->predict_logits(images);
  if (options.csv)
    std::cout << "path,probability_pneumonia,label" << (options.logits ? ",logit" : "") << "\n";
  for (size_t i = 0; i < kept.size(); ++i) {
    const double p = sigmoid(logits[i]);
    const char* label = predicts_pneumonia(logits[i], threshold) ? "PNEUMONIA" : "NORMAL";
    if (options.csv) {
      std::string path = kept[i];
      if (path.find_first_of(",\"\n") != std::string::npos) {
        std::string quoted = "\"";
        for (char c : path) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
        path = quoted + "\"";
      }
      std::cout << path << "," << std::setprecision(6) << p << "," << label;
      if (options.logits) std::cout << "," << std::setprecision(9) << logits[i];
      std::cout << "\n";
    } else {
      std::cout << kept[i] << "  " << std::fixed << std::setprecision(4) << p << "  " << label;
      std::cout.unsetf(std::ios::fixed);
      if (options.logits) std::cout << "  logit " << std::setprecision(9) << logits[i];
      std::cout << "\n";
    }
  }
  return failures == 0 ? 0 : 3;  // some inputs were unreadable: say so in the exit status
}

}  // namespace pneumo::cli
