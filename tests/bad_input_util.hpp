// Helpers for the bad-input tests: running the `pneumo` binary under a time limit (so a hang
// fails the test instead of stalling the suite) and judging how it stopped, and making a small
// cache and a model checkpoint by hand (no OpenCV, no training).
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <initializer_list>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data_test_util.hpp"
#include "pneumo/backend.hpp"
#include "pneumo/checkpoint.hpp"
#include "pneumo/model.hpp"
#include "pneumo/model_checkpoint.hpp"
#include "pneumo/npy.hpp"

namespace pneumo::testing {

// One argument for the shell, quoted whatever it holds (spaces, quotes, UTF-8).
inline std::string shell_quoted(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

struct PneumoRun {
  std::string command;
  int status = -1;     // exit status; 124 or 137 when the time limit struck, 128 + n for signal n
  std::string output;  // stdout and stderr together
};

// Runs `pneumo ARGS` (ARGS already quoted where needed) with its tree cache under `cache_root`,
// killed after `seconds`.
inline PneumoRun run_pneumo(const std::string& args, const std::string& cache_root,
                            int seconds = 120) {
  PneumoRun run;
  run.command = "pneumo " + args;
  const std::string shell = "PNEUMO_CACHE_DIR=" + shell_quoted(cache_root) + " timeout -k 5 " +
                            std::to_string(seconds) + " " + shell_quoted(PNEUMO_BINARY) + " " + args +
                            " 2>&1";
  FILE* pipe = ::popen(shell.c_str(), "r");
  if (!pipe) return run;
  std::array<char, 4096> buffer{};
  for (size_t n; (n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0;)
    run.output.append(buffer.data(), n);
  const int raw = ::pclose(pipe);
  run.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + (WIFSIGNALED(raw) ? WTERMSIG(raw) : 0);
  return run;
}

// Success when the run ended by itself (no time-out, signal or "internal error") with `status`
// and a message holding every one of `parts` (the file, the value).
inline ::testing::AssertionResult stopped_with(const PneumoRun& run, int status,
                                               std::initializer_list<std::string> parts) {
  auto failure = [&](const std::string& why) {
    return ::testing::AssertionFailure() << run.command << "\n  " << why << "; exit status "
                                         << run.status << ", output:\n" << run.output;
  };
  if (run.status == 124 || run.status == 137) return failure("timed out (a hang?)");
  if (run.status > 128) return failure("killed by a signal (a crash)");
  if (run.output.find("internal error") != std::string::npos) return failure("internal error");
  if (run.status != status) return failure("expected exit status " + std::to_string(status));
  for (const std::string& part : parts)
    if (run.output.find(part) == std::string::npos)
      return failure("the message does not mention '" + part + "'");
  return ::testing::AssertionSuccess();
}

// A cache written by hand (the layout of include/pneumo/data.hpp): for each split, `labels[i]`
// gives image i's class; image i is a gradient offset by i; files are named like the dataset's
// (IM-<n>-0001.jpeg for NORMAL, person<n>_virus_1.jpeg for PNEUMONIA, one patient each).
inline void write_cache(const std::filesystem::path& dir, int size,
                        const std::vector<std::pair<std::string, std::vector<uint8_t>>>& splits) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  nlohmann::json meta = {{"format", "pneumo-cache"},
                         {"format_version", 1},
                         {"size", size},
                         {"classes", {"NORMAL", "PNEUMONIA"}},
                         {"splits", nlohmann::json::object()},
                         {"source", {{"hash", "fnv1a64:0000000000000000"}}}};
  const size_t pixels = static_cast<size_t>(size) * static_cast<size_t>(size);
  for (const auto& [name, labels] : splits) {
    const int64_t count = static_cast<int64_t>(labels.size());
    std::vector<uint8_t> images(labels.size() * pixels);
    for (size_t i = 0; i < images.size(); ++i)
      images[i] = static_cast<uint8_t>((i % pixels) * 200 / pixels + (i / pixels) * 7);
    write_npy((dir / (name + "_images.npy")).string(), NpyType::UInt8, {count, size, size},
              images.data());
    write_npy((dir / (name + "_labels.npy")).string(), NpyType::UInt8, {count}, labels.data());
    std::string files;
    int64_t normal = 0;
    for (size_t i = 0; i < labels.size(); ++i) {
      normal += labels[i] == 0;
      files += name + (labels[i] == 0 ? "/NORMAL/IM-" + std::to_string(1000 + i) + "-0001.jpeg"
                                      : "/PNEUMONIA/person" + std::to_string(i) + "_virus_1.jpeg") +
               "\n";
    }
    write_file(dir / (name + "_files.txt"), files);
    meta["splits"][name] = {{"count", count},
                            {"per_class", {{"NORMAL", normal}, {"PNEUMONIA", count - normal}}},
                            {"images", name + "_images.npy"},
                            {"labels", name + "_labels.npy"},
                            {"files", name + "_files.txt"}};
  }
  write_file(dir / "meta.json", meta.dump(2));
}

// `count` labels alternating NORMAL, PNEUMONIA.
inline std::vector<uint8_t> alternating_labels(int count) {
  std::vector<uint8_t> labels(static_cast<size_t>(count));
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<uint8_t>(i % 2);
  return labels;
}

// The seed network at `input_size`, freshly initialised, as a checkpoint (no optimizer state).
inline CheckpointData untrained_checkpoint(int input_size) {
  auto backend = make_cpu_backend(1);
  ModelConfig config;
  config.input_size = input_size;
  Model model(*backend, config, 1);
  model.initialize(7);
  CheckpointMetadata metadata;
  metadata.threshold_rule = "set by the test";
  return capture_checkpoint(model, nullptr, metadata);
}

}  // namespace pneumo::testing
