// `pneumo bench train` on the CPU backend (what CI can run): one JSON line per batch size labelled
// CPU, with the per-phase split and the epoch measurement, and the Markdown table. Only the
// structure is checked; the numbers are measurements, not assertions.
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_test_util.hpp"
#include "temp_dir.hpp"

namespace pneumo {
namespace {

TEST(CliBenchTrain, RunsOnTheCpuAndReportsPhasesAndATable) {
  testing::TempDir dir;
  auto result = testing::pneumo_command(
      "bench train --device cpu --threads 2 --batch 2 --batch 3 --steps 2 --warmup 1",
      dir.file("cache"));
  ASSERT_EQ(result.status, 0) << result.output;
  std::istringstream lines(result.output);
  std::string line;
  int rows = 0;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] != '{') continue;
    const auto row = nlohmann::json::parse(line);
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
    ++rows;
  }
  EXPECT_EQ(rows, 2) << result.output;
  EXPECT_NE(result.output.find("### pneumo bench train on the CPU backend"), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("| 3 | "), std::string::npos) << "a table row per batch size";
}

// --layers: every layer of the model, in order, with its forward and backward time.
TEST(CliBenchTrain, LayersGivesEveryLayersForwardAndBackward) {
  testing::TempDir dir;
  auto result = testing::pneumo_command(
      "bench train --device cpu --threads 2 --batch 2 --steps 2 --warmup 1 --layers",
      dir.file("cache"));
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
}

}  // namespace
}  // namespace pneumo
