// The small scripts' refusals that protect data or tell "cannot read" from a result:
// scripts/make_sample.py never writes its sample into the dataset it reads (an --out equal to
// --source once deleted the dataset), nor over a folder that is not a sample it wrote;
// scripts/compare_weights.py exits 2 on a file it cannot read, not 1, its "the weights differ";
// threshold_rule.py, the research scripts and the GPU host's data scripts refuse a wrong folder
// or a damaged file with a message, not a traceback or another tool's files replaced.
// Skipped without python3 (the data scripts: without Python's OpenCV). And every shell script
// passes shellcheck (skipped without it).
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <tuple>
#include <vector>

#include "cli_test_util.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"

namespace pneumo {
namespace {

namespace fs = std::filesystem;

const std::string kScripts = std::string(PNEUMO_SOURCE_DIR) + "/scripts/";

std::string quoted(const std::string& path) { return "'" + path + "'"; }

TEST(MakeSample, NeverWritesIntoTheDatasetItReads) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  const fs::path source = fs::path(dir.path()) / "chest_xray";
  for (const char* split : {"train", "val", "test"})
    for (const char* label : {"NORMAL", "PNEUMONIA"}) {
      fs::create_directories(source / split / label);
      std::ofstream(source / split / label / "IM-0001-0001.jpeg") << "an image";
    }
  const auto files = [&] {
    size_t count = 0;
    for (const auto& entry : fs::recursive_directory_iterator(source))
      count += entry.is_regular_file() ? 1 : 0;
    return count;
  };
  const size_t before = files();
  for (const fs::path& out : {source, source / "train", fs::path(dir.path())}) {
    SCOPED_TRACE(out.string());
    const auto r = testing::run_command("python3 " + quoted(kScripts + "make_sample.py") +
                                        " --source " + quoted(source.string()) + " --out " +
                                        quoted(out.string()));
    EXPECT_EQ(r.status, 2) << r.output;
    EXPECT_NE(r.output.find("make_sample: --out"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("give another --out"), std::string::npos) << r.output;
    EXPECT_EQ(files(), before) << "the dataset was touched";
  }
}

// make_sample.py replaces its --out's split folders: only a sample it wrote (every file there
// listed in its manifest.csv), never a folder holding a user's files (they were deleted).
TEST(MakeSample, ReplacesOnlyASampleItWrote) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  const fs::path source = fs::path(dir.path()) / "chest_xray", out = fs::path(dir.path()) / "mine";
  for (const char* split : {"train", "val", "test"})
    for (const char* label : {"NORMAL", "PNEUMONIA"}) {
      fs::create_directories(source / split / label);
      std::ofstream(source / split / label / "IM-0001-0001.jpeg") << "an image";
    }
  fs::create_directories(out / "train" / "NORMAL");
  std::ofstream(out / "train" / "NORMAL" / "notes.txt") << "mine";
  const auto r = testing::run_command("python3 " + quoted(kScripts + "make_sample.py") +
                                      " --source " + quoted(source.string()) + " --out " +
                                      quoted(out.string()));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("holds files its manifest.csv does not list (train/NORMAL/notes.txt)"),
            std::string::npos)
      << r.output;
  EXPECT_TRUE(fs::exists(out / "train" / "NORMAL" / "notes.txt")) << "a user's file was deleted";
}

// threshold_rule.py refuses, before it runs anything: an --out that is a sweep's folder (its
// results.md and results.csv were replaced), a run given twice (counted twice in the means), a
// --pneumo that is not there (a traceback).
TEST(ThresholdRule, RefusesWhatWouldOverwriteOrMiscountBeforeRunning) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  for (const char* run : {"a", "b"}) {
    fs::create_directories(dir.file(run));
    std::ofstream(dir.file(run) + "/model.safetensors") << "weights";
  }
  fs::create_directories(dir.file("sweep"));
  std::ofstream(dir.file("sweep/plan.json")) << "{}";
  std::ofstream(dir.file("sweep/results.md")) << "the sweep's table\n";
  const auto rule = [&](const std::string& pneumo, const std::string& out,
                        const std::string& runs) {
    return testing::run_command("python3 " + quoted(kScripts + "threshold_rule.py") +
                                " --pneumo " + quoted(pneumo) + " --data " + quoted(dir.path()) +
                                " --out " + quoted(out) + " " + runs + " 2>&1");
  };
  const std::string a = quoted(dir.file("a")), b = quoted(dir.file("b"));
  const auto sweep = rule(PNEUMO_BINARY, dir.file("sweep"), a + " " + b);
  EXPECT_EQ(sweep.status, 2) << sweep.output;
  EXPECT_NE(sweep.output.find("is a sweep folder (experiments.py)"), std::string::npos)
      << sweep.output;
  EXPECT_EQ(testing::read_text(dir.file("sweep/results.md")), "the sweep's table\n");
  const auto twice = rule(PNEUMO_BINARY, dir.file("out"), a + " " + b + " " + b);
  EXPECT_EQ(twice.status, 2) << twice.output;
  EXPECT_NE(twice.output.find("is given twice"), std::string::npos) << twice.output;
  const auto missing = rule(dir.file("no-pneumo"), dir.file("out"), a);
  EXPECT_EQ(missing.status, 2) << missing.output;
  EXPECT_NE(missing.output.find("no executable file there"), std::string::npos) << missing.output;
  for (const auto* result : {&sweep, &twice, &missing})
    EXPECT_EQ(result->output.find("Traceback"), std::string::npos) << result->output;
  EXPECT_FALSE(fs::exists(dir.file("out"))) << "refused, yet --out was made";
}

