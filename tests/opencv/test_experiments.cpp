// scripts/experiments.py end to end on the bundled sample (32 px, one epoch, two seeds, two
// configurations): --test refused (and no lock written) while a configuration lacks seeds, every
// run trained and scored on its validation and stress variants, the table written, the
// configuration the plan's rule names picked (checked against the CSV here), a rerun training
// nothing, a changed plan refused, and the test split read once (a second read refused). A view
// (another checkpoint of a configuration's runs) scored and read without training. Then invalid
// plans and names: refused with status 2 before anything runs. A failed start's folder trained
// again, any other unfinished folder refused; a SIGTERM to the script passed on to its run, which
// checkpoints, its seconds kept and summed with the continued part's; a failed training's seconds
// kept; a SIGTERM during the start-up checks said and passed on. The table's validation split read
// from the runs, and runs whose stored threshold is not Youden's left out of its Youden column. A
// sweep whose test split was read closed: its table kept, no run trained or scored again. Skipped
// without python3. Every committed plan's configurations are flags `pneumo train` takes.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_test_util.hpp"
#include "pneumo/checkpoint.hpp"
#include "temp_dir.hpp"

namespace pneumo {
namespace {

namespace fs = std::filesystem;

// experiments.py on the bundled sample, its image cache in the test's folder.
std::string sweep_command(const testing::TempDir& dir, const std::string& plan,
                          const std::string& out, const std::string& pneumo = PNEUMO_BINARY) {
  return "PNEUMO_CACHE_DIR='" + dir.file("cache") + "' python3 " PNEUMO_SOURCE_DIR
         "/scripts/experiments.py " + plan + " --pneumo " + pneumo + " --data " PNEUMO_SOURCE_DIR
         "/data/sample --out " + out;
}

// A `pneumo` for experiments.py that runs the shell lines `before` (which may exit, or exec the
// binary with other arguments) and then the binary as called: a fault where a test wants one.
std::string pneumo_wrapper(const testing::TempDir& dir, const std::string& name,
                           const std::string& before) {
  const std::string path = dir.file(name);
  std::ofstream(path) << "#!/bin/sh\n" << before << "exec '" PNEUMO_BINARY "' \"$@\"\n";
  fs::permissions(path, fs::perms::owner_all);
  return path;
}

// experiments.py PLAN on the sample into OUT with `pneumo`, and the arguments `more`, started in
// the background (its output in dir's script.log), for a test that signals it.
testing::BackgroundPneumo background_sweep(const testing::TempDir& dir, const std::string& plan,
                                           const std::string& out, const std::string& pneumo,
                                           std::vector<std::string> more = {}) {
  std::vector<std::string> args{PNEUMO_SOURCE_DIR "/scripts/experiments.py", plan, "--pneumo",
                                pneumo, "--data", PNEUMO_SOURCE_DIR "/data/sample", "--out", out};
  args.insert(args.end(), more.begin(), more.end());
  return testing::BackgroundPneumo(args, dir.file("cache"), dir.file("script.log"), "python3");
}

// Whether `path` exists within `limit` (looked for every 20 ms).
bool appears(const std::string& path, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!fs::exists(path) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  return fs::exists(path);
}

// The lines of pneumo_wrapper that add --inject-fault nan@2 to a `pneumo train` while FAULT is set.
const char* const kTrainFaultWhileFault =
    "if [ \"$1\" = train ] && [ \"$2\" != --help ] && [ -n \"$FAULT\" ]; then\n"
    "  shift; exec '" PNEUMO_BINARY "' train \"$@\" --inject-fault nan@2\n"
    "fi\n";

// The numbers in a run's train_seconds.txt (a line per `pneumo train` command of the run).
std::vector<double> train_seconds(const std::string& run_dir) {
  std::vector<double> parts;
  std::ifstream in(run_dir + "/train_seconds.txt");
  for (double value; in >> value;) parts.push_back(value);
  return parts;
}

TEST(Experiments, SweepPicksByThePlansRuleAndReadsTestOnce) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  const std::string plan = dir.file("plan.json"), out = dir.file("sweep");
  std::ofstream(plan) << R"({"size": 32, "epochs": 1, "seeds": [1, 2], "baseline": "plain",
    "rule": "highest mean stress_mean_accuracy", "pick_metric": "stress_mean_accuracy",
    "configs": {"plain": {"augment": false, "threads": 2, "device": "cpu"},
                "jitter": {"aspect": 0.3, "brightness": 0.1, "threads": 2, "device": "cpu"}}})";
  const std::string script = sweep_command(dir, plan, out);
  // One configuration's seeds only: the test split stays unread until every configuration has
  // all its seeds (a pick among the complete ones would not be the plan's rule).
  auto part = testing::run_command(script + " --only plain");
  ASSERT_EQ(part.status, 0) << part.output;
  EXPECT_FALSE(fs::exists(fs::path(out) / "jitter" / "seed-1")) << part.output;
  auto early = testing::run_command(script + " --test");
  EXPECT_NE(early.status, 0) << early.output;
  EXPECT_NE(early.output.find("jitter (0 of 2 seeds)"), std::string::npos) << early.output;
  EXPECT_FALSE(fs::exists(out + "/test.lock"));
  EXPECT_FALSE(fs::exists(out + "/plain/seed-1/test.json"));
  EXPECT_TRUE(fs::exists(out + "/plan.json"));  // the plan, fixed by the first call

  // The rest two runs at a time (--jobs, as on a GPU): the same table as one at a time.
  auto sweep = testing::run_command(script + " --jobs 2");
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

  // A plan changed after its runs (another epoch count, another flag) is refused, naming what.
  const std::string changed = dir.file("changed.json");
  std::ofstream(changed) << R"({"size": 32, "epochs": 2, "seeds": [1, 2], "baseline": "plain",
    "rule": "highest mean stress_mean_accuracy", "pick_metric": "stress_mean_accuracy",
    "configs": {"plain": {"augment": false, "threads": 2, "device": "cpu"},
                "jitter": {"aspect": 0.2, "brightness": 0.1, "threads": 2, "device": "cpu"}}})";
  std::string changed_script = script;
  changed_script.replace(changed_script.find(plan), plan.size(), changed);
  auto refused = testing::run_command(changed_script + " --table");
  EXPECT_NE(refused.status, 0) << refused.output;
  EXPECT_NE(refused.output.find("epochs, configs.jitter.aspect"), std::string::npos)
      << refused.output;
  EXPECT_FALSE(fs::exists(out + "/test.lock"));

  // A plan whose test split a recorded lock says was read (in another folder: the repository's
  // docs/experiments/*/test.lock, here a stand-in) is not read again.
  const auto hash = testing::run_command("sha256sum " + out + "/plan.json");
  ASSERT_EQ(hash.status, 0) << hash.output;
  fs::create_directories(dir.file("reads/elsewhere"));
  std::ofstream(dir.file("reads/elsewhere/test.lock"))
      << "test read at 2026-12-01 for ['plain']\nplan sha256 " << hash.output.substr(0, 64)
      << " (/elsewhere/plan.json)\n";
  auto recorded = testing::run_command("PNEUMO_TEST_READS=" + dir.file("reads") + " " + script +
                                       " --test");
  EXPECT_NE(recorded.status, 0) << recorded.output;
  EXPECT_NE(recorded.output.find("this plan's test split was read already (" +
                                 dir.file("reads/elsewhere/test.lock")),
            std::string::npos)
      << recorded.output;
  EXPECT_FALSE(fs::exists(out + "/test.lock"));

  // A model file damaged since it was scored: found on validation before the lock (the lock was
  // written, the reads failed, and the one test read was spent on nothing).
  const std::string model = out + "/plain/seed-2/model.safetensors";
  const std::string intact = testing::read_text(model);
  std::ofstream(model, std::ios::trunc) << intact.substr(0, 1000);
  auto damaged = testing::run_command(script + " --test");
  EXPECT_NE(damaged.status, 0) << damaged.output;
  EXPECT_NE(damaged.output.find(model + " cannot be read: "), std::string::npos) << damaged.output;
  EXPECT_FALSE(fs::exists(out + "/test.lock"));
  std::ofstream(model, std::ios::trunc) << intact;

  auto test = testing::run_command(script + " --test");
  ASSERT_EQ(test.status, 0) << test.output;
  const std::string read = testing::read_text(out + "/test.md");
  EXPECT_NE(read.find("ensemble of 2"), std::string::npos) << read;
  // The lock names each model file read by its sha256: a copy in another plan's folder is known.
  EXPECT_NE(testing::read_text(out + "/test.lock").find("model sha256 "), std::string::npos);
  EXPECT_NE(read.find("| " + winner + " | mean ± sample sd |"), std::string::npos) << read;
  // evaluate prints its stress worst accuracy at the checkpoint's threshold; this table's at 0.5.
  EXPECT_NE(read.find("\"stress worst acc\" is at 0.5"), std::string::npos) << read;
  EXPECT_NE(testing::read_text(out + "/test.lock").find("plan sha256 "), std::string::npos);
  auto twice = testing::run_command(script + " --test");
  EXPECT_NE(twice.status, 0);
  EXPECT_NE(twice.output.find("read once"), std::string::npos) << twice.output;
}

