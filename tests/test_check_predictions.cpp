// scripts/check_predictions.py, which the GPU check's report uses to hold the speed predictions
// written before a run against its bench kernels and bench train rows. Skipped without python3.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "cli_test_util.hpp"
#include "temp_dir.hpp"

namespace pneumo {
namespace {

testing::CommandResult check(const testing::TempDir& dir, const std::string& predictions) {
  return testing::run_command("python3 '" PNEUMO_SOURCE_DIR "/scripts/check_predictions.py' '" +
                              dir.file(predictions) + "' '" + dir.path() + "' 2>&1");
}

// The script on a predictions file and an OUT_DIR named by their paths.
testing::CommandResult check_paths(const std::string& predictions, const std::string& out_dir) {
  return testing::run_command("python3 '" PNEUMO_SOURCE_DIR "/scripts/check_predictions.py' '" +
                              predictions + "' '" + out_dir + "' 2>&1");
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// One bench kernels row of tail `layer` at batch 256.
nlohmann::json kernel_row(const std::string& layer, const std::string& variant,
                          const std::string& status, double ms, double percent_dram) {
  return {{"op", "block_tail_forward"}, {"layer", layer}, {"batch", 256},
          {"variant", variant},         {"status", status}, {"median_ms", ms},
          {"percent_dram_peak", percent_dram}, {"device", "NVIDIA H100 80GB HBM3 (sm_90)"}};
}

nlohmann::json op_row(const std::string& op, double ms) { return {{"op", op}, {"ms", ms}}; }

TEST(CheckPredictions, EachVerdictFromTheRowsItNames) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  std::ofstream(dir.file("bench_kernels.jsonl"))
      << kernel_row("tail2", "fused", "ok", 0.5, 40).dump() << "\n"
      << kernel_row("tail2", "chain", "ok", 0.8, 25).dump() << "\n"
      << kernel_row("tail3", "fused", "invalid", 0.1, 90).dump() << "\n"
      << kernel_row("tail4", "chain", "ok", 0.0, 0).dump() << "\n"
      << "a line of the log\n";
  const nlohmann::json steady = {
      {"impl", "pneumo"}, {"backend", "cuda (NVIDIA H100 80GB HBM3, sm_90)"}, {"batch", 256},
      {"precision", "fp32"},
      {"ops_ms", {op_row("relu_backward (256, 128)", 0.01),
                  op_row("conv2d_backward (256, 32, 75, 75)", 1.25),
                  op_row("conv2d_backward (256, 64, 38, 38)", 0.5)}}};
  // The recipe's line of the same run is not a steady row.
  const nlohmann::json recipe = {{"impl", "pneumo"}, {"measure", "recipe"}, {"batch", 256},
                                 {"precision", "fp32"}, {"total_seconds", 9}};
  std::ofstream(dir.file("throughput.jsonl")) << steady.dump() << "\n" << recipe.dump() << "\n";
  std::filesystem::create_directories(dir.file("logs"));
  for (const auto& [log, overhead] : {std::pair<const char*, double>{"a", 0.4}, {"b", 0.1}}) {
    const nlohmann::json line = {{"impl", "pneumo"}, {"measure", "recipe"},
                                 {"first_epoch_overhead", overhead}, {"backend", "cuda"}};
    std::ofstream(dir.file("logs/bench_recipe_" + std::string(log) + ".log"))
        << "a table\n" << line.dump() << "\n";
  }
  // Every entry on an NVIDIA device unless it names its own: the recipe lines' "cuda" is not one.
  std::ofstream(dir.file("p.json")) << R"J({
    "written": "today", "rule": "words", "device": "NVIDIA", "predictions": [
    {"id": "ratio", "claim": "fused faster than the chain",
     "measure": {"kernels": {"layer": "tail2", "batch": 256, "variant": "fused"},
                 "field": "median_ms",
                 "relative_to": {"kernels": {"layer": "tail2", "variant": "chain"}}},
     "before": 1.3, "at_most": 1.0},
    {"id": "bandwidth", "claim": "at half the bandwidth",
     "measure": {"kernels": {"layer": "tail2", "variant": "fused"}, "field": "percent_dram_peak"},
     "at_least": 50},
    {"id": "absent", "claim": "a row this run lacks",
     "measure": {"kernels": {"layer": "tail9"}}, "at_most": 1},
    {"id": "zero", "claim": "a ratio to nothing",
     "measure": {"kernels": {"layer": "tail2", "variant": "fused"},
                 "relative_to": {"kernels": {"layer": "tail4"}}},
     "at_most": 1},
    {"id": "invalid-row", "claim": "a row whose check failed",
     "measure": {"kernels": {"layer": "tail3"}}, "at_most": 1},
    {"id": "absolute", "claim": "a time predicted for another card",
     "measure": {"train": {"batch": 256, "precision": "fp32"},
                 "ops_matching": "^conv2d_backward \\(256, (32|64), ", "aggregate": "sum"},
     "at_most": 2.0, "device": "H200"},
    {"id": "sum", "claim": "two rows' sum",
     "measure": {"train": {"batch": 256, "precision": "fp32"},
                 "ops_matching": "^conv2d_backward \\(256, (32|64), ", "aggregate": "sum"},
     "at_most": 1.5},
    {"id": "count", "claim": "no 4-D ReLU backward",
     "measure": {"train": {"batch": 256},
                 "ops_matching": "^relu_backward \\(\\d+, \\d+, \\d+, \\d+\\)",
                 "aggregate": "count"},
     "equals": 0},
    {"id": "first-epoch", "claim": "one log's recipe over another's",
     "measure": {"recipe": {}, "log": "bench_recipe_b.log", "field": "first_epoch_overhead",
                 "relative_to": {"recipe": {}, "log": "bench_recipe_a.log"}},
     "at_most": 0.5}
  ]})J";
  const testing::CommandResult run = check(dir, "p.json");
  ASSERT_EQ(run.status, 0) << run.output;
  for (const char* row :
       {"| ratio | fused faster than the chain | 1.3 | <= 1 | 0.625 | **held** |",
        "| bandwidth | at half the bandwidth |  | >= 50 | 40 | **missed** |",
        "0 bench kernels rows match",
        "the row's status is 'invalid'",
        "| 1.75 (cuda (NVIDIA H100 80GB HBM3, sm_90)) | **other device** |",
        "| sum | two rows' sum |  | <= 1.5 | 1.75 | **missed** |",
        "| count | no 4-D ReLU backward |  | = 0 | 0 | **held** |",
        "| <= 0.5 | 0.25 (cuda) | **other device** |",
        "relative_to's value is 0: no ratio to it",
        "2 held, 2 missed, 3 not measured, 2 other device of 9."})
    EXPECT_TRUE(has(run.output, row)) << row << "\n" << run.output;

