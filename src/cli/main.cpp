// The `pneumo` command: parses flags into the option structs of cli/commands/commands.hpp and
// runs the chosen subcommand. Every error reaches here as an exception and leaves with a one-line
// message on stderr and a non-zero exit status (1: the run failed, 2: bad usage, including flag
// values out of range).
#include <CLI/CLI.hpp>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <iostream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands/commands.hpp"
#include "cli/commands/flag_text.hpp"
#include "cli/commands/guards.hpp"
#include "cli/commands/run_folder.hpp"
#include "cli/commands/train_flags.hpp"
#include "core/atomic_file.hpp"
#include "core/json_structure.hpp"
#include "pneumo/checkpoint.hpp"
#include "pneumo/data.hpp"
#include "pneumo/distributed.hpp"
#include "pneumo/error.hpp"

namespace {

using pneumo::Error;
using namespace pneumo::cli;

nlohmann::json read_json_file(const std::string& path) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error))
    throw pneumo::UsageError("config file '" + path +
                             "' is a folder; give a JSON file (a run's config.json)");
  // Bad usage (status 2), as every other mistake in a --config is. A FIFO is refused at once (it
  // waited for a writer for ever), /dev/zero or a huge file before it is read (it was read until
  // memory ran out).
  constexpr uint64_t kMaxConfigBytes = 1 << 20;  // a run's config.json is about 2 KB
  std::string text;
  try {
    text = pneumo::read_file_text(path, kMaxConfigBytes);
  } catch (const pneumo::Error& e) {
    throw pneumo::UsageError(std::string("config file: ") + e.what());
  }
  // A key given twice would be taken at its last value without a word (a config edited by hand).
  const pneumo::JsonStructure structure =
      pneumo::check_json_structure(text.data(), text.data() + text.size(), 64);
  if (!structure.repeated_key.empty())
    throw pneumo::UsageError("config file '" + path + "' gives \"" + structure.repeated_key +
                             "\" twice; give each flag once");
  if (structure.too_deep)
    throw pneumo::UsageError("config file '" + path + "' nests deeper than 64 levels");
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw pneumo::UsageError("config file '" + path + "' is not valid JSON: " + e.what());
  }
}

// "pneumo prepare --data 'my data' --out c": the command as typed, for the records a command
// keeps (a cache's meta.json), each argument quoted for a POSIX shell where it needs it.
std::string command_line(int argc, char** argv) {
  std::string line = "pneumo";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool plain = !a.empty() && a.find_first_not_of("abcdefghijklmnopqrstuvwxyz"
                                                         "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                                         "-_./=:,+@%") == std::string::npos;
    std::string quoted = "'";
    for (char c : a) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    line += " " + (plain ? a : quoted + "'");
  }
  return line;
}

// An option takes the next argument as its value even when that is a flag, so a forgotten value
// lost the flag after it (`evaluate --json --stress` wrote a file named --stress and ran no stress
// test): such a value is refused, with this message ("" for a value that is no flag). A file
// whose name starts with "--" can still be given as ./--name.
std::string flag_given_as_value(const std::string& value) {
  return value.rfind("--", 0) == 0
             ? "got '" + value + "', which is a flag: give this option its value first"
             : std::string();
}

