// Running the `pneumo` binary from tests: to completion (exit status + combined output), or in the
// background so a test can signal it while it works. The tree cache always goes to `cache_root`
// (PNEUMO_CACHE_DIR), never to ~/.cache.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace pneumo::testing {

struct CommandResult {
  int status = -1;     // exit status; -1 when the process did not exit normally
  int signal = 0;      // the signal that killed it, if one did
  std::string output;  // stdout and stderr together
};

inline CommandResult decode_wait_status(int raw, std::string output) {
  CommandResult result;
  result.output = std::move(output);
  if (WIFEXITED(raw)) result.status = WEXITSTATUS(raw);
  if (WIFSIGNALED(raw)) result.signal = WTERMSIG(raw);
  return result;
}

// Runs a shell command line and waits for it; output is stdout and stderr together.
inline CommandResult run_command(const std::string& command_line) {
  std::string output;
  FILE* pipe = popen((command_line + " 2>&1").c_str(), "r");
  if (!pipe) return {};
  std::array<char, 4096> buffer{};
  size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) output.append(buffer.data(), n);
  return decode_wait_status(pclose(pipe), std::move(output));
}

// Runs `pneumo ARGS` and waits for it.
inline CommandResult pneumo_command(const std::string& args, const std::string& cache_root) {
  return run_command("PNEUMO_CACHE_DIR='" + cache_root + "' '" PNEUMO_BINARY "' " + args);
}

// `pneumo ARGS...` started in the background with stdout and stderr going to `log_file`.
class BackgroundPneumo {
 public:
  // `program` (found on PATH unless it holds a '/') runs instead of pneumo: e.g. python3 with a
  // script that starts pneumo itself.
  BackgroundPneumo(const std::vector<std::string>& args, const std::string& cache_root,
                   const std::string& log_file, const std::string& program = PNEUMO_BINARY)
      : log_file_(log_file) {
    std::vector<std::string> argv_storage{program};
    argv_storage.insert(argv_storage.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_storage) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env_storage{"PNEUMO_CACHE_DIR=" + cache_root};
    for (char** e = environ; *e; ++e)
      if (std::string(*e).rfind("PNEUMO_CACHE_DIR=", 0) != 0) env_storage.emplace_back(*e);
    std::vector<char*> env;
    for (auto& e : env_storage) env.push_back(e.data());
    env.push_back(nullptr);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    if (posix_spawnp(&pid_, program.c_str(), &actions, nullptr, argv.data(), env.data()) != 0)
      pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
  }
  ~BackgroundPneumo() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      int ignored;
      ::waitpid(pid_, &ignored, 0);
    }
  }
  BackgroundPneumo(const BackgroundPneumo&) = delete;
  BackgroundPneumo& operator=(const BackgroundPneumo&) = delete;

  bool started() const { return pid_ > 0; }
  std::string log() const {
    std::ifstream in(log_file_);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
  // Polls the log until it contains `text` (true) or the process ends or time runs out (false).
  bool wait_for_output(const std::string& text, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (log().find(text) != std::string::npos) return true;
      int raw;
      if (::waitpid(pid_, &raw, WNOHANG) == pid_) {
        reaped_ = true;
        raw_status_ = raw;
        return log().find(text) != std::string::npos;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
  void send(int signal_number) {
    if (!reaped_) ::kill(pid_, signal_number);
  }
  // Waits for the process to end (killing it after `timeout`) and returns how it ended.
  CommandResult wait(std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!reaped_) {
      int raw;
      if (::waitpid(pid_, &raw, WNOHANG) == pid_) {
        reaped_ = true;
        raw_status_ = raw;
        break;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &raw_status_, 0);
        reaped_ = true;
        CommandResult timed_out = decode_wait_status(raw_status_, log());
        timed_out.output += "\n[test: killed after the timeout]";
        return timed_out;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return decode_wait_status(raw_status_, log());
  }

 private:
  std::string log_file_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  int raw_status_ = 0;
};

}  // namespace pneumo::testing
