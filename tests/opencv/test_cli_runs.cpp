// A run directory's life through the `pneumo` binary on data/sample (CPU backend, 32 px): what
// --restore-best puts in model.safetensors (the best --checkpoint-monitor epoch, with or without
// early stopping, across a resume), which checkpoints a resume refuses (restored weights beside a
// later optimizer state; another --batch inside an epoch; an earlier checkpoint over its run's
// later work), a live run's folder refused to a second run, a resume typed inside
// RUN/checkpoints, a resume into a new --out carrying the history and the best checkpoint (or
// saying why it cannot), `evaluate --split val-carved` on other data refused, a failed write of
// metrics_val.json reported, a signal during validation, and which second signal ends a run at
// once (the other kind, or the same one a second later; not the same one forwarded).
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands/guards.hpp"
#include "cli/commands/run_folder.hpp"
#include "checkpoint_test_util.hpp"
#include "cli_test_util.hpp"
#include "pneumo/checkpoint.hpp"
#include "temp_dir.hpp"

namespace pneumo {
namespace {

namespace fs = std::filesystem;
using testing::pneumo_command;

const std::string kSample = PNEUMO_SOURCE_DIR "/data/sample";
const std::string kCommon = " --size 32 --device cpu --threads 2 ";
// On the sample at this learning rate validation accuracy stays 0.5, so with val_accuracy as the
// checkpoint monitor (a strict improvement saves) epoch 1 stays the best one.
const std::string kBestIsEpochOne = " --checkpoint-monitor val_accuracy --lr 0.01 ";

// The model's tensors of two files (not the optimizer's state, "optimizer.*") are the same.
::testing::AssertionResult same_weights(const std::string& a_path, const std::string& b_path) {
  return testing::same_tensors(a_path, b_path, "optimizer.");
}

class CliRuns : public ::testing::Test {
 protected:
  testing::CommandResult train(const std::string& run, const std::string& flags) {
    return pneumo_command("train --data " + kSample + " --out " + dir_.file(run) + kCommon + flags,
                          cache_);
  }
  testing::CommandResult resume(const std::string& checkpoint, const std::string& flags) {
    return pneumo_command("train --resume " + checkpoint + kCommon + flags, cache_);
  }
  std::string path(const std::string& name) { return dir_.file(name); }

  testing::TempDir dir_;
  const std::string cache_ = dir_.file("cache");
};

// Each epoch's val_auc from a run's history.jsonl, in order.
std::vector<double> history_val_auc(const std::string& run) {
  std::ifstream rows(run + "/history.jsonl");
  std::vector<double> auc;
  for (std::string row; std::getline(rows, row);)
    auc.push_back(nlohmann::json::parse(row).at("val_auc").get<double>());
  return auc;
}

// Without early stopping, --restore-best puts the best --checkpoint-monitor epoch's weights (those
// of checkpoints/best.safetensors) in model.safetensors and says so; last.safetensors keeps the
// final epoch. metrics_val.json scores the model written (epoch 1's weights), not the final
// epoch whose validation logits the run holds last.
TEST_F(CliRuns, RestoreBestFollowsTheCheckpointMonitorWithoutEarlyStopping) {
  auto trained = train("run", "--epochs 3 --restore-best" + kBestIsEpochOne);
  ASSERT_EQ(trained.status, 0) << trained.output;
  EXPECT_NE(trained.output.find("restored the weights of epoch 1 (the best val_accuracy"),
            std::string::npos)
      << trained.output;
  const std::string run = path("run");
  EXPECT_EQ(read_checkpoint_metadata(run + "/model.safetensors").weights_epoch, 1);
  EXPECT_EQ(read_checkpoint_metadata(run + "/checkpoints/best.safetensors").epoch, 1);
  EXPECT_TRUE(same_weights(run + "/model.safetensors", run + "/checkpoints/best.safetensors"));
  EXPECT_FALSE(same_weights(run + "/model.safetensors", run + "/checkpoints/last.safetensors"));
  const std::vector<double> auc = history_val_auc(run);
  ASSERT_EQ(auc.size(), 3u);
  ASSERT_NE(auc[0], auc[2]) << "the test needs the first and last epochs to score apart";
  const auto scored = nlohmann::json::parse(testing::read_text(run + "/metrics_val.json"));
  EXPECT_DOUBLE_EQ(scored.at("roc_auc").get<double>(), auc[0]);
  // Both say whose weights they score (the report's training table ends at epoch 3).
  EXPECT_EQ(scored.at("weights_epoch"), 1);
  EXPECT_EQ(scored.at("epochs_trained"), 3);
  EXPECT_NE(testing::read_text(run + "/report.md")
                .find("The model holds the weights of epoch 1 of 3, restored by --restore-best "
                      "(the best val_accuracy, 0.5)"),
            std::string::npos);
}

// The best epoch came before a resume: the resumed run reads its weights back from the run's
// best checkpoint and ends with the model an uninterrupted run writes. Resuming that model (the
// weights of epoch 1 beside the optimizer state of epoch 3) is refused.
TEST_F(CliRuns, RestoreBestSurvivesAResumeAndARestoredModelIsNotResumed) {
  auto straight = train("straight", "--epochs 3 --restore-best" + kBestIsEpochOne);
  ASSERT_EQ(straight.status, 0) << straight.output;
  auto part = train("part", "--epochs 2 --restore-best" + kBestIsEpochOne);
  ASSERT_EQ(part.status, 0) << part.output;
  auto resumed = resume(path("part") + "/checkpoints/last.safetensors", "--epochs 3");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("restored the weights of epoch 1"), std::string::npos)
      << resumed.output;
  EXPECT_EQ(read_checkpoint_metadata(path("part") + "/model.safetensors").weights_epoch, 1);
  EXPECT_TRUE(same_weights(path("part") + "/model.safetensors",
                           path("straight") + "/model.safetensors"));

  auto mixed = resume(path("straight") + "/model.safetensors", "--epochs 4");
  EXPECT_EQ(mixed.status, 1) << mixed.output;
  EXPECT_NE(mixed.output.find("holds the weights of epoch 1 restored at the end of a run of 3"),
            std::string::npos)
      << mixed.output;
}

// A monitored value that never improved (val_precision with no image called pneumonia: NaN) saves
// no best checkpoint; the run's resume goes on without one, as the uninterrupted run does.
TEST_F(CliRuns, RestoreBestResumesARunThatNeverHadABestEpoch) {
  const std::string never = " --lr 1e-6 --seed 2 --checkpoint-monitor val_precision --restore-best";
  auto part = train("part", "--epochs 2" + never);
  ASSERT_EQ(part.status, 0) << part.output;
  ASSERT_FALSE(fs::exists(path("part") + "/checkpoints/best.safetensors"))
      << "the test needs a monitored value that never improved\n" << part.output;
  auto resumed = resume(path("part") + "/checkpoints/last.safetensors", "--epochs 3");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("--restore-best: no epoch had a finite val_precision"),
            std::string::npos)
      << resumed.output;
  EXPECT_EQ(read_checkpoint_metadata(path("part") + "/model.safetensors").epoch, 3);
}

// --threads says how a run runs, not what it computes (ranks, resumes and machines may differ in
// it): one thread and two train the same bits. The filter gradient's per-worker partial sums
// moved 913,959 of 918,850 parameters apart in two epochs.
TEST_F(CliRuns, TheThreadCountDoesNotChangeTheModel) {
  const std::string flags = " --epochs 2 --device cpu --size 32 --threads ";
  auto one = pneumo_command("train --data " + kSample + " --out " + path("one") + flags + "1",
                            cache_);
  ASSERT_EQ(one.status, 0) << one.output;
  auto two = pneumo_command("train --data " + kSample + " --out " + path("two") + flags + "2",
                            cache_);
  ASSERT_EQ(two.status, 0) << two.output;
  EXPECT_TRUE(testing::same_tensors(path("one") + "/model.safetensors",
                                    path("two") + "/model.safetensors", ""));
}

