// `pneumo train`: the seed recipe end to end. Opens the data (a cache, or an image tree prepared
// once), carves the validation split, trains with RMSprop and the callbacks, validates every
// epoch, and writes a run directory: config.json, log.csv, log.jsonl, checkpoints/{last,best}
// .safetensors, model.safetensors (final weights + the threshold tuned on val), report.md.
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <limits>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>

#include "cli/commands/commands.hpp"
#include "cli/commands/guards.hpp"
#include "pneumo/backend.hpp"
#include "pneumo/callbacks.hpp"
#include "pneumo/checkpoint.hpp"
#include "pneumo/data.hpp"
#include "pneumo/error.hpp"
#include "pneumo/metrics.hpp"
#include "pneumo/model.hpp"
#include "pneumo/model_checkpoint.hpp"
#include "pneumo/progress.hpp"
#include "pneumo/report.hpp"
#include "pneumo/sampling.hpp"
#include "pneumo/trainer.hpp"

namespace fs = std::filesystem;

namespace pneumo::cli {

namespace {

// --inject-fault KIND@STEP (a testing aid; see TrainOptions::inject_fault).
struct Fault {
  enum class Kind { NanLoss, NanWeight, Signal } kind = Kind::NanLoss;
  int signal = 0;
  int64_t step = 1;  // the step it hits, counted from 1 over the whole run
};

Fault parse_fault(const std::string& text) {
  const auto at = text.find('@');
  const std::string kind = text.substr(0, at);
  Fault fault;
  if (kind == "nan") {
    fault.kind = Fault::Kind::NanLoss;
  } else if (kind == "nan-weight") {
    fault.kind = Fault::Kind::NanWeight;
  } else if (kind == "sigint" || kind == "sigterm") {
    fault.kind = Fault::Kind::Signal;
    fault.signal = kind == "sigint" ? SIGINT : SIGTERM;
  } else {
    throw Error("--inject-fault must be nan@STEP, nan-weight@STEP, sigint@STEP or sigterm@STEP, "
                "got '" + text + "'");
  }
  char* end = nullptr;
  const std::string step = at == std::string::npos ? "" : text.substr(at + 1);
  fault.step = std::strtoll(step.c_str(), &end, 10);
  if (step.empty() || *end != '\0' || fault.step < 1)
    throw Error("--inject-fault needs a step >= 1 after '@', got '" + text + "'");
  return fault;
}

// "conv1.weight[4] is nan": the first value in a checkpoint that is not finite, or "".
std::string first_nonfinite_value(const CheckpointData& data) {
  for (const auto& tensor : data.tensors)
    for (size_t i = 0; i < tensor.values.size(); ++i)
      if (!std::isfinite(tensor.values[i]))
        return detail::concat(tensor.name, "[", i, "] is ", tensor.values[i]);
  return "";
}

}  // namespace

nlohmann::json to_json(const TrainOptions& o) {
  return {{"data", o.data},
          {"out", o.out},
          {"device", o.device},
          {"precision", o.precision},
          {"deterministic", o.deterministic},
          {"threads", o.threads},
          {"size", o.size},
          {"epochs", o.epochs},
          {"batch", o.batch},
          {"lr", o.learning_rate},
          {"rho", o.rho},
          {"epsilon", o.epsilon},
          {"seed", o.seed},
          {"val-split", o.val_split},
          {"balance", o.balance},
          {"augment", o.augment},
          {"rotation", o.augmentation.rotation_degrees},
          {"zoom", o.augmentation.zoom},
          {"shift", o.augmentation.shift},
          {"flip", o.augmentation.horizontal_flip},
          {"plateau-monitor", o.plateau_monitor},
          {"plateau-factor", o.plateau_factor},
          {"plateau-patience", o.plateau_patience},
          {"plateau-min-delta", o.plateau_min_delta},
          {"plateau-cooldown", o.plateau_cooldown},
          {"min-lr", o.min_lr},
          {"schedule", o.schedule},
          {"early-stopping-monitor", o.early_stopping_monitor},
          {"early-stopping-patience", o.early_stopping_patience},
          {"restore-best", o.restore_best},
          {"checkpoint-monitor", o.checkpoint_monitor}};
}

void validate(const TrainOptions& o) {
  // Every refusal is a UsageError (exit status 2): the parse_* helpers throw plain Errors, which
  // `as_usage` converts.
  auto as_usage = [](auto&& parse) {
    try {
      parse();
    } catch (const UsageError&) {
      throw;
    } catch (const Error& e) {
      throw UsageError(e.what());
    }
  };
  auto require = [](bool ok, const std::string& message) {
    if (!ok) throw UsageError(message);
  };
  require(!o.data.empty(), "--data is required: an image tree or a prepared cache");
  as_usage([&] { parse_device_choice(o.device); });
  require(o.precision == "fp32" || o.precision == "tf32",
          "--precision must be fp32 or tf32, got '" + o.precision + "'");
  require(o.epochs >= 1, "--epochs must be at least 1, got " + std::to_string(o.epochs));
  require(o.batch >= 1 && o.batch <= 4096,
          "--batch must be in [1, 4096], got " + std::to_string(o.batch));
  require(o.size >= 8 && o.size <= 1024, "--size must be in [8, 1024], got " +
                                             std::to_string(o.size));
  require(o.threads >= 0, "--threads must be >= 0, got " + std::to_string(o.threads));
  auto got = [](double value) { return detail::concat(", got ", value); };
  require(std::isfinite(o.learning_rate) && o.learning_rate > 0,
          "--lr must be a positive number" + got(o.learning_rate));
  require(o.rho > 0 && o.rho < 1, "--rho must be in (0, 1)" + got(o.rho));
  require(o.epsilon > 0 && std::isfinite(o.epsilon), "--epsilon must be positive" + got(o.epsilon));
  require(o.plateau_factor > 0 && o.plateau_factor < 1,
          "--plateau-factor must be in (0, 1)" + got(o.plateau_factor));
  require(o.plateau_patience >= 0, "--plateau-patience must be >= 0" + got(o.plateau_patience));
  require(o.min_lr >= 0, "--min-lr must be >= 0" + got(o.min_lr));
  require(o.early_stopping_patience >= 0,
          "--early-stopping-patience must be >= 0" + got(o.early_stopping_patience));
  require(o.augmentation.rotation_degrees >= 0 && o.augmentation.rotation_degrees <= 180,
          "--rotation must be in [0, 180] degrees" + got(o.augmentation.rotation_degrees));
  require(o.augmentation.zoom >= 0 && o.augmentation.zoom < 1,
          "--zoom must be in [0, 1)" + got(o.augmentation.zoom));
  require(o.augmentation.shift >= 0 && o.augmentation.shift < 1,
          "--shift must be in [0, 1)" + got(o.augmentation.shift));
  as_usage([&] { parse_balance_mode(o.balance); });
  as_usage([&] { parse_val_split(o.val_split); });
  if (!o.inject_fault.empty()) as_usage([&] { parse_fault(o.inject_fault); });
  require(o.schedule == "none" || o.schedule == "step" || o.schedule == "exponential" ||
              o.schedule == "cosine",
          "--schedule must be none, step, exponential or cosine, got '" + o.schedule + "'");
}

namespace {

std::string default_run_dir() {
  std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  std::ostringstream name;
  name << "runs/" << std::put_time(&local, "%Y%m%d-%H%M%S");
  return name.str();
}

// A run directory must be new (or empty), or the one a resumed run continues.
void prepare_run_dir(const std::string& dir, bool resuming) {
  std::error_code error;
  if (fs::exists(dir) && !resuming && !fs::is_empty(dir, error))
    throw Error("run directory '" + dir + "' already holds files; choose another --out, or "
                "continue it with --resume " + dir + "/checkpoints/last.safetensors");
  fs::create_directories(fs::path(dir) / "checkpoints", error);
  if (error) throw Error("cannot create run directory '" + dir + "': " + error.message());
  std::ofstream probe(fs::path(dir) / ".write-test");
  if (!probe) throw Error("run directory '" + dir + "' is not writable");
  probe.close();
  fs::remove(fs::path(dir) / ".write-test", error);
}

ImageSet upload(const Split& split, Device device) {
  return ImageSet::upload(device, split.images.data(), split.count(), split.size,
                          split.labels.data());
}

CallbackList make_callbacks(const TrainOptions& o) {
  CallbackList callbacks;
  if (o.schedule == "none") {
    ReduceLROnPlateauOptions plateau;
    plateau.monitor = o.plateau_monitor;
    plateau.factor = o.plateau_factor;
    plateau.patience = o.plateau_patience;
    plateau.min_delta = o.plateau_min_delta;
    plateau.cooldown = o.plateau_cooldown;
    plateau.min_lr = o.min_lr;
    callbacks.add(std::make_unique<ReduceLROnPlateau>(plateau));
  } else {
    LearningRateScheduleOptions schedule;
    schedule.kind = parse_schedule_kind(o.schedule);
    schedule.initial_lr = o.learning_rate;
    schedule.total_epochs = o.epochs;
    schedule.floor_lr = o.min_lr;
    callbacks.add(std::make_unique<LearningRateSchedule>(schedule));
  }
  if (o.early_stopping_patience > 0) {
    EarlyStoppingOptions stopping;
    stopping.monitor = o.early_stopping_monitor;
    stopping.patience = o.early_stopping_patience;
    stopping.restore_best = o.restore_best;
    callbacks.add(std::make_unique<EarlyStopping>(stopping));
  }
  ModelCheckpointOptions checkpoint;
  checkpoint.monitor = o.checkpoint_monitor;
  callbacks.add(std::make_unique<ModelCheckpointPolicy>(checkpoint));
  return callbacks;
}

}  // namespace

int run_train(const TrainOptions& options) {
  validate(options);
  const bool resuming = !options.resume.empty();
  const std::string run_dir = options.out.empty() ? default_run_dir() : options.out;
  prepare_run_dir(run_dir, resuming);
  {
    nlohmann::json resolved = to_json(options);
    resolved["out"] = run_dir;
    std::ofstream(fs::path(run_dir) / "config.json") << resolved.dump(2) << "\n";
  }

  OpenDatasetOptions open_options;
  open_options.size = options.size;
  open_options.threads = options.threads;
  Dataset dataset = open_dataset(options.data, open_options);
  TrainValSplits splits = make_train_val(dataset, parse_val_split(options.val_split, options.seed));
  std::cerr << "data: " << splits.description << "\n";

  BackendOptions backend_options;
  backend_options.device = parse_device_choice(options.device);
  backend_options.allow_tf32 = options.precision == "tf32";
  backend_options.deterministic = options.deterministic;
  backend_options.cpu_threads = options.threads;
  std::unique_ptr<Backend> backend = make_backend(backend_options);
  std::cerr << "backend: " << backend->name() << "\n";

  ModelConfig config;
  config.input_size = dataset.size;
  Model model(*backend, config, options.batch);
  model.initialize(options.seed);
  AugmentSettings augment = options.augmentation;
  augment.enabled = options.augment;
  Trainer trainer(*backend, model, options.batch, augment, options.seed);
  trainer.optimizer().learning_rate = static_cast<float>(options.learning_rate);
  trainer.optimizer().rho = static_cast<float>(options.rho);
  trainer.optimizer().epsilon = static_cast<float>(options.epsilon);

  const BalanceMode balance = parse_balance_mode(options.balance);
  ImageSet train_set = upload(splits.train, backend->device());
  if (balance == BalanceMode::ClassWeight)
    train_set.set_weights(sample_weights(splits.train.labels, balance));
  ImageSet val_set = upload(splits.val, backend->device());

  CallbackList callbacks = make_callbacks(options);
  TrainingControl control;
  control.learning_rate = options.learning_rate;
  callbacks.on_train_begin(control);
  int first_epoch = 0;
  int64_t steps_done = 0;
  CheckpointMetadata resumed;  // where an interrupted epoch stood (epoch_step 0: at its start)
  if (resuming) {
    CheckpointData checkpoint = load_checkpoint(options.resume);
    restore_checkpoint(checkpoint, model, &trainer.optimizer_state(), options.resume);
    callbacks.load_state(checkpoint.metadata.callback_state);
    first_epoch = checkpoint.metadata.epoch;
    steps_done = checkpoint.metadata.step;
    control.learning_rate = checkpoint.metadata.learning_rate;
    resumed = checkpoint.metadata;
    if (resumed.epoch_step > 0)
      std::cerr << "resuming " << options.resume << " at step " << resumed.epoch_step
                << " of epoch " << first_epoch + 1 << "\n";
    else
      std::cerr << "resuming " << options.resume << " after epoch " << first_epoch << "\n";
  }

  CheckpointMetadata metadata;
  metadata.seed = options.seed;
  metadata.config = to_json(options);
  metadata.config["out"] = run_dir;
  const std::string last_path = (fs::path(run_dir) / "checkpoints/last.safetensors").string();
  // What a user needs to know when the run stops early: which checkpoint survives.
  auto last_good_checkpoint = [&]() -> std::string {
    if (!fs::exists(last_path)) return "no checkpoint was written yet";
    const CheckpointMetadata last = read_checkpoint_metadata(last_path);
    return detail::concat("the last good checkpoint is ", last_path, " (after epoch ", last.epoch,
                          last.epoch_step > 0 ? detail::concat(" and ", last.epoch_step,
                                                               " steps of the next")
                                              : std::string(),
                          ")");
  };
  // Saves at an epoch end, or inside epoch `epochs_done` when `partial` says how far it got.
  auto save = [&](const std::string& name, int epochs_done, const EpochStats* partial = nullptr) {
    metadata.epoch = epochs_done;
    metadata.step = steps_done;
    metadata.epoch_step = partial ? partial->steps : 0;
    metadata.epoch_loss_sum = partial ? partial->loss_sum : 0.0;
    metadata.epoch_correct = partial ? partial->correct : 0.0;
    metadata.learning_rate = control.learning_rate;
    metadata.callback_state = callbacks.state();
    CheckpointData data = capture_checkpoint(model, &trainer.optimizer_state(), metadata);
    // Never overwrite a good checkpoint with weights that went bad without the loss showing it.
    const std::string bad = first_nonfinite_value(data);
    if (!bad.empty())
      throw Error(detail::concat("the model's state stopped being finite during epoch ",
                                 epochs_done + (partial ? 1 : 0), " (", bad, "); ", name,
                                 " was not written; ", last_good_checkpoint(), ". Try a lower --lr."));
    save_checkpoint((fs::path(run_dir) / name).string(), data);
  };

  EpochLogWriter log(run_dir, first_epoch);  // keeps the rows of the epochs already done
  ProgressOptions progress_options;
  progress_options.live = is_terminal(stderr);
  ProgressReporter progress(std::cerr, progress_options);
  std::optional<CheckpointData> best_snapshot;
  int epochs_done = first_epoch;
  std::optional<Fault> fault;
  if (!options.inject_fault.empty()) fault = parse_fault(options.inject_fault);
  StopOnSignal stop_on_signal;  // from here on, SIGINT/SIGTERM stop after the current step
  auto interrupted_message = [&](int epochs, const EpochStats* partial) {
    std::cout << "interrupted by " << stop_on_signal.signal_name() << " "
              << (partial ? detail::concat("after step ", partial->steps, " of epoch ", epochs + 1)
                          : detail::concat("after epoch ", epochs))
              << "; checkpoint written to " << last_path << "\n"
              << "resume with: pneumo train --resume " << last_path << "\n"
              << std::flush;
  };
  for (int epoch = first_epoch; epoch < options.epochs; ++epoch) {
    callbacks.on_epoch_begin(epoch, control);
    if (epoch == first_epoch && resumed.epoch_step > 0)
      control.learning_rate = resumed.learning_rate;  // the rate the interrupted epoch ran at
    trainer.optimizer().learning_rate = static_cast<float>(control.learning_rate);
    const auto order =
        epoch_indices(splits.train.labels, balance, options.seed, static_cast<uint32_t>(epoch));
    const int64_t steps = (static_cast<int64_t>(order.size()) + options.batch - 1) / options.batch;
    EpochOptions epoch_options;
    if (epoch == first_epoch && resumed.epoch_step > 0) {
      epoch_options.first_step = resumed.epoch_step;
      epoch_options.loss_sum = resumed.epoch_loss_sum;
      epoch_options.correct = resumed.epoch_correct;
    }
    epoch_options.stop = &stop_on_signal.stop();
    const int64_t steps_before_epoch = steps_done - epoch_options.first_step;
    if (fault)
      epoch_options.before_step = [&](int64_t step) {
        if (steps_before_epoch + step + 1 != fault->step) return;
        if (fault->kind == Fault::Kind::Signal) {
          std::raise(fault->signal);
          return;
        }
        // nan: the output layer's bias (every logit turns NaN); nan-weight: the first weight of
        // conv1, which max pooling hides from the loss (NaN never wins a comparison).
        const float nan = std::numeric_limits<float>::quiet_NaN();
        TensorView weights = model.parameters();
        float* target = weights.data + (fault->kind == Fault::Kind::NanLoss ? weights.numel() - 1 : 0);
        copy_bytes(target, weights.device, &nan, Device::Cpu, sizeof(float));
      };
    progress.begin_epoch(epoch, options.epochs, steps);
    EpochStats train_stats;
    try {
      train_stats = trainer.train_epoch(
          train_set, order, static_cast<uint32_t>(epoch),
          [&](int64_t step, int64_t, const EpochStats& running) {
            progress.update(step, running.images, running.loss, running.accuracy);
          },
          epoch_options);
    } catch (const NonFiniteLoss& e) {
      progress.end_epoch();
      throw Error(detail::concat(e.what(), ", step ", steps_before_epoch + e.step() + 1,
                                 " of the run; stopped: ", last_good_checkpoint(),
                                 ". Try a lower --lr, or look for bad images in the data."));
    }
    steps_done += train_stats.steps - epoch_options.first_step;
    progress.end_epoch();
    if (train_stats.interrupted) {
      save("checkpoints/last.safetensors", epoch, &train_stats);
      interrupted_message(epoch, &train_stats);
      return stop_on_signal.exit_status();
    }

    EpochStats val_stats;
    const std::vector<float> val_logits = trainer.predict_logits(val_set, &val_stats);
    MetricsReport val_report = evaluate_binary("val", val_logits, splits.val.labels);
    EpochMetrics metrics;
    metrics.epoch = epoch;
    metrics.values = metrics_as_values(val_report, "val_");
    metrics.values["loss"] = train_stats.loss;
    metrics.values["accuracy"] = train_stats.accuracy;
    EpochRecord record{epoch, control.learning_rate, train_stats.seconds, metrics.values};
    control.clear_requests();
    callbacks.on_epoch_end(metrics, control);

    std::cout << format_epoch_summary(record, options.epochs) << "\n" << std::flush;
    for (const auto& event : control.events) std::cout << "  " << event << "\n";
    epochs_done = epoch + 1;
    if (control.keep_weights_snapshot)
      best_snapshot = capture_checkpoint(model, nullptr, metadata);
    if (control.save_best_checkpoint) save("checkpoints/best.safetensors", epoch + 1);
    save("checkpoints/last.safetensors", epoch + 1);
    log.append(record);  // after the checkpoint: the history never runs ahead of it
    if (control.stop) {
      std::cout << control.stop_reason << "\n";
      break;
    }
    if (stop_on_signal.stop().load() && epoch + 1 < options.epochs) {  // arrived during validation
      interrupted_message(epoch + 1, nullptr);
      return stop_on_signal.exit_status();
    }
  }
  callbacks.on_train_end(control);
  if (control.restore_weights_snapshot && best_snapshot) {
    restore_checkpoint(*best_snapshot, model, nullptr, "the best epoch's weights");
    std::cout << "restored the weights of epoch " << control.snapshot_epoch + 1 << "\n";
  }

  // The decision threshold is tuned on validation (Youden's J) and stored with the model; test
  // images are never looked at here.
  EpochStats val_stats;
  const std::vector<float> val_logits = trainer.predict_logits(val_set, &val_stats);
  ThresholdChoice threshold = choose_threshold_youden(val_logits, splits.val.labels);
  metadata.decision_threshold = threshold.threshold;
  metadata.threshold_rule = threshold.defined
                                ? "Youden's J on " + std::to_string(splits.val.count()) +
                                      " validation images"
                                : "default 0.5 (validation lacks a class)";
  MetricsReport final_val =
      evaluate_binary("val", val_logits, splits.val.labels, threshold.threshold);
  save("model.safetensors", epochs_done);
  std::ofstream(fs::path(run_dir) / "metrics_val.json") << to_json(final_val).dump(2) << "\n";
  ReportInputs report;
  report.history = log.records();
  report.validation = final_val;
  report.validation_roc = roc_curve(val_logits, splits.val.labels);
  report.config = metadata.config;
  report.notes = "Data: " + splits.description + ". Backend: " + backend->name() + ".\n\n" +
                 kDatasetCitation;
  write_report(run_dir, report);
  std::cout << format_metrics_table(final_val);
  std::cout << "model: " << (fs::path(run_dir) / "model.safetensors").string()
            << " (threshold " << threshold.threshold << ", " << metadata.threshold_rule << ")\n";
  return 0;
}

}  // namespace pneumo::cli
