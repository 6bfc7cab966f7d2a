// The `pneumo` command: parses flags into the option structs of cli/commands/commands.hpp and
// runs the chosen subcommand. Every error reaches here as an exception and leaves with a one-line
// message on stderr and a non-zero exit status (1: the run failed, 2: bad usage, including flag
// values out of range).
#include <CLI/CLI.hpp>

#include <algorithm>
#include <fstream>
#include <functional>
#include <optional>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands/commands.hpp"
#include "cli/commands/guards.hpp"
#include "pneumo/checkpoint.hpp"
#include "pneumo/data.hpp"
#include "pneumo/error.hpp"

namespace {

using pneumo::Error;
using namespace pneumo::cli;

// A JSON config file (or a checkpoint's recorded configuration) turned into flags placed BEFORE
// the user's own, so anything on the command line wins (options keep the last value given).
std::vector<std::string> flags_from_json(const nlohmann::json& config, const std::string& source) {
  if (!config.is_object()) throw Error(source + ": the configuration must be a JSON object");
  std::vector<std::string> flags;
  for (const auto& [key, value] : config.items()) {
    if (key == "out" || key == "resume") continue;  // where a run writes is never inherited
    std::string text;
    if (value.is_string())
      text = value.get<std::string>();
    else if (value.is_boolean())
      text = value.get<bool>() ? "true" : "false";
    else if (value.is_number())
      text = value.dump();
    else
      throw Error(source + ": value of '" + pneumo::detail::excerpt(key) +
                  "' must be a string, number or boolean");
    flags.push_back("--" + key + "=" + text);
  }
  return flags;
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot read config file '" + path + "'");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error("config file '" + path + "' is not valid JSON: " + e.what());
  }
}

// Expands `pneumo train --config FILE ...` and `pneumo train --resume CKPT ...` into explicit
// flags (the file's or the checkpoint's, then the user's), before CLI11 sees them.
std::vector<std::string> expand_arguments(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] != "train") return args;
  std::vector<std::string> inherited, own;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value_of = [&](const std::string& flag) -> std::optional<std::string> {
      if (a == flag) {
        if (i + 1 >= args.size()) throw pneumo::UsageError(flag + " needs a value");
        return args[++i];
      }
      if (a.rfind(flag + "=", 0) == 0) return a.substr(flag.size() + 1);
      return std::nullopt;
    };
    if (auto path = value_of("--config")) {
      auto flags = flags_from_json(read_json_file(*path), *path);
      inherited.insert(inherited.end(), flags.begin(), flags.end());
    } else if (auto checkpoint = value_of("--resume")) {
      auto meta = pneumo::read_checkpoint_metadata(*checkpoint);
      auto flags = flags_from_json(meta.config, *checkpoint);
      inherited.insert(inherited.end(), flags.begin(), flags.end());
      own.push_back("--resume=" + *checkpoint);
      // A resumed run writes into the run directory it continues unless told otherwise.
      if (meta.config.contains("out") && meta.config["out"].is_string())
        inherited.push_back("--out=" + meta.config["out"].get<std::string>());
    } else {
      own.push_back(a);
    }
  }
  std::vector<std::string> out{"train"};
  out.insert(out.end(), inherited.begin(), inherited.end());
  out.insert(out.end(), own.begin(), own.end());
  return out;
}

// The subcommand chosen on the command line, run after parsing.
using Action = std::function<int()>;

// Runs a command that processes `batch` images at a time; an allocation failure becomes advice
// naming that batch size and suggesting a smaller one.
template <class Command>
int advising_on_memory(int batch, Command command) {
  try {
    return command();
  } catch (const pneumo::OutOfMemory& e) {
    throw Error(out_of_memory_advice(e, batch, "--batch"));
  }
}

