// End to end through the `pneumo` binary on the bundled sample (data/sample): train, evaluate,
// predict, resume (an interrupted run ends with the same weights as an uninterrupted one), and
// bad flags refused with a message and a non-zero exit. CPU backend, two threads.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "cli/commands/commands.hpp"
#include "pneumo/augment.hpp"
#include "pneumo/checkpoint.hpp"
#include "pneumo/metrics.hpp"
#include "pneumo/npy.hpp"
#include "checkpoint_test_util.hpp"
#include "cli_test_util.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"

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
  EXPECT_EQ(nlohmann::json::parse(testing::read_text(run + "/metrics_val.json"))["computed_in"],
            "fp32");

  auto evaluate = pneumo_command("evaluate --model " + run + "/model.safetensors --data " +
                                     kSample + " --split test --json " + dir.file("m.json") +
                                     " --scores " + dir.file("scores.csv") + " --device cpu",
                                 dir.file("cache"));
  ASSERT_EQ(evaluate.status, 0) << evaluate.output;
  EXPECT_NE(evaluate.output.find("ROC AUC"), std::string::npos) << evaluate.output;
  auto metrics = nlohmann::json::parse(testing::read_text(dir.file("m.json")));
  EXPECT_EQ(metrics["count"], 60);
  EXPECT_EQ(metrics["positives"], 30);
  // --scores: one row per image, whose logits give back the metrics' loss.
  std::istringstream scores(testing::read_text(dir.file("scores.csv")));
  std::getline(scores, line);
  EXPECT_EQ(line, "index,file,label,logit,probability");
  int score_rows = 0, positives = 0;
  double loss = 0.0;
  while (std::getline(scores, line)) {
    std::vector<std::string> cells;
    std::istringstream row(line);
    for (std::string cell; std::getline(row, cell, ',');) cells.push_back(cell);
    ASSERT_EQ(cells.size(), 5u) << line;
    EXPECT_EQ(std::stoi(cells[0]), score_rows) << line;
    EXPECT_EQ(cells[1].rfind("test/", 0), 0u) << line;
    const int label = std::stoi(cells[2]);
    const double logit = std::stod(cells[3]);
    positives += label;
    loss += std::log1p(std::exp(-std::fabs(logit))) + std::max(logit, 0.0) - label * logit;
    // Every digit: the logit reads back as the float pneumo scored, the probability as the very
    // double it computed from it (9 digits merged distinct logits' probabilities).
    EXPECT_EQ(std::stod(cells[4]), sigmoid(std::stof(cells[3]))) << line;
    ++score_rows;
  }
  EXPECT_EQ(score_rows, 60);
  EXPECT_EQ(positives, 30);
  EXPECT_NEAR(loss / score_rows, metrics["loss"].get<double>(), 1e-4);

  auto predict = pneumo_command("predict --model " + run + "/model.safetensors " + kSample +
                                    "/test/NORMAL --csv --device cpu",
                                dir.file("cache"));
  ASSERT_EQ(predict.status, 0) << predict.output;
  std::istringstream csv(predict.output);
  std::getline(csv, line);  // stderr first: the threshold applied and its rule
  // The sample's carved validation split holds 9 images of a class: too few for Youden's J.
  EXPECT_NE(line.find("PNEUMONIA when p > 0.5 (default 0.5 (validation holds 9 images of a class, "
                      "fewer than 20 for Youden's J"), std::string::npos) << line;
  // A training checkpoint's 0.5 says it is one, and where the chosen threshold is.
  auto from_last = pneumo_command("predict --model " + run + "/checkpoints/last.safetensors " +
                                      kSample + "/test/NORMAL --csv --device cpu",
                                  dir.file("cache"));
  ASSERT_EQ(from_last.status, 0) << from_last.output;
  EXPECT_NE(from_last.output.find("PNEUMONIA when p > 0.5 (default 0.5: a training checkpoint; a "
                                  "finished run's model.safetensors holds the threshold"),
            std::string::npos)
      << from_last.output;
  std::getline(csv, line);
  EXPECT_EQ(line, "path,probability_pneumonia,label");
  int predictions = 0;
  std::map<std::string, std::pair<double, std::string>> csv_rows;  // path -> p, label
  while (std::getline(csv, line)) {
    const auto first = line.find(','), second = line.rfind(',');
    ASSERT_NE(first, second) << line;
    const double p = std::stod(line.substr(first + 1, second - first - 1));
    EXPECT_GE(p, 0.0);
    EXPECT_LE(p, 1.0);
    const std::string label = line.substr(second + 1);
    EXPECT_TRUE(label == "NORMAL" || label == "PNEUMONIA") << line;
    csv_rows[line.substr(0, first)] = {p, label};
    ++predictions;
  }
  EXPECT_EQ(predictions, 30);
  // The plain listing prints p with fixed decimals, at least the threshold's (6 here), not
  // rounded to 4 where it could read as the wrong side of a tuned cut.
  auto plain = pneumo_command("predict --model " + run + "/model.safetensors " + kSample +
                                  "/test/NORMAL --device cpu",
                              dir.file("cache"));
  ASSERT_EQ(plain.status, 0) << plain.output;
  std::istringstream listing(plain.output);
  int listed = 0;
  while (std::getline(listing, line)) {
    const auto gap = line.find("  ");
    const auto row = csv_rows.find(line.substr(0, gap));
    if (gap == std::string::npos || row == csv_rows.end()) continue;  // stderr's lines
    const std::string rest = line.substr(gap + 2);  // "0.123456  NORMAL"
    const auto end = rest.find("  ");
    ASSERT_NE(end, std::string::npos) << line;
    const std::string p = rest.substr(0, end);
    EXPECT_EQ(p.size(), 8u) << "0.dddddd expected: " << line;
    EXPECT_NEAR(std::stod(p), row->second.first, 5e-7) << line;
    EXPECT_EQ(rest.substr(end + 2), row->second.second) << line;
    ++listed;
  }
  EXPECT_EQ(listed, 30);
  // A threshold shown with more decimals (0.50000005: format_threshold never shows it as 0.5)
  // gets as many on every p, so that a p on either side of it never prints as the same number.
  auto close = pneumo_command("predict --model " + run + "/model.safetensors " + kSample +
                                  "/test/NORMAL --device cpu --threshold 0.50000005",
                              dir.file("cache"));
  ASSERT_EQ(close.status, 0) << close.output;
  EXPECT_NE(close.output.find("PNEUMONIA when p > 0.50000005 "), std::string::npos)
      << close.output;
  std::istringstream close_listing(close.output);
  int widened = 0;
  while (std::getline(close_listing, line)) {
    const auto gap = line.find("  ");
    if (gap == std::string::npos || !csv_rows.count(line.substr(0, gap))) continue;
    const std::string rest = line.substr(gap + 2);
    EXPECT_EQ(rest.find("  "), 10u) << "0.dddddddd expected: " << line;
    ++widened;
  }
  EXPECT_EQ(widened, 30);
}

