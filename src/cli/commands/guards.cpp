// StopOnSignal and out_of_memory_advice (see guards.hpp).
#include "cli/commands/guards.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <filesystem>

#include "core/paths.hpp"
#include "pneumo/data.hpp"
#include "pneumo/error.hpp"
#include "pneumo/safetensors.hpp"

namespace pneumo::cli {

namespace {

// Lock-free atomics are safe to touch from a signal handler.
std::atomic<bool> g_stop{false};
std::atomic<bool> g_announce{true};  // the first signal is said on stderr (rank 0)
std::atomic<int> g_signal{0};
struct sigaction g_previous_int, g_previous_term;
std::atomic<bool> g_installed{false};

extern "C" void on_stop_signal(int number) {
  int none = 0;
  g_signal.compare_exchange_strong(none, number);
  g_stop.store(true);
  // write(2) is safe in a handler (errno kept for the code it interrupted); the run's own line
  // follows at the next point where it can stop.
  if (g_announce.load()) {
    const int saved_errno = errno;
    static const char said[] =
        "\npneumo: stopping at the next point where a checkpoint can be written (a second signal "
        "ends the run at once, leaving the checkpoint written last)\n";
    const ssize_t ignored = ::write(STDERR_FILENO, said, sizeof said - 1);
    (void)ignored;
    errno = saved_errno;
  }
  // The next signal of either kind ends the process at once (SA_RESETHAND resets only the
  // handler of the one delivered: Ctrl-C, then a scheduler's SIGTERM, must not be caught again).
  struct sigaction fallback {};
  fallback.sa_handler = SIG_DFL;
  sigaction(SIGINT, &fallback, nullptr);
  sigaction(SIGTERM, &fallback, nullptr);
}

}  // namespace

StopOnSignal::StopOnSignal(bool announce) {
  static_assert(std::atomic<bool>::is_always_lock_free && std::atomic<int>::is_always_lock_free,
                "the signal handler needs lock-free atomics");
  PNEUMO_CHECK(!g_installed.exchange(true), "only one StopOnSignal may be active");
  g_stop.store(false);
  g_signal.store(0);
  g_announce.store(announce);
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESETHAND;  // the second signal takes the default action: exit now
  sigaction(SIGINT, &action, &g_previous_int);
  sigaction(SIGTERM, &action, &g_previous_term);
}

StopOnSignal::~StopOnSignal() {
  sigaction(SIGINT, &g_previous_int, nullptr);
  sigaction(SIGTERM, &g_previous_term, nullptr);
  g_installed.store(false);
}

const std::atomic<bool>& StopOnSignal::stop() const { return g_stop; }

int StopOnSignal::signal_number() const { return g_signal.load(); }

const char* StopOnSignal::signal_name() const {
  switch (g_signal.load()) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    default: return "";
  }
}

std::string out_of_memory_advice(const OutOfMemory& error, int batch, const std::string& flag) {
  const char* where = error.on_device() ? "GPU" : "host";
  std::string message = detail::concat("out of ", where, " memory with batch size ", batch, ": ",
                                       error.what(), "; ");
  if (batch > 1)
    message += detail::concat("try a smaller batch, e.g. ", flag, " ", batch / 2);
  else
    message += "even one image per step does not fit in the free memory";
  return message;
}

void require_new_or_empty_folder(const std::string& folder, const std::string& what,
                                 const std::string& flag, const std::string& why) {
  std::error_code error;
  if (!std::filesystem::exists(folder, error)) return;
  if (!std::filesystem::is_directory(folder, error))
    throw Error(what + " '" + folder + "' is a file, not a folder: give a new or empty " + flag);
  if (!std::filesystem::is_empty(folder, error))
    throw Error(what + " '" + folder + "' is not empty: give a new or empty " + flag + " (" + why +
                ")");
}

namespace {

// The files `pneumo train` writes in a run directory (besides checkpoints/).
constexpr const char* kRunFiles[] = {"config.json", "history.csv", "history.jsonl",
                                     "metrics_val.json", "report.md", "loss.svg",
                                     "accuracy.svg", "roc.svg", "model.safetensors", ".lock"};

bool is_run_directory(const std::filesystem::path& folder) {
  std::error_code error;
  return std::filesystem::is_regular_file(folder / "config.json", error) &&
         (std::filesystem::is_directory(folder / "checkpoints", error) ||
          std::filesystem::exists(folder / ".lock", error));
}

}  // namespace

void refuse_replacing_pneumo_state(const std::string& path, const std::string& flag) {
  namespace fs = std::filesystem;
  std::error_code error;
  if (path.empty() || !fs::is_regular_file(path, error)) return;
  // Where the bytes would go: a link's target is what the write replaces.
  const fs::path file = resolved(path);
  const fs::path folder = file.parent_path();
  const std::string name = file.filename().string();
  const bool run_file = std::find(std::begin(kRunFiles), std::end(kRunFiles), name) !=
                        std::end(kRunFiles);
  std::string what;
  if (starts_like_safetensors(file.string()))
    what = "a model or checkpoint (safetensors)";
  else if (run_file && is_run_directory(folder))
    what = "a file of the run directory " + folder.string();
  else if (folder.filename() == "checkpoints" && is_run_directory(folder.parent_path()))
    what = "a file of the run directory " + folder.parent_path().string();
  else if (is_file_of_a_cache(file.string()))
    what = "a file of the prepared cache " + folder.string();
  if (!what.empty())
    throw UsageError(flag + " " + path + (path == file.string() ? "" : " (" + file.string() + ")") +
                     " exists and is " + what + "; pneumo does not overwrite it: give another "
                     "file");
}

}  // namespace pneumo::cli
