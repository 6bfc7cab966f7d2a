// End to end through the `pneumo` binary on the bundled sample (data/sample): train, evaluate,
// predict, resume (an interrupted run ends with the same weights as an uninterrupted one), and
// bad flags refused with a message and a non-zero exit. CPU backend, two threads.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "pneumo/checkpoint.hpp"
#include "cli_test_util.hpp"
#include "temp_dir.hpp"

namespace pneumo {
namespace {

namespace fs = std::filesystem;

using testing::CommandResult;
using testing::pneumo_command;

const std::string kSample = PNEUMO_SOURCE_DIR "/data/sample";
const std::string kCommon = " --device cpu --threads 2 ";

TEST(Cli, TrainEvaluatePredictOnTheSample) {
  testing::TempDir dir;
  const std::string run = dir.file("run");
  auto train = pneumo_command("train --data " + kSample + " --epochs 2 --out " + run + kCommon,
                              dir.file("cache"));
  ASSERT_EQ(train.status, 0) << train.output;
  EXPECT_NE(train.output.find("epoch 2/2"), std::string::npos) << train.output;
  for (const char* file : {"config.json", "history.csv", "history.jsonl", "report.md",
                           "model.safetensors", "checkpoints/last.safetensors", "metrics_val.json"})
    EXPECT_TRUE(fs::exists(fs::path(run) / file)) << file;
  std::istringstream history(testing::read_text(run + "/history.csv"));
  std::string line;
  int rows = 0;
  while (std::getline(history, line)) ++rows;
  EXPECT_EQ(rows, 3) << "header + one row per epoch";

  auto evaluate = pneumo_command("evaluate --model " + run + "/model.safetensors --data " +
                                     kSample + " --split test --json " + dir.file("m.json") +
                                     " --device cpu",
                                 dir.file("cache"));
  ASSERT_EQ(evaluate.status, 0) << evaluate.output;
  EXPECT_NE(evaluate.output.find("ROC AUC"), std::string::npos) << evaluate.output;
  auto metrics = nlohmann::json::parse(testing::read_text(dir.file("m.json")));
  EXPECT_EQ(metrics["count"], 60);
  EXPECT_EQ(metrics["positives"], 30);

  auto predict = pneumo_command("predict --model " + run + "/model.safetensors " + kSample +
                                    "/test/NORMAL --csv --device cpu",
                                dir.file("cache"));
  ASSERT_EQ(predict.status, 0) << predict.output;
  std::istringstream csv(predict.output);
  std::getline(csv, line);
  EXPECT_EQ(line, "path,probability_pneumonia,label");
  int predictions = 0;
  while (std::getline(csv, line)) {
    const auto first = line.find(','), second = line.rfind(',');
    ASSERT_NE(first, second) << line;
    const double p = std::stod(line.substr(first + 1, second - first - 1));
    EXPECT_GE(p, 0.0);
    EXPECT_LE(p, 1.0);
    const std::string label = line.substr(second + 1);
    EXPECT_TRUE(label == "NORMAL" || label == "PNEUMONIA") << line;
    ++predictions;
  }
  EXPECT_EQ(predictions, 30);
}

// Epoch-level resume on the CPU is exact: 1 epoch + resume to 2 equals 2 epochs straight.
TEST(Cli, ResumedRunEndsWithTheSameWeightsAsAnUninterruptedOne) {
  testing::TempDir dir;
  const std::string cache = dir.file("cache");
  auto straight = pneumo_command(
      "train --data " + kSample + " --epochs 2 --out " + dir.file("straight") + kCommon, cache);
  ASSERT_EQ(straight.status, 0) << straight.output;
  auto first = pneumo_command(
      "train --data " + kSample + " --epochs 1 --out " + dir.file("resumed") + kCommon, cache);
  ASSERT_EQ(first.status, 0) << first.output;
  auto resumed = pneumo_command("train --resume " + dir.file("resumed") +
                                    "/checkpoints/last.safetensors --epochs 2" + kCommon,
                                cache);
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resuming"), std::string::npos) << resumed.output;

  const CheckpointData a = load_checkpoint(dir.file("straight") + "/checkpoints/last.safetensors");
  const CheckpointData b = load_checkpoint(dir.file("resumed") + "/checkpoints/last.safetensors");
  EXPECT_EQ(a.metadata.epoch, 2);
  EXPECT_EQ(b.metadata.epoch, 2);
  EXPECT_EQ(a.metadata.step, b.metadata.step);
  EXPECT_EQ(a.metadata.learning_rate, b.metadata.learning_rate);
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (const auto& tensor : a.tensors) {
    const NamedTensor* other = b.find(tensor.name);
    ASSERT_NE(other, nullptr) << tensor.name;
    EXPECT_EQ(tensor.values, other->values) << tensor.name << " differs after resuming";
  }
  // The resumed run's history holds both epochs.
  std::istringstream history(testing::read_text(dir.file("resumed") + "/history.csv"));
  std::string line;
  int rows = 0;
  while (std::getline(history, line)) ++rows;
  EXPECT_EQ(rows, 3);
}

TEST(Cli, BadFlagsAndInputsAreRefusedWithAMessage) {
  testing::TempDir dir;
  const std::string cache = dir.file("cache");
  struct Case {
    std::string args, expected;
  };
  const Case cases[] = {
      {"train --data " + kSample + " --epochs 0", "--epochs must be at least 1"},
      {"train --data " + kSample + " --batch -3", "--batch must be in"},
      {"train --data " + kSample + " --device quantum", "unknown device 'quantum'"},
      {"train --data " + kSample + " --precision fp8", "--precision must be fp32 or tf32"},
      {"train --data " + kSample + " --balance sometimes", "sometimes"},
      {"train --data " + dir.file("nowhere"), "nowhere"},
      {"train --epochs 3", "--data"},
      {"evaluate --model " + dir.file("missing.safetensors") + " --data " + kSample,
       "missing.safetensors"},
      {"frobnicate", "frobnicate"},
  };
  for (const auto& c : cases) {
    const bool trains = c.args.rfind("train ", 0) == 0;
    auto result = pneumo_command(c.args + (trains ? " --out " + dir.file("run") : ""), cache);
    EXPECT_NE(result.status, 0) << c.args << "\n" << result.output;
    EXPECT_NE(result.output.find(c.expected), std::string::npos)
        << c.args << ": expected the message to mention '" << c.expected << "', got:\n"
        << result.output;
    EXPECT_EQ(result.output.find("internal error"), std::string::npos) << result.output;
  }
}

TEST(Cli, ACheckpointOfAnotherInputSizeIsRefused) {
  testing::TempDir dir;
  const std::string cache = dir.file("cache");
  auto small = pneumo_command("train --data " + kSample + " --size 32 --epochs 1 --out " +
                                  dir.file("small") + kCommon,
                              cache);
  ASSERT_EQ(small.status, 0) << small.output;
  auto resumed = pneumo_command("train --resume " + dir.file("small") +
                                    "/checkpoints/last.safetensors --size 150 --epochs 2" + kCommon,
                                cache);
  EXPECT_NE(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("input size"), std::string::npos) << resumed.output;
}

}  // namespace
}  // namespace pneumo
