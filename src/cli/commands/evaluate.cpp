// `pneumo evaluate` and `pneumo predict`: one trained checkpoint or an ensemble of them (mean
// probability), optionally with flip test-time augmentation, applied to a split of a dataset
// (metrics table + JSON, and the stress variants) or to image files (one line per image). A single
// model uses the threshold stored in its checkpoint (tuned on validation) unless told otherwise;
// an ensemble uses 0.5 unless told otherwise.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <iterator>
#include <limits>
#include <optional>
#include <sstream>

#include "cli/commands/commands.hpp"
#include "cli/commands/flag_text.hpp"
#include "cli/commands/guards.hpp"
#include "core/atomic_file.hpp"
#include "core/json_text.hpp"
#include "core/paths.hpp"
#include "pneumo/backend.hpp"
#include "pneumo/checkpoint.hpp"
#include "pneumo/data.hpp"
#include "pneumo/error.hpp"
#include "pneumo/explain.hpp"
#include "pneumo/metrics.hpp"
#include "pneumo/model_checkpoint.hpp"
#include "pneumo/progress.hpp"
#include "pneumo/sampling.hpp"
#include "pneumo/stress.hpp"
#include "pneumo/trainer.hpp"

namespace fs = std::filesystem;

namespace pneumo::cli {

namespace {

// Checkpoints loaded into models on one backend, ready for inference. Each member's Trainer
// applies the input normalisation its own checkpoint records.
struct Member {
  std::string path;
  CheckpointData checkpoint;
  std::unique_ptr<Model> model;
  std::unique_ptr<Trainer> runner;
};

struct Ensemble {
  std::unique_ptr<Backend> backend;
  std::vector<Member> members;
  bool flip_tta = false;

  const CheckpointMetadata& first() const { return members.front().checkpoint.metadata; }
  int views() const { return static_cast<int>(members.size()) * (flip_tta ? 2 : 1); }

  // Logits of every image of `data` (each image first through `fixed` when given). One model and
  // one view: its logits as they are. Otherwise the logit of the mean probability over models and
  // views, computed from log-probabilities (log of the mean of sigmoid(z) against the log of the
  // mean of sigmoid(-z)), so that confident views keep their order instead of all rounding to a
  // probability of 1 (which, clamped, made every such image a tie). A view whose output is not
  // finite stops the command, naming the model, wherever it is in the ensemble.
  std::vector<float> logits(const ImageSet& data, const AugmentParams* fixed = nullptr) {
    std::vector<std::vector<float>> per_view;
    for (Member& member : members)
      for (int flip = 0; flip <= (flip_tta ? 1 : 0); ++flip) {
        AugmentParams view = fixed ? *fixed : AugmentParams{};
        view.flip ^= flip;
        const bool plain = fixed == nullptr && flip == 0;
        per_view.push_back(member.runner->predict_logits(data, nullptr, plain ? nullptr : &view));
        const std::vector<float>& z = per_view.back();
        for (size_t i = 0; i < z.size(); ++i)
          if (!std::isfinite(z[i]))
            throw non_finite_output(member.path, z[i],
                                    detail::concat("image ", i, flip ? ", mirrored" : ""));
      }
    if (per_view.size() == 1) return std::move(per_view.front());
    std::vector<float> out(static_cast<size_t>(data.count));
    std::vector<double> positive(per_view.size()), negative(per_view.size());
    for (size_t i = 0; i < out.size(); ++i) {
      for (size_t v = 0; v < per_view.size(); ++v) {
        positive[v] = log_sigmoid(per_view[v][i]);
        negative[v] = log_sigmoid(-static_cast<double>(per_view[v][i]));
      }
      // The views' count divides both means, so it cancels in their ratio.
      out[i] = static_cast<float>(log_sum_exp(positive) - log_sum_exp(negative));
    }
    return out;
  }

