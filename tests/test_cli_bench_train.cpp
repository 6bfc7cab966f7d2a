// `pneumo bench train` on the CPU backend (what CI can run): one JSON line per batch size labelled
// CPU, with the per-phase split and the epoch measurement, and the Markdown table. Only the
// structure is checked; the numbers are measurements, not assertions. On a GPU, --cuda-graph's
// recordings and replays.
#include <gtest/gtest.h>

#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_test_util.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"

namespace pneumo {
namespace {

// `pneumo bench train` on the CPU backend, 2 threads, 2 steps after 1 warm-up, plus `flags`.
testing::CommandResult bench_train_on_the_cpu(const std::string& flags) {
  testing::TempDir dir;
  return testing::pneumo_command(
      "bench train --device cpu --threads 2 --steps 2 --warmup 1 " + flags, dir.file("cache"));
}

// The JSON lines of a command's output, each with its text (for failure messages).
std::vector<std::pair<nlohmann::json, std::string>> json_lines(const std::string& output) {
  std::vector<std::pair<nlohmann::json, std::string>> rows;
  std::istringstream lines(output);
  std::string line;
  while (std::getline(lines, line))
    if (!line.empty() && line[0] == '{') rows.emplace_back(nlohmann::json::parse(line), line);
  return rows;
}

// On the CPU, what a flag leaves unset takes the CPU's defaults (batch 32, 10 steps after 2
// warm-up ones: CUDA's are 240 steps, half at batch 256, and printed nothing until a batch size
// was done), and a line on stderr says what each batch size runs before it runs.
TEST(CliBenchTrain, TheCpuHasDefaultsOfItsOwnAndSaysWhatRuns) {
  testing::TempDir dir;
  const auto steps = testing::pneumo_command("bench train --device cpu --threads 2 --batch 2",
                                             dir.file("cache"));
  ASSERT_EQ(steps.status, 0) << steps.output;
  const auto stepped = json_lines(steps.output);
  ASSERT_EQ(stepped.size(), 1u) << steps.output;
  EXPECT_EQ(stepped[0].first["steps"], 10) << stepped[0].second;
  EXPECT_EQ(stepped[0].first["warmup"], 2) << stepped[0].second;
  EXPECT_NE(steps.output.find("bench train: batch 2, 2 warm-up and 10 timed steps"),
            std::string::npos)
      << steps.output;
  const auto batches = testing::pneumo_command(
      "bench train --device cpu --threads 2 --steps 1 --warmup 0", dir.file("cache"));
  ASSERT_EQ(batches.status, 0) << batches.output;
  const auto rows = json_lines(batches.output);
  ASSERT_EQ(rows.size(), 1u) << "one batch size on the CPU\n" << batches.output;
  EXPECT_EQ(rows[0].first["batch"], 32) << rows[0].second;
}

TEST(CliBenchTrain, RunsOnTheCpuAndReportsPhasesAndATable) {
  const auto result = bench_train_on_the_cpu("--batch 2 --batch 3");
  ASSERT_EQ(result.status, 0) << result.output;
  int rows = 0;
  for (const auto& [row, line] : json_lines(result.output)) {
    EXPECT_FALSE(row.contains("measure")) << "no recipe measurement on the CPU by default: " << line;
    EXPECT_EQ(row["device"], "CPU") << line;
    EXPECT_EQ(row["batch"], rows == 0 ? 2 : 3) << line;
    EXPECT_GT(row["images_per_second"].get<double>(), 0.0) << line;
    double phases = 0.0;
    for (const char* phase : {"augment", "forward", "loss", "backward", "optimizer"}) {
      ASSERT_TRUE(row["phases_ms"].contains(phase)) << phase << " missing: " << line;
      EXPECT_GE(row["phases_ms"][phase].get<double>(), 0.0) << phase;
      phases += row["phases_ms"][phase].get<double>();
    }
    EXPECT_GT(phases, 0.0) << line;
    EXPECT_TRUE(row["graph"].contains("error")) << "no CUDA Graph on the CPU backend: " << line;
    EXPECT_EQ(row["epoch_images"], 2 * row["batch"].get<int>()) << line;
    EXPECT_FALSE(row.contains("layers_ms")) << "per-layer times only with --layers: " << line;
    // The model's parameters, gradients and RMSprop state alone are 3 x 1.25M floats.
    EXPECT_GT(row["memory_peak_mib"].get<double>(), 14.0) << line;
    EXPECT_FALSE(row.contains("device_memory_in_use_mib")) << "CUDA only: " << line;
    ++rows;
  }
  EXPECT_EQ(rows, 2) << result.output;
  EXPECT_NE(result.output.find("### pneumo bench train on the CPU backend"), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("| 3 | "), std::string::npos) << "a table row per batch size";
}

// --recipe-epochs: the recipe end to end first, on a backend of its own, one line with each
// epoch's training and validation seconds that add up within the total.
TEST(CliBenchTrain, RecipeEpochsTimesTheRunEndToEnd) {
  const auto result = bench_train_on_the_cpu("--batch 4 --recipe-epochs 3 --epoch-images 10");
  ASSERT_EQ(result.status, 0) << result.output;
  const size_t json_at = result.output.find("{\"");
  ASSERT_NE(json_at, std::string::npos) << result.output;
  const auto recipe = nlohmann::json::parse(
      result.output.substr(json_at, result.output.find('\n', json_at) - json_at));
  ASSERT_EQ(recipe["measure"], "recipe") << recipe.dump();
  EXPECT_EQ(recipe["epochs"], 3);
  EXPECT_EQ(recipe["train_images"], 10);
  EXPECT_EQ(recipe["val_images"], 1) << "782 / 6586 of 10, rounded, at least one";
  ASSERT_EQ(recipe["epoch_seconds"].size(), 3u);
  double epochs = 0.0;
  for (size_t i = 0; i < 3; ++i) {
    const double train = recipe["train_seconds"][i], val = recipe["val_seconds"][i];
    const double epoch = recipe["epoch_seconds"][i];
    EXPECT_GT(train, 0.0);
    EXPECT_GT(val, 0.0);
    EXPECT_LE(train + val, epoch) << "the parts lie inside the epoch";
    epochs += epoch;
  }
  const double total = recipe["total_seconds"], setup = recipe["setup_seconds"];
  EXPECT_LE(setup + epochs, total);
  const double backend = recipe["setup_backend_seconds"];
  EXPECT_GT(backend, 0.0);
  EXPECT_LE(backend, setup) << "creating the backend is part of the set-up";
  EXPECT_EQ(recipe["first_epoch_seconds"], recipe["epoch_seconds"][0]);
  EXPECT_FALSE(recipe.contains("tuning_cache")) << "the CPU backend decides nothing to remember";
  EXPECT_NE(result.output.find("### The recipe end to end"), std::string::npos) << result.output;
  EXPECT_NE(bench_train_on_the_cpu("--recipe-epochs -2").status, 0);
}

// On a GPU, the recipe line says whether its clock ran on a cold or a warm tuning cache: a first
// run on a new file decides everything (cold), a second on the same file nothing (warm: every
// decision of the first, the last partial batch and validation's included, recalled). Skipped
// without a GPU.
TEST(CliBenchTrain, TheRecipeSaysWhetherItsTuningCacheWasWarm) {
  PNEUMO_REQUIRE_CUDA();
  testing::TempDir dir;
  const std::string command = "bench train --device cuda --steps 1 --warmup 0 --batch 4 "
                              "--recipe-epochs 2 --epoch-images 10 --tuning-cache " +
                              dir.file("tuning.json");
  for (const char* expected : {"cold", "warm"}) {
    const auto result = testing::pneumo_command(command, dir.file("cache"));
    ASSERT_EQ(result.status, 0) << result.output;
    const auto rows = json_lines(result.output);
    ASSERT_FALSE(rows.empty()) << result.output;
    const nlohmann::json& recipe = rows.front().first;
    ASSERT_EQ(recipe.value("measure", ""), "recipe") << rows.front().second;
    ASSERT_TRUE(recipe.contains("tuning_cache")) << rows.front().second;
    EXPECT_EQ(recipe["tuning_cache"]["state"], expected) << rows.front().second;
    EXPECT_NE(result.output.find(std::string("Tuning cache ") + expected + " ("), std::string::npos)
        << result.output;
  }
}

// --first-calls: the recipe's first two epochs charged op by op. The charges tile each epoch (from
// its start to its last op's end), every op of epoch 1 runs as often in epoch 2, and the excess
// column is epoch 1's time less epoch 2's, largest first.
void expect_first_calls_table(const testing::CommandResult& result, int batch) {
  ASSERT_EQ(result.status, 0) << result.output;
  const auto rows = json_lines(result.output);
  ASSERT_FALSE(rows.empty()) << result.output;
  const nlohmann::json& recipe = rows.front().first;
  ASSERT_EQ(recipe["measure"], "recipe") << rows.front().second;
  ASSERT_TRUE(recipe.contains("first_calls")) << rows.front().second;
  const nlohmann::json& probe = recipe["first_calls"];
  ASSERT_GT(probe["ops"].size(), 20u) << "every op of the model's step and validation pass";
  double charged[2] = {0.0, 0.0}, previous = 1e300;
  bool saw_tail = false;
  bool saw_conv = false;
  const std::string first_conv = "conv2d_forward (" + std::to_string(batch) + ", 1, ";
  for (const auto& op : probe["ops"]) {
    const std::string label = op["op"];
    EXPECT_EQ(op["calls"][0], op["calls"][1]) << label << ": the epochs run the same ops";
    for (int e = 0; e < 2; ++e) {
      EXPECT_GE(op["ms"][e].get<double>(), 0.0) << label;
      charged[e] += op["ms"][e].get<double>();
    }
    EXPECT_NEAR(op["excess_ms"].get<double>(),
                op["ms"][0].get<double>() - op["ms"][1].get<double>(), 1e-9) << label;
    EXPECT_LE(op["excess_ms"].get<double>(), previous) << "largest excess first: " << label;
    previous = op["excess_ms"].get<double>();
    EXPECT_LE(op["first_call_ms"].get<double>(), op["ms"][0].get<double>() + 1e-9) << label;
    saw_conv = saw_conv || label.rfind(first_conv, 0) == 0;
    // Each op is charged as it ends (the backend observes an op after running it), so what is
    // left when the epoch stops follows its last op, and nothing precedes the first.
    EXPECT_EQ(label.find("before its first op"), std::string::npos) << label;
    if (label == "(after the epoch's last op)") {
      saw_tail = true;
      EXPECT_EQ(op["calls"][0], 1) << label;
    }
  }
  EXPECT_TRUE(saw_tail) << "the time after the last op has a row of its own";
  EXPECT_TRUE(saw_conv) << "the first layer's forward, keyed by its input's shape";
  for (int e = 0; e < 2; ++e)
    EXPECT_NEAR(charged[e], 1e3 * probe["epoch_seconds"][e].get<double>(), 1e-3)
        << "the charges of epoch " << e + 1 << " add up to it";
  EXPECT_NE(result.output.find("Where epoch 1 spends what epoch 2 does not"), std::string::npos)
      << result.output;
}

TEST(CliBenchTrain, FirstCallsChargesEachEpochToItsOps) {
  expect_first_calls_table(
      bench_train_on_the_cpu("--batch 2 --recipe-epochs 2 --epoch-images 4 --first-calls"), 2);
  // Without two recipe epochs there is nothing to compare; a graph's recording cannot stop at
  // every op to synchronise.
  for (const char* flags : {"--first-calls", "--first-calls --recipe-epochs 1",
                            "--first-calls --recipe-epochs 2 --cuda-graph"}) {
    const auto refused = bench_train_on_the_cpu(flags);
    EXPECT_EQ(refused.status, 2) << flags << "\n" << refused.output;
    EXPECT_NE(refused.output.find("--first-calls"), std::string::npos) << refused.output;
  }
}

// --cuda-graph: the recipe's epochs and the one-epoch pass go through the live-step path; the
// CPU records no graph and the JSON says so, with every step issued op by op.
TEST(CliBenchTrain, CudaGraphSaysWhatItReplayed) {
  const auto result =
      bench_train_on_the_cpu("--batch 4 --recipe-epochs 2 --epoch-images 10 --cuda-graph");
  ASSERT_EQ(result.status, 0) << result.output;
  int rows = 0;
  for (const auto& [row, line] : json_lines(result.output)) {
    EXPECT_EQ(row["cuda_graph"], true) << line;
    ASSERT_TRUE(row.contains("step_graphs")) << line;
    const auto& graphs = row["step_graphs"];
    EXPECT_EQ(graphs["replayed"], 0) << line;
    // Three steps an epoch (4 + 4 + 2 images): the recipe's two epochs, or the one timed epoch.
    EXPECT_EQ(graphs["issued"], row.contains("measure") ? 6 : 3) << line;
    EXPECT_NE(graphs["refused"].get<std::string>().find("records no graphs"), std::string::npos)
        << line;
    ++rows;
  }
  EXPECT_EQ(rows, 2) << result.output;
  EXPECT_NE(result.output.find("0 replayed from 0 recording(s), 6 issued op by op"),
            std::string::npos)
      << result.output;
}

// --drop-last: the recipe's epochs and the one-epoch pass leave out their partial batch (10
// images at batch 4: two steps an epoch, not three), which the step counts and the epoch's
// images show; an epoch without a full batch is refused naming the flag.
TEST(CliBenchTrain, DropLastRunsWholeBatchesOnly) {
  const auto result = bench_train_on_the_cpu(
      "--batch 4 --recipe-epochs 2 --epoch-images 10 --cuda-graph --drop-last");
  ASSERT_EQ(result.status, 0) << result.output;
  int rows = 0;
  for (const auto& [row, line] : json_lines(result.output)) {
    EXPECT_EQ(row["drop_last"], true) << line;
    EXPECT_EQ(row["step_graphs"]["issued"], row.contains("measure") ? 4 : 2) << line;
    if (!row.contains("measure")) {
      EXPECT_EQ(row["epoch_images"], 8) << line;
    }
    ++rows;
  }
  EXPECT_EQ(rows, 2) << result.output;
  EXPECT_NE(result.output.find("(the last, partial batch left out)"), std::string::npos)
      << result.output;

  const auto refused =
      bench_train_on_the_cpu("--batch 2 --batch 4 --recipe-epochs 1 --epoch-images 3 --drop-last");
  EXPECT_NE(refused.status, 0) << refused.output;
  EXPECT_NE(refused.output.find("--drop-last: --epoch-images 3 holds no full batch of 4"),
            std::string::npos)
      << refused.output;
  EXPECT_EQ(refused.output.find("{\""), std::string::npos) << "refused before any row: "
                                                           << refused.output;
}

// On a GPU, --first-calls synchronises the CUDA backend's stream at every op of both epochs; the
// table is read the same way. Skipped without a GPU.
TEST(CliBenchTrain, FirstCallsOnAGpu) {
  PNEUMO_REQUIRE_CUDA();
  testing::TempDir dir;
  expect_first_calls_table(
      testing::pneumo_command("bench train --device cuda --steps 2 --warmup 1 --batch 4 "
                              "--recipe-epochs 2 --epoch-images 10 --first-calls",
                              dir.file("cache")),
      4);
}

// On a GPU, the same run records the full-batch steps and replays them: nothing refused, at least
// one recording and one replay in the recipe and in the timed epoch, every step either replayed or
// issued (how many of each depends on when the workspaces stop growing). Skipped without a GPU.
TEST(CliBenchTrain, CudaGraphReplaysStepsOnAGpu) {
  PNEUMO_REQUIRE_CUDA();
  testing::TempDir dir;
  const auto result = testing::pneumo_command(
      "bench train --device cuda --steps 2 --warmup 1 --batch 4 --recipe-epochs 2 "
      "--epoch-images 10 --cuda-graph --val-batch 8",
      dir.file("cache"));
  ASSERT_EQ(result.status, 0) << result.output;
  int rows = 0;
  for (const auto& [row, line] : json_lines(result.output)) {
    ASSERT_TRUE(row.contains("step_graphs")) << line;
    const auto& graphs = row["step_graphs"];
    EXPECT_EQ(graphs["refused"], "") << line;
    EXPECT_GE(graphs["recorded"].get<int>(), 1) << line;
    EXPECT_GE(graphs["replayed"].get<int>(), 1) << line;
    // Three steps an epoch (4 + 4 + 2 images): the recipe's two epochs, or the one timed epoch.
    EXPECT_EQ(graphs["replayed"].get<int>() + graphs["issued"].get<int>(),
              row.contains("measure") ? 6 : 3)
        << line;
    ++rows;
  }
  EXPECT_EQ(rows, 2) << result.output;
}

// --layers: every layer of the model, in order, with its forward and backward time, and every
// backend op of a step.
TEST(CliBenchTrain, LayersGivesEachLayerAndEachBackendOp) {
  const auto result = bench_train_on_the_cpu("--batch 2 --layers");
  ASSERT_EQ(result.status, 0) << result.output;
  const std::vector<std::string> expected{
      "conv1", "bn1",   "pool1", "conv2",    "dropout2", "bn2",  "pool2",      "conv3",
      "bn3",   "pool3", "conv4", "dropout4", "bn4",      "pool4", "conv5",     "dropout5",
      "bn5",   "pool5", "flatten", "fc1",    "dropout_fc", "fc2"};
  const size_t json_at = result.output.find("{\"");
  ASSERT_NE(json_at, std::string::npos) << result.output;
  const auto row = nlohmann::json::parse(
      result.output.substr(json_at, result.output.find('\n', json_at) - json_at));
  ASSERT_TRUE(row.contains("layers_ms")) << row.dump();
  const auto& layers = row["layers_ms"];
  ASSERT_EQ(layers.size(), expected.size()) << layers.dump();
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(layers[i]["layer"], expected[i]);
    EXPECT_GE(layers[i]["forward_ms"].get<double>(), 0.0) << expected[i];
    EXPECT_GE(layers[i]["backward_ms"].get<double>(), 0.0) << expected[i];
    if (expected[i].rfind("conv", 0) == 0) {  // real work both ways: a missing mark reads 0
      EXPECT_GT(layers[i]["forward_ms"].get<double>(), 0.0) << expected[i];
      EXPECT_GT(layers[i]["backward_ms"].get<double>(), 0.0) << expected[i];
    }
  }
  EXPECT_NE(result.output.find("| conv2 | "), std::string::npos) << "a per-layer table";

