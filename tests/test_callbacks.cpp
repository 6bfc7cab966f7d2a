// Callbacks on scripted metric sequences: the recipe's ReduceLROnPlateau trace, cooldown and
// min_delta, EarlyStopping's patience/baseline/best epoch, the schedules' values, and a JSON state
// round trip at every epoch that must continue exactly like the uninterrupted run.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <vector>

#include "cli/commands/flag_text.hpp"
#include "pneumo/callbacks.hpp"
#include "pneumo/error.hpp"

namespace pneumo {
namespace {

EpochMetrics metrics_at(int epoch, const std::string& name, double value) {
  return {epoch, {{name, value}, {"loss", 0.5}}};
}

// The learning rate in force after each epoch end, for a monitor following `values`.
std::vector<double> lr_trace(Callback& callback, const std::string& monitor,
                             const std::vector<double>& values, double lr0) {
  TrainingControl control;
  control.learning_rate = lr0;
  callback.on_train_begin(control);
  std::vector<double> lrs;
  for (size_t e = 0; e < values.size(); ++e) {
    control.clear_requests();
    callback.on_epoch_end(metrics_at(static_cast<int>(e), monitor, values[e]), control);
    lrs.push_back(control.learning_rate);
  }
  return lrs;
}

ReduceLROnPlateauOptions recipe_plateau() {
  ReduceLROnPlateauOptions options;
  options.monitor = "val_accuracy";
  options.factor = 0.3;
  options.patience = 2;
  options.min_lr = 1e-6;
  return options;  // min_delta 1e-4, cooldown 0: Keras defaults
}

TEST(ReduceLROnPlateau, RecipeTraceOnRepeatedPlateaus) {
  ReduceLROnPlateau plateau(recipe_plateau());
  // Improves twice, then plateaus for good: a reduction every `patience` = 2 epochs.
  std::vector<double> accuracy{0.80, 0.85};
  accuracy.resize(18, 0.85);
  auto lrs = lr_trace(plateau, "val_accuracy", accuracy, 1e-3);
  const std::vector<double> expected{1e-3,   1e-3,   1e-3,   3e-4,   3e-4,   9e-5,
                                     9e-5,   2.7e-5, 2.7e-5, 8.1e-6, 8.1e-6, 2.43e-6,
                                     2.43e-6, 1e-6,  1e-6,   1e-6,   1e-6,   1e-6};
  ASSERT_EQ(lrs.size(), expected.size());
  for (size_t e = 0; e < lrs.size(); ++e) {
    // The rate the optimizer runs at (a float), as Keras's float32 variable holds it.
    EXPECT_EQ(static_cast<float>(lrs[e]), static_cast<float>(expected[e])) << "after epoch " << e;
    EXPECT_GE(lrs[e], 1e-6) << "below min_lr after epoch " << e;
  }
  // Clamped at min_lr, Keras stops reducing and keeps counting.
  EXPECT_EQ(plateau.wait(), 4);
}

TEST(ReduceLROnPlateau, ImprovementResetsTheWait) {
  ReduceLROnPlateau plateau(recipe_plateau());
  // e2 no gain (wait 1), e3 gains (wait 0), e4, e5 no gain -> reduce after e5.
  auto lrs = lr_trace(plateau, "val_accuracy", {0.70, 0.75, 0.75, 0.80, 0.79, 0.80, 0.81}, 1e-3);
  EXPECT_DOUBLE_EQ(lrs[4], 1e-3);
  EXPECT_EQ(static_cast<float>(lrs[5]), 3e-4f);
  EXPECT_EQ(lrs[6], lrs[5]);
  EXPECT_DOUBLE_EQ(plateau.best(), 0.81);
}

// Each cut starts from the float rate the optimizer ran at, as Keras reads its float32 variable
// back (old_lr = float(get_value(lr)); new_lr = old_lr * factor; stored as float32 again): from
// 1e-3 by 0.1 that chain's floats are one ulp from those of the exact products.
TEST(ReduceLROnPlateau, EachCutStartsFromTheFloatRateAsKerasDoes) {
  ReduceLROnPlateauOptions options = recipe_plateau();
  options.factor = 0.1;
  options.patience = 1;
  options.min_lr = 0.0;
  ReduceLROnPlateau plateau(options);
  auto lrs = lr_trace(plateau, "val_accuracy", {0.5, 0.5, 0.5, 0.5}, 1e-3);
  float keras = 1e-3f;
  for (size_t e = 1; e < lrs.size(); ++e) {
    keras = static_cast<float>(static_cast<double>(keras) * 0.1);
    EXPECT_EQ(static_cast<float>(lrs[e]), keras) << "after epoch " << e;
  }
  EXPECT_NE(static_cast<float>(lrs[1]), static_cast<float>(1e-3 * 0.1))
      << "(self-check: the exact product's float differs here)";
}

TEST(ReduceLROnPlateau, MinDeltaDecidesWhatCountsAsBetter) {
  ReduceLROnPlateauOptions options;
  options.monitor = "val_loss";  // auto -> min
  options.factor = 0.5;
  options.patience = 2;
  options.min_delta = 0.01;
  ReduceLROnPlateau plateau(options);
  // 0.995 is not below 1.0 - 0.01 (wait 1); 0.985 is (new best); 0.98 and 0.979 are not below
  // 0.975: the second of them triggers the reduction.
  auto lrs = lr_trace(plateau, "val_loss", {1.0, 0.995, 0.985, 0.98, 0.979}, 1.0);
  EXPECT_EQ(lrs, (std::vector<double>{1.0, 1.0, 1.0, 1.0, 0.5}));
  EXPECT_DOUBLE_EQ(plateau.best(), 0.985);
}

TEST(ReduceLROnPlateau, CooldownFollowsKerasCounting) {
  ReduceLROnPlateauOptions options;
  options.monitor = "val_accuracy";
  options.factor = 0.5;
  options.patience = 1;
  options.min_delta = 0.0;
  // Without cooldown: a reduction at every epoch without gain.
  ReduceLROnPlateau eager(options);
  std::vector<double> flat(6, 0.5);
  EXPECT_EQ(lr_trace(eager, "val_accuracy", flat, 1.0),
            (std::vector<double>{1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125}));
  // Cooldown 2: Keras decrements the counter before testing it, so the epoch after a reduction is
  // skipped and the next one already counts: reductions at epochs 1, 3, 5.
  options.cooldown = 2;
  ReduceLROnPlateau cooled(options);
  EXPECT_EQ(lr_trace(cooled, "val_accuracy", flat, 1.0),
            (std::vector<double>{1.0, 0.5, 0.5, 0.25, 0.25, 0.125}));
  // So cooldown 1 rests no epoch at all (as docs/usage.md and --help say).
  options.cooldown = 1;
  ReduceLROnPlateau one(options);
  EXPECT_EQ(lr_trace(one, "val_accuracy", flat, 1.0),
            (std::vector<double>{1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125}));
  options.cooldown = 2;
  // An improvement during cooldown still becomes the new best.
  ReduceLROnPlateau cooled_again(options);
  lr_trace(cooled_again, "val_accuracy", {0.5, 0.5, 0.9}, 1.0);
  EXPECT_DOUBLE_EQ(cooled_again.best(), 0.9);
}

TEST(ReduceLROnPlateau, AutoModeAndBadOptions) {
  EXPECT_EQ(resolve_monitor_mode(MonitorMode::Auto, "val_accuracy"), MonitorMode::Max);
  EXPECT_EQ(resolve_monitor_mode(MonitorMode::Auto, "val_auc"), MonitorMode::Max);
  EXPECT_EQ(resolve_monitor_mode(MonitorMode::Auto, "val_loss"), MonitorMode::Min);
  EXPECT_EQ(resolve_monitor_mode(MonitorMode::Min, "val_accuracy"), MonitorMode::Min);
  EXPECT_THROW(parse_monitor_mode("maximum"), Error);
  ReduceLROnPlateauOptions options;
  options.factor = 1.0;
  EXPECT_THROW(ReduceLROnPlateau{options}, Error);
}

TEST(ReduceLROnPlateau, MissingMonitorIsRefusedWithTheAvailableNames) {
  ReduceLROnPlateau plateau(recipe_plateau());
  TrainingControl control;
  try {
    plateau.on_epoch_end({0, {{"val_acc", 0.9}, {"loss", 0.3}}}, control);
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("'val_accuracy'"), std::string::npos);
    EXPECT_NE(std::string(error.what()).find("loss, val_acc"), std::string::npos);
  }
}

// Runs EarlyStopping over `values` and returns the epoch it stopped after (-1: never).
int stop_epoch(EarlyStopping& stopping, const std::string& monitor,
               const std::vector<double>& values) {
  TrainingControl control;
  stopping.on_train_begin(control);
  for (size_t e = 0; e < values.size(); ++e) {
    control.clear_requests();
    stopping.on_epoch_end(metrics_at(static_cast<int>(e), monitor, values[e]), control);
    if (control.stop) return static_cast<int>(e);
  }
  return -1;
}

TEST(EarlyStopping, StopsAfterPatienceAndKnowsTheBestEpoch) {
  EarlyStoppingOptions options;
  options.monitor = "val_loss";
  options.patience = 2;
  EarlyStopping stopping(options);
  EXPECT_EQ(stop_epoch(stopping, "val_loss", {1.0, 0.8, 0.9, 0.85, 0.7}), 3);
  EXPECT_EQ(stopping.best_epoch(), 1);
  EXPECT_DOUBLE_EQ(stopping.best(), 0.8);
}

TEST(EarlyStopping, NeverStopsAtTheFirstEpochAndMinDeltaCounts) {
  EarlyStoppingOptions options;
  options.monitor = "val_accuracy";
  options.patience = 0;
  EarlyStopping impatient(options);
  // NaN never improves; patience 0 would stop at once, but not at epoch 0.
  EXPECT_EQ(stop_epoch(impatient, "val_accuracy", {std::nan(""), std::nan(""), 0.5}), 1);
  EarlyStopping impatient_again(options);
  EXPECT_EQ(stop_epoch(impatient_again, "val_accuracy", {0.5, 0.6, 0.6}), 2);

  options.patience = 1;
  options.min_delta = -0.05;  // sign ignored, as in Keras
  EarlyStopping strict(options);
  // 0.64 is not 0.05 better than 0.6: stop after epoch 1.
  EXPECT_EQ(stop_epoch(strict, "val_accuracy", {0.6, 0.64, 0.9}), 1);
  EXPECT_EQ(strict.best_epoch(), 0);
}

TEST(EarlyStopping, BaselineKeepsTheWaitRunning) {
  EarlyStoppingOptions options;
  options.monitor = "val_loss";
  options.patience = 2;
  options.baseline = 0.5;
  EarlyStopping stopping(options);
  // Each epoch improves on the best but never beats the baseline, so wait keeps growing; the
  // first epoch without improvement then stops at once.
  EXPECT_EQ(stop_epoch(stopping, "val_loss", {0.9, 0.8, 0.7, 0.75}), 3);
  EXPECT_EQ(stopping.best_epoch(), 2);
}

TEST(EarlyStopping, WarmUpEpochsAreIgnored) {
  EarlyStoppingOptions options;
  options.monitor = "val_loss";
  options.patience = 1;
  options.start_from_epoch = 2;
  EarlyStopping stopping(options);
  // Epochs 0 and 1 would have stopped training; they are not watched (and need no metric).
  TrainingControl control;
  stopping.on_train_begin(control);
  stopping.on_epoch_end({0, {}}, control);
  stopping.on_epoch_end({1, {}}, control);
  EXPECT_FALSE(control.stop);
  EXPECT_EQ(stopping.best_epoch(), -1);
  stopping.on_epoch_end(metrics_at(2, "val_loss", 1.0), control);
  stopping.on_epoch_end(metrics_at(3, "val_loss", 1.0), control);
  EXPECT_TRUE(control.stop);
  EXPECT_EQ(stopping.stopped_epoch(), 3);
}

TEST(ModelCheckpointPolicy, BestOnStrictImprovementLastEveryEpoch) {
  ModelCheckpointOptions options;
  options.monitor = "val_auc";
  ModelCheckpointPolicy policy(options);
  std::vector<double> auc{0.90, 0.93, 0.93, 0.95, 0.94};
  std::vector<bool> best, last;
  TrainingControl control;
  for (size_t e = 0; e < auc.size(); ++e) {
    control.clear_requests();
    policy.on_epoch_end(metrics_at(static_cast<int>(e), "val_auc", auc[e]), control);
    best.push_back(control.save_best_checkpoint);
    last.push_back(control.save_last_checkpoint);
  }
  EXPECT_EQ(best, (std::vector<bool>{true, true, false, true, false}));
  EXPECT_EQ(last, std::vector<bool>(5, true));
  EXPECT_EQ(policy.best_epoch(), 3);
}

// A finished run extended with more --epochs: a step or exponential schedule does not depend on
// the run's length and continues; a cosine one spans it, so it is refused, saying why.
TEST(LearningRateSchedule, MoreEpochsOnResumeOnlyForSchedulesThatDoNotSpanTheRun) {
  using Kind = LearningRateScheduleOptions::Kind;
  for (Kind kind : {Kind::Step, Kind::Exponential, Kind::Cosine}) {
    LearningRateScheduleOptions saved, longer;
    saved.kind = longer.kind = kind;
    saved.total_epochs = 2;
    longer.total_epochs = 3;
    LearningRateSchedule resumed(longer);
    const nlohmann::json state = LearningRateSchedule(saved).state();
    if (kind != Kind::Cosine) {
      EXPECT_NO_THROW(resumed.load_state(state)) << to_string(kind);
      continue;
    }
    // More or fewer: the message says so either way (it said "more" for fewer too).
    for (const int epochs : {3, 1}) {
      LearningRateScheduleOptions other = saved;
      other.total_epochs = epochs;
      try {
        LearningRateSchedule(other).load_state(state);
        ADD_FAILURE() << "a cosine schedule given " << epochs << " epochs instead of 2 was accepted";
      } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("cannot change them (more or fewer)"),
                  std::string::npos)
            << error.what();
      }
    }
  }
  LearningRateScheduleOptions step, other_factor;
  step.kind = other_factor.kind = Kind::Step;
  other_factor.factor = step.factor / 2;
  EXPECT_THROW(LearningRateSchedule(other_factor).load_state(LearningRateSchedule(step).state()),
               Error);
  // A flag given again names itself (two JSON dumps said it before).
  LearningRateScheduleOptions faster = step;
  faster.initial_lr = step.initial_lr * 2;
  try {
    LearningRateSchedule(faster).load_state(LearningRateSchedule(step).state());
    ADD_FAILURE() << "another --lr under a schedule was accepted";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("--lr " + nlohmann::json(faster.initial_lr).dump() +
                                             " (the checkpoint's: " +
                                             nlohmann::json(step.initial_lr).dump() + ")"),
              std::string::npos)
        << error.what();
  }
}

