// scripts/stress_recheck.py, which re-decides a sweep by the six stress variants a per-image
// standardisation does not cancel (and experiments.py's stress_fair_ columns it reads): a
// configuration that wins only on brightness and contrast loses the fair pick, a difference
// under 0.001 goes to the higher validation AUC, a run without all six variants has no fair pick.
// Skipped without python3.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cli_test_util.hpp"
#include "temp_dir.hpp"

namespace pneumo {
namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kFair = {"width-0.8", "width-1.25", "gamma-0.7",
                                        "gamma-1.5", "blur",       "sharpen"};
const std::vector<std::string> kCancelled = {"darker", "brighter", "contrast-0.7", "contrast-1.3"};

std::string variant(const std::string& name, double accuracy) {
  return "{\"name\": \"" + name + "\", \"metrics\": {\"default_threshold\": {\"accuracy\": " +
         std::to_string(accuracy) + "}, \"roc_auc\": 0.9}}";
}

// CONFIG/seed-1/val.json as `pneumo evaluate --split val-carved --stress --json` writes it (the
// fields the script reads): the six fair variants at FAIR, the four others at CANCELLED.
void write_run(const fs::path& sweep, const std::string& config, double unstressed, double fair,
               double cancelled, double auc, bool all_fair = true) {
  std::string variants;
  for (size_t i = 0; i < kFair.size() - (all_fair ? 0 : 1); ++i)
    variants += (variants.empty() ? "" : ", ") + variant(kFair[i], fair);
  for (const std::string& name : kCancelled) variants += ", " + variant(name, cancelled);
  const fs::path dir = sweep / config / "seed-1";
  fs::create_directories(dir);
  std::ofstream(dir / "val.json") << "{\"default_threshold\": {\"accuracy\": " +
                                         std::to_string(unstressed) + "}, \"roc_auc\": " +
                                         std::to_string(auc) + ", \"stress\": {\"variants\": [" +
                                         variants + "]}}";
}

testing::CommandResult recheck(const std::string& sweep) {
  return testing::run_command("python3 '" PNEUMO_SOURCE_DIR "/scripts/stress_recheck.py' '" +
                              sweep + "' 2>&1");
}

TEST(StressRecheck, AWinOnlyWhereNormalisationCancelsLosesTheFairPick) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  // a: 0.80 on the six, 0.99 where its normalisation cancels: ten-variant mean 0.876.
  // b: 0.85 on the six, 0.70 on the four: ten-variant mean 0.790.
  write_run(dir.file("s"), "a", 0.90, 0.80, 0.99, 0.99);
  write_run(dir.file("s"), "b", 0.90, 0.85, 0.70, 0.99);
  testing::CommandResult run = recheck(dir.file("s"));
  ASSERT_EQ(run.status, 0) << run.output;
  // Columns: ten-variant mean, six fair, their worst, mean drop from 0.90, val acc, val AUC.
  EXPECT_NE(run.output.find("| a | 1 | 0.876 | 0.800 | 0.800 | 0.024 | 0.900 | 0.990 |"),
            std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("| b | 1 | 0.790 | 0.850 | 0.850 | 0.110 | 0.900 | 0.990 |"),
            std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("By the ten-variant mean: `a` (no plan.json here"), std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("By the six fair variants: `b` (a different pick)."), std::string::npos)
      << run.output;
  // With the sweep's plan: its rule's pick is named as such; a configuration short of the plan's
  // seeds (or one the plan names as its candidate) leaves no rule's pick.
  std::ofstream(dir.file("s") + "/plan.json") << R"({"seeds": [1], "configs": {"a": {}, "b": {}}})";
  run = recheck(dir.file("s"));
  EXPECT_NE(run.output.find("Picked by the ten-variant mean (the sweep's rule): `a`. By the six "
                            "fair variants: `b`"),
            std::string::npos)
      << run.output;
  std::ofstream(dir.file("s") + "/plan.json") << R"({"seeds": [1, 2], "configs": {"a": {}, "b": {}}})";
  run = recheck(dir.file("s"));
  EXPECT_NE(run.output.find("No pick: the sweep is not complete (a (1 of 2 seeds), b (1 of 2 "
                            "seeds))."),
            std::string::npos)
      << run.output;
  std::ofstream(dir.file("s") + "/plan.json")
      << R"({"seeds": [1], "pick": "b", "configs": {"a": {}, "b": {}}})";
  run = recheck(dir.file("s"));
  EXPECT_NE(run.output.find("The plan names `b` (its `pick`): it picks nothing by a rule"),
            std::string::npos)
      << run.output;
}

TEST(StressRecheck, ACloseFairMeanGoesToTheHigherAucAndMissingVariantsPickNothing) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  // Within 0.001 on the six: c's higher validation AUC decides, though b's mean is higher.
  write_run(dir.file("close"), "b", 0.90, 0.8500, 0.90, 0.990);
  write_run(dir.file("close"), "c", 0.90, 0.8495, 0.90, 0.999);
  testing::CommandResult run = recheck(dir.file("close"));
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("By the six fair variants: `c`"), std::string::npos) << run.output;
  // Further apart than 0.001: the higher mean wins whatever the AUC.
  write_run(dir.file("apart"), "b", 0.90, 0.852, 0.90, 0.990);
  write_run(dir.file("apart"), "c", 0.90, 0.850, 0.90, 0.999);
  run = recheck(dir.file("apart"));
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("By the six fair variants: `b`"), std::string::npos) << run.output;
  // One fair variant missing from a run: no mean over five stands in for the six.
  write_run(dir.file("short"), "b", 0.90, 0.85, 0.90, 0.99);
  write_run(dir.file("short"), "d", 0.90, 0.95, 0.90, 0.99, /*all_fair=*/false);
  run = recheck(dir.file("short"));
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("No fair pick: runs of d lack one of width-0.8"), std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("| d | 1 | 0.928 | - | - |"), std::string::npos) << run.output;
}

TEST(StressRecheck, AFolderWithoutRunsIsRefused) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  fs::create_directories(dir.file("empty"));
  const testing::CommandResult run = recheck(dir.file("empty"));
  EXPECT_NE(run.status, 0);
  EXPECT_NE(run.output.find("no CONFIG/seed-N/val.json here"), std::string::npos) << run.output;
}

}  // namespace
}  // namespace pneumo