// Expands `pneumo train --config FILE ...` and `pneumo train --resume CKPT ...` into explicit
// flags before CLI11 sees them, in a fixed order of precedence whatever the order typed: the
// checkpoint's settings, then each --config file (a later one over an earlier), then the flags
// typed (the last of a flag wins). `sources` receives each file whose settings were read.
std::vector<std::string> expand_arguments(int argc, char** argv, std::vector<std::string>& sources) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] != "train") return args;
  // Help is shown as it is, whatever else the line names (a checkpoint that cannot be read).
  if (std::find(args.begin(), args.end(), "--help") != args.end() ||
      std::find(args.begin(), args.end(), "-h") != args.end())
    return args;
  // Said before any file is read: the mistake is the command line's, not a file's (the note on
  // where flags came from would point at the first checkpoint).
  if (std::count_if(args.begin(), args.end(), [](const std::string& arg) {
        return arg == "--resume" || arg.rfind("--resume=", 0) == 0;
      }) > 1)
    throw pneumo::UsageError("--resume is given twice; a run continues one checkpoint");
  std::vector<std::string> from_checkpoint, from_configs, own;
  std::optional<std::string> resumed_data;  // the --data a resumed checkpoint recorded
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value_of = [&](const std::string& flag) -> std::optional<std::string> {
      std::optional<std::string> value;
      if (a == flag) {
        if (i + 1 >= args.size()) throw pneumo::UsageError(flag + " needs a value");
        value = args[++i];
      } else if (a.rfind(flag + "=", 0) == 0) {
        value = a.substr(flag.size() + 1);
      }
      if (value && !flag_given_as_value(*value).empty())
        throw pneumo::UsageError(flag + ": " + flag_given_as_value(*value));
      return value;
    };
    if (auto path = value_of("--config")) {
      const nlohmann::json config = read_json_file(*path);
      // A configuration holds settings; which run to continue is said on the command line (a
      // "resume" key was dropped without a word, and a fresh run trained instead).
      if (config.is_object() && config.contains("resume"))
        throw pneumo::UsageError(*path + ": a configuration cannot continue a run (\"resume\"); "
                                 "give --resume CHECKPOINT on the command line");
      // A run's config.json records where it wrote; a run started from it writes elsewhere.
      const bool out_given = std::any_of(args.begin(), args.end(), [](const std::string& arg) {
        return arg == "--out" || arg.rfind("--out=", 0) == 0;
      });
      if (config.is_object() && config.contains("out") && !out_given)
        std::cerr << "pneumo: note: " << *path << "'s \"out\" is not used (a configuration "
                  << "never names the run's folder): the run goes to runs/<date>-<time>; give "
                  << "--out to choose\n";
      auto flags = flags_from_json(config, *path);
      from_configs.insert(from_configs.end(), flags.begin(), flags.end());
      sources.push_back(*path);
    } else if (auto checkpoint = value_of("--resume")) {
      auto meta = pneumo::read_checkpoint_metadata(*checkpoint);
      // A damaged checkpoint (status 1, as its other damaged metadata), not a usage mistake.
      if (!meta.config.is_null() && !meta.config.is_object())
        throw pneumo::Error("checkpoint " + *checkpoint + ": its config metadata is not a JSON "
                            "object (damaged, or not written by pneumo train)");
      auto flags = flags_from_json(meta.config, *checkpoint);
      from_checkpoint.insert(from_checkpoint.end(), flags.begin(), flags.end());
      sources.push_back(*checkpoint);
      if (meta.config.is_object() && meta.config.contains("data") &&
          meta.config["data"].is_string())
        resumed_data = meta.config["data"].get<std::string>();
      own.push_back("--resume=" + *checkpoint);
      // A resumed run writes into the run directory the checkpoint lies in unless told otherwise
      // (not the `out` it recorded: the run may have been moved or copied since).
      pneumo::cli::refuse_resuming_a_damaged_run(*checkpoint);
      const std::string run_dir = pneumo::cli::resumed_run_dir(*checkpoint);
      if (!run_dir.empty()) from_checkpoint.push_back("--out=" + run_dir);
    } else {
      own.push_back(a);
    }
  }
  std::vector<std::string> out{"train"};
  out.insert(out.end(), from_checkpoint.begin(), from_checkpoint.end());
  out.insert(out.end(), from_configs.begin(), from_configs.end());
  out.insert(out.end(), own.begin(), own.end());
  // The recorded --data is absolute since 2026-12-06; before, the path as typed where the run
  // started: a relative one read from another folder names something else, or nothing. (When it
  // is what the run would use: a --data typed, or from a --config, wins over it.)
  std::optional<std::string> data;
  for (size_t i = 1; i < out.size(); ++i) {
    if (out[i] == "--data" && i + 1 < out.size()) data = out[i + 1];
    if (out[i].rfind("--data=", 0) == 0) data = out[i].substr(7);
  }
  std::error_code error;
  if (resumed_data && data == resumed_data && !std::filesystem::exists(*resumed_data, error))
    throw pneumo::UsageError(
        "the data the checkpoint records, --data " + *resumed_data + ", does not exist here" +
        (std::filesystem::path(*resumed_data).is_relative()
             ? " (a path relative to the folder that run started in)"
             : "") +
        ": give --data");
  return out;
}