TEST(LearningRateSchedule, StepExponentialCosineValues) {
  using Kind = LearningRateScheduleOptions::Kind;
  LearningRateScheduleOptions step;
  step.kind = Kind::Step;
  step.initial_lr = 1e-3;
  step.factor = 0.5;
  step.step_epochs = 3;
  LearningRateSchedule step_schedule(step);
  EXPECT_DOUBLE_EQ(step_schedule.learning_rate_at(0), 1e-3);
  EXPECT_DOUBLE_EQ(step_schedule.learning_rate_at(2), 1e-3);
  EXPECT_DOUBLE_EQ(step_schedule.learning_rate_at(3), 5e-4);
  EXPECT_DOUBLE_EQ(step_schedule.learning_rate_at(6), 2.5e-4);

  LearningRateScheduleOptions exponential;
  exponential.kind = Kind::Exponential;
  exponential.initial_lr = 1e-3;
  exponential.gamma = 0.9;
  LearningRateSchedule exponential_schedule(exponential);
  EXPECT_DOUBLE_EQ(exponential_schedule.learning_rate_at(0), 1e-3);
  EXPECT_NEAR(exponential_schedule.learning_rate_at(2), 8.1e-4, 1e-15);

  // --min-lr is a floor for every schedule, not only the cosine's.
  step.floor_lr = 3e-4;
  exponential.floor_lr = 8.5e-4;
  EXPECT_DOUBLE_EQ(LearningRateSchedule(step).learning_rate_at(3), 5e-4);
  EXPECT_DOUBLE_EQ(LearningRateSchedule(step).learning_rate_at(6), 3e-4);
  EXPECT_DOUBLE_EQ(LearningRateSchedule(exponential).learning_rate_at(1), 9e-4);
  EXPECT_DOUBLE_EQ(LearningRateSchedule(exponential).learning_rate_at(2), 8.5e-4);
  step.floor_lr = 2e-3;  // above the starting rate
  EXPECT_THROW(LearningRateSchedule{step}, Error);

  LearningRateScheduleOptions cosine;
  cosine.kind = Kind::Cosine;
  cosine.initial_lr = 1e-3;
  cosine.floor_lr = 1e-5;
  cosine.total_epochs = 4;
  LearningRateSchedule cosine_schedule(cosine);
  EXPECT_DOUBLE_EQ(cosine_schedule.learning_rate_at(0), 1e-3);
  EXPECT_NEAR(cosine_schedule.learning_rate_at(1), 1e-5 + 9.9e-4 * (1 + std::sqrt(0.5)) / 2, 1e-15);
  EXPECT_NEAR(cosine_schedule.learning_rate_at(2), 5.05e-4, 1e-15);
  EXPECT_DOUBLE_EQ(cosine_schedule.learning_rate_at(4), 1e-5);
  EXPECT_DOUBLE_EQ(cosine_schedule.learning_rate_at(10), 1e-5);

  TrainingControl control;
  cosine_schedule.on_epoch_begin(2, control);
  EXPECT_NEAR(control.learning_rate, 5.05e-4, 1e-15);
  EXPECT_THROW(cli::parse_schedule_kind("linear"), Error);
}

