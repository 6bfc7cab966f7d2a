// No lost work, end to end through the `pneumo` binary on data/sample (CPU backend, 4 steps per
// epoch): a run interrupted inside an epoch (SIGINT, SIGTERM, sent by the process itself through
// --inject-fault or by another process) writes a checkpoint, says how to resume, and the resumed
// run ends bit for bit like an uninterrupted one; a NaN loss or NaN weights stop the run naming the
// step and keep the last good checkpoint.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoint_test_util.hpp"
#include "cli_test_util.hpp"
#include "pneumo/checkpoint.hpp"
#include "temp_dir.hpp"

namespace pneumo {
namespace {

namespace fs = std::filesystem;
using testing::pneumo_command;
using testing::same_tensors;

const std::string kSample = PNEUMO_SOURCE_DIR "/data/sample";
// 32 px: these tests are about stops and resumes, not the recipe's size (at 150 px they took
// 2-3 minutes each under the sanitizers).
const std::string kCommon = " --size 32 --device cpu --threads 2 ";

// history.csv without its time columns (times differ between runs).
// The value of `column` in epoch `epoch`'s row (0-based) of a run's history.csv.
double history_value(const std::string& run, int epoch, const std::string& column) {
  std::istringstream in(testing::read_text(run + "/history.csv"));
  std::vector<std::vector<std::string>> rows;
  for (std::string line; std::getline(in, line);) {
    rows.emplace_back();
    std::istringstream cells(line);
    for (std::string cell; std::getline(cells, cell, ',');) rows.back().push_back(cell);
  }
  const auto& header = rows.at(0);
  const size_t at = static_cast<size_t>(std::find(header.begin(), header.end(), column) - header.begin());
  return std::stod(rows.at(static_cast<size_t>(epoch) + 1).at(at));
}

std::string history_without_times(const std::string& run) {
  std::istringstream in(testing::read_text(run + "/history.csv"));
  std::string line, out;
  std::set<int> time_columns;  // seconds, train_seconds, val_seconds: clocks, not results
  bool header = true;
  while (std::getline(in, line)) {
    std::istringstream cells(line);
    std::string cell;
    int column = 0;
    while (std::getline(cells, cell, ',')) {
      if (header && cell.size() >= 7 && cell.compare(cell.size() - 7, 7, "seconds") == 0)
        time_columns.insert(column);
      if (!time_columns.count(column++)) out += cell + ",";
    }
    header = false;
    out += "\n";
  }
  return out;
}

TEST(CliGuards, RunsInterruptedInsideAnEpochResumeToTheSameWeights) {
  testing::TempDir dir;
  const std::string cache = dir.file("cache");
  auto train = [&](const std::string& run, const std::string& extra) {
    return pneumo_command("train --data " + kSample + " --epochs 2 --out " + dir.file(run) +
                              kCommon + extra,
                          cache);
  };
  auto straight = train("straight", "");
  ASSERT_EQ(straight.status, 0) << straight.output;

  // SIGINT during step 3 of epoch 1, SIGTERM during step 2 of epoch 2 (step 6 of the run).
  struct Case {
    std::string run, fault, signal;
    int status, epoch, epoch_step;
  };
  for (const Case& c : {Case{"int", "sigint@3", "SIGINT", 130, 0, 3},
                        Case{"term", "sigterm@6", "SIGTERM", 143, 1, 2}}) {
    SCOPED_TRACE(c.fault);
    auto stopped = train(c.run, "--inject-fault " + c.fault);
    EXPECT_EQ(stopped.status, c.status) << stopped.output;
    const std::string last = dir.file(c.run) + "/checkpoints/last.safetensors";
    EXPECT_NE(stopped.output.find("interrupted by " + c.signal + " after step " +
                                  std::to_string(c.epoch_step) + " of epoch " +
                                  std::to_string(c.epoch + 1)),
              std::string::npos)
        << stopped.output;
    // The program as it was typed (here the test's absolute path), so the line can be pasted.
    EXPECT_NE(stopped.output.find("resume with: " PNEUMO_BINARY " train --resume " + last),
              std::string::npos)
        << stopped.output;
    EXPECT_FALSE(fs::exists(dir.file(c.run) + "/model.safetensors"));
    const CheckpointMetadata at = read_checkpoint_metadata(last);
    EXPECT_EQ(at.epoch, c.epoch);
    EXPECT_EQ(at.epoch_step, c.epoch_step);
    EXPECT_EQ(at.step, 4 * c.epoch + c.epoch_step);

    auto resumed = pneumo_command("train --resume " + last + kCommon, cache);
    ASSERT_EQ(resumed.status, 0) << resumed.output;
    EXPECT_NE(resumed.output.find("at step " + std::to_string(c.epoch_step) + " of epoch " +
                                  std::to_string(c.epoch + 1)),
              std::string::npos)
        << resumed.output;
    EXPECT_TRUE(same_tensors(last, dir.file("straight") + "/checkpoints/last.safetensors"));
    EXPECT_TRUE(same_tensors(dir.file(c.run) + "/model.safetensors",
                             dir.file("straight") + "/model.safetensors"));
    // The interrupted epoch's loss and accuracy add up as if nothing happened.
    EXPECT_EQ(history_without_times(dir.file(c.run)), history_without_times(dir.file("straight")));
    // ... and its time: the steps before the interruption (recorded in the checkpoint) count in
    // its row, which therefore takes at least that long.
    EXPECT_GT(at.epoch_seconds, 0.0);
    const double train_seconds = history_value(dir.file(c.run), c.epoch, "train_seconds");
    EXPECT_GE(train_seconds, at.epoch_seconds);
    EXPECT_GE(history_value(dir.file(c.run), c.epoch, "seconds"), train_seconds);
  }
}

// A real signal from another process, at a moment the run does not choose.
TEST(CliGuards, ASigtermFromOutsideStopsWithACheckpoint) {
  testing::TempDir dir;
  const std::string run = dir.file("run");
  testing::BackgroundPneumo process({"train", "--data", kSample, "--epochs", "50", "--out", run,
                                     "--size", "32", "--device", "cpu", "--threads", "2"},
                                    dir.file("cache"), dir.file("log.txt"));
  ASSERT_TRUE(process.started());
  // The first epoch's summary line: training is under way and a checkpoint exists.
  ASSERT_TRUE(process.wait_for_output("epoch 1/50  train loss", std::chrono::seconds(300)))
      << process.log();
  process.send(SIGTERM);
  const auto result = process.wait(std::chrono::seconds(120));
  EXPECT_EQ(result.status, 143) << result.output;
  EXPECT_NE(result.output.find("interrupted by SIGTERM"), std::string::npos) << result.output;
  const std::string last = run + "/checkpoints/last.safetensors";
  ASSERT_TRUE(fs::exists(last)) << result.output;
  const CheckpointMetadata at = read_checkpoint_metadata(last);
  EXPECT_GE(at.epoch, 1);
  EXPECT_LT(at.epoch, 50);
}

TEST(CliGuards, ANanStopsTheRunNamingTheStepAndKeepsTheLastGoodCheckpoint) {
  testing::TempDir dir;
  const std::string cache = dir.file("cache");
  struct Case {
    std::string fault, expected;
  };
  // nan@6: the output bias turns NaN before step 6 (step 2 of epoch 2); its loss is NaN.
  // nan-weight@6: a conv1 weight turns NaN; ReLU and max pooling pass it on, so that step's loss
  // is NaN too (before 2026-12-07 pooling hid it until the checkpoint's check).
  // inf-state@6: conv1's first RMSprop mean square turns infinite (that weight's updates become
  // 0): loss, weights and validation stay finite, and the check before epoch 2's checkpoint
  // stops the run.
  for (const Case& c :
       {Case{"nan@6", "the training loss became nan at step 2 of 4 in epoch 2"},
        Case{"nan-weight@6", "the training loss became nan at step 2 of 4 in epoch 2"},
        Case{"inf-state@6", "the model's state went bad during epoch 2 "
                            "(optimizer.rmsprop.mean_square.conv1.weight[0] is inf)"}}) {
    SCOPED_TRACE(c.fault);
    const std::string run = dir.file(c.fault);
    auto result = pneumo_command("train --data " + kSample + " --epochs 3 --out " + run +
                                     kCommon + "--inject-fault " + c.fault,
                                 cache);
    EXPECT_EQ(result.status, 1) << result.output;
    EXPECT_NE(result.output.find(c.expected), std::string::npos) << result.output;
    const std::string last = run + "/checkpoints/last.safetensors";
    EXPECT_NE(result.output.find("the last good checkpoint is " + last + " (after epoch 1)"),
              std::string::npos)
        << result.output;
    EXPECT_EQ(result.output.find("internal error"), std::string::npos) << result.output;
    const CheckpointData kept = load_checkpoint(last);
    EXPECT_EQ(kept.metadata.epoch, 1);
    for (const auto& tensor : kept.tensors)
      for (float v : tensor.values) ASSERT_TRUE(std::isfinite(v)) << tensor.name;
    EXPECT_FALSE(fs::exists(run + "/model.safetensors"));
    std::istringstream history(testing::read_text(run + "/history.csv"));
    std::string line;
    int rows = 0;
    while (std::getline(history, line)) ++rows;
    EXPECT_EQ(rows, 2) << "header + epoch 1 only: the history never runs ahead of the checkpoint";
  }
}

}  // namespace
}  // namespace pneumo