  // And every backend op of the step, marked as the model calls it: calls per step by op name.
  ASSERT_TRUE(row.contains("ops_ms")) << row.dump();
  std::map<std::string, double> calls;
  for (const auto& op : row["ops_ms"]) {
    const std::string label = op["op"];
    calls[label.substr(0, label.find(' '))] += op["calls_per_step"].get<double>();
    EXPECT_GE(op["ms"].get<double>(), 0.0) << label;
  }
  const std::map<std::string, double> expected_calls{
      {"gather_augment", 1},     {"gather_values", 1},      {"conv2d_forward", 5},
      {"batchnorm_forward_training", 5}, {"maxpool2d_forward", 5}, {"dropout_forward", 4},
      {"dense_forward", 2},      {"relu_forward", 1},       {"sigmoid_bce", 1},
      // fc's only: the blocks' dropout gradients ride on batch-norm's ReLU gate
      {"mark_nonfinite", 1},     {"dense_backward", 2},     {"dropout_backward", 1},
      // fc1's only: the convolutions' ReLU gradients are batch-norm's ReLU gate
      {"relu_backward", 1},      {"maxpool2d_backward", 5}, {"batchnorm_backward", 5},
      // both gradients in one call; conv1's without dx
      {"conv2d_backward", 5},    {"rmsprop_step", 1}};
  EXPECT_EQ(calls, expected_calls) << row["ops_ms"].dump();
  EXPECT_NE(result.output.find("| conv2d_backward (2, 1, 150, 150) | 1.0 |"),
            std::string::npos)
      << "a per-op table naming each op's main operand";
}

// Switches as on `train`: bare means true, a value (spaced or with =) wins.
TEST(CliBenchTrain, SwitchesTakeAValueOrNone) {
  const auto result = bench_train_on_the_cpu(
      "--batch 2 --fused-block-tails false --augment false --layers --cuda-graph=false "
      "--deterministic true");
  ASSERT_EQ(result.status, 0) << result.output;
  const auto rows = json_lines(result.output);
  ASSERT_EQ(rows.size(), 1u) << result.output;
  const nlohmann::json& row = rows[0].first;
  EXPECT_EQ(row["fused_block_tails"], false) << rows[0].second;
  EXPECT_EQ(row["augment"], false) << rows[0].second;
  EXPECT_EQ(row["cuda_graph"], false) << rows[0].second;
  EXPECT_EQ(row["deterministic"], true) << rows[0].second;
  EXPECT_TRUE(row.contains("layers_ms")) << "a bare --layers is true: " << rows[0].second;
  const auto bare = bench_train_on_the_cpu("--batch 2 --fused-block-tails");
  ASSERT_EQ(bare.status, 0) << bare.output;
  EXPECT_EQ(json_lines(bare.output).at(0).first["fused_block_tails"], true) << bare.output;
}

// A bad value is bad usage (status 2, docs/usage.md) naming its flag, refused before any
// measurement starts, as an unknown flag is.
TEST(CliBenchTrain, BadValuesAreBadUsageNamingTheFlag) {
  const std::pair<const char*, const char*> cases[] = {
      {"--steps 0", "error: --steps must be"},
      {"--epoch-images -1", "error: --epoch-images must be"},
      {"--recipe-epochs -2", "error: --recipe-epochs must be"},
      {"--batch 0", "error: --batch: batch sizes must be"},
      {"--precision fp8", "error: --precision must be"}};
  for (const auto& [flags, flag] : cases) {
    const auto result = bench_train_on_the_cpu(flags);
    EXPECT_EQ(result.status, 2) << flags << "\n" << result.output;
    EXPECT_NE(result.output.find(flag), std::string::npos) << flags << "\n" << result.output;
    EXPECT_EQ(result.output.find("\"batch\""), std::string::npos) << "measured: " << flags;
  }
  testing::TempDir dir;
  const auto result = testing::pneumo_command("bench train --device tpu", dir.file("cache"));
  EXPECT_EQ(result.status, 2) << result.output;
  EXPECT_NE(result.output.find("--device"), std::string::npos) << result.output;
}

}  // namespace
}  // namespace pneumo