TEST(CallbackList, RefusesDuplicatesAndTwoLearningRateControllers) {
  CallbackList list;
  list.add(std::make_unique<ReduceLROnPlateau>(recipe_plateau()));
  EXPECT_THROW(list.add(std::make_unique<ReduceLROnPlateau>(recipe_plateau())), Error);
  EXPECT_THROW(list.add(std::make_unique<LearningRateSchedule>(LearningRateScheduleOptions{})),
               Error);
  list.add(std::make_unique<EarlyStopping>(EarlyStoppingOptions{}));
  EXPECT_EQ(list.size(), 2u);
  EXPECT_NE(list.find("early_stopping"), nullptr);
  EXPECT_EQ(list.find("lr_schedule"), nullptr);
}

// The whole recipe-like callback set, so the round trip covers every state field.
CallbackList make_callbacks() {
  CallbackList list;
  auto plateau = recipe_plateau();
  plateau.cooldown = 1;
  list.add(std::make_unique<ReduceLROnPlateau>(plateau));
  EarlyStoppingOptions stopping;
  stopping.monitor = "val_loss";
  stopping.patience = 4;
  stopping.min_delta = 0.001;
  list.add(std::make_unique<EarlyStopping>(stopping));
  ModelCheckpointOptions checkpoint;
  checkpoint.monitor = "val_accuracy";
  list.add(std::make_unique<ModelCheckpointPolicy>(checkpoint));
  return list;
}