// A plan that names its configuration in advance (its "pick") decides nothing: its tables must not
// call that configuration "picked" (a reader took the bf16 plan's named candidate for a winner).
TEST(Experiments, APlanThatNamesItsConfigurationDoesNotCallItPicked) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  const std::string plan = dir.file("plan.json"), out = dir.file("sweep");
  std::ofstream(plan) << R"({"size": 32, "epochs": 1, "seeds": [1], "baseline": "plain",
    "pick": "jitter", "rule": "jitter matches plain when ...", "pick_metric": "stress_mean_accuracy",
    "configs": {"plain": {"augment": false, "threads": 2, "device": "cpu"},
                "jitter": {"aspect": 0.3, "threads": 2, "device": "cpu"}}})";
  const std::string script = sweep_command(dir, plan, out);
  auto sweep = testing::run_command(script + " --jobs 2");
  ASSERT_EQ(sweep.status, 0) << sweep.output;
  const std::string table = testing::read_text(out + "/results.md");
  EXPECT_NE(table.find("| jitter (named by the plan) |"), std::string::npos) << table;
  EXPECT_NE(table.find("This plan picks nothing"), std::string::npos) << table;
  EXPECT_EQ(table.find("(picked)"), std::string::npos) << table;
  auto test = testing::run_command(script + " --test");
  ASSERT_EQ(test.status, 0) << test.output;
  const std::string read = testing::read_text(out + "/test.md");
  EXPECT_NE(read.find("named by the plan `jitter`, baseline `plain`"), std::string::npos) << read;
  EXPECT_EQ(read.find("picked"), std::string::npos) << read;
}

// A view scores another checkpoint of a configuration's runs as a configuration of its own: here
// the final epoch of runs that restore their best (by validation loss) at the end. Nothing is
// trained for it (one `train` per seed), its scores and test reads sit in its own folder, and
// they are of the checkpoint it names: its val.json and test.json name that file as their model.
TEST(Experiments, AViewScoresAnotherCheckpointWithoutTraining) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  const std::string plan = dir.file("plan.json"), out = dir.file("sweep");
  std::ofstream(plan) << R"({"size": 32, "epochs": 2, "seeds": [1, 2], "baseline": "last",
    "pick": "best", "rule": "a view beside its configuration",
    "configs": {"best": {"augment": false, "restore-best": true, "threads": 2, "device": "cpu"}},
    "views": {"last": {"of": "best", "model": "checkpoints/last.safetensors"}}})";
  const std::string script = sweep_command(dir, plan, out);
  // Seed 1 as a start that failed before training leaves it (config.json, an empty checkpoints/,
  // the lock file): trained, not refused.
  fs::create_directories(fs::path(out) / "best" / "seed-1" / "checkpoints");
  std::ofstream(out + "/best/seed-1/config.json") << "{}";
  std::ofstream(out + "/best/seed-1/.lock");
  auto sweep = testing::run_command(script);
  ASSERT_EQ(sweep.status, 0) << sweep.output;
  size_t trainings = 0;
  for (size_t at = sweep.output.find(PNEUMO_BINARY " train"); at != std::string::npos;
       at = sweep.output.find(PNEUMO_BINARY " train", at + 1))
    ++trainings;
  EXPECT_EQ(trainings, 2u) << sweep.output;
  EXPECT_FALSE(fs::exists(fs::path(out) / "last" / "seed-1" / "model.safetensors"));
  for (const char* seed : {"seed-1", "seed-2"}) {
    const std::string val = testing::read_text(out + "/last/" + seed + "/val.json");
    EXPECT_NE(val.find(std::string("best/") + seed + "/checkpoints/last.safetensors"),
              std::string::npos) << val;
    EXPECT_NE(testing::read_text(out + "/best/" + seed + "/val.json").find("model.safetensors"),
              std::string::npos);
  }
  const std::string table = testing::read_text(out + "/results.md");
  EXPECT_NE(table.find("| last | 2 |"), std::string::npos) << table;
  EXPECT_NE(table.find("| best (named by the plan) | 2 |"), std::string::npos) << table;
  EXPECT_NE(table.find("`last`: `checkpoints/last.safetensors` of `best`'s runs"),
            std::string::npos) << table;
  auto test = testing::run_command(script + " --test");
  ASSERT_EQ(test.status, 0) << test.output;
  EXPECT_NE(testing::read_text(out + "/last/seed-2/test.json").find("checkpoints/last.safetensors"),
            std::string::npos);
  EXPECT_NE(testing::read_text(out + "/test.md").find("| last | ensemble of 2"), std::string::npos)
      << testing::read_text(out + "/test.md");
}

