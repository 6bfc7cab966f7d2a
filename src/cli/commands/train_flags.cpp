// The `pneumo train` flag table (see train_flags.hpp) and what is read off it: registration,
// config.json (to_json), validation, and the JSON -> flags expansion of --config / --resume.
#include "cli/commands/train_flags.hpp"

#include "cli/commands/flag_text.hpp"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <limits>
#include <cstdlib>
#include <type_traits>
#include <utility>

#include "cli/commands/fault_injection.hpp"
#include "pneumo/augment.hpp"
#include "pneumo/backend.hpp"
#include "pneumo/callbacks.hpp"
#include "pneumo/error.hpp"
#include "pneumo/model.hpp"
#include "pneumo/sampling.hpp"
#include "pneumo/trainer.hpp"

namespace pneumo::cli {

namespace {

// A switch (add_switch): CLI11 fills an empty value from the default string, so the default --help
// shows is the field's own, through option_text.
void as_switch(CLI::Option& option, bool current) {
  option.expected(0, 1)->default_str("true")->option_text(std::string("[BOOLEAN]=") +
                                                          (current ? "true" : "false"));
}

// config.json holds values as a user would type them: a float flag given as 0.1 is written 0.1
// (the shortest text that reads back as the same float), not the double 0.10000000149011612.
nlohmann::json as_json(float value) {
  char text[32];
  const auto end = std::to_chars(text, text + sizeof text, value).ptr;
  return std::strtod(std::string(text, end).c_str(), nullptr);
}
template <class T>
nlohmann::json as_json(const T& value) {
  return value;
}

void require(bool ok, const std::string& message) {
  if (!ok) throw UsageError(message);
}
std::string got(double value) { return detail::concat(", got ", value); }

// A choice kept as text, with no parser of its own: "--threshold-rule must be youden or 0.5, got
// 'x'" (not_a_choice).
void one_of(const std::string& flag, const std::string& value,
            const std::vector<std::string>& accepted) {
  if (std::find(accepted.begin(), accepted.end(), value) == accepted.end())
    throw UsageError(not_a_choice(flag, value, accepted));
}

// A callback's monitor must be a metric every epoch has (epoch_metric_names), checked before
// training rather than after the first epoch.
void check_monitor(const std::string& flag, const std::string& monitor, const TrainOptions& o) {
  auto holds = [&monitor](const std::vector<std::string>& names) {
    return std::find(names.begin(), names.end(), monitor) != names.end();
  };
  const std::vector<std::string> names = epoch_metric_names(o.val_stress);
  if (holds(names)) return;
  if (!o.val_stress && holds(epoch_metric_names(true)))
    throw UsageError(flag + " " + monitor + " needs --val-stress true (the stress variants are "
                     "scored on validation only then)");
  throw UsageError(flag + " must name a metric of every epoch (" + listed_with_commas(names) +
                   "), got '" + monitor + "'" + did_you_mean(monitor, names));
}

enum class Shown { Default, NoDefault, Required, Hidden };

// A row bound to a TrainOptions field through `field`, a generic lambda returning a reference to
// it (so the same accessor serves the const and the non-const options).
template <class Field>
TrainFlag bound(std::string name, std::string help, Field field,
                std::function<void(const TrainOptions&)> check, std::string example,
                std::string refused = "", Shown shown = Shown::Default) {
  TrainFlag flag;
  flag.name = name;
  flag.help = help;
  flag.example = std::move(example);
  flag.refused = std::move(refused);
  flag.recorded = shown != Shown::Hidden;
  flag.add = [name, help, field, shown](CLI::App& app, TrainOptions& o) {
    CLI::Option* option = app.add_option("--" + name, field(o), help);
    if (shown == Shown::Default) option->capture_default_str();
    using Value = std::remove_reference_t<decltype(field(o))>;
    // "-1" for an unsigned field (--seed) would wrap to 2^64 - 1 in the conversion; refused.
    if constexpr (std::is_unsigned_v<Value> && !std::is_same_v<Value, bool>)
      option->check(non_negative_integer());
    // A switch (add_switch): `--augment false`, and what --config and --resume expand to, give
    // the value; a bare `--cuda-graph` means true.
    if constexpr (std::is_same_v<Value, bool>) as_switch(*option, field(o));
    if (shown == Shown::Required) option->required();
    if (shown == Shown::Hidden) option->group("");
  };
  flag.value = [field](const TrainOptions& o) { return as_json(field(o)); };
  flag.check = check ? std::move(check) : [](const TrainOptions&) {};
  return flag;
}

// A numeric flag's accepted interval; the check says "--x must be in [lo, hi), got v" (or
// ">= lo" when there is no upper end), and refuses NaN and infinities.
struct Within {
  Within(double lo, double hi = INFINITY, bool lo_open = false, bool hi_open = false,
         std::string note = "")
      : lo(lo), hi(hi), lo_open(lo_open), hi_open(hi_open), note(std::move(note)) {}
  double lo, hi;
  bool lo_open, hi_open;
  std::string note;  // appended to the interval, e.g. " degrees"
};

std::string number_text(double value) { return detail::concat(value); }

// "[lo, hi)" or ">= lo": the words of the check's message ("must be in [lo, hi)") and of the
// flag's --help line ("range: [lo, hi)").
std::string range_text(const Within& within) {
  if (std::isinf(within.hi)) return (within.lo_open ? "> " : ">= ") + number_text(within.lo);
  return (within.lo_open ? "(" : "[") + number_text(within.lo) + ", " + number_text(within.hi) +
         (within.hi_open ? ")" : "]");
}

template <class Field>
TrainFlag bound(std::string name, std::string help, Field field, Within within, std::string example,
                std::string refused) {
  auto check = [name, field, within](const TrainOptions& o) {
    const double v = static_cast<double>(field(o));
    const bool above = within.lo_open ? v > within.lo : v >= within.lo;
    const bool below = within.hi_open ? v < within.hi : v <= within.hi;
    if (std::isfinite(v) && above && below) return;
    throw UsageError("--" + name + " must be " + (std::isfinite(v) ? "" : "a finite number ") +
                     (std::isinf(within.hi) ? "" : "in ") + range_text(within) + within.note +
                     got(v));
  };
  help += "; range: " + range_text(within) + within.note;
  return bound(std::move(name), std::move(help), field, check, std::move(example),
               std::move(refused));
}

#define PNEUMO_FIELD(member) \
  [](auto& o) -> auto& { return o.member; }

std::vector<TrainFlag> make_table() {
  using O = const TrainOptions&;
  const Within non_negative{0.0}, unit_open{0.0, 1.0, true, true},
      unit_half_open{0.0, 1.0, false, true};
  std::vector<TrainFlag> t;
  t.push_back(bound(
      "data",
      "Image tree {train,val,test}/{NORMAL,PNEUMONIA} or a cache (--resume: the run's, unless given)",
      PNEUMO_FIELD(data),
      [](O o) {
        require(!o.data.empty(), "--data is required: an image tree or a prepared cache");
      },
      "other/data", "", Shown::Required));
  t.push_back(bound("out", "Run directory (default runs/<date>-<time>[-N])", PNEUMO_FIELD(out), {},
                    "runs/x", "", Shown::NoDefault));
  TrainFlag config;  // expanded before parsing (main.cpp); registered so --help lists it
  config.name = "config";
  config.help = "JSON file of flag values (command-line flags win)";
  config.recorded = false;
  config.add = [help = config.help](CLI::App& app, TrainOptions&) {
    app.add_option("--config", help)->type_name("FILE");
  };
  config.value = [](O) { return nlohmann::json(); };
  config.check = [](O) {};
  t.push_back(std::move(config));
  TrainFlag resume = bound("resume", "Continue from a checkpoint (its settings are reused)",
                           PNEUMO_FIELD(resume), {}, "", "", Shown::NoDefault);
  resume.recorded = false;
  t.push_back(std::move(resume));
  t.push_back(bound(
      "device", "auto | cuda | cpu", PNEUMO_FIELD(device),
      [](O o) { as_usage("--device", [&] { parse_device_choice(o.device); }); }, "cpu", "gpu"));
  t.push_back(bound(
      "precision",
      "fp32 | tf32 (CUDA convolutions and GEMMs) | bf16 (convolutions and dense GEMMs on bfloat16 "
      "operands, tensor cores on CUDA, emulated on the CPU)",
      PNEUMO_FIELD(precision),
      [](O o) {
        BackendOptions unused;
        as_usage("--precision", [&] { apply_precision(o.precision, unused); });
      },
      "tf32", "fp16"));
  t.push_back(bound("deterministic",
                    "CUDA: deterministic convolution algorithms only (false: the fastest)",
                    PNEUMO_FIELD(deterministic), {}, "false"));
  t.push_back(bound(
      "tuning-cache",
      "CUDA: file that remembers which of cuDNN and our kernels runs each op and shape, and "
      "cuDNN's algorithm picks, across runs (auto: $PNEUMO_TUNING_CACHE, else "
      "$XDG_CACHE_HOME/pneumo/tuning.json or ~/.cache/pneumo/tuning.json; none: off)",
      PNEUMO_FIELD(tuning_cache),
      [](O o) { as_usage("--tuning-cache", [&] { tuning_cache_path(o.tuning_cache); }); }, "none",
      ""));
  t.push_back(bound("sync-batchnorm",
                    "Data-parallel: batch-norm statistics over every rank's images (else each "
                    "rank's own, as DDP)",
                    PNEUMO_FIELD(sync_batchnorm), {}, "true"));
  t.push_back(bound(
      "fused-block-tails",
      "Each block's dropout, batch-norm and max pooling as one fused op, block 1 with its "
      "convolution recomputed (same model, fewer passes over memory; not with --sync-batchnorm); "
      "with --precision bf16 the activations between the tails stay bfloat16",
      PNEUMO_FIELD(fused_block_tails),
      [](O o) {
        require(!(o.fused_block_tails && o.sync_batchnorm),
                "--fused-block-tails and --sync-batchnorm cannot be combined: synchronised "
                "statistics cross ranks between the ops the fused tail joins");
      },
      "true"));
  t.push_back(bound("cuda-graph",
                    "Each full-batch step recorded once as a CUDA graph and replayed, its random "
                    "keys and learning rate read on the device (the CPU runs the same path "
                    "without a graph)",
                    PNEUMO_FIELD(cuda_graph), {}, "true"));
  t.push_back(bound("drop-last",
                    "Leave out each epoch's last, partial batch (as PyTorch's drop_last): every "
                    "step a full batch, none at a shape the others never meet; which images are "
                    "left out changes with each epoch's shuffle",
                    PNEUMO_FIELD(drop_last), {}, "true"));
  t.push_back(bound(
      "all-reduce", "Data-parallel gradients: auto (NCCL on CUDA, else MPI) | mpi | nccl",
      PNEUMO_FIELD(all_reduce),
      [](O o) {
        as_usage("--all-reduce", [&] { parse_all_reduce(o.all_reduce); });
        require(!(o.all_reduce == "nccl" && o.device == "cpu"),
                "--all-reduce nccl needs the CUDA backend; --device cpu was given");
      },
      "mpi", "gloo"));
  t.push_back(bound("bucket-mb",
                    "Data-parallel: gradients sent in buckets of this many MiB during the backward "
                    "pass, cut at layer boundaries (0: one buffer after it; a size under every "
                    "layer's gradients: a bucket per layer)",
                    PNEUMO_FIELD(bucket_mb), Within{0, 1024}, "0.5", "-1"));
  t.push_back(
      bound("threads", "CPU threads (0: all)", PNEUMO_FIELD(threads), Within{0, kMaxThreads}, "3",
            "5000"));
  const Within sizes{8, 1024};  // or 0
  t.push_back(bound(
      "size",
      "Input size in pixels (0: a cache's own, 150 for an image tree); range: 0 or " +
          range_text(sizes),
      PNEUMO_FIELD(size),
      [sizes](O o) {
        require(o.size == 0 || (o.size >= sizes.lo && o.size <= sizes.hi),
                "--size must be 0 (a cache's own size) or in " + range_text(sizes) + got(o.size));
      },
      "96", "4"));
  t.push_back(bound("epochs", "Epochs to train", PNEUMO_FIELD(epochs), Within{1}, "3", "0"));
  t.push_back(bound("batch", "Batch size", PNEUMO_FIELD(batch), Within{1, kMaxBatch}, "64", "0"));
  t.push_back(bound("val-batch",
                    "Batch of the validation passes (0: --batch); a larger one means fewer "
                    "launches, and the model holds activations for it",
                    PNEUMO_FIELD(val_batch), Within{0, kMaxBatch}, "256", "-1"));
  t.push_back(bound(
      "optimizer", "rmsprop (the recipe) | adamw", PNEUMO_FIELD(optimizer),
      [](O o) { as_usage("--optimizer", [&] { parse_optimizer(o.optimizer); }); }, "adamw", "sgd"));
  // The optimizer steps in float32: a rate that rounds to 0 or infinity there is refused, as resume
  // refuses one in a checkpoint.
  t.push_back(bound("lr", "Learning rate", PNEUMO_FIELD(learning_rate),
                    Within{std::numeric_limits<float>::denorm_min(),
                           std::numeric_limits<float>::max(), false, false,
                           " (a positive float32)"},
                    "0.002", "0"));
  t.push_back(bound("rho", "RMSprop decay", PNEUMO_FIELD(rho), unit_open, "0.95", "1"));
  t.push_back(bound("epsilon", "Optimizer epsilon (where RMSprop adds it: --rmsprop-epsilon)", PNEUMO_FIELD(epsilon),
                    Within{0, INFINITY, true}, "1e-08", "0"));
  t.push_back(bound(
      "rmsprop-epsilon",
      "Where RMSprop adds epsilon: outside the square root (PyTorch; Keras 2, tf.keras <= 2.10) "
      "| inside it (Keras 2.11+ and 3)",
      PNEUMO_FIELD(rmsprop_epsilon),
      [](O o) {
        one_of("--rmsprop-epsilon", o.rmsprop_epsilon, {"outside", "inside"});
        require(o.rmsprop_epsilon == "outside" || o.optimizer == "rmsprop",
                "--rmsprop-epsilon inside is RMSprop's; --optimizer " + o.optimizer +
                    " adds epsilon outside the square root");
      },
      "inside", "under"));
  t.push_back(
      bound("beta1", "AdamW first-moment decay", PNEUMO_FIELD(beta1), unit_half_open, "0.8", "1"));
  t.push_back(bound("beta2", "AdamW second-moment decay", PNEUMO_FIELD(beta2), unit_half_open,
                    "0.99", "1"));
  t.push_back(bound(
      "weight-decay",
      "AdamW decoupled weight decay (param *= 1 - lr * wd each step); range: >= 0 (and lr * wd < "
      "1 under adamw)",
      PNEUMO_FIELD(weight_decay),
      [](O o) {
        // Finite under either optimizer: config.json records it, and JSON has no infinity.
        require(std::isfinite(o.weight_decay) && o.weight_decay >= 0,
                std::string("--weight-decay must be ") +
                    (std::isfinite(o.weight_decay) ? "" : "a finite number ") + ">= 0" +
                    got(o.weight_decay));
        // AdamW multiplies each parameter by 1 - lr x wd a step: at 1 or more it flips or zeroes
        // them. RMSprop ignores the flag.
        require(o.optimizer != "adamw" || o.weight_decay * o.learning_rate < 1,
                detail::concat("--weight-decay x --lr must be < 1 under --optimizer adamw, got ",
                               o.weight_decay, " x ", o.learning_rate));
      },
      "0.05", "-1"));
  t.push_back(bound("label-smoothing", "Train towards y (1 - s) + s/2 instead of 0/1 (0: off)",
                    PNEUMO_FIELD(label_smoothing), unit_half_open, "0.1", "1"));
  t.push_back(bound("seed", "Seed of every random stream", PNEUMO_FIELD(seed), {}, "7"));
  t.push_back(bound(
      "val-split", "Fraction of train carved out for validation, grouped by patient, or 'official'",
      PNEUMO_FIELD(val_split),
      [](O o) { as_usage("--val-split", [&] { parse_val_split(o.val_split); }); }, "official",
      "half"));
  t.push_back(bound("val-seed",
                    "Seed of the validation carve (-1: --seed); a fixed one keeps the validation "
                    "images across training seeds",
                    PNEUMO_FIELD(val_seed), Within{-1}, "3", "-2"));
  t.push_back(bound(
      "balance", "oversample | class-weight | none", PNEUMO_FIELD(balance),
      [](O o) { as_usage("--balance", [&] { parse_balance_mode(o.balance); }); }, "class-weight",
      "smote"));
  t.push_back(
      bound("augment", "Augment training images (true/false)", PNEUMO_FIELD(augment), {}, "false"));
  t.push_back(bound("rotation", "Max rotation, degrees",
                    PNEUMO_FIELD(augmentation.rotation_degrees),
                    Within{0, 180, false, false, " degrees"}, "12.5", "200"));
  t.push_back(bound("zoom", "Zoom range: factor in [1-z, 1+z] per axis",
                    PNEUMO_FIELD(augmentation.zoom), unit_half_open, "0.1", "1"));
  t.push_back(bound(
      "zoom-mode", "keras (x and y zoom drawn apart, as Keras) | isotropic (one scale)",
      PNEUMO_FIELD(zoom_mode),
      [](O o) { as_usage("--zoom-mode", [&] { parse_zoom_mode(o.zoom_mode); }); }, "isotropic",
      "radial"));
  t.push_back(bound("zoom-after-rotation",
                    "Zoom along the output's axes after the rotation, as Keras (false: along the "
                    "image's own axes before it)",
                    PNEUMO_FIELD(augmentation.zoom_after_rotation), {}, "true"));
  t.push_back(bound("shift", "Shift range, fraction of the size", PNEUMO_FIELD(augmentation.shift),
                    unit_half_open, "0.2", "1"));
  t.push_back(bound("flip", "Random horizontal flips (true/false)",
                    PNEUMO_FIELD(augmentation.horizontal_flip), {}, "false"));
  t.push_back(bound(
      "aspect", "Aspect-ratio jitter: width/height times r in [1/(1+a), 1+a], area kept (0: off)",
      PNEUMO_FIELD(augmentation.aspect),
      Within{0, 1, false, false, " (width/height ratio up to 1 + a)"}, "0.3", "2"));
  t.push_back(bound("brightness", "Brightness jitter: add a value in [-b, b] (0: off)",
                    PNEUMO_FIELD(augmentation.brightness), Within{0, 0.5}, "0.1", "0.6"));
  t.push_back(bound("contrast", "Contrast jitter: factor in [1-c, 1+c] about mid-grey (0: off)",
                    PNEUMO_FIELD(augmentation.contrast), unit_half_open, "0.2", "1"));
  t.push_back(bound("gamma", "Gamma jitter: exponent in [1/(1+g), 1+g] (0: off)",
                    PNEUMO_FIELD(augmentation.gamma),
                    Within{0, 2, false, false, " (exponent up to 1 + g)"}, "0.3", "3"));
  t.push_back(bound("sharpness",
                    "Blur/sharpness jitter: factor in [1-s, 1+s], 0 blurs, 2 sharpens (0: off)",
                    PNEUMO_FIELD(augmentation.sharpness), Within{0, 1}, "0.5", "1.5"));
  t.push_back(bound(
      "normalization",
      "Input: unit (x/255) | per-image (standardised per image; kept in the model)",
      PNEUMO_FIELD(normalization),
      [](O o) { as_usage("--normalization", [&] { parse_normalization(o.normalization); }); },
      "per-image", "zscore"));
  t.push_back(bound(
      "head", "flatten (the recipe: 256x5x5 -> dense) | gap (global average pooling -> dense)",
      PNEUMO_FIELD(head), [](O o) { as_usage("--head", [&] { parse_model_head(o.head); }); }, "gap",
      "attention"));
  t.push_back(bound("val-stress",
                    "Score stress variants of validation each epoch (val_stress_* metrics)",
                    PNEUMO_FIELD(val_stress), {}, "true"));
  t.push_back(bound(
      "plateau-monitor", "ReduceLROnPlateau metric", PNEUMO_FIELD(plateau_monitor),
      [](O o) {
        if (o.schedule == "none") check_monitor("--plateau-monitor", o.plateau_monitor, o);
      },
      "val_loss", "val_los"));
  t.push_back(bound("plateau-factor", "ReduceLROnPlateau factor", PNEUMO_FIELD(plateau_factor),
                    unit_open, "0.5", "1"));
  t.push_back(bound("plateau-patience", "ReduceLROnPlateau patience",
                    PNEUMO_FIELD(plateau_patience), non_negative, "3", "-1"));
  t.push_back(bound("plateau-min-delta", "ReduceLROnPlateau min_delta",
                    PNEUMO_FIELD(plateau_min_delta), non_negative, "0.001", "nan"));
  t.push_back(bound("plateau-cooldown",
                    "ReduceLROnPlateau cooldown, counted as Keras does: N - 1 epochs rest after a cut",
                    PNEUMO_FIELD(plateau_cooldown), non_negative, "1", "-1"));
  t.push_back(
      bound("min-lr", "Learning-rate floor", PNEUMO_FIELD(min_lr), non_negative, "1e-05", "-1"));
  t.push_back(bound(
      "schedule", "none (ReduceLROnPlateau) | step | exponential | cosine", PNEUMO_FIELD(schedule),
      [](O o) {
        as_usage("--schedule", [&] { parse_schedule_kind(o.schedule); });
        require(o.schedule == "none" || o.min_lr <= o.learning_rate,
                "--min-lr must be at most --lr under --schedule " + o.schedule + " (the floor it "
                "decays to), got --min-lr " + number_text(o.min_lr) + " and --lr " +
                number_text(o.learning_rate));
      },
      "cosine", "linear"));
  t.push_back(bound(
      "early-stopping-monitor", "EarlyStopping metric", PNEUMO_FIELD(early_stopping_monitor),
      [](O o) {
        if (o.early_stopping_patience > 0)
          check_monitor("--early-stopping-monitor", o.early_stopping_monitor, o);
      },
      "val_accuracy"));
  t.push_back(bound("early-stopping-patience", "EarlyStopping patience (0: off)",
                    PNEUMO_FIELD(early_stopping_patience), non_negative, "3", "-1"));
  t.push_back(bound("restore-best",
                    "model.safetensors gets the weights of the best --checkpoint-monitor epoch "
                    "(checkpoints/best.safetensors), with or without early stopping",
                    PNEUMO_FIELD(restore_best), {}, "true"));
  // The test hook (fault_injection.hpp): hidden from --help, never recorded with a run.
  t.push_back(bound(
      "inject-fault", "nan@STEP | nan-weight@STEP | inf-state@STEP | sigint@STEP | sigterm@STEP | nan@valEPOCH | sigint@valEPOCH", PNEUMO_FIELD(inject_fault),
      [](O o) {
        if (!o.inject_fault.empty()) as_usage("--inject-fault", [&] { parse_fault(o.inject_fault); });
      },
      "", "nan@0", Shown::Hidden));
  t.push_back(bound(
      "threshold-rule", "Threshold stored with the model: youden (on validation) | 0.5",
      PNEUMO_FIELD(threshold_rule),
      [](O o) {
        one_of("--threshold-rule", o.threshold_rule, {"youden", "0.5"});
      },
      "0.5", "f1"));
  t.push_back(bound(
      "checkpoint-monitor", "Metric that picks checkpoints/best.safetensors",
      PNEUMO_FIELD(checkpoint_monitor),
      [](O o) { check_monitor("--checkpoint-monitor", o.checkpoint_monitor, o); }, "val_accuracy",
      "val_stress_worst_accuracy"));
  return t;
}

#undef PNEUMO_FIELD

}  // namespace

const std::vector<TrainFlag>& train_flags() {
  static const std::vector<TrainFlag> table = make_table();
  return table;
}

void add_train_flags(CLI::App& command, TrainOptions& options) {
  for (const TrainFlag& flag : train_flags()) flag.add(command, options);
}

nlohmann::json to_json(const TrainOptions& options) {
  nlohmann::json json = nlohmann::json::object();
  for (const TrainFlag& flag : train_flags())
    if (flag.recorded) json[flag.name] = flag.value(options);
  return json;
}

void validate(const TrainOptions& options) {
  for (const TrainFlag& flag : train_flags()) flag.check(options);
}

CLI::Option* add_switch(CLI::App& command, const std::string& name, bool& value,
                        const std::string& help) {
  CLI::Option* option = command.add_option("--" + name, value, help);
  as_switch(*option, value);
  return option;
}

CLI::Validator non_negative_integer() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        if (!text.empty() && text[0] == '-') return "must be >= 0, got " + text;
        // Above 2^64 - 1 the conversion would clamp without a word.
        errno = 0;
        std::strtoull(text.c_str(), nullptr, 10);
        if (errno == ERANGE) return "must be at most 18446744073709551615, got " + text;
        return "";
      },
      "", "non-negative");
}