  // A file that breaks the format is refused before anything is read.
  std::ofstream(dir.file("bad.json")) << R"J({"written": "today", "rule": "words", "predictions": [
    {"id": "two", "claim": "c", "measure": {"kernels": {}}, "at_most": 1, "at_least": 0},
    {"id": "list", "claim": "c", "measure": {"kernels": ["tail2"]}, "at_most": 1}]})J";
  const testing::CommandResult bad = check(dir, "bad.json");
  EXPECT_EQ(bad.status, 2) << bad.output;
  EXPECT_TRUE(has(bad.output, "needs exactly one of at_most, at_least, equals")) << bad.output;
  EXPECT_TRUE(has(bad.output, "prediction list: a measure names one of kernels, train, recipe"))
      << bad.output;
}

// throughput.jsonl as gpu_check.sh writes it: bench train's own recipe untagged, the tuning-cache
// pair's tagged with their logs. An aim without "log" reads the untagged one (the three plain
// fp32 recipes made it "not measured"); one with "log" finds its tagged line when the log did not
// come back.
TEST(CheckPredictions, TheTuningCachePairsRecipesAreToldFromBenchTrainsOwn) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  std::ofstream out(dir.file("throughput.jsonl"));
  for (const auto& [log, seconds] : {std::pair<std::string, double>{"", 10.5},
                                     {"bench_recipe_cold.log", 11.25},
                                     {"bench_recipe_warm.log", 9.75}}) {
    nlohmann::json line = {{"impl", "pneumo"}, {"measure", "recipe"}, {"precision", "fp32"},
                           {"total_seconds", seconds}, {"backend", "cuda (NVIDIA H100, sm_90)"}};
    if (!log.empty()) line["log"] = log;
    out << line.dump() << "\n";
  }
  out.close();
  std::ofstream(dir.file("p.json")) << R"J({
    "written": "today", "rule": "words", "device": "NVIDIA", "predictions": [
    {"id": "own", "claim": "bench train's recipe",
     "measure": {"recipe": {"precision": "fp32"}}, "at_most": 3},
    {"id": "warm", "claim": "the warm one",
     "measure": {"recipe": {"precision": "fp32"}, "log": "bench_recipe_warm.log"}, "at_most": 3}
  ]})J";
  const testing::CommandResult run = check(dir, "p.json");
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_TRUE(has(run.output, "| own | bench train's recipe |  | <= 3 | 10.5 | **missed** |"))
      << run.output;
  EXPECT_TRUE(has(run.output, "| warm | the warm one |  | <= 3 | 9.75 | **missed** |"))
      << run.output;
}