// The research scripts name a bad input instead of a traceback: stress_recheck.py a folder that
// is not there and a damaged val.json; validation_by_origin.py a scores row cut short;
// summarize_runs.py says when a run's config.json cannot be read (its seed and recipe were
// compared as if it were empty, silently).
TEST(ResearchScripts, NameABadInputInsteadOfATraceback) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  const auto run = [&](const std::string& script, const std::string& args) {
    return testing::run_command("python3 " + quoted(kScripts + script) + " " + args + " 2>&1");
  };
  const auto nowhere = run("stress_recheck.py", quoted(dir.file("nowhere")));
  EXPECT_EQ(nowhere.status, 2) << nowhere.output;
  EXPECT_NE(nowhere.output.find("is not a folder"), std::string::npos) << nowhere.output;
  fs::create_directories(dir.file("sweep/plain/seed-1"));
  std::ofstream(dir.file("sweep/plain/seed-1/val.json")) << "{bad";
  const auto damaged = run("stress_recheck.py", quoted(dir.file("sweep")));
  EXPECT_NE(damaged.status, 0) << damaged.output;
  EXPECT_NE(damaged.output.find("seed-1/val.json cannot be read as JSON"), std::string::npos)
      << damaged.output;
  std::ofstream(dir.file("scores.csv")) << "index,file,label,logit\n0,val/NORMAL/a.jpeg,0,-1.5\n"
                                           "1,val/NORMAL/b.jpeg\n";
  const auto short_row = run("validation_by_origin.py",
                             "--images " + quoted(dir.path()) + " " + quoted(dir.file("scores.csv")));
  EXPECT_EQ(short_row.status, 1) << short_row.output;
  EXPECT_NE(short_row.output.find("scores.csv, line 3: not a row"), std::string::npos)
      << short_row.output;
  for (const char* name : {"r1", "r2"}) {
    fs::create_directories(dir.file(name));
    std::ofstream(dir.file(name) + "/metrics_val.json")
        << "{\"default_threshold\": {\"accuracy\": 0.9}, \"roc_auc\": 0.95}";
  }
  std::ofstream(dir.file("r1/config.json")) << "{\"seed\": 1}";
  std::ofstream(dir.file("r2/config.json")) << "{\"seed\": ";
  const auto summary = run("summarize_runs.py", quoted(dir.file("r1")) + " " + quoted(dir.file("r2")));
  EXPECT_EQ(summary.status, 0) << summary.output;
  EXPECT_NE(summary.output.find("r2: its config.json cannot be read"), std::string::npos)
      << summary.output;
  for (const auto* result : {&nowhere, &damaged, &short_row, &summary})
    EXPECT_EQ(result->output.find("Traceback"), std::string::npos) << result->output;
}

