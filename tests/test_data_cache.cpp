// The cache reader and the tree plumbing without OpenCV: a cache written by hand (write_npy +
// meta.json) loads and opens; the tree hash notices added and touched files; default cache
// locations; and, in builds without OpenCV, the clear refusal to decode an image tree.
#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include "data_test_util.hpp"
#include "pneumo/data.hpp"
#include "pneumo/error.hpp"
#include "pneumo/npy.hpp"

namespace fs = std::filesystem;

namespace pneumo {
namespace {

using testing::ScratchDir;

// A 2-split cache of 4x4 images: train 3 images (labels 0, 1, 1), test 1 image (label 0).
void write_hand_made_cache(const fs::path& dir) {
  fs::create_directories(dir);
  std::vector<uint8_t> train(3 * 16), test(16, 200);
  for (size_t i = 0; i < train.size(); ++i) train[i] = static_cast<uint8_t>(i);
  const uint8_t train_labels[3] = {0, 1, 1}, test_labels[1] = {0};
  write_npy((dir / "train_images.npy").string(), NpyType::UInt8, {3, 4, 4}, train.data());
  write_npy((dir / "train_labels.npy").string(), NpyType::UInt8, {3}, train_labels);
  write_npy((dir / "test_images.npy").string(), NpyType::UInt8, {1, 4, 4}, test.data());
  write_npy((dir / "test_labels.npy").string(), NpyType::UInt8, {1}, test_labels);
  testing::write_file(dir / "train_files.txt",
                      "train/NORMAL/IM-0001-0001.jpeg\ntrain/PNEUMONIA/person1_virus_1.jpeg\n"
                      "train/PNEUMONIA/person1_virus_2.jpeg\n");
  testing::write_file(dir / "test_files.txt", "test/NORMAL/IM-0002-0001.jpeg\n");
  testing::write_file(dir / "meta.json", R"({
    "format": "pneumo-cache", "format_version": 1, "size": 4,
    "classes": ["NORMAL", "PNEUMONIA"],
    "splits": {
      "train": {"count": 3, "per_class": {"NORMAL": 1, "PNEUMONIA": 2}},
      "test": {"count": 1, "images": "test_images.npy", "labels": "test_labels.npy",
               "files": "test_files.txt"}
    },
    "source": {"hash": "fnv1a64:0000000000000000"}
  })");
}

TEST(LoadCache, ReadsAHandMadeCache) {
  ScratchDir dir;
  write_hand_made_cache(dir / "cache");
  const std::string cache = (dir / "cache").string();
  EXPECT_TRUE(is_cache_dir(cache));
  EXPECT_FALSE(is_image_tree(cache));
  const Dataset d = open_dataset(cache);
  EXPECT_EQ(d.size, 4);
  EXPECT_EQ(d.source_hash, "fnv1a64:0000000000000000");
  ASSERT_EQ(d.splits.size(), 2u);
  EXPECT_EQ(d.splits[0].name, "train");
  EXPECT_EQ(d.splits[1].name, "test");
  EXPECT_EQ(d.split("train").labels, (std::vector<uint8_t>{0, 1, 1}));
  EXPECT_EQ(d.split("train").image(2)[15], 47);
  EXPECT_EQ(d.split("test").files[0], "test/NORMAL/IM-0002-0001.jpeg");
  EXPECT_EQ(d.split("train").class_counts(), (std::array<int64_t, 2>{1, 2}));
  EXPECT_THROW(d.split("val"), Error);
  EXPECT_EQ(d.source_dir, "");  // not recorded by this hand-made meta.json
  // The source tree's path, read by eda only: a string is kept; another type is as good as none,
  // not a broken cache.
  for (const char* path : {"\"/data/xray\"", "null", "7"}) {
    std::string meta = testing::read_file(dir / "cache" / "meta.json");
    meta.replace(meta.find("\"source\": {"), std::string("\"source\": {").size(),
                 std::string("\"source\": {\"path\": ") + path + ", ");
    testing::write_file(dir / "cache" / "meta.json", meta);
    const Dataset again = load_cache(cache);
    EXPECT_EQ(again.source_dir, path[0] == '"' ? "/data/xray" : "") << path;
    write_hand_made_cache(dir / "cache");
  }
  // A label outside {0, 1} is refused with the file named.
  const uint8_t bad_labels[3] = {0, 1, 2};
  write_npy((dir / "cache" / "train_labels.npy").string(), NpyType::UInt8, {3}, bad_labels);
  try {
    load_cache(cache);
    ADD_FAILURE() << "label 2 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("train_labels.npy"), std::string::npos) << e.what();
  }
}

// A split whose every file prepare skipped is recorded with no image; asking for it names the
// cache and where the reasons are (an internal check, "an image set needs at least one image",
// stopped evaluate and train --val-split official on it).
TEST(LoadCache, ASplitWithNoImageIsNamedWhenAskedFor) {
  ScratchDir dir;
  write_hand_made_cache(dir / "cache");
  write_npy((dir / "cache" / "test_images.npy").string(), NpyType::UInt8, {0, 4, 4}, nullptr);
  write_npy((dir / "cache" / "test_labels.npy").string(), NpyType::UInt8, {0}, nullptr);
  testing::write_file(dir / "cache" / "test_files.txt", "");
  std::string meta = testing::read_file(dir / "cache" / "meta.json");
  meta.replace(meta.find("\"count\": 1"), std::string("\"count\": 1").size(), "\"count\": 0");
  testing::write_file(dir / "cache" / "meta.json", meta);
  const Dataset d = load_cache((dir / "cache").string());
  EXPECT_EQ(d.split("train").count(), 3);
  try {
    d.split("test");
    ADD_FAILURE() << "an empty split was handed out";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("its 'test' split holds no image"), std::string::npos) << message;
    EXPECT_NE(message.find("meta.json"), std::string::npos) << message;
  }
}