// A run folder that `pneumo train` left after failing before its first checkpoint (a NaN at step
// 2, then a checkpoint write killed midway: its temporary file) is trained again, as `pneumo
// train` itself would reuse it; the same folder holding anything else is refused, untouched.
TEST(Experiments, AFailedStartsFolderIsTrainedAgainAnythingElseRefused) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  const std::string plan = dir.file("plan.json");
  std::ofstream(plan) << R"({"size": 32, "epochs": 1, "seeds": [1], "baseline": "plain",
    "rule": "the only configuration", "configs": {"plain": {"augment": false, "threads": 2,
    "device": "cpu"}}})";
  auto failed_start = [&](const std::string& run_dir) {
    const auto failed = testing::run_command(
        "PNEUMO_CACHE_DIR='" + dir.file("cache") + "' " PNEUMO_BINARY " train --data "
        PNEUMO_SOURCE_DIR "/data/sample --out " + run_dir +
        " --size 32 --epochs 2 --device cpu --threads 2 --inject-fault nan@2");
    ASSERT_EQ(failed.status, 1) << failed.output;
    ASSERT_FALSE(fs::exists(run_dir + "/checkpoints/last.safetensors"));
    std::ofstream(run_dir + "/checkpoints/last.safetensors.tmp.k1LLed") << "partial";
  };
  const std::string reused = dir.file("reused");
  failed_start(reused + "/plain/seed-1");
  auto sweep = testing::run_command(sweep_command(dir, plan, reused));
  ASSERT_EQ(sweep.status, 0) << sweep.output;
  EXPECT_TRUE(fs::exists(reused + "/plain/seed-1/val.json")) << sweep.output;
  EXPECT_FALSE(fs::exists(reused + "/plain/seed-1/checkpoints/last.safetensors.tmp.k1LLed"));

  // Anything else: a file of someone's beside the run's, in checkpoints/ a name that is not a
  // temporary file by pneumo's rule (PATH.tmp. and six characters, src/core/atomic_file.cpp), or
  // a folder where a start writes its history file.
  int kept_count = 0;
  for (const char* other :
       {"notes.txt", "checkpoints/last.safetensors.tmp.partial", "history.csv/mine.txt"}) {
    SCOPED_TRACE(other);
    const std::string kept = dir.file("kept-" + std::to_string(++kept_count));
    failed_start(kept + "/plain/seed-1");
    if (std::string(other).rfind("history.csv/", 0) == 0) {
      fs::remove(kept + "/plain/seed-1/history.csv");
      fs::create_directories(kept + "/plain/seed-1/history.csv");
    }
    std::ofstream(kept + "/plain/seed-1/" + other) << "mine";
    auto refused = testing::run_command(sweep_command(dir, plan, kept));
    EXPECT_NE(refused.status, 0) << refused.output;
    EXPECT_NE(refused.output.find("holds neither a checkpoint nor a model"),
              std::string::npos)
        << refused.output;
    EXPECT_TRUE(fs::exists(kept + "/plain/seed-1/" + other));
    EXPECT_FALSE(fs::exists(kept + "/plain/seed-1/model.safetensors"));
  }

  // A run stopped between writing its best checkpoint and its last left a whole epoch there, as
  // pneumo train sees it: the sweep continues from it (the failed-start rule deleted it).
  const std::string best_left = dir.file("best-left");
  auto whole = testing::run_command(sweep_command(dir, plan, best_left));
  ASSERT_EQ(whole.status, 0) << whole.output;
  const std::string run = best_left + "/plain/seed-1";
  for (const char* name : {"model.safetensors", "val.json", "metrics_val.json", "report.md",
                           "checkpoints/last.safetensors"})
    fs::remove(run + "/" + name);
  ASSERT_TRUE(fs::exists(run + "/checkpoints/best.safetensors"));
  auto continued = testing::run_command(sweep_command(dir, plan, best_left));
  ASSERT_EQ(continued.status, 0) << continued.output;
  EXPECT_TRUE(fs::exists(run + "/val.json")) << continued.output;
  EXPECT_NE(testing::read_text(best_left + "/plain/seed-1.log")
                .find("resuming " + run + "/checkpoints/best.safetensors"),
            std::string::npos)
      << testing::read_text(best_left + "/plain/seed-1.log");
}

// The folder rules as pneumo applies them: an empty run folder is a fresh one (the script refused
// it), and a best checkpoint whose header length is damaged is unreadable, so a whole epoch to
// resume rather than a failed start's (the script raised OverflowError on reading it).
TEST(Experiments, AnEmptyFolderIsFreshADamagedBestHeaderIsUnreadable) {
  testing::TempDir dir;
  fs::create_directories(dir.file("empty"));
  fs::create_directories(dir.file("damaged/checkpoints"));
  std::ofstream(dir.file("damaged/checkpoints/best.safetensors"), std::ios::binary)
      << std::string(8, '\xff') << "{}";
  const auto checked = testing::run_command(
      "cd " PNEUMO_SOURCE_DIR "/scripts && python3 -B -c 'import experiments as e; "
      "print(e.holds_only_a_failed_start(\"" + dir.file("empty") + "\"), "
      "e.best_checkpoint_written_here(\"" + dir.file("damaged") + "\"), "
      "e.holds_only_a_failed_start(\"" + dir.file("damaged") + "\"))'");
  ASSERT_EQ(checked.status, 0) << checked.output;
  EXPECT_EQ(checked.output, "True True False\n");
}

// A SIGTERM sent to the script alone (not its process group, as `kill PID` or a runner sends it)
// reaches the `pneumo train` it started: the run checkpoints and says so in its log, the script
// exits 143 saying how to continue, and the same command then finishes the run from there.
TEST(Experiments, ASigtermToTheScriptAloneStopsItsRunsWithACheckpoint) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  const std::string plan = dir.file("plan.json"), out = dir.file("sweep");
  std::ofstream(plan) << R"({"size": 32, "epochs": 30, "seeds": [1], "baseline": "plain",
    "rule": "the only configuration", "configs": {"plain": {"augment": false, "threads": 2,
    "device": "cpu"}}})";
  const std::string run = out + "/plain/seed-1";
  {
    testing::BackgroundPneumo script = background_sweep(dir, plan, out, PNEUMO_BINARY);
    ASSERT_TRUE(script.started());
    // The first epoch's checkpoint: the run is under way.
    ASSERT_TRUE(appears(run + "/checkpoints/last.safetensors", std::chrono::seconds(300)))
        << script.log();
    script.send(SIGTERM);
    const auto stopped = script.wait(std::chrono::seconds(120));
    EXPECT_EQ(stopped.status, 143) << stopped.output;
    EXPECT_NE(stopped.output.find("experiments: stopped by SIGTERM, passed on to the runs under "
                                  "way"),
              std::string::npos)
        << stopped.output;
  }
  // The script waited for its run, which got the signal: its log says so, and no model yet.
  const std::string log = testing::read_text(out + "/plain/seed-1.log");
  EXPECT_NE(log.find("interrupted by SIGTERM after"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(run + "/model.safetensors")) << log;
  EXPECT_LT(read_checkpoint_metadata(run + "/checkpoints/last.safetensors").epoch, 30);
  // The stopped part's seconds are kept (a resumed run's "train s" was only its last part).
  const auto stopped_part = train_seconds(run);
  ASSERT_EQ(stopped_part.size(), 1u) << log;
  EXPECT_GE(stopped_part[0], 0.0);

  const auto continued = testing::run_command(sweep_command(dir, plan, out));
  ASSERT_EQ(continued.status, 0) << continued.output;
  EXPECT_NE(continued.output.find("train --resume " + run + "/checkpoints/last.safetensors"),
            std::string::npos)
      << continued.output;
  EXPECT_EQ(read_checkpoint_metadata(run + "/model.safetensors").epoch, 30);
  EXPECT_TRUE(fs::exists(run + "/val.json"));
  // A line per part; the table's "train s" (the last column of the per-run table) is their sum.
  const auto parts = train_seconds(run);
  ASSERT_EQ(parts.size(), 2u) << testing::read_text(run + "/train_seconds.txt");
  EXPECT_EQ(parts[0], stopped_part[0]);
  char total[32];
  std::snprintf(total, sizeof total, "%.1f", parts[0] + parts[1]);
  const std::string table = testing::read_text(out + "/results.md");
  EXPECT_NE(table.find(std::string(" | ") + total + " |\n"), std::string::npos)
      << total << "\n" << table;
}

