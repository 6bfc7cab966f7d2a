// The small scripts' refusals that protect data or tell "cannot read" from a result:
// scripts/make_sample.py never writes its sample into the dataset it reads (it replaces its
// --out's split folders first, and an --out equal to --source once deleted the dataset), and
// scripts/compare_weights.py exits 2 on a file it cannot read, not 1, its "the weights differ".
// Skipped without python3.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "cli_test_util.hpp"
#include "temp_dir.hpp"

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

}  // namespace
}  // namespace pneumo
