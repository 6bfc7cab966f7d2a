// `run_eda` on the tiny generated tree: counts, both PNG grids with the documented geometry, the
// README with the dataset's citation, and nothing written into the data. The original images'
// shapes on a tree made for them.
#include <gtest/gtest.h>

#include <chrono>
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
  // Seven sizes, none shared by many: every image is among "the others", and no note.
  const auto& normal_shapes = counts["original_sizes"]["train"]["NORMAL"];
  EXPECT_EQ(normal_shapes["images"], 3);
  EXPECT_EQ(normal_shapes["others"], 3);
  EXPECT_FALSE(normal_shapes.contains("common_size"));
  EXPECT_EQ(counts["original_sizes"]["notes"], 0);
  const cv::Mat samples = cv::imread((out / "eda" / "samples.png").string(), cv::IMREAD_UNCHANGED);
  ASSERT_FALSE(samples.empty());
  EXPECT_EQ(samples.cols, 3 * (24 + 4) + 4);
  const cv::Mat augmented = cv::imread((out / "eda" / "augmented.png").string(), cv::IMREAD_UNCHANGED);
  ASSERT_FALSE(augmented.empty());
  EXPECT_EQ(augmented.cols, 5 * (24 + 4) + 4);
  EXPECT_NE(testing::read_file(out / "eda" / "README.md").find("doi:10.17632/rscbjbr9sj.2"),
            std::string::npos);
  // The log says what was written, every file of it.
  const size_t wrote = log.str().find("eda: wrote ");
  ASSERT_NE(wrote, std::string::npos) << log.str();
  const std::string wrote_line = log.str().substr(wrote, log.str().find('\n', wrote) - wrote);
  for (const std::string& file : report.files_written)
    EXPECT_NE(wrote_line.find(file), std::string::npos) << file << " missing from: " << wrote_line;
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

