// `pneumo train`: the seed recipe end to end. Opens the data (a cache, or an image tree prepared
// once), carves the validation split, trains with RMSprop and the callbacks, validates every
// epoch, and writes a run directory: config.json, history.csv, history.jsonl, checkpoints/{last,best}
// .safetensors, model.safetensors (final weights + the threshold tuned on val), report.md.

#include <errno.h>  // program_invocation_name (glibc)

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <random>
#include <filesystem>
#include <functional>
#include <iostream>
#include <optional>
#include <set>
#include <sstream>

#include "cli/commands/commands.hpp"
#include "cli/commands/flag_text.hpp"
#include "cli/commands/fault_injection.hpp"
#include "cli/commands/guards.hpp"
#include "cli/commands/run_folder.hpp"
#include "core/atomic_file.hpp"
#include "core/checksum.hpp"
#include "core/json_text.hpp"
#include "core/ordered_worker.hpp"
#include "pneumo/backend.hpp"
#include "pneumo/callbacks.hpp"
#include "pneumo/checkpoint.hpp"
#include "pneumo/data.hpp"
#include "pneumo/distributed.hpp"
#include "pneumo/error.hpp"
#include "pneumo/metrics.hpp"
#include "pneumo/model.hpp"
#include "pneumo/model_checkpoint.hpp"
#include "pneumo/progress.hpp"
#include "pneumo/report.hpp"
#include "pneumo/sampling.hpp"
#include "pneumo/stress.hpp"
#include "pneumo/trainer.hpp"

namespace fs = std::filesystem;

namespace pneumo::cli {

namespace {

// Two --val-split values that carve alike ("0.150" is "0.15"); a value that no longer parses
// differs as text.
bool same_val_split(const std::string& a, const std::string& b) {
  try {
    const ValidationOptions x = parse_val_split(a), y = parse_val_split(b);
    return x.source == y.source && x.fraction == y.fraction;
  } catch (const Error&) {
    return a == b;
  }
}

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// A checkpoint of a run's last epoch (its --epochs, or the one early stopping ended it with) whose
// run stopped (a signal during the last validation) before it wrote model.safetensors, or wrote
// it for fewer epochs: resuming it only finishes.
bool stopped_before_its_model(const std::string& checkpoint_path,
                              const CheckpointMetadata& resumed) {
  if (resumed.epoch_step != 0) return false;
  const std::string source = resumed_run_dir(checkpoint_path);
  if (source.empty()) return false;
  const fs::path model = fs::path(source) / "model.safetensors";
  std::error_code error;
  if (!fs::exists(model, error)) return true;
  if (read_checkpoint_metadata(model.string()).epoch < resumed.epoch) return true;
  // The model written, its scores or report not (a full disk, a folder in the way): finishing
  // writes them again from the same weights, where "give a larger --epochs" would change them.
  for (const char* file : {"metrics_val.json", "report.md"})
    if (!fs::is_regular_file(fs::path(source) / file, error)) return true;
  return false;
}

// The epochs 0 .. first_epoch - 1 that rows has no row of, in order.
std::vector<int> epochs_without_a_row(const std::vector<EpochRecord>& rows, int first_epoch) {
  std::set<int> present;
  for (const EpochRecord& row : rows) present.insert(row.epoch);
  std::vector<int> missing;
  for (int epoch = 0; epoch < first_epoch; ++epoch)
    if (!present.count(epoch)) missing.push_back(epoch);
  return missing;
}

std::string comma_list(const std::vector<int>& numbers) {
  std::string text;
  for (int number : numbers) text += (text.empty() ? "" : ", ") + std::to_string(number);
  return text;
}

// The history rows of the epochs a resume keeps (0 .. first_epoch - 1): history.jsonl's (a damaged
// one refused, naming source_dir's, the run the rows come from), and any it lacks that
// history.csv still holds (history.csv is rewritten first, so a run stopped between the two
// writes, or a removed history.jsonl, leaves rows only there; the rewrite after the resume would
// lose them). A history.csv that cannot be read lends none.
std::vector<EpochRecord> resumed_history_rows(const std::string& run_dir, int first_epoch,
                                              const std::string& source_dir) {
  const fs::path jsonl = fs::path(run_dir) / "history.jsonl", csv = fs::path(run_dir) / "history.csv";
  std::error_code error;
  std::vector<EpochRecord> rows;
  if (fs::exists(jsonl, error)) {
    try {
      rows = read_history_jsonl(jsonl.string());
    } catch (const Error& e) {
      // Into a new --out the file is a copy of the resumed run's, copied again by the next try.
      const std::string mend = (fs::path(source_dir) / "history.jsonl").string();
      throw Error(std::string(e.what()) +
                  (mend == jsonl.string() ? "" : " (a copy of " + mend + ")") +
                  "; the run is left as it was: mend that line in " + mend + ", or move it away to "
                  "resume with the rows of history.csv");
    }
  }
  const std::vector<int> missing = epochs_without_a_row(rows, first_epoch);
  if (missing.empty() || !fs::is_regular_file(csv, error)) return rows;
  std::vector<EpochRecord> from_csv;
  try {
    from_csv = read_history_csv(csv.string());
  } catch (const Error& e) {
    std::cerr << "note: the rows history.jsonl lacks are not read from history.csv either: "
              << e.what() << "\n";
    return rows;
  }
  std::set<int> wanted(missing.begin(), missing.end());
  std::vector<int> taken;
  for (EpochRecord& row : from_csv)
    if (wanted.erase(row.epoch)) {
      taken.push_back(row.epoch);
      rows.push_back(std::move(row));
    }
  if (taken.empty()) return rows;
  std::sort(rows.begin(), rows.end(),
            [](const EpochRecord& a, const EpochRecord& b) { return a.epoch < b.epoch; });
  std::sort(taken.begin(), taken.end());
  std::cerr << "note: " << jsonl.string() << " lacks the row(s) of epoch " << comma_list(taken)
            << " (counted from 0); taken from " << csv.string() << "\n";
  return rows;
}

ImageSet upload(const Split& split, Device device) {
  return ImageSet::upload(device, split.images.data(), split.count(), split.size,
                          split.labels.data());
}

CallbackList make_callbacks(const TrainOptions& o) {
  CallbackList callbacks;
  if (const auto kind = parse_schedule_kind(o.schedule)) {
    LearningRateScheduleOptions schedule;
    schedule.kind = *kind;
    schedule.initial_lr = o.learning_rate;
    schedule.total_epochs = o.epochs;
    schedule.floor_lr = o.min_lr;
    callbacks.add(std::make_unique<LearningRateSchedule>(schedule));
  } else {
    ReduceLROnPlateauOptions plateau;
    plateau.monitor = o.plateau_monitor;
    plateau.factor = o.plateau_factor;
    plateau.patience = o.plateau_patience;
    plateau.min_delta = o.plateau_min_delta;
    plateau.cooldown = o.plateau_cooldown;
    plateau.min_lr = o.min_lr;
    callbacks.add(std::make_unique<ReduceLROnPlateau>(plateau));
  }
  if (o.early_stopping_patience > 0) {
    EarlyStoppingOptions stopping;
    stopping.monitor = o.early_stopping_monitor;
    stopping.patience = o.early_stopping_patience;
    callbacks.add(std::make_unique<EarlyStopping>(stopping));
  }
  ModelCheckpointOptions checkpoint;
  checkpoint.monitor = o.checkpoint_monitor;
  callbacks.add(std::make_unique<ModelCheckpointPolicy>(checkpoint));
  return callbacks;
}

// One `pneumo train` run. The constructor does the set-up in the order a user sees it (run folder,
// data, backend, model, optimizer, callbacks, then the checkpoint being resumed); run() trains epoch
// by epoch, stopping early on a callback's request or a signal, and finishes with the threshold
// tuned on validation, model.safetensors and the report.
//
// Launched as several ranks (mpirun / srun), every rank runs all of this on its shard of each
// batch; rank 0 alone writes the run folder, prints and reports, and every decision that ends or
// changes the run (a signal, a callback's stop) is taken by all ranks at the same point.
class TrainingRun {
 public:
  // `group` (the ranks; one process by default) gets the run's gradient transport.
  // `held` is set to the largest step the arrays are sized for (size_steps)
  // once the data is read: out-of-memory advice names it, also when the constructor throws.
  TrainingRun(const TrainOptions& options, std::unique_ptr<Communicator>& group, BatchFlag& held);
  int run();  // the exit status

 private:
  // The constructor's steps, in order. open_data returns the images' side in pixels.
  int open_data();
  void set_up_backend();
  void set_up_model(int input_size);
  void set_up_trainer();
  void set_up_image_sets();  // the balance, the uploaded splits; refuses a --batch that cannot go
  void check_batchnorm_values(int64_t images) const;  // of an epoch of `images`
  // The most images a training step and a validation pass's chunk hold (training_step_,
  // validation_step_): --batch (--val-batch) or the epoch's images (the validation images) when
  // fewer. The model and the trainer are sized for these, not for a --batch larger than the data
  // (--batch 4096 on 102 images held arrays for 4096: 5.5 GB at --size 32). Once the data is read.
  void size_steps();
  BatchFlag held_step() const;  // the larger of the two, and the flag that sets it
  // Epoch `epoch`'s image order (indices into the training split), without its last, partial
  // batch under --drop-last (which refuses an epoch with no whole batch); and its step count.
  std::vector<int32_t> epoch_order(int epoch) const;
  int64_t epoch_steps(int epoch) const;

