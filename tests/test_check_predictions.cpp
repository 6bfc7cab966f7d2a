// scripts/check_predictions.py, which the GPU check's report uses to hold the speed predictions
// written before a run against its bench kernels and bench train rows. Skipped without python3.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "cli_test_util.hpp"
#include "temp_dir.hpp"

namespace pneumo {
namespace {

testing::CommandResult check(const testing::TempDir& dir, const std::string& predictions) {
  return testing::run_command("python3 '" PNEUMO_SOURCE_DIR "/scripts/check_predictions.py' '" +
                              dir.file(predictions) + "' '" + dir.path() + "' 2>&1");
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// One bench kernels row of tail `layer` at batch 256.
nlohmann::json kernel_row(const std::string& layer, const std::string& variant,
                          const std::string& status, double ms, double percent_dram) {
  return {{"op", "block_tail_forward"}, {"layer", layer}, {"batch", 256},
          {"variant", variant},         {"status", status}, {"median_ms", ms},
          {"percent_dram_peak", percent_dram}, {"device", "NVIDIA H100 80GB HBM3 (sm_90)"}};
}

nlohmann::json op_row(const std::string& op, double ms) { return {{"op", op}, {"ms", ms}}; }

TEST(CheckPredictions, EachVerdictFromTheRowsItNames) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  std::ofstream(dir.file("bench_kernels.jsonl"))
      << kernel_row("tail2", "fused", "ok", 0.5, 40).dump() << "\n"
      << kernel_row("tail2", "chain", "ok", 0.8, 25).dump() << "\n"
      << kernel_row("tail3", "fused", "invalid", 0.1, 90).dump() << "\n"
      << kernel_row("tail4", "chain", "ok", 0.0, 0).dump() << "\n"
      << "a line of the log\n";
  const nlohmann::json steady = {
      {"impl", "pneumo"}, {"backend", "cuda (NVIDIA H100 80GB HBM3, sm_90)"}, {"batch", 256},
      {"precision", "fp32"},
      {"ops_ms", {op_row("relu_backward (256, 128)", 0.01),
                  op_row("conv2d_backward (256, 32, 75, 75)", 1.25),
                  op_row("conv2d_backward (256, 64, 38, 38)", 0.5)}}};
  // The recipe's line of the same run is not a steady row.
  const nlohmann::json recipe = {{"impl", "pneumo"}, {"measure", "recipe"}, {"batch", 256},
                                 {"precision", "fp32"}, {"total_seconds", 9}};
  std::ofstream(dir.file("throughput.jsonl")) << steady.dump() << "\n" << recipe.dump() << "\n";
  std::filesystem::create_directories(dir.file("logs"));
  for (const auto& [log, overhead] : {std::pair<const char*, double>{"a", 0.4}, {"b", 0.1}}) {
    const nlohmann::json line = {{"impl", "pneumo"}, {"measure", "recipe"},
                                 {"first_epoch_overhead", overhead}, {"backend", "cuda"}};
    std::ofstream(dir.file("logs/bench_recipe_" + std::string(log) + ".log"))
        << "a table\n" << line.dump() << "\n";
  }
  // Every entry on an NVIDIA device unless it names its own: the recipe lines' "cuda" is not one.
  std::ofstream(dir.file("p.json")) << R"J({
    "written": "today", "rule": "words", "device": "NVIDIA", "predictions": [
    {"id": "ratio", "claim": "fused faster than the chain",
     "measure": {"kernels": {"layer": "tail2", "batch": 256, "variant": "fused"},
                 "field": "median_ms",
                 "relative_to": {"kernels": {"layer": "tail2", "variant": "chain"}}},
     "before": 1.3, "at_most": 1.0},
    {"id": "bandwidth", "claim": "at half the bandwidth",
     "measure": {"kernels": {"layer": "tail2", "variant": "fused"}, "field": "percent_dram_peak"},
     "at_least": 50},
    {"id": "absent", "claim": "a row this run lacks",
     "measure": {"kernels": {"layer": "tail9"}}, "at_most": 1},
    {"id": "zero", "claim": "a ratio to nothing",
     "measure": {"kernels": {"layer": "tail2", "variant": "fused"},
                 "relative_to": {"kernels": {"layer": "tail4"}}},
     "at_most": 1},
    {"id": "invalid-row", "claim": "a row whose check failed",
     "measure": {"kernels": {"layer": "tail3"}}, "at_most": 1},
    {"id": "absolute", "claim": "a time predicted for another card",
     "measure": {"train": {"batch": 256, "precision": "fp32"},
                 "ops_matching": "^conv2d_backward \\(256, (32|64), ", "aggregate": "sum"},
     "at_most": 2.0, "device": "H200"},
    {"id": "sum", "claim": "two rows' sum",
     "measure": {"train": {"batch": 256, "precision": "fp32"},
                 "ops_matching": "^conv2d_backward \\(256, (32|64), ", "aggregate": "sum"},
     "at_most": 1.5},
    {"id": "count", "claim": "no 4-D ReLU backward",
     "measure": {"train": {"batch": 256},
                 "ops_matching": "^relu_backward \\(\\d+, \\d+, \\d+, \\d+\\)",
                 "aggregate": "count"},
     "equals": 0},
    {"id": "first-epoch", "claim": "one log's recipe over another's",
     "measure": {"recipe": {}, "log": "bench_recipe_b.log", "field": "first_epoch_overhead",
                 "relative_to": {"recipe": {}, "log": "bench_recipe_a.log"}},
     "at_most": 0.5}
  ]})J";
  const testing::CommandResult run = check(dir, "p.json");
  ASSERT_EQ(run.status, 0) << run.output;
  for (const char* row :
       {"| ratio | fused faster than the chain | 1.3 | <= 1 | 0.625 | **held** |",
        "| bandwidth | at half the bandwidth |  | >= 50 | 40 | **missed** |",
        "0 bench kernels rows match",
        "the row's status is 'invalid'",
        "| 1.75 (cuda (NVIDIA H100 80GB HBM3, sm_90)) | **other device** |",
        "| sum | two rows' sum |  | <= 1.5 | 1.75 | **missed** |",
        "| count | no 4-D ReLU backward |  | = 0 | 0 | **held** |",
        "| <= 0.5 | 0.25 (cuda) | **other device** |",
        "relative_to's value is 0: no ratio to it",
        "2 held, 2 missed, 3 not measured, 2 other device of 9."})
    EXPECT_TRUE(has(run.output, row)) << row << "\n" << run.output;