// The GPU host's data scripts (they need Python's OpenCV and numpy): unpacking a mistyped image
// tree wrote a cache of no split over a good cache (exit 0); packing an image tree, or into the
// cache itself, ended in a traceback (the latter after writing into the cache).
TEST(GpuDataScripts, RefuseAWrongFolderBeforeWriting) {
  if (testing::run_command("python3 -c 'import cv2, numpy' 2> /dev/null").status != 0)
    GTEST_SKIP() << "no Python OpenCV and numpy";
  testing::TempDir dir;
  const std::string sample = std::string(PNEUMO_SOURCE_DIR) + "/data/sample";
  fs::create_directories(dir.file("cache"));
  std::ofstream(dir.file("cache/meta.json")) << "{\"format\": \"pneumo-cache\"}";
  const auto run = [&](const std::string& script, const std::string& args) {
    return testing::run_command("python3 " + quoted(kScripts + script) + " " + args + " 2>&1");
  };
  const auto typo = run("unpack_gpu_data.py", "tree " + quoted(dir.file("sampel")) + " " +
                                                  quoted(dir.file("cache")) + " 32");
  EXPECT_NE(typo.status, 0) << typo.output;
  EXPECT_NE(typo.output.find("is not an image tree"), std::string::npos) << typo.output;
  EXPECT_EQ(testing::read_text(dir.file("cache/meta.json")), "{\"format\": \"pneumo-cache\"}");
  const auto size = run("unpack_gpu_data.py", "tree " + quoted(sample) + " " +
                                                  quoted(dir.file("other")) + " abc");
  EXPECT_NE(size.status, 0) << size.output;
  EXPECT_NE(size.output.find("SIZE must be a whole number"), std::string::npos) << size.output;
  const auto tree = run("pack_gpu_data.py", quoted(sample) + " " + quoted(dir.file("packed")));
  EXPECT_NE(tree.status, 0) << tree.output;
  EXPECT_NE(tree.output.find("is no prepared pneumo cache"), std::string::npos) << tree.output;
  const auto unpacked = run("unpack_gpu_data.py", "packed " + quoted(dir.file("cache")) + " " +
                                                      quoted(dir.file("again")));
  EXPECT_NE(unpacked.status, 0) << unpacked.output;
  for (const auto* result : {&typo, &size, &tree, &unpacked})
    EXPECT_EQ(result->output.find("Traceback"), std::string::npos) << result->output;
}

TEST(CompareWeights, AFileItCannotReadIsStatusTwoNotADifference) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  std::ofstream(dir.file("junk.safetensors")) << "hello";
  std::ofstream(dir.file("empty.safetensors"));
  const std::string script = "python3 " + quoted(kScripts + "compare_weights.py") + " ";
  for (const std::string& bad : {dir.file("missing.safetensors"), dir.file("junk.safetensors"),
                                 dir.file("empty.safetensors")}) {
    SCOPED_TRACE(bad);
    const auto r = testing::run_command(script + quoted(bad) + " " + quoted(bad));
    EXPECT_EQ(r.status, 2) << r.output;
    EXPECT_NE(r.output.find("compare_weights: cannot read " + bad), std::string::npos)
        << r.output;
    EXPECT_EQ(r.output.find("Traceback"), std::string::npos) << r.output;
  }
}

// A safetensors file of float32 tensors (name, shape, values), as pneumo writes them.
void write_safetensors(
    const std::string& path,
    const std::vector<std::tuple<std::string, std::vector<int>, std::vector<float>>>& tensors) {
  std::string header = "{", data;
  for (const auto& [name, shape, values] : tensors) {
    std::string dims;
    for (int d : shape) dims += (dims.empty() ? "" : ",") + std::to_string(d);
    header += (header.size() > 1 ? "," : "") + ("\"" + name + "\":{\"dtype\":\"F32\",\"shape\":[" +
              dims + "],\"data_offsets\":[" + std::to_string(data.size()) + "," +
              std::to_string(data.size() + 4 * values.size()) + "]}");
    data.append(reinterpret_cast<const char*>(values.data()), 4 * values.size());
  }
  header += "}";
  std::ofstream out(path, std::ios::binary);
  const uint64_t length = header.size();  // little-endian on every machine this runs on
  out.write(reinterpret_cast<const char*>(&length), 8);
  out << header << data;
}

