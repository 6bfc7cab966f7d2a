// What the user sees while training: a live progress line during each epoch (redrawn in place
// on a terminal, plain periodic lines otherwise), one summary line per epoch, and the per-epoch
// history written to the run directory as CSV and JSONL.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "pneumo/progress_line.hpp"

namespace pneumo {

// The state of one epoch in progress. epoch is 0-based (shown 1-based).
struct ProgressSnapshot {
  int epoch = 0;
  int total_epochs = 1;
  int64_t step = 0;          // steps finished in this epoch
  int64_t total_steps = 0;
  int64_t images = 0;        // images finished in this epoch
  // Where this process took the epoch up (a run resumed inside it): the rate and the ETA count
  // only the steps and images done since, in elapsed_seconds.
  int64_t first_step = 0;
  int64_t first_images = 0;
  double elapsed_seconds = 0;
  double running_loss = 0;   // mean over the epoch so far
  double running_accuracy = 0;
};
// "epoch 3/12  step 120/163  74%  512.3 img/s  loss 0.3124  acc 0.8650  ETA 0:07"
std::string format_progress_line(const ProgressSnapshot& snapshot);

// Reports one epoch at a time. The clock returns seconds (monotonic); tests pass a fake one.
class ProgressReporter {
 public:
  using Clock = ProgressClock;
  static double steady_seconds() { return pneumo::steady_seconds(); }
  ProgressReporter(std::ostream& out, ProgressOptions options, Clock clock = steady_seconds);

  // first_step, first_images: what a resumed run had done of the epoch before this process.
  void begin_epoch(int epoch, int total_epochs, int64_t total_steps, int64_t first_step = 0,
                   int64_t first_images = 0);
  // After each training step: steps and images done so far in this epoch, running means.
  void update(int64_t step, int64_t images, double running_loss, double running_accuracy);
  // Live mode: erases the progress line so the epoch summary takes its place.
  void end_epoch();
  double elapsed_seconds() const;  // since begin_epoch

 private:
  ProgressLine line_;
  Clock clock_;
  ProgressSnapshot snapshot_;
  double epoch_start_ = 0;
};

// One finished epoch: its metrics (EpochMetrics::values: loss, accuracy, val_loss, val_accuracy,
// val_auc, ...), the learning rate it trained with (rate_as_run) and its wall time: `seconds` from the epoch's
// first step to its checkpoints captured and queued for writing (a background thread writes
// them while the next epoch runs), of which `train_seconds` the training steps and
// `val_seconds` the validation passes (NaN: not recorded, as in histories written before these
// columns existed). epoch is 0-based.
struct EpochRecord {
  int epoch = 0;
  double learning_rate = 0;
  double seconds = 0;
  double train_seconds = std::numeric_limits<double>::quiet_NaN();
  double val_seconds = std::numeric_limits<double>::quiet_NaN();
  std::map<std::string, double> values;
};

// "epoch 3/12  train loss 0.3124 acc 0.8650 | val loss 0.2800 acc 0.9012 auc 0.9550 sens 0.9300
//  spec 0.8800 | lr 3.00e-04 | 42.1 s (train 38.0, val 3.9)": train values, then val_ values,
// known names first in a fixed order, others alphabetically; NaN prints as n/a; the split of the
// time only when it was recorded.
std::string format_epoch_summary(const EpochRecord& record, int total_epochs);

// The learning rate as a history records it: the rate the optimizer ran at (a float32, as Keras
// keeps it) named by the shortest decimal that reads back as that float, as Keras's CSVLogger
// writes it: 0.0003 for a rate cut by 0.3 from 0.001, not the double of the float product
// (0.0003000000142492354) nor the exact double product (0.00030000000000000003).
double rate_as_run(double learning_rate);

// Seconds as pneumo prints them: two decimals below 10 s (a GPU's validation pass of 0.04 s is
// not "0.0"), one above.
std::string seconds_text(double seconds);

// Keeps run_dir/history.csv and run_dir/history.jsonl equal to the records so far. Each append
// rewrites both files atomically (they are small), so a crash never leaves a torn row and a
// metric that first appears late still gets its own CSV column.
//   CSV: header epoch,learning_rate,seconds,train_seconds,val_seconds,<metric names sorted>;
//        empty cell = metric absent,
//        "nan" = not a number; epoch 0-based, as Keras' CSVLogger.
//   JSONL: one object per epoch with the same fields; NaN as null.
class EpochLogWriter {
 public:
  // first_epoch 0 starts a new history. On resume, pass the checkpoint's epoch count: records
  // of epochs before it are read back from history.jsonl (whose later rows, written after the
  // checkpoint, are dropped) and new epochs are appended after them.
  explicit EpochLogWriter(std::string run_directory, int first_epoch = 0);
  // The same, with history.jsonl's rows already read (read_history_jsonl) by the caller.
  EpochLogWriter(std::string run_directory, int first_epoch, std::vector<EpochRecord> earlier);
  void append(const EpochRecord& record);  // refuses an epoch out of sequence
  const std::vector<EpochRecord>& records() const { return records_; }
  std::string csv_path() const { return run_directory_ + "/history.csv"; }
  std::string jsonl_path() const { return run_directory_ + "/history.jsonl"; }

 private:
  void rewrite() const;
  std::string run_directory_;
  std::vector<EpochRecord> records_;
};

// Reads a history.jsonl written by EpochLogWriter; throws pneumo::Error naming the file and line.
std::vector<EpochRecord> read_history_jsonl(const std::string& path);
// Reads a history.csv written by EpochLogWriter (its header names the columns; an empty metric
// cell is an absent metric); throws pneumo::Error naming the file and line.
std::vector<EpochRecord> read_history_csv(const std::string& path);
std::string history_to_csv(const std::vector<EpochRecord>& records);
std::string history_to_jsonl(const std::vector<EpochRecord>& records);

}  // namespace pneumo