// A SIGTERM that lands during a training call's start-up checks (each runs `pneumo`; here a
// `train --help` that sleeps) reaches the check under way and ends the script as one during its
// runs does: status 143 and a message. It ended the script without a word, the check left running.
TEST(Experiments, ASigtermDuringTheStartUpChecksEndsTheScriptWithAMessage) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  const std::string plan = dir.file("plan.json"), out = dir.file("sweep");
  const std::string checking = dir.file("checking");  // made when the slow check starts
  std::ofstream(plan) << R"({"size": 32, "epochs": 1, "seeds": [1], "rule": "r",
    "configs": {"plain": {"augment": false, "threads": 2, "device": "cpu"}}})";
  const std::string pneumo = pneumo_wrapper(dir, "pneumo-slow-help.sh",
                                            "if [ \"$1\" = train ] && [ \"$2\" = --help ]; then\n"
                                            "  touch '" + checking + "'; exec sleep 60\n"
                                            "fi\n");
  testing::BackgroundPneumo script = background_sweep(dir, plan, out, pneumo);
  ASSERT_TRUE(script.started());
  ASSERT_TRUE(appears(checking, std::chrono::seconds(60))) << script.log();
  script.send(SIGTERM);
  // Well within the check's 60 s sleep: the signal reached it too.
  const auto stopped = script.wait(std::chrono::seconds(30));
  EXPECT_EQ(stopped.status, 143) << stopped.output;
  EXPECT_NE(stopped.output.find("experiments: stopped by SIGTERM during the start-up checks, "
                                "before any run started: nothing was trained"),
            std::string::npos)
      << stopped.output;
  EXPECT_FALSE(fs::exists(out)) << stopped.output;
}

// The same for --test's checks before its lock (here its evaluation on validation, which takes a
// while on real data): the signal reaches the check, and the call ends with 143, a message, no
// lock and nothing read, so the same command reads the test split later. It ended without a word.
TEST(Experiments, ASigtermDuringTestsChecksEndsTheCallBeforeItsLock) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  const std::string plan = dir.file("plan.json"), out = dir.file("sweep");
  const std::string armed = dir.file("armed"), checking = dir.file("checking");
  std::ofstream(plan) << R"({"size": 32, "epochs": 1, "seeds": [1], "rule": "r",
    "configs": {"plain": {"augment": false, "threads": 2, "device": "cpu"}}})";
  // Once `armed` exists, the evaluation on validation marks its start and sleeps.
  const std::string pneumo = pneumo_wrapper(
      dir, "pneumo-slow-check.sh",
      "if [ -e '" + armed + "' ] && [ \"$1\" = evaluate ]; then\n"
      "  case \"$*\" in *val-carved*) touch '" + checking + "'; exec sleep 60;; esac\n"
      "fi\n");
  const auto sweep = testing::run_command(sweep_command(dir, plan, out, pneumo));
  ASSERT_EQ(sweep.status, 0) << sweep.output;
  std::ofstream(armed) << "";
  testing::BackgroundPneumo script = background_sweep(dir, plan, out, pneumo, {"--test"});
  ASSERT_TRUE(script.started());
  ASSERT_TRUE(appears(checking, std::chrono::seconds(60))) << script.log();
  script.send(SIGTERM);
  const auto stopped = script.wait(std::chrono::seconds(30));  // within the check's 60 s sleep
  EXPECT_EQ(stopped.status, 143) << stopped.output;
  EXPECT_NE(stopped.output.find("experiments: stopped by SIGTERM during --test's checks, before "
                                "its lock: the test split was not read"),
            std::string::npos)
      << stopped.output;
  EXPECT_FALSE(fs::exists(out + "/test.lock")) << stopped.output;
  EXPECT_FALSE(fs::exists(out + "/test.md")) << stopped.output;
  EXPECT_FALSE(fs::exists(out + "/plain/seed-1/test.json")) << stopped.output;
}

// A training that fails still records its seconds (they were written only after a success); a
// run then trained again from nothing (its folder a failed start's, train_seconds.txt included)
// counts only its own. The failure: pneumo's --inject-fault, added by a wrapper while FAULT is set.
TEST(Experiments, AFailedTrainingsSecondsAreKeptAFreshStartCountsOnlyItsOwn) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  const std::string plan = dir.file("plan.json"), out = dir.file("sweep");
  const std::string run = out + "/plain/seed-1";
  std::ofstream(plan) << R"({"size": 32, "epochs": 2, "seeds": [1], "rule": "the only one",
    "configs": {"plain": {"augment": false, "threads": 2, "device": "cpu"}}})";
  const std::string sweep = sweep_command(
      dir, plan, out, pneumo_wrapper(dir, "pneumo-fault.sh", kTrainFaultWhileFault));
  auto failed = testing::run_command("FAULT=1 " + sweep);
  EXPECT_EQ(failed.status, 1) << failed.output;
  EXPECT_NE(failed.output.find("command failed with status 1"), std::string::npos)
      << failed.output;
  ASSERT_FALSE(fs::exists(run + "/checkpoints/last.safetensors")) << failed.output;
  EXPECT_EQ(train_seconds(run).size(), 1u) << failed.output;

  auto again = testing::run_command(sweep);
  ASSERT_EQ(again.status, 0) << again.output;
  EXPECT_TRUE(fs::exists(run + "/val.json")) << again.output;
  EXPECT_EQ(train_seconds(run).size(), 1u) << testing::read_text(run + "/train_seconds.txt");
}

