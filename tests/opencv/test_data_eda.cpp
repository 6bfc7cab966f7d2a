// `run_eda` on the tiny generated tree: counts, both PNG grids with the documented geometry, the
// README with the dataset's citation, and nothing written into the data.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data_test_util.hpp"
#include "opencv/image_tree.hpp"
#include "pneumo/data.hpp"
#include "pneumo/error.hpp"

namespace pneumo {
namespace {

namespace fs = std::filesystem;
using testing::ScratchDir;
using testing::Tree;
using testing::snapshot;

TEST(Eda, WritesCountsGridsAndCitation) {
  Tree tree;
  ScratchDir out, cache_root;
  EdaOptions options;
  options.data = tree.dir.str();
  options.out_dir = (out / "eda").string();
  options.size = 24;
  options.cache_root = cache_root.str();
  options.samples_per_class = 3;
  options.augmented_images = 2;
  options.augmented_variants = 4;
  std::ostringstream log;
  options.log = &log;
  const auto before = snapshot(tree.dir.path());
  const EdaReport report = run_eda(options);
  EXPECT_EQ(snapshot(tree.dir.path()), before);
  EXPECT_EQ(report.files_written.size(), 4u);
  const auto counts = nlohmann::json::parse(testing::read_file(out / "eda" / "counts.json"));
  EXPECT_EQ(counts["splits"]["train"]["NORMAL"], 3);
  EXPECT_EQ(counts["splits"]["train"]["PNEUMONIA"], 4);
  EXPECT_EQ(counts["splits"]["test"]["total"], 2);
  EXPECT_EQ(counts["patients"]["train"], 7);  // names of no known pattern: each its own patient
  ASSERT_EQ(counts["shared_patient_ids"].size(), 1u);
  EXPECT_EQ(counts["shared_patient_ids"][0]["ids"], 0);
  const cv::Mat samples = cv::imread((out / "eda" / "samples.png").string(), cv::IMREAD_UNCHANGED);
  ASSERT_FALSE(samples.empty());
  EXPECT_EQ(samples.cols, 3 * (24 + 4) + 4);
  const cv::Mat augmented = cv::imread((out / "eda" / "augmented.png").string(), cv::IMREAD_UNCHANGED);
  ASSERT_FALSE(augmented.empty());
  EXPECT_EQ(augmented.cols, 5 * (24 + 4) + 4);
  EXPECT_NE(testing::read_file(out / "eda" / "README.md").find("doi:10.17632/rscbjbr9sj.2"),
            std::string::npos);
  EXPECT_NE(log.str().find("PNEUMONIA"), std::string::npos);
  options.out_dir = (tree.dir / "eda").string();
  EXPECT_THROW(run_eda(options), Error);
  // A folder that holds files (a project's README.md, or an earlier eda) is not written into.
  const fs::path project = out / "project";
  fs::create_directories(project);
  std::ofstream(project / "README.md") << "# my project\n";
  options.out_dir = project.string();
  EXPECT_THROW(run_eda(options), Error);
  EXPECT_EQ(testing::read_file(project / "README.md"), "# my project\n");
  options.out_dir = (out / "eda").string();
  EXPECT_THROW(run_eda(options), Error);
}

}  // namespace
}  // namespace pneumo