void add_train(CLI::App& app, TrainOptions& o, Action& action) {
  auto* c = app.add_subcommand("train", "Train the seed network (defaults: the Keras recipe)");
  c->add_option("--data", o.data, "Image tree {train,val,test}/{NORMAL,PNEUMONIA} or a cache")
      ->required();
  c->add_option("--out", o.out, "Run directory (default runs/<date>-<time>)");
  c->add_option("--config", "JSON file of flag values (command-line flags win)");
  c->add_option("--resume", o.resume, "Continue from a checkpoint (its settings are reused)");
  c->add_option("--device", o.device, "auto | cuda | cpu")->capture_default_str();
  c->add_option("--precision", o.precision, "fp32 | tf32 (CUDA convolutions and GEMMs)")
      ->capture_default_str();
  c->add_option("--deterministic", o.deterministic,
                "CUDA: deterministic convolution algorithms only (false: the fastest)")
      ->capture_default_str();
  c->add_option("--threads", o.threads, "CPU threads (0: all)")->capture_default_str();
  c->add_option("--size", o.size, "Input size when preparing an image tree")->capture_default_str();
  c->add_option("--epochs", o.epochs, "Epochs to train")->capture_default_str();
  c->add_option("--batch", o.batch, "Batch size")->capture_default_str();
  c->add_option("--optimizer", o.optimizer, "rmsprop (the recipe) | adamw")->capture_default_str();
  c->add_option("--lr", o.learning_rate, "Learning rate")->capture_default_str();
  c->add_option("--rho", o.rho, "RMSprop decay")->capture_default_str();
  c->add_option("--epsilon", o.epsilon, "Optimizer epsilon (outside the square root)")
      ->capture_default_str();
  c->add_option("--beta1", o.beta1, "AdamW first-moment decay")->capture_default_str();
  c->add_option("--beta2", o.beta2, "AdamW second-moment decay")->capture_default_str();
  c->add_option("--weight-decay", o.weight_decay,
                "AdamW decoupled weight decay (param *= 1 - lr * wd each step)")
      ->capture_default_str();
  c->add_option("--label-smoothing", o.label_smoothing,
                "Train towards y (1 - s) + s/2 instead of 0/1 (0: off)")
      ->capture_default_str();
  c->add_option("--seed", o.seed, "Seed of every random stream")->capture_default_str();
  c->add_option("--val-split", o.val_split,
                "Fraction of train carved out for validation, grouped by patient, or 'official'")
      ->capture_default_str();
  c->add_option("--balance", o.balance, "oversample | class-weight | none")->capture_default_str();
  c->add_option("--augment", o.augment, "Augment training images (true/false)")
      ->capture_default_str();
  c->add_option("--rotation", o.augmentation.rotation_degrees, "Max rotation, degrees")
      ->capture_default_str();
  c->add_option("--zoom", o.augmentation.zoom, "Zoom range: factor in [1-z, 1+z] per axis")
      ->capture_default_str();
  c->add_option("--zoom-mode", o.zoom_mode,
                "keras (x and y zoom drawn apart, as Keras) | isotropic (one scale)")
      ->capture_default_str();
  c->add_option("--shift", o.augmentation.shift, "Shift range, fraction of the size")
      ->capture_default_str();
  c->add_option("--flip", o.augmentation.horizontal_flip, "Random horizontal flips (true/false)")
      ->capture_default_str();
  c->add_option("--aspect", o.augmentation.aspect,
                "Aspect-ratio jitter: width/height times r in [1/(1+a), 1+a], area kept (0: off)")
      ->capture_default_str();
  c->add_option("--brightness", o.augmentation.brightness,
                "Brightness jitter: add a value in [-b, b] (0: off)")
      ->capture_default_str();
  c->add_option("--contrast", o.augmentation.contrast,
                "Contrast jitter: factor in [1-c, 1+c] about mid-grey (0: off)")
      ->capture_default_str();
  c->add_option("--gamma", o.augmentation.gamma,
                "Gamma jitter: exponent in [1/(1+g), 1+g] (0: off)")
      ->capture_default_str();
  c->add_option("--sharpness", o.augmentation.sharpness,
                "Blur/sharpness jitter: factor in [1-s, 1+s], 0 blurs, 2 sharpens (0: off)")
      ->capture_default_str();
  c->add_option("--normalization", o.normalization,
                "Input: unit (x/255) | per-image (standardised per image; kept in the model)")
      ->capture_default_str();
  c->add_option("--head", o.head,
                "flatten (the recipe: 256x5x5 -> dense) | gap (global average pooling -> dense)")
      ->capture_default_str();
  c->add_option("--val-stress", o.val_stress,
                "Score stress variants of validation each epoch (val_stress_* metrics)")
      ->capture_default_str();
  c->add_option("--plateau-monitor", o.plateau_monitor, "ReduceLROnPlateau metric")
      ->capture_default_str();
  c->add_option("--plateau-factor", o.plateau_factor, "ReduceLROnPlateau factor")
      ->capture_default_str();
  c->add_option("--plateau-patience", o.plateau_patience, "ReduceLROnPlateau patience")
      ->capture_default_str();
  c->add_option("--plateau-min-delta", o.plateau_min_delta, "ReduceLROnPlateau min_delta")
      ->capture_default_str();
  c->add_option("--plateau-cooldown", o.plateau_cooldown, "ReduceLROnPlateau cooldown")
      ->capture_default_str();
  c->add_option("--min-lr", o.min_lr, "Learning-rate floor")->capture_default_str();
  c->add_option("--schedule", o.schedule,
                "none (ReduceLROnPlateau) | step | exponential | cosine")
      ->capture_default_str();
  c->add_option("--early-stopping-monitor", o.early_stopping_monitor, "EarlyStopping metric")
      ->capture_default_str();
  c->add_option("--early-stopping-patience", o.early_stopping_patience,
                "EarlyStopping patience (0: off)")
      ->capture_default_str();
  c->add_option("--restore-best", o.restore_best, "Restore the best epoch's weights at the end")
      ->capture_default_str();
  // Hidden: used by the tests of interruption and NaN handling.
  c->add_option("--inject-fault", o.inject_fault, "nan@STEP | sigint@STEP | sigterm@STEP")
      ->group("");
  c->add_option("--threshold-rule", o.threshold_rule,
                "Threshold stored with the model: youden (on validation) | 0.5")
      ->capture_default_str();
  c->add_option("--checkpoint-monitor", o.checkpoint_monitor,
                "Metric that picks checkpoints/best.safetensors")
      ->capture_default_str();
  c->callback([&o, &action] {
    action = [&o] { return advising_on_memory(o.batch, [&o] { return run_train(o); }); };
  });
}