// A tolerance that is no number is a bad flag (NaN made every comparison false: weights that
// differ "agreed", exit 0); the same bytes in another shape are other weights; 0.0 against -0.0
// is the same value.
TEST(CompareWeights, ATolerancePassesOnlyWhatItShouldAndShapesCount) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  const std::string a = dir.file("a.safetensors"), b = dir.file("b.safetensors"),
                    turned = dir.file("turned.safetensors"), zeros = dir.file("zeros.safetensors"),
                    signed_zeros = dir.file("signed-zeros.safetensors");
  write_safetensors(a, {{"w", {2, 3}, {1, 2, 3, 4, 5, 6}}});
  write_safetensors(b, {{"w", {2, 3}, {1, 2, 3, 4, 5, 9}}});
  write_safetensors(turned, {{"w", {3, 2}, {1, 2, 3, 4, 5, 6}}});
  write_safetensors(zeros, {{"w", {2}, {0.0f, 0.0f}}});
  write_safetensors(signed_zeros, {{"w", {2}, {-0.0f, 0.0f}}});
  const std::string script = "python3 " + quoted(kScripts + "compare_weights.py") + " ";
  const auto compare = [&](const std::string& x, const std::string& y, const std::string& flags) {
    return testing::run_command(script + quoted(x) + " " + quoted(y) + flags);
  };
  EXPECT_EQ(compare(a, b, "").status, 1);  // 3 of 21: over the default 1%
  EXPECT_EQ(compare(a, b, " --tolerance 0.2").status, 0);
  for (const char* bad : {"nan", "-1", "inf"}) {
    const auto r = compare(a, b, std::string(" --tolerance ") + bad);
    EXPECT_EQ(r.status, 2) << bad << "\n" << r.output;
    EXPECT_NE(r.output.find("--tolerance must be a finite number >= 0"), std::string::npos)
        << r.output;
  }
  const auto shapes = compare(a, turned, "");
  EXPECT_EQ(shapes.status, 1) << shapes.output;
  EXPECT_NE(shapes.output.find("w: shape [2, 3] against [3, 2]"), std::string::npos)
      << shapes.output;
  EXPECT_EQ(compare(zeros, signed_zeros, "").status, 0);
  // Two files without a tensor "agreed" (status 0): nothing was compared.
  const std::string none = dir.file("none.safetensors");
  write_safetensors(none, {});
  const auto nothing = compare(none, none, "");
  EXPECT_EQ(nothing.status, 2) << nothing.output;
  EXPECT_NE(nothing.output.find("hold no F32 tensor: nothing to compare"), std::string::npos)
      << nothing.output;
}

// Every shell script of the project, parsed by bash and linted by shellcheck at warning level. The
// GPU check (scripts/gpu_check.sh) runs only on a lent GPU, minutes a session: a quoting slip or
// an unset variable found there costs that time, found here it costs none. Skipped without
// shellcheck (scripts/install_deps.sh installs it).
TEST(ShellScripts, ParseAndPassShellcheck) {
  if (testing::run_command("shellcheck --version > /dev/null 2>&1").status != 0)
    GTEST_SKIP() << "no shellcheck";
  const std::string root = PNEUMO_SOURCE_DIR;
  std::vector<std::string> scripts{root + "/.ci/run"};
  for (const char* folder : {"/scripts", "/profiling"})
    for (const auto& entry : fs::directory_iterator(root + folder))
      if (entry.path().extension() == ".sh") scripts.push_back(entry.path().string());
  ASSERT_GE(scripts.size(), 8u) << "the scripts were not found under " << root;
  bool gpu_check = false;
  for (const std::string& script : scripts) {
    gpu_check = gpu_check || fs::path(script).filename() == "gpu_check.sh";
    const testing::CommandResult parsed = testing::run_command("bash -n " + quoted(script) + " 2>&1");
    EXPECT_EQ(parsed.status, 0) << script << "\n" << parsed.output;
    const testing::CommandResult linted =
        testing::run_command("shellcheck -S warning " + quoted(script) + " 2>&1");
    EXPECT_EQ(linted.status, 0) << script << "\n" << linted.output;
  }
  EXPECT_TRUE(gpu_check) << "scripts/gpu_check.sh is among them";
}

// Every Python script compiles, and passes pyflakes where it is installed (an undefined name, an
// unused import): profiling/torch_reference.py and the GPU check's helpers run in full only on a
// lent GPU. Skipped without python3.
TEST(PythonScripts, CompileAndPassPyflakes) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  const std::string root = PNEUMO_SOURCE_DIR;
  std::string scripts;
  int count = 0;
  for (const char* folder : {"/scripts", "/profiling"})
    for (const auto& entry : fs::directory_iterator(root + folder))
      if (entry.path().extension() == ".py") {
        scripts += " " + quoted(entry.path().string());
        ++count;
      }
  ASSERT_GE(count, 10) << "the scripts were not found under " << root;
  // Compiled in memory (py_compile would write __pycache__ into the source tree).
  const testing::CommandResult compiled = testing::run_command(
      "python3 -c 'import sys\nfor p in sys.argv[1:]: compile(open(p).read(), p, \"exec\")'" +
      scripts + " 2>&1");
  EXPECT_EQ(compiled.status, 0) << compiled.output;
  if (testing::run_command("python3 -m pyflakes --version > /dev/null 2>&1").status != 0)
    GTEST_SKIP() << "no pyflakes (scripts/install_deps.sh installs it)";
  const testing::CommandResult flakes = testing::run_command("python3 -m pyflakes" + scripts + " 2>&1");
  EXPECT_EQ(flakes.status, 0) << flakes.output;
}

}  // namespace
}  // namespace pneumo
