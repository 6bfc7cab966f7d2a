// `pneumo bench train` on the CPU backend (what CI can run): one JSON line per batch size labelled
// CPU, with the per-phase split and the epoch measurement, and the Markdown table. Only the
// structure is checked; the numbers are measurements, not assertions.
#include <gtest/gtest.h>

#include <sstream>
#include <string>

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
    ++rows;
  }
  EXPECT_EQ(rows, 2) << result.output;
  EXPECT_NE(result.output.find("### pneumo bench train on the CPU backend"), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("| 3 | "), std::string::npos) << "a table row per batch size";
}

}  // namespace
}  // namespace pneumo