TEST(CheckPredictions, TheCommittedFilesAreValid) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;  // no rows: every entry "not measured", none refused
  for (const auto& [file, count] : {std::pair<const char*, int>{"predictions-2026-12-05.json", 44},
                                    {"targets-issue-15.json", 4}}) {
    const testing::CommandResult run = testing::run_command(
        "python3 '" PNEUMO_SOURCE_DIR "/scripts/check_predictions.py' '" PNEUMO_SOURCE_DIR
        "/profiling/" + std::string(file) + "' '" + dir.path() + "' 2>&1");
    ASSERT_EQ(run.status, 0) << run.output;
    const std::string all = std::to_string(count);
    EXPECT_TRUE(has(run.output, "0 held, 0 missed, " + all + " not measured, 0 other device of " +
                                    all + "."))
        << run.output;
  }
}

TEST(CheckPredictions, AnOutDirThatIsNotAFolderIsAnError) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  std::ofstream(dir.file("p.json")) << R"J({"written": "today", "rule": "words", "predictions": [
    {"id": "a", "claim": "c", "measure": {"kernels": {"layer": "tail2"}}, "at_most": 1}]})J";
  // A mistyped OUT_DIR is not a run that measured nothing.
  const testing::CommandResult typo = check_paths(dir.file("p.json"), dir.file("typo_out"));
  EXPECT_EQ(typo.status, 2) << typo.output;
  EXPECT_TRUE(has(typo.output, "check_predictions: " + dir.file("typo_out") + ": no such folder"))
      << typo.output;
  EXPECT_FALSE(has(typo.output, "not measured")) << typo.output;
  const testing::CommandResult file = check_paths(dir.file("p.json"), dir.file("p.json"));
  EXPECT_EQ(file.status, 2) << file.output;
  EXPECT_TRUE(has(file.output, ": not a folder")) << file.output;
  // A folder without any of the files read: the table (every entry not measured) and a warning.
  std::filesystem::create_directories(dir.file("empty"));
  const testing::CommandResult empty = check_paths(dir.file("p.json"), dir.file("empty"));
  EXPECT_EQ(empty.status, 0) << empty.output;
  EXPECT_TRUE(has(empty.output, "0 held, 0 missed, 1 not measured, 0 other device of 1."))
      << empty.output;
  EXPECT_TRUE(has(empty.output, dir.file("empty") + " holds none of the files read"))
      << empty.output;
}