// The original images' shapes, from their headers: a size many share is counted apart (images
// resized before they reached us say nothing of their shape), the others' width/height quartiles
// (linear interpolation), and a note where the medians differ by more than 10% between classes or
// between splits. Read through a cache too (the tree recorded in its meta.json); a tree no longer
// there is said, not guessed.
TEST(Eda, OriginalShapesByClassAndSplitWithNotesWhereTheyDiffer) {
  ScratchDir tree, out, cache_root;
  int tag = 0;
  const auto add = [&](const std::string& folder, int width, int height, int copies) {
    for (int k = 0; k < copies; ++k, ++tag)
      testing::write_image(tree / folder / ("i" + std::to_string(tag) + ".png"),
                           testing::tagged_image(width, height, tag % 20));
  };
  add("train/NORMAL", 24, 24, 16);  // 16 of 21: a shared size
  for (int width : {33, 36, 39, 42}) add("train/NORMAL", width, 30, 1);  // 1.1 1.2 1.3 1.4
  add("train/NORMAL", 40, 32, 1);                                      // 1.25
  add("train/PNEUMONIA", 24, 24, 16);
  for (int width : {45, 48, 51, 54, 57}) add("train/PNEUMONIA", width, 30, 1);  // 1.5 ... 1.9
  add("test/NORMAL", 45, 30, 5);     // 1.5: wider than train's NORMALs (1.25)
  add("test/PNEUMONIA", 48, 30, 5);  // 1.6: within 10% of test's NORMALs and train's PNEUMONIAs

  EdaOptions options;
  options.data = tree.str();
  options.out_dir = (out / "tree").string();
  options.size = 16;
  options.cache_root = cache_root.str();
  std::ostringstream log;
  options.log = &log;
  run_eda(options);
  const auto counts = nlohmann::json::parse(testing::read_file(out / "tree" / "counts.json"));
  const auto& shapes = counts["original_sizes"];
  EXPECT_EQ(shapes["read"], true);
  const auto& normal = shapes["train"]["NORMAL"];
  EXPECT_EQ(normal["images"], 21);
  EXPECT_EQ(normal["common_size"], nlohmann::json({24, 24}));
  EXPECT_EQ(normal["common_count"], 16);
  EXPECT_EQ(normal["others"], 5);
  const auto quartiles = [](const nlohmann::json& entry, double q1, double q2, double q3) {
    const auto& q = entry["width_over_height_quartiles"];
    EXPECT_NEAR(q[0].get<double>(), q1, 1e-12) << entry;
    EXPECT_NEAR(q[1].get<double>(), q2, 1e-12) << entry;
    EXPECT_NEAR(q[2].get<double>(), q3, 1e-12) << entry;
  };
  quartiles(normal, 1.2, 1.25, 1.3);
  quartiles(shapes["train"]["PNEUMONIA"], 1.6, 1.7, 1.8);
  quartiles(shapes["test"]["NORMAL"], 1.5, 1.5, 1.5);
  EXPECT_FALSE(shapes["test"]["NORMAL"].contains("common_size")) << "5 images: too few to tell";
  EXPECT_EQ(shapes["notes"], 2);
  EXPECT_NE(log.str().find("train    NORMAL          21  16 at 24 x 24"), std::string::npos)
      << log.str();
  EXPECT_NE(log.str().find("note: in train, PNEUMONIA images are wider than NORMAL ones (median "
                           "width/height 1.70 against 1.25, images not of a shared size)"),
            std::string::npos)
      << log.str();
  EXPECT_NE(log.str().find("note: NORMAL images are wider in test than in train (median "
                           "width/height 1.50 against 1.25, images not of a shared size)"),
            std::string::npos)
      << log.str();

  // A class all of one shared size, the other of another (20 each, enough for a shared size):
  // nothing is left among "the others", so the note compares all images.
  {
    ScratchDir plain, plain_out, plain_cache;
    for (int k = 0; k < 20; ++k) {
      testing::write_image(plain / "train/NORMAL" / ("n" + std::to_string(k) + ".png"),
                           testing::tagged_image(40, 40, k));
      testing::write_image(plain / "train/PNEUMONIA" / ("p" + std::to_string(k) + ".png"),
                           testing::tagged_image(60, 40, k));
    }
    EdaOptions o = options;
    o.data = plain.str();
    o.out_dir = (plain_out / "eda").string();
    o.cache_root = plain_cache.str();
    std::ostringstream plain_log;
    o.log = &plain_log;
    run_eda(o);
    EXPECT_NE(plain_log.str().find("note: in train, PNEUMONIA images are wider than NORMAL ones "
                                   "(median width/height 1.50 against 1.00, all images)"),
              std::string::npos)
        << plain_log.str();
  }

  // Through the cache: the same shapes, read from the tree its meta.json names.
  options.data = counts["source"].get<std::string>();
  options.out_dir = (out / "cache").string();
  run_eda(options);
  const auto again = nlohmann::json::parse(testing::read_file(out / "cache" / "counts.json"));
  auto through_cache = again["original_sizes"];
  EXPECT_EQ(through_cache["tree_changed_since_cache"], false);
  through_cache["tree_changed_since_cache"] = nullptr;  // given as a tree above: not compared
  EXPECT_EQ(through_cache, shapes);
  // A tree touched since the cache was made: its shapes are read, and the change is said.
  const fs::path touched = fs::directory_iterator(tree / "test/NORMAL")->path();
  fs::last_write_time(touched, fs::last_write_time(touched) + std::chrono::seconds(5));
  options.out_dir = (out / "touched").string();
  log.str("");
  run_eda(options);
  EXPECT_EQ(nlohmann::json::parse(testing::read_file(out / "touched" / "counts.json"))
                ["original_sizes"]["tree_changed_since_cache"],
            true);
  EXPECT_NE(log.str().find("its files' hash is not the one the cache recorded"), std::string::npos)
      << log.str();
  // The tree moved away: said, and nothing else about shapes.
  fs::rename(tree.path(), tree.path().string() + "-moved");
  options.out_dir = (out / "moved").string();
  log.str("");
  run_eda(options);
  fs::rename(tree.path().string() + "-moved", tree.path());
  const auto moved = nlohmann::json::parse(testing::read_file(out / "moved" / "counts.json"));
  EXPECT_EQ(moved["original_sizes"]["read"], false);
  EXPECT_NE(log.str().find("original sizes: not read (the image tree " + tree.str() +
                           " is not there)"),
            std::string::npos)
      << log.str();
}

}  // namespace
}  // namespace pneumo