// Epoch-level resume on the CPU is exact: 1 epoch + resume to 2 equals 2 epochs straight.
TEST(Cli, ResumedRunEndsWithTheSameWeightsAsAnUninterruptedOne) {
  testing::TempDir dir;
  const std::string cache = dir.file("cache");
  const std::string small = " --size 32" + kCommon;  // exactness does not need the recipe's size
  auto straight = pneumo_command(
      "train --data " + kSample + " --epochs 2 --out " + dir.file("straight") + small, cache);
  ASSERT_EQ(straight.status, 0) << straight.output;
  auto first = pneumo_command(
      "train --data " + kSample + " --epochs 1 --out " + dir.file("resumed") + small, cache);
  ASSERT_EQ(first.status, 0) << first.output;
  auto resumed = pneumo_command("train --resume " + dir.file("resumed") +
                                    "/checkpoints/last.safetensors --epochs 2" + small,
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

// A resume writes only into the run directory its checkpoint lies in (not the `out` recorded in
// it: here a copy of the run is resumed and the original must not change) or into a new --out;
// never into another run. A refused resume leaves config.json as it was; asking for no more
// epochs than were done is refused; --lr given again wins over the rate the run had reached.
// A checkpoint of another run copied into a run's folder: resuming it there replaced that run's
// model, checkpoints and config.json with the other run's (status 0, no word). Refused, told by
// the run_id every checkpoint carries, or for files without one by their seed; a copy of the
// run's own checkpoint still resumes there.
TEST(Cli, ACheckpointOfAnotherRunInARunsFolderIsRefusedThere) {
  testing::TempDir dir;
  const std::string cache = dir.file("cache"), a = dir.file("a"), b = dir.file("b");
  for (const auto& [run, seed] : {std::pair<std::string, int>{a, 1}, {b, 1}}) {
    auto trained = pneumo_command("train --data " + kSample + " --epochs 1 --seed " +
                                      std::to_string(seed) + " --out " + run + " --size 32" +
                                      kCommon,
                                  cache);
    ASSERT_EQ(trained.status, 0) << trained.output;
  }
  const std::string a_last = a + "/checkpoints/last.safetensors";
  const std::string a_bytes = testing::read_text(a_last), a_config = testing::read_text(a + "/config.json"),
                    a_model = testing::read_text(a + "/model.safetensors");
  const std::string a_id = load_checkpoint(a_last).metadata.extra.at("run_id");
  EXPECT_EQ(a_id.size(), 16u) << a_id;
  EXPECT_EQ(load_checkpoint(a + "/model.safetensors").metadata.extra.at("run_id"), a_id);
  // b has the same seed and data: only its run_id tells it apart.
  ASSERT_NE(load_checkpoint(b + "/checkpoints/last.safetensors").metadata.extra.at("run_id"), a_id);
  fs::copy_file(b + "/checkpoints/last.safetensors", a + "/checkpoints/from-b.safetensors");
  auto foreign = pneumo_command(
      "train --resume " + a + "/checkpoints/from-b.safetensors --epochs 2" + kCommon, cache);
  EXPECT_EQ(foreign.status, 1) << foreign.output;
  EXPECT_NE(foreign.output.find("is not of the run in " + a + ": its run_id is "),
            std::string::npos)
      << foreign.output;
  EXPECT_EQ(testing::read_text(a_last), a_bytes);
  EXPECT_EQ(testing::read_text(a + "/config.json"), a_config);
  EXPECT_EQ(testing::read_text(a + "/model.safetensors"), a_model);
  // Into a new --out it goes on, as b's run.
  auto elsewhere = pneumo_command("train --resume " + a + "/checkpoints/from-b.safetensors "
                                  "--epochs 2 --out " + dir.file("b2") + kCommon,
                                  cache);
  EXPECT_EQ(elsewhere.status, 0) << elsewhere.output;
  // A file without run_id (older pneumo) of another seed: told by the seed.
  CheckpointData old = load_checkpoint(b + "/checkpoints/last.safetensors");
  old.metadata.extra.erase("run_id");
  old.metadata.seed = 7;
  save_checkpoint(a + "/checkpoints/old.safetensors", old);
  auto older = pneumo_command(
      "train --resume " + a + "/checkpoints/old.safetensors --epochs 2" + kCommon, cache);
  EXPECT_EQ(older.status, 1) << older.output;
  EXPECT_NE(older.output.find("its --seed is 7, the run's 1"), std::string::npos) << older.output;
  EXPECT_EQ(testing::read_text(a_last), a_bytes);
  // The run's own checkpoint, copied beside it, resumes there and keeps its run_id.
  fs::copy_file(a_last, a + "/checkpoints/copy.safetensors");
  auto own = pneumo_command(
      "train --resume " + a + "/checkpoints/copy.safetensors --epochs 2" + kCommon, cache);
  EXPECT_EQ(own.status, 0) << own.output;
  EXPECT_EQ(load_checkpoint(a_last).metadata.extra.at("run_id"), a_id);
  EXPECT_EQ(load_checkpoint(a_last).metadata.epoch, 2);
}

TEST(Cli, AResumeWritesIntoItsOwnRunAndNoOther) {
  testing::TempDir dir;
  const std::string cache = dir.file("cache"), run = dir.file("run"), copy = dir.file("copy");
  const std::string small = " --size 32" + kCommon;
  auto first = pneumo_command("train --data " + kSample + " --epochs 1 --out " + run + small, cache);
  ASSERT_EQ(first.status, 0) << first.output;
  fs::copy(run, copy, fs::copy_options::recursive);
  const std::string original = testing::read_text(run + "/checkpoints/last.safetensors");
  const std::string original_config = testing::read_text(run + "/config.json");

  auto resumed = pneumo_command(
      "train --resume " + copy + "/checkpoints/last.safetensors --epochs 2" + kCommon, cache);
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_EQ(load_checkpoint(copy + "/checkpoints/last.safetensors").metadata.epoch, 2);
  EXPECT_EQ(testing::read_text(run + "/checkpoints/last.safetensors"), original)
      << "resuming the copy wrote into the run it was copied from";

  auto into_other = pneumo_command("train --resume " + copy +
                                       "/checkpoints/last.safetensors --epochs 3 --out " + run +
                                       kCommon, cache);
  EXPECT_EQ(into_other.status, 1) << into_other.output;
  EXPECT_NE(into_other.output.find("holds another run"), std::string::npos) << into_other.output;
  EXPECT_EQ(testing::read_text(run + "/checkpoints/last.safetensors"), original);
  // A folder of a user's files is not called a run.
  fs::create_directories(dir.file("project"));
  std::ofstream(dir.file("project/README.md")) << "notes\n";
  auto into_files = pneumo_command("train --resume " + copy +
                                       "/checkpoints/last.safetensors --epochs 3 --out " +
                                       dir.file("project") + kCommon, cache);
  EXPECT_EQ(into_files.status, 1) << into_files.output;
  EXPECT_NE(into_files.output.find("'" + dir.file("project") + "' already holds files, and is "
                                   "not the run directory"),
            std::string::npos)
      << into_files.output;
  EXPECT_EQ(testing::read_text(dir.file("project/README.md")), "notes\n");

  auto refused = pneumo_command("train --resume " + run +
                                    "/checkpoints/last.safetensors --epochs 3 --optimizer adamw" +
                                    kCommon, cache);
  EXPECT_EQ(refused.status, 1) << refused.output;
  EXPECT_EQ(testing::read_text(run + "/config.json"), original_config)
      << "a refused resume rewrote config.json";

  auto no_more = pneumo_command(
      "train --resume " + copy + "/checkpoints/last.safetensors --epochs 2" + kCommon, cache);
  EXPECT_EQ(no_more.status, 1) << no_more.output;
  EXPECT_NE(no_more.output.find("nothing to train"), std::string::npos) << no_more.output;

  auto new_rate = pneumo_command(
      "train --resume " + copy + "/checkpoints/last.safetensors --epochs 3 --lr 0.0005" + kCommon,
      cache);
  ASSERT_EQ(new_rate.status, 0) << new_rate.output;
  EXPECT_NE(new_rate.output.find("resuming with --lr 0.0005"), std::string::npos)
      << new_rate.output;
  // Epoch 3 trained at the new rate (its line; the plateau callback may lower it afterwards).
  const size_t line = new_rate.output.find("epoch 3/3  train loss");
  ASSERT_NE(line, std::string::npos) << new_rate.output;
  EXPECT_NE(new_rate.output.find("| lr 5.00e-04 |", line), std::string::npos) << new_rate.output;
}

TEST(Cli, BadFlagsAndInputsAreRefusedWithAMessage) {
  testing::TempDir dir;
  const std::string cache = dir.file("cache");
  struct Case {
    std::string args, expected;
  };
  std::ofstream(dir.file("bad.json")) << R"({"batch": 0})";  // refused, and named as the source
  std::ofstream(dir.file("twice.json")) << R"({"epochs": 1, "lr": 0.001, "epochs": 2})";
  const Case cases[] = {
      {"train --data " + kSample + " --config " + dir.file("bad.json"),
       "flags were also read from " + dir.file("bad.json")},
      {"train --data " + kSample + " --epochs 0", "--epochs must be >= 1"},
      {"train --data " + kSample + " --lr 1e-50", "(a positive float32), got 1e-50"},
      {"train --data " + kSample + " --config " + dir.file("twice.json"),
       "gives \"epochs\" twice; give each flag once"},
      {"train --data " + kSample + " --batch -3", "--batch must be in"},
      {"train --data " + kSample + " --device quantum", "--device must be auto, cpu or cuda, got 'quantum'"},
      {"train --data " + kSample + " --precision fp8", "--precision must be fp32, tf32 or bf16"},
      {"train --data " + kSample + " --balance sometimes", "sometimes"},
      {"train --data " + kSample + " --aspect 3", "--aspect must be in [0, 1]"},
      {"train --data " + kSample + " --zoom-mode squash", "--zoom-mode must be keras"},
      {"train --data " + kSample + " --normalization imagenet", "--normalization must be"},
      {"train --data " + kSample + " --brightness -0.1", "--brightness must be in"},
      {"train --data " + kSample + " --threshold-rule median", "--threshold-rule must be"},
      {"train --data " + kSample + " --optimizer sgd", "--optimizer must be rmsprop or adamw"},
      {"train --data " + kSample + " --head attention", "--head must be flatten"},
      {"train --data " + kSample + " --label-smoothing 1", "--label-smoothing must be in"},
      {"train --data " + kSample + " --val-split 0", "a fraction of train in (0, 1)"},
      {"train --data " + kSample + " --seed 99999999999999999999", "must be at most 1844674407"},
      {"train --data " + kSample + " --optimizer adamw --lr 200",
       "--weight-decay x --lr must be < 1 under --optimizer adamw"},
      {"train --data " + kSample + " --config " + kSample, "is a folder"},
      {"bench train --device cpu --threads -3", "--threads must be in [0, 1024]"},
      {"bench kernels --device cpu --quick --threads 5000", "--threads must be in [0, 1024]"},
      {"train --data " + kSample + " --schedule exponential --min-lr 0.01",
       "--min-lr must be at most --lr under --schedule exponential"},
      {"bench train --device cpu --batch 300000", "--batch: batch sizes must be in [1, 65535]"},
      {"bench kernels --device cpu --quick --json " + dir.file("no/such/folder.json"),
       "cannot write --json " + dir.file("no/such/folder.json") + ": " + dir.file("no/such") +
           " does not exist"},
      {"bench kernels --device cpu --quick --csv " + kSample, "is a folder; give a file name"},
      {"evaluate --model a.safetensors --data " + kSample + " --tta sideways",
       "--tta must be none or flip"},
      {"evaluate --model a.safetensors --data " + kSample + " --split tset",
       "--split must be train, val, test or val-carved"},
      {"train --data " + dir.file("nowhere"), "nowhere"},
      {"train --epochs 3", "--data"},
      {"evaluate --model " + dir.file("missing.safetensors") + " --data " + kSample,
       "missing.safetensors"},
      {"evaluate --model a.safetensors --data " + kSample + " --json a.safetensors",
       "--json names the model a.safetensors"},
      {"evaluate --model a.safetensors --data " + kSample + " --json o.json --scores o.json",
       "--json and --scores name the same file"},
      {"evaluate --model a.safetensors --data " + kSample + " --json new.json --scores ./new.json",
       "--json and --scores name the same file"},
      {"frobnicate", "frobnicate"},
      // A value forgotten before the next flag: that flag is not taken as the value.
      {"evaluate --model a.safetensors --data " + kSample + " --json --stress",
       "--json: got '--stress', which is a flag"},
      {"train --data " + kSample + " --epochs 1 --val-stress --threshold-rule --device cpu",
       "--threshold-rule: got '--device', which is a flag"},
      {"bench kernels --device cpu --quick --csv --json x.json", "--csv: got '--json'"},
      {"train --data " + kSample + " --config --epochs 1",
       "--config: got '--epochs', which is a flag"},
      {"evaluate --model a.safetensors --data " + kSample + " --gallery 2 --tta flip",
       "--gallery explains the model's own view of each image; leave out --tta"},
      {"train --data " + kSample + " --all-reduce nccl --device cpu",
       "--all-reduce nccl needs the CUDA backend; --device cpu was given"},
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

// An empty value (`--out "$RUN"` with RUN unset, `--json=`) is refused, naming the flag, on every
// command: `train --out ""` trained into runs/<date>-<time>, `evaluate --json ""` wrote nothing
// and said nothing, `--restore-best=` meant true. A configuration's empty value likewise.
TEST(Cli, EmptyValuesAreRefusedNamingTheFlag) {
  testing::TempDir dir;
  const std::string cache = dir.file("cache"), config = dir.file("empty.json");
  std::ofstream(config) << "{\"data\": \"\"}";
  const std::string evaluate = "evaluate --model a.safetensors --data " + kSample;
  for (const auto& [args, flag] : std::vector<std::pair<std::string, std::string>>{
           {"prepare --data " + kSample + " --out \"\"", "--out"},
           {"eda --data \"\" --out " + dir.file("eda"), "--data"},
           {"train --data " + kSample + " --epochs 1 --out \"\"", "--out"},
           {"train --data " + kSample + " --epochs 1 --out=", "--out"},
           {"train --data " + kSample + " --epochs 1 --out " + dir.file("run") + " --restore-best=",
            "--restore-best"},
           {evaluate + " --json \"\"", "--json"},
           {evaluate + " --scores \"\"", "--scores"},
           {evaluate + " --gallery 1 --gallery-out \"\"", "--gallery-out"},
           {"predict --model \"\" " + kSample, "--model"},
           {"bench kernels --device cpu --quick --json \"\"", "--json"},
           {"bench kernels --device cpu --quick --csv=", "--csv"},
           {"train --data " + kSample + " --epochs 1 --out " + dir.file("run") + " --augment \"\"",
            "--augment"},
       }) {
    const auto result = pneumo_command(args, cache);
    EXPECT_EQ(result.status, 2) << args << "\n" << result.output;
    EXPECT_NE(result.output.find(flag + ": the value is empty (an unset shell variable?)"),
              std::string::npos)
        << args << "\n" << result.output;
  }
  const auto result = pneumo_command("train --config " + config + " --out " + dir.file("run2"), cache);
  EXPECT_EQ(result.status, 2) << result.output;
  EXPECT_NE(result.output.find(config + ": value of 'data' is empty"), std::string::npos) << result.output;

  EXPECT_FALSE(fs::exists(dir.file("run"))) << "nothing trained";
  EXPECT_FALSE(fs::exists(dir.file("run2"))) << "nothing trained";
}

// A whole number with leading zeros is decimal: CLI11 alone read `--epochs 010` as octal (8).
TEST(Cli, LeadingZerosDoNotMakeANumberOctal) {
  testing::TempDir dir;
  const std::string run = dir.file("run");
  auto train = pneumo_command("train --data " + kSample + " --size 32 --epochs 02 --seed 010 --out " +
                                  run + kCommon, dir.file("cache"));
  ASSERT_EQ(train.status, 0) << train.output;
  const nlohmann::json config = nlohmann::json::parse(testing::read_text(run + "/config.json"));
  EXPECT_EQ(config.at("epochs"), 2);
  EXPECT_EQ(config.at("seed"), 10) << "010 read as octal";
}

// eda's --out is made before the data is read: one that cannot be (below a file here) is said at
// once, without decoding the tree into a cache first; one made for data that then cannot be read
// is removed again.
TEST(Cli, EdaRefusesAnUnwritableOutBeforeReadingTheData) {
  testing::TempDir dir;
  std::ofstream(dir.file("file")) << "x";
  auto below_a_file = pneumo_command("eda --data " + kSample + " --out " + dir.file("file") + "/eda",
                                     dir.file("cache"));
  EXPECT_EQ(below_a_file.status, 1) << below_a_file.output;
  EXPECT_NE(below_a_file.output.find("eda: cannot create"), std::string::npos) << below_a_file.output;
  // The failure's own reason (a cleanup's cleared error code printed "Success").
  EXPECT_EQ(below_a_file.output.find("Success"), std::string::npos) << below_a_file.output;
  EXPECT_FALSE(fs::exists(dir.file("cache"))) << "the tree was decoded first";
  // A link to nowhere as --out is named, and left where it was (it was removed as a folder made).
  fs::create_symlink(dir.file("elsewhere"), dir.file("link"));
  auto broken_link = pneumo_command("eda --data " + kSample + " --out " + dir.file("link"),
                                    dir.file("cache"));
  EXPECT_EQ(broken_link.status, 1) << broken_link.output;
  EXPECT_NE(broken_link.output.find("is a broken link"), std::string::npos) << broken_link.output;
  EXPECT_TRUE(fs::is_symlink(fs::symlink_status(dir.file("link"))));
  auto no_data = pneumo_command("eda --data " + dir.file("nowhere") + " --out " + dir.file("a/b/eda"),
                                dir.file("cache"));
  EXPECT_EQ(no_data.status, 1) << no_data.output;
  EXPECT_FALSE(fs::exists(dir.file("a"))) << "folders made for nothing";
}

// --val-seed carves apart from --seed: two training seeds with one validation seed validate on
// the same images (the checkpoints' carved_split_crc32), --val-seed N carves as --seed N alone
// did (-1, the default, is --seed), and evaluate --split val-carved carves with the recorded one
// (another seed's carve fails its check against carved_split_crc32).
TEST(Cli, AValSeedKeepsTheValidationImagesAcrossTrainingSeeds) {
  testing::TempDir dir;
  const std::string cache = dir.file("cache");
  auto carve_of = [&](const std::string& run, const std::string& seeds) {
    auto trained = pneumo_command("train --data " + kSample + " --size 32 --epochs 1 --out " +
                                      dir.file(run) + seeds + kCommon,
                                  cache);
    EXPECT_EQ(trained.status, 0) << trained.output;
    const CheckpointMetadata m =
        read_checkpoint_metadata(dir.file(run) + "/checkpoints/last.safetensors");
    const auto crc = m.extra.find("carved_split_crc32");
    return crc == m.extra.end() ? std::string("none") : crc->second;
  };
  const std::string fixed_1 = carve_of("fixed-1", " --seed 1 --val-seed 5");
  const std::string fixed_2 = carve_of("fixed-2", " --seed 2 --val-seed 5");
  const std::string seed_5 = carve_of("seed-5", " --seed 5");
  const std::string seed_2 = carve_of("seed-2", " --seed 2 --val-seed -1");
  EXPECT_NE(fixed_1, "none");
  EXPECT_EQ(fixed_1, fixed_2) << "the training seed moved the validation images";
  EXPECT_EQ(fixed_1, seed_5);
  EXPECT_NE(seed_2, fixed_2) << "-1 did not carve with --seed";
  EXPECT_EQ(nlohmann::json::parse(testing::read_text(dir.file("fixed-2") + "/config.json"))
                ["val-seed"],
            5);
  const std::string scores = dir.file("scores.json");
  auto evaluated = pneumo_command("evaluate --model " + dir.file("fixed-2") +
                                      "/model.safetensors --data " + kSample +
                                      " --split val-carved --device cpu --json " + scores,
                                  cache);
  ASSERT_EQ(evaluated.status, 0) << evaluated.output;
  EXPECT_EQ(nlohmann::json::parse(testing::read_text(scores))["count"],
            nlohmann::json::parse(testing::read_text(dir.file("fixed-2") + "/metrics_val.json"))
                ["count"]);
  // A resume that would carve with another seed is refused, naming the seeds (it named --data).
  auto recarved = pneumo_command("train --resume " + dir.file("fixed-2") +
                                     "/checkpoints/last.safetensors --epochs 2 --val-seed 6" +
                                     kCommon,
                                 cache);
  EXPECT_EQ(recarved.status, 1) << recarved.output;
  EXPECT_NE(recarved.output.find("--seed and --val-seed carve with 6 (the run's: 5)"),
            std::string::npos)
      << recarved.output;
  EXPECT_EQ(recarved.output.find("holds other images"), std::string::npos) << recarved.output;
  // With the official validation folder on either side the seeds carve nothing: only
  // --val-split is named (not "--seed and --val-seed", whose numbers would mean nothing).
  auto official = pneumo_command("train --resume " + dir.file("fixed-2") +
                                     "/checkpoints/last.safetensors --epochs 2 --val-split "
                                     "official --val-seed 6" + kCommon,
                                 cache);
  EXPECT_EQ(official.status, 1) << official.output;
  EXPECT_NE(official.output.find("--val-split official (the run's: 0.15)"), std::string::npos)
      << official.output;
  EXPECT_EQ(official.output.find("carve with"), std::string::npos) << official.output;
  EXPECT_EQ(official.output.find("holds other images"), std::string::npos) << official.output;
}

// A --val-split too small to carve one image is bad usage (exit 2), said before training.
TEST(Cli, AValSplitThatCarvesNoValidationImageIsBadUsage) {
  testing::TempDir dir;
  auto result = pneumo_command("train --data " + kSample + " --size 32 --epochs 1 --val-split 0.001" +
                                   kCommon + "--out " + dir.file("run"),
                               dir.file("cache"));
  EXPECT_EQ(result.status, 2) << result.output;
  EXPECT_NE(result.output.find("--val-split 0.001 carves no validation image"), std::string::npos)
      << result.output;
  EXPECT_EQ(result.output.find("internal error"), std::string::npos) << result.output;
  EXPECT_FALSE(fs::exists(dir.file("run") + "/model.safetensors"));
}

// A run that fails before training (here: a cache of another size) leaves only config.json; the
// same --out then takes the corrected run. A folder with a checkpoint in it is still refused.
TEST(Cli, ARunThatFailedBeforeTrainingLeavesItsFolderReusable) {
  testing::TempDir dir;
  const std::string cache = dir.file("cache"), run = dir.file("run");
  auto small = pneumo_command("prepare --data " + kSample + " --out " + dir.file("c32") +
                                  " --size 32", cache);
  ASSERT_EQ(small.status, 0) << small.output;
  // The cache records the command that made it.
  EXPECT_EQ(nlohmann::json::parse(testing::read_text(dir.file("c32") + "/meta.json"))["command"],
            "pneumo prepare --data " + kSample + " --out " + dir.file("c32") + " --size 32");
  auto wrong = pneumo_command("train --data " + dir.file("c32") + " --size 64 --epochs 1 --out " +
                                  run + kCommon, cache);
  EXPECT_EQ(wrong.status, 1) << wrong.output;
  EXPECT_TRUE(fs::exists(run + "/config.json"));
  auto right = pneumo_command("train --data " + dir.file("c32") + " --size 32 --epochs 1 --out " +
                                  run + kCommon, cache);
  ASSERT_EQ(right.status, 0) << right.output;
  auto again = pneumo_command("train --data " + dir.file("c32") + " --size 32 --epochs 1 --out " +
                                  run + kCommon, cache);
  EXPECT_EQ(again.status, 1) << again.output;
  EXPECT_NE(again.output.find("already holds files"), std::string::npos) << again.output;
}

// A --batch larger than the epoch trains one step of the whole epoch, and the arrays are sized
// for that step, not for the --batch asked: 1024 and 4096 on the sample's 102 training images
// hold the same memory and train the same weights (4096 held 5.5 GB at --size 32).
TEST(Cli, ABatchLargerThanTheDataHoldsArraysForTheDataOnly) {
  testing::TempDir dir;
  const std::string cache = dir.file("cache");
  auto peak_of = [&](const std::string& run, const std::string& batch) {
    auto trained = pneumo_command("train --data " + kSample + " --size 32 --epochs 1 --batch " +
                                      batch + kCommon + "--out " + dir.file(run),
                                  cache);
    EXPECT_EQ(trained.status, 0) << trained.output;
    const size_t at = trained.output.find("memory: at most ");
    EXPECT_NE(at, std::string::npos) << trained.output;
    return at == std::string::npos ? -1L : std::stol(trained.output.substr(at + 16));
  };
  const long small = peak_of("b1024", "1024"), large = peak_of("b4096", "4096");
  EXPECT_GT(small, 0);
  EXPECT_EQ(small, large) << "MiB held at --batch 1024 and 4096";
  EXPECT_TRUE(testing::same_tensors(dir.file("b1024") + "/model.safetensors",
                                    dir.file("b4096") + "/model.safetensors", ""));
}

// --drop-last: the sample's 102 training images at batch 32 are three full steps an epoch, not
// four; the flag is recorded with the run; an epoch with no full batch is refused before any
// training, naming the flag, and leaves the folder reusable.
TEST(Cli, DropLastTrainsWholeBatchesOnly) {
  testing::TempDir dir;
  const std::string cache = dir.file("cache");
  const std::string common = " --size 32 --epochs 1 --batch 32" + kCommon;
  auto plain = pneumo_command("train --data " + kSample + common + "--out " + dir.file("a"), cache);
  ASSERT_EQ(plain.status, 0) << plain.output;
  EXPECT_NE(plain.output.find("step 4/4"), std::string::npos) << plain.output;
  auto dropped = pneumo_command(
      "train --data " + kSample + common + "--drop-last --out " + dir.file("b"), cache);
  ASSERT_EQ(dropped.status, 0) << dropped.output;
  EXPECT_NE(dropped.output.find("step 3/3"), std::string::npos) << dropped.output;
  EXPECT_EQ(nlohmann::json::parse(testing::read_text(dir.file("b") + "/config.json"))["drop-last"],
            true);
  auto refused = pneumo_command("train --data " + kSample + " --size 32 --epochs 1 --batch 200" +
                                    kCommon + "--drop-last --out " + dir.file("c"),
                                cache);
  EXPECT_EQ(refused.status, 2) << refused.output;  // bad usage, as bench train's
  EXPECT_NE(refused.output.find("--drop-last: an epoch of 102 training images holds no full "
                                "batch of 200"),
            std::string::npos)
      << refused.output;
  EXPECT_FALSE(fs::exists(dir.file("c") + "/checkpoints/last.safetensors"));
}

// At --size 16 the last block's batch-norm planes are 1x1: a step of one image (the sample's
// 102 training images at --batch 101) has one value a channel. Bad usage before training (it
// was the op's internal check after the epoch's other steps, its text a source line).
TEST(Cli, ABatchNormWithOneValueAChannelIsRefusedBeforeTraining) {
  testing::TempDir dir;
  auto refused = pneumo_command("train --data " + kSample + " --size 16 --epochs 1 --batch 101" +
                                    kCommon + "--out " + dir.file("run"),
                                dir.file("cache"));
  EXPECT_EQ(refused.status, 2) << refused.output;
  EXPECT_NE(refused.output.find("--batch 101 leaves 1 image in the epoch's last step, and bn5's "
                                "planes are 1x1 at this input size"),
            std::string::npos)
      << refused.output;
  EXPECT_EQ(refused.output.find("epoch 1/1"), std::string::npos) << refused.output;
}

// What a command prints on stdout is its result: a write that fails (here a full device) fails
// the command instead of ending in status 0 with the results lost. And a cache of another size
// than the model's is named as the model's expectation, not as something the user asked for.
TEST(Cli, AResultThatCannotBeWrittenFailsTheCommand) {
  testing::TempDir dir;
  const std::string cache = dir.file("cache"), run = dir.file("run");
  auto trained = pneumo_command("train --data " + kSample + " --size 32 --epochs 1 --out " + run +
                                    kCommon, cache);
  ASSERT_EQ(trained.status, 0) << trained.output;
  const std::string model = " --model " + run + "/model.safetensors --device cpu ";
  for (const std::string& command :
       {"predict" + model + kSample + "/test/NORMAL --csv", "evaluate" + model + "--data " + kSample}) {
    const auto full = testing::run_command("(PNEUMO_CACHE_DIR='" + cache + "' '" PNEUMO_BINARY
                                           "' " + command + " > /dev/full)");
    EXPECT_EQ(full.status, 1) << command << "\n" << full.output;
    EXPECT_NE(full.output.find("cannot write the results to standard output"), std::string::npos)
        << full.output;
    // A pipe whose reader has gone (it exits at once; pneumo starts a second later): status 1
    // and the message, not a silent death by SIGPIPE.
    const std::string status_file = dir.file("status"), error_file = dir.file("stderr");
    testing::run_command("{ sleep 1; PNEUMO_CACHE_DIR='" + cache + "' '" PNEUMO_BINARY "' " +
                         command + " 2> '" + error_file + "'; echo $? > '" + status_file +
                         "'; } | true");
    EXPECT_EQ(testing::read_text(status_file), "1\n") << command;
    EXPECT_NE(testing::read_text(error_file).find("cannot write the results to standard output"),
              std::string::npos)
        << testing::read_text(error_file);
  }
  auto prepared = pneumo_command("prepare --data " + kSample + " --out " + dir.file("c48") +
                                     " --size 48", cache);
  ASSERT_EQ(prepared.status, 0) << prepared.output;
  auto other_size = pneumo_command("evaluate" + model + "--data " + dir.file("c48"), cache);
  EXPECT_EQ(other_size.status, 1) << other_size.output;
  EXPECT_NE(other_size.output.find("c48 is prepared at 48x48 but the model expects 32x32"),
            std::string::npos)
      << other_size.output;
}

// An image tree's cache that cannot be made where it would go (here: below a file) says where
// else it can go, and nothing is trained.
TEST(Cli, AnUnwritableCacheLocationSaysWhereElseItCanGo) {
  testing::TempDir dir;
  std::ofstream(dir.file("afile")) << "a file, not a folder";
  auto trained = pneumo_command("train --data " + kSample + " --epochs 1 --out " + dir.file("run") +
                                    kCommon, dir.file("afile") + "/cache");
  EXPECT_EQ(trained.status, 1) << trained.output;
  EXPECT_NE(trained.output.find("cannot make the cache of the image tree"), std::string::npos)
      << trained.output;
  EXPECT_NE(trained.output.find("PNEUMO_CACHE_DIR"), std::string::npos) << trained.output;
  EXPECT_FALSE(fs::exists(dir.file("run") + "/model.safetensors"));
}

// A run that restores an earlier epoch's weights at its end (--restore-best: the best
// --checkpoint-monitor epoch, here beside early stopping) says so in its model (weights_epoch),
// and evaluate names the epoch the weights are from, not only the last one run. On the sample at
// this learning rate validation accuracy stays 0.5, so epoch 1 stays the best.
TEST(Cli, ARestoredBestModelNamesTheEpochOfItsWeights) {
  testing::TempDir dir;
  const std::string cache = dir.file("cache"), run = dir.file("run");
  auto trained = pneumo_command("train --data " + kSample + " --size 32 --epochs 3 --out " + run +
                                    " --restore-best --early-stopping-patience 5"
                                    " --checkpoint-monitor val_accuracy --lr 0.01" + kCommon,
                                cache);
  ASSERT_EQ(trained.status, 0) << trained.output;
  ASSERT_NE(trained.output.find("restored the weights of epoch 1"), std::string::npos)
      << trained.output;
  const CheckpointMetadata model = read_checkpoint_metadata(run + "/model.safetensors");
  EXPECT_EQ(model.epoch, 3);
  EXPECT_EQ(model.weights_epoch, 1);
  EXPECT_EQ(read_checkpoint_metadata(run + "/checkpoints/last.safetensors").weights_epoch, 3);
  auto evaluated = pneumo_command(
      "evaluate --model " + run + "/model.safetensors --data " + kSample + " --device cpu", cache);
  ASSERT_EQ(evaluated.status, 0) << evaluated.output;
  EXPECT_NE(evaluated.output.find("(weights of epoch 1 of 3 (restored best), threshold"),
            std::string::npos)
      << evaluated.output;
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
  EXPECT_EQ(resumed.status, 1) << resumed.output;
  EXPECT_NE(resumed.output.find("was trained for architecture seed-cnn-v1 at input size 32; this "
                                "run uses seed-cnn-v1 at 150"),
            std::string::npos)
      << resumed.output;
}

// Every generalisation option reaches config.json, the checkpoint and the resumed run; the
// per-epoch stress scores reach the history.
TEST(Cli, ShortcutOptionsRoundTripThroughConfigCheckpointAndResume) {
  testing::TempDir dir;
  const std::string cache = dir.file("cache"), run = dir.file("run");
  const std::string options =
      " --zoom-mode isotropic --aspect 0.25 --brightness 0.05 --contrast 0.1 --gamma 0.2"
      " --sharpness 0.3 --normalization per-image --val-stress true --head gap"
      " --threshold-rule 0.5";
  auto first = pneumo_command("train --data " + kSample + " --size 32 --epochs 1 --out " + run +
                                  options + kCommon, cache);
  ASSERT_EQ(first.status, 0) << first.output;
  auto check = [](const nlohmann::json& config, const std::string& where) {
    EXPECT_EQ(config["zoom-mode"], "isotropic") << where;
    EXPECT_FLOAT_EQ(config["aspect"].get<float>(), 0.25f) << where;
    EXPECT_FLOAT_EQ(config["brightness"].get<float>(), 0.05f) << where;
    EXPECT_FLOAT_EQ(config["contrast"].get<float>(), 0.1f) << where;
    EXPECT_FLOAT_EQ(config["gamma"].get<float>(), 0.2f) << where;
    EXPECT_FLOAT_EQ(config["sharpness"].get<float>(), 0.3f) << where;
    EXPECT_EQ(config["normalization"], "per-image") << where;
    EXPECT_EQ(config["val-stress"], true) << where;
    EXPECT_EQ(config["head"], "gap") << where;
    EXPECT_EQ(config["threshold-rule"], "0.5") << where;
  };
  check(nlohmann::json::parse(testing::read_text(run + "/config.json")), "config.json");
  // The history's metric columns are what a --*-monitor flag may name (epoch_metric_names).
  const std::string history = testing::read_text(run + "/history.csv");
  std::vector<std::string> columns;
  std::istringstream header(history.substr(0, history.find('\n')));
  for (std::string column; std::getline(header, column, ',');)
    if (column != "epoch" && column != "learning_rate" && column.find("seconds") == std::string::npos)
      columns.push_back(column);
  std::vector<std::string> names = cli::epoch_metric_names(true);
  std::sort(columns.begin(), columns.end());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(columns, names);
  EXPECT_NE(std::find(names.begin(), names.end(), "val_stress_worst_accuracy"), names.end());
  auto resumed = pneumo_command(
      "train --resume " + run + "/checkpoints/last.safetensors --epochs 2" + kCommon, cache);
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  const CheckpointMetadata meta = read_checkpoint_metadata(run + "/checkpoints/last.safetensors");
  EXPECT_EQ(meta.epoch, 2);
  check(meta.config, "the resumed run's checkpoint");
  EXPECT_EQ(meta.normalisation, normalization_description(InputNormalization::PerImage));
  EXPECT_EQ(meta.architecture, "seed-cnn-v1-gap");
  const CheckpointMetadata model = read_checkpoint_metadata(run + "/model.safetensors");
  EXPECT_EQ(model.decision_threshold, 0.5);
  EXPECT_EQ(model.threshold_rule, "0.5 (--threshold-rule 0.5)");

  // evaluate --stress scores the variants with the model's own normalisation.
  auto evaluate = pneumo_command("evaluate --model " + run + "/model.safetensors --data " +
                                     kSample + " --split test --stress --device cpu --json " +
                                     dir.file("m.json"), cache);
  ASSERT_EQ(evaluate.status, 0) << evaluate.output;
  EXPECT_NE(evaluate.output.find("stress worst accuracy"), std::string::npos) << evaluate.output;
  EXPECT_NE(evaluate.output.find("stress  10/10  100%"), std::string::npos) << "progress line";
  const auto metrics = nlohmann::json::parse(testing::read_text(dir.file("m.json")));
  EXPECT_EQ(metrics["stress"]["variants"].size(), 10u);
  EXPECT_TRUE(metrics["stress"]["worst_accuracy"].is_number());
  // Each variant applies the model's cut: its rule and in-sample flag are the split's.
  EXPECT_EQ(metrics["threshold_rule"], "0.5 (--threshold-rule 0.5)");
  for (const auto& variant : metrics["stress"]["variants"]) {
    EXPECT_EQ(variant["metrics"]["threshold_rule"], metrics["threshold_rule"]) << variant["name"];
    EXPECT_EQ(variant["metrics"]["applied_threshold_in_sample"],
              metrics["applied_threshold_in_sample"])
        << variant["name"];
  }
}

// AdamW and label smoothing through the command line: recorded, and an epoch-level resume ends
// with the weights and both moments of an uninterrupted run (the bias correction's step count
// comes back from the checkpoint); resuming with another optimizer is refused.
TEST(Cli, AdamWWithLabelSmoothingResumesExactly) {
  testing::TempDir dir;
  const std::string cache = dir.file("cache");
  const std::string options = " --size 32 --optimizer adamw --weight-decay 0.05 --beta2 0.99"
                              " --label-smoothing 0.1";
  auto straight = pneumo_command("train --data " + kSample + " --epochs 2 --out " +
                                     dir.file("straight") + options + kCommon, cache);
  ASSERT_EQ(straight.status, 0) << straight.output;
  auto first = pneumo_command("train --data " + kSample + " --epochs 1 --out " +
                                  dir.file("resumed") + options + kCommon, cache);
  ASSERT_EQ(first.status, 0) << first.output;
  auto other = pneumo_command("train --resume " + dir.file("resumed") +
                                  "/checkpoints/last.safetensors --epochs 2 --optimizer rmsprop" +
                                  kCommon, cache);
  EXPECT_EQ(other.status, 1) << other.output;
  EXPECT_NE(other.output.find("was trained with --optimizer adamw"), std::string::npos)
      << other.output;
  auto resumed = pneumo_command("train --resume " + dir.file("resumed") +
                                    "/checkpoints/last.safetensors --epochs 2" + kCommon, cache);
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  const CheckpointData a = load_checkpoint(dir.file("straight") + "/checkpoints/last.safetensors");
  const CheckpointData b = load_checkpoint(dir.file("resumed") + "/checkpoints/last.safetensors");
  EXPECT_EQ(a.metadata.optimizer, "adamw");
  EXPECT_EQ(a.metadata.config["label-smoothing"], 0.1);
  EXPECT_EQ(b.metadata.config["weight-decay"], 0.05);
  ASSERT_NE(a.find("optimizer.adamw.exp_avg_sq.conv1.weight"), nullptr);
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (const auto& tensor : a.tensors) {
    const NamedTensor* same = b.find(tensor.name);
    ASSERT_NE(same, nullptr) << tensor.name;
    EXPECT_EQ(tensor.values, same->values) << tensor.name << " differs after resuming";
  }
}

// explain: one map per readable image (a float32 .npy at the input size, a PNG overlay, a CSV
// line with the probability, names with commas and quotes quoted); an unreadable file is skipped
// with a warning and exit status 3; a layer that does not exist, or has no map to explain, is bad
// usage naming the layers it can explain, before any image is read; a folder holding another
// run's maps, or inputs without an image, are refused without leaving a folder behind.
TEST(Cli, ExplainWritesAMapPerImage) {
  testing::TempDir dir;
  const std::string cache = dir.file("cache"), run = dir.file("run"), out = dir.file("maps");
  auto train = pneumo_command("train --data " + kSample + " --size 32 --epochs 1 --out " + run +
                                  kCommon, cache);
  ASSERT_EQ(train.status, 0) << train.output;
  const std::string images = dir.file("images");
  fs::create_directories(images);
  int copied = 0;
  for (const auto& entry : fs::directory_iterator(kSample + "/test/PNEUMONIA"))
    if (copied++ < 3)
      fs::copy_file(entry.path(), fs::path(images) / (copied == 1 ? std::string("a, \"b\".jpeg")
                                                                  : entry.path().filename().string()));
  std::ofstream(images + "/broken.jpeg") << "not a jpeg";
  auto explain = pneumo_command("explain --device cpu --model " + run + "/model.safetensors " +
                                    images + " --out " + out, cache);
  EXPECT_EQ(explain.status, 3) << explain.output;
  EXPECT_NE(explain.output.find("skipping"), std::string::npos) << explain.output;
  std::istringstream csv(testing::read_text(out + "/explain.csv"));
  std::string line;
  std::getline(csv, line);
  EXPECT_EQ(line, "path,probability_pneumonia,label,map,map_peak");
  int rows = 0;
  std::map<std::string, std::string> explained;  // path -> probability, as written
  while (std::getline(csv, line)) {
    ++rows;
    const std::vector<std::string> cells = testing::split_csv(line);
    ASSERT_EQ(cells.size(), 5u) << line;
    const std::string map = cells[3];
    const NpyArray array = read_npy(out + "/" + map);
    EXPECT_EQ(array.shape, std::vector<int64_t>({32, 32})) << map;
    EXPECT_EQ(array.type, NpyType::Float32) << map;
    const auto* values = reinterpret_cast<const float*>(array.bytes.data());
    EXPECT_EQ(std::stof(cells[4]), *std::max_element(values, values + 32 * 32))
        << "map_peak is the .npy's maximum, every digit: " << line;
    EXPECT_TRUE(fs::exists(out + "/" + map.substr(0, map.size() - 4) + ".png")) << map;
    explained[cells[0]] = cells[1];
  }
  EXPECT_EQ(rows, 3);
  // The probability with every digit, as predict --csv writes it (6 digits printed 0.5000004 as
  // 0.5 beside the label PNEUMONIA).
  auto predicted = pneumo_command("predict --csv --device cpu --model " + run +
                                      "/model.safetensors " + images, cache);
  std::istringstream predicted_rows(predicted.output);
  int same = 0;
  for (std::string row; std::getline(predicted_rows, row);) {
    const std::vector<std::string> cells = testing::split_csv(row);
    if (cells.size() == 3 && explained.count(cells[0])) {
      EXPECT_EQ(explained[cells[0]], cells[1]) << cells[0];
      ++same;
    }
  }
  EXPECT_EQ(same, 3) << predicted.output;
  const std::string listed = testing::read_text(out + "/explain.csv");
  EXPECT_NE(listed.find("a, \"\"b\"\".jpeg\","), std::string::npos) << listed;  // path, quoted
  EXPECT_NE(listed.find(",\"0000_a, \"\"b\"\"_p"), std::string::npos) << listed;     // map, quoted
  // evaluate --gallery: every image in one confusion cell's mean map, the most confident listed.
  const std::string gallery = dir.file("gallery");
  auto evaluate = pneumo_command("evaluate --device cpu --model " + run + "/model.safetensors --data " +
                                     kSample + " --split test --gallery 2 --gallery-out " + gallery,
                                 cache);
  ASSERT_EQ(evaluate.status, 0) << evaluate.output;
  const std::string md = testing::read_text(gallery + "/gallery.md");
  for (const char* part : {"## Mean map per confusion cell", "## Most confident false positives",
                           "## Most confident false negatives", "## Most confident true positives",
                           "## Most confident true negatives", "Kermany"})
    EXPECT_NE(md.find(part), std::string::npos) << part << "\n" << md;
  int in_cells = 0;
  for (const char* cell : {"true_negative", "false_positive", "false_negative", "true_positive"}) {
    const auto at = md.find(std::string("![") + cell + "](mean_" + cell + ".png) ");
    if (at == std::string::npos) continue;
    in_cells += std::stoi(md.substr(md.find(") ", at) + 2));
    const NpyArray mean = read_npy(gallery + "/mean_" + cell + ".npy");
    EXPECT_EQ(mean.shape, std::vector<int64_t>({32, 32}));
  }
  EXPECT_EQ(in_cells, 60) << md;
  // A second gallery into the same folder would mix its overlays with these: refused first.
  auto again_gallery = pneumo_command("evaluate --device cpu --model " + run +
                                          "/model.safetensors --data " + kSample +
                                          " --split test --gallery 1 --gallery-out " + gallery,
                                      cache);
  EXPECT_EQ(again_gallery.status, 1) << again_gallery.output;
  EXPECT_NE(again_gallery.output.find("is not empty"), std::string::npos) << again_gallery.output;
  EXPECT_EQ(again_gallery.output.find("accuracy"), std::string::npos) << "refused before any work";
  auto no_gallery = pneumo_command("evaluate --device cpu --model " + run +
                                       "/model.safetensors --data " + kSample +
                                       " --split test --gallery-out " + dir.file("unused"),
                                   cache);
  EXPECT_EQ(no_gallery.status, 2) << no_gallery.output;
  // --scores (or --json) inside the gallery's folder could replace gallery.md: refused first.
  const std::string new_gallery = dir.file("gallery_with_scores");
  auto scores_inside = pneumo_command("evaluate --device cpu --model " + run +
                                          "/model.safetensors --data " + kSample +
                                          " --split test --gallery 1 --gallery-out " + new_gallery +
                                          " --scores " + new_gallery + "/gallery.md",
                                      cache);
  EXPECT_EQ(scores_inside.status, 2) << scores_inside.output;
  EXPECT_NE(scores_inside.output.find("lies in the gallery folder"), std::string::npos)
      << scores_inside.output;
  EXPECT_FALSE(fs::exists(new_gallery + "/gallery.md"));
  auto two = pneumo_command("evaluate --device cpu --model " + run + "/model.safetensors --model " +
                                run + "/model.safetensors --data " + kSample +
                                " --split test --gallery 2", cache);
  EXPECT_EQ(two.status, 2) << two.output;
  EXPECT_EQ(two.output.find("accuracy"), std::string::npos) << "refused before any work";

  const std::string fresh = dir.file("fresh");
  for (const char* layer : {"conv9", "fc1", "fc2"}) {
    auto bad_layer = pneumo_command("explain --device cpu --model " + run + "/model.safetensors " +
                                        images + " --out " + fresh + " --layer " + layer,
                                    cache);
    EXPECT_EQ(bad_layer.status, 2) << bad_layer.output;
    EXPECT_NE(bad_layer.output.find("one of conv1, "), std::string::npos) << bad_layer.output;
    EXPECT_EQ(bad_layer.output.find("fc1,"), std::string::npos) << bad_layer.output;
    EXPECT_EQ(bad_layer.output.find("skipping"), std::string::npos) << "no image read";
    EXPECT_FALSE(fs::exists(fresh)) << layer;
  }
  // Refused before any input is read: the missing file beside the images is never looked at.
  auto again = pneumo_command("explain --device cpu --model " + run + "/model.safetensors " +
                                  images + " " + dir.file("missing.png") + " --out " + out, cache);
  EXPECT_EQ(again.status, 1) << again.output;
  EXPECT_NE(again.output.find("is not empty"), std::string::npos) << again.output;
  fs::create_directories(dir.file("no_images"));
  auto empty = pneumo_command("explain --device cpu --model " + run + "/model.safetensors " +
                                  dir.file("no_images") + " --out " + fresh, cache);
  EXPECT_EQ(empty.status, 1) << empty.output;
  EXPECT_NE(empty.output.find("no image file"), std::string::npos) << empty.output;
  EXPECT_FALSE(fs::exists(fresh));
  // An --out inside an input folder: its overlays would be read as X-rays next time.
  auto inside = pneumo_command("explain --device cpu --model " + run + "/model.safetensors " +
                                   images + " --out " + images + "/maps", cache);
  EXPECT_EQ(inside.status, 2) << inside.output;
  EXPECT_NE(inside.output.find("lies inside the input folder"), std::string::npos)
      << inside.output;
  EXPECT_FALSE(fs::exists(images + "/maps"));
  // Nor inside a folder the input reads through a link: the check of the input folder alone let
  // `in/ext/maps` through, and the next predict of `in` scored the overlays.
  const std::string elsewhere = dir.file("elsewhere");
  fs::create_directories(elsewhere);
  fs::create_directory_symlink(elsewhere, images + "/ext");
  auto linked = pneumo_command("explain --device cpu --model " + run + "/model.safetensors " +
                                   images + " --out " + images + "/ext/maps", cache);
  EXPECT_EQ(linked.status, 2) << linked.output;
  EXPECT_NE(linked.output.find("a folder that the input folder " + images + " reads through a link"),
            std::string::npos)
      << linked.output;
  EXPECT_FALSE(fs::exists(elsewhere + "/maps"));
  fs::remove(images + "/ext");
  // A line break in an input's name: predict's plain line shows it as \n (one line per image)
  // and the maps' names carry '_' in its place.
  const std::string odd = dir.file("odd");
  fs::create_directories(odd);
  fs::copy_file(images + "/a, \"b\".jpeg", odd + "/new\nline.jpeg");
  fs::copy_file(images + "/a, \"b\".jpeg", odd + "/new\\nline.jpeg");  // a backslash, then n
  // Hidden names are left out, as prepare leaves them out of a tree (macOS's AppleDouble files
  // beside each image gave a warning each and status 3).
  testing::write_bytes(odd + "/._new.jpeg", {0x00, 0x05, 0x16, 0x07, 0x00});  // AppleDouble
  fs::create_directories(odd + "/.hidden");
  fs::copy_file(images + "/a, \"b\".jpeg", odd + "/.hidden/x.jpeg");
  auto listed_odd = pneumo_command("predict --device cpu --model " + run + "/model.safetensors " + odd, cache);
  EXPECT_EQ(listed_odd.status, 0) << listed_odd.output;
  EXPECT_NE(listed_odd.output.find(odd + "/new\\nline.jpeg  "), std::string::npos) << listed_odd.output;
  EXPECT_NE(listed_odd.output.find(odd + "/new\\\\nline.jpeg  "), std::string::npos) << listed_odd.output;
  EXPECT_EQ(listed_odd.output.find("._new"), std::string::npos) << listed_odd.output;
  // A carriage return in a name is quoted in CSV (RFC 4180), or a reader splits the row there.
  fs::copy_file(images + "/a, \"b\".jpeg", odd + "/car\rriage.jpeg");
  auto csv_odd = pneumo_command("predict --csv --device cpu --model " + run +
                                    "/model.safetensors " + odd + "/car\rriage.jpeg", cache);
  EXPECT_EQ(csv_odd.status, 0) << csv_odd.output;
  EXPECT_NE(csv_odd.output.find("\"" + odd + "/car\rriage.jpeg\","), std::string::npos)
      << csv_odd.output;
  fs::remove(odd + "/car\rriage.jpeg");
  EXPECT_EQ(listed_odd.output.find(".hidden"), std::string::npos) << listed_odd.output;
  auto explained_odd = pneumo_command("explain --device cpu --model " + run + "/model.safetensors " +
                                          odd + " --out " + dir.file("odd_maps"), cache);
  EXPECT_EQ(explained_odd.status, 0) << explained_odd.output;
  for (const auto& entry : fs::directory_iterator(dir.file("odd_maps")))
    EXPECT_EQ(entry.path().filename().string().find('\n'), std::string::npos) << entry.path();
  EXPECT_TRUE(fs::exists(dir.file("odd_maps") + "/explain.csv"));
  // A name of 249 bytes (the file system allows 255) with two-byte characters where it is cut:
  // its maps are named by a whole-character prefix of it (it failed after all the work).
  const std::string long_dir = dir.file("long");
  fs::create_directories(long_dir);
  std::string long_name = std::string(119, 'z');
  for (int i = 0; i < 60; ++i) long_name += "\xc3\xa9";  // U+00E9, two bytes
  long_name += ".jpeg";
  fs::copy_file(fs::directory_iterator(kSample + "/test/NORMAL")->path(),
                fs::path(long_dir) / long_name);
  auto long_run = pneumo_command("explain --device cpu --model " + run + "/model.safetensors " +
                                     long_dir + " --out " + fresh, cache);
  ASSERT_EQ(long_run.status, 0) << long_run.output;
  const std::vector<std::string> long_rows = [&] {
    std::vector<std::string> lines;
    std::istringstream text(testing::read_text(fresh + "/explain.csv"));
    for (std::string row; std::getline(text, row);) lines.push_back(row);
    return lines;
  }();
  ASSERT_EQ(long_rows.size(), 2u);
  const std::string map_name = testing::split_csv(long_rows[1])[3];
  EXPECT_EQ(map_name.rfind("0000_" + std::string(119, 'z') + "_p", 0), 0u) << map_name;
  EXPECT_TRUE(fs::exists(fresh + "/" + map_name));
}

// "path,probability,label,logit" rows of `predict --csv --logits` -> probability by file name.
std::map<std::string, double> probabilities(const std::string& csv_text) {
  std::map<std::string, double> out;
  std::istringstream csv(csv_text);
  std::string line;
  while (std::getline(csv, line)) {
    if (line.rfind("path,", 0) == 0 || line.rfind("model: ", 0) == 0 ||
        line.find(',') == std::string::npos)
      continue;
    const std::string path = line.substr(0, line.find(','));
    const std::string rest = line.substr(line.find(',') + 1);
    out[fs::path(path).filename().string()] = std::stod(rest.substr(0, rest.find(',')));
  }
  return out;
}

// An ensemble is the mean of its members' probabilities, and flip test-time augmentation the mean
// over an image and its mirror (mirrored here by OpenCV, written as PNG, predicted alone).
TEST(Cli, EnsembleAndFlipTtaAverageProbabilities) {
  testing::TempDir dir;
  const std::string cache = dir.file("cache");
  for (const char* seed : {"1", "2"}) {
    auto train = pneumo_command("train --data " + kSample + " --size 32 --epochs 1 --seed " +
                                    seed + " --out " + dir.file(std::string("run") + seed) + kCommon,
                                cache);
    ASSERT_EQ(train.status, 0) << train.output;
  }
  const std::string a = dir.file("run1") + "/model.safetensors";
  const std::string b = dir.file("run2") + "/model.safetensors";
  const std::string images = dir.file("images"), mirrored = dir.file("mirrored");
  fs::create_directories(images);
  fs::create_directories(mirrored);
  int copied = 0;
  for (const auto& entry : fs::directory_iterator(kSample + "/test/NORMAL")) {
    if (copied++ == 4) break;
    const cv::Mat image = cv::imread(entry.path().string(), cv::IMREAD_GRAYSCALE);
    ASSERT_FALSE(image.empty());
    cv::Mat flipped;
    cv::flip(image, flipped, 1);
    const std::string name = entry.path().stem().string() + ".png";
    ASSERT_TRUE(cv::imwrite(images + "/" + name, image));
    ASSERT_TRUE(cv::imwrite(mirrored + "/" + name, flipped));
  }
  auto predict = [&](const std::string& args) {
    auto result = pneumo_command("predict --csv --device cpu " + args, cache);
    EXPECT_EQ(result.status, 0) << result.output;
    return probabilities(result.output);
  };
  const auto pa = predict("--model " + a + " " + images);
  const auto pb = predict("--model " + b + " " + images);
  const auto both = predict("--model " + a + " --model " + b + " " + images);
  ASSERT_EQ(both.size(), 4u);
  double spread = 0.0;
  for (const auto& [name, p] : both) {
    EXPECT_NEAR(p, (pa.at(name) + pb.at(name)) / 2.0, 2e-6) << name;
    spread = std::max(spread, std::fabs(pa.at(name) - pb.at(name)));
  }
  EXPECT_GT(spread, 1e-4) << "two seeds gave the same model: the test proves nothing";
  const auto plain = predict("--model " + a + " " + images);
  const auto mirror = predict("--model " + a + " " + mirrored);
  const auto tta = predict("--model " + a + " --tta flip " + images);
  double asymmetry = 0.0;
  for (const auto& [name, p] : tta) {
    EXPECT_NEAR(p, (plain.at(name) + mirror.at(name)) / 2.0, 2e-6) << name;
    asymmetry = std::max(asymmetry, std::fabs(plain.at(name) - mirror.at(name)));
  }
  EXPECT_GT(asymmetry, 1e-4) << "the model sees no difference between an image and its mirror: "
                                "the test cannot tell whether the flip view was averaged in";

  // An ensemble reports the threshold it applies; members that carved different validation
  // splits cannot be scored on "their" validation split together.
  auto ensemble_val = pneumo_command("evaluate --device cpu --data " + kSample +
                                         " --split val-carved --model " + a + " --model " + b,
                                     cache);
  EXPECT_NE(ensemble_val.status, 0);
  EXPECT_NE(ensemble_val.output.find("carved another validation split"), std::string::npos)
      << ensemble_val.output;
  auto ensemble_test = pneumo_command("evaluate --device cpu --data " + kSample +
                                          " --split test --model " + a + " --model " + b,
                                      cache);
  ASSERT_EQ(ensemble_test.status, 0) << ensemble_test.output;
  EXPECT_NE(ensemble_test.output.find("default 0.5 for an ensemble"), std::string::npos)
      << ensemble_test.output;
  // One model under --tta flip keeps its stored cut; a Youden cut (here written into a copy of
  // the model, the sample's validation being too small for one) was tuned on single-view scores,
  // and the rule says so; the 0.5 fallback was tuned on nothing, and it does not.
  CheckpointData tuned = load_checkpoint(a);
  tuned.metadata.decision_threshold = 0.42;
  tuned.metadata.threshold_rule = "Youden's J on 40 validation images";
  save_checkpoint(dir.file("tuned.safetensors"), tuned);
  // Its Youden cut scored on the validation split it was tuned on, or on the train split that
  // holds it: said to be optimistic there, not on test.
  // Under --tta flip too (the mirror's mean is no fresh sample of these images; it was not said).
  for (const auto& [split, in_sample] :
       {std::pair<std::string, bool>{"val-carved", true}, {"test", false},
        {"val-carved --tta flip", true}, {"train", true}}) {
    auto scored = pneumo_command("evaluate --device cpu --data " + kSample + " --split " + split +
                                     " --model " + dir.file("tuned.safetensors"),
                                 cache);
    ASSERT_EQ(scored.status, 0) << scored.output;
    EXPECT_EQ(scored.output.find("tuned on these images or a part of them") != std::string::npos,
              in_sample)
        << split << "\n" << scored.output;
  }
  for (const auto& [model, suffixed] :
       {std::pair<std::string, bool>{dir.file("tuned.safetensors"), true}, {a, false}}) {
    auto flipped = pneumo_command("evaluate --device cpu --data " + kSample +
                                      " --split test --tta flip --model " + model,
                                  cache);
    ASSERT_EQ(flipped.status, 0) << flipped.output;
    EXPECT_EQ(flipped.output.find(", tuned without test-time augmentation") != std::string::npos,
              suffixed)
        << flipped.output;
  }
}

// A model of one epoch on the sample at 32 px, trained in dir/run: its model.safetensors, or ""
// (with a test failure) when training failed.
std::string one_epoch_model(const testing::TempDir& dir, const std::string& cache) {
  auto train = pneumo_command("train --data " + kSample + " --size 32 --epochs 1 --out " +
                                  dir.file("run") + kCommon,
                              cache);
  EXPECT_EQ(train.status, 0) << train.output;
  return train.status == 0 ? dir.file("run") + "/model.safetensors" : "";
}

// A copy of `model` whose fc2 weights and bias (the last layer) go through `change`: multiplied,
// its logits are too (large factors saturate the probabilities); set to +-3e38, the sums overflow
// to inf and NaN though every weight is finite.
std::string changed_model(const std::string& model, const std::function<float(float)>& change,
                          const std::string& out) {
  CheckpointData data = load_checkpoint(model);
  for (NamedTensor& tensor : data.tensors)
    if (tensor.name.rfind("fc2.", 0) == 0)
      for (float& v : tensor.values) v = change(v);
  save_checkpoint(out, data);
  return out;
}

// An ensemble of a model with itself, with or without --tta flip's mirror, is that model: its
// mean probability is the model's. For a saturated model (probabilities that round to 0 or 1 in
// double) the average, taken over probabilities and clamped to logits of +-40, once turned its
// distinct scores into ties (ROC AUC 0.5, loss 20). And a model whose output is not finite is
// refused by predict and inside an ensemble, as evaluate refused it alone.
TEST(Cli, EnsemblesKeepConfidentScoresAndRefuseBrokenModels) {
  testing::TempDir dir;
  const std::string cache = dir.file("cache");
  const std::string model = one_epoch_model(dir, cache);
  ASSERT_FALSE(model.empty());
  const std::string saturated = changed_model(
      model, [](float v) { return v * 4000.0f; }, dir.file("saturated.safetensors"));
  const auto scores = [&](const std::string& models) {
    auto result = pneumo_command("evaluate --device cpu --data " + kSample + " --split test " +
                                     models + " --threshold 0.5 --json " + dir.file("m.json"),
                                 cache);
    EXPECT_EQ(result.status, 0) << result.output;
    std::ifstream in(dir.file("m.json"));
    return nlohmann::json::parse(in);
  };
  const nlohmann::json alone = scores("--model " + saturated);
  ASSERT_TRUE(alone["auc_defined"].get<bool>()) << alone.dump();
  ASSERT_GT(alone["loss"].get<double>(), 40.0) << "not saturated: the test proves nothing";
  const nlohmann::json flipped = scores("--model " + saturated + " --tta flip");
  EXPECT_GT(std::fabs(flipped["roc_auc"].get<double>() - 0.5), 0.05)
      << "every image tied (the clamp at +-40): " << flipped.dump();
  for (const auto& [twice, once] :
       {std::pair<std::string, nlohmann::json>{"--model " + saturated + " --model " + saturated,
                                               alone},
        {"--model " + saturated + " --model " + saturated + " --tta flip", flipped}}) {
    const nlohmann::json averaged = scores(twice);
    EXPECT_NEAR(averaged["roc_auc"].get<double>(), once["roc_auc"].get<double>(), 1e-9) << twice;
    EXPECT_NEAR(averaged["loss"].get<double>(), once["loss"].get<double>(),
                1e-5 * once["loss"].get<double>())
        << twice;
  }

  const std::string broken = changed_model(
      model, [](float v) { return std::copysign(3e38f, v); }, dir.file("broken.safetensors"));
  for (const std::string& command :
       {"predict --device cpu --model " + broken + " " + kSample + "/test/NORMAL",
        "evaluate --device cpu --data " + kSample + " --split test --model " + model +
            " --model " + broken,
        "evaluate --device cpu --data " + kSample + " --split test --tta flip --model " + broken,
        // explain wrote "-nan,NORMAL" for every image, status 0.
        "explain --device cpu --model " + broken + " " + kSample + "/test/NORMAL --out " +
            dir.file("explained")}) {
    auto refused = pneumo_command(command, cache);
    EXPECT_EQ(refused.status, 1) << command << "\n" << refused.output;
    EXPECT_NE(refused.output.find("model " + broken + " produced a non-finite output"),
              std::string::npos)
        << command << "\n" << refused.output;
  }
}

// predict's table prints each p with enough digits to read on the side of the printed cut its
// label says: a threshold typed with seven digits was printed with six, and an image whose p lay
// between the two printed as that same number, labelled PNEUMONIA in one run and NORMAL in the
// next. Thresholds just below and just above one image's p.
TEST(Cli, PredictPrintsEachProbabilityOnItsSideOfTheCut) {
  testing::TempDir dir;
  const std::string cache = dir.file("cache");
  const std::string model = one_epoch_model(dir, cache);
  ASSERT_FALSE(model.empty());
  const std::string images = kSample + "/test/NORMAL";
  auto csv = pneumo_command("predict --csv --device cpu --model " + model + " " + images, cache);
  ASSERT_EQ(csv.status, 0) << csv.output;
  const auto [name, p] = *probabilities(csv.output).begin();
  for (const double offset : {-3e-8, 3e-8}) {
    char threshold[32];
    std::snprintf(threshold, sizeof threshold, "%.9f", p + offset);
    auto table = pneumo_command(
        "predict --device cpu --threshold " + std::string(threshold) + " --model " + model + " " +
            images,
        cache);
    ASSERT_EQ(table.status, 0) << table.output;
    EXPECT_NE(table.output.find("PNEUMONIA when p > " + std::string(threshold).erase(
                                    std::string(threshold).find_last_not_of('0') + 1)),
              std::string::npos)
        << "the threshold as typed\n" << table.output;
    std::istringstream lines(table.output);
    std::string line;
    bool seen = false;
    while (std::getline(lines, line)) {
      if (line.find(name) == std::string::npos) continue;
      seen = true;
      std::istringstream fields(line.substr(line.find(name) + name.size()));
      double printed = 0;
      std::string label;
      fields >> printed >> label;
      EXPECT_EQ(label, offset < 0 ? "PNEUMONIA" : "NORMAL") << line;
      EXPECT_EQ(printed > std::strtod(threshold, nullptr), offset < 0) << line;
    }
    EXPECT_TRUE(seen) << name << "\n" << table.output;
  }
}

}  // namespace
}  // namespace pneumo
