// scripts/threshold_rule.py on two sample models whose validation (40% of train: 24 images a
// class) is large enough for a Youden cut: on a balanced validation, reweighting the held-out
// halves to a pneumonia share of 0.5 is their plain accuracy, so the share of halvings where
// Youden was worse must be the same both ways (floating point counted ties as worse: 0.04 against
// 0.0275 for seed 2). Its halves hold 12 images a class, fewer than pneumo's 20 for a Youden
// cut, so the test lowers --min-class-images to 1 (at 20 every half keeps 0.5 and ties never
// arise). And --halvings below 1 is a usage error (it divided by zero). Skipped without python3.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "cli_test_util.hpp"
#include "temp_dir.hpp"

namespace pneumo {
namespace {

// A results.csv row's cells (Python's csv module ends its rows with \r\n).
std::vector<std::string> cells_of(std::string line) {
  if (!line.empty() && line.back() == '\r') line.pop_back();
  std::vector<std::string> cells;
  std::istringstream in(line);
  for (std::string cell; std::getline(in, cell, ',');) cells.push_back(cell);
  return cells;
}

TEST(ThresholdRule, ASharesOwnMixGivesThePlainHalvingsWorseShare) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  const std::string cache = dir.file("cache");
  for (const char* seed : {"1", "2"}) {
    auto trained = testing::pneumo_command(
        "train --data " PNEUMO_SOURCE_DIR "/data/sample --out " +
            dir.file(std::string("y") + seed) +
            " --size 32 --epochs 2 --device cpu --threads 2 --val-split 0.4 --seed " + seed,
        cache);
    ASSERT_EQ(trained.status, 0) << trained.output;
    ASSERT_NE(trained.output.find("Youden's J on 48 validation images"), std::string::npos)
        << trained.output;
  }
  const std::string script = "PNEUMO_CACHE_DIR='" + cache + "' python3 " PNEUMO_SOURCE_DIR
                             "/scripts/threshold_rule.py --pneumo " PNEUMO_BINARY
                             " --data " PNEUMO_SOURCE_DIR "/data/sample --out " + dir.file("out");
  auto judged = testing::run_command(script + " --shares 0.5 --min-class-images 1 " +
                                     dir.file("y1") + " " + dir.file("y2"));
  ASSERT_EQ(judged.status, 0) << judged.output;
  std::ifstream csv(dir.file("out") + "/results.csv");
  std::string line;
  std::getline(csv, line);
  const auto header = cells_of(line);
  std::map<std::string, size_t> column;
  for (size_t i = 0; i < header.size(); ++i) column[header[i]] = i;
  ASSERT_TRUE(column.count("halves_youden_worse") && column.count("halves_youden_worse_share_0.5"))
      << line;
  int runs = 0;
  while (std::getline(csv, line)) {
    const auto cells = cells_of(line);
    ASSERT_GT(cells.size(), column["halves_youden_worse_share_0.5"]) << line;
    EXPECT_EQ(std::stod(cells[column["halves_youden_worse"]]),
              std::stod(cells[column["halves_youden_worse_share_0.5"]]))
        << line;
    ++runs;
  }
  EXPECT_EQ(runs, 2);

  for (const char* halvings : {"0", "-1"}) {
    auto refused = testing::run_command(script + " --halvings " + halvings + " " + dir.file("y1"));
    EXPECT_EQ(refused.status, 2) << refused.output;
    EXPECT_NE(refused.output.find("--halvings: must be at least 1"), std::string::npos)
        << refused.output;
    EXPECT_EQ(refused.output.find("Traceback"), std::string::npos) << refused.output;
  }
}

// The script's Youden cut keeps 0.5 (logit 0) wherever pneumo train keeps it: no cut beating
// chance, no probability separating the scores around the cut, a class under the minimum;
// elsewhere the midpoint.
TEST(ThresholdRule, TheScriptsCutKeepsHalfWherePneumoDoes) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  const auto cuts = testing::run_command(
      "cd " PNEUMO_SOURCE_DIR "/scripts && python3 -B -c 'from threshold_rule import "
      "youden_threshold as y; print(y([3, 4], [1, 0], 1), y([3, 4, 5, 6], [1, 0, 1, 0], 1), "
      "y([39, 40], [0, 1], 1), y([35, 35.1], [0, 1], 1), y([1, 2], [0, 1]), "
      "y([1, 2], [0, 1], 1), y([1, 2, 3, 4], [0, 0, 1, 1], 1), y([34, 40], [0, 1], 1))'");
  ASSERT_EQ(cuts.status, 0) << cuts.output;
  // Chance (twice), saturated (twice: the sigmoid of the cut rounds to 1; no double between the
  // two scores' probabilities), two images under the default minimum; then three real cuts, the
  // last with a probability one double below 1 (pneumo's nudged threshold separates 34 from 40).
  EXPECT_EQ(cuts.output, "0.0 0.0 0.0 0.0 0.0 1.5 2.5 37.0\n");
}

}  // namespace
}  // namespace pneumo