void add_evaluate(CLI::App& app, EvaluateOptions& o, Action& action) {
  auto* c = app.add_subcommand("evaluate", "Metrics of a trained model on a split");
  c->add_option("--model", o.models, "Checkpoint (.safetensors); repeat for an ensemble")
      ->required()
      ->allow_extra_args(false)  // one path per --model: the next argument is an input
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  c->add_option("--data", o.data, "Image tree or cache")->required();
  c->add_option("--split", o.split, "train | val | test | val-carved (the run's own val)")
      ->capture_default_str();
  c->add_option("--device", o.device, "auto | cuda | cpu")->capture_default_str();
  c->add_option("--batch", o.batch, "Batch size")->capture_default_str();
  c->add_option("--json", o.json, "Also write the metrics as JSON to this file");
  c->add_option("--threshold", o.tuned_threshold,
                "'checkpoint' (tuned on val; 0.5 for an ensemble) or a probability")
      ->capture_default_str();
  c->add_flag("--stress", o.stress,
              "Also score stress variants (width, brightness, contrast, gamma, blur)");
  c->add_option("--tta", o.tta, "Test-time augmentation: none | flip")->capture_default_str();
  c->add_option("--gallery", o.gallery,
                "Grad-CAM gallery: the N most confident of each confusion cell, and mean maps")
      ->capture_default_str();
  c->add_option("--gallery-out", o.gallery_out, "Gallery folder (default gallery-<split>)");
  c->callback([&o, &action] {
    action = [&o] { return advising_on_memory(o.batch, [&o] { return run_evaluate(o); }); };
  });
}

