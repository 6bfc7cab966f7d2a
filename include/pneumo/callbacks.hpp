// Training callbacks with Keras semantics, as small host-side objects: ReduceLROnPlateau,
// EarlyStopping, the ModelCheckpoint policy and learning-rate schedules (step, exponential,
// cosine). They read per-epoch metrics and write requests into a TrainingControl; they never touch
// the model, so they are tested on scripted metric sequences without a GPU.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace pneumo {

// What one finished epoch measured: "loss", "accuracy", "val_loss", "val_accuracy", "val_auc", ...
// (metrics_as_values() in metrics.hpp produces the val_ names). epoch is 0-based.
struct EpochMetrics {
  int epoch = 0;
  std::map<std::string, double> values;
  // The value of `name`; throws pneumo::Error listing the available names when it is missing
  // (Keras only warns; a misspelt monitor that silently never fires is worse than a refusal).
  double at(const std::string& name) const;
};

// The trainer's side of the conversation. learning_rate persists across epochs and is read by the
// optimizer; the request flags are cleared by CallbackList before each epoch end and acted on by
// the trainer right after it.
struct TrainingControl {
  double learning_rate = 1e-3;

  bool stop = false;            // finish training after this epoch
  std::string stop_reason;      // e.g. "early stopping: val_loss did not improve for 3 epochs"
  bool save_best_checkpoint = false;      // ModelCheckpoint: the monitored value improved
  bool save_last_checkpoint = false;      // ModelCheckpoint: write the "last" checkpoint
  std::vector<std::string> events;        // human-readable actions taken, for the log

  void clear_requests();  // everything above except learning_rate and stop
};

// Which direction is an improvement. Auto: Max when the monitored name contains acc, auc,
// precision, recall, sensitivity, specificity or f1; Min otherwise (loss). Keras'
// ReduceLROnPlateau only checks for "acc" and would minimise val_auc; Keras 3's EarlyStopping
// asks the metric's direction, which this rule reproduces for the metrics pneumo reports.
enum class MonitorMode { Auto, Min, Max };
MonitorMode parse_monitor_mode(const std::string& text);  // "auto" | "min" | "max"
const char* to_string(MonitorMode mode);
MonitorMode resolve_monitor_mode(MonitorMode mode, const std::string& monitor);  // never Auto

class Callback {
 public:
  virtual ~Callback() = default;
  // Unique key of this callback in the saved state ("reduce_lr_on_plateau", ...).
  virtual std::string name() const = 0;
  // What a user knows it by, with the flag that adds it to a run ("early stopping
  // (--early-stopping-patience)"): for messages.
  virtual std::string description() const { return name(); }
  // True for callbacks that set the learning rate; two of them in one list are refused.
  virtual bool controls_learning_rate() const { return false; }

  virtual void on_train_begin(TrainingControl& /*control*/) {}
  virtual void on_epoch_begin(int /*epoch*/, TrainingControl& /*control*/) {}
  virtual void on_epoch_end(const EpochMetrics& /*metrics*/, TrainingControl& /*control*/) {}
  virtual void on_train_end(TrainingControl& /*control*/) {}

  // Everything needed to continue identically after a resume (counters, best value, ...).
  // load_state refuses a state whose monitor or mode differs from this callback's.
  virtual nlohmann::json state() const = 0;
  virtual void load_state(const nlohmann::json& state) = 0;

  // After load_state: why the run ended with its epoch `epochs_done` (counted from 1), when this
  // callback stopped it there and its options now would still stop it (a resume of such a run
  // has nothing to train); nothing otherwise.
  virtual std::optional<std::string> ended_run(int /*epochs_done*/) const { return std::nullopt; }
};

// keras.callbacks.ReduceLROnPlateau, line for line: after `patience` epochs without an improvement
// of more than min_delta over the best value, lr <- max(lr * factor, min_lr), but only while
// lr > min_lr (compared in float32, as Keras does); then wait resets and `cooldown` epochs pass
// in which no waiting is counted.
struct ReduceLROnPlateauOptions {
  std::string monitor = "val_loss";
  MonitorMode mode = MonitorMode::Auto;
  double factor = 0.1;  // must be in (0, 1)
  int patience = 10;
  double min_delta = 1e-4;
  int cooldown = 0;
  double min_lr = 0.0;
};

class ReduceLROnPlateau : public Callback {
 public:
  explicit ReduceLROnPlateau(ReduceLROnPlateauOptions options);
  std::string name() const override { return "reduce_lr_on_plateau"; }
  std::string description() const override { return "ReduceLROnPlateau (--schedule none)"; }
  bool controls_learning_rate() const override { return true; }
  void on_train_begin(TrainingControl& control) override;
  void on_epoch_end(const EpochMetrics& metrics, TrainingControl& control) override;
  nlohmann::json state() const override;
  void load_state(const nlohmann::json& state) override;

  double best() const { return best_; }
  int wait() const { return wait_; }
  int cooldown_counter() const { return cooldown_counter_; }

 private:
  void reset();
  bool improves(double current) const;
  ReduceLROnPlateauOptions options_;
  MonitorMode mode_;  // resolved
  double best_ = 0.0;
  int wait_ = 0;
  int cooldown_counter_ = 0;
};

// keras.callbacks.EarlyStopping (Keras 3): stop once `patience` monitored epochs pass without an
// improvement of more than min_delta (and, with a baseline, without beating it). Keras' option
// restore_best_weights is not here: `pneumo train --restore-best` restores the best checkpoint
// by the ModelCheckpoint policy's monitor, which a resumed run finds on disk.
struct EarlyStoppingOptions {
  std::string monitor = "val_loss";
  MonitorMode mode = MonitorMode::Auto;
  double min_delta = 0.0;
  int patience = 0;
  std::optional<double> baseline;
  int start_from_epoch = 0;  // epochs before this one are not monitored (warm-up)
};