// A sweep continued with another pneumo binary (a rebuild between calls) ranks runs of two
// builds: sweep.json lists each build, the call says so, and the table warns of it.
TEST(Experiments, RunsOfTwoBuildsAreNamedInTheTable) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  const std::string plan = dir.file("plan.json"), out = dir.file("sweep");
  std::ofstream(plan) << R"({"size": 32, "epochs": 1, "seeds": [1], "rule": "r",
    "configs": {"plain": {"augment": false, "threads": 2, "device": "cpu"},
                "flip": {"threads": 2, "device": "cpu"}}})";
  auto first = testing::run_command(sweep_command(dir, plan, out) + " --only plain");
  ASSERT_EQ(first.status, 0) << first.output;
  auto second = testing::run_command(
      sweep_command(dir, plan, out, pneumo_wrapper(dir, "pneumo-rebuilt.sh", "")));
  ASSERT_EQ(second.status, 0) << second.output;
  EXPECT_NE(second.output.find("is not the build that trained this sweep's earlier runs"),
            std::string::npos)
      << second.output;
  const auto sweep = nlohmann::json::parse(testing::read_text(out + "/sweep.json"));
  EXPECT_EQ(sweep.at("builds").size(), 2u) << sweep.dump();
  EXPECT_NE(testing::read_text(out + "/results.md").find("Trained by 2 builds of pneumo"),
            std::string::npos);
}

// The table says what validation was, from each run's config.json ("val-split"), not a constant
// 15%; its Youden column holds only runs whose stored threshold Youden's J chose. On the sample,
// 15% of train is 9 images a class (train stores its 0.5 fall-back), 40% is 24 (a Youden cut).
TEST(Experiments, TheTableSaysEachRunsValidationSplitAndItsYoudenColumnHoldsYoudenCutsOnly) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  const std::string plan = dir.file("plan.json"), out = dir.file("sweep");
  std::ofstream(plan) << R"({"size": 32, "epochs": 1, "seeds": [1], "rule": "r",
    "configs": {"plain": {"augment": false, "threads": 2, "device": "cpu"},
                "wide": {"augment": false, "val-split": 0.4, "threads": 2, "device": "cpu"}}})";
  auto sweep = testing::run_command(sweep_command(dir, plan, out));
  ASSERT_EQ(sweep.status, 0) << sweep.output;
  ASSERT_NE(testing::read_text(out + "/wide/seed-1/val.json").find("\"Youden's J on 48 "),
            std::string::npos);
  const std::string table = testing::read_text(out + "/results.md");
  EXPECT_NE(table.find("`plain` 15%, `wide` 40%"), std::string::npos) << table;
  EXPECT_EQ(table.find("(15%, by patient)"), std::string::npos) << table;
  // The summary rows: plain's Youden cell empty, wide's a number; the note names plain only.
  auto row = [&](const std::string& name) {
    const size_t at = table.find("| " + name + " ");
    return at == std::string::npos ? std::string() : table.substr(at, table.find('\n', at) - at);
  };
  ASSERT_FALSE(row("plain").empty()) << table;
  ASSERT_FALSE(row("wide").empty()) << table;
  EXPECT_NE(row("plain").find("| - |"), std::string::npos) << table;
  EXPECT_EQ(row("wide").find("| - |"), std::string::npos) << table;
  EXPECT_NE(table.find("their stored threshold not Youden's J: `plain` seed 1 (default 0.5 "),
            std::string::npos)
      << table;
  EXPECT_EQ(table.find("`wide` seed 1 ("), std::string::npos) << table;
}

// Each plan below is wrong in one way; the script must say so with status 2 before it trains
// anything or makes the output folder (a name such as "../x" would be a folder outside it).
TEST(Experiments, InvalidPlansAndNamesRefusedBeforeAnyTraining) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  const std::string out = dir.file("sweep"), start = R"({"size": 32, "epochs": 1, "rule": "r", )";
  const std::string plain = R"("plain": {"augment": false, "threads": 2, "device": "cpu"})";
  const std::vector<std::pair<std::string, std::string>> plans = {  // plan, words of the refusal
      {"[1, 2]", "must be a JSON object"},
      {start + R"("seeds": [1, "2"], "configs": {)" + plain + "}}", "'seeds' must be"},
      {start + R"("seeds": [1], "sedes": [2], "configs": {)" + plain + "}}", "unknown keys ['sedes']"},
      {start + R"("seeds": [1], "baseline": "keras", "configs": {)" + plain + "}}",
       "'baseline' names 'keras'"},
      {start + R"("seeds": [1], "pick_metric": "accuracy", "configs": {)" + plain + "}}",
       "'pick_metric' 'accuracy'"},
      // Lower is better: the pick, which takes the highest mean, took the least robust.
      {start + R"("seeds": [1], "pick_metric": "stress_mean_drop", "configs": {)" + plain + "}}",
       "'pick_metric' 'stress_mean_drop' is lower-is-better"},
      // Past pneumo's UINT: the first seed trained, the second failed, the folder unfinishable.
      {start + R"("seeds": [1, 18446744073709551616], "configs": {)" + plain + "}}",
       "'seeds' must be a non-empty list of integers in [0, 2^64)"},
      // A folder name too long for the file system (an OSError traceback after plan.json).
      {start + R"("seeds": [1], "configs": {)" + plain + R"(, ")" + std::string(101, 'x') +
           R"(": {}}})",
       "of at most 100 characters"},
      {start + R"("seeds": [1], "configs": {)" + plain + R"(, "../escape": {}}})",
       "configuration name \"../escape\""},
      {start + R"("seeds": [1], "configs": {)" + plain + R"(, "two words": {}}})",
       "configuration name \"two words\""},
      {start + R"("seeds": [1], "configs": {)" + plain +
           R"(}, "views": {"v": {"of": "plian", "model": "checkpoints/last.safetensors"}}})",
       "view 'v' is of 'plian'"},
      {start + R"("seeds": [1], "configs": {)" + plain +
           R"(}, "views": {"v": {"of": "plain", "model": "../../escape/x.safetensors"}}})",
       "view 'v': 'model' must be"},
      {start + R"("seeds": [1], "configs": {)" + plain +
           R"(}, "views": {"plain": {"of": "plain", "model": "checkpoints/best.safetensors"}}})",
       "view 'plain' has the name of a configuration"},
      // "of" not a string: a plan error, not a TypeError (a list or object is unhashable).
      {start + R"("seeds": [1], "configs": {)" + plain +
           R"(}, "views": {"v": {"of": ["plain"], "model": "checkpoints/last.safetensors"}}})",
       "view 'v': 'of' must name a configuration (a string), got [\"plain\"]"},
      {start + R"("seeds": [1], "configs": {)" + plain +
           R"(}, "views": {"v": {"of": {}, "model": "checkpoints/last.safetensors"}}})",
       "view 'v': 'of' must name a configuration (a string), got {}"},
      // JSON keeps the last of a repeated key: the plan's first "plain" would vanish unseen.
      {start + R"("seeds": [1], "configs": {)" + plain + ", " + plain + "}}",
       "the plan holds \"plain\" twice in one object"},
      {start + R"("seeds": [1], "configs": {)" + plain + R"(, "results.md": {}}})",
       "configuration name 'results.md' is one of OUT's own files"},
      {start + R"("seeds": [1], "configs": {)" + plain + R"(, "h": {"help": true}}})",
       "configuration 'h': 'help' is set by the script"},
      // A value `pneumo train` refuses: found by pneumo itself before OUT is made, not by the
      // first run (whose failure fixed the plan in OUT with the typo in it).
      {start + R"("seeds": [1], "configs": {"plain": {"lr": "abc", "device": "cpu"}}})",
       "configuration 'plain': `pneumo train` refuses it: --lr takes a FLOAT, got 'abc'"},
  };
  int i = 0;
  for (const auto& [text, words] : plans) {
    const std::string plan = dir.file("plan" + std::to_string(i++) + ".json");
    std::ofstream(plan) << text;
    auto result = testing::run_command(sweep_command(dir, plan, out));
    EXPECT_EQ(result.status, 2) << text << "\n" << result.output;
    EXPECT_NE(result.output.find(words), std::string::npos) << text << "\n" << result.output;
    EXPECT_EQ(result.output.find(PNEUMO_BINARY " train"), std::string::npos) << result.output;
    EXPECT_FALSE(fs::exists(out)) << text;
    EXPECT_FALSE(fs::exists(dir.file("escape"))) << text;
  }
  // A good plan with a bad option: --only must name a configuration of the plan, --jobs be >= 1.
  const std::string plan = dir.file("good.json");
  std::ofstream(plan) << start + R"("seeds": [1], "configs": {)" + plain + "}}";
  std::ofstream(dir.file("a-file")) << "not a folder";
  const std::vector<std::pair<std::string, std::string>> options = {
      {" --only plian", "--only names 'plian'"}, {" --jobs 0", "--jobs 0: give at least 1"},
      {" --only", "--only names no configuration"},
      {" -- --augment true", "'--augment' after \"--\" would replace configuration 'plain''s own"},
      {" -- --help", "'--help' after \"--\" is set by the script"},
      {" -- -h", "'-h' after \"--\" is set by the script"},
      {" --out ''", "--out is empty"},
      {" -- --lr 0x1p-3", "`pneumo train` refuses it: --lr: '0x1p-3' is not a number in decimal"},
      {" --out " + dir.file("a-file"), "is a file, not a folder"},
      {" --out " + dir.file("a-file") + "/sweep", "lies under a file"},
      {" --data " + dir.file("no-data"), "--data " + dir.file("no-data") + " does not exist"}};
  for (const auto& [option, words] : options) {
    // (A second --out or --data wins over sweep_command's: argparse keeps the last.)
    auto result = testing::run_command(sweep_command(dir, plan, out) + option);
    EXPECT_EQ(result.status, 2) << option << "\n" << result.output;
    EXPECT_NE(result.output.find(words), std::string::npos) << option << "\n" << result.output;
    EXPECT_FALSE(fs::exists(out)) << option;
  }
}