// The subcommand chosen on the command line, run after parsing.
using Action = std::function<int()>;

// Runs a command that processes `batch` images at a time (set by `flag`); an allocation failure
// becomes advice naming that batch size and suggesting a smaller one.
template <class Command>
int advising_on_memory(int batch, Command command, const char* flag = "--batch") {
  try {
    return command();
  } catch (const pneumo::OutOfMemory& e) {
    throw Error(out_of_memory_advice(e, batch, flag));
  }
}

void add_train(CLI::App& app, TrainOptions& o, Action& action) {
  auto* c = app.add_subcommand("train", "Train the seed network (defaults: the Keras recipe)");
  add_train_flags(*c, o);  // the flag table: cli/commands/train_flags.cpp
  c->callback([&o, &action] {
    action = [&o] { return run_train(o); };  // which advises on memory itself
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
  c->add_option("--scores", o.scores,
                "Also write each image's score as CSV: index,file,label,logit,probability");
  c->add_option("--threshold", o.tuned_threshold,
                "'checkpoint' (the one stored with the model; 0.5 for an ensemble) or a probability")
      ->capture_default_str();
  add_switch(*c, "stress", o.stress,
             "Also score ten stress variants (width, brightness, contrast, gamma, blur, sharpen)");
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
  // Not required() here: the command's own refusal names what is missing (CLI11's said
  // "inputs is required").
  c->add_option("inputs", o.inputs, "Images or folders")
      ->type_name("IMAGE|DIR")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  c->add_option("--device", o.device, "auto | cuda | cpu")->capture_default_str();
  c->add_flag("--csv", o.csv, "CSV output: path,probability_pneumonia,label");
  c->add_flag("--logits", o.logits, "Also print each raw logit (full float precision)");
  c->add_option("--threshold", o.threshold,
                "'checkpoint' (the one stored with the model; 0.5 for an ensemble) or a probability")
      ->capture_default_str();
  c->add_option("--batch", o.batch, "Batch size")->capture_default_str();
  c->add_option("--tta", o.tta, "Test-time augmentation: none | flip")->capture_default_str();
  c->callback([&o, &action] {
    action = [&o] { return advising_on_memory(o.batch, [&o] { return run_predict(o); }); };
  });
}

void add_explain(CLI::App& app, ExplainOptions& o, Action& action) {
  auto* c = app.add_subcommand("explain", "Grad-CAM maps: where the evidence for pneumonia lies");
  auto* model = c->add_option("--model", o.model, "Checkpoint (.safetensors); one model")
                    ->required();
  // Not required() here: the command's own refusal names what is missing (CLI11's said
  // "inputs is required").
  c->add_option("inputs", o.inputs, "Images or folders")
      ->type_name("IMAGE|DIR")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  c->add_option("--out", o.out, "Folder for <n>_<name>_p<prob>.npy/.png and explain.csv")
      ->required();
  c->add_option("--layer", o.layer, "Layer explained (conv1..conv5, bn5, pool4, ...)")
      ->capture_default_str();
  c->add_option("--device", o.device, "auto | cuda | cpu")->capture_default_str();
  c->add_option("--batch", o.batch, "Batch size")->capture_default_str();
  c->callback([&o, &action, model] {
    // evaluate and predict average a repeated --model (an ensemble); a map explains one model,
    // so a second one is refused rather than silently replacing the first.
    if (model->count() > 1)
      throw pneumo::UsageError(
          "explain explains one model; give one --model (a repeated --model is an ensemble in "
          "evaluate and predict)");
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
    check_threads(o.threads);
    pneumo::PrepareReport report = pneumo::prepare_cache(o);
    // The result on stdout; the decoding rate is in prepare's own summary on stderr.
    std::cout << "cache: " << report.out_dir << " (" << report.images << " images at "
              << report.size << "x" << report.size << ", " << report.skipped.size()
              << " skipped)\n";
    return 0;
  }; });
}

void add_eda(CLI::App& app, pneumo::EdaOptions& o, Action& action) {
  auto* c = app.add_subcommand(
      "eda", "Class and patient counts, original shapes, image grids (plain and augmented)");
  c->add_option("--data", o.data, "Image tree or cache")->required();
  c->add_option("--out", o.out_dir, "Folder for counts.json, samples.png, augmented.png, README.md")
      ->required();
  c->add_option("--seed", o.seed, "Which images the grids show, and the augmented grid's draws")
      ->check(non_negative_integer())
      ->capture_default_str();
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
  c->add_option("--precision", o.precision,
                "fp32 | tf32 | bf16 (convolutions and dense GEMMs on bfloat16)")
      ->capture_default_str();
  add_switch(*c, "deterministic", o.deterministic,
             "CUDA: deterministic convolution algorithms only (false: the fastest)");
  c->add_option("--batch", o.batches, "Batch sizes (default 32 256 on CUDA, 32 on the CPU)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  c->add_option("--steps", o.steps, "Timed steps per batch size (default 100 on CUDA, 10 on the CPU)");
  c->add_option("--warmup", o.warmup, "Untimed steps first (default 20 on CUDA, 2 on the CPU)");
  add_switch(*c, "augment", o.augment, "Include the augmentation kernel");
  c->add_option("--threads", o.threads, "CPU threads (0: all)")->capture_default_str();
  c->add_option("--epoch-images", o.epoch_images,
                "Images in the timed epoch (0: 6586 on CUDA, two batches on the CPU)")
      ->capture_default_str();
  c->add_option("--tuning-cache", o.tuning_cache,
                "CUDA: file of remembered choices and algorithm picks (auto | none | PATH; "
                "see train --help)")
      ->capture_default_str();
  c->add_option("--recipe-epochs", o.recipe_epochs,
                "Epochs of the end-to-end recipe measurement, first, on a new backend "
                "(-1: 12 on CUDA, none on the CPU; 0: skip it)")
      ->capture_default_str();
  add_switch(*c, "layers", o.layers,
             "Also time each layer's forward and backward, and each backend op");
  add_switch(*c, "cudnn-only", o.cudnn_only,
             "CUDA: cuDNN wherever the backend would time a kernel of ours against it");
  add_switch(*c, "graph-engines", o.graph_engines,
             "CUDA: also time cuDNN graph-API engines for the convolutions' backward passes");
  add_switch(*c, "fused-block-tails", o.fused_block_tails,
             "Each block's dropout, batch-norm and max pooling as one fused op, block 1 with its "
             "convolution recomputed; with --precision bf16 the activations between the tails "
             "stay bfloat16");
  c->add_option("--val-batch", o.val_batch,
                pneumo::detail::concat("The recipe measurement's validation batch (0: its "
                                       "training batch); range: [0, ", kMaxBatch, "]"))
      ->capture_default_str();
  add_switch(*c, "cuda-graph", o.cuda_graph,
             "The epochs replay each full-batch step as a CUDA graph (the timed steps stay op by "
             "op)");
  add_switch(*c, "drop-last", o.drop_last,
             "The recipe's epochs and the one-epoch pass leave out their last, partial batch");
  add_switch(*c, "first-calls", o.first_calls,
             "The recipe's first two epochs synchronised at every op, each op's time in both: "
             "where the first epoch's overhead goes (slows those epochs)");
  c->callback([&o, &action, c] {
    // Checked here, in train's words (a CLI11 Range would print its own, and put its
    // description in --help's type column).
    if (o.val_batch < 0 || o.val_batch > kMaxBatch)
      throw pneumo::UsageError(pneumo::detail::concat("--val-batch must be in [0, ", kMaxBatch,
                                                      "], got ", o.val_batch));
    // Unset, 0 and -1 mean the device's defaults (bench::with_device_defaults); given, they are
    // out of range.
    if (c->count("--steps") && o.steps < 1)
      throw pneumo::UsageError("--steps must be at least 1, got " + std::to_string(o.steps));
    if (c->count("--warmup") && o.warmup < 0)
      throw pneumo::UsageError("--warmup must be at least 0, got " + std::to_string(o.warmup));
    action = [&o] { return run_bench_train(o); };
  });

  auto* kc = bench->add_subcommand(
      "kernels", "Our kernels vs cuDNN on the model's layer shapes (CPU backend without a GPU)");
  kc->add_option("--device", k.device, "auto | cuda | cpu")->capture_default_str();
  kc->add_option("--batches", k.batches, "Batch sizes (default 32 256 on CUDA, 4 on the CPU)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  kc->add_option("--repeats", k.repeats, "Timed runs per variant (default 20 on CUDA, 5 on the CPU)");
  kc->add_option("--warmup", k.warmup, "Untimed runs first (default 3 on CUDA, 1 on the CPU)");
  add_switch(*kc, "quick", k.quick, "Smoke run: batch 2, 3 repeats, 1 warm-up (flags given win)");
  kc->add_option("--ops", k.ops, "Any of conv pool batchnorm loss augment bf16 tail dense")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->delimiter(',')
      ->capture_default_str();
  kc->add_option("--threads", k.threads, "CPU threads (0: all)")->capture_default_str();
  kc->add_option("--json", k.json, "Write every row as JSON lines to this file");
  kc->add_option("--csv", k.csv, "Write every row as CSV to this file");
  kc->callback([&k, &action] { action = [&k] { return run_bench_kernels(k); }; });
}

// The command a parse error belongs to: its name ("train", "bench kernels"; "" before any), the
// innermost App parsed, and the arguments CLI11 did not take, in the order given (CLI11 2.1's
// ExtrasError message lists them backwards).
struct ParsedCommand {
  std::string name;
  const CLI::App* app = nullptr;
  std::vector<std::string> unexpected;
};
ParsedCommand parsed_command(const CLI::App& app) {
  ParsedCommand parsed;
  for (const CLI::App* at = &app; at;) {
    parsed.app = at;
    for (const std::string& arg : at->remaining()) parsed.unexpected.push_back(arg);
    const auto below = at->get_subcommands();  // the parsed one, if any
    at = below.empty() ? nullptr : below.front();
    if (at) parsed.name += (parsed.name.empty() ? "" : " ") + at->get_name();
  }
  return parsed;
}

// For the unexpected arguments that look like a flag typed wrong (`--epoch 3` for `--epochs`):
// " (did you mean --epochs?)", or, with several or `name_each`, " (--epoch: did you mean
// --epochs?; ...)"; "" when none does.
std::string flags_meant(const CLI::App& command, const std::vector<std::string>& unexpected,
                        bool name_each = false) {
  std::vector<std::string> flags;  // without their dashes
  for (const CLI::Option* option : command.get_options())
    for (const std::string& name : option->get_lnames()) flags.push_back(name);
  std::vector<std::pair<std::string, std::string>> meant;  // typed, "--a or --b"
  for (const std::string& arg : unexpected) {
    if (arg.rfind("--", 0) != 0 || arg.size() < 3) continue;
    const std::string typed = arg.substr(0, arg.find('='));
    std::vector<std::string> nearest = nearest_names(typed.substr(2), flags);
    for (std::string& name : nearest) name = "--" + name;
    if (!nearest.empty()) meant.emplace_back(typed, listed_with_or(nearest));
  }
  if (meant.size() == 1 && !name_each) return " (did you mean " + meant.front().second + "?)";
  std::string text;
  for (const auto& [typed, names] : meant)
    text += (text.empty() ? " (" : "; ") + typed + ": did you mean " + names + "?";
  return text.empty() ? text : text + ")";
}

// The commands `app` knows (prepare, train, ...; bench's train, kernels).
std::vector<std::string> command_names(const CLI::App& app) {
  std::vector<std::string> names;
  for (const CLI::App* sub : app.get_subcommands({})) names.push_back(sub->get_name());
  return names;
}

// A CLI11 parse error in pneumo's words: "pneumo: error: --lr takes a FLOAT, got 'abc'" for a
// value of the wrong type (CLI11 says "Could not convert: --lr = 1,abc" when the flag was given
// twice), unexpected arguments in their order, the rest as CLI11 says them; then where to look.
void report_parse_error(const CLI::App& app, const CLI::ParseError& e) {
  const ParsedCommand command = parsed_command(app);
  const std::vector<std::string>& unexpected = command.unexpected;
  std::string message = e.what();
  const std::string convert = "Could not convert: ";
  const size_t equals = message.find(" = ");
  if (dynamic_cast<const CLI::ConversionError*>(&e) && message.rfind(convert, 0) == 0 &&
      equals != std::string::npos) {
    const std::string flag = message.substr(convert.size(), equals - convert.size());
    try {
      // The values as given (CLI11's message joins them with commas, which a value may hold).
      const CLI::Option* option = command.app->get_option(flag);
      const std::vector<std::string>& given = option->results();
      const std::string name = option->get_type_name();
      std::string type, value;
      if (option->get_multi_option_policy() == CLI::MultiOptionPolicy::TakeAll) {
        type = name + " values";  // a list: which one failed is not said
        for (const std::string& one : given) value += (value.empty() ? "'" : " '") + one + "'";
      } else {
        // A switch (add_flag on a bool) has no type name: it takes true or false.
        type = name == "BOOLEAN" || name.empty() ? "true or false"
                                                 : (name == "INT" ? "an " : "a ") + name;
        value = "'" + (given.empty() ? std::string() : given.back()) + "'";  // the one taken
      }
      message = flag + " takes " + type + ", got " + value;
      // A whole number too large for one ("--epochs takes an INT, got '99999999999'").
      const std::string last = given.empty() ? std::string() : given.back();
      const size_t digits = last.find_first_not_of("+-") == 0 || last.size() < 2 ? 0 : 1;
      if (name == "INT" && !last.empty() && last.size() > digits &&
          last.find_first_not_of("0123456789", digits) == std::string::npos)
        message += " (out of an INT's range, -2147483648 to 2147483647)";
    } catch (const CLI::Error&) {  // no such option after all: CLI11's own words
    }
  } else if (dynamic_cast<const CLI::ExtrasError*>(&e) && !unexpected.empty()) {
    message = std::string(unexpected.size() > 1 ? "unexpected arguments:" : "unexpected argument:");
    for (const std::string& arg : unexpected) message += " " + arg;
    message += flags_meant(*command.app, unexpected);
  } else if (!unexpected.empty()) {
    // Another error found first, often the flag the typo missed (`--modle m`: "--model is
    // required").
    message += flags_meant(*command.app, unexpected, true);
  }
  std::cerr << "pneumo: error: " << message << "\n"
            << "pneumo: see pneumo " << (command.name.empty() ? "" : command.name + " ")
            << "--help\n";
}

// After a refused flag: the value may not be one the user typed but one read from a --config
// file or a resumed checkpoint's settings (a damaged or hand-edited file).
void say_where_flags_came_from(const std::vector<std::string>& sources) {
  for (const std::string& source : sources)
    std::cerr << "pneumo: note: flags were also read from " << source
              << "; the value refused may be written there\n";
}

// Every option of every command that takes a value refuses a flag as its value
// (flag_given_as_value; `--config` and `--resume` are read before CLI11, in expand_arguments).
// (An empty value is refused before parsing, in run_pneumo, and in a configuration by
// flags_from_json.)
void refuse_flags_as_values(CLI::App& app) {
  const CLI::Validator not_a_flag([](std::string& value) { return flag_given_as_value(value); },
                                  "", "not a flag");
  // Whole numbers in decimal, as --help's INT says: CLI11 reads with strtoll's base 0, so
  // `--epochs 010` trained 8 epochs (octal) and 0x10 read as 16. Leading zeros are dropped here
  // (010 is ten) and radix prefixes refused; other non-numbers are left to the conversion's
  // "takes an INT".
  const CLI::Validator decimal(
      [](std::string& value) {
        const size_t at = digits_start(value);
        if (value.size() > at + 1 && value[at] == '0' &&
            std::string("xXoObB").find(value[at + 1]) != std::string::npos)
          return "'" + value + "' is not a whole number in decimal";
        size_t first = at;
        while (first + 1 < value.size() && value[first] == '0') ++first;
        value.erase(at, first - at);
        return std::string();
      },
      "", "decimal");
  // Fractional numbers in decimal too: strtod reads C's hexadecimal floats (`--lr 0x1p-10`),
  // which no documentation of a flag promises.
  const CLI::Validator decimal_float(
      [](const std::string& value) {
        return starts_hexadecimal(value) ? "'" + value + "' is not a number in decimal"
                                         : std::string();
      },
      "", "decimal");
  for (CLI::App* command : app.get_subcommands({})) {
    for (CLI::Option* option : command->get_options()) {
      if (option->get_positional() || option->get_type_size_min() == 0) continue;
      option->check(not_a_flag);
      const std::string type = option->get_type_name();
      if (type == "INT" || type == "UINT") option->transform(decimal);  // it rewrites the value
      if (type == "FLOAT") option->check(decimal_float);
    }
    refuse_flags_as_values(*command);
  }
}

// "prepare, train, ..." (or bench's "train, kernels"): the commands `app` knows, for messages.
std::string subcommand_names(const CLI::App& app) {
  std::string names;
  for (const std::string& name : command_names(app)) names += (names.empty() ? "" : ", ") + name;
  return names;
}

// Under an MPI launcher every rank parses the same command line, before there is a group to agree
// in: what the command line alone makes the parse refuse is said by the launcher's rank 0, the
// other ranks leaving with the same status and no words (each rank printed the same lines
// before). Ranks must start with the same flags anyway (train compares them); one started with
// other flags that only it cannot parse ends without a message, and the launcher names it.
bool another_rank_says_it() {
  return pneumo::launcher_size() > 1 && pneumo::launcher_rank() > 0;
}

// The command line's outcome: parse, run, report; the exit status.
int run_pneumo(int argc, char** argv) {
  // A closed pipe on stdout (`pneumo predict ... | head`) is an error to report with status 1
  // (the flush check below), not a silent death by SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
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
  prepare.command = command_line(argc, argv);
  pneumo::EdaOptions eda;
  BenchTrainOptions bench;
  BenchKernelsOptions bench_kernels;
  Action action;
  std::vector<std::string> inherited_from;  // --config files and resumed checkpoints
  add_prepare(app, prepare, action);
  add_train(app, train, action);
  add_evaluate(app, evaluate, action);
  add_predict(app, predict, action);
  add_explain(app, explain, action);
  add_eda(app, eda, action);
  add_bench(app, bench, bench_kernels, action);
  refuse_flags_as_values(app);
  // Whether what is refused comes from the command line alone (the same on every rank), not from
  // a --config file or a resumed checkpoint (one machine's copy may differ) or the command's run.
  bool argv_only = true;
  try {
    // A command (and bench's own) not known is named with the choices; CLI11 said "A
    // subcommand is required", naming neither. So is an option before any command.
    if (argc > 1) {
      const std::string first = argv[1];
      // Anything after them was ignored, status 0 (`pneumo --version --bogus`).
      if ((first == "--help" || first == "-h" || first == "--version") && argc > 2) {
        if (!another_rank_says_it())
          std::cerr << "pneumo: " << first << " takes nothing after it, got '" << argv[2] << "'"
                    << (first == "--version" ? std::string()
                                             : " (a command's own help: pneumo COMMAND --help)")
                    << "\n";
        return 2;
      }
      if (first[0] == '-' && first != "--help" && first != "-h" && first != "--version") {
        if (!another_rank_says_it())
          std::cerr << "pneumo: unknown option '" << first << "' before the command (expected "
                    << "a command first: " << subcommand_names(app) << "; see --help)\n";
        return 2;
      }
      const CLI::App* level = &app;
      std::string prefix = "pneumo";
      for (int i = 1; i < argc && i <= 2 && argv[i][0] != '-'; ++i) {
        const std::string name = argv[i];
        const CLI::App* found = nullptr;
        for (const CLI::App* sub : level->get_subcommands({}))
          if (sub->get_name() == name) found = sub;
        if (!found) {
          const std::vector<std::string> nearest = nearest_names(name, command_names(*level));
          if (!another_rank_says_it())
            std::cerr << prefix << ": unknown command '" << name << "'"
                      << (nearest.empty() ? "" : "; did you mean " + listed_with_or(nearest) + "?")
                      << " (expected one of " << subcommand_names(*level) << "; see " << prefix
                      << " --help)\n";
          return 2;
        }
        if (found->get_subcommands({}).empty()) break;  // its own arguments follow
        level = found;
        prefix += " " + name;
      }
    }
    // An empty value (an unset shell variable): `--out=` (CLI11: "1 required TEXT missing"),
    // `--restore-best=` and `--augment ""` (a switch took them as true and false), `--out ""`.
    // Refused here for every command, before anything is read.
    const std::string empty = ": the value is empty (an unset shell variable?)";
    for (int i = 2; i < argc; ++i) {
      const std::string a = argv[i], before = argv[i - 1];
      if (a.size() > 3 && a.rfind("--", 0) == 0 && a.find('=') == a.size() - 1)
        throw pneumo::UsageError(a.substr(0, a.size() - 1) + empty);
      if (a.empty())
        throw pneumo::UsageError(before.rfind("--", 0) == 0 && before.find('=') == std::string::npos
                                     ? before + empty
                                     : "an empty argument after '" + before +
                                           "' (an unset shell variable?)");
    }
    argv_only = false;  // until the files --config and --resume name are read
    std::vector<std::string> args = expand_arguments(argc, argv, inherited_from);
    argv_only = inherited_from.empty();
    std::reverse(args.begin(), args.end());  // CLI11 takes a reversed vector
    app.parse(args);
    if (!action) return 2;
    argv_only = false;
    const int status = action();
    // What a command printed on stdout is its result (predict's CSV, evaluate's tables): a write
    // that failed (a full disk, a closed pipe) must not end in status 0.
    if (!std::cout.flush())
      throw pneumo::Error("cannot write the results to standard output (a full disk, or a "
                          "closed pipe?)");
    return status;
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {  // --help, --version: printed by CLI11
      const int status = app.exit(e);
      if (!std::cout.flush()) {  // > /dev/full ended in status 0
        std::cerr << "pneumo: error: cannot write to standard output (a full disk, or a closed "
                     "pipe?)\n";
        return 1;
      }
      return status;
    }
    if (argv_only && another_rank_says_it()) return 2;
    report_parse_error(app, e);
    say_where_flags_came_from(inherited_from);
    return 2;
  } catch (const pneumo::UsageError& e) {
    if (argv_only && another_rank_says_it()) return 2;
    std::cerr << "pneumo: error: " << e.what() << "\n";
    say_where_flags_came_from(inherited_from);
    return 2;
  } catch (const pneumo::Error& e) {
    std::cerr << "pneumo: error: " << e.what() << "\n";
    return 1;
  } catch (const std::bad_alloc&) {  // one the command did not turn into advice of its own
    std::cerr << "pneumo: error: out of host memory; try a smaller --batch (or fewer images)\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "pneumo: internal error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  pneumo::cli::say_when_a_signal_ends_the_command();
  const int status = run_pneumo(argc, argv);
  if (status == 0) return 0;
  // A failed command leaves without the libraries' exit handlers: OpenBLAS's waits for its worker
  // threads, and one whose memory allocation failed retries it forever (seen under a memory
  // limit: the out-of-memory message printed, then a hang). Whatever the command writes (run
  // folder, checkpoints, MPI) was finished or abandoned when its objects were destroyed on the
  // way here; only the standard streams are left to flush.
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  std::_Exit(status);
}