  std::string description() const {
    std::string text = members.size() == 1 ? members.front().path
                                           : detail::concat("ensemble of ", members.size(), ": ");
    if (members.size() > 1)
      for (size_t i = 0; i < members.size(); ++i) text += (i ? ", " : "") + members[i].path;
    if (flip_tta) text += " (flip test-time augmentation)";
    return text;
  }
};

// The flags every inference command shares, checked before any file is opened so that a typo is
// reported as such (exit status 2) rather than after a model has been loaded.
struct InferenceFlags {
  DeviceChoice device = DeviceChoice::Auto;
  std::optional<double> threshold;  // nullopt: the checkpoint's own
  bool flip_tta = false;
};

InferenceFlags parse_inference_flags(const std::vector<std::string>& models,
                                     const std::string& device, int batch,
                                     const std::string& threshold, const std::string& tta) {
  if (models.empty()) throw UsageError("--model is required");
  if (batch < 1 || batch > kMaxBatch)
    throw UsageError(detail::concat("--batch must be in [1, ", kMaxBatch, "], got ", batch));
  InferenceFlags flags;
  flags.device = as_usage("--device", [&] { return parse_device_choice(device); });
  flags.flip_tta = as_usage("--tta", [&] {
    return pick_choice<bool>("--tta", tta, {{"none", false}, {"flip", true}});
  });
  if (threshold == "checkpoint") return flags;
  const double value = parse_decimal(threshold).value_or(-1.0);
  if (!(value >= 0.0 && value <= 1.0))
    throw UsageError("--threshold must be 'checkpoint' or a probability in [0, 1], got '" +
                     threshold + "'");
  flags.threshold = value;
  return flags;
}

Ensemble load_models(const std::vector<std::string>& paths, const InferenceFlags& flags, int batch) {
  Ensemble ensemble;
  ensemble.flip_tta = flags.flip_tta;
  for (const std::string& path : paths) {
    Member member;
    member.path = path;
    member.checkpoint = load_checkpoint(path);
    if (!ensemble.members.empty() && member.checkpoint.metadata.input_size != ensemble.first().input_size)
      throw Error(detail::concat("checkpoint ", path, " expects ", member.checkpoint.metadata.input_size,
                                 "x", member.checkpoint.metadata.input_size, " images but ",
                                 paths.front(), " expects ", ensemble.first().input_size, "x",
                                 ensemble.first().input_size, "; an ensemble needs one input size"));
    if (!ensemble.backend) {
      BackendOptions options;
      options.device = flags.device;
      options.tuning_cache = tuning_cache_path("auto");
      ensemble.backend = make_backend(options);
    }
    member.model = std::make_unique<Model>(*ensemble.backend,
                                           model_config_for(member.checkpoint.metadata, path), batch);
    restore_checkpoint(member.checkpoint, *member.model, nullptr, path);
    AugmentSettings none;
    none.enabled = false;
    member.runner = std::make_unique<Trainer>(*ensemble.backend, *member.model, batch, none, 0);
    ensemble.members.push_back(std::move(member));
  }
  return ensemble;
}

// "epoch 12", "weights of epoch 9 of 12 (restored best)", or (a run stopped inside an epoch)
// "epoch 3 and 9 steps of epoch 4, interrupted"; an ensemble's members in order.
std::string trained_epochs(const Ensemble& ensemble) {
  std::string text;
  for (const Member& member : ensemble.members) {
    const CheckpointMetadata& m = member.checkpoint.metadata;
    text += text.empty() ? "" : ", ";
    if (m.weights_epoch != m.epoch)
      text += detail::concat("weights of epoch ", m.weights_epoch, " of ", m.epoch,
                             " (restored best)");
    else if (m.epoch_step > 0)
      text += detail::concat(m.epoch > 0 ? detail::concat("epoch ", m.epoch, " and ") : "",
                             m.epoch_step, " steps of epoch ", m.epoch + 1, ", interrupted");
    else
      text += detail::concat("epoch ", m.epoch);
  }
  return text;
}

// The threshold applied and the words that say where it came from.
std::pair<double, std::string> applied_threshold(const Ensemble& ensemble,
                                                 const InferenceFlags& flags) {
  if (flags.threshold) return {*flags.threshold, "given on the command line"};
  if (ensemble.members.size() > 1) return {0.5, "default 0.5 for an ensemble"};
  // A cut tuned on one view's scores; the flip's averaged ones may want another.
  if (ensemble.flip_tta && ensemble.first().threshold_rule.rfind("Youden's J", 0) == 0)
    return {ensemble.first().decision_threshold,
            ensemble.first().threshold_rule + ", tuned without test-time augmentation"};
  return {ensemble.first().decision_threshold, ensemble.first().threshold_rule};
}

}  // namespace

int run_evaluate(const EvaluateOptions& options) {
  if (options.data.empty()) throw UsageError("--data is required");
  if (options.gallery < 0 || options.gallery > 1000)
    throw UsageError("--gallery must be in [0, 1000], got " + std::to_string(options.gallery));
  const InferenceFlags flags = parse_inference_flags(options.models, options.device, options.batch,
                                                     options.tuned_threshold, options.tta);
  if (options.gallery > 0 && options.models.size() != 1)
    throw UsageError("--gallery explains one model; give one --model");
  if (options.gallery > 0 && options.tta != "none")
    throw UsageError("--gallery explains the model's own view of each image; leave out --tta");
  if (options.gallery == 0 && !options.gallery_out.empty())
    throw UsageError("--gallery-out names the gallery's folder: give --gallery N (N > 0) too");
  const std::string gallery_folder =
      options.gallery_out.empty() ? "gallery-" + options.split : options.gallery_out;
  if (options.gallery > 0)
    require_new_or_empty_folder(gallery_folder, "gallery folder", "--gallery-out",
                                "its overlays would mix with those of this run");
  // An output file that is an input (a model) or the other output would lose one of them; one
  // inside the gallery's folder, written after the gallery, could replace gallery.md or an overlay.
  for (const auto& [flag, path] : {std::pair<const char*, const std::string&>{"--json", options.json},
                                   {"--scores", options.scores}}) {
    for (const std::string& model : options.models)
      if (same_output_file(path, model))
        throw UsageError(std::string(flag) + " names the model " + model +
                         ", which would be overwritten; give another file");
    if (options.gallery > 0 && !path.empty() &&
        is_same_or_inside(resolved(path), resolved(gallery_folder)))
      throw UsageError(std::string(flag) + " " + path + " lies in the gallery folder " +
                       gallery_folder + ", whose files it could replace; give a file outside it");
  }
  if (same_output_file(options.json, options.scores))
    throw UsageError("--json and --scores name the same file; give each its own");
  check_output_file(options.json, "--json", OutputFile::EvaluateJson);
  check_output_file(options.scores, "--scores", OutputFile::EvaluateScores);
  refuse_output_inside_data(options.json, "--json " + options.json, options.data);
  refuse_output_inside_data(options.scores, "--scores " + options.scores, options.data);
  if (options.gallery > 0)
    refuse_output_inside_data(gallery_folder, "the gallery folder " + gallery_folder, options.data,
                              /*writes_images=*/true);
  as_usage("--split", [&] {
    pick_choice<bool>("--split", options.split,
                      {{"train", true},
                       {"val", true},
                       {"test", true},
                       {"val-carved", true, "the validation images the run carved out of train"}});
  });
  Ensemble ensemble = load_models(options.models, flags, options.batch);
  const CheckpointMetadata& meta = ensemble.first();
  const auto [threshold, threshold_rule] = applied_threshold(ensemble, flags);

  // A cache is read at its own size (the check below then names the model's); an image tree is
  // prepared at the model's.
  OpenDatasetOptions open_options;
  open_options.size = is_cache_dir(options.data) ? 0 : meta.input_size;
  Dataset dataset = open_dataset(options.data, open_options);
  if (dataset.size != meta.input_size)
    throw Error(detail::concat("the data ", options.data, " is prepared at ", dataset.size, "x",
                               dataset.size, " but the model expects ", meta.input_size, "x",
                               meta.input_size));
  Split split;
  if (options.split == "val-carved") {
    // The validation images the run itself carved out of train (same fraction and seed), read
    // from each checkpoint: the seed is its config's "val-seed" or, where that is -1 or absent
    // (a checkpoint from before the flag), its validated "seed" field; the fraction its config's.
    std::optional<Split> carved;
    for (const Member& member : ensemble.members) {
      const CheckpointMetadata& m = member.checkpoint.metadata;
      const auto fraction = m.config.find("val-split");
      if (fraction == m.config.end() || !fraction->is_string())
        throw Error("checkpoint " + member.path +
                    " does not record its validation split as a string (\"val-split\" in its "
                    "config); use --split val or --split test");
      const auto val_seed = m.config.find("val-seed");
      if (val_seed != m.config.end() && !val_seed->is_number_integer())
        throw Error("checkpoint " + member.path + " records a \"val-seed\" that is not a whole "
                    "number; use --split val or --split test");
      const int64_t carve = val_seed == m.config.end() ? -1 : val_seed->get<int64_t>();
      ValidationOptions rule;
      try {
        rule = parse_val_split(fraction->get<std::string>(), carve_seed(carve, m.seed));
      } catch (const Error& e) {
        throw Error("checkpoint " + member.path + ": " + e.what());
      }
      TrainValSplits carved_here = make_train_val(dataset, rule);
      // Another --data (a tree with images added or removed) carves other validation images,
      // some of which the model trained on: scoring them would flatter it.
      const auto recorded = m.extra.find("carved_split_crc32");
      if (recorded != m.extra.end() &&
          recorded->second != carved_split_fingerprint(carved_here.train, carved_here.val))
        throw Error("checkpoint " + member.path + " was trained on other images than " +
                    options.data + " holds (its record of the training and validation files, "
                    "carved_split_crc32, differs): --split val-carved would score images it "
                    "trained on; evaluate it with the --data it was trained on, or on --split "
                    "val or test");
      Split own = std::move(carved_here.val);
      if (carved && (own.files != carved->files))
        throw Error("checkpoint " + member.path + " carved another validation split than " +
                    ensemble.members.front().path +
                    " (another seed or fraction); evaluate an ensemble on --split val or test");
      if (!carved) carved = std::move(own);
    }
    split = std::move(*carved);
  } else {
    split = dataset.split(options.split);
  }
  ImageSet images = ImageSet::upload(ensemble.backend->device(), split.images.data(),
                                     split.count(), split.size, split.labels.data());
  const std::vector<float> logits = ensemble.logits(images);
  MetricsReport report =
      evaluate_binary(options.split, logits, split.labels, threshold, threshold_rule);
  // A model's own Youden cut scored on the validation split it was tuned on: the carved one, or
  // the official one for a model trained with --val-split official; or on the whole train split,
  // which holds the carved one.
  const nlohmann::json& recorded = meta.config;
  const bool official_val =
      recorded.is_object() && recorded.contains("val-split") && recorded["val-split"] == "official";
  // One model (an ensemble applies 0.5); with --tta flip as well: the cut was tuned on these
  // images' plain scores, and their mean with the mirror's is no fresh sample.
  report.applied_in_sample = !flags.threshold && ensemble.members.size() == 1 &&
                             meta.threshold_rule.rfind("Youden's J", 0) == 0 &&
                             (options.split == "val-carved" || (options.split == "val" && official_val) ||
                              (options.split == "train" && !official_val));
  std::cout << "model: " << ensemble.description() << " (" << trained_epochs(ensemble)
            << ", threshold " << format_threshold(threshold) << ": " << threshold_rule << ")\n"
            << "data: " << dataset.cache_dir << ", split " << options.split << "\n"
            << "backend: " << ensemble.backend->name() << "\n"
            << format_metrics_table(report);
  std::optional<StressReport> stress;
  if (options.stress) {
    const auto predict = [&](const AugmentParams& p) { return ensemble.logits(images, &p); };
    // Ten passes over the split: minutes for the test split on a CPU, so a progress line.
    TaskProgress progress(std::cerr, "stress", static_cast<int64_t>(stress_variants().size()),
                          progress_options_for(stderr));
    const auto on_variant = [&](size_t done, const std::string& next) {
      progress.update(static_cast<int64_t>(done), next.empty() ? "" : "scoring " + next);
    };
    stress = evaluate_stress(predict, split.labels, threshold, on_variant);
    progress.finish();
    // The same cut on the same images, transformed: its rule, and whether it was tuned on them.
    for (auto& [name, variant] : stress->variants) {
      variant.applied_rule = report.applied_rule;
      variant.applied_in_sample = report.applied_in_sample;
    }
    std::cout << format_stress_table(*stress);
  }
  if (options.gallery > 0) {
    Member& member = ensemble.members.front();
    TaskProgress progress(std::cerr, "gallery: Grad-CAM", images.count,
                          progress_options_for(stderr));
    const GradCam cam = grad_cam_images(*member.model, images, member.model->layer_index("conv5"),
                                        options.batch,
                                        [&](int64_t done) { progress.update(done); });
    progress.finish();
    GalleryInputs inputs;
    inputs.title = options.split + " split, model " + member.path;
    inputs.threshold = threshold;
    inputs.images = &split.images;
    inputs.labels = &split.labels;
    inputs.files = &split.files;
    inputs.size = split.size;
    inputs.layer = "conv5";
    write_gallery(gallery_folder, cam, inputs, options.gallery);
    std::cout << "gallery: " << gallery_folder << "/gallery.md\n";
  }
  if (!options.scores.empty()) {  // the numbers behind the metrics, for analyses of one's own
    std::ostringstream csv;
    // Every digit each number needs to read back as itself (9 for the float logit, 17 for the
    // double probability): with 9, distinct logits near p = 0.5 or 1 shared a probability, and
    // an AUC recomputed from that column moved in its fourth decimal.
    csv << "index,file,label,logit,probability\n";
    for (size_t i = 0; i < logits.size(); ++i)
      csv << i << "," << csv_field(i < split.files.size() ? split.files[i] : std::string()) << ","
          << static_cast<int>(split.labels[i]) << "," << exact_text(logits[i]) << ","
          << exact_text(sigmoid(logits[i])) << "\n";
    write_file_atomically(options.scores, csv.str());
  }
  if (!options.json.empty()) {
    nlohmann::json out = to_json(report);
    out["model"] = options.models.size() == 1 ? nlohmann::json(options.models.front())
                                              : nlohmann::json(options.models);
    out["tta"] = options.tta;
    out["data"] = dataset.cache_dir;
    if (stress) out["stress"] = to_json(*stress);
    // Whole or not at all: a script reading it (scripts/experiments.py) never meets half a file.
    write_file_atomically(options.json, json_text(out, 2) + "\n");
  }
  return 0;
}

Error non_finite_output(const std::string& model, float logit, const std::string& which) {
  return Error(detail::concat("model ", model, " produced a non-finite output (logit ", logit,
                              ") for ", which, ": its weights are broken or do not fit its inputs"));
}

std::string exact_text(double value) {
  std::ostringstream out;
  out << std::setprecision(std::numeric_limits<double>::max_digits10) << value;
  return out.str();
}

std::string exact_text(float value) {
  std::ostringstream out;
  out << std::setprecision(std::numeric_limits<float>::max_digits10) << value;
  return out.str();
}

std::string csv_field(const std::string& path) {
  if (path.find_first_of(",\"\r\n") == std::string::npos) return path;  // RFC 4180: CR too
  std::string quoted = "\"";
  for (char c : path) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
  return quoted + "\"";
}

DecodedInputs decode_inputs(const std::vector<std::string>& inputs, int size) {
  // A subfolder that cannot be read is skipped as an unreadable image is: a warning, exit 3.
  std::vector<SkippedFile> unreadable;
  const std::vector<std::string> files = list_images(inputs, &unreadable);
  for (const SkippedFile& folder : unreadable)
    std::cerr << "pneumo: warning: skipping the folder " << one_line(folder.file) << ": "
              << folder.reason << "\n";
  DecodedInputs decoded;
  decoded.failures = static_cast<int>(unreadable.size());
  std::vector<uint8_t> image(static_cast<size_t>(size) * size);
  for (const auto& file : files) {
    std::string note, problem;
    try {  // a decoder's exception (OpenCV's, out of memory) skips the file, as prepare does
      problem = decode_image_file(file, size, image.data(), &note);
    } catch (const std::exception& e) {
      problem = std::string("decoder error: ") + e.what();
    }
    if (!problem.empty()) {
      std::cerr << "pneumo: warning: skipping " << one_line(file) << ": " << problem << "\n";
      ++decoded.failures;
      continue;
    }
    if (!note.empty())  // scored all the same: a warning, not a failure (the exit status stays)
      std::cerr << "pneumo: warning: " << one_line(file) << ": " << note << "\n";
    decoded.pixels.insert(decoded.pixels.end(), image.begin(), image.end());
    decoded.files.push_back(file);
  }
  if (decoded.files.empty())
    throw Error("none of the " + std::to_string(files.size()) +
                " input files could be read as an image");
  return decoded;
}

int run_predict(const PredictOptions& options) {
  if (options.inputs.empty()) throw UsageError("give at least one image or folder to predict");
  const InferenceFlags flags = parse_inference_flags(options.models, options.device, options.batch,
                                                     options.threshold, options.tta);
  Ensemble ensemble = load_models(options.models, flags, options.batch);
  const CheckpointMetadata& meta = ensemble.first();
  const auto [threshold, threshold_rule] = applied_threshold(ensemble, flags);
  const int size = meta.input_size;
  std::cerr << "model: " << ensemble.description() << "; PNEUMONIA when p > "
            << format_threshold(threshold) << " ("
            << threshold_rule << ")\n";

  const DecodedInputs inputs = decode_inputs(options.inputs, size);
  const std::vector<std::string>& kept = inputs.files;
  const std::vector<uint8_t> labels(kept.size(), 0);  // unknown; only the logits are used
  ImageSet images = ImageSet::upload(ensemble.backend->device(), inputs.pixels.data(),
                                     static_cast<int64_t>(kept.size()), size, labels.data());
  const std::vector<float> logits = ensemble.logits(images);
  if (options.csv)
    std::cout << "path,probability_pneumonia,label" << (options.logits ? ",logit" : "") << "\n";
  // At least the decimals the header's threshold shows (format_threshold prints it exactly: a cut
  // such as 0.50000005 in full), six at least, and more for a small threshold (six significant
  // digits of it), at most 17 (a threshold of 1e-320 asked for 325).
  const std::string shown = format_threshold(threshold);
  const double shown_value = std::strtod(shown.c_str(), nullptr);
  const size_t point = shown.find('.');
  const int shown_decimals = point == std::string::npos || shown.find('e') != std::string::npos
                                 ? 0
                                 : static_cast<int>(shown.size() - point - 1);
  constexpr int kMostDecimals = 17;
  const int p_decimals = std::min(
      kMostDecimals,
      std::max(shown_decimals,
               threshold > 0 ? std::max(6, 5 - static_cast<int>(std::floor(std::log10(threshold))))
                             : 6));
  // A p printed at `decimals` that reads as the side of the printed cut its label says (p > cut
  // for PNEUMONIA): else more decimals, up to 17 (one p on each side of an unprinted digit of the
  // cut once printed as the same number with opposite labels).
  const auto decimals_for = [&](double p, bool pneumonia) {
    int decimals = p_decimals;
    for (; decimals < kMostDecimals; ++decimals) {
      std::ostringstream text;
      text << std::fixed << std::setprecision(decimals) << p;
      const double printed = std::strtod(text.str().c_str(), nullptr);
      if ((printed > shown_value) == pneumonia) break;
    }
    return decimals;
  };
  for (size_t i = 0; i < kept.size(); ++i) {
    const double p = sigmoid(logits[i]);
    const bool pneumonia = predicts_pneumonia(logits[i], threshold);
    const char* label = pneumonia ? "PNEUMONIA" : "NORMAL";
    if (options.csv) {
      // All of p's digits (6 printed 0.9999996 as 1, and a p just above the threshold as it).
      std::cout << csv_field(kept[i]) << "," << exact_text(p) << "," << label;
      if (options.logits) std::cout << "," << exact_text(logits[i]);
      std::cout << "\n";
    } else {
      // Fixed decimals, as many as the header's threshold shows (at least six), more where fewer
      // would read as the wrong side of the cut.
      std::cout << one_line(kept[i]) << "  " << std::fixed
                << std::setprecision(decimals_for(p, pneumonia)) << p
                << "  " << label;
      std::cout.unsetf(std::ios::fixed);
      if (options.logits) std::cout << "  logit " << std::setprecision(9) << logits[i];
      std::cout << "\n";
    }
  }
  return inputs.failures == 0 ? 0 : 3;  // some inputs were unreadable: say so in the exit status
}

}  // namespace pneumo::cli