// A sweep's runs are compared as one experiment, so what decides them beyond the plan is fixed by
// the first call (OUT/sweep.json): a later call with other flags after "--" (but --threads) is
// refused, and any call on other data (here a cache of the same images, another identity) too,
// --test before its lock. A pick metric without a value for a run (Youden's column, which train's
// 0.5 fall-back on the sample's small validation leaves empty) ranks nothing: no pick, and --test
// refused; it used to pick by validation AUC, unsaid. --table on a folder without a sweep is a
// mistyped --out, not an empty table.
TEST(Experiments, ASweepKeepsItsDataAndFlagsAndPicksOnlyByItsMetric) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  const std::string plan = dir.file("plan.json"), out = dir.file("sweep");
  std::ofstream(plan) << R"({"size": 32, "epochs": 1, "seeds": [1], "rule": "r",
    "pick_metric": "stress_mean_accuracy_tuned",
    "configs": {"plain": {"augment": false, "device": "cpu"}}})";
  const std::string sweep = sweep_command(dir, plan, out);
  auto first = testing::run_command(sweep + " -- --threads 2 --batch 16 --lr 0.002");
  ASSERT_EQ(first.status, 0) << first.output;
  const std::string table = testing::read_text(out + "/results.md");
  EXPECT_EQ(table.find("(picked)"), std::string::npos) << table;
  EXPECT_NE(table.find("Nothing picked: the pick metric has no value for some runs: plain "
                       "(stress_mean_accuracy_tuned for 0 of 1 runs)"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("flags after \"--\" on every `pneumo train`: `--batch 16 --lr 0.002`"),
            std::string::npos)
      << table;
  auto test = testing::run_command(sweep + " --test");
  EXPECT_EQ(test.status, 1) << test.output;
  EXPECT_NE(test.output.find("only once the plan's rule has picked"), std::string::npos)
      << test.output;
  EXPECT_FALSE(fs::exists(out + "/test.lock"));

  // --threads may change; anything else after "--" may not.
  // (compared as flags: in another order, or written --lr=0.002, they are the same).
  auto threads = testing::run_command(sweep + " -- --lr=0.002 --threads 1 --batch 16");
  EXPECT_EQ(threads.status, 0) << threads.output;
  auto other = testing::run_command(sweep + " -- --threads 2 --batch 8 --lr 0.002");
  EXPECT_EQ(other.status, 1) << other.output;
  EXPECT_NE(other.output.find("the flags after \"--\" differ from those this sweep's runs were "
                              "trained with"),
            std::string::npos)
      << other.output;

  // The same images as a cache: not the data the runs were trained on.
  const std::string cache = dir.file("sample-cache");
  ASSERT_EQ(testing::run_command("'" PNEUMO_BINARY "' prepare --data " PNEUMO_SOURCE_DIR
                                 "/data/sample --out " + cache + " --size 32").status, 0);
  const std::string on_cache = "python3 " PNEUMO_SOURCE_DIR "/scripts/experiments.py " + plan +
                               " --pneumo " PNEUMO_BINARY " --data " + cache + " --out " + out;
  for (const char* mode : {"", " --table", " --test"}) {
    auto refused = testing::run_command(on_cache + mode);
    EXPECT_EQ(refused.status, 1) << mode << "\n" << refused.output;
    EXPECT_NE(refused.output.find("is not the data this sweep's runs were trained on"),
              std::string::npos)
        << mode << "\n" << refused.output;
  }
  EXPECT_FALSE(fs::exists(out + "/test.lock"));
  // --table reads no data: a sweep's folder without its data (copied back from a GPU host)
  // still tabulates.
  auto table_only = testing::run_command(
      sweep_command(dir, plan, out) + " --table --data " + dir.file("no-data"));
  EXPECT_EQ(table_only.status, 0) << table_only.output;

  // The configurations in another order: it decides ties ("the first in the plan"), so it is a
  // change of plan. And a sweep.json that cannot be read is not a missing one (the next call's
  // data and flags were recorded in its place).
  {
    const std::string two = dir.file("two.json"), two_swapped = dir.file("two-swapped.json");
    std::ofstream(two) << R"({"size": 32, "epochs": 1, "seeds": [1], "rule": "r",
    "configs": {"a": {"augment": false, "device": "cpu"}, "b": {"augment": false, "device": "cpu"}}})";
    std::ofstream(two_swapped) << R"({"size": 32, "epochs": 1, "seeds": [1], "rule": "r",
    "configs": {"b": {"augment": false, "device": "cpu"}, "a": {"augment": false, "device": "cpu"}}})";
    const std::string pair = dir.file("pair");
    auto trained = testing::run_command(sweep_command(dir, two, pair) + " -- --threads 2");
    ASSERT_EQ(trained.status, 0) << trained.output;
    auto swapped = testing::run_command(sweep_command(dir, two_swapped, pair) + " --table");
    EXPECT_EQ(swapped.status, 1) << swapped.output;
    EXPECT_NE(swapped.output.find("in: configs (their order)"), std::string::npos)
        << swapped.output;
    std::ofstream(pair + "/sweep.json", std::ios::trunc) << "garbage";
    auto damaged = testing::run_command(sweep_command(dir, two, pair) + " -- --threads 2");
    EXPECT_EQ(damaged.status, 1) << damaged.output;
    EXPECT_NE(damaged.output.find("sweep.json cannot be read"), std::string::npos)
        << damaged.output;
    // A val.json that is no evaluation's ({}) was taken as scored: it is set aside (evaluate does
    // not replace a file that is not its own output) and scored again. (Without
    // a sweep.json, as an older sweep's, this call's data and flags are recorded.)
    fs::remove(pair + "/sweep.json");
    std::ofstream(pair + "/a/seed-1/val.json", std::ios::trunc) << "{}";
    auto rescored = testing::run_command(sweep_command(dir, two, pair) + " -- --threads 2");
    EXPECT_EQ(rescored.status, 0) << rescored.output;
    EXPECT_NE(rescored.output.find("holds no evaluation (kept as " + pair +
                                   "/a/seed-1/val.json.unread); evaluating that run again"),
              std::string::npos)
        << rescored.output;
    EXPECT_EQ(testing::read_text(pair + "/a/seed-1/val.json.unread"), "{}");
    EXPECT_NE(testing::read_text(pair + "/a/seed-1/val.json").find("default_threshold"),
              std::string::npos);
  }

  auto typo = testing::run_command(sweep_command(dir, plan, dir.file("swep")) + " --table");
  EXPECT_EQ(typo.status, 2) << typo.output;
  EXPECT_NE(typo.output.find("holds no sweep (no plan.json)"), std::string::npos) << typo.output;
  EXPECT_FALSE(fs::exists(dir.file("swep")));
}