  // A file that breaks the format is refused before anything is read.
  std::ofstream(dir.file("bad.json")) << R"J({"written": "today", "rule": "words", "predictions": [
    {"id": "two", "claim": "c", "measure": {"kernels": {}}, "at_most": 1, "at_least": 0},
    {"id": "list", "claim": "c", "measure": {"kernels": ["tail2"]}, "at_most": 1}]})J";
  const testing::CommandResult bad = check(dir, "bad.json");
  EXPECT_EQ(bad.status, 2) << bad.output;
  EXPECT_TRUE(has(bad.output, "needs exactly one of at_most, at_least, equals")) << bad.output;
  EXPECT_TRUE(has(bad.output, "prediction list: a measure names one of kernels, train, recipe"))
      << bad.output;
}

TEST(CheckPredictions, TheCommittedFilesAreValid) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;  // no rows: every entry "not measured", none refused
  for (const auto& [file, count] : {std::pair<const char*, int>{"predictions-2026-12-05.json", 44},
                                    {"targets-issue-15.json", 4}}) {
    const testing::CommandResult run = testing::run_command(
        "python3 '" PNEUMO_SOURCE_DIR "/scripts/check_predictions.py' '" PNEUMO_SOURCE_DIR
        "/profiling/" + std::string(file) + "' '" + dir.path() + "' 2>&1");
    ASSERT_EQ(run.status, 0) << run.output;
    const std::string all = std::to_string(count);
    EXPECT_TRUE(has(run.output, "0 held, 0 missed, " + all + " not measured, 0 other device of " +
                                    all + "."))
        << run.output;
  }
}

}  // namespace
}  // namespace pneumo
