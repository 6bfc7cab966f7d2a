// `prepare_cache`, `load_cache` and `open_dataset` on a tiny image tree made here with
// OpenCV (PNG and JPEG, grey and colour, plus broken files): pixels and labels survive the round
// trip, numpy reads the cache, bad files are skipped and named, and nothing is written into the
// data directory.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sys/wait.h>

#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>

#include "cli/commands/flag_text.hpp"
#include "data_test_util.hpp"
#include "opencv/image_tree.hpp"
#include "pneumo/data.hpp"
#include "pneumo/error.hpp"
#include "pneumo/sampling.hpp"

namespace fs = std::filesystem;

namespace pneumo {
namespace {

using testing::ScratchDir;
using testing::Tree;
using testing::snapshot;
using testing::tagged_image;
using testing::write_image;

PrepareOptions options_for(const Tree& tree, const fs::path& out, std::ostream* log) {
  PrepareOptions o;
  o.data_dir = tree.dir.str();
  o.out_dir = out.string();
  o.size = tree.size;
  o.threads = 2;
  o.command = "test";
  o.log = log;
  return o;
}

TEST(PrepareCache, RoundTripSkipsBadFilesAndLeavesTheTreeAlone) {
  Tree tree;
  // Not read, each said so: a folder in a class folder, a third class, a file beside the
  // classes, a split of another name.
  fs::create_directories(tree.dir.str() + "/train/NORMAL/nested");
  fs::create_directories(tree.dir.str() + "/train/COVID");
  testing::write_file(tree.dir / "train" / "stray.jpeg", "x");
  testing::write_file(tree.dir / "train" / "PNEUMONIA" / "scan.dcm", "x");  // no image's name
  testing::write_file(tree.dir / "train" / "PNEUMONIA" / ".DS_Store", "x");  // hidden: nobody's data
  fs::create_directories(tree.dir.str() + "/validation/NORMAL");
  ScratchDir outside;
  const auto before = snapshot(tree.dir.path());
  std::ostringstream log;
  const PrepareReport report = prepare_cache(options_for(tree, outside / "cache", &log));
  for (const std::string& ignored :
       {"the folder " + tree.dir.str() + "/train/NORMAL/nested: only the image files directly in "
                                         "train/NORMAL/ are read",
        "the folder " + tree.dir.str() + "/train/COVID: only the folders NORMAL/ and PNEUMONIA/ "
                                         "in train/ are read",
        "the file " + tree.dir.str() + "/train/stray.jpeg: only the folders NORMAL/",
        "the folder " + tree.dir.str() + "/validation: only train/, val/ and test/ are read",
        "the file " + tree.dir.str() + "/train/PNEUMONIA/scan.dcm: only files named *.jpeg, "
                                       "*.jpg, *.png, *.bmp, *.tif or *.tiff in train/PNEUMONIA/ are read"})
    EXPECT_NE(log.str().find("prepare: warning: ignored " + ignored), std::string::npos)
        << ignored << "\n" << log.str();
  EXPECT_EQ(log.str().find(".DS_Store"), std::string::npos) << log.str();
  EXPECT_EQ(snapshot(tree.dir.path()), before) << "the data directory was modified";

  // Skipped and reported, each by name.
  ASSERT_EQ(report.skipped.size(), 3u) << log.str();
  EXPECT_EQ(report.skipped[0].file, "train/NORMAL/text.jpeg");
  EXPECT_EQ(report.skipped[1].file, "train/NORMAL/zero.jpeg");
  EXPECT_EQ(report.skipped[2].file, "train/PNEUMONIA/truncated.jpeg");
  EXPECT_NE(report.skipped[1].reason.find("empty"), std::string::npos);
  EXPECT_NE(report.skipped[2].reason.find("truncated"), std::string::npos);
  for (const auto& s : report.skipped)
    EXPECT_NE(log.str().find("warning: skipped " + s.file), std::string::npos) << log.str();
  // The written and skipped counts add up to the files looked at (12).
  EXPECT_NE(log.str().find("prepare: 9 images written; skipped 3 unreadable files; decoding 12 "
                           "files took "),
            std::string::npos)
      << log.str();
  EXPECT_NE(log.str().find("files/s on "), std::string::npos);
  // Not a terminal: plain progress lines (pneumo/progress_line.hpp), the last one at 12 of 12.
  EXPECT_NE(log.str().find("prepare: decoding  12/12  100%"), std::string::npos) << log.str();
  EXPECT_EQ(report.images, 9);
  EXPECT_EQ(report.splits, (std::vector<std::string>{"train", "test"}));

  // Loaded back: sorted order, labels, pixels.
  const Dataset dataset = load_cache((outside / "cache").string());
  EXPECT_EQ(dataset.size, 24);
  EXPECT_EQ(dataset.source_hash, image_tree_hash(tree.dir.str()));
  ASSERT_EQ(dataset.splits.size(), 2u);
  EXPECT_EQ(dataset.find("val"), nullptr);
  const Split& train = dataset.split("train");
  EXPECT_EQ(train.files, (std::vector<std::string>{
                             "train/NORMAL/a.png", "train/NORMAL/b.jpeg",
                             "train/NORMAL/c_colour.png", "train/PNEUMONIA/p1.jpeg",
                             "train/PNEUMONIA/p2.JPG", "train/PNEUMONIA/p3.png",
                             "train/PNEUMONIA/p4.jpeg"}));
  EXPECT_EQ(train.labels, (std::vector<uint8_t>{0, 0, 0, 1, 1, 1, 1}));
  for (const Split& split : dataset.splits)
    for (int64_t i = 0; i < split.count(); ++i) {
      const cv::Mat& want = tree.expected.at(split.files[static_cast<size_t>(i)]);
      ASSERT_EQ(std::memcmp(split.image(i), want.data, 24 * 24), 0) << split.files[static_cast<size_t>(i)];
    }
  // The colour image's grey is the luma of (B 10, G 100, R 200): 0.299 R + 0.587 G + 0.114 B.
  EXPECT_NEAR(train.image(2)[0], 0.299 * 200 + 0.587 * 100 + 0.114 * 10, 1.0);

  // meta.json says what it holds.
  const auto meta = nlohmann::json::parse(testing::read_file(outside / "cache" / "meta.json"));
  EXPECT_EQ(meta["splits"]["train"]["per_class"]["NORMAL"], 3);
  EXPECT_EQ(meta["splits"]["train"]["per_class"]["PNEUMONIA"], 4);
  EXPECT_EQ(meta["skipped"].size(), 3u);
  EXPECT_NE(meta["citation"].get<std::string>().find("10.17632/rscbjbr9sj.2"), std::string::npos);

  // No temporary directory left beside the cache.
  int entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(outside.path())) ++entries;
  EXPECT_EQ(entries, 1);
}

// A prepare stopped by a signal leaves its ".NAME.tmp-HOST-PID-N" folder: the next prepare beside
// it removes those of this host's processes that are gone, once an hour old, and leaves the others
// (another machine's, whose processes cannot be seen from here).
TEST(PrepareCache, RemovesTheTemporaryFoldersOfStoppedPrepares) {
  Tree tree;
  ScratchDir outside;
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  ::waitpid(child, nullptr, 0);  // a process that is gone
  char name[256] = {};
  ASSERT_EQ(::gethostname(name, sizeof name - 1), 0);
  std::string host(name);
  for (char& c : host)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-') c = '_';
  const std::string gone = std::to_string(child), alive = std::to_string(::getpid());
  const std::string here = ".cache.tmp-" + host + "-";
  const fs::path old_gone = outside / (here + gone + "-0");
  const fs::path new_gone = outside / (here + gone + "-1");
  const fs::path old_alive = outside / (here + alive + "-7");
  const fs::path other = outside / (".other.tmp-" + host + "-" + gone + "-0");
  const fs::path elsewhere = outside / (".cache.tmp-another-host-" + gone + "-0");
  for (const fs::path& folder : {old_gone, new_gone, old_alive, other, elsewhere}) {
    fs::create_directories(folder / "sub");
    testing::write_file(folder / "sub" / "train_images.npy", "partial");
  }
  const auto two_hours_ago = fs::file_time_type::clock::now() - std::chrono::hours(2);
  for (const fs::path& folder : {old_gone, old_alive, other, elsewhere})
    fs::last_write_time(folder, two_hours_ago);
  prepare_cache(options_for(tree, outside / "cache", nullptr));
  EXPECT_FALSE(fs::exists(old_gone));
  EXPECT_TRUE(fs::exists(new_gone)) << "younger than an hour: perhaps another machine's, live";
  EXPECT_TRUE(fs::exists(old_alive)) << "its process runs";
  EXPECT_TRUE(fs::exists(other)) << "beside another output";
  EXPECT_TRUE(fs::exists(elsewhere)) << "another machine's";
}

TEST(PrepareCache, NumpyLoadsTheCache) {
  if (!testing::python_numpy_available()) GTEST_SKIP() << "python3 with numpy not available";
  Tree tree;
  ScratchDir outside;
  prepare_cache(options_for(tree, outside / "cache", nullptr));
  const Dataset dataset = load_cache((outside / "cache").string());
  const Split& train = dataset.split("train");
  uint64_t sum = 0;
  for (uint8_t v : train.images) sum += v;
  const std::string cache = (outside / "cache").string();
  const std::string out = testing::run_python(
      "import json, numpy as np\n"
      "x = np.load('" + cache + "/train_images.npy')\n"
      "y = np.load('" + cache + "/train_labels.npy')\n"
      "meta = json.load(open('" + cache + "/meta.json'))\n"
      "files = open('" + cache + "/train_files.txt').read().splitlines()\n"
      "print(x.dtype, x.shape, int(x.astype(np.int64).sum()), y.dtype, y.tolist(), len(files), "
      "meta['splits']['train']['count'])\n");
  EXPECT_EQ(out, "uint8 (7, 24, 24) " + std::to_string(sum) + " uint8 [0, 0, 0, 1, 1, 1, 1] 7 7");
}

TEST(PrepareCache, RefusesToWriteIntoTheDataOrOverOtherFiles) {
  Tree tree;
  const auto before = snapshot(tree.dir.path());
  EXPECT_THROW(prepare_cache(options_for(tree, tree.dir / "cache", nullptr)), Error);
  EXPECT_THROW(prepare_cache(options_for(tree, tree.dir / "train" / "x", nullptr)), Error);
  EXPECT_THROW(prepare_cache(options_for(tree, tree.dir.path(), nullptr)), Error);
  EXPECT_EQ(snapshot(tree.dir.path()), before);

  ScratchDir outside;
  testing::write_file(outside / "busy" / "thesis.tex", "precious");
  EXPECT_THROW(prepare_cache(options_for(tree, outside / "busy", nullptr)), Error);
  EXPECT_EQ(testing::read_file(outside / "busy" / "thesis.tex"), "precious");

  // An empty directory and an older cache are fine; the cache is replaced whole.
  fs::create_directories(outside / "empty");
  prepare_cache(options_for(tree, outside / "empty", nullptr));
  EXPECT_TRUE(is_cache_dir((outside / "empty").string()));
  testing::write_file(outside / "empty" / "val_files.txt", "old\n");  // a split the tree lacks
  std::ostringstream log;
  prepare_cache(options_for(tree, outside / "empty", &log));
  EXPECT_FALSE(fs::exists(outside / "empty" / "val_files.txt"));
  EXPECT_NE(log.str().find("prepare: replaced a cache of "), std::string::npos) << log.str();
  EXPECT_EQ(load_cache((outside / "empty").string()).split("train").count(), 7);

  // A cache holding a file no cache holds is no longer only a cache: refused, the file kept.
  testing::write_file(outside / "empty" / "notes.txt", "mine");
  EXPECT_THROW(prepare_cache(options_for(tree, outside / "empty", nullptr)), Error);
  EXPECT_EQ(testing::read_file(outside / "empty" / "notes.txt"), "mine");

  // A new folder typed with a trailing slash (as a shell completes it): its temporary folder was
  // made inside it, so the rename found it not empty and refused after the whole decode.
  PrepareOptions slash = options_for(tree, outside / "new", nullptr);
  slash.out_dir += "/";
  prepare_cache(slash);
  EXPECT_EQ(load_cache((outside / "new").string()).split("train").count(), 7);

  PrepareOptions no_tree = options_for(tree, outside / "c2", nullptr);
  no_tree.data_dir = (outside / "busy").string();
  EXPECT_THROW(prepare_cache(no_tree), Error);
}

// A tree none of whose image files decodes is refused, naming one of them, and nothing is
// written (a cache of no image was written with status 0, for train to refuse later).
TEST(PrepareCache, ATreeWithNoReadableImageIsRefused) {
  ScratchDir tree, outside;
  testing::write_file(tree / "train/NORMAL/text.jpeg", "this is not an image\n");
  testing::write_file(tree / "train/PNEUMONIA/zero.png", "");
  PrepareOptions options;
  options.data_dir = tree.str();
  options.out_dir = (outside / "cache").string();
  options.size = 24;
  options.threads = 1;
  options.command = "test";
  try {
    prepare_cache(options);
    ADD_FAILURE() << "a cache of no image was written";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("none of the 2 image files under " + tree.str() +
                                         " could be read (train/NORMAL/text.jpeg: "),
              std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(outside / "cache"));
  EXPECT_TRUE(fs::is_empty(outside.path())) << "a temporary folder was left";
}

// Replacing a folder deletes what it holds, so a meta.json of its own does not make a folder a
// cache, and an output holding the data is never replaced.
TEST(PrepareCache, NeverReplacesAFolderThatIsNoCacheOrThatHoldsTheData) {
  Tree tree;
  ScratchDir outside;
  const fs::path project = outside / "project";
  testing::write_file(project / "meta.json", "{\"name\": \"my project\"}");
  testing::write_file(project / "notes.txt", "precious");
  const auto project_before = snapshot(project);
  auto expect_refused = [](const PrepareOptions& options, const std::string& part) {
    try {
      prepare_cache(options);
      ADD_FAILURE() << "prepared into " << options.out_dir;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  expect_refused(options_for(tree, project, nullptr), "not a pneumo cache");
  EXPECT_EQ(snapshot(project), project_before);
  // A meta.json of a cache's format, but beside files no cache holds.
  testing::write_file(project / "meta.json", "{\"format\": \"pneumo-cache\", \"splits\": {}}");
  expect_refused(options_for(tree, project, nullptr), "notes.txt");
  EXPECT_EQ(testing::read_file(project / "notes.txt"), "precious");

  // The data inside the output (a cache-like folder holding the tree): refused, the tree kept.
  const fs::path holder = outside / "holder";
  testing::write_file(holder / "meta.json", "{\"format\": \"pneumo-cache\", \"splits\": {}}");
  fs::copy(tree.dir.path(), holder / "tree", fs::copy_options::recursive);
  const auto holder_before = snapshot(holder);
  PrepareOptions inside = options_for(tree, holder, nullptr);
  inside.data_dir = (holder / "tree").string();
  expect_refused(inside, "lies inside the output");
  EXPECT_EQ(snapshot(holder), holder_before);
}

TEST(LoadCache, RefusesInconsistentCaches) {
  Tree tree;
  ScratchDir outside;
  const fs::path cache = outside / "cache";
  prepare_cache(options_for(tree, cache, nullptr));
  const std::string meta_text = testing::read_file(cache / "meta.json");
  auto expect_refused = [&](const std::string& meta, const std::string& part) {
    testing::write_file(cache / "meta.json", meta);
    try {
      load_cache(cache.string());
      ADD_FAILURE() << "accepted; expected an error with '" << part << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  auto meta = nlohmann::json::parse(meta_text);
  expect_refused("{not json", "not valid JSON");
  auto m = meta;
  m["splits"]["train"]["count"] = 8;
  expect_refused(m.dump(), "train_images.npy");
  m = meta;
  m["size"] = 25;
  expect_refused(m.dump(), "train_images.npy");
  m = meta;
  m["splits"]["train"]["images"] = "../../etc/passwd";
  expect_refused(m.dump(), "bad file name");
  m = meta;
  m["splits"]["train"]["per_class"]["NORMAL"] = 2;
  expect_refused(m.dump(), "NORMAL labels");
  m = meta;
  m["format_version"] = 99;
  expect_refused(m.dump(), "format version 99");
  m = meta;
  m.erase("size");
  expect_refused(m.dump(), "field \"size\" is missing or of the wrong type");
  m = meta;
  m["size"] = "150";
  expect_refused(m.dump(), "field \"size\" is missing or of the wrong type");
  testing::write_file(cache / "meta.json", meta_text);
  testing::write_file(cache / "train_files.txt", "only/one/line\n");
  expect_refused(meta_text, "train_files.txt");
}

// The tree tests' options: 24 px images, caches under `cache_root`.
OpenDatasetOptions at_24_px(const std::string& cache_root) {
  OpenDatasetOptions options;
  options.size = 24;
  options.cache_root = cache_root;
  return options;
}

TEST(OpenDataset, PreparesATreeOnceAndReusesItWhileUnchanged) {
  Tree tree;
  ScratchDir cache_root;
  OpenDatasetOptions options = at_24_px(cache_root.str());
  std::ostringstream log1, log2, log3;
  options.log = &log1;
  const Dataset first = open_dataset(tree.dir.str(), options);
  EXPECT_NE(log1.str().find("prepare: wrote"), std::string::npos) << log1.str();
  const std::string cache = default_cache_dir_for(tree.dir.str(), 24, cache_root.str());
  EXPECT_EQ(first.cache_dir, cache);
  EXPECT_TRUE(is_cache_dir(cache));

  options.log = &log2;
  const Dataset second = open_dataset(tree.dir.str(), options);
  EXPECT_NE(log2.str().find("using the cache"), std::string::npos) << log2.str();
  // The files its prepare skipped (the tree's three bad ones) are said again on every reuse.
  EXPECT_NE(log2.str().find("the cache leaves out 3 files its prepare skipped"), std::string::npos)
      << log2.str();
  EXPECT_NE(log2.str().find("train/NORMAL/text.jpeg ("), std::string::npos) << log2.str();
  EXPECT_EQ(log2.str().find("prepare:"), std::string::npos) << log2.str();
  EXPECT_EQ(second.split("train").images, first.split("train").images);
  // And when that cache is given itself (`--data CACHE`, as a prepared one is).
  std::ostringstream log_cache;
  options.log = &log_cache;
  open_dataset(cache, options);
  EXPECT_NE(log_cache.str().find("the cache leaves out 3 files its prepare skipped"),
            std::string::npos)
      << log_cache.str();

  // A new image changes the hash: prepared again, now with it.
  write_image(tree.dir / "train/NORMAL/d.png", tagged_image(30, 30, 12));
  options.log = &log3;
  const Dataset third = open_dataset(tree.dir.str(), options);
  EXPECT_NE(log3.str().find("prepare: wrote"), std::string::npos) << log3.str();
  EXPECT_EQ(third.split("train").count(), 8);
  // A split the tree lacks is named against the tree the user gave, not its hidden cache.
  try {
    third.split("val");
    ADD_FAILURE() << "the tree has no val split";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the image tree " + tree.dir.str() + " has no 'val'"),
              std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find(cache), std::string::npos) << e.what();
  }

  // Its meta.json current but an array cut short (a full disk, a copy stopped half-way): made
  // again once, not refused on every later run with a file in a hidden folder named.
  fs::resize_file(fs::path(cache) / "train_images.npy", 200);
  std::ostringstream log4;
  options.log = &log4;
  const Dataset fourth = open_dataset(tree.dir.str(), options);
  EXPECT_NE(log4.str().find("cannot be read ("), std::string::npos) << log4.str();
  EXPECT_NE(log4.str().find("prepare: wrote"), std::string::npos) << log4.str();
  EXPECT_EQ(fourth.split("train").images, third.split("train").images);

  // A tree keeping a meta.json of its own is still a tree (train and evaluate refused it as "not a
  // pneumo cache" while prepare read it).
  testing::write_file(tree.dir / "meta.json", R"({"dataset": "chest x-ray"})");
  EXPECT_FALSE(is_cache_dir(tree.dir.str()));
  EXPECT_EQ(open_dataset(tree.dir.str(), options).split("train").count(), 8);
  fs::remove(tree.dir / "meta.json");

  // A cache is opened as it is; a size it does not hold is refused.
  EXPECT_EQ(open_dataset(cache).size, 24);
  EXPECT_THROW(
      try { open_dataset(cache).split("val"); } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("cache " + cache + " has no 'val'"), std::string::npos)
            << e.what();
        throw;
      },
      Error);
  OpenDatasetOptions other_size;
  other_size.size = 32;
  EXPECT_THROW(open_dataset(cache, other_size), Error);
  EXPECT_THROW(open_dataset(cache_root.str() + "/nothing-here"), Error);
}

// A tree's cache decoded by another decoder (an older OpenCV) is prepared again: its pixels may
// differ from what this build decodes.
TEST(OpenDataset, ACacheFromAnotherDecoderIsPreparedAgain) {
  Tree tree;
  ScratchDir cache_root;
  OpenDatasetOptions options = at_24_px(cache_root.str());
  open_dataset(tree.dir.str(), options);
  const fs::path meta_path =
      fs::path(default_cache_dir_for(tree.dir.str(), 24, cache_root.str())) / "meta.json";
  std::ifstream in(meta_path);
  nlohmann::json meta = nlohmann::json::parse(in);
  in.close();
  meta["settings"]["decoder"] = "OpenCV 3.2.0: cv::imdecode";
  testing::write_file(meta_path, meta.dump());
  std::ostringstream log;
  options.log = &log;
  open_dataset(tree.dir.str(), options);
  EXPECT_NE(log.str().find("was decoded by OpenCV 3.2.0: cv::imdecode, this pneumo decodes with "
                           "OpenCV " CV_VERSION),
            std::string::npos)
      << log.str();
  EXPECT_NE(log.str().find("prepare: wrote"), std::string::npos) << log.str();
}

// Nothing is written into an image tree: a cache root inside it is refused before any folder is
// made there, and the message says how to move it.
TEST(OpenDataset, ACacheRootInsideTheTreeIsRefusedBeforeAnythingIsMade) {
  Tree tree;
  OpenDatasetOptions options = at_24_px((tree.dir / ".cache").string());
  try {
    open_dataset(tree.dir.str(), options);
    ADD_FAILURE() << "a cache was made inside the tree";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("inside the tree"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("PNEUMO_CACHE_DIR"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(tree.dir / ".cache"));
}

TEST(OpenDataset, TheSampleTreeHasItsDocumentedCounts) {
  const std::string sample = testing::sample_dataset_dir();
  if (sample.empty()) GTEST_SKIP() << "data/sample absent";
  ScratchDir cache_root;
  OpenDatasetOptions options;
  options.cache_root = cache_root.str();
  options.log = nullptr;
  const Dataset d = open_dataset(sample, options);
  EXPECT_EQ(d.size, 150);
  EXPECT_EQ(d.split("train").class_counts(), (std::array<int64_t, 2>{60, 60}));
  EXPECT_EQ(d.split("val").class_counts(), (std::array<int64_t, 2>{8, 8}));
  EXPECT_EQ(d.split("test").class_counts(), (std::array<int64_t, 2>{30, 30}));
  // Carving works on it and keeps patients whole.
  const auto splits = make_train_val(d, cli::parse_val_split("0.2"));
  EXPECT_EQ(splits.train.count() + splits.val.count(), 120);
  EXPECT_GT(splits.val.count(), 0);
  std::set<std::string> train_patients;
  for (const std::string& file : splits.train.files) train_patients.insert(patient_id(file));
  for (const std::string& file : splits.val.files)
    EXPECT_EQ(train_patients.count(patient_id(file)), 0u) << file << " shares its patient";
}

}  // namespace
}  // namespace pneumo