std::vector<std::string> flags_from_json(const nlohmann::json& config, const std::string& source) {
  if (!config.is_object())
    throw UsageError(source + ": the configuration must be a JSON object");
  std::vector<std::string> flags;
  for (const auto& [key, value] : config.items()) {
    if (key == "out" || key == "resume") continue;  // where a run writes is never inherited
    if (key == "config")
      throw UsageError(source + ": a configuration cannot name another (\"config\"); give each "
                       "file as its own --config");
    // --help prints and exits 0: from a file it made a script's "run" succeed without training.
    if (key == "help")
      throw UsageError(source + ": a configuration holds a run's settings, not \"help\"; run "
                       "pneumo train --help");
    std::string text;
    if (value.is_string()) {
      text = value.get<std::string>();
      if (text.empty())  // as `--key ""` on the command line: no flag means anything by it
        throw UsageError(source + ": value of '" + detail::excerpt(key) + "' is empty");
    } else if (value.is_boolean()) {
      text = value.get<bool>() ? "true" : "false";
    } else if (value.is_number_float() && std::fabs(value.get<double>()) < 9007199254740992.0 &&
               value.get<double>() == std::floor(value.get<double>())) {
      // 12.0 or 1.2e1 (JSON has one number type; a writer may not keep integers apart): the
      // integer it equals, which an INT flag takes and a float flag reads the same.
      text = std::to_string(static_cast<int64_t>(value.get<double>()));
    } else if (value.is_number()) {
      text = value.dump();
    } else {
      throw UsageError(source + ": value of '" + detail::excerpt(key) +
                       "' must be a string, number or boolean");
    }
    flags.push_back("--" + key + "=" + text);
  }
  return flags;
}

}  // namespace pneumo::cli
