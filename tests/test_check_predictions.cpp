// scripts/check_predictions.py, which the GPU check's report uses to hold the speed predictions
// written before a run against its bench kernels and bench train rows. Skipped without python3.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

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

TEST(CheckPredictions, EachVerdictFromTheRowsItNames) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  const std::string device = "NVIDIA H100 80GB HBM3 (sm_90)";
  std::ofstream(dir.file("bench_kernels.jsonl"))
      << R"J({"op":"block_tail_forward","layer":"tail2","batch":256,"variant":"fused","status":"ok","median_ms":0.5,"percent_dram_peak":40,"device":")J"
      << device << "\"}\n"
      << R"J({"op":"block_tail_forward","layer":"tail2","batch":256,"variant":"chain","status":"ok","median_ms":0.8,"percent_dram_peak":25,"device":")J"
      << device << "\"}\n"
      << R"J({"op":"block_tail_forward","layer":"tail3","batch":256,"variant":"fused","status":"invalid","median_ms":0.1,"device":")J"
      << device << "\"}\n"
      << "a line of the log\n";
  std::ofstream(dir.file("throughput.jsonl"))
      << R"J({"impl":"pneumo","backend":"cuda (NVIDIA H100 80GB HBM3, sm_90)","batch":256,"precision":"fp32","ops_ms":[)J"
      << R"J({"op":"relu_backward (256, 128)","ms":0.01},{"op":"conv2d_backward (256, 32, 75, 75)","ms":1.25},)J"
      << R"J({"op":"conv2d_backward (256, 64, 38, 38)","ms":0.5}]})J"
      << "\n"
      // the recipe's line of the same run is not a steady row
      << R"J({"impl":"pneumo","measure":"recipe","batch":256,"precision":"fp32","total_seconds":9})J"
      << "\n";
  std::ofstream(dir.file("p.json")) << R"J({"written": "today", "rule": "words", "predictions": [
    {"id": "ratio", "claim": "fused faster than the chain",
     "measure": {"kernels": {"op": "block_tail_forward", "layer": "tail2", "batch": 256, "variant": "fused"},
                 "field": "median_ms",
                 "relative_to": {"op": "block_tail_forward", "layer": "tail2", "batch": 256, "variant": "chain"}},
     "before": 1.3, "at_most": 1.0},
    {"id": "bandwidth", "claim": "at half the bandwidth",
     "measure": {"kernels": {"layer": "tail2", "batch": 256, "variant": "fused"}, "field": "percent_dram_peak"},
     "at_least": 50},
    {"id": "absent", "claim": "a row this run lacks",
     "measure": {"kernels": {"layer": "tail9"}}, "at_most": 1},
    {"id": "invalid-row", "claim": "a row whose check failed",
     "measure": {"kernels": {"layer": "tail3"}}, "at_most": 1},
    {"id": "absolute", "claim": "a time predicted for another card",
     "measure": {"train": {"batch": 256, "precision": "fp32"}, "ops_matching": "^conv2d_backward \\(256, (32|64), ", "aggregate": "sum"},
     "at_most": 2.0, "device": "H200"},
    {"id": "sum", "claim": "two rows' sum, any card",
     "measure": {"train": {"batch": 256, "precision": "fp32"}, "ops_matching": "^conv2d_backward \\(256, (32|64), ", "aggregate": "sum"},
     "at_most": 1.5},
    {"id": "count", "claim": "no ReLU backward over a 4-D tensor",
     "measure": {"train": {"batch": 256}, "ops_matching": "^relu_backward \\(\\d+, \\d+, \\d+, \\d+\\)", "aggregate": "count"},
     "equals": 0}
  ]})J";
  const testing::CommandResult run = check(dir, "p.json");
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_TRUE(has(run.output, "| ratio | fused faster than the chain | 1.3 | <= 1 | 0.625 | **held** |"))
      << run.output;
  EXPECT_TRUE(has(run.output, "| bandwidth | at half the bandwidth |  | >= 50 | 40 | **missed** |"))
      << run.output;
  EXPECT_TRUE(has(run.output, "0 bench kernels rows match")) << run.output;
  EXPECT_TRUE(has(run.output, "the row's status is 'invalid'")) << run.output;
  EXPECT_TRUE(has(run.output, "| 1.75 (cuda (NVIDIA H100 80GB HBM3, sm_90)) | **other device** |"))
      << run.output;
  EXPECT_TRUE(has(run.output, "| sum | two rows' sum, any card |  | <= 1.5 | 1.75 | **missed** |"))
      << run.output;
  EXPECT_TRUE(has(run.output, "| count | no ReLU backward over a 4-D tensor |  | = 0 | 0 | **held** |"))
      << run.output;
  EXPECT_TRUE(has(run.output, "2 held, 2 missed, 2 not measured, 1 other device of 7 predictions."))
      << run.output;

  // A file that breaks the format is refused before anything is read.
  std::ofstream(dir.file("bad.json")) << R"J({"written": "today", "rule": "words", "predictions": [
    {"id": "two", "claim": "c", "measure": {"kernels": {}}, "at_most": 1, "at_least": 0}]})J";
  const testing::CommandResult bad = check(dir, "bad.json");
  EXPECT_EQ(bad.status, 2) << bad.output;
  EXPECT_TRUE(has(bad.output, "needs exactly one of at_most, at_least, equals")) << bad.output;
}

TEST(CheckPredictions, TheCommittedPredictionsAreValid) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;  // no rows: every prediction "not measured", none refused
  const testing::CommandResult run = testing::run_command(
      "python3 '" PNEUMO_SOURCE_DIR "/scripts/check_predictions.py' '" PNEUMO_SOURCE_DIR
      "/profiling/predictions-2026-12-05.json' '" + dir.path() + "' 2>&1");
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_TRUE(has(run.output, "0 held, 0 missed, 43 not measured, 0 other device of 43 predictions."))
      << run.output;
}

}  // namespace
}  // namespace pneumo
