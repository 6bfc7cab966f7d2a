// StopOnSignal and out_of_memory_advice (see guards.hpp).
#include "cli/commands/guards.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <nlohmann/json.hpp>

#include "cli/commands/run_folder.hpp"
#include "core/atomic_file.hpp"
#include "core/paths.hpp"
#include "pneumo/data.hpp"
#include "pneumo/distributed.hpp"
#include "pneumo/error.hpp"
#include "pneumo/safetensors.hpp"

namespace pneumo::cli {

namespace {

// Lock-free atomics are safe to touch from a signal handler.
std::atomic<bool> g_stop{false};
std::atomic<bool> g_announce{true};  // the first signal is said on stderr (rank 0)
std::atomic<int> g_signal{0};
std::atomic<long long> g_first_ns{0};  // CLOCK_MONOTONIC when the first signal came
struct sigaction g_previous_int, g_previous_term;
std::atomic<bool> g_installed{false};

// The same signal again this soon after the first is the same request delivered twice: a runner
// (scripts/experiments.py, `timeout`) forwards what a terminal, a scheduler or a process-group
// kill also sent here directly. A person who wants the run gone at once signals again later.
constexpr long long kEchoWindowNs = 1'000'000'000;

long long monotonic_ns() {  // clock_gettime is async-signal-safe
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<long long>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
}

void write_stderr(const char* text, size_t length) {
  // write(2) is safe in a handler (errno kept for the code it interrupted).
  const int saved_errno = errno;
  const ssize_t ignored = ::write(STDERR_FILENO, text, length);
  (void)ignored;
  errno = saved_errno;
}

extern "C" void on_stop_signal(int number) {
  long long unset = 0;
  g_first_ns.compare_exchange_strong(unset, monotonic_ns());
  int first = 0;
  if (!g_signal.compare_exchange_strong(first, number)) {
    if (number == first && monotonic_ns() - g_first_ns.load() < kEchoWindowNs) return;
    // Another signal: end at once. The default action runs when this handler returns (the
    // signal is blocked while it runs), so the exit status says which signal ended the run.
    struct sigaction fallback {};
    fallback.sa_handler = SIG_DFL;
    sigaction(number, &fallback, nullptr);
    raise(number);
    return;
  }
  g_stop.store(true);
  // The run's own line follows at the next point where it can stop.
  if (g_announce.load()) {
    static const char said[] =
        "\npneumo: stopping at the next point where a checkpoint can be written (another signal "
        "ends the run at once, leaving the checkpoint written last; the same one again within a "
        "second counts as this one)\n";
    write_stderr(said, sizeof said - 1);
  }
}

// Installed with SA_RESETHAND: the default action is back when it runs, so raise() ends the
// process by the signal itself.
extern "C" void on_ending_signal(int number) {
  static const char interrupted[] = "\npneumo: stopped by SIGINT before the command finished\n";
  static const char terminated[] = "\npneumo: stopped by SIGTERM before the command finished\n";
  if (number == SIGINT)
    write_stderr(interrupted, sizeof interrupted - 1);
  else
    write_stderr(terminated, sizeof terminated - 1);
  raise(number);
}

}  // namespace

void say_when_a_signal_ends_the_command() {
  // Under mpirun every rank gets the signal: rank 0 speaks for them, as StopOnSignal's does.
  if (launcher_rank() > 0) return;
  for (const int number : {SIGINT, SIGTERM}) {
    struct sigaction current {};
    sigaction(number, nullptr, &current);
    if (current.sa_handler == SIG_IGN) continue;  // ignored (nohup, a background job): stays so
    struct sigaction action {};
    action.sa_handler = on_ending_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESETHAND;
    sigaction(number, &action, nullptr);
  }
}

StopOnSignal::StopOnSignal(bool announce) {
  static_assert(std::atomic<bool>::is_always_lock_free && std::atomic<int>::is_always_lock_free &&
                    std::atomic<long long>::is_always_lock_free,
                "the signal handler needs lock-free atomics");
  PNEUMO_CHECK(!g_installed.exchange(true), "only one StopOnSignal may be active");
  g_stop.store(false);
  g_signal.store(0);
  g_first_ns.store(0);
  g_announce.store(announce);
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  // Each kind blocked while the handler runs for either: SIGINT and SIGTERM sent together (a
  // scheduler, `timeout`) nested the second's handler inside the first's, which then took the
  // second for the first request and the first for "another signal". Now the first delivered is
  // the request, and the other is handled after it.
  sigemptyset(&action.sa_mask);
  sigaddset(&action.sa_mask, SIGINT);
  sigaddset(&action.sa_mask, SIGTERM);
  action.sa_flags = 0;  // stays installed: the handler tells an echo from a second request
  sigaction(SIGINT, &action, &g_previous_int);
  sigaction(SIGTERM, &action, &g_previous_term);
}

StopOnSignal::~StopOnSignal() {
  // The process is ending on a stop request; an echo of it may still be on its way (the window
  // above) and must not kill the orderly exit: that signal goes straight from this handler to
  // ignored (the other kind, or a later SIGKILL, still ends a process that hangs from here on).
  const int stopped_by = g_signal.load();
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGINT, stopped_by == SIGINT ? &ignore : &g_previous_int, nullptr);
  sigaction(SIGTERM, stopped_by == SIGTERM ? &ignore : &g_previous_term, nullptr);
  g_installed.store(false);
}

const std::atomic<bool>& StopOnSignal::stop() const { return g_stop; }

int StopOnSignal::signal_number() const { return g_signal.load(); }

const char* StopOnSignal::signal_name() const { return stop_signal_name(g_signal.load()); }