void add_predict(CLI::App& app, PredictOptions& o, Action& action) {
  auto* c = app.add_subcommand("predict", "Probability of pneumonia for image files");
  c->add_option("--model", o.models, "Checkpoint (.safetensors); repeat for an ensemble")
      ->required()
      ->allow_extra_args(false)  // one path per --model: the next argument is an input
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  c->add_option("inputs", o.inputs, "Images or folders")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->required();
  c->add_option("--device", o.device, "auto | cuda | cpu")->capture_default_str();
  c->add_flag("--csv", o.csv, "CSV output: path,probability_pneumonia,label");
  c->add_flag("--logits", o.logits, "Also print each raw logit (full float precision)");
  c->add_option("--threshold", o.threshold,
                "'checkpoint' (tuned on val; 0.5 for an ensemble) or a probability")
      ->capture_default_str();
  c->add_option("--batch", o.batch, "Batch size")->capture_default_str();
  c->add_option("--tta", o.tta, "Test-time augmentation: none | flip")->capture_default_str();
  c->callback([&o, &action] {
    action = [&o] { return advising_on_memory(o.batch, [&o] { return run_predict(o); }); };
  });
}

void add_explain(CLI::App& app, ExplainOptions& o, Action& action) {
  auto* c = app.add_subcommand("explain", "Grad-CAM maps: where the evidence for pneumonia lies");
  c->add_option("--model", o.model, "Checkpoint (.safetensors)")->required();
  c->add_option("inputs", o.inputs, "Images or folders")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->required();
  c->add_option("--out", o.out, "Folder for <n>_<name>_p<prob>.npy/.png and explain.csv")
      ->required();
  c->add_option("--layer", o.layer, "Layer explained (conv1..conv5, bn5, pool4, ...)")
      ->capture_default_str();
  c->add_option("--device", o.device, "auto | cuda | cpu")->capture_default_str();
  c->add_option("--batch", o.batch, "Batch size")->capture_default_str();
  c->callback([&o, &action] {
    action = [&o] { return advising_on_memory(o.batch, [&o] { return run_explain(o); }); };
  });
}

void add_prepare(CLI::App& app, pneumo::PrepareOptions& o, Action& action) {
  auto* c = app.add_subcommand("prepare", "Decode an image tree once into a NumPy cache");
  c->add_option("--data", o.data_dir, "Image tree {train,val,test}/{NORMAL,PNEUMONIA}")
      ->required();
  c->add_option("--out", o.out_dir, "Cache directory to write")->required();
  c->add_option("--size", o.size, "Square size images are squashed to")->capture_default_str();
  c->add_option("--threads", o.threads, "Decoding threads (0: all)")->capture_default_str();
  c->callback([&o, &action] { action = [&o] {
    if (o.size < 8 || o.size > 1024)
      throw pneumo::UsageError("--size must be in [8, 1024], got " + std::to_string(o.size));
    if (o.threads < 0)
      throw pneumo::UsageError("--threads must be >= 0, got " + std::to_string(o.threads));
    pneumo::PrepareReport report = pneumo::prepare_cache(o);
    std::cout << "cache: " << report.out_dir << " (" << report.images << " images at "
              << report.size << "x" << report.size << ", " << report.skipped.size()
              << " skipped, " << static_cast<int>(report.images_per_second) << " images/s on "
              << report.threads << " threads)\n";
    return 0;
  }; });
}

void add_eda(CLI::App& app, pneumo::EdaOptions& o, Action& action) {
  auto* c = app.add_subcommand("eda", "Class counts and image grids (plain and augmented)");
  c->add_option("--data", o.data, "Image tree or cache")->required();
  c->add_option("--out", o.out_dir, "Folder for counts.json, samples.png, augmented.png")
      ->required();
  c->add_option("--seed", o.seed, "Which images are shown")->capture_default_str();
  c->callback([&o, &action] { action = [&o] {
    auto report = pneumo::run_eda(o);
    for (const auto& file : report.files_written) std::cout << file << "\n";
    return 0;
  }; });
}