// A run's folder is locked while the run writes it: a second run aimed at it (here the lock is
// held by this test, as a live run holds it during its first epoch) is refused and writes nothing;
// once the lock is free the folder is used.
TEST_F(CliRuns, ALiveRunsFolderIsRefusedToASecondRun) {
  const std::string run = path("run");
  fs::create_directories(run + "/checkpoints");
  const int fd = ::open((run + "/.lock").c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  auto refused = train("run", "--epochs 1");
  EXPECT_EQ(refused.status, 1) << refused.output;
  EXPECT_NE(refused.output.find("is in use: another pneumo train is writing it"),
            std::string::npos)
      << refused.output;
  EXPECT_FALSE(fs::exists(run + "/config.json"));
  // Past its first epoch a live run has a checkpoint: its folder is still said to be in use, not
  // to hold files that a --resume (which the lock refuses too) would continue.
  const std::string last = run + "/checkpoints/last.safetensors";
  std::ofstream(last) << "a live run's checkpoint";
  auto later = train("run", "--epochs 1");
  EXPECT_EQ(later.status, 1) << later.output;
  EXPECT_NE(later.output.find("is in use: another pneumo train is writing it"), std::string::npos)
      << later.output;
  EXPECT_EQ(later.output.find("--resume"), std::string::npos) << later.output;
  fs::remove(last);
  ::close(fd);
  auto trained = train("run", "--epochs 1");
  EXPECT_EQ(trained.status, 0) << trained.output;
  EXPECT_TRUE(fs::exists(run + "/model.safetensors"));
}

// A folder holding only a config.json pneumo did not leave (no lock, no checkpoints/) is another's:
// refused, its file kept, and no --resume suggested (there is nothing to resume). A run that
// failed inside its first epoch (history headers, no checkpoint) leaves its folder reusable.
TEST_F(CliRuns, OnlyAFailedStartsFolderIsReused) {
  const std::string mine = path("mine");
  fs::create_directories(mine);
  const std::string own = "{\"epochs\": 1, \"note\": \"hand-written, keep\"}";
  std::ofstream(mine + "/config.json") << own;
  auto refused = train("mine", "--epochs 1");
  EXPECT_EQ(refused.status, 1) << refused.output;
  EXPECT_NE(refused.output.find("already holds files; choose another --out"), std::string::npos)
      << refused.output;
  EXPECT_EQ(refused.output.find("--resume"), std::string::npos) << refused.output;
  EXPECT_EQ(testing::read_text(mine + "/config.json"), own);

  auto failed = train("nan", "--epochs 2 --inject-fault nan@2");
  ASSERT_EQ(failed.status, 1) << failed.output;
  ASSERT_TRUE(fs::exists(path("nan") + "/history.csv")) << "the case this test is about";
  // A process killed while writing its first checkpoint leaves the write's temporary file.
  std::ofstream(path("nan") + "/checkpoints/last.safetensors.tmp.k1LLed") << "partial";
  auto again = train("nan", "--epochs 1");
  EXPECT_EQ(again.status, 0) << again.output;
  EXPECT_FALSE(fs::exists(path("nan") + "/checkpoints/last.safetensors.tmp.k1LLed"));
  auto third = train("nan", "--epochs 1");
  EXPECT_EQ(third.status, 1) << third.output;
  EXPECT_NE(third.output.find("or continue it with --resume " + path("nan") +
                              "/checkpoints/last.safetensors"),
            std::string::npos)
      << third.output;
}

// A run stopped between writing its best checkpoint and its last (killed, or its last write
// failed) leaves a whole epoch in best.safetensors: not a failed start's folder (a new run there
// deleted it without a word); the refusal says how to continue, and that resume goes on.
TEST_F(CliRuns, ABestCheckpointThisFolderWroteIsNotAFailedStart) {
  ASSERT_EQ(train("run", "--epochs 1").status, 0);
  for (const char* name : {"model.safetensors", "metrics_val.json", "report.md", "loss.svg",
                           "accuracy.svg", "roc.svg", "checkpoints/last.safetensors"})
    fs::remove(path("run") + "/" + name);
  ASSERT_TRUE(fs::exists(path("run") + "/checkpoints/best.safetensors"));
  auto fresh = train("run", "--epochs 2");
  EXPECT_EQ(fresh.status, 1) << fresh.output;
  const std::string best = path("run") + "/checkpoints/best.safetensors";
  EXPECT_NE(fresh.output.find("or continue it with --resume " + best), std::string::npos)
      << fresh.output;
  ASSERT_TRUE(fs::exists(best)) << "a whole epoch deleted";
  auto resumed = resume(best, "--epochs 2");
  EXPECT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_EQ(read_checkpoint_metadata(path("run") + "/model.safetensors").epoch, 2);
}

// Resumed in its own folder from its last checkpoint, a run whose best checkpoint is of a later
// epoch (it stopped between writing the two) keeps it and says what that means: the history
// will not hold that epoch as it ran, and how to go on from it instead.
TEST_F(CliRuns, ABestCheckpointAheadOfTheResumedEpochIsNamed) {
  ASSERT_EQ(train("run", "--epochs 1").status, 0);
  const std::string last = path("run") + "/checkpoints/last.safetensors";
  const std::string best = path("run") + "/checkpoints/best.safetensors";
  fs::copy_file(last, path("last-1.safetensors"));
  ASSERT_EQ(resume(last, "--epochs 2").status, 0);
  // The state a stop between the two writes of epoch 2 leaves: best of epoch 2, last of epoch 1.
  fs::copy_file(last, best, fs::copy_options::overwrite_existing);
  fs::copy_file(path("last-1.safetensors"), last, fs::copy_options::overwrite_existing);
  auto resumed = resume(last, "--epochs 2");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find(best + " is of epoch 2, after the epoch resumed (1)"),
            std::string::npos)
      << resumed.output;
  EXPECT_NE(resumed.output.find("to go on from it instead, resume " + best), std::string::npos)
      << resumed.output;
  EXPECT_EQ(read_checkpoint_metadata(best).epoch, 2);
  EXPECT_EQ(read_checkpoint_metadata(last).epoch, 2);
}

// Mistakes in where flags come from are usage errors (status 2) that say what is wrong: a config
// value that is no scalar, a config naming a config, --resume twice, and a resumed run's relative
// --data read from another folder. --help is shown even beside a checkpoint that cannot be read.
TEST_F(CliRuns, ConfigAndResumeMistakesAreUsageErrors) {
  std::ofstream(path("null.json")) << "{\"epochs\": null}";
  auto null_value = train("a", "--config " + path("null.json"));
  EXPECT_EQ(null_value.status, 2) << null_value.output;
  EXPECT_NE(null_value.output.find("value of 'epochs' must be a string, number or boolean"),
            std::string::npos)
      << null_value.output;
  std::ofstream(path("nested.json")) << "{\"config\": \"other.json\"}";
  auto nested = train("a", "--config " + path("nested.json"));
  EXPECT_EQ(nested.status, 2) << nested.output;
  EXPECT_NE(nested.output.find("a configuration cannot name another"), std::string::npos)
      << nested.output;
  // "help" printed train's help and exited 0 without training: a script took it for a run.
  std::ofstream(path("help.json")) << "{\"help\": true}";
  auto help_key = train("a", "--config " + path("help.json"));
  EXPECT_EQ(help_key.status, 2) << help_key.output;
  EXPECT_NE(help_key.output.find("a configuration holds a run's settings, not \"help\""),
            std::string::npos)
      << help_key.output;
  // A whole number written as a float (12.0, 1.2e1) is the integer an INT flag takes; 1.5 is not.
  std::ofstream(path("float.json")) << "{\"epochs\": 1.0e0, \"batch\": 16.0}";
  auto whole = train("float", "--config " + path("float.json"));
  EXPECT_EQ(whole.status, 0) << whole.output;
  EXPECT_EQ(nlohmann::json::parse(testing::read_text(path("float") + "/config.json"))["batch"], 16);
  std::ofstream(path("half.json")) << "{\"epochs\": 1.5}";
  auto half = train("a", "--config " + path("half.json"));
  EXPECT_EQ(half.status, 2) << half.output;
  EXPECT_NE(half.output.find("--epochs takes an INT, got '1.5'"), std::string::npos) << half.output;
  // A "resume" in a configuration was dropped without a word (a fresh run trained instead); a
  // missing or broken file is bad usage as the rest (status 1 before).
  std::ofstream(path("resumes.json")) << "{\"resume\": \"x/checkpoints/last.safetensors\"}";
  auto resumes = train("a", "--config " + path("resumes.json"));
  EXPECT_EQ(resumes.status, 2) << resumes.output;
  EXPECT_NE(resumes.output.find("a configuration cannot continue a run (\"resume\")"),
            std::string::npos)
      << resumes.output;
  EXPECT_FALSE(fs::exists(path("a")));
  auto missing = train("a", "--config " + path("no-such.json"));
  EXPECT_EQ(missing.status, 2) << missing.output;
  // A FIFO waited for a writer for ever, /dev/zero was read until memory ran out.
  ASSERT_EQ(::mkfifo(path("fifo.json").c_str(), 0600), 0);
  for (const std::string& special : {path("fifo.json"), std::string("/dev/zero")}) {
    auto refused = train("a", "--config " + special);
    EXPECT_EQ(refused.status, 2) << refused.output;
    EXPECT_NE(refused.output.find("config file: cannot read " + special + ": not a regular file"),
              std::string::npos)
        << refused.output;
  }
  std::ofstream(path("broken.json")) << "{\"epochs\": ";
  auto broken = train("a", "--config " + path("broken.json"));
  EXPECT_EQ(broken.status, 2) << broken.output;
  EXPECT_NE(broken.output.find("is not valid JSON"), std::string::npos) << broken.output;

  // A run on a relative --data (a copy of the sample beside the run) records it as an absolute
  // path, so a resume from elsewhere finds it (it named ./data there, which does not exist).
  fs::copy(kSample, path("data"), fs::copy_options::recursive);
  auto relative = testing::run_command("cd '" + dir_.file("") + "' && PNEUMO_CACHE_DIR='" +
                                       cache_ + "' '" PNEUMO_BINARY "' train --data data --out run "
                                       "--epochs 1" + kCommon + " 2>&1");
  ASSERT_EQ(relative.status, 0) << relative.output;
  const nlohmann::json recorded = nlohmann::json::parse(testing::read_text(path("run") + "/config.json"));
  EXPECT_EQ(fs::path(recorded["data"].get<std::string>()), fs::path(path("data")).lexically_normal());
  const std::string last = path("run") + "/checkpoints/last.safetensors";
  EXPECT_EQ(fs::path(read_checkpoint_metadata(last).config["data"].get<std::string>()),
            fs::path(path("data")).lexically_normal());
  auto elsewhere = resume(last, "--epochs 2");  // the test's own folder: no ./data there
  EXPECT_EQ(elsewhere.status, 0) << elsewhere.output;
  // Data moved away since: named, without blaming a relative path.
  fs::rename(path("data"), path("data-moved"));
  auto moved = resume(last, "--epochs 3");
  EXPECT_EQ(moved.status, 2) << moved.output;
  EXPECT_NE(moved.output.find("the data the checkpoint records, --data " + path("data")),
            std::string::npos)
      << moved.output;
  EXPECT_EQ(moved.output.find("relative to the folder"), std::string::npos) << moved.output;
  fs::rename(path("data-moved"), path("data"));
  // A run's config.json as --config: its "out" (that run's folder) is not used; without --out the
  // run says so.
  auto reused = train("again", "--config " + path("run") + "/config.json --epochs 1");
  EXPECT_EQ(reused.status, 0) << reused.output;
  EXPECT_EQ(reused.output.find("\"out\" is not used"), std::string::npos) << "--out was given";
  EXPECT_TRUE(fs::exists(path("again") + "/model.safetensors"));
  auto unnamed = testing::run_command("cd '" + dir_.file("") + "' && PNEUMO_CACHE_DIR='" + cache_ +
                                      "' '" PNEUMO_BINARY "' train --config " + path("run") +
                                      "/config.json --data " + kSample + " --epochs 1" + kCommon +
                                      " 2>&1");
  EXPECT_EQ(unnamed.status, 0) << unnamed.output;
  EXPECT_NE(unnamed.output.find("config.json's \"out\" is not used"), std::string::npos)
      << unnamed.output;
  // A --config wins over the checkpoint's settings wherever it is typed: after --resume, and
  // before it (where the checkpoint's --epochs 2 used to win: "nothing to train").
  std::ofstream(path("data.json")) << "{\"data\": \"" + path("data") + "\"}";
  std::ofstream(path("epochs3.json")) << "{\"epochs\": 3}";
  auto configured = pneumo_command("train --config " + path("epochs3.json") + " --resume " +
                                       last + kCommon + " --config " + path("data.json"),
                                   cache_);
  EXPECT_EQ(configured.status, 0) << configured.output;
  EXPECT_EQ(read_checkpoint_metadata(last).epoch, 3) << configured.output;
  // Another tree (here the copy without some training images) is refused, not trained on.
  fs::copy(path("data"), path("fewer"), fs::copy_options::recursive);
  int removed = 0;
  for (const auto& entry : fs::directory_iterator(path("fewer") + "/train/NORMAL"))
    if (removed++ < 10) fs::remove(entry.path());
  auto other = resume(last, "--epochs 4 --data " + path("fewer"));
  EXPECT_EQ(other.status, 1) << other.output;
  EXPECT_NE(other.output.find("the training and validation images differ from those the run of " +
                              last + " had (its carved_split_crc32): --data " + path("fewer") +
                              " holds other images than it did"),
            std::string::npos)
      << other.output;
  // RMSprop's mean squares belong to the epsilon placement they were updated with.
  auto keras = resume(last, "--epochs 4 --data " + path("data") + " --rmsprop-epsilon inside");
  EXPECT_EQ(keras.status, 1) << keras.output;
  EXPECT_NE(keras.output.find("was trained with --rmsprop-epsilon outside; this run asks for "
                              "inside"),
            std::string::npos)
      << keras.output;

  // A checkpoint whose config metadata is JSON but no object is damaged (status 1, as its other
  // damaged metadata), not a usage mistake (it was 2).
  CheckpointData listed = load_checkpoint(last);
  listed.metadata.config = nlohmann::json::array();
  save_checkpoint(path("listed.safetensors"), listed);
  auto damaged = resume(path("listed.safetensors"), "--epochs 4 --data " + path("data"));
  EXPECT_EQ(damaged.status, 1) << damaged.output;
  EXPECT_NE(damaged.output.find("its config metadata is not a JSON object"), std::string::npos)
      << damaged.output;

  auto twice = resume(last, "--resume " + last + " --epochs 3");
  EXPECT_EQ(twice.status, 2) << twice.output;
  EXPECT_NE(twice.output.find("--resume is given twice"), std::string::npos) << twice.output;
  auto help = resume(path("missing.safetensors"), "--help");
  EXPECT_EQ(help.status, 0) << help.output;
  EXPECT_NE(help.output.find("--resume"), std::string::npos) << help.output;
}

