// The run directory of `pneumo train` (run_folder.hpp).
#include "cli/commands/run_folder.hpp"

#include <ctime>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <system_error>

#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "core/paths.hpp"
#include "pneumo/checkpoint.hpp"
#include "pneumo/error.hpp"
#include "pneumo/progress.hpp"

namespace pneumo::cli {

namespace fs = std::filesystem;

std::string claim_default_run_dir() {
  std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  std::ostringstream stamp;
  stamp << "runs/" << std::put_time(&local, "%Y%m%d-%H%M%S");
  std::error_code error;
  fs::create_directories("runs", error);
  if (error) throw Error("cannot create the folder runs/ for the run: " + error.message());
  for (int k = 1; k <= 1000; ++k) {
    const std::string name = k == 1 ? stamp.str() : stamp.str() + "-" + std::to_string(k);
    if (fs::create_directory(name, error)) return name;
    if (error) throw Error("cannot create run directory '" + name + "': " + error.message());
  }
  throw Error("runs/ holds 1000 runs named " + stamp.str() + "-*; give --out");
}

void RunDirLock::acquire(const std::string& dir) {
  if (held_) return;
  const std::string path = (fs::path(dir) / ".lock").string();
  if (!lock_.try_acquire(path))
    throw Error("run directory '" + dir + "' is in use: another pneumo train is writing it "
                "(it holds " + path + "); choose another --out, or wait for that run to end");
  held_ = true;
}

bool best_checkpoint_written_here(const std::string& dir) {
  const fs::path best = fs::path(dir) / "checkpoints" / "best.safetensors";
  std::error_code error;
  if (!fs::exists(best, error)) return false;
  try {
    const nlohmann::json& config = read_checkpoint_metadata(best.string()).config;
    return !(config.is_object() && config.contains("out") && config["out"].is_string() &&
             !same_folder(config["out"].get<std::string>(), dir));
  } catch (const Error&) {
    return true;  // unreadable: not a failed start's to delete
  }
}

namespace {

// What a folder holds of the files a run writes before its first checkpoint (see
// holds_only_a_failed_start), found in one walk.
struct StartFiles {
  bool other = false;             // anything else, or a folder that could not be read
  bool lock = false;              // .lock
  bool checkpoints = false;       // checkpoints/
  bool checkpoint_files = false;  // in checkpoints/: anything but best.safetensors and temporaries
  bool best = false;              // checkpoints/best.safetensors
  bool temporaries = false;       // in checkpoints/: a killed write's temporary file
  bool history_rows = false;      // a history file with a row, or one that cannot be read
};

// True when a history file holds a row: anything more than what a run writes before its first
// epoch (an empty history.jsonl, a history.csv with its header alone). One that cannot be read
// counts as holding rows.
bool history_has_rows(const fs::path& file) {
  std::error_code error;
  if (file.filename() == "history.jsonl") return fs::file_size(file, error) != 0 || error;
  try {
    return !read_history_csv(file.string()).empty();
  } catch (const Error&) {
    return true;
  }
}

StartFiles look_for_start_files(const std::string& dir) {
  StartFiles found;
  std::error_code error;
  // A check that fails counts as something else: each has its own error code, since one that
  // succeeds clears the code it is given (a checkpoints/ that could not be listed looked empty).
  auto is_a = [&](const fs::directory_entry& entry, fs::file_type type) {
    std::error_code status_error;
    const fs::file_status status = entry.status(status_error);
    if (status_error) found.other = true;
    return !status_error && status.type() == type;
  };
  for (const auto& entry : fs::directory_iterator(dir, error)) {
    const std::string name = entry.path().filename().string();
    if (name == ".lock" && is_a(entry, fs::file_type::regular)) {
      found.lock = true;
    } else if (name == "config.json" && is_a(entry, fs::file_type::regular)) {
      // a new run's settings: nothing to look at
    } else if ((name == "history.csv" || name == "history.jsonl") &&
               is_a(entry, fs::file_type::regular)) {
      found.history_rows = found.history_rows || history_has_rows(entry.path());
    } else if (name == "checkpoints" && is_a(entry, fs::file_type::directory)) {
      found.checkpoints = true;
      std::error_code list_error;
      for (const auto& file : fs::directory_iterator(entry.path(), list_error)) {
        const std::string inside = file.path().filename().string();
        if (inside == "best.safetensors")
          found.best = true;
        else if (is_atomic_write_temporary(inside))
          found.temporaries = true;
        else
          found.checkpoint_files = true;
      }
      if (list_error) found.other = true;
    } else {
      found.other = true;
    }
    if (found.other) break;
  }
  if (error) found.other = true;  // the folder could not be listed
  return found;
}

}  // namespace

bool holds_only_a_failed_start(const std::string& dir) {
  const StartFiles found = look_for_start_files(dir);
  return !found.other && found.lock && found.checkpoints && !found.checkpoint_files &&
         !(found.best && best_checkpoint_written_here(dir));
}

void remove_unused_run_dir(const std::string& dir) {
  const StartFiles found = look_for_start_files(dir);
  if (found.other || found.checkpoint_files || found.best || found.temporaries ||
      found.history_rows)
    return;
  std::error_code error;
  for (const char* name : {"checkpoints", "history.csv", "history.jsonl", "config.json", ".lock"})
    fs::remove(fs::path(dir) / name, error);
  fs::remove(dir, error);
}

namespace {

// A temporary ("NAME.tmp.XXXXXX") of a kind of file a run writes: checkpoints and the model,
// config and metrics, the history, the report and its plots.
bool written_by_a_run(const std::string& temporary) {
  const std::string name = temporary.substr(0, temporary.rfind(".tmp."));
  for (const char* kind : {".safetensors", ".json", ".jsonl", ".csv", ".md", ".svg"}) {
    const std::string ending = kind;
    if (name.size() > ending.size() &&
        name.compare(name.size() - ending.size(), ending.size(), ending) == 0)
      return true;
  }
  return false;
}

}  // namespace

bool same_folder(const std::string& a, const std::string& b) {
  std::error_code error;
  return !a.empty() && !b.empty() && fs::equivalent(a, b, error) && !error;
}

void prepare_run_dir(const std::string& dir, const std::string& resuming, RunDirLock& lock) {
  std::error_code error;
  // A link to nowhere (creating the folder said "File exists").
  if (const std::string nowhere = why_a_link_leads_nowhere(dir); !nowhere.empty())
    throw Error("run directory '" + dir + "' " + nowhere + "; choose another --out");
  const bool exists = fs::exists(dir, error);
  if (error)  // a name too long, a folder on the way that cannot be searched
    throw Error("run directory '" + dir + "': " + error.message() + "; choose another --out");
  if (exists && !fs::is_directory(dir, error))
    throw Error("run directory '" + dir + "' is a file, not a folder; choose another --out");
  // A live run's folder is said to be one first, whatever it holds by then: once it has a
  // checkpoint, the refusal below would suggest a --resume that its lock then refuses. Only a
  // lock file pneumo made is tried (trying makes one, which a stranger's folder must not get).
  if (exists && fs::is_regular_file(fs::path(dir) / ".lock", error)) lock.acquire(dir);
  const bool fresh = !exists || fs::is_empty(dir, error) || holds_only_a_failed_start(dir);
  const std::string last = (fs::path(dir) / "checkpoints" / "last.safetensors").string();
  const std::string best = (fs::path(dir) / "checkpoints" / "best.safetensors").string();
  if (!fresh && resuming.empty())
    throw Error("run directory '" + dir + "' already holds files; choose another --out" +
                (fs::is_regular_file(last, error)   ? ", or continue it with --resume " + last
                 : best_checkpoint_written_here(dir) ? ", or continue it with --resume " + best +
                                                          " (its run stopped between writing its "
                                                          "best checkpoint and its last)"
                                                    : std::string()));
  if (!fresh && !same_folder(dir, resumed_run_dir(resuming)))
    throw Error("run directory '" + dir + "' " +
                (is_run_directory(dir) ? "holds another run than the one " + resuming +
                                             " belongs to"
                                       : "already holds files, and is not the run directory " +
                                             resuming + " belongs to") +
                "; a resumed run writes into its own run directory or a new --out");
  fs::create_directories(fs::path(dir) / "checkpoints", error);
  if (error)
    throw Error((exists ? "cannot create " + (fs::path(dir) / "checkpoints").string() +
                              " in the run directory '" + dir + "'"
                        : "cannot create run directory '" + dir + "'") +
                ": " + error.message() + "; choose another --out");
  // The folders' entries durable, as the files written atomically in them are.
  const fs::path parent = fs::absolute(dir, error).parent_path();
  for (const fs::path& folder : {parent, fs::path(dir)}) sync_directory(folder.string());
  lock.acquire(dir);
  // A failed start's files are this run's to replace: a new run's history starts empty, and a
  // best checkpoint carried over by a failed resume is not this run's (a resume carries its own
  // from its run directory; one of a checkpoint without a run directory starts without them: kept,
  // another run's rows and best stood beside this one's).
  if (resuming.empty() || !same_folder(dir, resumed_run_dir(resuming)))
    for (const char* name : {"history.csv", "history.jsonl", "checkpoints/best.safetensors"})
      fs::remove(fs::path(dir) / name, error);
  // A killed write's temporary file (a checkpoint, model.safetensors, the history, the report),
  // whether the run starts again or resumes (the lock says no live run is writing it): only
  // temporaries of the kinds of file a run writes, not a stranger's draft.tex.tmp.abc123.
  for (const fs::path& folder : {fs::path(dir), fs::path(dir) / "checkpoints"})
    for (const auto& entry : fs::directory_iterator(folder, error)) {
      const std::string name = entry.path().filename().string();
      if (is_atomic_write_temporary(name) && written_by_a_run(name)) fs::remove(entry.path(), error);
    }
  std::ofstream probe(fs::path(dir) / ".write-test");
  if (!probe) throw Error("run directory '" + dir + "' is not writable");
  probe.close();
  fs::remove(fs::path(dir) / ".write-test", error);
}

void carry_over_run_files(const std::string& checkpoint, const std::string& run_dir,
                          int first_epoch, int epochs, const std::string& monitor) {
  const std::string source = resumed_run_dir(checkpoint);
  if (same_folder(source, run_dir)) {
    // In place the best checkpoint stays: one that cannot be read would end a run that trains
    // on as its best (only --restore-best reads it before the end, and says so itself).
    const fs::path best = fs::path(run_dir) / "checkpoints" / "best.safetensors";
    std::error_code error;
    if (!fs::is_regular_file(best, error)) return;
    int best_epoch = 0;
    try {
      best_epoch = read_checkpoint_metadata(best.string()).epoch;
    } catch (const Error& e) {
      if (first_epoch > 0 && first_epoch < epochs)
        throw Error(std::string("the run's best checkpoint cannot be read: ") + e.what() +
                    "; put back a good copy, or remove it to resume without one (a new one is "
                    "written when an epoch beats the best " + monitor + " so far)");
      return;
    }
    // One of a later epoch than the one resumed: the run stopped between writing its best
    // checkpoint and its last. It stays (it beat every epoch the resumed checkpoint holds, and a
    // sweep's views read it), but the history will not hold its epoch as it ran, and an epoch
    // retrained that beats the best value of the resumed epochs replaces it even if it scores
    // below it: the note says so, and how to go on from it instead.
    if (best_epoch > first_epoch) {
      const std::string resumed =
          first_epoch == 0 ? std::string("after the checkpoint resumed, which holds no whole epoch")
                           : detail::concat("after the epoch resumed (", first_epoch, ")");
      const std::string until =
          first_epoch >= epochs ? std::string("(no epoch is left to train)")
          : first_epoch == 0    ? std::string("until the retrained epoch 1 replaces it")
          : first_epoch == 1
              ? "until a retrained epoch beats the best " + monitor + " of epoch 1"
              : detail::concat("until a retrained epoch beats the best ", monitor,
                               " of epochs 1 to ", first_epoch);
      std::cerr << "note: " << best.string() << " is of epoch " << best_epoch << ", " << resumed
                << ": its run stopped between writing its best and its last checkpoint. It stays "
                << "the run's best checkpoint " << until << " (the history will not hold its "
                << "epoch as it ran); to go on from it instead, resume " << best.string() << "\n";
    }
    return;
  }
  const auto no_best = [&](const std::string& why) {
    // No epoch done: no best yet. None left to train: the folder gets no best checkpoint at all.
    if (first_epoch == 0) return;
    if (first_epoch >= epochs) {
      std::cerr << "note: " << why << "; no epoch is left to train, so this folder gets no best "
                << "checkpoint\n";
      return;
    }
    const fs::path best = fs::path(run_dir) / "checkpoints" / "best.safetensors";
    std::cerr << "note: " << why << ", so " << best.string()
              << " is written only when an epoch beats the best " << monitor << " of "
              << (first_epoch == 1 ? std::string("epoch 1")
                                   : detail::concat("epochs 1 to ", first_epoch))
              << " (the checkpoint remembers its value, not its weights)\n";
  };
  if (source.empty()) {
    // A checkpoint on its own: nothing of its run comes along, and the run says so once.
    if (first_epoch > 0)
      std::cerr << "note: " << checkpoint << " lies outside a run directory, so the history of "
                << "its " << first_epoch << (first_epoch == 1 ? " epoch" : " epochs")
                << " does not come along (" << (fs::path(run_dir) / "history.csv").string()
                << " starts at its epoch " << first_epoch << ", counted from 0)\n";
    no_best("no best checkpoint comes with " + checkpoint);
    return;
  }
  for (const char* name : {"history.csv", "history.jsonl", "checkpoints/best.safetensors"}) {
    const fs::path from = fs::path(source) / name, to = fs::path(run_dir) / name;
    const bool best = to.filename() == "best.safetensors";
    std::error_code error;
    fs::remove(to, error);
    if (!fs::is_regular_file(from, error)) {
      if (best) no_best(detail::concat(from.string(), " is missing"));
      continue;
    }
    // Copied under a temporary name (a temporary the next run here removes), checked there, then
    // renamed: a live source run may replace its best between a check of the source and the copy,
    // and a copy stopped half-way must not stand under the final name.
    const fs::path copy = to.string() + ".tmp.carry0";
    fs::copy_file(from, copy, fs::copy_options::overwrite_existing, error);
    if (error)
      throw Error("cannot copy " + from.string() + " into the new run directory: " +
                  error.message());
    if (best) {
      const int best_epoch = read_checkpoint_metadata(copy.string()).epoch;
      if (best_epoch > first_epoch) {
        fs::remove(copy, error);
        no_best(detail::concat(from.string(), " is of epoch ", best_epoch, ", after the epoch "
                               "resumed (", first_epoch, "), and not carried over"));
        continue;
      }
    }
    // On disk before its name: after a power loss the rename could stand with the data lost (a
    // history that reads as no rows, made permanent by the next rewrite).
    sync_file(copy.string());
    fs::rename(copy, to, error);
    if (error)
      throw Error("cannot copy " + from.string() + " into the new run directory: " +
                  error.message());
    sync_directory(to.parent_path().string());
  }
}

namespace {

// What is wrong with the config.json of a folder that holds a run's .lock ("" when it reads as a
// run's: an object with data and epochs).
std::string config_problem(const fs::path& folder) {
  const fs::path file = folder / "config.json";
  std::error_code error;
  if (!fs::exists(file, error)) return file.string() + " is missing";
  std::ifstream in(file);
  if (!in) return file.string() + " cannot be read";
  const nlohmann::json config = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded()) return file.string() + " is not valid JSON";
  if (!config.is_object() || !config.contains("data") || !config.contains("epochs"))
    return file.string() + " is not a run's config (an object with data and epochs)";
  return "";
}

// The folder a checkpoint's run would be: above checkpoints/, else the checkpoint's own folder.
fs::path candidate_run_dir(const std::string& checkpoint) {
  fs::path folder = fs::path(checkpoint).parent_path();
  // "last.safetensors" or "./last.safetensors" typed inside RUN/checkpoints: the folder's name
  // is only known from the absolute path.
  if (folder.empty() || folder.filename() == "." || folder.filename() == "..")
    folder = fs::absolute(checkpoint).lexically_normal().parent_path();
  if (folder.filename() == "checkpoints")
    return folder.has_parent_path() ? folder.parent_path() : fs::path(".");
  return folder.empty() ? fs::path(".") : folder;
}

}  // namespace