TEST(CheckPredictions, FilesOfTheWrongTypesAreRefusedNotCrashedOn) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  // Each of these got through the checks and then raised a traceback (exit 1).
  std::ofstream(dir.file("bad.json")) << R"J({"written": "today", "rule": "words", "device": 5,
    "predictions": [
    {"id": "device", "claim": "c", "measure": {"kernels": {}}, "at_most": 1, "device": ["H200"]},
    {"id": "relative", "claim": "c", "measure": {"kernels": {}, "relative_to": "conv1"},
     "at_most": 1},
    {"id": "regex", "claim": "c", "measure": {"train": {}, "ops_matching": "(("}, "at_most": 1},
    {"id": "field", "claim": "c", "measure": {"kernels": {}, "field": ["x"]}, "at_most": 1},
    {"id": "op", "claim": "c", "measure": {"train": {}, "op": 3}, "at_most": 1}]})J";
  const testing::CommandResult bad = check(dir, "bad.json");
  EXPECT_EQ(bad.status, 2) << bad.output;
  EXPECT_FALSE(has(bad.output, "Traceback")) << bad.output;
  for (const char* problem :
       {"bad.json: \"device\" is not a string", "prediction device: \"device\" is not a string",
        "prediction relative: \"relative_to\" is not an object",
        "prediction regex: \"ops_matching\" is not a regular expression",
        "prediction field: \"field\" is not a string", "prediction op: \"op\" is not a string"})
    EXPECT_TRUE(has(bad.output, problem)) << problem << "\n" << bad.output;

  // A misspelt key is refused, not ignored (a "feild" compared median_ms against a bound on the
  // DRAM share, a "devcie" judged one GPU's figure on another: both "held"); a bound that is no
  // finite number always held or always missed.
  std::ofstream(dir.file("keys.json")) << R"J({"written": "today", "rule": "words", "devcie": "A",
    "predictions": [
    {"id": "field", "claim": "c", "measure": {"kernels": {}, "feild": "gbps"}, "at_most": 40},
    {"id": "device", "claim": "c", "measure": {"kernels": {}}, "at_most": 1, "devcie": "A100"},
    {"id": "nan", "claim": "c", "measure": {"kernels": {}}, "at_least": NaN},
    {"id": "inf", "claim": "c", "measure": {"kernels": {}}, "at_most": Infinity, "before": "2.0"}]})J";
  const testing::CommandResult keys = check(dir, "keys.json");
  EXPECT_EQ(keys.status, 2) << keys.output;
  for (const char* problem :
       {"keys.json: unknown key \"devcie\"", "prediction field: unknown key \"feild\" in a measure",
        "prediction device: unknown key \"devcie\"", "prediction nan: at_least is not a finite number",
        "prediction inf: at_most is not a finite number",
        "prediction inf: \"before\" is not a finite number"})
    EXPECT_TRUE(has(keys.output, problem)) << problem << "\n" << keys.output;
  // A file of OUT_DIR it cannot read: one line and status 2, not a traceback.
  std::filesystem::create_directories(dir.file("out/throughput.jsonl"));
  std::ofstream(dir.file("good.json")) << R"J({"written": "today", "rule": "words", "predictions": [
    {"id": "a", "claim": "c", "measure": {"train": {}, "field": "step_ms_mean"}, "at_most": 1}]})J";
  const testing::CommandResult unreadable = check_paths(dir.file("good.json"), dir.file("out"));
  EXPECT_EQ(unreadable.status, 2) << unreadable.output;
  EXPECT_TRUE(has(unreadable.output, "check_predictions: cannot read " + dir.file("out") +
                                         "/throughput.jsonl"))
      << unreadable.output;
  EXPECT_FALSE(has(unreadable.output, "Traceback")) << unreadable.output;

  // --help prints the format, as the other scripts' --help does.
  const testing::CommandResult help = testing::run_command(
      "python3 '" PNEUMO_SOURCE_DIR "/scripts/check_predictions.py' --help 2>&1");
  EXPECT_EQ(help.status, 0) << help.output;
  EXPECT_TRUE(has(help.output, "A \"measure\" names one number")) << help.output;
}