// An --out that is a link to nowhere was refused with "File exists"; it is named as what it is,
// for train and explain, and left as it was.
TEST_F(CliRuns, AnOutThatIsABrokenLinkIsNamed) {
  fs::create_symlink(path("nowhere"), path("link"));
  auto run = train("link", "--epochs 1");
  EXPECT_EQ(run.status, 1) << run.output;
  EXPECT_NE(run.output.find("run directory '" + path("link") + "' is a broken link"),
            std::string::npos)
      << run.output;
  ASSERT_EQ(train("real", "--epochs 1").status, 0);
  auto maps = pneumo_command("explain --device cpu --model " + path("real") +
                                 "/model.safetensors --out " + path("link") + " " + kSample +
                                 "/test/NORMAL",
                             cache_);
  EXPECT_EQ(maps.status, 1) << maps.output;
  EXPECT_NE(maps.output.find("'" + path("link") + "' is a broken link"), std::string::npos)
      << maps.output;
  EXPECT_TRUE(fs::is_symlink(fs::symlink_status(path("link"))));
  EXPECT_FALSE(fs::exists(path("nowhere")));
}

// An image tree's automatic cache whose meta.json is damaged: said to be prepared again, then
// refused as "not a pneumo cache" (naming an --out never typed), so every run on the tree
// stopped. It is pneumo's own folder: replaced, while it holds a cache's files only.
TEST_F(CliRuns, ATreeCacheWithDamagedMetadataIsPreparedAgain) {
  ASSERT_EQ(train("first", "--epochs 1").status, 0);
  std::string cache;
  for (const auto& entry : fs::directory_iterator(cache_))
    if (entry.is_directory() && entry.path().filename().string().rfind("tree-", 0) == 0)
      cache = entry.path().string();
  ASSERT_FALSE(cache.empty()) << "no tree cache in " << cache_;
  const std::string meta = testing::read_text(cache + "/meta.json");
  std::ofstream(cache + "/meta.json", std::ios::trunc) << meta.substr(0, meta.size() / 2);
  auto again = train("again", "--epochs 1");
  EXPECT_EQ(again.status, 0) << again.output;
  EXPECT_NE(again.output.find("has unreadable metadata; preparing again"), std::string::npos)
      << again.output;
  EXPECT_EQ(testing::read_text(cache + "/meta.json").size(), meta.size());
  // A stranger's file in it: not pneumo's to delete, so still refused.
  std::ofstream(cache + "/meta.json", std::ios::trunc) << "{";
  std::ofstream(cache + "/notes.txt") << "mine";
  auto kept = train("kept", "--epochs 1");
  EXPECT_EQ(kept.status, 1) << kept.output;
  EXPECT_NE(kept.output.find("it holds notes.txt, which no cache holds); refusing to replace it, "
                             "which would delete what it holds: move what it holds elsewhere"),
            std::string::npos)
      << kept.output;
  EXPECT_EQ(testing::read_text(cache + "/notes.txt"), "mine");
}

