// Bad input that needs no image decoding, through the `pneumo` binary: flag values out of range
// (exit 2), missing, empty and half-made data folders, unwritable outputs, damaged and foreign
// caches and checkpoints (exit 1), each refused with a message naming the value or the file, and
// never a crash or a hang. The image cases are in opencv/test_bad_input.cpp; docs/bad-input.md
// lists the decisions.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bad_input_util.hpp"
#include "pneumo/checkpoint.hpp"
#include "pneumo/npy.hpp"
#include "pneumo/safetensors.hpp"
#include "pneumo/tensor.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;

namespace pneumo {
namespace {

using testing::shell_quoted;
using testing::run_pneumo;
using testing::stopped_with;

constexpr int kSize = 24;  // small images and a small network: every run takes a moment

// A scratch folder with a good cache (train 12, test 6 images) and a good untrained model for it.
struct Fixture {
  testing::TempDir dir;
  std::string cache = dir.file("cache");
  std::string model = dir.file("model.safetensors");
  std::string cache_root = dir.file("tree-caches");
  int runs = 0;

  Fixture() {
    testing::write_cache(cache, kSize, {{"train", testing::alternating_labels(12)},
                                        {"test", testing::alternating_labels(6)}});
    save_checkpoint(model, testing::untrained_checkpoint(kSize));
  }
  testing::PneumoRun run(const std::string& args) { return run_pneumo(args, cache_root); }
  // A fresh run directory for each `pneumo train`.
  std::string new_out() { return dir.file("run" + std::to_string(runs++)); }
  std::string train_args(const std::string& data) {
    return "train --data " + shell_quoted(data) + " --out " + shell_quoted(new_out()) +
           " --size 24 --epochs 1 --device cpu --threads 1";
  }
  std::string evaluate_args(const std::string& model_path, const std::string& data) {
    return "evaluate --model " + shell_quoted(model_path) + " --data " + shell_quoted(data) +
           " --split test --device cpu";
  }
  // A copy of the good cache, to damage.
  std::string cache_copy(const std::string& name) {
    const std::string copy = dir.file(name);
    fs::copy(cache, copy, fs::copy_options::recursive);
    return copy;
  }
};

TEST(BadInput, FlagValuesOutOfRangeAreBadUsage) {
  Fixture f;
  // The same commands with good values succeed, so each refusal below is the flag's doing.
  ASSERT_TRUE(stopped_with(f.run(f.evaluate_args(f.model, f.cache)), 0, {"ROC AUC"}));
  struct Case {
    std::string args;
    std::vector<std::string> message;
  };
  const std::string train = f.train_args(f.cache);
  const std::string evaluate = f.evaluate_args(f.model, f.cache);
  const std::string predict = "predict --device cpu --model " + shell_quoted(f.model) + " " + shell_quoted(f.cache);
  const std::vector<Case> cases = {
      {train + " --epochs 0", {"--epochs", "got 0"}},
      {train + " --epochs -1", {"--epochs", "got -1"}},
      {train + " --batch 0", {"--batch", "got 0"}},
      {train + " --batch -3", {"--batch", "got -3"}},
      {train + " --device quantum", {"--device must be auto, cpu or cuda, got 'quantum'"}},
      // A choice's value one key off (or in capitals) is answered with the value meant.
      {train + " --device cude", {"got 'cude' (did you mean cuda?)"}},
      {train + " --optimizer RMSprop", {"got 'RMSprop' (did you mean rmsprop?)"}},
      {train + " --schedule cosin",
       {"--schedule must be none (ReduceLROnPlateau), step, exponential or cosine",
        "(did you mean cosine?)"}},
      {train + " --lr -1", {"--lr", "got -1"}},
      {train + " --val-split 1.5", {"--val-split", "1.5"}},
      {evaluate + " --device quantum", {"--device must be auto, cpu or cuda, got 'quantum'"}},
      {evaluate + " --split tset", {"got 'tset' (did you mean test?)"}},
      {evaluate + " --tta flp", {"--tta must be none or flip, got 'flp' (did you mean flip?)"}},
      {evaluate + " --batch 0", {"--batch", "got 0"}},
      {evaluate + " --threshold -0.1", {"--threshold", "'-0.1'"}},
      {evaluate + " --threshold 1.5", {"--threshold", "'1.5'"}},
      {evaluate + " --threshold nan", {"--threshold", "'nan'"}},
      {evaluate + " --threshold abc", {"--threshold", "'abc'"}},
      {evaluate + " --threshold 0x.8p0", {"--threshold", "'0x.8p0'"}},  // 0.5 to strtod
      {train + " --val-split 0x.4p0", {"--val-split", "'0x.4p0'"}},
      {predict + " --device quantum", {"--device must be auto, cpu or cuda, got 'quantum'"}},
      {predict + " --threshold -0.1", {"--threshold", "'-0.1'"}},
      {predict + " --threshold 1.5", {"--threshold", "'1.5'"}},
      {predict + " --threshold nan", {"--threshold", "'nan'"}},
      {predict + " --threshold abc", {"--threshold", "'abc'"}},
      {"prepare --data " + shell_quoted(f.cache) + " --out " + shell_quoted(f.dir.file("c")) + " --size 0",
       {"--size", "got 0"}},
      {"bench train --device cpu --val-batch 5000", {"--val-batch must be in [0, 4096], got 5000"}},
  };
  for (const Case& c : cases) {
    const testing::PneumoRun run = f.run(c.args);
    EXPECT_TRUE(stopped_with(run, 2, {}));
    for (const std::string& part : c.message)
      EXPECT_NE(run.output.find(part), std::string::npos)
          << c.args << ": the message does not mention '" << part << "':\n" << run.output;
  }
}

// Mistakes the command-line parser finds, in pneumo's words with the command's --help named: a
// value of the wrong type (the one taken when a flag is given twice, every one of a list's),
// arguments nobody takes (in the order given: CLI11 2.1 lists them backwards; a flag typed wrong
// with the flags it may have meant), a missing flag.
TEST(BadInput, ParseErrorsNameTheFlagTheValueAndTheHelp) {
  testing::TempDir dir;
  struct Case {
    std::string args, says, help;
  };
  const std::vector<Case> cases = {
      {"train --data d --epochs 3 --epochs x", "--epochs takes an INT, got 'x'", "pneumo train"},
      {"train --data d --lr abc", "--lr takes a FLOAT, got 'abc'", "pneumo train"},
      {"train --data d --augment maybe", "--augment takes true or false, got 'maybe'",
       "pneumo train"},
      {"train --data d --bogus 1 extra", "unexpected arguments: --bogus 1 extra", "pneumo train"},
      // A flag typed wrong is given the nearest flags of its command (one or two keys off).
      {"train --data d --epoch 3", "unexpected arguments: --epoch 3 (did you mean --epochs?)",
       "pneumo train"},
      {"train --data d --epoch 3 --bacth=8",
       "unexpected arguments: --epoch 3 --bacth=8 (--epoch: did you mean --epochs?; --bacth: did "
       "you mean --batch?)",
       "pneumo train"},
      {"evaluate --modle m --data d", "--model is required (--modle: did you mean --model?)",
       "pneumo evaluate"},
      {"train", "--data is required", "pneumo train"},
      {"bench train --batch 32 x", "--batch takes INT values, got '32' 'x'", "pneumo bench train"},
      // A comma is part of the value (CLI11's own message joins values with commas).
      {"train --data d --lr 0,001", "--lr takes a FLOAT, got '0,001'", "pneumo train"},
      {"bench kernels --batches 1,2", "--batches takes INT values, got '1,2'",
       "pneumo bench kernels"},
      {"evaluate --model m --data d --batch q", "--batch takes an INT, got 'q'",
       "pneumo evaluate"},
      // Whole numbers are decimal, as INT says (CLI11 alone read 0x10 as 16).
      {"train --data d --epochs 0x10", "--epochs: '0x10' is not a whole number in decimal",
       "pneumo train"},
      {"bench train --batch 32 0b100", "--batch: '0b100' is not a whole number in decimal",
       "pneumo bench train"},
      // So are fractional ones (strtod alone read C's hexadecimal floats).
      {"train --data d --lr 0x1p-10", "--lr: '0x1p-10' is not a number in decimal",
       "pneumo train"},
      {"train --data d --zoom +0X0P0", "--zoom: '+0X0P0' is not a number in decimal",
       "pneumo train"},
      // White space first (strtod and strtoll pass over it) hid the prefix.
      {"train --data d --lr ' 0x1p-10'", "--lr: ' 0x1p-10' is not a number in decimal",
       "pneumo train"},
      {"train --data d --seed ' 0x10'", "--seed: ' 0x10' is not a whole number in decimal",
       "pneumo train"},
      // A switch given a value it cannot read (its type has no name in CLI11).
      {"predict --model m --csv=maybe x", "--csv takes true or false, got 'maybe'",
       "pneumo predict"},
  };
  for (const Case& c : cases) {
    const testing::PneumoRun run = run_pneumo(c.args, dir.file("caches"));
    EXPECT_TRUE(stopped_with(run, 2, {"pneumo: error: " + c.says + "\n", c.help + " --help"}));
    EXPECT_EQ(run.output.find("Could not convert"), std::string::npos) << run.output;
  }
  EXPECT_TRUE(stopped_with(run_pneumo("train --help", dir.file("caches")), 0,
                           {"Usage: pneumo train"}));
  // evaluate and predict average a repeated --model; explain takes one and says so (it used to
  // explain the last one given, silently).
  EXPECT_TRUE(stopped_with(run_pneumo("explain --model a --model b x --out y", dir.file("caches")),
                           2, {"pneumo: error: explain explains one model; give one --model"}));
}

TEST(BadInput, MissingEmptyAndHalfMadeDataFoldersStopTheRun) {
  Fixture f;
  const std::string missing = f.dir.file("no such folder");
  EXPECT_TRUE(stopped_with(f.run(f.train_args(missing)), 1, {missing, "does not exist"}));
  EXPECT_TRUE(stopped_with(f.run(f.evaluate_args(f.model, missing)), 1, {missing, "does not exist"}));
  // A link that leads nowhere is said to be one (it "did not exist" though `ls` lists it).
  const std::string broken = f.dir.file("broken"), loop = f.dir.file("loop");
  fs::create_symlink(missing, broken);
  fs::create_symlink(loop, loop);
  EXPECT_TRUE(stopped_with(f.run(f.train_args(broken)), 1,
                           {broken, "is a broken link (its target is missing)"}));
  EXPECT_TRUE(stopped_with(f.run(f.evaluate_args(f.model, loop)), 1, {loop, "is a loop of links"}));

  const std::string empty = f.dir.file("empty");
  fs::create_directories(empty);
  EXPECT_TRUE(stopped_with(f.run(f.train_args(empty)), 1, {empty, "neither a pneumo cache"}));
  // None of these trainings made its run folder: a mistyped --data leaves nothing behind.
  ASSERT_EQ(f.runs, 3);
  for (int i = 0; i < f.runs; ++i)
    EXPECT_FALSE(fs::exists(f.dir.file("run" + std::to_string(i)))) << "run" << i;

  // A split folder with one class folder and not the other: stop, naming the missing folder.
  const std::string half = f.dir.file("half");
  testing::write_file(half + "/train/PNEUMONIA/person1_virus_1.jpeg", "not decoded: the check comes first");
  fs::create_directories(half + "/test/NORMAL");
  fs::create_directories(half + "/test/PNEUMONIA");
  const testing::PneumoRun run = f.run(f.train_args(half));
  EXPECT_TRUE(stopped_with(run, 1, {half + "/train/NORMAL is missing"}));
  EXPECT_FALSE(fs::exists(f.cache_root)) << "nothing may be prepared from a half-made tree";
}

// What this machine cannot give is refused before the run folder is made: --device cuda without
// a GPU, and --all-reduce nccl where training runs on the CPU (each made its folder first, a
// runs/<stamp> by default, then stopped). On a GPU machine its GPUs are hidden from the runs.
TEST(BadInput, ABackendOrTransportTheMachineLacksStopsTheRunBeforeItsFolder) {
  const testing::GpusHiddenFromChildren no_gpu;
  Fixture f;
  const auto train_on = [&](const std::string& out, const std::string& flags) {
    return f.run("train --data " + shell_quoted(f.cache) + " --out " + shell_quoted(out) +
                 " --size 24 --epochs 1 --threads 1 " + flags);
  };
  const std::string cuda = f.new_out(), nccl = f.new_out();
  EXPECT_TRUE(stopped_with(train_on(cuda, "--device cuda"), 1,
                           {"--device cuda: no CUDA device is visible"}));
  EXPECT_TRUE(stopped_with(train_on(nccl, "--device auto --all-reduce nccl"), 1,
                           {"--all-reduce nccl needs the CUDA backend (this run is on the CPU)"}));
  EXPECT_FALSE(fs::exists(cuda));
  EXPECT_FALSE(fs::exists(nccl));
}

TEST(BadInput, TrainingImagesOfOneClassOnlyStopTheRun) {
  Fixture f;
  const std::string one_class = f.dir.file("pneumonia-only");
  testing::write_cache(one_class, kSize, {{"train", std::vector<uint8_t>(10, 1)},
                                          {"test", testing::alternating_labels(4)}});
  EXPECT_TRUE(stopped_with(f.run(f.train_args(one_class)), 1,
                           {one_class, "no NORMAL image", "(0 NORMAL + "}));
}

// --json / --scores naming standard output (the docs' `--json /dev/stdout`): into a pipe the
// file follows the tables; into a file that standard output was sent to (`> out`, `>> out`) too,
// written into it rather than renamed over it (which left the tables in an unlinked file).
TEST(BadInput, JsonAndScoresSentToStandardOutputFollowTheTables) {
  Fixture f;
  const std::string evaluate = f.evaluate_args(f.model, f.cache);
  const testing::PneumoRun piped = f.run(evaluate + " --json /dev/stdout");
  ASSERT_TRUE(stopped_with(piped, 0, {"confusion matrix", "\"confusion_matrix\""}));
  EXPECT_LT(piped.output.find("confusion matrix"), piped.output.find("\"confusion_matrix\""))
      << piped.output;

  const std::string out = f.dir.file("out.txt");
  ASSERT_TRUE(stopped_with(f.run(evaluate + " --json /dev/stdout > " + shell_quoted(out)), 0, {}));
  std::string text = testing::read_text(out);
  ASSERT_NE(text.find("confusion matrix"), std::string::npos) << text;
  EXPECT_LT(text.find("confusion matrix"), text.find("\"confusion_matrix\"")) << text;
  // That file (the tables, then the JSON) is an earlier output of --json: named, it is replaced.
  ASSERT_TRUE(stopped_with(f.run(evaluate + " --json " + shell_quoted(out)), 0, {}));
  EXPECT_EQ(testing::read_text(out).rfind("{", 0), 0u);

  testing::write_file(out, "a line before\n");
  ASSERT_TRUE(stopped_with(f.run(evaluate + " --scores /dev/stdout >> " + shell_quoted(out)), 0,
                           {}));
  text = testing::read_text(out);
  EXPECT_EQ(text.rfind("a line before\n", 0), 0u) << text;
  ASSERT_NE(text.find("confusion matrix"), std::string::npos) << text;
  EXPECT_LT(text.find("confusion matrix"), text.find("index,file,label")) << text;
}

// A resume keeps the callbacks its run started with: adding early stopping or a schedule is
// refused naming the checkpoint and the flag (it said "saved callback state has no entry for
// early_stopping", naming neither), and leaves the run as it was.
TEST(BadInput, AResumeThatAddsACallbackNamesTheCheckpointAndTheFlag) {
  Fixture f;
  const std::string run_dir = f.dir.file("run0");
  ASSERT_TRUE(stopped_with(f.run(f.train_args(f.cache)), 0, {}));
  const std::string last = run_dir + "/checkpoints/last.safetensors";
  const std::string before = testing::read_text(last);
  const std::string resume = "train --resume " + shell_quoted(last) + " --epochs 2 --device cpu";
  EXPECT_TRUE(stopped_with(f.run(resume + " --early-stopping-patience 2"), 1,
                           {"checkpoint " + last + ": ", "early stopping",
                            "--early-stopping-patience", "cannot be added on resume"}));
  EXPECT_TRUE(stopped_with(f.run(resume + " --schedule cosine"), 1,
                           {"checkpoint " + last + ": ", "--schedule", "cannot be added"}));
  EXPECT_EQ(testing::read_text(last), before) << "the refused resumes changed the checkpoint";
}

TEST(BadInput, UnwritableOutputsStopTheRun) {
  Fixture f;
  // A path below a regular file can never be created, whoever runs the test.
  const std::string file = f.dir.file("file.txt");
  testing::write_file(file, "a file, not a folder");
  EXPECT_TRUE(stopped_with(
      f.run("train --data " + shell_quoted(f.cache) + " --out " + shell_quoted(file + "/run") +
            " --size 24 --epochs 1 --device cpu --threads 1"),
      1, {"run directory", file + "/run"}));
  // Refused before the evaluation runs (the metrics table is not printed), not after it.
  const testing::PneumoRun below_a_file =
      f.run(f.evaluate_args(f.model, f.cache) + " --json " + shell_quoted(file + "/metrics.json"));
  EXPECT_TRUE(stopped_with(below_a_file, 1,
                           {"cannot write --json " + file + "/metrics.json: " + file +
                            " is not a folder"}));
  EXPECT_EQ(below_a_file.output.find("confusion matrix"), std::string::npos) << below_a_file.output;
  const std::string nowhere = f.dir.file("no/such/scores.csv");
  const testing::PneumoRun missing =
      f.run(f.evaluate_args(f.model, f.cache) + " --scores " + shell_quoted(nowhere));
  EXPECT_TRUE(stopped_with(missing, 1,
                           {"cannot write --scores " + nowhere + ": " + f.dir.file("no/such") +
                            " does not exist"}));
  EXPECT_EQ(missing.output.find("confusion matrix"), std::string::npos) << missing.output;
  EXPECT_EQ(testing::read_text(file), "a file, not a folder");
}

TEST(BadInput, AReadOnlyOutputFolderStopsTheRun) {
  // Permission bits do not stop root; the file-as-folder case above covers root too.
  if (::geteuid() == 0) GTEST_SKIP() << "running as root: a read-only folder is writable to root";
  Fixture f;
  const std::string locked = f.dir.file("locked");
  fs::create_directories(locked);
  ::chmod(locked.c_str(), 0500);
  const testing::PneumoRun run =
      f.run("train --data " + shell_quoted(f.cache) + " --out " + shell_quoted(locked + "/run") +
            " --size 24 --epochs 1 --device cpu --threads 1");
  ::chmod(locked.c_str(), 0700);
  EXPECT_TRUE(stopped_with(run, 1, {"run directory", locked + "/run"}));
}

TEST(BadInput, DamagedAndForeignCachesAreRefusedNamingTheFile) {
  Fixture f;
  ASSERT_TRUE(stopped_with(f.run(f.evaluate_args(f.model, f.cache)), 0, {"ROC AUC"}));
  auto evaluate = [&](const std::string& cache) { return f.run(f.evaluate_args(f.model, cache)); };

  std::string c = f.cache_copy("no-meta");
  fs::remove(c + "/meta.json");
  EXPECT_TRUE(stopped_with(evaluate(c), 1, {c, "no meta.json"}));

  c = f.cache_copy("garbage-meta");
  testing::write_file(c + "/meta.json", "\x89PNG garbage {{{");
  EXPECT_TRUE(stopped_with(evaluate(c), 1, {c + "/meta.json", "not valid JSON"}));

  c = f.cache_copy("foreign-meta");
  testing::write_file(c + "/meta.json", R"({"format": "someone-elses-dataset", "version": 3})");
  EXPECT_TRUE(stopped_with(evaluate(c), 1, {c + "/meta.json", "not a pneumo cache"}));

  c = f.cache_copy("truncated-images");
  {
    const std::string bytes = testing::read_text(c + "/test_images.npy");
    testing::write_file(c + "/test_images.npy", bytes.substr(0, bytes.size() - 100));
  }
  EXPECT_TRUE(stopped_with(evaluate(c), 1, {c + "/test_images.npy"}));

  c = f.cache_copy("float-images");
  {
    std::vector<float> values(6 * kSize * kSize, 0.5f);
    write_npy(c + "/test_images.npy", NpyType::Float32, {6, kSize, kSize}, values.data());
  }
  EXPECT_TRUE(stopped_with(evaluate(c), 1, {c + "/test_images.npy", "expected uint8", "<f4"}));

  c = f.cache_copy("wrong-shape");
  {
    std::vector<uint8_t> values(6 * 20 * 20, 9);
    write_npy(c + "/test_images.npy", NpyType::UInt8, {6, 20, 20}, values.data());
  }
  EXPECT_TRUE(stopped_with(evaluate(c), 1, {c + "/test_images.npy", "(6, 20, 20)"}));

  c = f.cache_copy("short-labels");
  {
    const uint8_t labels[5] = {0, 1, 0, 1, 0};
    write_npy(c + "/test_labels.npy", NpyType::UInt8, {5}, labels);
  }
  EXPECT_TRUE(stopped_with(evaluate(c), 1, {c + "/test_labels.npy", "(5,)"}));

  c = f.cache_copy("bad-label");
  {
    const uint8_t labels[6] = {0, 1, 0, 7, 0, 1};
    write_npy(c + "/test_labels.npy", NpyType::UInt8, {6}, labels);
  }
  EXPECT_TRUE(stopped_with(evaluate(c), 1, {c + "/test_labels.npy", "label 7"}));

  c = f.cache_copy("short-file-list");
  testing::write_file(c + "/test_files.txt", "test/NORMAL/IM-1000-0001.jpeg\n");
  EXPECT_TRUE(stopped_with(evaluate(c), 1, {c + "/test_files.txt", "1 lines"}));

  // A good cache of another size than the model's input.
  const std::string other_size = f.dir.file("cache-32");
  testing::write_cache(other_size, 32, {{"test", testing::alternating_labels(4)}});
  EXPECT_TRUE(stopped_with(evaluate(other_size), 1, {other_size, "32x32", "expects 24x24"}));

  // Damage reaches `train` the same way.
  c = f.cache_copy("garbage-meta-train");
  testing::write_file(c + "/meta.json", "{\"format\": ");
  EXPECT_TRUE(stopped_with(f.run(f.train_args(c)), 1, {c + "/meta.json", "not valid JSON"}));
}

TEST(BadInput, TruncatedCorruptAndForeignCheckpointsAreRefusedNamingTheFile) {
  Fixture f;
  const std::string good = testing::read_text(f.model);
  ASSERT_TRUE(stopped_with(f.run(f.evaluate_args(f.model, f.cache)), 0, {"ROC AUC"}));

  struct Bad {
    std::string name;
    std::vector<std::string> message;
  };
  std::vector<Bad> bad;

  const std::string truncated = f.dir.file("truncated.safetensors");
  testing::write_file(truncated, good.substr(0, good.size() / 2));
  bad.push_back({truncated, {}});

  // Bytes flipped in the middle of the file: inside the weights, where only the checksum sees it.
  const std::string corrupt = f.dir.file("corrupt.safetensors");
  {
    std::string bytes = good;
    for (size_t i = bytes.size() / 2; i < bytes.size() / 2 + 16; ++i)
      bytes[i] = static_cast<char>(bytes[i] ^ 0x5A);
    testing::write_file(corrupt, bytes);
  }
  bad.push_back({corrupt, {"corrupt", "CRC-32"}});

  // A valid safetensors file of some other model, without pneumo's metadata.
  const std::string foreign = f.dir.file("other-model.safetensors");
  {
    SafetensorsWriter writer;
    std::vector<float> weights(8 * 3, 0.25f);
    writer.add_f32("encoder.layers.0.weight", {8, 3}, weights.data());
    writer.set_metadata("format", "pt");
    writer.write(foreign);
  }
  bad.push_back({foreign, {"not a pneumo checkpoint"}});

  // pneumo's metadata, but other tensor names, or other shapes.
  const std::string renamed = f.dir.file("renamed.safetensors");
  const std::string reshaped = f.dir.file("reshaped.safetensors");
  {
    CheckpointData data = testing::untrained_checkpoint(kSize);
    for (NamedTensor& t : data.tensors)
      if (t.name == "conv1.weight") t.name = "features.0.weight";
    save_checkpoint(renamed, data);
    data = testing::untrained_checkpoint(kSize);
    for (NamedTensor& t : data.tensors)
      if (t.name == "conv1.weight") {
        t.shape = {16, 1, 3, 3};
        t.values.resize(16 * 9);
      }
    save_checkpoint(reshaped, data);
  }
  bad.push_back({renamed, {"no tensor conv1.weight"}});
  bad.push_back({reshaped, {"conv1.weight", "(16, 1, 3, 3)", "(32, 1, 3, 3)"}});
  // Values no trained model holds (valid file, valid CRC): a NaN weight, a negative variance.
  const std::string diverged = f.dir.file("diverged.safetensors");
  const std::string negative = f.dir.file("negative-variance.safetensors");
  {
    CheckpointData data = testing::untrained_checkpoint(kSize);
    for (NamedTensor& t : data.tensors)
      if (t.name == "fc2.weight") t.values[0] = std::numeric_limits<float>::quiet_NaN();
    save_checkpoint(diverged, data);
    data = testing::untrained_checkpoint(kSize);
    for (NamedTensor& t : data.tensors)
      if (t.name == "bn2.running_var") t.values[3] = -1.0f;
    save_checkpoint(negative, data);
  }
  bad.push_back({diverged, {"fc2.weight[0] is nan"}});
  // An untrained model with RMSprop's state (so that --resume gets as far as the names), the
  // state's element `negative_at` set to -1 when it is given.
  auto with_rmsprop_state = [](std::optional<int64_t> negative_at) {
    auto backend = make_cpu_backend(1);
    ModelConfig config;
    config.input_size = kSize;
    Model model(*backend, config, 1);
    model.initialize(7);
    Tensor state = backend->zeros({model.parameters().numel()});
    if (negative_at) state.data()[*negative_at] = -1.0f;
    CheckpointMetadata metadata;
    metadata.optimizer = "rmsprop";
    return capture_checkpoint(model, &state, metadata);
  };
  const std::string extra = f.dir.file("extra.safetensors");
  {
    CheckpointData data = with_rmsprop_state(std::nullopt);
    data.tensors.push_back({"classifier.weight", {2}, {0.5f, 0.5f}});
    save_checkpoint(extra, data);
  }
  bad.push_back({extra, {"holds tensor classifier.weight"}});
  bad.push_back({negative, {"bn2.running_var[3] is -1"}});
  // A negative mean square, whose square root RMSprop takes.
  const std::string negative_state = f.dir.file("negative-mean-square.safetensors");
  save_checkpoint(negative_state, with_rmsprop_state(5));
  bad.push_back({negative_state, {"optimizer.rmsprop.mean_square.conv1.weight[5] is -1"}});

  for (const Bad& b : bad) {
    SCOPED_TRACE(b.name);
    for (const std::string& args :
         {f.evaluate_args(b.name, f.cache),
          "predict --device cpu --model " + shell_quoted(b.name) + " " + shell_quoted(f.cache),
          "train --resume " + shell_quoted(b.name) + " --data " + shell_quoted(f.cache) + " --out " +
              shell_quoted(f.new_out()) + " --size 24 --epochs 2 --device cpu --threads 1"}) {
      const testing::PneumoRun run = f.run(args);
      EXPECT_TRUE(stopped_with(run, 1, {b.name}));
      for (const std::string& part : b.message)
        EXPECT_NE(run.output.find(part), std::string::npos)
            << args << ": the message does not mention '" << part << "':\n" << run.output;
    }
  }
}

// `evaluate --split val-carved` carves validation again from the checkpoint's recorded
// "val-split": a value that is no fraction (a number instead of the string the CLI writes, a
// string of junk, however long) is refused naming the checkpoint, in one short line.
TEST(BadInput, ACheckpointsRecordedValidationSplitIsCheckedBeforeUse) {
  Fixture f;
  auto with_val_split = [&](const std::string& name, const nlohmann::json& value) {
    CheckpointData data = testing::untrained_checkpoint(kSize);
    data.metadata.config = {{"val-split", value}, {"seed", 1}};
    const std::string path = f.dir.file(name);
    save_checkpoint(path, data);
    return path;
  };
  auto evaluate_val = [&](const std::string& model) {
    return f.run("evaluate --model " + shell_quoted(model) + " --data " + shell_quoted(f.cache) +
                 " --split val-carved --device cpu");
  };
  EXPECT_TRUE(stopped_with(evaluate_val(with_val_split("good.safetensors", "0.5")), 0,
                           {"val-carved", "ROC AUC"}));
  const std::string number = with_val_split("number.safetensors", 0.5);
  EXPECT_TRUE(stopped_with(evaluate_val(number), 1, {number, "val-split"}));
  const std::string junk = with_val_split("junk.safetensors", std::string(100000, 'x'));
  const testing::PneumoRun run = evaluate_val(junk);
  EXPECT_TRUE(stopped_with(run, 1, {junk, "--val-split", "(100000 bytes)"}));
  EXPECT_LT(run.output.size(), 1000u) << "the hostile value is quoted whole";
}

}  // namespace
}  // namespace pneumo
