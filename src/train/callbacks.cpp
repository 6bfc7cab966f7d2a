// Keras-semantics callbacks: the update rules of ReduceLROnPlateau, EarlyStopping, the
// ModelCheckpoint policy and the learning-rate schedules, plus their JSON state for resuming.
// Each on_epoch_end follows the Keras 3 source statement by statement so traces agree.
#include "pneumo/callbacks.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "pneumo/error.hpp"

namespace pneumo {

using nlohmann::json;

namespace {

constexpr double kInfinity = std::numeric_limits<double>::infinity();

// The value a "best" starts from: anything beats it.
double worst_value(MonitorMode resolved) { return resolved == MonitorMode::Min ? kInfinity : -kInfinity; }

// Reads a required field of a callback state, naming the callback and the field when absent.
const json& field(const json& state, const char* key, const std::string& owner) {
  if (!state.is_object() || !state.contains(key))
    throw Error(detail::concat("saved state of callback ", owner, " has no field '", key, "'"));
  return state.at(key);
}

int int_field(const json& state, const char* key, const std::string& owner) {
  const json& value = field(state, key, owner);
  if (!value.is_number_integer())
    throw Error(detail::concat("saved state of callback ", owner, ": field '", key,
                               "' must be an integer, got ", detail::excerpt(value.dump())));
  return value.get<int>();
}

// Monitor and mode give "best" its meaning; a state saved for another monitor cannot continue.
void check_same_monitor(const json& state, const std::string& owner, const std::string& monitor,
                        MonitorMode mode) {
  const json& saved_monitor = field(state, "monitor", owner);
  const json& saved_mode = field(state, "mode", owner);
  if (!saved_monitor.is_string() || saved_monitor.get<std::string>() != monitor ||
      !saved_mode.is_string() || saved_mode.get<std::string>() != to_string(mode))
    throw Error(detail::concat("saved state of callback ", owner, " monitors ",
                               detail::excerpt(saved_monitor.dump()), " (", detail::excerpt(saved_mode.dump()),
                               ") but this run monitors \"", monitor, "\" (\"", to_string(mode),
                               "\"); resume with the same monitor"));
}

bool name_says_higher_is_better(const std::string& monitor) {
  static const char* const kUpwardWords[] = {"acc",         "auc",         "precision", "recall",
                                             "sensitivity", "specificity", "f1"};
  for (const char* word : kUpwardWords)
    if (monitor.find(word) != std::string::npos) return true;
  return false;
}

}  // namespace

// ---- Shared pieces -------------------------------------------------------------------------

double EpochMetrics::at(const std::string& name) const {
  auto it = values.find(name);
  if (it != values.end()) return it->second;
  std::ostringstream available;
  for (const auto& [key, value] : values) available << (available.tellp() > 0 ? ", " : "") << key;
  throw Error(detail::concat("monitored metric '", name, "' is not among this epoch's metrics (",
                             values.empty() ? std::string("none") : available.str(), ")"));
}

void TrainingControl::clear_requests() {
  stop_reason.clear();
  save_best_checkpoint = false;
  save_last_checkpoint = false;
  events.clear();
}

MonitorMode parse_monitor_mode(const std::string& text) {
  if (text == "auto") return MonitorMode::Auto;
  if (text == "min") return MonitorMode::Min;
  if (text == "max") return MonitorMode::Max;
  throw Error("unknown monitor mode '" + text + "': expected auto, min or max");
}

const char* to_string(MonitorMode mode) {
  switch (mode) {
    case MonitorMode::Min: return "min";
    case MonitorMode::Max: return "max";
    case MonitorMode::Auto: break;
  }
  return "auto";
}

MonitorMode resolve_monitor_mode(MonitorMode mode, const std::string& monitor) {
  if (mode != MonitorMode::Auto) return mode;
  return name_says_higher_is_better(monitor) ? MonitorMode::Max : MonitorMode::Min;
}

json double_to_json(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  return value;
}

double double_from_json(const json& value, const std::string& what) {
  if (value.is_number()) return value.get<double>();
  if (value.is_string()) {
    const std::string& text = value.get_ref<const std::string&>();
    if (text == "inf") return kInfinity;
    if (text == "-inf") return -kInfinity;
    if (text == "nan") return std::numeric_limits<double>::quiet_NaN();
  }
  throw Error(detail::concat(what, ": expected a number, \"inf\", \"-inf\" or \"nan\", got ",
                             detail::excerpt(value.dump())));
}

// ---- ReduceLROnPlateau ---------------------------------------------------------------------

ReduceLROnPlateau::ReduceLROnPlateau(ReduceLROnPlateauOptions options)
    : options_(std::move(options)), mode_(resolve_monitor_mode(options_.mode, options_.monitor)) {
  PNEUMO_CHECK(options_.factor > 0.0 && options_.factor < 1.0,
               "ReduceLROnPlateau factor must be in (0, 1), got ", options_.factor);
  PNEUMO_CHECK(options_.patience >= 0, "ReduceLROnPlateau patience must be >= 0, got ",
               options_.patience);
  PNEUMO_CHECK(options_.cooldown >= 0, "ReduceLROnPlateau cooldown must be >= 0, got ",
               options_.cooldown);
  PNEUMO_CHECK(options_.min_lr >= 0.0, "ReduceLROnPlateau min_lr must be >= 0, got ",
               options_.min_lr);
  reset();
}

void ReduceLROnPlateau::reset() {
  best_ = worst_value(mode_);
  wait_ = 0;
  cooldown_counter_ = 0;
}

void ReduceLROnPlateau::on_train_begin(TrainingControl& /*control*/) { reset(); }

// Keras: np.less(a, b - min_delta) / np.greater(a, b + min_delta). NaN never improves.
bool ReduceLROnPlateau::improves(double current) const {
  return mode_ == MonitorMode::Min ? current < best_ - options_.min_delta
                                   : current > best_ + options_.min_delta;
}

void ReduceLROnPlateau::on_epoch_end(const EpochMetrics& metrics, TrainingControl& control) {
  double current = metrics.at(options_.monitor);
  if (cooldown_counter_ > 0) {
    --cooldown_counter_;
    wait_ = 0;
  }
  if (improves(current)) {
    best_ = current;
    wait_ = 0;
  } else if (cooldown_counter_ == 0) {
    ++wait_;
    if (wait_ >= options_.patience) {
      // Keras keeps the rate in a float32 variable and compares it with np.float32(min_lr): once
      // clamped to min_lr it is not "greater", so reductions stop there (and wait keeps growing).
      // Each cut starts from that variable's value (old_lr = float(get_value(lr))), the float the
      // optimizer ran at, not from the exact product of the cuts before: with --plateau-factor
      // 0.1 from 1e-3 the two differ by one float ulp (the recipe's 0.3 happens to agree).
      const double old_lr = static_cast<float>(control.learning_rate);
      if (static_cast<float>(old_lr) > static_cast<float>(options_.min_lr)) {
        double new_lr = std::max(old_lr * options_.factor, options_.min_lr);
        control.learning_rate = new_lr;
        cooldown_counter_ = options_.cooldown;
        // The epochs counted (those after a cooldown), not the patience: 1 under --plateau-patience
        // 0, which read "did not improve for 0 epochs".
        const int waited = wait_;
        wait_ = 0;
        std::ostringstream event;
        event << "epoch " << metrics.epoch + 1 << ": ReduceLROnPlateau reduced the learning rate "
              << old_lr << " -> " << new_lr << " (" << options_.monitor << " did not improve for "
              << waited << (waited == 1 ? " epoch)" : " epochs)");
        control.events.push_back(event.str());
      }
    }
  }
}

json ReduceLROnPlateau::state() const {
  return {{"monitor", options_.monitor},
          {"mode", to_string(mode_)},
          {"best", double_to_json(best_)},
          {"wait", wait_},
          {"cooldown_counter", cooldown_counter_}};
}

void ReduceLROnPlateau::load_state(const json& state) {
  check_same_monitor(state, name(), options_.monitor, mode_);
  best_ = double_from_json(field(state, "best", name()), name() + " best");
  wait_ = int_field(state, "wait", name());
  cooldown_counter_ = int_field(state, "cooldown_counter", name());
}

// ---- EarlyStopping -------------------------------------------------------------------------

EarlyStopping::EarlyStopping(EarlyStoppingOptions options)
    : options_(std::move(options)),
      mode_(resolve_monitor_mode(options_.mode, options_.monitor)),
      best_(worst_value(mode_)) {
  PNEUMO_CHECK(options_.patience >= 0, "EarlyStopping patience must be >= 0, got ",
               options_.patience);
  options_.min_delta = std::fabs(options_.min_delta);
}

void EarlyStopping::on_train_begin(TrainingControl& /*control*/) {
  // A fresh start (a resume calls load_state after this). Keras 3 leaves `best` from a previous
  // fit() of the same instance in place; a new run here starts from nothing.
  best_ = worst_value(mode_);
  wait_ = 0;
  stopped_epoch_ = -1;
  best_epoch_ = -1;
}

// Keras: monitor_op(current - min_delta, reference) with min_delta negated in min mode.
bool EarlyStopping::improves(double current, double reference) const {
  return mode_ == MonitorMode::Min ? current + options_.min_delta < reference
                                   : current - options_.min_delta > reference;
}

void EarlyStopping::on_epoch_end(const EpochMetrics& metrics, TrainingControl& control) {
  if (metrics.epoch < options_.start_from_epoch) return;
  double current = metrics.at(options_.monitor);
  int epoch = metrics.epoch;
  ++wait_;
  if (improves(current, best_)) {
    best_ = current;
    best_epoch_ = epoch;
    // Only restart the wait when both the previous best and the baseline are beaten.
    if (!options_.baseline || improves(current, *options_.baseline)) wait_ = 0;
    return;
  }
  if (wait_ >= options_.patience && epoch > 0) {
    stopped_epoch_ = epoch;
    control.stop = true;
    control.stop_reason = stop_reason();  // printed once, by the trainer, after the epoch's events
  }
}

std::string EarlyStopping::stop_reason() const {
  std::ostringstream reason;
  reason << "early stopping at epoch " << stopped_epoch_ + 1 << ": " << options_.monitor
         << " did not improve for " << wait_ << (wait_ == 1 ? " epoch" : " epochs");
  if (best_epoch_ >= 0)
    reason << " (best " << best_ << " at epoch " << best_epoch_ + 1 << ")";
  else  // NaN every time (a precision without a positive call): no best to name
    reason << " (it has had no value: NaN in every epoch monitored)";
  return reason.str();
}

std::optional<std::string> EarlyStopping::ended_run(int epochs_done) const {
  if (stopped_epoch_ < 0 || stopped_epoch_ != epochs_done - 1 || wait_ < options_.patience)
    return std::nullopt;
  return stop_reason();
}

json EarlyStopping::state() const {
  return {{"monitor", options_.monitor},       {"mode", to_string(mode_)},
          {"best", double_to_json(best_)},     {"best_epoch", best_epoch_},
          {"stopped_epoch", stopped_epoch_},   {"wait", wait_}};
}

void EarlyStopping::load_state(const json& state) {
  check_same_monitor(state, name(), options_.monitor, mode_);
  best_ = double_from_json(field(state, "best", name()), name() + " best");
  best_epoch_ = int_field(state, "best_epoch", name());
  stopped_epoch_ = int_field(state, "stopped_epoch", name());
  wait_ = int_field(state, "wait", name());
  // Checkpoints written before 2026-12-05 also hold "have_snapshot" (the in-memory copy that
  // EarlyStopping's restore option asked for): nothing reads it now.
}

// ---- ModelCheckpoint policy ----------------------------------------------------------------

ModelCheckpointPolicy::ModelCheckpointPolicy(ModelCheckpointOptions options)
    : options_(std::move(options)),
      mode_(resolve_monitor_mode(options_.mode, options_.monitor)),
      best_(worst_value(mode_)) {}

void ModelCheckpointPolicy::on_epoch_end(const EpochMetrics& metrics, TrainingControl& control) {
  double current = metrics.at(options_.monitor);
  bool improved = mode_ == MonitorMode::Min ? current < best_ : current > best_;
  if (improved) {
    std::ostringstream event;
    event << "epoch " << metrics.epoch + 1 << ": " << options_.monitor << " improved from "
          << best_ << " to " << current << ", saving the best checkpoint";
    control.events.push_back(event.str());
    best_ = current;
    best_epoch_ = metrics.epoch;
    control.save_best_checkpoint = true;
  }
  if (options_.save_last) control.save_last_checkpoint = true;
}

json ModelCheckpointPolicy::state() const {
  return {{"monitor", options_.monitor},
          {"mode", to_string(mode_)},
          {"best", double_to_json(best_)},
          {"best_epoch", best_epoch_}};
}

void ModelCheckpointPolicy::load_state(const json& state) {
  check_same_monitor(state, name(), options_.monitor, mode_);
  best_ = double_from_json(field(state, "best", name()), name() + " best");
  best_epoch_ = int_field(state, "best_epoch", name());
}

// ---- Learning-rate schedules ---------------------------------------------------------------

const char* to_string(LearningRateScheduleOptions::Kind kind) {
  using Kind = LearningRateScheduleOptions::Kind;
  switch (kind) {
    case Kind::Exponential: return "exponential";
    case Kind::Cosine: return "cosine";
    case Kind::Step: break;
  }
  return "step";
}

LearningRateSchedule::LearningRateSchedule(LearningRateScheduleOptions options)
    : options_(options) {
  using Kind = LearningRateScheduleOptions::Kind;
  PNEUMO_CHECK(options_.initial_lr > 0.0, "learning-rate schedule: initial_lr must be > 0, got ",
               options_.initial_lr);
  if (options_.kind == Kind::Step) {
    PNEUMO_CHECK(options_.step_epochs > 0, "step schedule: step_epochs must be > 0, got ",
                 options_.step_epochs);
    PNEUMO_CHECK(options_.factor > 0.0, "step schedule: factor must be > 0, got ",
                 options_.factor);
  } else if (options_.kind == Kind::Exponential) {
    PNEUMO_CHECK(options_.gamma > 0.0, "exponential schedule: gamma must be > 0, got ",
                 options_.gamma);
  } else {
    PNEUMO_CHECK(options_.total_epochs > 0, "cosine schedule: total_epochs must be > 0, got ",
                 options_.total_epochs);
  }
  PNEUMO_CHECK(options_.floor_lr >= 0.0 && options_.floor_lr <= options_.initial_lr,
               "learning-rate schedule: floor_lr must be in [0, initial_lr], got ",
               options_.floor_lr);
}

double LearningRateSchedule::learning_rate_at(int epoch) const {
  using Kind = LearningRateScheduleOptions::Kind;
  PNEUMO_CHECK(epoch >= 0, "learning-rate schedule asked for negative epoch ", epoch);
  switch (options_.kind) {
    case Kind::Step:
      return std::max(options_.floor_lr, options_.initial_lr * std::pow(options_.factor,
                                                                        epoch / options_.step_epochs));
    case Kind::Exponential:
      return std::max(options_.floor_lr, options_.initial_lr * std::pow(options_.gamma, epoch));
    case Kind::Cosine: {
      const double kPi = 3.14159265358979323846;
      double progress = std::min(epoch, options_.total_epochs) /
                        static_cast<double>(options_.total_epochs);
      return options_.floor_lr +
             (options_.initial_lr - options_.floor_lr) * 0.5 * (1.0 + std::cos(kPi * progress));
    }
  }
  return options_.initial_lr;
}

void LearningRateSchedule::on_epoch_begin(int epoch, TrainingControl& control) {
  control.learning_rate = learning_rate_at(epoch);
}

json LearningRateSchedule::state() const {
  return {{"kind", to_string(options_.kind)},     {"initial_lr", options_.initial_lr},
          {"factor", options_.factor},            {"step_epochs", options_.step_epochs},
          {"gamma", options_.gamma},              {"total_epochs", options_.total_epochs},
          {"floor_lr", options_.floor_lr}};
}

void LearningRateSchedule::load_state(const json& state) {
  // Nothing evolves; a schedule saved with other settings would not continue identically. Only
  // the cosine reads total_epochs: a step or exponential schedule may be given more epochs.
  json saved = state, mine = this->state();
  const bool cosine = options_.kind == LearningRateScheduleOptions::Kind::Cosine;
  if (!cosine && saved.is_object() && saved.value("kind", "") == mine["kind"]) {
    saved.erase("total_epochs");
    mine.erase("total_epochs");
  }
  if (saved != mine) {
    const bool epochs_differ = cosine && saved.is_object() && saved.contains("total_epochs") &&
                               saved["total_epochs"] != mine["total_epochs"];
    // What differs, by the flag that sets it (the others are the schedule's fixed constants).
    static const std::map<std::string, std::string> flag_of{
        {"kind", "--schedule"}, {"initial_lr", "--lr"}, {"total_epochs", "--epochs"},
        {"floor_lr", "--min-lr"}};
    std::string differences;
    if (saved.is_object())
      for (const auto& [key, value] : mine.items())
        if (!saved.contains(key) || saved[key] != value) {
          const auto flag = flag_of.find(key);
          differences += detail::concat(differences.empty() ? "" : ", ",
                                        flag == flag_of.end() ? key : flag->second, " ",
                                        value.dump(), " (the checkpoint's: ",
                                        saved.contains(key) ? saved[key].dump() : "none", ")");
        }
    throw Error(detail::concat(
        "this run's learning-rate schedule differs from the one the checkpoint was trained with: ",
        differences.empty() ? detail::excerpt(state.dump()) : differences,
        epochs_differ ? "; a cosine schedule spans --epochs, so a resume cannot change them "
                        "(more or fewer): resume with the run's --epochs"
                      : "; resume with the checkpoint's values (leave out the flags named)"));
  }
}

// ---- CallbackList --------------------------------------------------------------------------

void CallbackList::add(std::unique_ptr<Callback> callback) {
  PNEUMO_CHECK(callback != nullptr, "CallbackList::add got a null callback");
  for (const auto& existing : callbacks_) {
    if (existing->name() == callback->name())
      throw Error("callback " + callback->name() + " added twice");
    if (existing->controls_learning_rate() && callback->controls_learning_rate())
      throw Error(detail::concat("callbacks ", existing->name(), " and ", callback->name(),
                                 " both set the learning rate; use one of them"));
  }
  callbacks_.push_back(std::move(callback));
}

void CallbackList::on_train_begin(TrainingControl& control) {
  for (auto& callback : callbacks_) callback->on_train_begin(control);
}

void CallbackList::on_epoch_begin(int epoch, TrainingControl& control) {
  for (auto& callback : callbacks_) callback->on_epoch_begin(epoch, control);
}

void CallbackList::on_epoch_end(const EpochMetrics& metrics, TrainingControl& control) {
  control.clear_requests();
  for (auto& callback : callbacks_) callback->on_epoch_end(metrics, control);
}

void CallbackList::on_train_end(TrainingControl& control) {
  control.clear_requests();
  for (auto& callback : callbacks_) callback->on_train_end(control);
}

json CallbackList::state() const {
  json state = json::object();
  for (const auto& callback : callbacks_) state[callback->name()] = callback->state();
  return state;
}

void CallbackList::load_state(const json& state) {
  if (!state.is_object())
    throw Error("saved callback state must be a JSON object, got " +
                detail::excerpt(state.dump()));
  for (auto& callback : callbacks_) {
    if (!state.contains(callback->name()))
      throw Error("its run was trained without " + callback->description() +
                  ", which cannot be added on resume (its state would start mid-run): resume "
                  "with the schedule and early stopping the run started with, or start a new "
                  "run");
    callback->load_state(state.at(callback->name()));
  }
}

std::optional<std::string> CallbackList::ended_run(int epochs_done) const {
  for (const auto& callback : callbacks_)
    if (std::optional<std::string> reason = callback->ended_run(epochs_done)) return reason;
  return std::nullopt;
}

Callback* CallbackList::find(const std::string& name) const {
  for (const auto& callback : callbacks_)
    if (callback->name() == name) return callback.get();
  return nullptr;
}

}  // namespace pneumo