const char* stop_signal_name(int signal) {
  switch (signal) {
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
  // A link to nowhere: creating the folder said "File exists".
  if (const std::string nowhere = why_a_link_leads_nowhere(folder); !nowhere.empty())
    throw Error(what + " '" + folder + "' " + nowhere + ": give a new or empty " + flag);
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

}  // namespace

bool same_output_file(const std::string& a, const std::string& b) {
  namespace fs = std::filesystem;
  if (a.empty() || b.empty()) return false;
  std::error_code error;
  const fs::path a_path = fs::weakly_canonical(fs::absolute(a, error), error);
  const fs::path b_path = fs::weakly_canonical(fs::absolute(b, error), error);
  return a == b || (!a_path.empty() && a_path == b_path) || fs::equivalent(a, b, error);
}

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
  else if (has_image_extension(name))
    what = "an image";
  if (!what.empty())
    throw UsageError(flag + " " + path + (path == file.string() ? "" : " (" + file.string() + ")") +
                     " exists and is " + what + "; pneumo does not overwrite it: give another "
                     "file");
}

namespace {

// Where a line starting with `prefix` starts in `text` (npos: none).
size_t line_starting_with(const std::string& text, const std::string& prefix) {
  if (text.rfind(prefix, 0) == 0) return 0;
  const size_t at = text.find("\n" + prefix);
  return at == std::string::npos ? at : at + 1;
}

// Whether `text` (a file's bytes) is what `kind` writes: an earlier output of the same flag,
// written to the file or sent there through standard output after the printed tables
// (`evaluate --json /dev/stdout > out.txt`), so the output may start on a later line.
bool is_earlier_output(const std::string& text, OutputFile kind) {
  switch (kind) {
    case OutputFile::EvaluateJson: {
      const size_t at = line_starting_with(text, "{");
      if (at == std::string::npos) return false;
      const nlohmann::json metrics =
          nlohmann::json::parse(text.substr(at), nullptr, /*allow_exceptions=*/false);
      return metrics.is_object() && metrics.contains("split") && metrics.contains("count") &&
             metrics.contains("default_threshold");
    }
    case OutputFile::EvaluateScores:
      return line_starting_with(text, "index,file,label,") != std::string::npos;
    case OutputFile::BenchJsonLines: {
      const size_t at = line_starting_with(text, "{");
      if (at == std::string::npos) return false;
      const nlohmann::json row = nlohmann::json::parse(
          text.substr(at, text.find('\n', at) - at), nullptr, /*allow_exceptions=*/false);
      return row.is_object() && row.contains("op") && row.contains("median_ms");
    }
    case OutputFile::BenchCsv:
      return line_starting_with(text, "platform,device,op,") != std::string::npos;
  }
  return false;
}

const char* earlier_output_description(OutputFile kind) {
  switch (kind) {
    case OutputFile::EvaluateJson: return "evaluate's metrics JSON";
    case OutputFile::EvaluateScores: return "evaluate's scores CSV";
    case OutputFile::BenchJsonLines: return "bench kernels' JSON rows";
    case OutputFile::BenchCsv: return "bench kernels' CSV";
  }
  return "";
}

}  // namespace

void check_output_file(const std::string& path, const std::string& flag, OutputFile kind) {
  namespace fs = std::filesystem;
  if (path.empty()) return;
  const fs::path folder = fs::path(path).parent_path();
  std::error_code error;
  if (!folder.empty() && !fs::is_directory(folder, error))
    throw Error("cannot write " + flag + " " + path + ": " + folder.string() +
                (fs::exists(folder, error) ? " is not a folder" : " does not exist"));
  if (fs::is_directory(path, error)) throw Error(flag + " " + path + " is a folder; give a file name");
  refuse_replacing_pneumo_state(path, flag);
  // Standard output's own file (`--json /dev/stdout >> log`) is appended to, not replaced.
  if (!fs::is_regular_file(path, error)) return;
  const uintmax_t size = fs::file_size(path, error);
  if (error || size == 0 || is_a_standard_stream_file(path)) return;
  // Outputs are small (an evaluation's JSON, one row per image or kernel): a larger file is no
  // earlier one, and is not read whole to find out.
  constexpr uintmax_t kLargest = 64u << 20;
  std::ifstream in(path, std::ios::binary);
  std::string text;
  if (in && size <= kLargest)
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  if (!in.is_open())
    throw UsageError(flag + " " + path + " exists and cannot be read, so pneumo cannot tell it "
                     "for an earlier output of " + flag + ": give a new file, or remove this one "
                     "first");
  if (!is_earlier_output(text, kind))
    throw UsageError(flag + " " + path + " exists and is not " + earlier_output_description(kind) +
                     " (an earlier one is replaced); pneumo does not overwrite another file: give "
                     "a new file, or remove this one first");
}

void refuse_output_inside_data(const std::string& output, const std::string& what,
                               const std::string& data, bool writes_images) {
  namespace fs = std::filesystem;
  std::error_code error;
  if (output.empty() || data.empty() || !fs::is_directory(data, error)) return;
  const fs::path out = resolved(output), root = resolved(data);
  if (!is_same_or_inside(out, root)) return;
  const std::string choose = "; choose a place outside it";
  if (is_cache_dir(data))
    throw UsageError(what + " lies inside the prepared cache " + data +
                     ", which could then not be prepared again" + choose);
  if (writes_images)
    throw UsageError(what + " lies inside the image tree " + data +
                     ": its PNG images would be read as X-rays by a predict or explain of it" +
                     choose);
  for (const char* split : {"train", "val", "test"})
    if (is_same_or_inside(out, root / split))
      throw UsageError(what + " lies inside " + (root / split).string() +
                       ", a split folder of the image tree " + data +
                       " (its images are the data)" + choose);
}

}  // namespace pneumo::cli
