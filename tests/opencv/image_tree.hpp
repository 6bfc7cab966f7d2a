// A tiny image tree for the OpenCV data tests, made with OpenCV in a scratch directory: PNG and
// JPEG, grey and colour, odd sizes, plus an empty file, a text file named .jpeg and a truncated
// JPEG; and a snapshot of a directory to prove nothing was written into it.
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "data_test_util.hpp"

namespace pneumo::testing {

namespace fs = std::filesystem;

// A textured grey image whose mean encodes `tag`, so the test can tell files apart.
inline cv::Mat tagged_image(int width, int height, int tag) {
  cv::Mat m(height, width, CV_8UC1);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      m.at<uint8_t>(y, x) = static_cast<uint8_t>(std::clamp(tag * 10 + ((x / 8 + y / 8) % 2) * 6, 0, 255));
  return m;
}

inline void write_image(const fs::path& path, const cv::Mat& image) {
  fs::create_directories(path.parent_path());
  ASSERT_TRUE(cv::imwrite(path.string(), image, {cv::IMWRITE_JPEG_QUALITY, 95})) << path;
}

// The tree: train/NORMAL 3 good + 2 bad, train/PNEUMONIA 4 good + 1 bad, test 1 + 1, no val.
struct Tree {
  ScratchDir dir;
  std::map<std::string, cv::Mat> expected;  // relative path -> expected 24x24 pixels
  int size = 24;

  Tree() {
    auto add = [&](const std::string& rel, const cv::Mat& encoded_image) {
      write_image(dir / rel, encoded_image);
      cv::Mat gray = cv::imread((dir / rel).string(), cv::IMREAD_GRAYSCALE), small;
      cv::resize(gray, small, cv::Size(size, size), 0, 0, cv::INTER_AREA);
      expected[rel] = small;
    };
    add("train/NORMAL/a.png", tagged_image(40, 30, 1));
    add("train/NORMAL/b.jpeg", tagged_image(200, 100, 2));
    // Colour PNG: decoded to grey by the luma weights.
    cv::Mat colour(50, 60, CV_8UC3, cv::Scalar(10, 100, 200));
    add("train/NORMAL/c_colour.png", colour);
    add("train/PNEUMONIA/p1.jpeg", tagged_image(24, 24, 5));
    add("train/PNEUMONIA/p2.JPG", tagged_image(31, 47, 6));
    add("train/PNEUMONIA/p3.png", tagged_image(300, 310, 7));
    add("train/PNEUMONIA/p4.jpeg", tagged_image(16, 16, 8));
    add("test/NORMAL/t1.png", tagged_image(64, 64, 9));
    add("test/PNEUMONIA/t2.jpeg", tagged_image(64, 64, 10));
    // Broken files.
    testing::write_file(dir / "train/NORMAL/zero.jpeg", "");
    testing::write_file(dir / "train/NORMAL/text.jpeg", "this is not an image\n");
    const std::string jpeg = testing::read_file(dir / "train/PNEUMONIA/p1.jpeg");
    testing::write_file(dir / "train/PNEUMONIA/truncated.jpeg", jpeg.substr(0, jpeg.size() / 2));
    // Not images: ignored without a word.
    testing::write_file(dir / "train/NORMAL/.DS_Store", "x");
    testing::write_file(dir / "train/NORMAL/notes.txt", "x");
  }
};

// Every path, size and mtime under a directory.
inline std::map<std::string, std::pair<uintmax_t, int64_t>> snapshot(const fs::path& root) {
  std::map<std::string, std::pair<uintmax_t, int64_t>> files;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    struct stat info {};
    ::stat(e.path().c_str(), &info);
    files[fs::relative(e.path(), root).string()] = {
        e.is_regular_file() ? e.file_size() : 0,
        static_cast<int64_t>(info.st_mtim.tv_sec) * 1000000000 + info.st_mtim.tv_nsec};
  }
  return files;
}

}  // namespace pneumo::testing