// A plan whose first run failed before anything was trained (no checkpoint, model or score in
// OUT) can be mended in place: the next call's plan replaces OUT's. And a `pneumo` that exits 0
// without writing the model it was asked for has failed (`--pneumo /bin/true` was a success).
TEST(Experiments, APlanIsMendedUntilARunHasAResultAndASilentSuccessIsAFailure) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  const std::string plan = dir.file("plan.json"), out = dir.file("sweep");
  const std::string sweep = sweep_command(
      dir, plan, out,
      pneumo_wrapper(dir, "pneumo-fault.sh",
                     std::string(kTrainFaultWhileFault) +
                         "if [ \"$1\" = train ] && [ -n \"$SILENT\" ]; then\n"
                         "  case \"$*\" in *seed-1*) exit 0;; esac\n"  // not the flag check
                         "fi\n"));
  std::ofstream(plan) << R"({"size": 32, "epochs": 1, "seeds": [1], "rule": "r",
    "configs": {"plain": {"augment": true, "device": "cpu"}}})";
  auto failed = testing::run_command("FAULT=1 " + sweep);
  ASSERT_EQ(failed.status, 1) << failed.output;
  // The sweep's own copy of its plan given as the plan, while no run has a result, with other
  // flags after "--" (a call that writes the sweep's record and its plan's copy again): the plan
  // itself (copying it onto itself raised SameFileError).
  const std::string copied_plan = testing::read_text(out + "/plan.json");
  auto own = testing::run_command(
      "FAULT=1 " + sweep_command(dir, out + "/plan.json", out, dir.file("pneumo-fault.sh")) +
      " -- --val-split 0.25");
  EXPECT_EQ(own.status, 1) << own.output;
  EXPECT_EQ(own.output.find("Traceback"), std::string::npos) << own.output;
  EXPECT_NE(own.output.find("flags after \"--\" are replaced"), std::string::npos) << own.output;
  EXPECT_EQ(testing::read_text(out + "/plan.json"), copied_plan);
  auto silent = testing::run_command("SILENT=1 " + sweep);
  EXPECT_EQ(silent.status, 1) << silent.output;
  EXPECT_NE(silent.output.find("ended with status 0 without writing " + out +
                               "/plain/seed-1/model.safetensors"),
            std::string::npos)
      << silent.output;
  // Flags after "--" that pass pneumo's flag check but stop its first run (too small a split).
  auto split = testing::run_command(sweep + " -- --val-split 0.001");
  EXPECT_EQ(split.status, 1) << split.output;
  std::ofstream(plan) << R"({"size": 32, "epochs": 1, "seeds": [1], "rule": "r",
    "configs": {"plain": {"augment": false, "device": "cpu"}}})";
  auto mended = testing::run_command(sweep);
  ASSERT_EQ(mended.status, 0) << mended.output;
  EXPECT_NE(mended.output.find("has no run's result yet: its plan, flags after \"--\" are "
                               "replaced by this call's"),
            std::string::npos)
      << mended.output;
  EXPECT_NE(testing::read_text(out + "/plan.json").find("\"augment\": false"), std::string::npos);
  // Now a run has its result: the plan is fixed.
  std::ofstream(plan) << R"({"size": 32, "epochs": 1, "seeds": [1], "rule": "r",
    "configs": {"plain": {"augment": true, "device": "cpu"}}})";
  auto changed = testing::run_command(sweep);
  EXPECT_EQ(changed.status, 1) << changed.output;
  EXPECT_NE(changed.output.find("A plan is fixed before its runs"), std::string::npos)
      << changed.output;
  // A --test whose pneumo cannot run is refused before its lock (which would have allowed no read).
  std::ofstream(plan) << R"({"size": 32, "epochs": 1, "seeds": [1], "rule": "r",
    "configs": {"plain": {"augment": false, "device": "cpu"}}})";
  auto no_pneumo = testing::run_command(sweep + " --test --pneumo " + dir.file("no-pneumo"));
  EXPECT_EQ(no_pneumo.status, 1) << no_pneumo.output;
  EXPECT_NE(no_pneumo.output.find("cannot run --pneumo " + dir.file("no-pneumo")),
            std::string::npos)
      << no_pneumo.output;
  EXPECT_FALSE(fs::exists(out + "/test.lock"));
  auto test = testing::run_command(sweep + " --test");
  EXPECT_EQ(test.status, 0) << test.output;
  EXPECT_TRUE(fs::exists(out + "/plain/seed-1/test.json")) << test.output;
}