// Two runs on one image tree with no cache yet (a sweep's jobs) prepared it twice, and the
// second's rename onto the first's cache failed. A run whose cache another process is preparing
// (here: whose lock this test holds) waits for it, then uses the cache it finds.
TEST_F(CliRuns, ARunWaitsForAnotherPreparingItsCache) {
  ASSERT_EQ(train("first", "--epochs 1").status, 0);
  std::string name;
  for (const auto& entry : fs::directory_iterator(cache_))
    if (entry.is_directory() && entry.path().filename().string().rfind("tree-", 0) == 0)
      name = entry.path().filename().string();
  ASSERT_FALSE(name.empty()) << "no tree cache in " << cache_;
  fs::remove_all(cache_ + "/" + name);
  // Not inherited by the run: a copy of the locked description would keep the lock in the child.
  const int fd =
      ::open((cache_ + "/." + name + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  testing::BackgroundPneumo second({"train", "--data", kSample, "--out", path("second"),
                                    "--epochs", "1", "--size", "32", "--device", "cpu",
                                    "--threads", "2"},
                                   cache_, path("second.log"));
  ASSERT_TRUE(second.started());
  const bool waited =
      second.wait_for_output("waiting for another pneumo", std::chrono::seconds(60));
  ::close(fd);  // the other "prepare" is done (it left no cache: the run prepares its own)
  const auto result = second.wait(std::chrono::seconds(120));
  EXPECT_TRUE(waited) << result.output;
  EXPECT_EQ(result.status, 0) << result.output;
  EXPECT_TRUE(fs::exists(cache_ + "/" + name + "/meta.json")) << result.output;
}

// A resume into a new --out that fails before its first checkpoint (after the resumed run's
// history and best checkpoint were carried over) leaves a folder the same resume, or a new run,
// can use again.
TEST_F(CliRuns, AFailedResumeIntoANewFolderCanBeRetried) {
  ASSERT_EQ(train("run", "--epochs 1").status, 0);
  const std::string last = path("run") + "/checkpoints/last.safetensors";
  auto failed = resume(last, "--epochs 2 --out " + path("b") + " --inject-fault nan@5");
  ASSERT_EQ(failed.status, 1) << failed.output;
  ASSERT_TRUE(fs::exists(path("b") + "/checkpoints/best.safetensors")) << "the case tested";
  auto again = resume(last, "--epochs 2 --out " + path("b"));
  EXPECT_EQ(again.status, 0) << again.output;
  EXPECT_EQ(read_checkpoint_metadata(path("b") + "/model.safetensors").epoch, 2);

  auto failed_too = resume(last, "--epochs 2 --out " + path("c") + " --inject-fault nan@5");
  ASSERT_EQ(failed_too.status, 1) << failed_too.output;
  auto fresh = train("c", "--epochs 1");
  EXPECT_EQ(fresh.status, 0) << fresh.output;
  EXPECT_EQ(read_checkpoint_metadata(path("c") + "/checkpoints/best.safetensors").epoch, 1);
  EXPECT_EQ(history_val_auc(path("c")).size(), 1u) << "the failed resume's rows are gone";
}

// A run stopped inside an epoch resumes only with the flags that fixed that epoch's image order.
TEST_F(CliRuns, ResumingInsideAnEpochKeepsTheBatch) {
  auto stopped = train("run", "--epochs 2 --batch 16 --inject-fault sigint@9");
  ASSERT_EQ(stopped.status, 130) << stopped.output;
  const std::string last = path("run") + "/checkpoints/last.safetensors";
  ASSERT_GT(read_checkpoint_metadata(last).epoch_step, 0);
  auto other_batch = resume(last, "--batch 8");
  EXPECT_EQ(other_batch.status, 1) << other_batch.output;
  EXPECT_NE(other_batch.output.find("with --batch 16; this run asks for --batch 8"),
            std::string::npos)
      << other_batch.output;
  EXPECT_FALSE(fs::exists(path("run") + "/model.safetensors"));
  // Scored as it stands, the checkpoint is named for the steps it holds, not for epoch 0.
  auto scored = pneumo_command("evaluate --model " + last + " --data " + kSample +
                                   " --split val-carved --device cpu",
                               cache_);
  EXPECT_EQ(scored.status, 0) << scored.output;
  EXPECT_NE(scored.output.find("(epoch 1 and 2 steps of epoch 2, interrupted, threshold"),
            std::string::npos)
      << scored.output;
  // The same carve spelled otherwise (the default 0.15) is the same --val-split.
  auto same = resume(last, "--val-split 0.150");
  EXPECT_EQ(same.status, 0) << same.output;
  // Stopped inside the first epoch: no "epoch 0" (epochs count from 1).
  ASSERT_EQ(train("early", "--epochs 2 --batch 16 --inject-fault sigint@2").status, 130);
  auto early = pneumo_command("evaluate --model " + path("early") +
                                  "/checkpoints/last.safetensors --data " + kSample +
                                  " --split val-carved --device cpu",
                              cache_);
  EXPECT_NE(early.output.find("(2 steps of epoch 1, interrupted, threshold"), std::string::npos)
      << early.output;
  // A new --lr there: its history row gives the new rate, so the line says which steps ran at
  // the old one.
  auto faster = resume(path("early") + "/checkpoints/last.safetensors", "--lr 0.002");
  EXPECT_EQ(faster.status, 0) << faster.output;
  EXPECT_NE(faster.output.find("; the first 2 steps of epoch 1 ran at 0.001, and its history row "
                               "gives the new rate"),
            std::string::npos)
      << faster.output;
}

// A signal during an epoch's validation stops the run after that epoch's checkpoint; during the
// last epoch's, before the model is written (it used to be ignored: the run went on to exit 0).
// Resuming a run stopped there only writes its model, once.
TEST_F(CliRuns, ASignalDuringValidationStopsTheRunAndItsResumeWritesTheModel) {
  auto first = train("first", "--epochs 2 --inject-fault sigint@val1");
  ASSERT_EQ(first.status, 130) << first.output;
  EXPECT_NE(first.output.find("interrupted by SIGINT after epoch 1;"), std::string::npos)
      << first.output;
  EXPECT_EQ(read_checkpoint_metadata(path("first") + "/checkpoints/last.safetensors").epoch, 1);

  auto stopped = train("run", "--epochs 2 --inject-fault sigterm@val2");
  ASSERT_EQ(stopped.status, 143) << stopped.output;
  EXPECT_NE(stopped.output.find("pneumo: stopping at the next point where a checkpoint can be "
                                "written (another signal ends the run at once"),
            std::string::npos)
      << "said as the signal comes: " << stopped.output;
  EXPECT_NE(stopped.output.find("every epoch is trained, the model is not written yet; write it "
                                "with: " PNEUMO_BINARY " train --resume"),
            std::string::npos)
      << stopped.output;
  EXPECT_FALSE(fs::exists(path("run") + "/model.safetensors"));
  EXPECT_FALSE(fs::exists(path("run") + "/metrics_val.json"));
  const std::string last = path("run") + "/checkpoints/last.safetensors";
  ASSERT_EQ(read_checkpoint_metadata(last).epoch, 2);

  auto finished = resume(last, "");
  ASSERT_EQ(finished.status, 0) << finished.output;
  EXPECT_NE(finished.output.find("its 2 epochs are trained, its run stopped before writing the "
                                 "model; writing it"),
            std::string::npos)
      << finished.output;
  EXPECT_EQ(read_checkpoint_metadata(path("run") + "/model.safetensors").epoch, 2);
  EXPECT_TRUE(same_weights(last, path("run") + "/model.safetensors"));
  EXPECT_EQ(history_val_auc(path("run")).size(), 2u) << "no epoch trained again";
  EXPECT_TRUE(fs::exists(path("run") + "/metrics_val.json"));

  auto again = resume(last, "");
  EXPECT_EQ(again.status, 1) << again.output;
  EXPECT_NE(again.output.find("nothing to train"), std::string::npos) << again.output;

  // A run that early stopping ends at epoch 2 of 5: a signal in that validation lets it finish (a
  // resume would train the epochs early stopping left out).
  auto early = train("early", "--epochs 5 --early-stopping-patience 1 --early-stopping-monitor "
                              "val_accuracy --lr 0.01 --inject-fault sigint@val2");
  EXPECT_EQ(early.status, 0) << early.output;
  EXPECT_NE(early.output.find("came as the run was finishing; it finished"), std::string::npos)
      << early.output;
  EXPECT_TRUE(fs::exists(path("early") + "/model.safetensors"));
}

// evaluate's and bench kernels' output files replace earlier outputs, never a run's state: a
// checkpoint anywhere, a run directory's files, a cache's (--scores onto last.safetensors made
// the run impossible to resume).
TEST_F(CliRuns, OutputFilesNeverReplaceARunsState) {
  ASSERT_EQ(train("run", "--epochs 1").status, 0);
  const std::string last = path("run") + "/checkpoints/last.safetensors";
  fs::copy_file(last, path("copy.safetensors"));
  const std::string before = testing::read_text(last);
  const std::string history = testing::read_text(path("run") + "/history.csv");
  const std::string metrics = testing::read_text(path("run") + "/metrics_val.json");
  const std::string evaluate = "evaluate --model " + path("run") + "/model.safetensors --data " +
                               kSample + " --split val-carved --device cpu ";
  struct Case {
    std::string command, expected;
  };
  const Case cases[] = {
      {evaluate + "--scores " + last, "is a model or checkpoint (safetensors)"},
      {evaluate + "--json " + path("run") + "/metrics_val.json", "is a file of the run directory"},
      {evaluate + "--json " + path("run") + "/checkpoints/notes.json",
       "is a file of the run directory"},
      {"bench kernels --device cpu --quick --ops loss --threads 1 --json " +
           path("copy.safetensors"),
       "is a model or checkpoint"},
      {evaluate + "--scores " + path("link.csv"), "is a file of the run directory"},  // its target
  };
  std::ofstream(path("run") + "/checkpoints/notes.json") << "{}";
  fs::create_symlink(path("run") + "/history.csv", path("link.csv"));
  for (const Case& c : cases) {
    auto refused = pneumo_command(c.command, cache_);
    EXPECT_EQ(refused.status, 2) << c.command << "\n" << refused.output;
    EXPECT_NE(refused.output.find(c.expected), std::string::npos) << refused.output;
  }
  EXPECT_EQ(testing::read_text(last), before);
  EXPECT_EQ(testing::read_text(path("run") + "/metrics_val.json"), metrics);
  EXPECT_TRUE(same_weights(last, path("copy.safetensors")));
  EXPECT_EQ(testing::read_text(path("run") + "/history.csv"), history) << "the link's target";
  // Nor an image, nor where the data read would take it in (a copy of the sample here): an
  // X-ray replaced by CSV was lost; a file in a split folder is among the images, a gallery's
  // PNGs anywhere in the tree are read by a predict of it, anything in a cache keeps `prepare`
  // from refreshing it.
  const std::string data = path("data");
  fs::copy(kSample, data, fs::copy_options::recursive);
  const std::string xray = (*fs::directory_iterator(data + "/test/NORMAL")).path().string();
  const std::string xray_bytes = testing::read_text(xray);
  const std::string on_copy = "evaluate --model " + path("run") + "/model.safetensors --data " + data +
                              " --split test --device cpu ";
  auto prepared = pneumo_command("prepare --data " + kSample + " --size 32 --out " + path("c32"), cache_);
  ASSERT_EQ(prepared.status, 0) << prepared.output;
  const std::string in_split = "a split folder of the image tree " + data;
  for (const Case& c :
       {Case{on_copy + "--scores " + xray, "exists and is an image"},
        Case{"bench kernels --device cpu --quick --ops loss --threads 1 --csv " + xray,
             "exists and is an image"},
        Case{on_copy + "--json " + data + "/test/metrics.json", in_split},
        Case{on_copy + "--gallery 1 --gallery-out " + data + "/gallery",
             "would be read as X-rays by a predict or explain of it"},
        Case{"train --data " + data + " --out " + data + "/train/NORMAL/run --epochs 1" + kCommon,
             "--out " + data + "/train/NORMAL/run lies inside " + data + "/train, " + in_split},
        Case{"train --data " + path("c32") + " --out " + path("c32") + "/run --epochs 1" + kCommon,
             "--out " + path("c32") + "/run lies inside the prepared cache " + path("c32")},
        Case{"evaluate --model " + path("run") + "/model.safetensors --data " + path("c32") +
                 " --split test --device cpu --json " + path("c32") + "/m.json",
             "lies inside the prepared cache"}}) {
    auto refused = pneumo_command(c.command, cache_);
    EXPECT_EQ(refused.status, 2) << c.command << "\n" << refused.output;
    EXPECT_NE(refused.output.find(c.expected), std::string::npos) << refused.output;
  }
  EXPECT_EQ(testing::read_text(xray), xray_bytes);
  for (const char* made : {"/test/metrics.json", "/gallery", "/train/NORMAL/run"})
    EXPECT_FALSE(fs::exists(data + made)) << made;
  EXPECT_FALSE(fs::exists(path("c32") + "/run"));
  EXPECT_FALSE(fs::exists(path("c32") + "/m.json"));
  // The default run folder (runs/ where the command starts) is checked before it is made.
  auto in_cache = testing::run_command("cd '" + path("c32") + "' && PNEUMO_CACHE_DIR='" + cache_ +
                                       "' '" PNEUMO_BINARY "' train --data . --epochs 1" + kCommon);
  EXPECT_EQ(in_cache.status, 2) << in_cache.output;
  EXPECT_NE(in_cache.output.find("the default run folder runs/ lies inside the prepared cache"),
            std::string::npos) << in_cache.output;
  EXPECT_FALSE(fs::exists(path("c32") + "/runs"));
  // Beside a tree's splits nothing reads a JSON or CSV: written.
  auto beside = pneumo_command(on_copy + "--scores " + data + "/scores.csv", cache_);
  EXPECT_EQ(beside.status, 0) << beside.output;
  EXPECT_TRUE(fs::exists(data + "/scores.csv"));
  // An earlier output is replaced, also one of the user's own in a run directory; an empty file
  // is written; any other file is a user's, refused before anything is read (a notes.txt given
  // as --scores was replaced by CSV, exit 0).
  const std::string own_json = path("run") + "/test_metrics.json";
  { std::ofstream empty(own_json); }  // an empty file
  auto own = pneumo_command(evaluate + "--json " + own_json + " --scores " + path("scores.csv"),
                            cache_);
  EXPECT_EQ(own.status, 0) << own.output;
  const std::string first_json = testing::read_text(own_json);
  EXPECT_EQ(nlohmann::json::parse(first_json)["split"], "val-carved");
  std::ofstream(own_json, std::ios::app) << " ";  // an earlier output, not byte for byte
  auto again = pneumo_command(evaluate + "--json " + own_json + " --scores " + path("scores.csv"),
                              cache_);
  EXPECT_EQ(again.status, 0) << again.output;
  EXPECT_EQ(testing::read_text(own_json), first_json);
  EXPECT_EQ(testing::read_text(path("scores.csv")).rfind("index,file,label,", 0), 0u);
  std::ofstream(path("notes.txt")) << "old\n";
  std::ofstream(path("other.json")) << "{\"split\": \"mine\"}";
  std::ofstream(path("rows.csv")) << "a,b\n";
  std::ofstream(path("rows.jsonl")) << "{\"op\": \"mine\"}\n";
  for (const Case& c :
       {Case{evaluate + "--scores " + path("notes.txt"),
             "--scores " + path("notes.txt") + " exists and is not evaluate's scores CSV"},
        Case{evaluate + "--json " + path("other.json"),
             "--json " + path("other.json") + " exists and is not evaluate's metrics JSON"},
        Case{evaluate + "--json " + path("notes.txt"), "is not evaluate's metrics JSON"},
        Case{"bench kernels --device cpu --quick --ops loss --threads 1 --csv " + path("rows.csv"),
             "--csv " + path("rows.csv") + " exists and is not bench kernels' CSV"},
        Case{"bench kernels --device cpu --quick --ops loss --threads 1 --json " +
                 path("rows.jsonl"),
             "exists and is not bench kernels' JSON rows"}}) {
    auto refused = pneumo_command(c.command, cache_);
    EXPECT_EQ(refused.status, 2) << c.command << "\n" << refused.output;
    EXPECT_NE(refused.output.find(c.expected), std::string::npos) << refused.output;
    EXPECT_NE(refused.output.find("give a new file, or remove this one first"), std::string::npos)
        << refused.output;
  }
  EXPECT_EQ(testing::read_text(path("notes.txt")), "old\n");
  EXPECT_EQ(testing::read_text(path("other.json")), "{\"split\": \"mine\"}");
  EXPECT_EQ(testing::read_text(path("rows.csv")), "a,b\n");
  // bench kernels replaces its own earlier outputs.
  fs::remove(path("rows.csv"));
  fs::remove(path("rows.jsonl"));
  const std::string bench = "bench kernels --device cpu --quick --ops loss --threads 1 --csv " +
                            path("rows.csv") + " --json " + path("rows.jsonl");
  for (int time = 0; time < 2; ++time) {
    auto benched = pneumo_command(bench, cache_);
    EXPECT_EQ(benched.status, 0) << benched.output;
  }
  EXPECT_EQ(testing::read_text(path("rows.csv")).rfind("platform,device,op,", 0), 0u);
}

// A checkpoint write killed half way leaves its temporary file (checkpoints/*.tmp.XXXXXX); the
// next start in the folder, a resume as well as a fresh run, removes it.
TEST_F(CliRuns, AResumeRemovesAKilledWritesTemporaryCheckpoint) {
  ASSERT_EQ(train("run", "--epochs 1").status, 0);
  const std::string temporary = path("run") + "/checkpoints/last.safetensors.tmp.AbC123";
  const std::string model_temporary = path("run") + "/model.safetensors.tmp.XyZ987";
  std::ofstream(temporary) << "half a checkpoint";
  std::ofstream(model_temporary) << "half a model";
  auto resumed = resume(path("run") + "/checkpoints/last.safetensors", "--epochs 2");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_FALSE(fs::exists(temporary));
  EXPECT_FALSE(fs::exists(model_temporary));
  EXPECT_TRUE(fs::exists(path("run") + "/model.safetensors"));
}

// Without --out a run takes runs/<date>-<time>, or -2, -3, ... after it when that is taken (two
// runs started in the same second: the second was refused, "choose another --out").
TEST_F(CliRuns, ADefaultRunFolderThatIsTakenGetsANumber) {
  fs::create_directories(path("here/runs"));
  // Every name the next ten minutes could give is taken by another run's files (a loaded machine
  // under sanitizers starts slowly).
  const std::time_t now = std::time(nullptr);
  for (int s = 0; s < 600; ++s) {
    const std::time_t t = now + s;
    std::tm local{};
    localtime_r(&t, &local);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &local);
    fs::create_directories(path("here/runs/") + stamp);
    std::ofstream(path("here/runs/") + stamp + "/config.json") << "{}";
  }
  auto trained = testing::run_command("cd '" + path("here") + "' && PNEUMO_CACHE_DIR='" + cache_ +
                                      "' '" PNEUMO_BINARY "' train --data " + kSample +
                                      " --epochs 1" + kCommon + " 2>&1");
  ASSERT_EQ(trained.status, 0) << trained.output;
  int numbered = 0;
  for (const auto& entry : fs::directory_iterator(path("here/runs"))) {
    const std::string name = entry.path().filename().string();
    if (fs::exists(entry.path() / "model.safetensors")) {
      ++numbered;
      EXPECT_EQ(name.substr(name.size() - 2), "-2") << name;
    }
  }
  EXPECT_EQ(numbered, 1);
}

// A run without --out that stops before its first checkpoint (here --drop-last with no whole
// batch, refused once the data is read) removes the runs/<date>-<time> folder it claimed: no
// later run reuses that name. A given --out keeps its failed start, which the next run reuses;
// a claimed folder holding anything else (a file a user put there meanwhile) is kept whole.
TEST_F(CliRuns, ADefaultRunFolderOfAFailedStartIsRemoved) {
  fs::create_directories(path("here"));
  const std::string from_here = "cd '" + path("here") + "' && PNEUMO_CACHE_DIR='" + cache_ +
                                "' '" PNEUMO_BINARY "' train --data " + kSample +
                                " --epochs 1 --batch 200 --drop-last" + kCommon + " 2>&1";
  auto refused = testing::run_command(from_here);
  EXPECT_EQ(refused.status, 2) << refused.output;
  EXPECT_NE(refused.output.find("--drop-last"), std::string::npos) << refused.output;
  ASSERT_TRUE(fs::is_directory(path("here/runs"))) << refused.output;
  EXPECT_TRUE(fs::is_empty(path("here/runs")))
      << fs::directory_iterator(path("here/runs"))->path().string() << " was left";
  // A failure in the first epoch (its history files begun, no row in them) too.
  const std::string nan_run = "cd '" + path("here") + "' && PNEUMO_CACHE_DIR='" + cache_ + "' '"
                              PNEUMO_BINARY "' train --data " + kSample +
                              " --epochs 1 --inject-fault nan@1" + kCommon + " 2>&1";
  auto failed = testing::run_command(nan_run);
  EXPECT_EQ(failed.status, 1) << failed.output;
  EXPECT_NE(failed.output.find("no checkpoint was written yet"), std::string::npos)
      << failed.output;
  EXPECT_TRUE(fs::is_empty(path("here/runs")))
      << fs::directory_iterator(path("here/runs"))->path().string() << " was left";
  auto given = train("given", "--epochs 1 --batch 200 --drop-last");
  EXPECT_EQ(given.status, 2) << given.output;
  EXPECT_TRUE(cli::holds_only_a_failed_start(path("given"))) << given.output;
  // What the removal looks at: only .lock, config.json, an empty checkpoints/ and history files
  // without a row go.
  const std::string claimed = path("claimed");
  fs::create_directories(claimed + "/checkpoints");
  std::ofstream(claimed + "/.lock") << "";
  std::ofstream(claimed + "/config.json") << "{}";
  std::ofstream(claimed + "/history.jsonl") << "{\"epoch\": 0}\n";
  cli::remove_unused_run_dir(claimed);
  EXPECT_TRUE(fs::exists(claimed + "/history.jsonl")) << "a history row was removed";
  std::ofstream(claimed + "/history.jsonl").close();  // emptied
  std::ofstream(claimed + "/notes.txt") << "mine\n";
  cli::remove_unused_run_dir(claimed);
  EXPECT_EQ(testing::read_text(claimed + "/notes.txt"), "mine\n");
  EXPECT_TRUE(fs::exists(claimed + "/config.json"));
  fs::remove(claimed + "/notes.txt");
  std::ofstream(claimed + "/checkpoints/last.safetensors") << "x";
  cli::remove_unused_run_dir(claimed);
  EXPECT_TRUE(fs::exists(claimed + "/checkpoints/last.safetensors"));
  fs::remove(claimed + "/checkpoints/last.safetensors");
  cli::remove_unused_run_dir(claimed);
  EXPECT_FALSE(fs::exists(claimed));
  // A folder where a start writes a file is not a start's: kept, and not taken for a failed
  // start by a run given it.
  fs::create_directories(claimed + "/checkpoints");
  std::ofstream(claimed + "/.lock") << "";
  fs::create_directories(claimed + "/config.json");
  EXPECT_FALSE(cli::holds_only_a_failed_start(claimed));
  cli::remove_unused_run_dir(claimed);
  EXPECT_TRUE(fs::is_directory(claimed + "/config.json"));
  fs::remove(claimed + "/config.json");
  EXPECT_TRUE(cli::holds_only_a_failed_start(claimed));
  cli::remove_unused_run_dir(claimed);
  EXPECT_FALSE(fs::exists(claimed));
}

// An --out the file system cannot hold (a name over 255 bytes) is named with the system's reason,
// not reported as an internal error.
TEST_F(CliRuns, AnOutTheFileSystemRefusesIsNamed) {
  auto refused = train(std::string(300, 'y'), "--epochs 1");
  EXPECT_EQ(refused.status, 1) << refused.output;
  EXPECT_NE(refused.output.find("File name too long; choose another --out"), std::string::npos)
      << refused.output;
  EXPECT_EQ(refused.output.find("internal error"), std::string::npos) << refused.output;
}

// A learning rate that is no positive float32 (1e308 is infinite there) is not a state to resume;
// a run resumed into a new --out that diverges before writing names the checkpoint it resumed as
// the last good one (it said "no checkpoint was written yet").
TEST_F(CliRuns, AResumedRunNamesItsStartingCheckpointAndRefusesAnImpossibleRate) {
  ASSERT_EQ(train("run", "--epochs 1").status, 0);
  const std::string last = path("run") + "/checkpoints/last.safetensors";
  CheckpointData data = load_checkpoint(last);
  data.metadata.learning_rate = 1e308;
  save_checkpoint(path("huge.safetensors"), data);
  auto huge = resume(path("huge.safetensors"), "--epochs 2 --out " + path("huge"));
  EXPECT_EQ(huge.status, 1) << huge.output;
  EXPECT_NE(huge.output.find("not a positive float32 number"), std::string::npos) << huge.output;

  // Weights that give non-finite validation logits: the epoch is not written, and the message
  // is the divergence's, not a metric's complaint about its input.
  auto in_validation = resume(last, "--epochs 2 --inject-fault nan@val2 --out " + path("val"));
  EXPECT_EQ(in_validation.status, 1) << in_validation.output;
  EXPECT_NE(in_validation.output.find("the model diverged in epoch 2: its validation logit 0 is "
                                      "nan; nothing was written; the last good checkpoint is " +
                                      last + ", which this run resumed"),
            std::string::npos)
      << in_validation.output;
  EXPECT_FALSE(fs::exists(path("val") + "/checkpoints/last.safetensors"));

  auto diverged = resume(last, "--epochs 2 --lr 1e30 --out " + path("next"));
  EXPECT_EQ(diverged.status, 1) << diverged.output;
  EXPECT_NE(diverged.output.find("the last good checkpoint is " + last +
                                 ", which this run resumed (after epoch 1)"),
            std::string::npos)
      << diverged.output;
}

// `--resume last.safetensors` typed inside RUN/checkpoints continues RUN, not a new folder there.
TEST_F(CliRuns, AResumeTypedInsideTheCheckpointsFolderContinuesTheRun) {
  ASSERT_EQ(train("run", "--epochs 1").status, 0);
  auto resumed = testing::run_command("cd '" + path("run") + "/checkpoints' && PNEUMO_CACHE_DIR='" +
                                      cache_ + "' '" PNEUMO_BINARY "' train --resume "
                                      "last.safetensors --epochs 2" + kCommon + " 2>&1");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_FALSE(fs::exists(path("run") + "/checkpoints/runs")) << resumed.output;
  EXPECT_EQ(read_checkpoint_metadata(path("run") + "/model.safetensors").epoch, 2);
}

// A checkpoint kept outside its run, in a folder pneumo did not train in (a project's own
// checkpoints/ beside another tool's config.json), is resumed into a new run folder: that folder's
// files stay as they were (it was taken for the run directory, and its config.json, report and
// history rewritten, its draft.tex.tmp.abc123 deleted).
TEST_F(CliRuns, ACheckpointKeptInAStrangersFolderResumesIntoANewRunFolder) {
  ASSERT_EQ(train("run", "--epochs 1").status, 0);
  const std::string project = path("project");
  fs::create_directories(project + "/checkpoints");
  const std::map<std::string, std::string> files{{"config.json", "{\"tool\": \"another\"}\n"},
                                                 {"report.md", "notes\n"},
                                                 {"history.csv", "keep\n"},
                                                 {"draft.tex.tmp.abc123", "a draft\n"}};
  for (const auto& [name, text] : files) std::ofstream(project + "/" + name) << text;
  const std::string kept = project + "/checkpoints/run-epoch1.safetensors";
  fs::copy_file(path("run") + "/checkpoints/last.safetensors", kept);
  auto resumed = testing::run_command("cd '" + path("") + "' && PNEUMO_CACHE_DIR='" + cache_ +
                                      "' '" PNEUMO_BINARY "' train --resume '" + kept +
                                      "' --epochs 2" + kCommon + " 2>&1");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  for (const auto& [name, text] : files)
    EXPECT_EQ(testing::read_text(project + "/" + name), text) << name;
  for (const char* made : {".lock", "model.safetensors", "checkpoints/last.safetensors"})
    EXPECT_FALSE(fs::exists(project + "/" + made)) << made;
  EXPECT_TRUE(fs::is_directory(path("runs"))) << "a new run folder under runs/\n" << resumed.output;
}

// A checkpoint without a run directory resumed into an --out where another run failed to start:
// that run's history rows and best checkpoint go (they stood beside this run's: rows 0-2 of one
// run, then this run's, and `best` another run's weights).
TEST_F(CliRuns, AResumeIntoAFailedStartsFolderDropsThatRunsHistoryAndBest) {
  ASSERT_EQ(train("other", "--epochs 1").status, 0);
  ASSERT_EQ(train("run", "--epochs 1").status, 0);
  const std::string failed = path("failed");
  fs::create_directories(failed + "/checkpoints");
  std::ofstream(failed + "/.lock");
  for (const char* name : {"config.json", "history.csv", "history.jsonl"})
    fs::copy_file(path("other") + "/" + name, failed + "/" + name);
  fs::copy_file(path("other") + "/checkpoints/best.safetensors",
                failed + "/checkpoints/best.safetensors");
  const std::string alone = path("alone.safetensors");
  fs::copy_file(path("run") + "/checkpoints/last.safetensors", alone);
  auto resumed = resume(alone, "--epochs 2 --out " + failed);
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  // Said once: nothing of the checkpoint's run comes along (not also "rows missing").
  EXPECT_NE(resumed.output.find("note: " + alone + " lies outside a run directory, so the history "
                                "of its 1 epoch does not come along"),
            std::string::npos)
      << resumed.output;
  EXPECT_NE(resumed.output.find("note: no best checkpoint comes with " + alone),
            std::string::npos)
      << resumed.output;
  EXPECT_EQ(resumed.output.find("lacks the row"), std::string::npos) << resumed.output;
  auto restore = resume(alone, "--epochs 2 --restore-best --out " + path("restore"));
  EXPECT_EQ(restore.status, 1) << restore.output;
  EXPECT_NE(restore.output.find(alone + " lies outside a run directory"), std::string::npos)
      << restore.output;
  std::ifstream rows(failed + "/history.jsonl");
  std::vector<int> epochs;
  for (std::string row; std::getline(rows, row);)
    epochs.push_back(nlohmann::json::parse(row).at("epoch").get<int>());
  EXPECT_EQ(epochs, std::vector<int>{1}) << "only the epoch this run trained";
  if (fs::exists(failed + "/checkpoints/best.safetensors")) {
    EXPECT_FALSE(same_weights(failed + "/checkpoints/best.safetensors",
                              path("other") + "/checkpoints/best.safetensors"))
        << "the other run's best checkpoint";
  }
}

// The history a resume continues: a row missing from history.jsonl that history.csv still holds
// (history.csv is rewritten first; a kill between the two) is taken from there, and the rewrite
// keeps it; one missing from both (the process killed between the checkpoint and its history row)
// is named, not passed over in silence; a damaged history.jsonl is refused before config.json is
// rewritten, leaving the folder as it was, with what to do.
TEST_F(CliRuns, AResumeNamesMissingHistoryRowsAndRefusesADamagedHistoryUntouched) {
  ASSERT_EQ(train("run", "--epochs 3").status, 0);
  const std::string jsonl = path("run") + "/history.jsonl", csv = path("run") + "/history.csv";
  const auto lines_of = [](const std::string& file) {
    std::vector<std::string> lines;
    std::ifstream in(file);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  };
  const std::vector<std::string> rows = lines_of(jsonl), csv_rows = lines_of(csv);
  ASSERT_EQ(rows.size(), 3u);
  ASSERT_EQ(csv_rows.size(), 4u);  // the header and three rows
  std::ofstream(jsonl) << rows[0] << "\n" << rows[2] << "\n";  // epoch 1's row lost here only
  auto taken = resume(path("run") + "/checkpoints/last.safetensors", "--epochs 4");
  ASSERT_EQ(taken.status, 0) << taken.output;
  EXPECT_NE(taken.output.find(jsonl + " lacks the row(s) of epoch 1 (counted from 0); taken from " +
                              csv),
            std::string::npos)
      << taken.output;
  EXPECT_EQ(taken.output.find("lacks the row of"), std::string::npos) << taken.output;
  std::vector<std::string> after = lines_of(jsonl);
  ASSERT_EQ(after.size(), 4u);
  EXPECT_EQ(nlohmann::json::parse(after[1]), nlohmann::json::parse(rows[1]))
      << "the row read back from history.csv is not the one written";
  EXPECT_EQ(lines_of(csv)[2], csv_rows[2]);

  // Lost from both files: named.
  std::vector<std::string> csv_now = lines_of(csv);
  after.erase(after.begin() + 1);
  csv_now.erase(csv_now.begin() + 2);
  {
    std::ofstream out(jsonl);
    for (const std::string& row : after) out << row << "\n";
    std::ofstream csv_out(csv);
    for (const std::string& row : csv_now) csv_out << row << "\n";
  }
  auto gap = resume(path("run") + "/checkpoints/last.safetensors", "--epochs 5");
  ASSERT_EQ(gap.status, 0) << gap.output;
  EXPECT_NE(gap.output.find("lacks the row of epoch 1 (counted from 0, as its epoch column) of "
                            "the 4 epochs"),
            std::string::npos)
      << gap.output;

  std::ofstream(jsonl, std::ios::app) << "not json\n";
  const std::string config = testing::read_text(path("run") + "/config.json");
  auto refused = resume(path("run") + "/checkpoints/last.safetensors", "--epochs 7 --batch 16");
  EXPECT_EQ(refused.status, 1) << refused.output;
  EXPECT_NE(refused.output.find(jsonl + ":5: not valid JSON"), std::string::npos) << refused.output;
  EXPECT_NE(refused.output.find("the run is left as it was: mend that line in " + jsonl +
                                ", or move it away to resume with the rows of history.csv"),
            std::string::npos)
      << refused.output;
  EXPECT_EQ(testing::read_text(path("run") + "/config.json"), config) << "rewritten by a refused resume";
  // Into a new --out the file read is a copy: the one to mend is the run's own.
  auto elsewhere = resume(path("run") + "/checkpoints/last.safetensors",
                          "--epochs 7 --out " + path("elsewhere"));
  EXPECT_EQ(elsewhere.status, 1) << elsewhere.output;
  EXPECT_NE(elsewhere.output.find(path("elsewhere") + "/history.jsonl:5: not valid JSON"),
            std::string::npos)
      << elsewhere.output;
  EXPECT_NE(elsewhere.output.find("(a copy of " + jsonl + "); the run is left as it was: mend "
                                  "that line in " + jsonl),
            std::string::npos)
      << elsewhere.output;
}

// A resume from a run folder (it holds the run's .lock) whose config.json is damaged or gone is
// refused, naming the file (it trained into a new runs/ folder, saying the checkpoint "lies outside
// a run directory"); a best checkpoint that cannot be read is refused by a resume in place (the
// run ended with it as its best). The folder is left as it was.
TEST_F(CliRuns, AResumeRefusesARunWithADamagedConfigOrBestCheckpoint) {
  ASSERT_EQ(train("run", "--epochs 1").status, 0);
  const std::string last = path("run") + "/checkpoints/last.safetensors";
  const std::string config = path("run") + "/config.json", config_text = testing::read_text(config);
  const std::string from_here = "cd '" + path("") + "' && PNEUMO_CACHE_DIR='" + cache_ + "' '" +
                                PNEUMO_BINARY + "' train --resume " + last + " --epochs 2" +
                                kCommon + " 2>&1";
  struct Damage {
    const char* text;  // nullptr: config.json removed
    const char* said;
  };
  for (const Damage& damage : {Damage{"{bad json", "is not valid JSON"},
                               Damage{"[1, 2]", "is not a run's config"},
                               Damage{nullptr, "is missing"}}) {
    if (damage.text)
      std::ofstream(config) << damage.text;
    else
      fs::remove(config);
    auto refused = testing::run_command(from_here);
    EXPECT_EQ(refused.status, 1) << refused.output;
    EXPECT_NE(refused.output.find(last + " lies in the run directory " + path("run") +
                                  " (it holds a run's .lock and history), but " + config + " " +
                                  damage.said),
              std::string::npos)
        << refused.output;
    EXPECT_NE(refused.output.find("put back its config.json, or copy the checkpoint out"),
              std::string::npos)
        << refused.output;
    EXPECT_FALSE(fs::exists(path("runs"))) << "a new run folder was made";
    EXPECT_EQ(read_checkpoint_metadata(last).epoch, 1);
  }
  std::ofstream(config) << config_text;

  const std::string best = path("run") + "/checkpoints/best.safetensors";
  ASSERT_TRUE(fs::exists(best));
  const std::string best_bytes = testing::read_text(best);
  std::ofstream(best, std::ios::binary) << best_bytes.substr(0, best_bytes.size() / 2);
  auto truncated = resume(last, "--epochs 2");
  EXPECT_EQ(truncated.status, 1) << truncated.output;
  EXPECT_NE(truncated.output.find("the run's best checkpoint cannot be read: "), std::string::npos)
      << truncated.output;
  EXPECT_NE(truncated.output.find(best), std::string::npos) << truncated.output;
  EXPECT_NE(truncated.output.find("put back a good copy, or remove it to resume without one"),
            std::string::npos)
      << truncated.output;
  EXPECT_EQ(read_checkpoint_metadata(last).epoch, 1);
  EXPECT_EQ(testing::read_text(config), config_text);
  // A resume that only finishes (the model not yet written) trains nothing and reads no best
  // checkpoint: not refused for it.
  fs::remove(path("run") + "/model.safetensors");
  auto finished = resume(last, "--epochs 1");
  EXPECT_EQ(finished.status, 0) << finished.output;
  EXPECT_TRUE(fs::exists(path("run") + "/model.safetensors")) << finished.output;
  fs::remove(best);
  auto without = resume(last, "--epochs 2");
  EXPECT_EQ(without.status, 0) << without.output;
  EXPECT_EQ(read_checkpoint_metadata(last).epoch, 2);

  // Another tool's .lock and config.json, without a run's history, make no run: a checkpoint
  // copied there resumes on its own into a new runs/ folder, as before.
  const std::string project = path("project");
  fs::create_directories(project + "/checkpoints");
  std::ofstream(project + "/.lock");
  std::ofstream(project + "/config.json") << "{\"model\": \"another tool's\"}";
  fs::copy_file(last, project + "/checkpoints/kept.safetensors");
  auto alone = testing::run_command("cd '" + path("") + "' && PNEUMO_CACHE_DIR='" + cache_ +
                                    "' '" + PNEUMO_BINARY + "' train --resume " + project +
                                    "/checkpoints/kept.safetensors --epochs 3" + kCommon + " 2>&1");
  EXPECT_EQ(alone.status, 0) << alone.output;
  EXPECT_NE(alone.output.find("lies outside a run directory"), std::string::npos) << alone.output;
  EXPECT_TRUE(fs::is_directory(path("runs"))) << alone.output;
  EXPECT_EQ(testing::read_text(project + "/config.json"), "{\"model\": \"another tool's\"}");
}

// A run whose model was written but not its report (a full disk, a folder in the way) is finished
// by its resume, from the same weights: it said "nothing to train; give a larger --epochs", which
// would have trained on and changed the model.
TEST_F(CliRuns, AResumeFinishesARunWhoseReportWasNotWritten) {
  ASSERT_EQ(train("run", "--epochs 1").status, 0);
  const std::string model = path("run") + "/model.safetensors";
  fs::copy_file(model, path("model-before.safetensors"));
  for (const char* lost : {"report.md", "metrics_val.json"}) {
    fs::remove(path("run") + "/" + lost);
    auto finished = resume(path("run") + "/checkpoints/last.safetensors", "--epochs 1");
    ASSERT_EQ(finished.status, 0) << lost << "\n" << finished.output;
    EXPECT_TRUE(fs::exists(path("run") + "/" + lost)) << lost;
    EXPECT_TRUE(same_weights(model, path("model-before.safetensors"))) << lost;
  }
  auto done = resume(path("run") + "/checkpoints/last.safetensors", "--epochs 1");
  EXPECT_EQ(done.status, 1) << done.output;
  EXPECT_NE(done.output.find("nothing to train"), std::string::npos) << done.output;
}

// A run that early stopping ended is over: its resume only writes what the run had not (it
// trained past the stop and replaced the model, since the stop lived in memory only), refuses
// when nothing is missing, and trains on under a larger patience. The stop is said once.
TEST_F(CliRuns, ARunThatEarlyStoppingEndedIsOverForItsResume) {
  // Validation accuracy stays 0.5 on the sample (kBestIsEpochOne): the stop comes at epoch 2.
  const std::string stopping =
      "--epochs 6 --early-stopping-patience 1 --early-stopping-monitor val_accuracy";
  auto first = train("run", stopping + kBestIsEpochOne);
  ASSERT_EQ(first.status, 0) << first.output;
  size_t said = 0;
  for (size_t at = first.output.find("early stopping at epoch 2"); at != std::string::npos;
       at = first.output.find("early stopping at epoch 2", at + 1))
    ++said;
  EXPECT_EQ(said, 1u) << first.output;
  // report.md says why it has fewer rows than --epochs asked for.
  EXPECT_NE(testing::read_text(path("run") + "/report.md").find("- early stopping at epoch 2: "),
            std::string::npos);
  const std::string last = path("run") + "/checkpoints/last.safetensors";
  const std::string model = path("run") + "/model.safetensors";
  fs::copy_file(model, path("model-before.safetensors"));
  fs::remove(path("run") + "/metrics_val.json");
  auto finished = resume(last, stopping + kBestIsEpochOne);
  ASSERT_EQ(finished.status, 0) << finished.output;
  EXPECT_NE(finished.output.find("early stopping at epoch 2"), std::string::npos)
      << finished.output;
  EXPECT_TRUE(same_weights(model, path("model-before.safetensors")));
  const nlohmann::json metrics =
      nlohmann::json::parse(testing::read_text(path("run") + "/metrics_val.json"));
  EXPECT_EQ(metrics.at("epochs_trained"), 2) << metrics.dump();
  EXPECT_EQ(history_val_auc(path("run")).size(), 2u);

  auto done = resume(last, stopping + kBestIsEpochOne);
  EXPECT_EQ(done.status, 1) << done.output;
  EXPECT_NE(done.output.find("ends a run that early stopping ended"), std::string::npos)
      << done.output;
  auto longer = resume(last, "--epochs 3 --early-stopping-patience 4 --out " + path("next") +
                                 kBestIsEpochOne);
  ASSERT_EQ(longer.status, 0) << longer.output;
  EXPECT_EQ(history_val_auc(path("next")).size(), 3u);
}

// A resume into a new --out starts it with the resumed run's history and best checkpoint.
TEST_F(CliRuns, AResumeIntoANewFolderCarriesTheHistoryAndTheBestCheckpoint) {
  ASSERT_EQ(train("run", "--epochs 2" + kBestIsEpochOne).status, 0);
  auto resumed = pneumo_command("train --resume " + path("run") +
                                    "/checkpoints/last.safetensors --epochs 3 --out " +
                                    path("next") + kCommon,
                                cache_);
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  const std::string history = testing::read_text(path("next") + "/history.csv");
  EXPECT_EQ(std::count(history.begin(), history.end(), '\n'), 4) << history;  // header + 3
  EXPECT_EQ(read_checkpoint_metadata(path("next") + "/checkpoints/best.safetensors").epoch, 1);
}

// An earlier checkpoint of a run resumed into a new --out, where the run's best checkpoint is of a
// later epoch: that file is not carried over (it is not an epoch of the new run), and the run
// says so, and when the new folder will get one.
TEST_F(CliRuns, AResumeIntoANewFolderSaysWhenTheBestCheckpointCannotComeAlong) {
  ASSERT_EQ(train("run", "--epochs 1").status, 0);
  const std::string checkpoints = path("run") + "/checkpoints/";
  fs::copy_file(checkpoints + "last.safetensors", checkpoints + "epoch1.safetensors");
  ASSERT_EQ(resume(checkpoints + "last.safetensors", "--epochs 3").status, 0);
  const int best_epoch = read_checkpoint_metadata(checkpoints + "best.safetensors").epoch;
  ASSERT_GT(best_epoch, 1) << "the premise: on the sample val_loss improves after epoch 1";
  auto branched = pneumo_command("train --resume " + checkpoints + "epoch1.safetensors --epochs 2 "
                                     "--out " + path("next") + kCommon,
                                 cache_);
  ASSERT_EQ(branched.status, 0) << branched.output;
  EXPECT_NE(branched.output.find("note: " + checkpoints + "best.safetensors is of epoch " +
                                 std::to_string(best_epoch) + ", after the epoch resumed (1), and "
                                 "not carried over, so " + path("next") +
                                 "/checkpoints/best.safetensors is written only when an epoch "
                                 "beats the best val_loss of epoch 1"),
            std::string::npos)
      << branched.output;
  // The plain carry-over says nothing.
  auto carried = pneumo_command("train --resume " + checkpoints + "last.safetensors --epochs 4 "
                                    "--out " + path("later") + kCommon,
                                cache_);
  ASSERT_EQ(carried.status, 0) << carried.output;
  EXPECT_EQ(carried.output.find("not carried over"), std::string::npos) << carried.output;
  EXPECT_TRUE(fs::exists(path("later") + "/checkpoints/best.safetensors"));
}

// An earlier checkpoint resumed into its own run's folder would overwrite the later work: refused,
// with the folder left as it was; into a new --out it goes on.
TEST_F(CliRuns, AnEarlierCheckpointIsNotResumedOverTheLaterWork) {
  ASSERT_EQ(train("run", "--epochs 3" + kBestIsEpochOne).status, 0);
  const std::string best = path("run") + "/checkpoints/best.safetensors";
  ASSERT_EQ(read_checkpoint_metadata(best).epoch, 1);
  const std::string history = testing::read_text(path("run") + "/history.csv");
  auto refused = resume(best, "--epochs 4");
  EXPECT_EQ(refused.status, 1) << refused.output;
  EXPECT_NE(refused.output.find("would overwrite the later work"), std::string::npos)
      << refused.output;
  EXPECT_EQ(testing::read_text(path("run") + "/history.csv"), history);
  EXPECT_EQ(read_checkpoint_metadata(path("run") + "/checkpoints/last.safetensors").epoch, 3);
  auto elsewhere = pneumo_command("train --resume " + best + " --epochs 2 --out " + path("next") +
                                      kCommon, cache_);
  EXPECT_EQ(elsewhere.status, 0) << elsewhere.output;
}

// `evaluate --split val-carved` carves the run's validation images again from the --data it is
// given; a tree with a training image fewer carves other ones, some the model trained on, and is
// refused (the checkpoint records its split's files), where the run's own data is scored.
TEST_F(CliRuns, ValCarvedOnOtherDataThanTheRunsIsRefused) {
  ASSERT_EQ(train("run", "--epochs 1").status, 0);
  const std::string model = " --model " + path("run") + "/model.safetensors --split val-carved ";
  auto same = pneumo_command("evaluate --data " + kSample + model + "--device cpu", cache_);
  EXPECT_EQ(same.status, 0) << same.output;
  const std::string other = path("other");
  fs::copy(kSample, other, fs::copy_options::recursive);
  const fs::path first = *fs::directory_iterator(other + "/train/NORMAL");
  fs::remove(first);
  auto refused = pneumo_command("evaluate --data " + other + model + "--device cpu", cache_);
  EXPECT_EQ(refused.status, 1) << refused.output;
  EXPECT_NE(refused.output.find("was trained on other images than"), std::string::npos)
      << refused.output;
}

// metrics_val.json that cannot be written (here a link to /dev/full) fails the run, saying so.
TEST_F(CliRuns, AnUnwritableMetricsFileFailsTheRun) {
  ASSERT_EQ(train("run", "--epochs 1").status, 0);
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  fs::remove(path("run") + "/metrics_val.json");
  fs::create_symlink("/dev/full", path("run") + "/metrics_val.json");
  auto resumed = resume(path("run") + "/checkpoints/last.safetensors", "--epochs 2");
  EXPECT_EQ(resumed.status, 1) << resumed.output;
  EXPECT_NE(resumed.output.find("cannot write /dev/full: writing: "), std::string::npos)
      << resumed.output;
  EXPECT_NE(resumed.output.find("(the target of the link " + path("run") + "/metrics_val.json)"),
            std::string::npos)
      << resumed.output;
}

// A checkpoint write that fails (here best.safetensors's path is a folder; a full disk alike) stops
// the run at the next step, naming the file and the checkpoint that survives; it trained the whole
// next epoch for nothing and named only the file. (Whether the stop comes before the next
// epoch's end depends on how fast the write fails: only the message is checked.)
TEST_F(CliRuns, AFailedCheckpointWriteStopsTheRunNamingWhatSurvives) {
  auto part = train("run", "--epochs 3 --batch 4 --inject-fault sigterm@3");
  ASSERT_EQ(part.status, 143) << part.output;
  fs::create_directories(path("run") + "/checkpoints/best.safetensors");
  auto resumed = resume(path("run") + "/checkpoints/last.safetensors", "--epochs 3");
  EXPECT_EQ(resumed.status, 1) << resumed.output;
  EXPECT_NE(resumed.output.find("cannot write " + path("run") + "/checkpoints/best.safetensors"),
            std::string::npos)
      << resumed.output;
  EXPECT_NE(resumed.output.find("; the run stopped (the last good checkpoint is " + path("run") +
                                "/checkpoints/last.safetensors (after epoch 0 and 3 steps of "
                                "the next)"),
            std::string::npos)
      << resumed.output;
}

// The epoch line's training loss and val loss are different measures under class weights or
// label smoothing: the run says so, and says nothing when they are the same measure.
TEST_F(CliRuns, ATrainingLossThatIsNotValidationsMeasureIsNamed) {
  auto weighted = train("weighted", "--epochs 1 --balance class-weight --label-smoothing 0.1");
  ASSERT_EQ(weighted.status, 0) << weighted.output;
  EXPECT_NE(weighted.output.find("the training loss is weighted by class and against smoothed "
                                 "targets; val loss is the plain cross-entropy"),
            std::string::npos)
      << weighted.output;
  auto plain = train("plain", "--epochs 1");
  ASSERT_EQ(plain.status, 0) << plain.output;
  EXPECT_EQ(plain.output.find("the training loss is"), std::string::npos) << plain.output;
}

// Flags that change nothing in a run (CUDA's on the CPU, data-parallel ones in one process, the
// other optimizer's) are accepted and named; a plain run names none.
TEST_F(CliRuns, FlagsWithoutEffectAreNamed) {
  auto run = train("run", "--epochs 1 --precision tf32 --weight-decay 0.5 --bucket-mb 4 "
                          "--sync-batchnorm true");
  ASSERT_EQ(run.status, 0) << run.output;
  for (const char* flag :
       {"--precision tf32: no effect in this run (it is CUDA's",
        "--beta1, --beta2 and --weight-decay: no effect in this run (they are AdamW's",
        "--bucket-mb: no effect in this run",
        "--sync-batchnorm true: it is for data-parallel runs, and this one is one process; its "
        "statistics are this process's batch"})
    EXPECT_NE(run.output.find(flag), std::string::npos) << flag << "\n" << run.output;
  // The plateau's flags under a schedule; a floor the plateau never cuts to; a --restore-best
  // following another monitor than early stopping's.
  auto schedule = train("schedule", "--epochs 1 --schedule step --plateau-patience 3");
  ASSERT_EQ(schedule.status, 0) << schedule.output;
  EXPECT_NE(schedule.output.find("--plateau-cooldown: no effect in this run (they are "
                                 "ReduceLROnPlateau's, which --schedule step replaces)"),
            std::string::npos)
      << schedule.output;
  auto floor = train("floor", "--epochs 1 --lr 0.001 --min-lr 0.001 --restore-best "
                              "--early-stopping-patience 2 --early-stopping-monitor val_auc");
  ASSERT_EQ(floor.status, 0) << floor.output;
  for (const char* note : {"--min-lr 0.001: no effect in this run (it is not below --lr 0.001",
                           "--restore-best restores the epoch with the best val_loss"})
    EXPECT_NE(floor.output.find(note), std::string::npos) << note << "\n" << floor.output;
  auto plain = train("plain", "--epochs 1");
  ASSERT_EQ(plain.status, 0) << plain.output;
  EXPECT_EQ(plain.output.find("no effect in this run"), std::string::npos) << plain.output;
  EXPECT_EQ(plain.output.find("pneumo: note:"), std::string::npos) << plain.output;
}

// After the first stop signal: the same signal again within a second is that request delivered
// twice (a runner forwarding what a scheduler or a group kill also sent) and changes nothing;
// the other kind (Ctrl-C, then a scheduler's SIGTERM), or the same one later, ends the process
// at once by its default action; after the guard, the signal that stopped the run stays ignored.
// Each case in a child process (a death test).
TEST(StopOnSignal, AnEchoWithinASecondIsOneRequestAnythingElseEndsAtOnce) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // Default handlers before each guard, whatever the test was started with (a background job
  // starts with SIGINT ignored): the cases below read which signal the default action ends on.
  const auto defaults = [] {
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
  };
  const auto stop_twice = [&](int first, int second, int gap_ms) {
    defaults();
    cli::StopOnSignal guard(/*announce=*/false);
    std::raise(first);
    if (!guard.stop().load() || guard.signal_number() != first) std::_Exit(3);
    if (gap_ms > 0) {
      const timespec gap{gap_ms / 1000, (gap_ms % 1000) * 1'000'000L};
      nanosleep(&gap, nullptr);
    }
    std::raise(second);
    std::_Exit(guard.signal_number() == first ? 0 : 4);
  };
  EXPECT_EXIT(stop_twice(SIGTERM, SIGTERM, 0), ::testing::ExitedWithCode(0), "");
  EXPECT_EXIT(stop_twice(SIGINT, SIGINT, 100), ::testing::ExitedWithCode(0), "");
  EXPECT_EXIT(stop_twice(SIGINT, SIGTERM, 0), ::testing::KilledBySignal(SIGTERM), "");
  EXPECT_EXIT(stop_twice(SIGTERM, SIGINT, 0), ::testing::KilledBySignal(SIGINT), "");
  EXPECT_EXIT(stop_twice(SIGTERM, SIGTERM, 1200), ::testing::KilledBySignal(SIGTERM), "");
  // Both pending at once (a scheduler or `timeout` sending SIGINT and SIGTERM together; Linux
  // delivers the lower number first): SIGINT is the request and SIGTERM the other signal. The
  // handlers nested before, SIGTERM's inside SIGINT's, and the run ended by SIGINT as "another".
  const auto together = [&] {
    defaults();
    cli::StopOnSignal guard(/*announce=*/false);
    sigset_t both;
    sigemptyset(&both);
    sigaddset(&both, SIGINT);
    sigaddset(&both, SIGTERM);
    sigprocmask(SIG_BLOCK, &both, nullptr);
    std::raise(SIGINT);
    std::raise(SIGTERM);
    sigprocmask(SIG_UNBLOCK, &both, nullptr);
    std::_Exit(5);  // not reached: SIGTERM, the second, ends the process
  };
  EXPECT_EXIT(together(), ::testing::KilledBySignal(SIGTERM), "");
  // Once the guard is gone (the run is exiting on the request), that signal stays ignored: its
  // echo must not kill the exit. The other kind is back to what it was (here the default).
  const auto after_the_guard = [&](int second) {
    defaults();
    {
      cli::StopOnSignal guard(/*announce=*/false);
      std::raise(SIGTERM);
    }
    std::raise(second);
    std::_Exit(0);
  };
  EXPECT_EXIT(after_the_guard(SIGTERM), ::testing::ExitedWithCode(0), "");
  EXPECT_EXIT(after_the_guard(SIGINT), ::testing::KilledBySignal(SIGINT), "");
}