struct EpochOutcome {
  double learning_rate;
  bool stop, best, last;
  bool operator==(const EpochOutcome& o) const {
    return learning_rate == o.learning_rate && stop == o.stop && best == o.best && last == o.last;
  }
};

TEST(CallbackList, StateRoundTripAtEveryEpochContinuesIdentically) {
  const std::vector<double> accuracy{0.70, 0.78, 0.78, 0.80, 0.80, 0.80, 0.81, 0.81,
                                     0.81, 0.81, 0.81, 0.81, 0.81, 0.81};
  const std::vector<double> loss{0.60, 0.50, 0.52, 0.45, 0.46, 0.47, 0.449, 0.44,
                                 0.445, 0.446, 0.447, 0.448, 0.449, 0.45};
  auto run_epochs = [&](CallbackList& list, TrainingControl& control, size_t from, size_t to,
                        std::vector<EpochOutcome>& outcomes) {
    for (size_t e = from; e < to && !control.stop; ++e) {
      list.on_epoch_begin(static_cast<int>(e), control);
      list.on_epoch_end({static_cast<int>(e), {{"val_accuracy", accuracy[e]}, {"val_loss", loss[e]}}},
                        control);
      outcomes.push_back({control.learning_rate, control.stop, control.save_best_checkpoint,
                          control.save_last_checkpoint});
    }
  };

  std::vector<EpochOutcome> reference;
  {
    CallbackList list = make_callbacks();
    TrainingControl control;
    list.on_train_begin(control);
    run_epochs(list, control, 0, accuracy.size(), reference);
  }
  ASSERT_TRUE(reference.back().stop) << "the script should end in early stopping";
  ASSERT_LT(reference.back().learning_rate, 1e-3) << "the script should reduce the rate";

  for (size_t cut = 0; cut <= reference.size(); ++cut) {
    std::vector<EpochOutcome> outcomes;
    std::string saved;
    double saved_lr = 0;
    bool stopped = false;
    {
      CallbackList list = make_callbacks();
      TrainingControl control;
      list.on_train_begin(control);
      run_epochs(list, control, 0, cut, outcomes);
      saved = list.state().dump();  // through text, as in a checkpoint
      saved_lr = control.learning_rate;
      stopped = control.stop;
    }
    if (!stopped) {
      CallbackList list = make_callbacks();
      TrainingControl control;
      list.on_train_begin(control);
      list.load_state(nlohmann::json::parse(saved));
      control.learning_rate = saved_lr;
      run_epochs(list, control, cut, accuracy.size(), outcomes);
    }
    ASSERT_EQ(outcomes.size(), reference.size()) << "cut after " << cut << " epochs";
    for (size_t e = 0; e < reference.size(); ++e)
      EXPECT_TRUE(outcomes[e] == reference[e]) << "epoch " << e << " after a cut at " << cut;
  }
}