class EarlyStopping : public Callback {
 public:
  explicit EarlyStopping(EarlyStoppingOptions options);
  std::string name() const override { return "early_stopping"; }
  std::string description() const override {
    return "early stopping (--early-stopping-patience)";
  }
  void on_train_begin(TrainingControl& control) override;
  void on_epoch_end(const EpochMetrics& metrics, TrainingControl& control) override;
  nlohmann::json state() const override;
  void load_state(const nlohmann::json& state) override;

  double best() const { return best_; }
  int best_epoch() const { return best_epoch_; }  // -1 before the first monitored epoch
  int stopped_epoch() const { return stopped_epoch_; }  // -1 while not stopped
  int wait() const { return wait_; }
  // The stop at the end of epoch `epochs_done` stands while the wait still reaches the patience:
  // a resume given a larger --early-stopping-patience trains on.
  std::optional<std::string> ended_run(int epochs_done) const override;

 private:
  bool improves(double current, double reference) const;
  std::string stop_reason() const;  // "early stopping at epoch ...", from the state
  EarlyStoppingOptions options_;
  MonitorMode mode_;
  double best_;
  int best_epoch_ = -1;
  int stopped_epoch_ = -1;
  int wait_ = 0;
};

// The decision half of keras.callbacks.ModelCheckpoint: every epoch asks for the "last"
// checkpoint (when save_last) and, when the monitored value beats the best so far (strictly; no
// min_delta, as Keras), for the "best" one. Writing the files is the trainer's job.
struct ModelCheckpointOptions {
  std::string monitor = "val_loss";
  MonitorMode mode = MonitorMode::Auto;
  bool save_last = true;
};

class ModelCheckpointPolicy : public Callback {
 public:
  explicit ModelCheckpointPolicy(ModelCheckpointOptions options);
  std::string name() const override { return "model_checkpoint"; }
  void on_epoch_end(const EpochMetrics& metrics, TrainingControl& control) override;
  nlohmann::json state() const override;
  void load_state(const nlohmann::json& state) override;

  double best() const { return best_; }
  int best_epoch() const { return best_epoch_; }  // -1 before any epoch

 private:
  ModelCheckpointOptions options_;
  MonitorMode mode_;
  double best_;
  int best_epoch_ = -1;
};

// Learning rate as a pure function of the (0-based) epoch, set at each epoch's start:
//   step:        max(floor_lr, lr0 * factor ^ floor(epoch / step_epochs))
//   exponential: max(floor_lr, lr0 * gamma ^ epoch)
//   cosine:      floor_lr + (lr0 - floor_lr) * (1 + cos(pi * min(epoch, T) / T)) / 2, T = total_epochs
// Like keras.callbacks.LearningRateScheduler it overwrites the rate, so it cannot be combined
// with ReduceLROnPlateau (CallbackList refuses the pair).
struct LearningRateScheduleOptions {
  enum class Kind { Step, Exponential, Cosine };
  Kind kind = Kind::Step;
  double initial_lr = 1e-3;
  double factor = 0.5;   // step: multiplier per drop
  int step_epochs = 10;  // step: epochs between drops
  double gamma = 0.95;   // exponential
  int total_epochs = 12;  // cosine: epochs to reach the floor
  double floor_lr = 0.0;  // the rate never goes below it (pneumo train: --min-lr)
};
const char* to_string(LearningRateScheduleOptions::Kind kind);

class LearningRateSchedule : public Callback {
 public:
  explicit LearningRateSchedule(LearningRateScheduleOptions options);
  std::string name() const override { return "lr_schedule"; }
  std::string description() const override { return "a learning-rate schedule (--schedule)"; }
  bool controls_learning_rate() const override { return true; }
  void on_epoch_begin(int epoch, TrainingControl& control) override;
  nlohmann::json state() const override;  // stateless: holds the options, checked on load
  void load_state(const nlohmann::json& state) override;

  double learning_rate_at(int epoch) const;

 private:
  LearningRateScheduleOptions options_;
};

// The callbacks of one run, called in the order added. state() is one JSON object keyed by
// callback name, which the checkpoint stores; load_state() restores every callback from it and
// refuses a state that lacks one of them.
// Trainer protocol, per run: on_train_begin; on resume, load_state (after on_train_begin, which
// resets); then per epoch e: on_epoch_begin(e) (schedules set control.learning_rate), train,
// validate, on_epoch_end(metrics) and act on the requests in control (checkpoints, stop);
// finally on_train_end. Save state() in the
// checkpoint written after on_epoch_end, together with control.learning_rate.
class CallbackList {
 public:
  void add(std::unique_ptr<Callback> callback);  // refuses duplicate names, two lr controllers
  void on_train_begin(TrainingControl& control);
  void on_epoch_begin(int epoch, TrainingControl& control);
  // Clears the previous epoch's requests, then lets every callback read the metrics.
  void on_epoch_end(const EpochMetrics& metrics, TrainingControl& control);
  void on_train_end(TrainingControl& control);
  nlohmann::json state() const;
  void load_state(const nlohmann::json& state);
  std::optional<std::string> ended_run(int epochs_done) const;  // the first callback's reason
  size_t size() const { return callbacks_.size(); }
  Callback* find(const std::string& name) const;  // nullptr when absent

 private:
  std::vector<std::unique_ptr<Callback>> callbacks_;
};

// JSON cannot hold +-inf (the "best" before any epoch) or NaN: they are written as the strings
// "inf", "-inf", "nan" and read back exactly; finite doubles round-trip exactly.
nlohmann::json double_to_json(double value);
double double_from_json(const nlohmann::json& value, const std::string& what);

}  // namespace pneumo