  void resume(const std::string& checkpoint_path);
  // resume()'s checks and messages: a checkpoint of another optimizer, update, data or a
  // --restore-best end refused; a note when batch-norm's shares change; a position inside an
  // epoch checked against this run's order; where the run goes on (`replaced_lr`: the rate an
  // --lr given again replaced).
  void check_resumable(const std::string& checkpoint_path, const CheckpointMetadata& resumed) const;
  void note_other_batchnorm_shares(const std::string& checkpoint_path,
                                   const CheckpointMetadata& resumed) const;
  void check_position_inside_epoch(const std::string& checkpoint_path,
                                   const CheckpointMetadata& resumed) const;
  void say_where_resumed(const std::string& checkpoint_path, std::optional<double> replaced_lr) const;
  // Each rank's sums where the interrupted epoch stood, when as many ranks resume it; else none.
  std::vector<double> resumed_rank_sums() const;
  // --restore-best when resuming: the resumed run's best checkpoint, read back (every rank).
  void load_best_weights(const std::string& checkpoint_path, const CheckpointMetadata& resumed);
  void restore_best_weights();  // at the end of training, --restore-best
  void refuse_overwriting_later_work(const std::string& checkpoint_path,
                                     const CheckpointMetadata& resumed);
  // Trains and validates epoch `epoch`. Returns an exit status when the run must end now (a
  // signal arrived), else nothing; sets `stopped` when a callback ended the training.
  std::optional<int> train_and_validate(int epoch, bool& stopped);
  EpochStats train_one_epoch(int epoch);
  EpochMetrics validate(int epoch, const EpochStats& train_stats);
  // `record` holds the epoch's training and validation seconds; its total is taken once the
  // checkpoints are written, from `epoch_start`.
  std::optional<int> end_epoch(const EpochMetrics& metrics, EpochRecord record,
                               Clock::time_point epoch_start, bool& stopped);
  int finish();
  // The run's state at an epoch end, or inside epoch `epochs_done` when `partial` says how far
  // it got, checked finite (rank 0; null on the others, which write nothing).
  std::shared_ptr<const CheckpointData> snapshot(int epochs_done,
                                                 const EpochStats* partial = nullptr);
  // Queues `state` to be written to run_dir/name, after every file queued before it.
  void write(const std::string& name, std::shared_ptr<const CheckpointData> state);
  // Every write goes through these two: a write that failed (a full disk) stops the run with
  // write_failed's error, naming the file and the checkpoint that survives.
  void post_file(std::function<void()> task);
  void drain_files();
  Error write_failed(const Error& failure);
  // What a user needs to know when the run stops early: which checkpoint survives (after the
  // writes queued so far).
  std::string last_good_checkpoint();
  int interrupted(int epochs_done, const EpochStats* partial);
  // After a resume, a note naming the epochs before `first_epoch` that the history lacks (a
  // process killed between a checkpoint and its history row, a history.jsonl removed): the run
  // goes on, and its history says nothing of them.
  void note_missing_history(int first_epoch) const;

  bool writer() const { return group_->rank() == 0; }
  // A signal came (on any rank) once every epoch of --epochs was trained and checkpointed: the
  // run stops before writing its model, which a resume writes. Not when a callback ended the run
  // early (a resume would train on): that run finishes.
  bool stops_before_the_model() {
    return epochs_done_ == options_.epochs && group_->any(stop_on_signal_->stop().load());
  }
  // checkpoints/last.safetensors once written; before that, a resumed run's checkpoint ("" for a
  // new run): a resume into a new --out writes its first checkpoint only at an epoch's end.
  std::string latest_checkpoint() const;

  const Clock::time_point started_ = Clock::now();  // the run's wall clock starts here
  const TrainOptions& options_;
  std::unique_ptr<Communicator>& group_;
  RunDirLock run_lock_;  // rank 0's, taken by start_run_dir (declared before run_dir_)
  const std::string run_dir_;
  // The runs/<date>-<time> folder rank 0 claimed (no --out), removed again when the run ends
  // before its first checkpoint (a refused resume, data that cannot be read, a failure in the
  // first epoch): no later run would reuse its name. Declared after run_lock_: removed while the
  // lock is held.
  class ClaimedRunDir {
   public:
    explicit ClaimedRunDir(std::string dir) : dir_(std::move(dir)) {}
    ClaimedRunDir(const ClaimedRunDir&) = delete;
    ClaimedRunDir& operator=(const ClaimedRunDir&) = delete;
    ~ClaimedRunDir() {
      if (!dir_.empty()) remove_unused_run_dir(dir_);
    }