// A --test whose reads stop part way (a failure here; a signal the same way) still writes test.md
// with the reads made and names the rest as not read: the lock allows no later call to write it.
TEST(Experiments, AStoppedTestReadKeepsWhatItReadInTestMd) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  const std::string plan = dir.file("plan.json"), out = dir.file("sweep");
  std::ofstream(plan) << R"({"size": 32, "epochs": 1, "seeds": [1, 2], "rule": "r",
    "configs": {"plain": {"augment": false, "threads": 2, "device": "cpu"}}})";
  const std::string sweep = sweep_command(
      dir, plan, out,
      pneumo_wrapper(dir, "pneumo-fails-seed-2.sh",
                     "if [ \"$1\" = evaluate ] && [ -n \"$FAIL\" ]; then\n"
                     "  case \"$*\" in *seed-2*) echo 'failed on purpose'; exit 1;; esac\n"
                     "fi\n"));
  ASSERT_EQ(testing::run_command(sweep).status, 0);
  auto test = testing::run_command("FAIL=1 " + sweep + " --test");
  EXPECT_EQ(test.status, 1) << test.output;
  ASSERT_TRUE(fs::exists(out + "/test.md")) << test.output;
  const std::string md = testing::read_text(out + "/test.md");
  EXPECT_NE(md.find("Not read (the reads were stopped or failed, and the lock allows no other): "
                    "plain seed 2, plain ensemble of 2"),
            std::string::npos)
      << md;
  const size_t row = md.find("| plain | seed 1 | ");
  ASSERT_NE(row, std::string::npos) << md;
  EXPECT_EQ(md.substr(row, md.find('\n', row) - row).find("| - |"), std::string::npos) << md;
  EXPECT_NE(md.find("| plain | seed 2 | - |"), std::string::npos) << md;
}

// Once --test has read the test split (test.lock, test.md), the sweep is closed: its table stays
// the one test.md's pick was made from. A val.json damaged after the read was dropped from the
// table by --table and by a second --test (before its refusal), and scored again by the next
// training call. Now --table prints results.md as it stands, --test is refused before the table,
// and a training call is refused (status 1) before anything runs or is written; test.md alone
// (its lock removed) closes the sweep too.
TEST(Experiments, ASweepWhoseTestSplitWasReadIsClosed) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  const std::string plan = dir.file("plan.json"), out = dir.file("sweep");
  std::ofstream(plan) << R"({"size": 32, "epochs": 1, "seeds": [1], "rule": "r",
    "configs": {"plain": {"augment": false, "threads": 2, "device": "cpu"}}})";
  const std::string script = sweep_command(dir, plan, out);
  auto sweep = testing::run_command(script);
  ASSERT_EQ(sweep.status, 0) << sweep.output;
  auto test = testing::run_command(script + " --test");
  ASSERT_EQ(test.status, 0) << test.output;
  ASSERT_TRUE(fs::exists(out + "/test.lock") && fs::exists(out + "/test.md")) << test.output;
  std::map<std::string, std::string> kept;  // OUT's files as the read left them
  for (const char* name : {"results.md", "results.csv", "test.md", "test.lock", "sweep.json",
                           "plan.json"})
    kept[name] = testing::read_text(out + "/" + name);
  const auto unchanged = [&] {
    for (const auto& [name, text] : kept)
      EXPECT_EQ(testing::read_text(out + "/" + name), text) << name;
  };
  const std::string val = out + "/plain/seed-1/val.json";
  std::ofstream(val, std::ios::trunc) << "{}";  // damaged after the read

  auto table = testing::run_command(script + " --table");
  EXPECT_EQ(table.status, 0) << table.output;
  EXPECT_NE(table.output.find("| plain (picked) | 1 |"), std::string::npos) << table.output;
  EXPECT_NE(table.output.find("this sweep is closed"), std::string::npos) << table.output;
  unchanged();
  auto again = testing::run_command(script + " --test");
  EXPECT_EQ(again.status, 1) << again.output;
  EXPECT_NE(again.output.find("read once"), std::string::npos) << again.output;
  unchanged();
  for (const char* more : {"", " --only plain"}) {
    auto train = testing::run_command(script + more);
    EXPECT_EQ(train.status, 1) << more << "\n" << train.output;
    EXPECT_NE(train.output.find("this sweep is closed: its test split was read (" + out +
                                "/test.lock, " + out + "/test.md)"),
              std::string::npos)
        << train.output;
    EXPECT_EQ(train.output.find(PNEUMO_BINARY " "), std::string::npos) << train.output;
    EXPECT_EQ(testing::read_text(val), "{}");
    unchanged();
  }
  fs::remove(out + "/test.lock");
  kept.erase("test.lock");
  auto unlocked = testing::run_command(script);
  EXPECT_EQ(unlocked.status, 1) << unlocked.output;
  EXPECT_NE(unlocked.output.find("this sweep is closed: its test split was read (" + out +
                                 "/test.md)"),
            std::string::npos)
      << unlocked.output;
  EXPECT_EQ(testing::read_text(val), "{}");
  unchanged();
}

// Every committed plan (configs/experiments/) names only flags and values `pneumo train` takes:
// a typo found when a GPU runs the plan costs that call. Each configuration, as a --config with
// data that does not exist, gets as far as the data (exit 1), never a usage error (exit 2).
TEST(Experiments, EveryCommittedPlansConfigurationsAreTrainFlags) {
  testing::TempDir dir;
  int configurations = 0;
  for (const auto& entry : fs::directory_iterator(PNEUMO_SOURCE_DIR "/configs/experiments")) {
    if (entry.path().extension() != ".json") continue;
    std::ifstream in(entry.path());
    const nlohmann::json plan = nlohmann::json::parse(in);
    ASSERT_TRUE(plan.contains("configs")) << entry.path();
    for (const auto& [name, flags] : plan["configs"].items()) {
      const std::string config = dir.file("config" + std::to_string(configurations) + ".json");
      std::ofstream(config) << flags.dump();
      auto result = testing::run_command(
          "'" PNEUMO_BINARY "' train --config " + config + " --data " + dir.file("no-data") +
          " --epochs 1 --out " + dir.file("run" + std::to_string(configurations)) + " 2>&1");
      EXPECT_EQ(result.status, 1) << entry.path().filename() << " " << name << "\n"
                                  << result.output;
      EXPECT_NE(result.output.find("no-data does not exist"), std::string::npos)
          << entry.path().filename() << " " << name << "\n" << result.output;
      ++configurations;
    }
  }
  EXPECT_GE(configurations, 40) << "the committed plans were not found";
}

}  // namespace
}  // namespace pneumo
