// scripts/summarize_runs.py, which tabulates several `pneumo train` runs (the GPU check's seeds):
// per-run values read from the right fields, mean and sample standard deviation over the runs
// that have each value, and a note for a run without test metrics. Skipped without python3.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "cli_test_util.hpp"
#include "temp_dir.hpp"

namespace pneumo {
namespace {

namespace fs = std::filesystem;

void write(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

// A run folder as `pneumo train` + `pneumo evaluate --json` leave it (the fields the script reads).
void write_run(const fs::path& dir, int seed, double val_acc, double test_acc, bool with_test,
               const std::string& rule = "Youden's J on 783 validation images") {
  write(dir / "config.json", "{\"seed\": " + std::to_string(seed) + "}");
  write(dir / "metrics_val.json", "{\"default_threshold\": {\"accuracy\": " +
                                      std::to_string(val_acc) + "}, \"roc_auc\": 0.99}");
  if (with_test)
    write(dir / "test_metrics.json",
          "{\"default_threshold\": {\"accuracy\": " + std::to_string(test_acc) +
              ", \"sensitivity\": 0.95, \"specificity\": 0.7},"
              " \"tuned_threshold\": {\"accuracy\": 0.9, \"threshold\": 0.0177}, \"roc_auc\": 0.96,"
              " \"threshold_rule\": " + (rule == "null" ? rule : "\"" + rule + "\"") + "}");
}

TEST(SummarizeRuns, MeanAndSampleSdOverTheRunsThatHaveEachValue) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  write_run(dir.file("a"), 1, 0.96, 0.80, true);
  write_run(dir.file("b"), 2, 0.98, 0.90, true);
  write_run(dir.file("c"), 3, 0.97, 0.0, false);
  write_run(dir.file("d"), 4, 0.97, 0.85, true, "given on the command line");
  write_run(dir.file("e"), 5, 0.97, 0.85, true, "null");  // no tuned row: the rule is null
  const testing::CommandResult run = testing::run_command(
      "python3 '" PNEUMO_SOURCE_DIR "/scripts/summarize_runs.py' '" + dir.file("a") + "' '" +
      dir.file("b") + "' '" + dir.file("c") + "' '" + dir.file("d") + "' '" + dir.file("e") +
      "' 2>&1");
  ASSERT_EQ(run.status, 0) << run.output;
  // Per run: seed, val accuracy, val AUC, test accuracy, sensitivity, specificity, ...
  EXPECT_NE(run.output.find("| a | 1 | 0.960 | 0.990 | 0.800 | 0.950 | 0.700 | 0.900 | 0.0177 | "
                            "0.960 |"),
            std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("| c | 3 | 0.970 | 0.990 |  |"), std::string::npos) << run.output;
  // A threshold typed on evaluate's command line is not a Youden cut: its cells stay empty.
  EXPECT_NE(run.output.find("| d | 4 | 0.970 | 0.990 | 0.850 | 0.950 | 0.700 |  |  | 0.960 |"),
            std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find(dir.file("d") + ": test scored at threshold rule 'given on the "
                            "command line', not a Youden cut"),
            std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find(dir.file("e") + ": its test metrics record no threshold rule"),
            std::string::npos)
      << run.output;
  // val accuracy over 5 runs: mean 0.970, sd 0.0071; test accuracy over 4: 0.850, sd 0.041;
  // the Youden accuracy and threshold over the 2 runs with a Youden cut.
  EXPECT_NE(run.output.find("| mean ± sd | | 0.970 ± 0.007 | 0.990 ± 0.000 | 0.850 ± 0.041 |"),
            std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("| 0.900 ± 0.000 | 0.0177 ± 0 |"), std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("5 runs"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find(dir.file("c") + ": no test metrics"), std::string::npos) << run.output;
}

// Runs of other settings, or one seed twice, are not one recipe's spread over seeds: said under
// the table (their --out, --data and --threads may differ).
TEST(SummarizeRuns, RunsOfAnotherRecipeOrARepeatedSeedAreNamed) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  write_run(dir.file("a"), 1, 0.96, 0.80, true);
  write(dir.file("a/config.json"), R"({"seed": 1, "lr": 0.001, "out": "a", "threads": 1})");
  write_run(dir.file("b"), 2, 0.98, 0.90, true);
  // b records --val-seed's default, which a's older config lacks: the same recipe.
  write(dir.file("b/config.json"),
        R"({"seed": 2, "lr": 0.001, "out": "b", "threads": 2, "val-seed": -1})");
  write_run(dir.file("c"), 1, 0.97, 0.85, true);
  write(dir.file("c/config.json"),
        R"({"seed": 1, "lr": 0.01, "precision": "bf16", "val-seed": 3})");
  const testing::CommandResult run = testing::run_command(
      "python3 '" PNEUMO_SOURCE_DIR "/scripts/summarize_runs.py' '" + dir.file("a") + "' '" +
      dir.file("b") + "' '" + dir.file("c") + "' 2>&1");
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_EQ(run.output.find(dir.file("b") + ": not the recipe"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find(dir.file("c") + ": not the recipe of " + dir.file("a") +
                            ": its config.json differs in lr, precision, val-seed"),
            std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("seed 1 is given by 2 runs"), std::string::npos) << run.output;
  // A damaged config.json's seed, a list twice: named, not a TypeError traceback.
  write(dir.file("a/config.json"), R"({"seed": [1]})");
  write(dir.file("c/config.json"), R"({"seed": [1]})");
  const testing::CommandResult listed = testing::run_command(
      "python3 '" PNEUMO_SOURCE_DIR "/scripts/summarize_runs.py' '" + dir.file("a") + "' '" +
      dir.file("c") + "' 2>&1");
  EXPECT_EQ(listed.status, 0) << listed.output;
  EXPECT_NE(listed.output.find("seed [1] is given by 2 runs"), std::string::npos) << listed.output;
}

TEST(SummarizeRuns, JsonThatIsNotAnObjectIsAMissingFile) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  write_run(dir.file("list"), 1, 0.96, 0.80, false);
  write(dir.file("list/test_metrics.json"), "[1, 2]");
  write_run(dir.file("text"), 2, 0.98, 0.90, true);
  write(dir.file("text/config.json"), "\"x\"");
  write(dir.file("text/metrics_val.json"), "3");
  const testing::CommandResult run = testing::run_command(
      "python3 '" PNEUMO_SOURCE_DIR "/scripts/summarize_runs.py' '" + dir.file("list") + "' '" +
      dir.file("text") + "' 2>&1");
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_EQ(run.output.find("Traceback"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("| list | 1 | 0.960 | 0.990 |  |"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find(dir.file("list") + ": no test metrics"), std::string::npos)
      << run.output;
  // No seed without a config object; its test metrics still count.
  EXPECT_NE(run.output.find("| text | ? |  |  | 0.900 |"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find(dir.file("text") + ": no val metrics"), std::string::npos)
      << run.output;
}

// A sweep's run (scripts/experiments.py --test) keeps its test metrics as test.json: read as
// test_metrics.json is (it was "no test metrics"). A folder without any run file is a typo (a
// sweep's configuration folder for its seed-S folders), not a blank row; true is not a number.
TEST(SummarizeRuns, ASweepsTestJsonIsReadAFolderWithoutRunFilesRefused) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  write_run(dir.file("sweep/a/seed-1"), 1, 0.96, 0.80, true);
  fs::rename(dir.file("sweep/a/seed-1/test_metrics.json"), dir.file("sweep/a/seed-1/test.json"));
  write_run(dir.file("sweep/a/seed-2"), 2, 0.98, 0.90, true);
  write(dir.file("sweep/a/config.json"), "{\"augment\": false}");  // experiments.py's, per config
  write(dir.file("sweep/a/seed-2/metrics_val.json"),
        "{\"default_threshold\": {\"accuracy\": true}, \"roc_auc\": 0.99}");
  const std::string script = "python3 '" PNEUMO_SOURCE_DIR "/scripts/summarize_runs.py' ";
  const testing::CommandResult run = testing::run_command(
      script + "'" + dir.file("sweep/a/seed-1") + "' '" + dir.file("sweep/a/seed-2") + "' 2>&1");
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("| seed-1 | 1 | 0.960 | 0.990 | 0.800 |"), std::string::npos)
      << run.output;
  EXPECT_EQ(run.output.find("no test metrics"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("| seed-2 | 2 |  | 0.990 | 0.900 |"), std::string::npos)
      << run.output;
  const testing::CommandResult typo = testing::run_command(
      script + "'" + dir.file("sweep/a") + "' '" + dir.file("sweep/a/seed-1") + "' 2>&1");
  EXPECT_EQ(typo.status, 1) << typo.output;
  EXPECT_NE(typo.output.find("not a run folder (none of metrics_val.json, test_metrics.json, "
                             "test.json, history.csv, model.safetensors): " + dir.file("sweep/a")),
            std::string::npos)
      << typo.output;
}

}  // namespace
}  // namespace pneumo