TEST(ImageTree, HashSeesAddedRemovedAndTouchedImagesOnly) {
  ScratchDir tree;
  testing::write_file(tree / "train/NORMAL/a.jpeg", "aaaa");
  testing::write_file(tree / "train/PNEUMONIA/b.png", "bb");
  EXPECT_TRUE(is_image_tree(tree.str()));
  const std::string h1 = image_tree_hash(tree.str());
  EXPECT_EQ(h1.rfind("fnv1a64:", 0), 0u);
  EXPECT_EQ(h1.size(), 8u + 16u);
  EXPECT_EQ(image_tree_hash(tree.str()), h1);
  // Files that are not images, hidden files and other folders do not count.
  testing::write_file(tree / "train/NORMAL/readme.txt", "x");
  testing::write_file(tree / "train/NORMAL/.DS_Store", "x");
  testing::write_file(tree / "other/NORMAL/c.jpeg", "x");
  EXPECT_EQ(image_tree_hash(tree.str()), h1);
  testing::write_file(tree / "test/NORMAL/c.jpeg", "c");
  fs::create_directories(tree / "test/PNEUMONIA");  // a split needs both class folders
  const std::string h2 = image_tree_hash(tree.str());
  EXPECT_NE(h2, h1);
  // Same bytes, new modification time.
  fs::last_write_time(tree / "train/NORMAL/a.jpeg",
                      fs::last_write_time(tree / "train/NORMAL/a.jpeg") + std::chrono::seconds(5));
  const std::string h3 = image_tree_hash(tree.str());
  EXPECT_NE(h3, h2);
  // Permissions changed, nothing else (a file skipped as unreadable, then made readable).
  fs::permissions(tree / "train/NORMAL/a.jpeg", fs::perms::owner_write, fs::perm_options::remove);
  const std::string h4 = image_tree_hash(tree.str());
  EXPECT_NE(h4, h3);
  // Rewritten with the same size, its old modification time put back (cp -p, rsync -t, touch -r).
  const auto old_time = fs::last_write_time(tree / "train/PNEUMONIA/b.png");
  fs::remove(tree / "train/PNEUMONIA/b.png");
  testing::write_file(tree / "train/PNEUMONIA/b.png", "BB");
  fs::last_write_time(tree / "train/PNEUMONIA/b.png", old_time);
  EXPECT_NE(image_tree_hash(tree.str()), h4);
  ScratchDir empty;
  EXPECT_FALSE(is_image_tree(empty.str()));
  EXPECT_THROW(image_tree_hash(empty.str()), Error);
}

TEST(ImageTree, DefaultCacheLocation) {
  ScratchDir tree, root;
  const std::string a = default_cache_dir_for(tree.str(), 150, root.str());
  EXPECT_EQ(fs::path(a).parent_path(), root.path());
  EXPECT_EQ(fs::path(a).filename().string().rfind("tree-", 0), 0u);
  EXPECT_NE(a, default_cache_dir_for(tree.str(), 224, root.str()));  // size is part of the key
  EXPECT_EQ(a, default_cache_dir_for(tree.str() + "/.", 150, root.str()));
  ::setenv("PNEUMO_CACHE_DIR", root.str().c_str(), 1);
  EXPECT_EQ(default_cache_root(), root.str());
  ::unsetenv("PNEUMO_CACHE_DIR");
  EXPECT_THROW(open_dataset(root.str()), Error);  // neither a cache nor a tree
}

#ifndef PNEUMO_WITH_OPENCV
TEST(ImageTree, WithoutOpenCVATreeIsRefusedClearly) {
  ScratchDir tree, root;
  testing::write_file(tree / "train/NORMAL/a.jpeg", "aaaa");
  testing::write_file(tree / "train/PNEUMONIA/b.jpeg", "bbbb");
  OpenDatasetOptions options;
  options.cache_root = root.str();
  options.log = nullptr;
  try {
    open_dataset(tree.str(), options);
    ADD_FAILURE() << "an image tree was accepted without OpenCV";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("OpenCV"), std::string::npos) << what;
    EXPECT_NE(what.find("pneumo prepare"), std::string::npos) << what;
  }
  EdaOptions eda;
  eda.data = tree.str();
  eda.out_dir = (root / "eda").string();
  EXPECT_THROW(run_eda(eda), Error);
}
#endif

}  // namespace
}  // namespace pneumo