TEST(CheckPredictions, AStoredResultFolderIsReadFromItsCsvAndTxtCopies) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  // A result folder as profiling/results keeps it: bench kernels' CSV (no JSONL), the bench train
  // and recipe logs as top-level .txt files (no logs/). Numbers, empty cells, booleans, quotes.
  std::ofstream(dir.file("bench_kernels.csv"))
      << "platform,device,op,layer,batch,variant,baseline,status,note,median_ms,speedup\n"
      << "CUDA,\"NVIDIA H200 (sm_90, 132 SMs)\",block_tail_forward,tail2,256,"
         "\"ours: fused, in registers\",false,ok,,0.5,1.6\n"
      << "CUDA,\"NVIDIA H200 (sm_90, 132 SMs)\",block_tail_forward,tail2,256,chain,true,ok,,"
         "0.8,\n"
      << "CUDA,\"NVIDIA H200 (sm_90, 132 SMs)\",block_tail_forward,tail3,256,chain,true,ok,,"
         ",\n";
  std::ofstream(dir.file("bench_train_plain.txt"))
      << "a table\n"
      << R"J({"impl":"pneumo","backend":"cuda (NVIDIA H200, sm_90)","batch":256,)J"
      << R"J("images_per_second":12000})J" << "\n";
  std::ofstream(dir.file("bench_recipe_warm.txt"))
      << "a table\n"
      << R"J({"impl":"pneumo","measure":"recipe","backend":"cuda (NVIDIA H200, sm_90)",)J"
      << R"J("first_epoch_overhead":0.35})J" << "\n";
  std::ofstream(dir.file("p.json")) << R"J({"written": "today", "rule": "words",
    "device": "NVIDIA", "predictions": [
    {"id": "ratio", "claim": "fused over chain",
     "measure": {"kernels": {"layer": "tail2", "batch": 256, "baseline": false},
                 "relative_to": {"kernels": {"layer": "tail2", "variant": "chain"}}},
     "at_most": 1.0},
    {"id": "quoted", "claim": "a variant with a comma",
     "measure": {"kernels": {"variant": "ours: fused, in registers"}, "field": "speedup"},
     "at_least": 1.5},
    {"id": "empty-cell", "claim": "a cell left empty",
     "measure": {"kernels": {"layer": "tail3"}}, "at_most": 1},
    {"id": "speed", "claim": "steady speed",
     "measure": {"train": {"batch": 256}}, "at_least": 10000},
    {"id": "warm", "claim": "warm first epoch",
     "measure": {"recipe": {}, "log": "bench_recipe_warm.log", "field": "first_epoch_overhead"},
     "at_most": 0.1}]})J";
  const testing::CommandResult run = check(dir, "p.json");
  ASSERT_EQ(run.status, 0) << run.output;
  for (const char* row : {"| ratio | fused over chain |  | <= 1 | 0.625 | **held** |",
                          "| quoted | a variant with a comma |  | >= 1.5 | 1.6 | **held** |",
                          "median_ms is None, not a number",
                          "| speed | steady speed |  | >= 10000 | 1.2e+04 | **held** |",
                          "| warm | warm first epoch |  | <= 0.1 | 0.35 | **missed** |",
                          "3 held, 1 missed, 1 not measured, 0 other device of 5."})
    EXPECT_TRUE(has(run.output, row)) << row << "\n" << run.output;
  EXPECT_FALSE(has(run.output, "holds none of the files read")) << run.output;
}

// A number that is NaN or infinite is no measurement, whichever file it comes from: bench kernels'
// JSON lines (a NaN was "missed", every comparison with it false; an Infinity "held" an at_least)
// and its CSV (where "nan" was already "not measured", as a word) say the same.
TEST(CheckPredictions, ANanOrInfiniteNumberIsNotMeasuredInJsonLinesAndCsvAlike) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  std::filesystem::create_directories(dir.file("jsonl"));
  std::filesystem::create_directories(dir.file("csv"));
  std::ofstream(dir.file("jsonl/bench_kernels.jsonl"))
      << R"J({"op": "x", "layer": "tail2", "status": "ok", "median_ms": NaN})J" << "\n"
      << R"J({"op": "x", "layer": "tail3", "status": "ok", "median_ms": Infinity})J" << "\n"
      << R"J({"op": "x", "layer": "tail4", "status": "ok", "median_ms": -Infinity})J" << "\n"
      << R"J({"op": "x", "layer": "tail5", "status": "ok", "median_ms": 0.5})J" << "\n";
  std::ofstream(dir.file("csv/bench_kernels.csv"))
      << "op,layer,status,median_ms\n"
      << "x,tail2,ok,nan\nx,tail3,ok,inf\nx,tail4,ok,-inf\nx,tail5,ok,0.5\n";
  std::ofstream(dir.file("p.json")) << R"J({"written": "today", "rule": "words", "predictions": [
    {"id": "nan", "claim": "c", "measure": {"kernels": {"layer": "tail2"}}, "at_most": 1},
    {"id": "inf", "claim": "c", "measure": {"kernels": {"layer": "tail3"}}, "at_least": 1},
    {"id": "minus-inf", "claim": "c", "measure": {"kernels": {"layer": "tail4"}}, "at_most": 1},
    {"id": "finite", "claim": "c", "measure": {"kernels": {"layer": "tail5"}}, "at_most": 1}]})J";
  for (const char* format : {"jsonl", "csv"}) {
    SCOPED_TRACE(format);
    const testing::CommandResult run = check_paths(dir.file("p.json"), dir.file(format));
    ASSERT_EQ(run.status, 0) << run.output;
    for (const char* row :
         {"| nan | c |  | <= 1 | median_ms is nan, not a finite number: no measurement | "
          "**not measured** |",
          "| inf | c |  | >= 1 | median_ms is inf, not a finite number: no measurement | "
          "**not measured** |",
          "| minus-inf | c |  | <= 1 | median_ms is -inf, not a finite number: no measurement | "
          "**not measured** |",
          "| finite | c |  | <= 1 | 0.5 | **held** |",
          "1 held, 0 missed, 3 not measured, 0 other device of 4."})
      EXPECT_TRUE(has(run.output, row)) << row << "\n" << run.output;
  }
}