bool is_run_directory(const fs::path& folder) {
  std::error_code error;
  return fs::is_regular_file(folder / ".lock", error) && config_problem(folder).empty();
}

std::string resumed_run_dir(const std::string& checkpoint) {
  const fs::path run = candidate_run_dir(checkpoint);
  return is_run_directory(run) ? run.string() : std::string();
}

void refuse_resuming_a_damaged_run(const std::string& checkpoint) {
  const fs::path run = candidate_run_dir(checkpoint);
  std::error_code error;
  // A run's .lock beside the history every epoch writes: another tool's .lock alone (a project
  // folder a checkpoint was copied into) is no run, and such a checkpoint resumes on its own.
  if (!fs::is_regular_file(run / ".lock", error) ||
      !(fs::is_regular_file(run / "history.jsonl", error) ||
        fs::is_regular_file(run / "history.csv", error)))
    return;
  const std::string problem = config_problem(run);
  if (problem.empty()) return;
  throw Error(checkpoint + " lies in the run directory " + run.string() + " (it holds a run's "
              ".lock and history), but " + problem + ", so the run's history and best checkpoint "
              "cannot come along: put back its config.json, or copy the checkpoint out of the "
              "folder to resume it on its own (into a new run folder, without them)");
}

}  // namespace pneumo::cli
