// The run directory of `pneumo train`: its default name, the lock a live run holds on it, which
// folders a new or resumed run may write into, and what a resume into a new folder carries over.
#pragma once

#include <filesystem>
#include <string>

#include "core/file_lock.hpp"

namespace pneumo::cli {

// runs/<date>-<time>, made here so that it is this run's: a run started in the same second (one
// seed per core from a loop) takes runs/<date>-<time>-2, -3, ...
std::string claim_default_run_dir();

// Held by the run writing a run directory, for as long as it runs (an exclusive flock on
// DIR/.lock, released by the system when the process ends, however it ends): a second run, or a
// resume, aimed at a live run's folder is refused instead of mixing its files with the first's.
class RunDirLock {
 public:
  void acquire(const std::string& dir);

 private:
  FileLock lock_;
  bool held_ = false;
};

// True when `dir` holds what a run that failed before its first checkpoint leaves, and nothing
// else: the lock file and checkpoints/ (both made before anything else), perhaps config.json and
// the history files (a new run's headers; a resume into a new folder carries the resumed run's
// rows and best checkpoint over before training, see carry_over_run_files, so checkpoints/ may
// hold that run's best.safetensors; one this folder's own run wrote, whose `out` is this folder,
// is a whole epoch left by a run stopped between writing its best and its last checkpoint, see
// best_checkpoint_written_here). Fixing a flag and running again then needs no clean-up; a folder
// without the lock and checkpoints/ was not left by pneumo (its config.json may be someone's
// own). A live run's folder looks the same during its first epoch: its lock tells them apart.
// A checkpoint's temporary file (is_atomic_write_temporary) that a process killed while writing
// its first checkpoint left counts as nothing written. (scripts/experiments.py applies the same
// rule to the run folders of a sweep.)
bool holds_only_a_failed_start(const std::string& dir);
// checkpoints/best.safetensors exists and was not carried over from another run's folder (its
// config's `out` names `dir`, or cannot be read).
bool best_checkpoint_written_here(const std::string& dir);

// True when `a` and `b` name the same existing folder.
bool same_folder(const std::string& a, const std::string& b);

// Removes `dir` when it holds no more than a run stopped before its first checkpoint leaves
// there (.lock, config.json, an empty checkpoints/, history files without a row), and nothing
// else: for the runs/<date>-<time>
// folder a run without --out claimed, whose name no later run reuses (a failed start in a given
// --out stays, for the next run given it). Anything else in the folder keeps it whole.
void remove_unused_run_dir(const std::string& dir);

// A run directory must be new (or empty, or left by a run that failed before training), or the
// one the resumed checkpoint (`resuming`, "" for a new run) belongs to: never another run's.
// Makes it with checkpoints/, takes `lock` on it, and clears what a failed start or a killed
// write left there.
void prepare_run_dir(const std::string& dir, const std::string& resuming, RunDirLock& lock);

// A folder `pneumo train` ran in: the lock file every run makes and a config.json of train's
// flags. A stranger's folder (the parent of a project's own checkpoints/, another tool's
// config.json) is not one: a checkpoint kept there once resumed "in its run directory" and
// rewrote that folder's config.json, history and report, and deleted its *.tmp.* files. The one
// definition for resuming and for the files an output flag may not replace (guards.hpp).
bool is_run_directory(const std::filesystem::path& folder);

// The run directory a checkpoint belongs to, where `train --resume` writes unless --out says
// otherwise: DIR for DIR/checkpoints/NAME.safetensors, and the checkpoint's own folder when that
// is a run directory (it holds config.json: DIR/model.safetensors); "" when it is neither (the
// resumed run then starts a new folder, as a run without --out does).
std::string resumed_run_dir(const std::string& checkpoint);

// Throws an Error naming the file when the folder resumed_run_dir looks in holds a run's .lock and
// history but its config.json is missing, not JSON, or not a run's config: resuming would
// silently start a new run folder without the run's history (its folder is left as it was).
void refuse_resuming_a_damaged_run(const std::string& checkpoint);

// A run resumed into a new --out starts that folder with the resumed run's history and its best
// checkpoint (when that is not of a later epoch than the one resumed), so the folder reads as the
// whole run: the history's earlier rows, best.safetensors for evaluate and --restore-best. What
// a failed start left there (headers, an earlier attempt's copies) is replaced. A best checkpoint
// that cannot come along is said: the new folder gets one only when an epoch beats the best
// value of the epochs resumed, which the checkpoint remembers. Resumed in its own folder, the run
// keeps its best checkpoint; one of a later epoch than the one resumed (its run stopped between
// writing its best and its last checkpoint) gets a note saying what that means.
void carry_over_run_files(const std::string& checkpoint, const std::string& run_dir,
                          int first_epoch, int epochs, const std::string& monitor);

}  // namespace pneumo::cli