// profiling/README.md ("The predictions, in numbers") quotes the verdict counts for the stored H200
// folder (which keeps bench_kernels.csv and bench_recipe_*.txt only): the counts are read from the
// README's sentence and must be what the script prints for those files, so the prose and the
// script cannot drift apart. (The verdicts themselves are tested on made-up rows above.)
TEST(CheckPredictions, TheReadmeQuotesWhatTheScriptSaysOnTheStoredH200Files) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  std::ifstream in(PNEUMO_SOURCE_DIR "/profiling/README.md");
  std::string readme((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::replace(readme.begin(), readme.end(), '\n', ' ');
  // "the predictions give H held (...), M missed and N not measured (...), and the aims A missed
  // (...) and B not measured": each number read where its words put it. (By hand: std::regex
  // trips GCC 12's maybe-uninitialized warning in the sanitizer build.)
  const auto number_after = [&](const std::string& words, size_t from) {
    const size_t at = readme.find(words, from);
    if (at == std::string::npos) return std::pair<int, size_t>{-1, std::string::npos};
    const size_t digits = at + words.size();
    const size_t end = readme.find_first_not_of("0123456789", digits);
    if (end == digits) return std::pair<int, size_t>{-1, std::string::npos};
    return std::pair<int, size_t>{std::stoi(readme.substr(digits, end - digits)), end};
  };
  const auto number_before = [&](const std::string& words, size_t from) {
    const size_t at = readme.find(words, from);
    if (at == std::string::npos) return std::pair<int, size_t>{-1, std::string::npos};
    size_t start = at;
    while (start > 0 && std::isdigit(static_cast<unsigned char>(readme[start - 1]))) --start;
    if (start == at) return std::pair<int, size_t>{-1, std::string::npos};
    return std::pair<int, size_t>{std::stoi(readme.substr(start, at - start)), at + words.size()};
  };
  const auto [held, after_held] = number_after("the predictions give ", 0);
  ASSERT_GE(held, 0) << "profiling/README.md no longer quotes the counts in the words this test reads";
  const auto [missed, after_missed] = number_before(" missed and ", after_held);
  ASSERT_GE(missed, 0);
  const auto [absent, after_absent] = number_after(" missed and ", after_held);
  ASSERT_GE(absent, 0);
  const auto [aims_missed, after_aims] = number_after("aims ", after_absent);
  ASSERT_GE(aims_missed, 0);
  const auto [aims_absent, end] = number_before(" not measured", after_aims);
  ASSERT_GE(aims_absent, 0);
  (void)after_missed;
  (void)end;
  const auto counts = [](int held, int missed, int absent) {
    return std::to_string(held) + " held, " + std::to_string(missed) + " missed, " +
           std::to_string(absent) + " not measured, 0 other device of " +
           std::to_string(held + missed + absent) + ".";
  };
  const std::string results = PNEUMO_SOURCE_DIR "/profiling/results/2026-12-04-h200";
  for (const auto& [file, quoted] :
       {std::pair<std::string, std::string>{"predictions-2026-12-05.json", counts(held, missed, absent)},
        {"targets-issue-15.json", counts(0, aims_missed, aims_absent)}}) {
    const testing::CommandResult run = check_paths(PNEUMO_SOURCE_DIR "/profiling/" + file, results);
    ASSERT_EQ(run.status, 0) << run.output;
    EXPECT_TRUE(has(run.output, quoted)) << file << ": the README says " << quoted << "\n" << run.output;
  }
}

}  // namespace
}  // namespace pneumo