TEST(CallbackList, StateOfAFreshListHoldsInfinitiesAndRefusesOtherMonitors) {
  CallbackList list = make_callbacks();
  auto state = nlohmann::json::parse(list.state().dump());
  EXPECT_EQ(state["reduce_lr_on_plateau"]["best"], "-inf");
  EXPECT_EQ(state["early_stopping"]["best"], "inf");
  EXPECT_NO_THROW(list.load_state(state));

  auto other_monitor = state;
  other_monitor["early_stopping"]["monitor"] = "val_accuracy";
  EXPECT_THROW(list.load_state(other_monitor), Error);
  auto missing = state;
  missing.erase("model_checkpoint");
  EXPECT_THROW(list.load_state(missing), Error);
  auto bad_wait = state;
  bad_wait["reduce_lr_on_plateau"]["wait"] = "two";
  EXPECT_THROW(list.load_state(bad_wait), Error);
  // A hostile value is quoted in part, so the message stays one short line.
  auto huge_wait = state;
  huge_wait["reduce_lr_on_plateau"]["wait"] = std::string(100000, '7');
  try {
    list.load_state(huge_wait);
    ADD_FAILURE() << "a string wait was accepted";
  } catch (const Error& e) {
    EXPECT_LT(std::string(e.what()).size(), 400u) << e.what();
    EXPECT_NE(std::string(e.what()).find("(100002 bytes)"), std::string::npos) << e.what();
  }

  EXPECT_TRUE(std::isinf(double_from_json(double_to_json(-INFINITY), "x")));
  EXPECT_TRUE(std::isnan(double_from_json(double_to_json(NAN), "x")));
  EXPECT_EQ(double_from_json(double_to_json(0.1 + 0.2), "x"), 0.1 + 0.2);
  EXPECT_THROW(double_from_json("infinity", "x"), Error);
}

}  // namespace
}  // namespace pneumo