   private:
    std::string dir_;
  } claimed_run_dir_{options_.out.empty() && writer() ? run_dir_ : std::string()};
  const std::string last_path_;
  TrainValSplits splits_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Trainer> trainer_;
  BalanceMode balance_ = BalanceMode::Oversample;
  int training_step_ = 0, validation_step_ = 0;  // size_steps
  ImageSet train_set_, val_set_;
  CallbackList callbacks_;
  TrainingControl control_;
  int first_epoch_ = 0;
  // What this process said about the run beside its epoch lines (notes on flags and losses,
  // learning-rate cuts, the stop), for report.md as well as the terminal.
  std::vector<std::string> said_;
  // A resumed run that early stopping had ended (why, as it said then): nothing left to train.
  std::optional<std::string> ended_early_;
  int epochs_done_ = 0;
  // Set once the weights were restored from an earlier epoch (--restore-best): model.safetensors
  // records whose weights it holds.
  std::optional<int> weights_epoch_;
  int64_t steps_done_ = 0;
  double train_seconds_ = 0, val_seconds_ = 0;  // this process's epochs, for the run's last line
  CheckpointMetadata resumed_;   // where an interrupted epoch stood (epoch_step 0: at its start)
  std::string resumed_fingerprint_;  // tensors_fingerprint of the resumed file (several ranks)
  std::string run_id_;  // the resumed checkpoint's run_id ("" for a new run or an older file)
  CheckpointMetadata metadata_;  // what every checkpoint of this run records
  std::optional<Fault> fault_;
  // --restore-best: the weights of checkpoints/best.safetensors (the best --checkpoint-monitor
  // epoch so far, best_weights_epoch_), kept on every rank; a resumed run reads them back.
  std::shared_ptr<const CheckpointData> best_weights_;
  int best_weights_epoch_ = 0;
  // The last validation pass's logits, of the weights after `last_val_epochs_` epochs: finish()
  // reuses them when the model it writes holds those very weights.
  std::vector<float> last_val_logits_;
  int last_val_epochs_ = -1;
  std::optional<EpochLogWriter> log_;
  // A resumed run's history.jsonl as read before anything was written (rank 0): run() keeps its
  // rows of the epochs already done.
  std::optional<std::vector<EpochRecord>> resumed_history_;
  std::optional<ProgressReporter> progress_;
  std::optional<StopOnSignal> stop_on_signal_;
  bool graph_notice_shown_ = false;  // --cuda-graph: why steps run op by op, said once
  // Checkpoints and history rows are written here, in order, off the training loop (declared
  // last: destroyed first, after finishing what was queued, while log_ still exists).
  OrderedWorker files_;
};

// The CRC-32 of a checkpoint's tensors, names and values in the file's order: ranks that resumed
// different copies of a run's checkpoint (node-local files) are told apart by it.
std::string tensors_fingerprint(const CheckpointData& data) {
  uint32_t crc = 0;
  for (const NamedTensor& tensor : data.tensors) {
    crc = crc32(tensor.name.data(), tensor.name.size(), crc);
    crc = crc32(tensor.values.data(), tensor.values.size() * sizeof(float), crc);
  }
  return hex32(crc);
}

// The program as the user typed it (argv[0]: build/pneumo, or pneumo from the PATH), so that the
// resume line an interrupted run prints can be pasted back as it is.
std::string program_as_typed() {
  const std::string typed = program_invocation_name ? program_invocation_name : "";
  return typed.find('/') == std::string::npos ? std::string("pneumo") : typed;
}

// One word for a POSIX shell: as it is when it holds only characters no shell reads specially,
// otherwise in single quotes (a path with a space or a quote).
std::string shell_word(const std::string& text) {
  const bool plain = !text.empty() && text.find_first_not_of(
                                          "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                          "0123456789_-./:@%+=,") == std::string::npos;
  if (plain) return text;
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

// A new run's identity: 64 random bits in hex.
std::string new_run_id() {
  std::random_device device;
  const uint64_t bits = (static_cast<uint64_t>(device()) << 32) ^ device();
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(bits));
  return text;
}

// Why `resumed` is of another run than `latest` (a run's last checkpoint), in words, or "": their
// run_id, or for checkpoints older than run_id their seed and carved validation split.
std::string other_runs_checkpoint(const CheckpointMetadata& latest,
                                  const CheckpointMetadata& resumed) {
  const auto extra = [](const CheckpointMetadata& m, const char* key) {
    const auto found = m.extra.find(key);
    return found == m.extra.end() ? std::string() : found->second;
  };
  const std::string mine = extra(latest, "run_id"), theirs = extra(resumed, "run_id");
  if (!mine.empty() && !theirs.empty())
    return mine == theirs ? "" : "its run_id is " + theirs + ", the run's " + mine;
  if (latest.seed != resumed.seed)
    return detail::concat("its --seed is ", resumed.seed, ", the run's ", latest.seed);
  const std::string split = extra(latest, "carved_split_crc32"),
                    other = extra(resumed, "carved_split_crc32");
  if (!split.empty() && !other.empty() && split != other)
    return "its carved validation split's CRC-32 is " + other + ", the run's " + split;
  return "";
}

// --data as config.json and the checkpoints record it: absolute, so that a resume typed in another
// folder (inside RUN/checkpoints, as usage.md shows) finds it; a relative one named nothing there.
std::string recorded_data_path(const std::string& data) {
  std::error_code error;
  if (data.empty() || fs::path(data).is_absolute()) return data;
  const fs::path absolute = fs::absolute(data, error);
  return error ? data : absolute.lexically_normal().string();
}

void write_config(const std::string& run_dir, const TrainOptions& options) {
  nlohmann::json resolved = to_json(options);
  resolved["out"] = run_dir;
  resolved["data"] = recorded_data_path(options.data);
  // Whole or not at all: a resumed run's config.json is never left truncated.
  write_file_atomically((fs::path(run_dir) / "config.json").string(),
                        json_text(resolved, 2) + "\n");
}

// The arithmetic a run asked for `asked` computes in on `device`: tf32 is CUDA's, fp32 on the CPU.
std::string precision_used(const std::string& asked, Device device) {
  return asked == "tf32" && device == Device::Cpu ? "fp32" : asked;
}

// The flags a user gave (their values differ from the defaults) that change nothing in this run:
// CUDA's on the CPU, data-parallel ones in one process, the other optimizer's, the plateau's under
// a schedule, a --min-lr the plateau never cuts to. They are accepted (a config moves between
// machines) and recorded, but the run says so rather than seem to obey. Also a --restore-best
// that follows another monitor than early stopping's, which a Keras user would not expect.
// (--sync-batchnorm in one process has its own note: its shared-statistics path, the reference
// the data-parallel test compares two ranks with, rounds differently from the per-rank one.)
std::vector<std::string> notes_on_flags(const TrainOptions& o, Device device, int ranks) {
  const TrainOptions defaults;
  std::vector<std::string> notes;
  auto note = [&](bool given, const std::string& flags, const std::string& why) {
    if (given) notes.push_back(flags + ": no effect in this run (" + why + ")");
  };
  const std::string on_cpu = "it is CUDA's, and this run is on the CPU";
  if (device == Device::Cpu) {
    note(precision_used(o.precision, device) != o.precision, "--precision " + o.precision,
         on_cpu + "; it trains in " + precision_used(o.precision, device));
    note(o.deterministic != defaults.deterministic, "--deterministic false", on_cpu);
    note(o.tuning_cache != defaults.tuning_cache, "--tuning-cache", on_cpu);
  }
  const std::string alone = "it is for data-parallel runs, and this one is one process";
  if (ranks == 1) {
    note(o.bucket_mb != defaults.bucket_mb, "--bucket-mb", alone);
    note(o.all_reduce != defaults.all_reduce, "--all-reduce", alone);
    // Not without effect: the same statistics, by the synchronised path's arithmetic.
    if (o.sync_batchnorm)
      notes.push_back("--sync-batchnorm true: " + alone + "; its statistics are this process's "
                      "batch as without it, computed by the synchronised path, whose rounding "
                      "differs in the last bits (so the run's numbers do too)");
  }
  if (o.optimizer == "rmsprop")
    note(o.beta1 != defaults.beta1 || o.beta2 != defaults.beta2 ||
             o.weight_decay != defaults.weight_decay,
         "--beta1, --beta2 and --weight-decay", "they are AdamW's; --optimizer is rmsprop");
  else
    note(o.rho != defaults.rho, "--rho", "it is RMSprop's; --optimizer is " + o.optimizer);
  if (o.schedule != "none")
    note(o.plateau_monitor != defaults.plateau_monitor ||
             o.plateau_factor != defaults.plateau_factor ||
             o.plateau_patience != defaults.plateau_patience ||
             o.plateau_min_delta != defaults.plateau_min_delta ||
             o.plateau_cooldown != defaults.plateau_cooldown,
         "--plateau-monitor, --plateau-factor, --plateau-patience, --plateau-min-delta and "
         "--plateau-cooldown",
         "they are ReduceLROnPlateau's, which --schedule " + o.schedule + " replaces");
  else  // Keras' rule: a cut only while lr > min_lr, in float32 (a schedule refuses this)
    note(static_cast<float>(o.min_lr) >= static_cast<float>(o.learning_rate),
         detail::concat("--min-lr ", o.min_lr),
         detail::concat("it is not below --lr ", o.learning_rate,
                        ", so ReduceLROnPlateau never cuts the rate"));
  // Not without effect, but not what Keras' EarlyStopping(restore_best_weights=True) does.
  if (o.restore_best && o.early_stopping_patience > 0 &&
      o.early_stopping_monitor != o.checkpoint_monitor)
    notes.push_back("--restore-best restores the epoch with the best " + o.checkpoint_monitor +
                    " (--checkpoint-monitor), not the best " + o.early_stopping_monitor +
                    " that early stopping watches (--early-stopping-monitor)");
  return notes;
}

// Rank 0's `mine` on every rank (a collective).
std::string rank_zeros(Communicator& group, const std::string& mine) {
  uint64_t length = mine.size();
  group.broadcast_bytes(&length, sizeof length);
  std::string first = group.rank() == 0 ? mine : std::string(length, '\0');
  if (length > 0) group.broadcast_bytes(first.data(), length);
  return first;
}

// Runs `check` on every rank (a collective). Where it throws on some ranks, the
// lowest of them throws it again, to be said once before that rank's abort ends the run, and the
// others wait in a vote it never joins: a bad flag every rank was given printed one line per rank.
// `check` must not call collectives itself (a rank that fails would leave the others in one).
void check_on_every_rank(Communicator& group, const std::function<void()>& check) {
  std::exception_ptr failure;
  try {
    check();
  } catch (...) {  // any failure (a filesystem error, bad_alloc) takes part in the vote
    if (group.size() == 1) throw;
    failure = std::current_exception();
  }
  if (group.size() == 1) return;
  const std::vector<double> failed = group.all_gather(std::vector<double>{failure ? 1.0 : 0.0});
  const auto first = std::find(failed.begin(), failed.end(), 1.0);
  if (first == failed.end()) return;
  if (first - failed.begin() == group.rank()) std::rethrow_exception(failure);
  group.any(true);  // never completes: the failing rank aborts the run
  throw Error("another rank failed");
}

// Every rank must train one run: where ranks' `difference` from rank 0 is not empty, the first of
// them stops every rank with it (bad usage). A collective, before anything is made.
void agree_with_rank_zero(Communicator& group, const std::string& difference) {
  check_on_every_rank(group, [&] {
    if (!difference.empty())
      throw UsageError("this rank differs from rank 0: " + difference +
                       "; every rank must be started with the same flags and data");
  });
}

// `mine` (what this rank read or where it starts) must be rank 0's: where it is not, `differs`
// (given rank 0's) says how, and agree_with_rank_zero stops the run with it. A collective.
void agree_on(Communicator& group, const std::string& mine,
              const std::function<std::string(const std::string& first)>& differs) {
  const std::string first = rank_zeros(group, mine);
  agree_with_rank_zero(group, mine == first ? std::string() : differs(first));
}

// The settings of this rank that differ from rank 0's, in words ("" when none): a rank started
// with another --seed, --lr or --config trained its own model while its gradients were summed
// and its validation scores gathered with the others' (silently wrong metrics), and another
// --batch or --epochs left the ranks waiting in mismatched collectives for ever. --threads and
// --tuning-cache only say how a rank runs, and paths may be a node's own (--data, --out, --resume,
// --config): they may differ; what the data and a resumed checkpoint hold is compared once read
// (in the TrainingRun constructor).
std::string settings_unlike_rank_zeros(const TrainOptions& options, Communicator& group) {
  nlohmann::json mine = to_json(options);
  for (const char* local : {"threads", "tuning-cache", "data", "out", "resume", "config"})
    mine.erase(local);
  const nlohmann::json first = nlohmann::json::parse(rank_zeros(group, mine.dump()));
  std::string differing;
  for (const auto& [key, value] : mine.items())
    if (!first.contains(key) || first[key] != value)
      differing += std::string(differing.empty() ? "" : ", ") + "--" + key + " " + value.dump() +
                   (first.contains(key) ? " (rank 0: " + first[key].dump() + ")" : "");
  return differing;
}

// Checks that every rank was given the same settings, the flags and that --data names data,
// makes the run folder and writes config.json (rank 0; the other ranks learn its name): the first
// things a run does, so a bad flag or an unwritable --out stops it before any data is read.
std::string start_run_dir(const TrainOptions& options, Communicator& group, RunDirLock& lock) {
  if (group.size() > 1) agree_with_rank_zero(group, settings_unlike_rank_zeros(options, group));
  check_on_every_rank(group, [&] {
    validate(options);
    check_data_path(options.data);  // a mistyped --data makes no folder
    // A run inside its data (a cache, a tree's split folders): checked before the default folder
    // is made, so that a refused run leaves nothing there either.
    refuse_output_inside_data(options.out.empty() ? "runs" : options.out,
                              options.out.empty() ? "the default run folder runs/"
                                                  : "--out " + options.out,
                              options.data);
    // What the backend and the gradients' transport will refuse (--device cuda without a GPU,
    // --all-reduce nccl on the CPU), refused before the folder is made.
    const AllReduceTransport transport = parse_all_reduce(options.all_reduce);
    check_transport(transport, backend_device(parse_device_choice(options.device)));
    // NCCL's watchdog reads PNEUMO_COLLECTIVE_TIMEOUT when it starts, after the folder is made
    // (under mpirun make_communicator read it already).
    if (transport == AllReduceTransport::Nccl) collective_timeout_seconds();
  });
  std::string run_dir = options.out;
  const bool claimed = options.out.empty() && group.rank() == 0;
  if (claimed) run_dir = claim_default_run_dir();
  try {
    if (group.size() > 1 && options.out.empty()) {  // the name rank 0 claimed
      std::vector<char> name(256, '\0');
      run_dir.copy(name.data(), name.size() - 1);
      group.broadcast_bytes(name.data(), name.size());
      run_dir = name.data();
    }
    if (group.rank() != 0) return run_dir;
    prepare_run_dir(run_dir, options.resume, lock);
    // A resumed run's config.json is rewritten only once the checkpoint has been accepted
    // (TrainingRun's constructor): a refused resume leaves the run as it was.
    if (options.resume.empty()) write_config(run_dir, options);
  } catch (...) {
    if (claimed) remove_unused_run_dir(run_dir);
    throw;
  }
  return run_dir;
}

TrainingRun::TrainingRun(const TrainOptions& options, std::unique_ptr<Communicator>& group,
                         BatchFlag& held)
    : options_(options),
      group_(group),
      run_dir_(start_run_dir(options, *group, run_lock_)),
      last_path_((fs::path(run_dir_) / "checkpoints/last.safetensors").string()) {
  const int input_size = open_data();
  size_steps();
  held = held_step();
  set_up_backend();
  set_up_model(input_size);
  set_up_trainer();
  set_up_image_sets();
  callbacks_ = make_callbacks(options);
  control_.learning_rate = options.learning_rate;
  callbacks_.on_train_begin(control_);
  if (!options.resume.empty()) resume(options.resume);
  if (group_->size() > 1) {
    // Where each rank starts, and on what: a --resume given to one rank only had it train epoch
    // 3 of a run while the others trained epoch 1 of a new one (their gradients summed, then a
    // crash); a --device auto that found a GPU on one node only would mix backends.
    // Each rank reads its own copy of the checkpoint (and of the best one): copies that differ
    // (another node's older file) trained two models that summed one gradient, exit status 0.
    const std::string mine = detail::concat(
        "a start at epoch ", first_epoch_, " step ", resumed_.epoch_step, " of ",
        options.resume.empty() ? "a new run"
                               : "a resumed run (tensors' CRC-32 " + resumed_fingerprint_ +
                                     (best_weights_ ? ", the best checkpoint's " +
                                                          tensors_fingerprint(*best_weights_)
                                                    : std::string()) +
                                     ")",
        " on the ", backend_->device() == Device::Cuda ? "CUDA" : "CPU", " backend");
    agree_on(*group_, mine,
             [&](const std::string& first) { return mine + " (rank 0: " + first + ")"; });
  }
  if (!options.resume.empty() && writer()) {
    carry_over_run_files(options.resume, run_dir_, first_epoch_,
                         ended_early_ ? first_epoch_ : options.epochs, options.checkpoint_monitor);
    // The history is read (a damaged one refused) before config.json is rewritten: a refused
    // resume leaves the folder as it was. run() keeps its rows of the epochs already done.
    if (first_epoch_ > 0) {
      const std::string source = resumed_run_dir(options.resume);
      resumed_history_ =
          resumed_history_rows(run_dir_, first_epoch_, source.empty() ? run_dir_ : source);
    }
    write_config(run_dir_, options);
  }

  metadata_.seed = options.seed;
  // The threshold is chosen on validation when the run ends, into model.safetensors only: a
  // training checkpoint (last, best, an interrupted run's) says so wherever its 0.5 is applied.
  metadata_.threshold_rule = kTrainingCheckpointRule;
  metadata_.config = to_json(options);
  metadata_.extra["carved_split_crc32"] = carved_split_fingerprint(splits_.train, splits_.val);
  metadata_.extra["ranks"] = std::to_string(group_->size());  // see resume()
  // Which run a checkpoint is of (kept by its resumes): refuse_overwriting_later_work tells a
  // checkpoint of another run put into a run's folder by it. Rank 0's, on every rank.
  metadata_.extra["run_id"] = rank_zeros(*group_, run_id_.empty() ? new_run_id() : run_id_);
  metadata_.config["out"] = run_dir_;
  metadata_.config["data"] = recorded_data_path(options.data);
  epochs_done_ = first_epoch_;
  if (!options.inject_fault.empty()) fault_ = parse_fault(options.inject_fault);
}

int TrainingRun::open_data() {
  OpenDatasetOptions open_options;
  open_options.size = options_.size;
  open_options.threads = options_.threads;
  const Dataset dataset = open_dataset(options_.data, open_options);
  splits_ = make_train_val(
      dataset, parse_val_split(options_.val_split, carve_seed(options_.val_seed, options_.seed)));
  if (writer()) std::cerr << "data: " << splits_.description << "\n";
  if (group_->size() > 1) {  // the same flags, but another copy of the data on this node
    const std::string mine = carved_split_fingerprint(splits_.train, splits_.val);
    agree_on(*group_, mine, [&](const std::string& first) {
      return "its data's training and validation images (fingerprint " + mine + ", rank 0: " +
             first + ")";
    });
  }
  return dataset.size;
}

void TrainingRun::set_up_backend() {
  BackendOptions backend_options;
  backend_options.device = parse_device_choice(options_.device);
  apply_precision(options_.precision, backend_options);
  backend_options.deterministic = options_.deterministic;
  backend_options.cpu_threads = options_.threads;
  backend_options.tuning_cache = tuning_cache_path(options_.tuning_cache);
  backend_ = make_backend(backend_options);
  if (group_->size() > 1) {
    // Before the transport: only CUDA ranks join NCCL's set-up (which has no timeout), so a
    // --device auto that found a GPU on some nodes only hung there, the CPU ranks waiting in the
    // next host collective, instead of being refused.
    const std::string mine = backend_->device() == Device::Cuda ? "CUDA" : "CPU";
    agree_on(*group_, mine, [&](const std::string& first) {
      return "the " + mine + " backend (rank 0: " + first + "; --device " + options_.device +
             " resolved differently on this node)";
    });
  }
  add_transport(group_, *backend_, parse_all_reduce(options_.all_reduce));
  if (!writer()) return;
  std::cerr << "backend: " << backend_->name() << "\n";
  for (const std::string& note : notes_on_flags(options_, backend_->device(), group_->size())) {
    std::cerr << "pneumo: note: " << note << "\n";
    said_.push_back(note);
  }
  if (group_->size() > 1)
    std::cerr << "ranks: " << group_->size() << " (" << group_->name() << "); global batch "
              << options_.batch << ", about " << options_.batch / group_->size()
              << " images per rank a step; batch-norm statistics "
              << (options_.sync_batchnorm ? "over every rank" : "per rank") << "\n";
}

void TrainingRun::set_up_model(int input_size) {
  ModelConfig config;
  config.input_size = input_size;
  config.input_normalization = parse_normalization(options_.normalization);
  config.head = parse_model_head(options_.head);
  config.fused_block_tails = options_.fused_block_tails;
  // Between fused tails under bf16 the activations stay bfloat16 (ModelConfig::bf16_activations).
  config.bf16_activations = options_.fused_block_tails && options_.precision == "bf16";
  model_ = std::make_unique<Model>(*backend_, config, held_step().batch);
  model_->initialize(options_.seed);
  if (options_.sync_batchnorm) model_->synchronise_batchnorm(group_.get());
}

void TrainingRun::set_up_trainer() {
  AugmentSettings augment = options_.augmentation;
  augment.enabled = options_.augment;
  augment.zoom_mode = parse_zoom_mode(options_.zoom_mode);
  trainer_ = std::make_unique<Trainer>(*backend_, *model_, training_step_, augment, options_.seed);
  trainer_->set_group(*group_);
  trainer_->set_all_reduce_bucket(bucket_elements(options_.bucket_mb));
  OptimizerSettings& optimizer = trainer_->optimizer();
  optimizer.learning_rate = static_cast<float>(options_.learning_rate);
  optimizer.rho = static_cast<float>(options_.rho);
  optimizer.epsilon = static_cast<float>(options_.epsilon);
  optimizer.epsilon_inside = options_.rmsprop_epsilon == "inside";
  optimizer.beta1 = static_cast<float>(options_.beta1);
  optimizer.beta2 = static_cast<float>(options_.beta2);
  optimizer.weight_decay = static_cast<float>(options_.weight_decay);
  trainer_->use_optimizer(parse_optimizer(options_.optimizer));
  trainer_->use_step_graphs(options_.cuda_graph);
  trainer_->set_predict_batch(validation_step_);
  metadata_.optimizer = options_.optimizer;
}

void TrainingRun::size_steps() {
  // An epoch holds as many images every epoch (the balance draws a fixed count); --drop-last's
  // whole batches are checked later (set_up_image_sets), so count before dropping.
  const size_t epoch = epoch_size(splits_.train.labels, parse_balance_mode(options_.balance));
  training_step_ = static_cast<int>(std::min<size_t>(static_cast<size_t>(options_.batch), epoch));
  const int asked = options_.val_batch > 0 ? options_.val_batch : options_.batch;
  validation_step_ = static_cast<int>(std::min<size_t>(
      static_cast<size_t>(asked), std::max<size_t>(static_cast<size_t>(splits_.val.count()), 1)));
}

BatchFlag TrainingRun::held_step() const {
  return validation_step_ > training_step_ ? BatchFlag{validation_step_, "--val-batch"}
                                           : BatchFlag{training_step_, "--batch"};
}

std::vector<int32_t> TrainingRun::epoch_order(int epoch) const {
  std::vector<int32_t> order =
      epoch_indices(splits_.train.labels, balance_, options_.seed, static_cast<uint32_t>(epoch));
  return options_.drop_last ? whole_batches(std::move(order), options_.batch) : order;
}

int64_t TrainingRun::epoch_steps(int epoch) const {
  const auto images = static_cast<int64_t>(epoch_order(epoch).size());
  return (images + options_.batch - 1) / options_.batch;
}

// Batch-norm in training takes its statistics over each channel's values in a batch (or a rank's
// share of it): one value leaves no variance to normalise by. At --size 16 or less bn5's planes
// are 1x1, so a step of one image (an epoch's last, a rank's share) met the op's internal check
// mid-run (after a whole epoch, on one process), its message a source line.
void TrainingRun::check_batchnorm_values(int64_t images) const {
  // Every block is convolution, batch-norm, pooling ('same', rounding up): the last block's
  // batch-norm sees the input halved once for each block before it (whether the tails are fused
  // or not, which names the layers otherwise).
  const size_t blocks = model_->config().channels.size();
  if (blocks == 0) return;
  int64_t side = model_->config().input_size;
  for (size_t block = 1; block < blocks; ++block) side = (side + 1) / 2;
  const int64_t plane = side * side;
  const std::string layer = "bn" + std::to_string(blocks);
  const int64_t last = images - (images - 1) / options_.batch * options_.batch;
  // Each rank's batch-norm runs on its own share of the step even when the statistics are
  // synchronised (the local op needs 2 values a channel), so the shares count either way.
  const int64_t shares = group_->size();
  const int64_t fewest = std::min<int64_t>(options_.batch, last) / shares;
  if (fewest * plane >= 2) return;
  throw UsageError(detail::concat(
      "--batch ", options_.batch, " leaves ", std::min<int64_t>(options_.batch, last),
      " image", std::min<int64_t>(options_.batch, last) == 1 ? "" : "s",
      last < options_.batch ? " in the epoch's last step" : " a step",
      shares > 1 ? detail::concat(" for ", shares, " ranks") : std::string(), ", and ", layer,
      "'s planes are ", plane == 1 ? "1x1" : std::to_string(plane) + " pixels",
      " at this input size: batch-norm needs 2 values a channel or more; choose another --batch",
      options_.drop_last || last == options_.batch ? "" : " (or --drop-last)",
      " or a larger --size"));
}

void TrainingRun::set_up_image_sets() {
  balance_ = parse_balance_mode(options_.balance);
  // An epoch with no full batch (--drop-last) is bad usage now, before anything trains, not an
  // error at its first epoch; so is one whose steps the ranks cannot share (below).
  if (options_.drop_last) {
    const size_t all = epoch_size(splits_.train.labels, balance_);
    if (all < static_cast<size_t>(options_.batch))
      throw UsageError(detail::concat("--drop-last: an epoch of ", all,
                                      " training images holds no full batch of ", options_.batch,
                                      "; choose a smaller --batch or train without --drop-last"));
  }
  const auto images = static_cast<int64_t>(epoch_order(0).size());
  // The ranks share every step's batch: one with fewer images than ranks (the epoch's last, or
  // any when --batch is below the rank count) is bad usage now, not the trainer's internal check
  // at the first epoch (status 1, its text a source line).
  if (group_->size() > 1) check_on_every_rank(*group_, [&] {
    const int64_t last = images - (images - 1) / options_.batch * options_.batch;
    if (options_.batch < group_->size() || last < group_->size())
      throw UsageError(detail::concat(
          "--batch ", options_.batch, " leaves ", std::min<int64_t>(options_.batch, last),
          " images for the ", group_->size(), " ranks to share in ",
          options_.batch < group_->size() ? "every step" : "the epoch's last step (of " +
                                                std::to_string(images) + " images)",
          ": every rank needs at least one; choose another --batch",
          options_.drop_last || options_.batch < group_->size() ? "" : " (or --drop-last)"));
  });
  check_batchnorm_values(images);
  train_set_ = upload(splits_.train, backend_->device());
  if (balance_ == BalanceMode::ClassWeight)
    train_set_.set_weights(sample_weights(splits_.train.labels, balance_));
  if (options_.label_smoothing > 0)
    train_set_.smooth_labels(splits_.train.labels, static_cast<float>(options_.label_smoothing));
  // The epoch line puts the two losses side by side: say when they are not the same measure.
  const bool weighted = balance_ == BalanceMode::ClassWeight;
  const bool smoothed = options_.label_smoothing > 0;
  if (writer() && (weighted || smoothed)) {
    const std::string losses = detail::concat(
        "the training loss is ", weighted ? "weighted by class" : "",
        weighted && smoothed ? " and " : "", smoothed ? "against smoothed targets" : "",
        "; val loss is the plain cross-entropy");
    std::cerr << "loss: " << losses << "\n";
    said_.push_back("Loss: " + losses + " (the table's and loss.svg's two curves).");
  }
  val_set_ = upload(splits_.val, backend_->device());
}

void TrainingRun::resume(const std::string& checkpoint_path) {
  CheckpointData checkpoint = load_checkpoint(checkpoint_path);
  if (group_->size() > 1) resumed_fingerprint_ = tensors_fingerprint(checkpoint);
  check_resumable(checkpoint_path, checkpoint.metadata);
  note_other_batchnorm_shares(checkpoint_path, checkpoint.metadata);
  if (options_.restore_best) load_best_weights(checkpoint_path, checkpoint.metadata);
  refuse_overwriting_later_work(checkpoint_path, checkpoint.metadata);
  if (const auto id = checkpoint.metadata.extra.find("run_id"); id != checkpoint.metadata.extra.end())
    run_id_ = id->second;
  trainer_->set_optimizer_steps(checkpoint.metadata.step);
  restore_checkpoint(checkpoint, *model_, &trainer_->optimizer_state(), checkpoint_path);
  try {
    callbacks_.load_state(checkpoint.metadata.callback_state);
  } catch (const Error& e) {
    throw Error("checkpoint " + checkpoint_path + ": " + e.what());
  }
  first_epoch_ = checkpoint.metadata.epoch;
  // Early stopping's stop lives in its state, not in the epoch count: such a run is over as one
  // that trained --epochs is (a resume trained on past the stop and replaced its model).
  if (checkpoint.metadata.epoch_step == 0 && first_epoch_ < options_.epochs)
    ended_early_ = callbacks_.ended_run(first_epoch_);
  if (ended_early_ && !stopped_before_its_model(checkpoint_path, checkpoint.metadata))
    throw Error(detail::concat(
        "checkpoint ", checkpoint_path, " ends a run that early stopping ended (",
        *ended_early_, ") and wrote its model: nothing to train; give a larger "
        "--early-stopping-patience, or --early-stopping-patience 0 (off), to go on"));
  if (first_epoch_ >= options_.epochs &&
      !(first_epoch_ == options_.epochs &&
        stopped_before_its_model(checkpoint_path, checkpoint.metadata)))
    throw Error(detail::concat("checkpoint ", checkpoint_path, " has done ", first_epoch_,
                               " epochs and --epochs is ", options_.epochs,
                               ": nothing to train; give a larger --epochs to go on"));
  steps_done_ = checkpoint.metadata.step;
  if (checkpoint.metadata.epoch_step > 0)
    check_position_inside_epoch(checkpoint_path, checkpoint.metadata);
  const double stored_lr = checkpoint.metadata.learning_rate;
  // The optimizer steps in float: 1e308 is infinite there, 1e-50 zero.
  const float stored_lr_float = static_cast<float>(stored_lr);
  if (!(std::isfinite(stored_lr_float) && stored_lr_float > 0.0f))
    throw Error(detail::concat("checkpoint ", checkpoint_path, " holds a learning rate of ",
                               stored_lr, ", not a positive float32 number: not a state to "
                               "continue from"));
  control_.learning_rate = stored_lr;
  // --lr given again (other than the value the checkpoint's run started with) wins over the rate
  // the run had reached, as every flag given again does; a schedule refuses it (load_state).
  const nlohmann::json& recorded = checkpoint.metadata.config;
  const bool lr_changed = recorded.contains("lr") && recorded["lr"].is_number() &&
                          recorded["lr"].get<double>() != options_.learning_rate;
  if (lr_changed) control_.learning_rate = options_.learning_rate;
  resumed_ = checkpoint.metadata;
  resumed_.learning_rate = control_.learning_rate;
  if (writer()) say_where_resumed(checkpoint_path, lr_changed ? std::optional(stored_lr) : std::nullopt);
}

void TrainingRun::check_resumable(const std::string& checkpoint_path,
                                  const CheckpointMetadata& resumed) const {
  if (resumed.optimizer != options_.optimizer)
    throw Error("checkpoint " + checkpoint_path + " was trained with --optimizer " +
                resumed.optimizer + "; this run asks for " + options_.optimizer);
  const nlohmann::json& trained = resumed.config;
  const std::string trained_epsilon =
      trained.is_object() && trained.contains("rmsprop-epsilon") &&
              trained["rmsprop-epsilon"].is_string()
          ? trained["rmsprop-epsilon"].get<std::string>()
          : std::string("outside");  // checkpoints from before the flag
  if (options_.optimizer == "rmsprop" && trained_epsilon != options_.rmsprop_epsilon)
    throw Error("checkpoint " + checkpoint_path + " was trained with --rmsprop-epsilon " +
                trained_epsilon + "; this run asks for " + options_.rmsprop_epsilon +
                " (its mean squares belong to the other update)");
  // The images the run trained and validated on: other ones (a relative --data that names
  // another tree from here, a tree changed since) would mix two runs' epochs, and compare
  // validation losses of two different sets.
  const auto recorded_split = resumed.extra.find("carved_split_crc32");
  if (recorded_split != resumed.extra.end() &&
      recorded_split->second != carved_split_fingerprint(splits_.train, splits_.val)) {
    // Which of the carve's flags differ from the run's (its config; -1 for a --val-seed from
    // before the flag): none of them means the images under --data are not the run's.
    std::string differs;
    bool official = options_.val_split == "official";
    if (trained.is_object() && trained.contains("val-split") && trained["val-split"].is_string()) {
      const std::string theirs = trained["val-split"].get<std::string>();
      official = official || theirs == "official";
      if (!same_val_split(theirs, options_.val_split))
        differs = "--val-split " + options_.val_split + " (the run's: " + theirs + ")";
    }
    if (!official && trained.is_object() && trained.contains("seed") &&
        trained["seed"].is_number_unsigned()) {
      const int64_t val_seed = trained.contains("val-seed") && trained["val-seed"].is_number_integer()
                                   ? trained["val-seed"].get<int64_t>()
                                   : -1;
      const uint64_t theirs = carve_seed(val_seed, trained["seed"].get<uint64_t>());
      const uint64_t ours = carve_seed(options_.val_seed, options_.seed);
      if (theirs != ours)
        differs += detail::concat(differs.empty() ? "" : " and ", "--seed and --val-seed carve "
                                  "with ", ours, " (the run's: ", theirs, ")");
    }
    throw Error("the training and validation images differ from those the run of " +
                checkpoint_path + " had (its carved_split_crc32): " +
                (differs.empty() ? "--data " + options_.data + " holds other images than it did"
                                 : differs) +
                "; a resumed run continues on its own images: give the --data, --val-split, "
                "--val-seed and --seed it was trained with");
  }
  if (resumed.weights_epoch != resumed.epoch)
    throw Error(detail::concat(
        "checkpoint ", checkpoint_path, " holds the weights of epoch ", resumed.weights_epoch,
        " restored at the end of a run of ", resumed.epoch, " epochs (--restore-best) beside "
        "the optimizer state of epoch ", resumed.epoch, ": not a state to continue from; resume "
        "from the run's checkpoints/last.safetensors"));
}

// Batch-norm takes its statistics over each rank's share of a batch (--sync-batchnorm false, the
// default) or over the whole batch: a resume that changes the number of shares (another rank
// count, or --sync-batchnorm changed with several ranks) goes on, but not as its first part would
// have.
void TrainingRun::note_other_batchnorm_shares(const std::string& checkpoint_path,
                                              const CheckpointMetadata& resumed) const {
  const auto recorded_ranks = resumed.extra.find("ranks");
  if (!writer() || recorded_ranks == resumed.extra.end()) return;
  const nlohmann::json& trained = resumed.config;
  const bool trained_sync = trained.is_object() && trained.contains("sync-batchnorm") &&
                            trained["sync-batchnorm"].is_boolean() &&
                            trained["sync-batchnorm"].get<bool>();
  const long trained_ranks = std::strtol(recorded_ranks->second.c_str(), nullptr, 10);
  const long trained_shares = trained_sync ? 1 : trained_ranks;
  const long shares = options_.sync_batchnorm ? 1 : group_->size();
  const auto over = [](long n) {
    return n == 1 ? std::string("the whole batch")
                  : "each of " + std::to_string(n) + " processes' shares of a batch";
  };
  const auto how = [](long ranks, bool sync) {
    return detail::concat(ranks, ranks == 1 ? " process" : " processes", ", --sync-batchnorm ",
                          sync ? "true" : "false");
  };
  if (trained_ranks > 0 && trained_shares != shares)
    std::cerr << "pneumo: note: batch-norm takes its statistics over " << over(shares)
              << " in this run (" << how(group_->size(), options_.sync_batchnorm) << "), over "
              << over(trained_shares) << " in the run of " << checkpoint_path << " ("
              << how(trained_ranks, trained_sync)
              << "), so the run goes on, but not as it would have\n";
}

// A checkpoint written inside an epoch: its position is a step count into the epoch's image
// order, and its loss and accuracy sums cover that many batches; both mean something only with
// the flags that made that order.
void TrainingRun::check_position_inside_epoch(const std::string& checkpoint_path,
                                              const CheckpointMetadata& resumed) const {
  const nlohmann::json& recorded = resumed.config;
  const nlohmann::json now = to_json(options_);
  // (--val-seed needs no place here: a carve it changes fails the carved_split_crc32 check
  // before this one, and a value that carves the same images, -1 beside --seed's own, is fine.)
  for (const std::string flag : {"batch", "seed", "balance", "drop-last", "val-split"})
    if (recorded.contains(flag) && now.contains(flag) && recorded[flag] != now[flag] &&
        !(flag == "val-split" && recorded[flag].is_string() &&
          same_val_split(recorded[flag].get<std::string>(), options_.val_split)))
      throw Error(detail::concat(
          "checkpoint ", checkpoint_path, " stopped inside epoch ", resumed.epoch + 1, " with --",
          flag, " ", recorded[flag].dump(), "; this run asks for --", flag, " ", now[flag].dump(),
          ". A run resumed inside an epoch keeps --batch, --seed, --balance, --drop-last and "
          "--val-split (they fix the epoch's image order); resume without changing them"));
  // The same data, batch and seed give the same epoch length; a position past its end was
  // written by another run or damaged.
  const int64_t steps = epoch_steps(resumed.epoch);
  if (resumed.epoch_step >= steps)
    throw Error(detail::concat("checkpoint ", checkpoint_path, " stopped at step ",
                               resumed.epoch_step, " of epoch ", resumed.epoch + 1, ", which has ",
                               steps, " steps with this data and --batch ", options_.batch,
                               options_.drop_last ? " --drop-last" : "",
                               ": it belongs to another run (or one with another --batch or "
                               "--drop-last) or is damaged"));
}

std::vector<double> TrainingRun::resumed_rank_sums() const {
  const auto recorded = resumed_.extra.find("epoch_rank_sums");
  if (recorded == resumed_.extra.end()) return {};
  std::vector<double> sums;
  std::stringstream text(recorded->second);
  for (std::string item; std::getline(text, item, ',');) {
    char* end = nullptr;
    const double value = std::strtod(item.c_str(), &end);
    if (item.empty() || *end != '\0' || !std::isfinite(value))
      throw Error("checkpoint " + options_.resume + ": its epoch_rank_sums holds '" +
                  detail::one_line(item) + "', not a number");
    sums.push_back(value);
  }
  // Another rank count: the total, carried by rank 0 (EpochOptions::rank_sums).
  return sums.size() == 2 * static_cast<size_t>(group_->size()) ? sums : std::vector<double>{};
}

void TrainingRun::say_where_resumed(const std::string& checkpoint_path,
                                    std::optional<double> replaced_lr) const {
  if (replaced_lr)
    std::cerr << "resuming with --lr " << options_.learning_rate << " (the checkpoint's run was at "
              << *replaced_lr << ")"
              << (resumed_.epoch_step > 0
                      ? detail::concat("; the first ", resumed_.epoch_step, " steps of epoch ",
                                       first_epoch_ + 1, " ran at ", *replaced_lr,
                                       ", and its history row gives the new rate")
                      : std::string())
              << "\n";
  if (resumed_.epoch_step > 0)
    std::cerr << "resuming " << checkpoint_path << " at step " << resumed_.epoch_step
              << " of epoch " << first_epoch_ + 1 << "\n";
  else if (first_epoch_ == options_.epochs || ended_early_)
    std::cerr << "resuming " << checkpoint_path << ": its " << first_epoch_ << " epochs are trained"
              << (ended_early_ ? " (" + *ended_early_ + ")" : std::string())
              << ", its run stopped before writing the model; writing it\n";
  else
    std::cerr << "resuming " << checkpoint_path << " after epoch " << first_epoch_ << "\n";
}

// An earlier checkpoint of a run (best.safetensors, a copy of an older last.safetensors) resumed
// into that run's own folder would drop the later history rows and overwrite last.safetensors:
// the later work is lost. It goes into a new --out instead.
void TrainingRun::refuse_overwriting_later_work(const std::string& checkpoint_path,
                                                const CheckpointMetadata& resumed) {
  const std::string last = (fs::path(run_dir_) / "checkpoints" / "last.safetensors").string();
  std::error_code error;
  if (!fs::is_regular_file(last, error) || fs::equivalent(last, checkpoint_path, error)) return;
  const CheckpointMetadata latest = read_checkpoint_metadata(last);
  // A checkpoint of another run put into this folder (a copy beside the run's own) went on here,
  // replacing the folder's model, checkpoints and config.json with the other run's.
  if (const std::string why = other_runs_checkpoint(latest, resumed); !why.empty())
    throw Error("checkpoint " + checkpoint_path + " is not of the run in " + run_dir_ + ": " + why +
                " (by its last checkpoint, " + last +
                "); resuming it there would overwrite that run: resume it into a new --out");
  if (std::make_pair(latest.epoch, latest.epoch_step) <=
      std::make_pair(resumed.epoch, resumed.epoch_step))
    return;
  throw Error(detail::concat(
      "checkpoint ", checkpoint_path, " is from epoch ", resumed.epoch, " of run ", run_dir_,
      ", whose last checkpoint ", last, " is from epoch ", latest.epoch,
      ": resuming it there would overwrite the later work; resume it into a new --out"));
}

void TrainingRun::load_best_weights(const std::string& checkpoint_path,
                                    const CheckpointMetadata& resumed) {
  if (resumed.epoch == 0) return;  // stopped inside the first epoch: no best epoch yet
  // A monitored value that never improved (NaN in every epoch: val_precision with no image called
  // pneumonia) saved no best checkpoint: none to read back, as an uninterrupted run has none.
  const nlohmann::json& state = resumed.callback_state;
  if (state.is_object() && state.contains("model_checkpoint") &&
      state["model_checkpoint"].is_object() &&
      state["model_checkpoint"].contains("best_epoch") &&
      state["model_checkpoint"]["best_epoch"].is_number_integer() &&
      state["model_checkpoint"]["best_epoch"].get<int64_t>() < 0)
    return;
  const std::string source = resumed_run_dir(checkpoint_path);
  const std::string best_path =
      (fs::path(source.empty() ? "." : source) / "checkpoints" / "best.safetensors").string();
  std::error_code error;
  if (source.empty())
    throw Error("--restore-best restores the run's best epoch from its checkpoints/best.safetensors, "
                "but " + checkpoint_path + " lies outside a run directory (no config.json and "
                ".lock of a run beside it or above its checkpoints/ folder); resume it from its "
                "run's folder, or without --restore-best");
  if (!fs::is_regular_file(best_path, error))
    throw Error("--restore-best restores the run's best epoch, but its best checkpoint " +
                best_path + " is missing (written whenever " + options_.checkpoint_monitor +
                " improves); put it back, or resume without --restore-best");
  CheckpointData best = load_checkpoint(best_path);
  if (best.metadata.epoch > resumed.epoch || best.metadata.weights_epoch != best.metadata.epoch)
    throw Error(detail::concat(
        "best checkpoint ", best_path, " is of epoch ", best.metadata.epoch,
        ", not an epoch of the run ", checkpoint_path, " resumes (", resumed.epoch,
        " done); --restore-best cannot use it",
        best.metadata.epoch > resumed.epoch
            ? detail::concat(" (a run stopped between writing the two leaves its best one epoch "
                             "ahead: resume ", best_path, " itself, which holds that epoch whole)")
            : std::string()));
  restore_checkpoint(best, *model_, nullptr, best_path);  // its shapes checked now, not at the end
  best_weights_epoch_ = best.metadata.epoch;
  best_weights_ = std::make_shared<const CheckpointData>(std::move(best));
}

// The weights of the best --checkpoint-monitor epoch (those of checkpoints/best.safetensors) go
// into model.safetensors, which records their epoch (weights_epoch).
void TrainingRun::restore_best_weights() {
  const std::string& monitor = options_.checkpoint_monitor;
  if (!best_weights_) {
    if (writer())
      std::cout << "--restore-best: no epoch had a finite " << monitor
                << ", so model.safetensors holds the final epoch's weights\n";
    return;
  }
  if (best_weights_epoch_ == epochs_done_) {
    if (writer())
      std::cout << "--restore-best: the final epoch has the best " << monitor
                << "; model.safetensors holds its weights\n";
    return;
  }
  restore_checkpoint(*best_weights_, *model_, nullptr, "the best epoch's weights");
  weights_epoch_ = best_weights_epoch_;
  if (writer())
    std::cout << "restored the weights of epoch " << best_weights_epoch_ << " (the best "
              << monitor << ", checkpoints/best.safetensors)\n";
}

void TrainingRun::note_missing_history(int first_epoch) const {
  const std::vector<int> missing = epochs_without_a_row(log_->records(), first_epoch);
  const size_t count = missing.size();
  if (count == 0) return;
  std::cerr << "note: the history of " << run_dir_ << " lacks the row" << (count == 1 ? "" : "s")
            << " of epoch " << comma_list(missing) << " (counted from 0, as its epoch column) of the "
            << first_epoch << " epochs the checkpoint has done: the run was stopped between a "
            << "checkpoint and its history row, or history.jsonl was removed; history.csv and the "
            << "report go on without " << (count == 1 ? "it" : "them") << "\n";
}

int TrainingRun::run() {
  if (writer()) {
    if (resumed_history_)  // keeps the rows of the epochs already done
      log_.emplace(run_dir_, first_epoch_, std::move(*resumed_history_));
    else
      log_.emplace(run_dir_, first_epoch_);
    // (A checkpoint outside a run directory brings no history, which carry_over_run_files said.)
    if (!options_.resume.empty() && !resumed_run_dir(options_.resume).empty())
      note_missing_history(first_epoch_);
  }
  const ProgressOptions progress_options = progress_options_for(stderr);
  // The other ranks' progress goes nowhere (a stream without a buffer discards what it is given):
  // rank 0 speaks for the run.
  static std::ostream discard(nullptr);
  progress_.emplace(writer() ? std::cerr : discard, progress_options);
  stop_on_signal_.emplace(writer());  // from here on, SIGINT/SIGTERM stop after the current step
  for (int epoch = first_epoch_; epoch < options_.epochs && !ended_early_; ++epoch) {
    bool stopped = false;
    if (const std::optional<int> status = train_and_validate(epoch, stopped)) return *status;
    if (stopped) break;
  }
  // A signal during the last epoch's validation (end_epoch leaves that one here).
  if (stops_before_the_model()) return interrupted(epochs_done_, nullptr);
  callbacks_.on_train_end(control_);
  if (options_.restore_best) restore_best_weights();
  return finish();
}

std::optional<int> TrainingRun::train_and_validate(int epoch, bool& stopped) {
  // A run resumed inside this epoch: the training seconds before the interruption count in its
  // history row (and in the next checkpoint, should it stop again), not in this process's total.
  const double carried =
      epoch == first_epoch_ && resumed_.epoch_step > 0 ? resumed_.epoch_seconds : 0.0;
  const Clock::time_point epoch_start =
      Clock::now() - std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(carried));
  EpochStats train_stats = train_one_epoch(epoch);
  train_seconds_ -= carried;  // end_epoch adds the row's train_seconds, carried included
  train_stats.seconds += carried;
  if (train_stats.interrupted) {  // every rank stopped at the same step
    if (files_.failed()) drain_files();  // throws: the disk that failed takes no more
    write("checkpoints/last.safetensors", snapshot(epoch, &train_stats));
    return interrupted(epoch, &train_stats);
  }
  const Clock::time_point val_start = Clock::now();
  const EpochMetrics metrics = validate(epoch, train_stats);
  EpochRecord record;
  record.epoch = epoch;
  record.learning_rate = rate_as_run(control_.learning_rate);
  record.train_seconds = train_stats.seconds;
  record.val_seconds = seconds_since(val_start);
  record.values = metrics.values;
  return end_epoch(metrics, std::move(record), epoch_start, stopped);
}

// The epoch's training steps (from where an interrupted epoch stopped, when resuming inside it),
// with the progress line; a non-finite loss stops the run naming the last good checkpoint.
EpochStats TrainingRun::train_one_epoch(int epoch) {
  const bool resumed_inside = epoch == first_epoch_ && resumed_.epoch_step > 0;
  callbacks_.on_epoch_begin(epoch, control_);
  if (resumed_inside)
    control_.learning_rate = resumed_.learning_rate;  // the rate the interrupted epoch ran at
  trainer_->optimizer().learning_rate = static_cast<float>(control_.learning_rate);
  const std::vector<int32_t> order = epoch_order(epoch);
  const int64_t steps = (static_cast<int64_t>(order.size()) + options_.batch - 1) / options_.batch;
  EpochOptions epoch_options;
  if (resumed_inside) {
    epoch_options.first_step = resumed_.epoch_step;
    epoch_options.loss_sum = resumed_.epoch_loss_sum;
    epoch_options.correct = resumed_.epoch_correct;
    epoch_options.rank_sums = resumed_rank_sums();
  }
  epoch_options.stop = &stop_on_signal_->stop();
  // A checkpoint or history write that failed stops the run at the next step, not at the next
  // epoch's first write (an epoch trained for nothing; its checkpoint was never written).
  epoch_options.stop_too = &files_.failed();
  const int64_t steps_before_epoch = steps_done_ - epoch_options.first_step;
  if (fault_)
    epoch_options.before_step =
        fault_hook(*fault_, *model_, trainer_->optimizer_state(), steps_before_epoch);

  // Images of every rank done after `step` steps (all full batches but the epoch's last).
  const auto images_after = [&](int64_t step) {
    return std::min<int64_t>(static_cast<int64_t>(order.size()), step * options_.batch);
  };
  progress_->begin_epoch(epoch, options_.epochs, steps, epoch_options.first_step,
                         images_after(epoch_options.first_step));
  EpochStats train_stats;
  try {
    StepCallback on_progress;
    if (writer())  // rank 0's running loss and accuracy (its shard); the epoch's line: everyone's
      on_progress = [&](int64_t step, int64_t, const EpochStats& running) {
        progress_->update(step, images_after(step), running.loss, running.accuracy);
      };
    train_stats = trainer_->train_epoch(train_set_, order, static_cast<uint32_t>(epoch),
                                        on_progress, epoch_options);
  } catch (const NonFiniteLoss& e) {
    progress_->end_epoch();
    throw Error(detail::concat(e.what(), ", step ", steps_before_epoch + e.step() + 1,
                               " of the run; stopped: ", last_good_checkpoint(),
                               ". Try a lower --lr, or look for bad images in the data."));
  }
  steps_done_ += train_stats.steps - epoch_options.first_step;
  progress_->end_epoch();
  const std::string& refused = trainer_->step_graph_stats().refused;
  if (options_.cuda_graph && !refused.empty() && !graph_notice_shown_ && writer()) {
    std::cerr << "pneumo: --cuda-graph: steps run op by op: " << refused << "\n";
    graph_notice_shown_ = true;
  }
  return train_stats;
}

// The epoch's metrics: training loss and accuracy, validation's, and (--val-stress) the stress
// variants of validation.
EpochMetrics TrainingRun::validate(int epoch, const EpochStats& train_stats) {
  if (fault_) fault_before_validation(*fault_, *model_, epoch);
  EpochStats val_stats;
  const std::vector<float> val_logits = trainer_->predict_logits(val_set_, &val_stats);
  // Weights that overflow in the forward pass alone (the training loss still finite): the epoch
  // is not written, and the message says which checkpoint holds the last good state.
  const auto bad = std::find_if(val_logits.begin(), val_logits.end(),
                                [](float z) { return !std::isfinite(z); });
  if (bad != val_logits.end())
    throw Error(detail::concat("the model diverged in epoch ", epoch + 1, ": its validation logit ",
                               bad - val_logits.begin(), " is ", *bad, "; nothing was written; ",
                               last_good_checkpoint(), ". Try a lower --lr."));
  MetricsReport val_report = evaluate_binary("val", val_logits, splits_.val.labels);
  last_val_logits_ = val_logits;
  last_val_epochs_ = epoch + 1;
  EpochMetrics metrics;
  metrics.epoch = epoch;
  metrics.values = metrics_as_values(val_report, "val_");
  metrics.values["loss"] = train_stats.loss;
  metrics.values["accuracy"] = train_stats.accuracy;
  if (options_.val_stress) {
    const StressReport stress = evaluate_stress(*trainer_, val_set_, splits_.val.labels);
    for (const auto& [name, value] : stress_as_values(stress, "val_stress_"))
      metrics.values[name] = value;
  }
  return metrics;
}

// The callbacks' turn, the checkpoints, the epoch's line (its time includes them) and then the
// history (never ahead of the checkpoints); a stop requested by a callback or a signal that came
// during validation.
std::optional<int> TrainingRun::end_epoch(const EpochMetrics& metrics, EpochRecord record,
                                          Clock::time_point epoch_start, bool& stopped) {
  const int epoch = metrics.epoch;
  control_.clear_requests();
  callbacks_.on_epoch_end(metrics, control_);

  epochs_done_ = epoch + 1;
  const std::shared_ptr<const CheckpointData> state = snapshot(epoch + 1);
  if (options_.restore_best && control_.save_best_checkpoint) {
    // The writer keeps the state it queues as best.safetensors; the other ranks take their own.
    best_weights_ = state ? state : std::make_shared<const CheckpointData>(
                                        capture_checkpoint(*model_, nullptr, metadata_));
    best_weights_epoch_ = epoch + 1;
  }
  if (control_.save_best_checkpoint) write("checkpoints/best.safetensors", state);
  write("checkpoints/last.safetensors", state);
  record.seconds = seconds_since(epoch_start);  // the files are queued; they are written meanwhile
  train_seconds_ += record.train_seconds;
  val_seconds_ += record.val_seconds;
  if (writer()) {
    std::cout << format_epoch_summary(record, options_.epochs) << "\n" << std::flush;
    for (const auto& event : control_.events) {
      std::cout << "  " << event << "\n";
      said_.push_back(event);
    }
  }
  // After the checkpoint, on the same queue: the history never runs ahead of it.
  if (log_) post_file([this, record] { log_->append(record); });
  if (control_.stop) {  // the callbacks saw the same metrics on every rank
    if (writer()) {
      std::cout << control_.stop_reason << "\n";
      said_.push_back(control_.stop_reason);
    }
    stopped = true;
    return std::nullopt;
  }
  // A signal that arrived during validation (on any rank); after the last epoch's, finish()
  // stops before writing the model.
  if (group_->any(stop_on_signal_->stop().load()) && epoch + 1 < options_.epochs)
    return interrupted(epoch + 1, nullptr);
  return std::nullopt;
}

// The decision threshold is tuned on validation (Youden's J) and stored with the model; test
// images are never looked at here. A signal during the final pass stops the run before the model
// is written (last.safetensors holds every epoch; resuming it writes the model) unless a callback
// ended the run early; one that comes later lets the run end, as it nearly has.
int TrainingRun::finish() {
  drain_files();  // the last epoch's files (and any failure writing them) before the report
  // The last epoch's validation pass saw these very weights unless --restore-best put an earlier
  // epoch's back (or this process trained no epoch): a second pass would give the same logits.
  const bool final_pass = last_val_epochs_ != epochs_done_ || weights_epoch_.has_value();
  std::vector<float> val_logits;
  if (final_pass) {
    EpochStats val_stats;
    val_logits = trainer_->predict_logits(val_set_, &val_stats);
  } else {
    val_logits = std::move(last_val_logits_);
  }
  if (stops_before_the_model()) return interrupted(epochs_done_, nullptr);
  ThresholdChoice threshold = choose_threshold_youden(val_logits, splits_.val.labels);
  const auto counts = splits_.val.class_counts();
  const int64_t smallest_class = std::min(counts[0], counts[1]);
  std::string rule =
      threshold.defined ? "Youden's J on " + std::to_string(splits_.val.count()) +
                              " validation images"
      : threshold.saturated
          ? detail::concat("default 0.5 (Youden's best cut on validation, logit ",
                           threshold.saturated_logit,
                           ", lies where probabilities round to 0 or 1: the model is saturated)")
      : threshold.chance
          ? std::string("default 0.5 (no cut on validation beats chance: Youden's J is 0 at best, "
                        "so its cut would call every image one class)")
          : std::string("default 0.5 (validation lacks a class)");
  if (options_.threshold_rule == "0.5") {
    threshold = ThresholdChoice{};
    rule = "0.5 (--threshold-rule 0.5)";
  } else if (threshold.defined && smallest_class < kMinThresholdClassImages) {
    rule = detail::concat("default 0.5 (validation holds ", smallest_class,
                          " images of a class, fewer than ", kMinThresholdClassImages,
                          " for Youden's J; it would have chosen ", format_threshold(threshold.threshold), ")");
    threshold = ThresholdChoice{};
  }
  metadata_.decision_threshold = threshold.threshold;
  metadata_.threshold_rule = rule;
  if (!writer()) return 0;
  MetricsReport final_val =
      evaluate_binary("val", val_logits, splits_.val.labels, threshold.threshold, rule);
  final_val.applied_in_sample = threshold.defined;  // Youden's cut, chosen on these logits
  write("model.safetensors", snapshot(epochs_done_));
  drain_files();
  // The arithmetic the scores were computed in: a bf16 run's differ a little from `evaluate`'s,
  // which scores in fp32.
  nlohmann::json scored = to_json(final_val);
  scored["computed_in"] = precision_used(options_.precision, backend_->device());
  // Whose weights were scored: those of weights_epoch (an earlier one under --restore-best).
  scored["weights_epoch"] = weights_epoch_.value_or(epochs_done_);
  scored["epochs_trained"] = epochs_done_;
  write_file_atomically((fs::path(run_dir_) / "metrics_val.json").string(),
                        scored.dump(2) + "\n");
  ReportInputs report;
  report.history = log_->records();
  report.validation = final_val;
  report.validation_roc = roc_curve(val_logits, splits_.val.labels);
  report.config = metadata_.config;
  report.notes = "Data: " + splits_.description + ". Backend: " + backend_->name() + ".\n\n";
  if (ended_early_) said_.push_back("resumed to write what was missing: " + *ended_early_);
  if (!said_.empty()) {
    report.notes += "What this process said beside its epoch lines (a resumed run's earlier "
                    "processes said theirs in their own output):\n\n";
    for (const std::string& line : said_) report.notes += "- " + line + "\n";
    report.notes += "\n";
  }
  report.notes += dataset_credit();
  // The monitored value itself: it may be a metric the report's tables do not show (a stress one).
  const auto* policy =
      dynamic_cast<const ModelCheckpointPolicy*>(callbacks_.find("model_checkpoint"));
  const auto restored_best_value = [&] {
    return policy && std::isfinite(policy->best()) ? detail::concat(", ", policy->best())
                                                   : std::string();
  };
  if (weights_epoch_)
    report.weights_note = detail::concat(
        "The model holds the weights of epoch ", *weights_epoch_, " of ", epochs_done_,
        ", restored by --restore-best (the best ", options_.checkpoint_monitor, restored_best_value(),
        "): the metrics below score those weights, not the last epoch's.");
  write_report(run_dir_, report);
  std::cout << format_metrics_table(final_val);
  std::cout << "model: " << (fs::path(run_dir_) / "model.safetensors").string() << " (threshold "
            << format_threshold(threshold.threshold) << ", " << metadata_.threshold_rule << ")\n";
  std::cout << "run: " << seconds_text(seconds_since(started_))
            << " s from start to model and report written (training steps "
            << seconds_text(train_seconds_) << " s, validation passes "
            << seconds_text(val_seconds_)
            << " s; the rest is start-up, data, checkpoints"
            << (final_pass ? " and the final validation pass)\n" : ")\n");
  // On CUDA, what the tuning cache spared the run (the first epoch pays for what it did not).
  const std::string cache = describe_tuning_cache(backend_->report(options_.batch));
  if (!cache.empty()) std::cerr << cache << "\n";
  const Device device = backend_->device();
  std::cerr << "memory: at most " << (memory_stats(device).peak >> 20) << " MiB of "
            << (device == Device::Cuda ? "device" : "host")
            << " memory held by pneumo's arrays (images, model, optimizer, workspace)\n";
  if (stop_on_signal_->stop().load())
    std::cerr << "pneumo: " << stop_on_signal_->signal_name()
              << " came as the run was finishing; it finished: the model and report are written\n";
  return 0;
}

// Rank 0 writes; the ranks hold the same weights (their gradients were added up before every
// update) and rank 0's batch-norm running averages (broadcast at every epoch's end).
std::shared_ptr<const CheckpointData> TrainingRun::snapshot(int epochs_done,
                                                            const EpochStats* partial) {
  if (!writer()) return nullptr;
  metadata_.epoch = epochs_done;
  metadata_.weights_epoch = weights_epoch_.value_or(epochs_done);
  metadata_.step = steps_done_;
  metadata_.epoch_step = partial ? partial->steps : 0;
  metadata_.epoch_loss_sum = partial ? partial->loss_sum : 0.0;
  metadata_.epoch_correct = partial ? partial->correct : 0.0;
  metadata_.epoch_seconds = partial ? partial->seconds : 0.0;
  // Several ranks: each one's own sums, so that as many ranks resuming add up bit for bit as the
  // uninterrupted run (rank 0 carrying the total rounded the epoch's loss in its last digits).
  metadata_.extra.erase("epoch_rank_sums");
  if (partial && group_->size() > 1) {
    std::string sums;
    for (double value : partial->rank_sums) sums += (sums.empty() ? "" : ",") + exact_text(value);
    metadata_.extra["epoch_rank_sums"] = sums;
  }
  metadata_.learning_rate = control_.learning_rate;
  metadata_.callback_state = callbacks_.state();
  auto state = std::make_shared<CheckpointData>(
      capture_checkpoint(*model_, &trainer_->optimizer_state(), metadata_));
  // Never overwrite a good checkpoint with weights that went bad without the loss showing it.
  const std::string bad = first_invalid_value(*state);
  if (!bad.empty())
    throw Error(detail::concat("the model's state went bad during epoch ",
                               epochs_done + (partial ? 1 : 0), " (", bad, "); nothing was "
                               "written; ", last_good_checkpoint(), ". Try a lower --lr."));
  return state;
}

void TrainingRun::write(const std::string& name, std::shared_ptr<const CheckpointData> state) {
  if (!state) return;  // not rank 0
  post_file([path = (fs::path(run_dir_) / name).string(), state] {
    save_checkpoint(path, *state);
  });
}

void TrainingRun::post_file(std::function<void()> task) {
  if (files_.failed()) drain_files();  // throws
  try {
    files_.post(std::move(task));
  } catch (const Error& e) {  // a failure since the look
    throw write_failed(e);
  }
}

void TrainingRun::drain_files() {
  try {
    files_.drain();
  } catch (const Error& e) {
    throw write_failed(e);
  }
}

Error TrainingRun::write_failed(const Error& failure) {
  const std::string good = last_good_checkpoint();
  return Error(detail::concat(failure.what(), "; the run stopped (", good,
                              good.rfind("no checkpoint", 0) == 0
                                  ? "; free the space or fix the folder, then start it again)"
                                  : "; free the space or fix the folder, then resume it)"));
}

std::string TrainingRun::latest_checkpoint() const {
  std::error_code error;
  return fs::exists(last_path_, error) ? last_path_ : options_.resume;
}

std::string TrainingRun::last_good_checkpoint() {
  files_.drain();
  const std::string path = latest_checkpoint();
  if (path.empty()) {
    // The first epoch's best checkpoint may be on disk when its last one failed: resumable.
    const std::string best = (fs::path(run_dir_) / "checkpoints" / "best.safetensors").string();
    std::error_code error;
    if (!fs::is_regular_file(best, error)) return "no checkpoint was written yet";
    try {
      return detail::concat("the only checkpoint written is the best one, ", best,
                            " (after epoch ", read_checkpoint_metadata(best).epoch, ")");
    } catch (const Error&) {  // the failure being reported comes first
      return "no checkpoint was written yet";
    }
  }
  const bool written = path == last_path_;
  const CheckpointMetadata last = read_checkpoint_metadata(path);
  return detail::concat(
      "the last good checkpoint is ", path, written ? "" : ", which this run resumed",
      " (after epoch ", last.epoch,
      last.epoch_step > 0 ? detail::concat(" and ", last.epoch_step, " steps of the next")
                          : std::string(),
      ")");
}

int TrainingRun::interrupted(int epochs_done, const EpochStats* partial) {
  drain_files();
  // Every rank names and exits with the same signal, the first rank's (in rank order) that got
  // one: a signal sent to one rank made the others exit 128 and rank 0 say "interrupted by "
  // with no name, and the launcher took whichever status came first. Gathered after rank 0's
  // drain, so no rank ends (and no launcher stops rank 0) before the checkpoint is on disk.
  int signal = stop_on_signal_->signal_number();
  if (group_->size() > 1)
    for (double number : group_->all_gather(std::vector<double>{static_cast<double>(signal)}))
      if (number != 0.0) {
        signal = static_cast<int>(number);
        break;
      }
  if (!writer()) return 128 + signal;
  const std::string latest = latest_checkpoint();
  const std::string& checkpoint = latest.empty() ? last_path_ : latest;
  std::cout << "interrupted by " << stop_signal_name(signal) << " "
            << (partial ? detail::concat("after step ", partial->steps, " of epoch ",
                                         epochs_done + 1)
                        : detail::concat("after epoch ", epochs_done))
            << (checkpoint == last_path_ ? "; checkpoint written to " : "; its checkpoint is ")
            << checkpoint << "\n"
            << (!partial && epochs_done == options_.epochs
                    ? "every epoch is trained, the model is not written yet; write it with: "
                    : "resume with: ")
            << shell_word(program_as_typed()) << " train --resume " << shell_word(checkpoint)
            << "\n"
            << std::flush;
  return 128 + signal;
}

}  // namespace

std::vector<std::string> epoch_metric_names(bool val_stress) {
  std::vector<std::string> names = {"loss", "accuracy"};
  for (const auto& entry : metrics_as_values(MetricsReport{}, "val_")) names.push_back(entry.first);
  if (val_stress)
    for (const auto& entry : stress_as_values(StressReport{}, "val_stress_"))
      names.push_back(entry.first);
  return names;
}

std::string training_memory_advice(const OutOfMemory& error, const BatchFlag& held, int batch,
                                   int val_batch) {
  if (held.batch == 0)  // no batch held yet: a smaller one would not help
    return detail::concat("out of ", error.on_device() ? "GPU" : "host",
                          " memory while reading the data: ", error.what(),
                          "; a smaller --size holds less of it");
  std::string message = out_of_memory_advice(error, held.batch, held.flag);
  const bool validation = std::string(held.flag) == "--val-batch";
  const int asked = validation && val_batch > 0 ? val_batch : batch;
  if (held.batch < asked)
    message += detail::concat(
        " (", validation && val_batch > 0 ? "--val-batch " : "--batch ", asked,
        " is more than the ", held.batch, validation ? " validation images" : " images of an epoch",
        ", so ", validation ? "a validation chunk" : "a step", " holds ", held.batch, ")");
  return message;
}

// One process, or one rank of several: a rank that fails says so, naming itself, and ends every
// rank (MPI_Abort) rather than leave them waiting in a collective; what rank 0 wrote last (each
// file replaced atomically) stays whole.
int run_train(const TrainOptions& options) {
  std::unique_ptr<Communicator> group = make_communicator();
  BatchFlag held{0, "--batch"};  // set once the data is read
  auto advice = [&](const OutOfMemory& error) {
    return training_memory_advice(error, held, options.batch, options.val_batch);
  };
  if (group->size() == 1) {
    try {
      return TrainingRun(options, group, held).run();
    } catch (const OutOfMemory& error) {
      throw Error(advice(error));
    }
  }
  try {
    return TrainingRun(options, group, held).run();
  } catch (const std::exception& e) {
    const bool usage = dynamic_cast<const UsageError*>(&e) != nullptr;
    std::string message = e.what();
    if (const auto* memory = dynamic_cast<const OutOfMemory*>(&e)) message = advice(*memory);
    // One write: the ranks' lines interleaved when each wrote its message in pieces.
    const std::string line = "pneumo: error on rank " + std::to_string(group->rank()) + " of " +
                             std::to_string(group->size()) + ": " + message + "\n";
    std::fwrite(line.data(), 1, line.size(), stderr);
    std::fflush(stderr);
    group->abort(usage ? 2 : 1);
    return usage ? 2 : 1;  // not reached: abort ends every rank
  }
}

}  // namespace pneumo::cli
