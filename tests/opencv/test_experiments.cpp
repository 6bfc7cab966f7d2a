// scripts/experiments.py end to end on the bundled sample (32 px, one epoch, two seeds, two
// configurations): every run trained and scored on its validation and stress variants, the table
// written, the configuration the plan's rule names picked (checked against the CSV here), a rerun
// training nothing, and the test split read once (a second read refused). Skipped without python3.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "cli_test_util.hpp"
#include "temp_dir.hpp"

namespace pneumo {
namespace {

namespace fs = std::filesystem;

TEST(Experiments, SweepPicksByThePlansRuleAndReadsTestOnce) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  const std::string plan = dir.file("plan.json"), out = dir.file("sweep");
  std::ofstream(plan) << R"({"size": 32, "epochs": 1, "seeds": [1, 2], "baseline": "plain",
    "rule": "highest mean stress_mean_accuracy", "pick_metric": "stress_mean_accuracy",
    "configs": {"plain": {"augment": false, "threads": 2, "device": "cpu"},
                "jitter": {"aspect": 0.3, "brightness": 0.1, "threads": 2, "device": "cpu"}}})";
  const std::string script = "PNEUMO_CACHE_DIR='" + dir.file("cache") + "' python3 " +
                             PNEUMO_SOURCE_DIR "/scripts/experiments.py " + plan +
                             " --pneumo " PNEUMO_BINARY " --data " PNEUMO_SOURCE_DIR
                             "/data/sample --out " + out;
  auto sweep = testing::run_command(script);
  ASSERT_EQ(sweep.status, 0) << sweep.output;
  for (const char* config : {"plain", "jitter"})
    for (const char* seed : {"seed-1", "seed-2"})
      EXPECT_TRUE(fs::exists(fs::path(out) / config / seed / "val.json")) << config << " " << seed;

  // The rule, applied here from the CSV: the higher mean stress_mean_accuracy wins.
  std::ifstream csv(out + "/results.csv");
  std::string line;
  std::getline(csv, line);
  std::vector<std::string> header;
  {
    std::istringstream cells(line);
    for (std::string cell; std::getline(cells, cell, ',');) header.push_back(cell);
  }
  const size_t column =
      std::find(header.begin(), header.end(), "stress_mean_accuracy") - header.begin();
  const size_t auc = std::find(header.begin(), header.end(), "val_auc") - header.begin();
  ASSERT_LT(column, header.size()) << line;
  ASSERT_LT(auc, header.size()) << line;
  std::map<std::string, std::pair<double, double>> sum;  // the rule, then its tie-break
  int rows = 0;
  while (std::getline(csv, line)) {
    std::vector<std::string> cells;
    std::istringstream in(line);
    for (std::string cell; std::getline(in, cell, ',');) cells.push_back(cell);
    ASSERT_GT(cells.size(), column) << line;
    sum[cells[0]].first += std::stod(cells[column]);
    sum[cells[0]].second += std::stod(cells[auc]);
    ++rows;
  }
  EXPECT_EQ(rows, 4);
  const std::string winner = sum["jitter"] > sum["plain"] ? "jitter" : "plain";
  const std::string table = testing::read_text(out + "/results.md");
  EXPECT_NE(table.find("| " + winner + " (picked) |"), std::string::npos) << table;
  EXPECT_NE(table.find("highest mean stress_mean_accuracy"), std::string::npos) << table;

  // A rerun trains nothing (every run is scored already).
  auto again = testing::run_command(script);
  ASSERT_EQ(again.status, 0) << again.output;
  EXPECT_EQ(again.output.find(PNEUMO_BINARY " train"), std::string::npos) << again.output;
  EXPECT_NE(sweep.output.find(PNEUMO_BINARY " train"), std::string::npos) << sweep.output;

  auto test = testing::run_command(script + " --test");
  ASSERT_EQ(test.status, 0) << test.output;
  const std::string read = testing::read_text(out + "/test.md");
  EXPECT_NE(read.find("ensemble of 2"), std::string::npos) << read;
  EXPECT_NE(read.find("| " + winner + " | mean ± sd |"), std::string::npos) << read;
  auto twice = testing::run_command(script + " --test");
  EXPECT_NE(twice.status, 0);
  EXPECT_NE(twice.output.find("read once"), std::string::npos) << twice.output;
}

}  // namespace
}  // namespace pneumo