// Outside a guard (train while it decodes images, prepare, evaluate, ...) a signal ends the
// command at once, by the signal itself (the shell's 130 / 143), after one line that says so (it
// ended in silence); one ignored from the start (a background job) stays ignored; once a guard is
// gone the line is back.
TEST(StopOnSignal, OutsideARunASignalEndsTheCommandAndSaysSo) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const auto ended_by = [](int number, bool ignored, bool guarded_before) {
    std::signal(SIGINT, ignored ? SIG_IGN : SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
    cli::say_when_a_signal_ends_the_command();
    if (guarded_before) {
      cli::StopOnSignal guard(/*announce=*/false);
    }
    std::raise(number);
    std::_Exit(0);
  };
  EXPECT_EXIT(ended_by(SIGINT, false, false), ::testing::KilledBySignal(SIGINT),
              "\npneumo: stopped by SIGINT before the command finished\n");
  EXPECT_EXIT(ended_by(SIGTERM, false, false), ::testing::KilledBySignal(SIGTERM),
              "pneumo: stopped by SIGTERM before the command finished");
  EXPECT_EXIT(ended_by(SIGINT, true, false), ::testing::ExitedWithCode(0), "");
  EXPECT_EXIT(ended_by(SIGTERM, false, true), ::testing::KilledBySignal(SIGTERM),
              "pneumo: stopped by SIGTERM before the command finished");
}

}  // namespace
}  // namespace pneumo