void add_bench(CLI::App& app, BenchTrainOptions& o, BenchKernelsOptions& k, Action& action) {
  auto* bench = app.add_subcommand("bench", "Benchmarks");
  bench->require_subcommand(1);
  auto* c = bench->add_subcommand(
      "train", "Images/s of the training step, its phases, as a CUDA Graph, and of an epoch");
  c->add_option("--device", o.device, "auto | cuda | cpu")->capture_default_str();
  c->add_option("--precision", o.precision, "fp32 | tf32")->capture_default_str();
  c->add_option("--deterministic", o.deterministic,
                "CUDA: deterministic convolution algorithms only (false: the fastest)")
      ->capture_default_str();
  c->add_option("--batch", o.batches, "Batch sizes")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->capture_default_str();
  c->add_option("--steps", o.steps, "Timed steps per batch size")->capture_default_str();
  c->add_option("--warmup", o.warmup, "Untimed steps first")->capture_default_str();
  c->add_option("--augment", o.augment, "Include the augmentation kernel (true/false)")
      ->capture_default_str();
  c->add_option("--threads", o.threads, "CPU threads (0: all)")->capture_default_str();
  c->add_option("--epoch-images", o.epoch_images,
                "Images in the timed epoch (0: 6586 on CUDA, two batches on the CPU)")
      ->capture_default_str();
  c->add_flag("--layers", o.layers,
              "Also time each layer's forward and backward, and each backend op");
  c->add_flag("--cudnn-only", o.cudnn_only,
              "CUDA: cuDNN wherever the backend would time a kernel of ours against it");
  c->add_flag("--graph-engines", o.graph_engines,
              "CUDA: also time cuDNN graph-API engines for the convolutions' backward passes");
  c->callback([&o, &action] { action = [&o] { return run_bench_train(o); }; });

  auto* kc = bench->add_subcommand(
      "kernels", "Our kernels vs cuDNN on the model's layer shapes (CPU backend without a GPU)");
  kc->add_option("--device", k.device, "auto | cuda | cpu")->capture_default_str();
  kc->add_option("--batches", k.batches, "Batch sizes (default 32 256 on CUDA, 4 on the CPU)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  kc->add_option("--repeats", k.repeats, "Timed runs per variant (default 20 on CUDA, 5 on the CPU)");
  kc->add_option("--warmup", k.warmup, "Untimed runs first (default 3 on CUDA, 1 on the CPU)");
  kc->add_flag("--quick", k.quick, "Smoke run: batch 2, 3 repeats, 1 warm-up (flags given win)");
  kc->add_option("--ops", k.ops, "Any of conv pool loss augment")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->delimiter(',')
      ->capture_default_str();
  kc->add_option("--threads", k.threads, "CPU threads (0: all)")->capture_default_str();
  kc->add_option("--json", k.json, "Write every row as JSON lines to this file");
  kc->add_option("--csv", k.csv, "Write every row as CSV to this file");
  kc->callback([&k, &action] { action = [&k] { return run_bench_kernels(k); }; });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"pneumo: a C++/CUDA trainer for pneumonia on pediatric chest X-rays"};
  app.name("pneumo");
  app.require_subcommand(1);
  app.set_version_flag("--version", [] { return version_text(); }, "Print the version and build");
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  TrainOptions train;
  EvaluateOptions evaluate;
  PredictOptions predict;
  ExplainOptions explain;
  pneumo::PrepareOptions prepare;
  pneumo::EdaOptions eda;
  BenchTrainOptions bench;
  BenchKernelsOptions bench_kernels;
  Action action;
  add_prepare(app, prepare, action);
  add_train(app, train, action);
  add_evaluate(app, evaluate, action);
  add_predict(app, predict, action);
  add_explain(app, explain, action);
  add_eda(app, eda, action);
  add_bench(app, bench, bench_kernels, action);
  try {
    if (argc > 1 && argv[1][0] != '-') {
      const std::string command = argv[1];
      bool known = false;
      for (const auto* sub : app.get_subcommands({})) known = known || sub->get_name() == command;
      if (!known) {
        std::cerr << "pneumo: unknown command '" << command
                  << "' (expected prepare, train, evaluate, predict, eda or bench; see --help)\n";
        return 2;
      }
    }
    std::vector<std::string> args = expand_arguments(argc, argv);
    std::reverse(args.begin(), args.end());  // CLI11 takes a reversed vector
    app.parse(args);
    return action ? action() : 2;
  } catch (const CLI::ParseError& e) {
    const int status = app.exit(e);  // prints help (status 0) or the usage error
    return status == 0 ? 0 : 2;
  } catch (const pneumo::UsageError& e) {
    std::cerr << "pneumo: error: " << e.what() << "\n";
    return 2;
  } catch (const pneumo::Error& e) {
    std::cerr << "pneumo: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "pneumo: internal error: " << e.what() << "\n";
    return 1;
  }
}
