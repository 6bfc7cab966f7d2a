// Bad and odd image files, generated here with OpenCV: what is skipped (with a warning naming the
// file and why), what is accepted and how it is decoded (PNG, BMP, 16-bit, colour, 1x1, very
// large, names with spaces, commas and UTF-8), and what stops `pneumo prepare` (missing, empty or
// half-made trees, an unwritable output). The cases without images are in ../test_bad_input.cpp;
// docs/bad-input.md lists the decisions.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "bad_input_util.hpp"
#include "data/cache_internal.hpp"
#include "opencv/image_tree.hpp"
#include "opencv/png_util.hpp"
#include "pneumo/data.hpp"
#include "pneumo/error.hpp"
#include "temp_dir.hpp"

namespace fs = std::filesystem;

namespace pneumo {
namespace {

using testing::shell_quoted;
using testing::stopped_with;
using testing::tagged_image;

constexpr int kSize = 24;

void write_image(const fs::path& path, const cv::Mat& image, const std::vector<int>& params = {}) {
  fs::create_directories(path.parent_path());
  ASSERT_TRUE(cv::imwrite(path.string(), image, params)) << path;
}

// A grey image with texture and noise, so its JPEG has a few kilobytes of compressed data.
cv::Mat noisy_image(int width, int height, int seed) {
  cv::Mat m = tagged_image(width, height, 8);
  cv::Mat noise(height, width, CV_8UC1);
  cv::RNG(static_cast<uint64_t>(seed)).fill(noise, cv::RNG::UNIFORM, 0, 60);
  return m + noise;
}

// The JPEG's entropy-coded data: from after the start-of-scan header to the end-of-image marker.
std::pair<size_t, size_t> jpeg_scan_data(const std::string& jpeg) {
  const size_t sos = jpeg.find("\xFF\xDA");
  const size_t length = (static_cast<uint8_t>(jpeg[sos + 2]) << 8) | static_cast<uint8_t>(jpeg[sos + 3]);
  return {sos + 2 + length, jpeg.rfind("\xFF\xD9")};
}

// `count` bytes of the compressed data starting at `at` XORed with 0x5A, leaving the byte
// stuffing (FF 00) and markers alone: the JPEG keeps its structure but its content is garbled.
// Little-endian fields, for the files built by hand below.
void put16(std::string& s, uint32_t v) { s += char(v & 0xFF), s += char((v >> 8) & 0xFF); }
void put32(std::string& s, uint32_t v) { put16(s, v & 0xFFFF), put16(s, v >> 16); }

// A grey 8-bit TIFF whose image directory comes first (as many writers put it), one strip of
// width x height bytes after it.
std::string tiff_bytes(uint32_t width, uint32_t height) {
  std::string s = "II*";
  s += '\0';
  put32(s, 8);  // the directory, right after the header
  const uint32_t entries = 9, data = 8 + 2 + 12 * entries + 4;
  put16(s, entries);
  const auto entry = [&](uint32_t tag, uint32_t type, uint32_t value) {
    put16(s, tag), put16(s, type), put32(s, 1), put32(s, value);
  };
  entry(256, 4, width), entry(257, 4, height), entry(258, 3, 8), entry(259, 3, 1);
  entry(262, 3, 1), entry(273, 4, data), entry(277, 3, 1), entry(278, 4, height);
  entry(279, 4, width * height);
  put32(s, 0);  // no next directory
  for (uint32_t i = 0; i < width * height; ++i) s += char(i * 7);
  return s;
}

// An 8-bit run-length (RLE8) BMP of width x height, each row one run, ended by its end-of-bitmap
// code.
std::string rle8_bmp_bytes(uint32_t width, uint32_t height) {
  std::string codes;
  for (uint32_t row = 0; row < height; ++row) codes += char(width), codes += char(row * 9), codes += std::string(2, '\0');
  codes += '\0', codes += '\1';
  const uint32_t offset = 14 + 40 + 256 * 4;
  std::string s = "BM";
  put32(s, offset + static_cast<uint32_t>(codes.size())), put32(s, 0), put32(s, offset);
  put32(s, 40), put32(s, width), put32(s, height), put16(s, 1), put16(s, 8), put32(s, 1);
  put32(s, static_cast<uint32_t>(codes.size())), put32(s, 2835), put32(s, 2835), put32(s, 256),
      put32(s, 0);
  for (uint32_t i = 0; i < 256; ++i) put32(s, i * 0x010101u);  // a grey palette
  return s + codes;
}

std::string garble_jpeg(std::string jpeg, size_t at, size_t count) {
  for (size_t i = at; i < at + count && i < jpeg.size(); ++i) {
    const auto byte = static_cast<uint8_t>(jpeg[i]);
    if (byte == 0xFF || static_cast<uint8_t>(jpeg[i - 1]) == 0xFF) continue;
    const auto garbled = static_cast<uint8_t>(byte ^ 0x5A);
    jpeg[i] = static_cast<char>(garbled == 0xFF ? 0xFE : garbled);
  }
  return jpeg;
}

// The corpus: good and bad files of every kind under train/, a few good ones under test/.
struct Corpus {
  testing::TempDir scratch;
  fs::path tree = fs::path(scratch.path()) / "tree";
  // File (relative to the tree) -> the word its skip reason must hold.
  std::map<std::string, std::string> bad;
  // Good files whose names need care.
  std::string spaced = "train/NORMAL/with two  spaces.jpeg";
  std::string unicode = "train/NORMAL/thorax ünïcödé 肺炎.png";
  std::string comma = "train/NORMAL/comma, and \"quotes\".png";

  Corpus() {
    const fs::path normal = tree / "train/NORMAL", pneumonia = tree / "train/PNEUMONIA";
    // Accepted: PNG, BMP, JPEG (baseline with restart markers, progressive), colour, 16-bit, 1x1.
    write_image(normal / "grey.png", tagged_image(40, 30, 1));
    write_image(normal / "grey.bmp", tagged_image(33, 21, 2));
    write_image(normal / "restart-markers.jpeg", noisy_image(90, 70, 1),
                {cv::IMWRITE_JPEG_RST_INTERVAL, 2});
    write_image(normal / "progressive.jpeg", noisy_image(90, 70, 2), {cv::IMWRITE_JPEG_PROGRESSIVE, 1});
    write_image(normal / "colour.png", cv::Mat(50, 60, CV_8UC3, cv::Scalar(10, 100, 200)));
    cv::Mat colour_noise(64, 48, CV_8UC3);
    cv::RNG(3).fill(colour_noise, cv::RNG::UNIFORM, 0, 256);
    write_image(normal / "colour.jpeg", colour_noise);  // 4:2:0 chroma: interleaved MCUs
    write_image(normal / "sixteen-bit.png", cv::Mat(20, 30, CV_16UC1, cv::Scalar(40000)));
    // Unscaled 12-bit data in 16-bit samples: kept, nearly black, with a warning.
    cv::Mat twelve(20, 30, CV_16UC1);
    cv::RNG(5).fill(twelve, cv::RNG::UNIFORM, 0, 4096);
    write_image(normal / "twelve-bit.png", twelve);
    write_image(normal / "one-pixel.png", cv::Mat(1, 1, CV_8UC1, cv::Scalar(77)));
    write_image(tree / spaced, tagged_image(30, 30, 3));
    write_image(tree / unicode, tagged_image(30, 30, 4));
    write_image(tree / comma, tagged_image(30, 30, 5));
    for (int i = 0; i < 3; ++i)
      write_image(pneumonia / ("person" + std::to_string(i) + "_virus_1.jpeg"), noisy_image(60, 50, 10 + i));
    write_image(tree / "test/NORMAL/IM-0001-0001.png", tagged_image(30, 30, 6));
    write_image(tree / "test/PNEUMONIA/person9_virus_1.png", tagged_image(30, 30, 7));

    // Skipped, each with its reason.
    write_image(normal / "source.jpeg", noisy_image(300, 240, 5));
    const std::string jpeg = testing::read_file(normal / "source.jpeg");
    fs::remove(normal / "source.jpeg");
    // A BMP cut short: refused from its header's sizes before OpenCV's decoder, which fails on
    // it after printing an error of its own (several lines, naming no file) to the standard error.
    write_image(normal / "bmp-source.bmp", noisy_image(40, 30, 11));
    const std::string bmp = testing::read_file(normal / "bmp-source.bmp");
    fs::remove(normal / "bmp-source.bmp");
    testing::write_file(normal / "truncated.bmp", bmp.substr(0, bmp.size() * 2 / 3));
    bad["train/NORMAL/truncated.bmp"] = "truncated BMP (its 40 x 30 pixels need";
    // Run-length BMP and TIFF strips cut short: OpenCV printed an error naming no file first.
    const std::string rle = rle8_bmp_bytes(40, 30), strips = tiff_bytes(40, 30);
    testing::write_file(normal / "run-length.bmp", rle);
    testing::write_file(normal / "run-length-cut.bmp", rle.substr(0, rle.size() - 40));
    bad["train/NORMAL/run-length-cut.bmp"] = "truncated BMP (its run-length codes reach byte";
    testing::write_file(normal / "strips.tiff", strips);
    testing::write_file(normal / "strips-cut.tiff", strips.substr(0, strips.size() - 300));
    bad["train/NORMAL/strips-cut.tiff"] = "truncated TIFF (its strip 1 of 1 ends at byte";
    testing::write_file(normal / "zero-bytes.jpeg", "");
    bad["train/NORMAL/zero-bytes.jpeg"] = "empty file";
    testing::write_file(normal / "truncated.jpeg", jpeg.substr(0, jpeg.size() * 2 / 3));
    bad["train/NORMAL/truncated.jpeg"] = "truncated JPEG";
    const auto [begin, end] = jpeg_scan_data(jpeg);
    testing::write_file(normal / "corrupt.jpeg", garble_jpeg(jpeg, (begin + end) / 2, 64));
    bad["train/NORMAL/corrupt.jpeg"] = "corrupt JPEG";
    testing::write_file(normal / "text.jpeg", "this is a text file, not an image\n");
    bad["train/NORMAL/text.jpeg"] = "unsupported image format";
    std::string noise(3000, '\0');
    cv::RNG(4).fill(cv::Mat(1, 3000, CV_8UC1, noise.data()), cv::RNG::UNIFORM, 0, 256);
    testing::write_file(pneumonia / "random-bytes.png", noise);
    bad["train/PNEUMONIA/random-bytes.png"] = "unsupported image format";
    // A PNG whose compressed pixels are damaged: its chunk's CRC says so, before libpng (which
    // would print its own line on stderr, naming no file) sees it.
    write_image(pneumonia / "png-source.png", noisy_image(80, 80, 6));
    std::string png = testing::read_file(pneumonia / "png-source.png");
    fs::remove(pneumonia / "png-source.png");
    for (size_t i = png.size() / 2; i < png.size() / 2 + 8; ++i) png[i] = static_cast<char>(png[i] ^ 0x5A);
    testing::write_file(pneumonia / "corrupt.png", png);
    bad["train/PNEUMONIA/corrupt.png"] = "damaged PNG (the CRC of the IDAT chunk does not match";
    // The same damage with the CRC written again over it: only inflating the data finds it.
    testing::write_file(pneumonia / "inflate-damaged.png", testing::damage_idat_keeping_crc(
                                                               png, 40, 8));
    bad["train/PNEUMONIA/inflate-damaged.png"] = "damaged PNG (its ";
    testing::write_file(pneumonia / "cut.png", png.substr(0, png.size() / 3));
    bad["train/PNEUMONIA/cut.png"] = "truncated PNG (";
    // A small PNG whose header claims 20000 x 20000 pixels (400 megapixels): refused from the
    // header, before anything is allocated for it.
    write_image(pneumonia / "huge-source.png", tagged_image(16, 16, 9));
    std::string huge = testing::read_file(pneumonia / "huge-source.png");
    fs::remove(pneumonia / "huge-source.png");
    const char size_bytes[8] = {0, 0, 0x4E, 0x20, 0, 0, 0x4E, 0x20};  // 20000, big-endian
    huge.replace(16, 8, size_bytes, 8);
    testing::write_file(pneumonia / "claims-20000x20000.png", huge);
    bad["train/PNEUMONIA/claims-20000x20000.png"] = "20000 x 20000";
    // ... one that claims 2^32 - 1 pixels a side (their product overflows 64 bits) ...
    const char widest[8] = {'\xFF', '\xFF', '\xFF', '\xFF', '\xFF', '\xFF', '\xFF', '\xFF'};
    huge.replace(16, 8, widest, 8);
    testing::write_file(pneumonia / "claims-widest.png", huge);
    bad["train/PNEUMONIA/claims-widest.png"] = "4294967295 x 4294967295";
    // ... and a 38-byte TIFF whose first image claims 12000 x 12000 (144 megapixels).
    const std::string tiff("II*\0\x08\0\0\0\x02\0"                  // header, 2 entries
                           "\x00\x01\x04\0\x01\0\0\0\xE0\x2E\0\0"  // ImageWidth LONG 12000
                           "\x01\x01\x04\0\x01\0\0\0\xE0\x2E\0\0"  // ImageLength LONG 12000
                           "\0\0\0\0", 38);
    testing::write_file(normal / "claims-12000x12000.tif", tiff);
    bad["train/NORMAL/claims-12000x12000.tif"] = "12000 x 12000";
    // Names that are no image file at all: a broken link, a loop of links, a FIFO.
    fs::create_symlink(tree / "nowhere.jpeg", normal / "broken-link.jpeg");
    bad["train/NORMAL/broken-link.jpeg"] = "broken link";
    fs::create_symlink("loop.jpeg", normal / "loop.jpeg");
    bad["train/NORMAL/loop.jpeg"] = "loop of links";
    ::mkfifo((pneumonia / "fifo.png").c_str(), 0600);
    bad["train/PNEUMONIA/fifo.png"] = "not a regular file";
    // A line break cannot be a line of <split>_files.txt. (Under test/: predict reads train/.)
    write_image(tree / "test/NORMAL/line\nbreak.png", tagged_image(30, 30, 8));
    bad["test/NORMAL/line\nbreak.png"] = "line break";
  }
  std::string path(const std::string& relative) const { return (tree / relative).string(); }
};

// The decoded, squashed pixels pneumo should produce for a file: OpenCV's grey reading of it.
cv::Mat expected_pixels(const std::string& path) {
  cv::Mat grey = cv::imread(path, cv::IMREAD_GRAYSCALE), small;
  cv::resize(grey, small, cv::Size(kSize, kSize), 0, 0, cv::INTER_AREA);
  return small;
}

TEST(BadImages, PrepareSkipsEachBadFileByNameAndDecodesEveryGoodOne) {
  Corpus corpus;
  testing::TempDir out;
  PrepareOptions options;
  options.data_dir = corpus.tree.string();
  options.out_dir = out.file("cache");
  options.size = kSize;
  options.threads = 2;
  std::ostringstream log;
  options.log = &log;
  const PrepareReport report = prepare_cache(options);

  std::map<std::string, std::string> skipped;
  for (const SkippedFile& s : report.skipped) skipped[s.file] = s.reason;
  EXPECT_EQ(skipped.size(), corpus.bad.size()) << log.str();
  for (const auto& [file, word] : corpus.bad) {
    if (!skipped.count(file)) {
      ADD_FAILURE() << file << " was not skipped\n" << log.str();
      continue;
    }
    EXPECT_NE(skipped[file].find(word), std::string::npos) << file << ": " << skipped[file];
    // Names on one line (a line break shown as \n).
    EXPECT_NE(log.str().find("warning: skipped " + detail::one_line(file) + ": "),
              std::string::npos)
        << log.str();
  }
  EXPECT_TRUE(std::is_sorted(report.skipped.begin(), report.skipped.end(),
                             [](const SkippedFile& a, const SkippedFile& b) { return a.file < b.file; }))
      << "PrepareReport::skipped is sorted by path";

  const Dataset dataset = load_cache(options.out_dir);
  const Split& train = dataset.split("train");
  ASSERT_EQ(train.count(), 17) << "14 NORMAL + 3 PNEUMONIA";
  // The 12-bit image is kept, with a warning naming it; the full-range 16-bit one is not named.
  ASSERT_EQ(report.noted.size(), 1u) << log.str();
  EXPECT_EQ(report.noted[0].file, "train/NORMAL/twelve-bit.png");
  EXPECT_NE(log.str().find("warning: kept train/NORMAL/twelve-bit.png, but: 16-bit PNG whose "
                           "samples all lie below 4096"),
            std::string::npos)
      << log.str();
  std::map<std::string, const uint8_t*> pixels;
  for (int64_t i = 0; i < train.count(); ++i) pixels[train.files[static_cast<size_t>(i)]] = train.image(i);
  // Names with spaces, commas, quotes and UTF-8 come through byte for byte (files.txt too).
  for (const std::string& name : {corpus.spaced, corpus.unicode, corpus.comma}) {
    EXPECT_TRUE(pixels.count(name)) << name;
    EXPECT_NE(testing::read_file(fs::path(options.out_dir) / "train_files.txt").find(name + "\n"),
              std::string::npos);
  }
  // Every accepted file holds exactly what OpenCV's grey reading of it gives.
  for (const auto& [name, image] : pixels) {
    const cv::Mat want = expected_pixels(corpus.path(name));
    ASSERT_FALSE(want.empty()) << name;
    EXPECT_EQ(std::memcmp(image, want.data, kSize * kSize), 0) << name;
  }
  // And those values are the documented ones: 16-bit samples keep their high byte (40000 ->
  // 156, i.e. 40000 / 257 rounded), colour is luma (0.299 R + 0.587 G + 0.114 B), a single
  // pixel fills the whole image.
  const uint8_t* sixteen = pixels.at("train/NORMAL/sixteen-bit.png");
  const uint8_t* colour = pixels.at("train/NORMAL/colour.png");
  const uint8_t* one = pixels.at("train/NORMAL/one-pixel.png");
  for (int i = 0; i < kSize * kSize; ++i) {
    ASSERT_NEAR(sixteen[i], 40000.0 / 257.0, 1.0) << i;
    ASSERT_NEAR(colour[i], 0.299 * 200 + 0.587 * 100 + 0.114 * 10, 1.0) << i;
    ASSERT_EQ(one[i], 77) << i;
  }
}

TEST(BadImages, GarbledJpegDataIsFoundWhereverItLies) {
  // Five places in the compressed data, 64 garbled bytes each: all are refused. (A single
  // flipped bit inside a coefficient's magnitude keeps a valid JPEG and cannot be found.)
  const cv::Mat image = noisy_image(320, 256, 21);
  std::vector<uchar> encoded;
  ASSERT_TRUE(cv::imencode(".jpeg", image, encoded, {cv::IMWRITE_JPEG_QUALITY, 90}));
  const std::string jpeg(encoded.begin(), encoded.end());
  const auto [begin, end] = jpeg_scan_data(jpeg);
  testing::TempDir dir;
  std::vector<uint8_t> out(kSize * kSize);
  testing::write_file(dir.file("good.jpeg"), jpeg);
  ASSERT_EQ(decode_image_file(dir.file("good.jpeg"), kSize, out.data()), "");
  for (int k = 1; k <= 5; ++k) {
    const size_t at = begin + (end - begin) * static_cast<size_t>(k) / 6;
    const std::string path = dir.file("garbled" + std::to_string(k) + ".jpeg");
    testing::write_file(path, garble_jpeg(jpeg, at, 64));
    const std::string why = decode_image_file(path, kSize, out.data());
    EXPECT_NE(why.find("corrupt JPEG"), std::string::npos) << "garbled at byte " << at << ": '" << why << "'";
  }
}

TEST(BadImages, AVeryLargeImageIsDecodedLikeAnyOther) {
  // 8000 x 8000 (64 megapixels, under the 100-megapixel limit): decoded and squashed like any
  // other; the header check of a file claiming more is in the corpus above. Its time is printed,
  // not asserted (speed is measured, never a test's verdict); a hang meets ctest's timeout.
  testing::TempDir dir;
  cv::Mat big(8000, 8000, CV_8UC1, cv::Scalar(30));
  big(cv::Rect(0, 0, 4000, 8000)).setTo(220);  // left half bright
  const std::string path = dir.file("big.jpeg");
  write_image(path, big, {cv::IMWRITE_JPEG_QUALITY, 80});
  std::vector<uint8_t> out(kSize * kSize);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(decode_image_file(path, kSize, out.data()), "");
  std::cout << "8000 x 8000 JPEG decoded and squashed in "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() << " s\n";
  EXPECT_NEAR(out[kSize * 5 + 2], 220, 2);
  EXPECT_NEAR(out[kSize * 5 + kSize - 3], 30, 2);
}

TEST(BadImages, PrepareAndPredictThroughTheCommandLine) {
  Corpus corpus;
  const std::string cache_root = corpus.scratch.file("tree-caches");
  // prepare: exit 0, each bad file named in a warning.
  const std::string cache = corpus.scratch.file("cache");
  testing::PneumoRun run = testing::run_pneumo("prepare --size 24 --data " + shell_quoted(corpus.tree.string()) +
                                                   " --out " + shell_quoted(cache),
                                               cache_root);
  EXPECT_TRUE(stopped_with(run, 0, {"skipped " + std::to_string(corpus.bad.size()) + " unreadable files"}));
  for (const auto& [file, word] : corpus.bad)
    EXPECT_NE(run.output.find("warning: skipped " + detail::one_line(file) + ": "), std::string::npos)
        << file << "\n" << run.output;
  // Every damaged PNG is refused before libpng sees it: no line of libpng's own (naming no file);
  // nor of OpenCV's for the BMP it fails to decode.
  EXPECT_EQ(run.output.find("libpng"), std::string::npos) << run.output;
  EXPECT_EQ(run.output.find("imdecode"), std::string::npos) << run.output;

  // predict on the folder: the readable images get a row, the others a warning; exit 3.
  const std::string model = corpus.scratch.file("model.safetensors");
  save_checkpoint(model, testing::untrained_checkpoint(kSize));
  run = testing::run_pneumo("predict --csv --device cpu --model " + shell_quoted(model) + " " +
                                shell_quoted(corpus.path("train")),
                            cache_root);
  EXPECT_TRUE(stopped_with(run, 3, {}));
  for (const auto& [file, word] : corpus.bad) {
    if (file.rfind("train/", 0) != 0) continue;
    EXPECT_NE(run.output.find("warning: skipping " + corpus.path(file) + ": "), std::string::npos)
        << file << "\n" << run.output;
  }
  EXPECT_EQ(run.output.find("libpng"), std::string::npos) << run.output;
  // Parse the CSV rows (RFC 4180 quoting) and find the awkward names among them, exactly.
  std::map<std::string, std::string> rows;
  std::istringstream lines(run.output);
  for (std::string line; std::getline(lines, line);) {
    // Rows end in the label; pneumo's warnings are mixed in from stderr.
    const bool row = (line.size() > 7 && line.compare(line.size() - 7, 7, ",NORMAL") == 0) ||
                     (line.size() > 10 && line.compare(line.size() - 10, 10, ",PNEUMONIA") == 0);
    if (!row) continue;
    std::string path;
    size_t i = 0;
    if (!line.empty() && line[0] == '"') {
      for (i = 1; i < line.size(); ++i) {
        if (line[i] == '"' && i + 1 < line.size() && line[i + 1] == '"') {
          path += '"';
          ++i;
        } else if (line[i] == '"') {
          break;
        } else {
          path += line[i];
        }
      }
      ++i;
    } else {
      i = line.find(',');
      path = line.substr(0, i);
    }
    ASSERT_LT(i, line.size()) << line;
    ASSERT_EQ(line[i], ',') << line;
    rows[path] = line.substr(i + 1);
  }
  EXPECT_EQ(rows.size(), 17u) << run.output;
  // The 12-bit image is scored, with a warning naming it.
  EXPECT_TRUE(rows.count(corpus.path("train/NORMAL/twelve-bit.png"))) << run.output;
  EXPECT_NE(run.output.find("pneumo: warning: " + corpus.path("train/NORMAL/twelve-bit.png") +
                            ": 16-bit PNG whose samples all lie below 4096"),
            std::string::npos)
      << run.output;
  for (const std::string& name : {corpus.spaced, corpus.unicode, corpus.comma}) {
    ASSERT_TRUE(rows.count(corpus.path(name))) << name << "\n" << run.output;
    const std::string& rest = rows[corpus.path(name)];
    const double p = std::stod(rest.substr(0, rest.find(',')));
    EXPECT_TRUE(p >= 0.0 && p <= 1.0) << rest;
  }

  // train on the tree: the bad files are skipped with warnings and the run completes.
  run = testing::run_pneumo("train --size 24 --epochs 1 --batch 4 --device cpu --threads 1 --data " +
                                shell_quoted(corpus.tree.string()) + " --out " +
                                shell_quoted(corpus.scratch.file("run")),
                            cache_root);
  EXPECT_TRUE(stopped_with(run, 0, {"warning: skipped train/NORMAL/corrupt.jpeg"}));
}

TEST(BadImages, PrepareStopsOnMissingEmptyOrHalfMadeTreesAndUnwritableOutputs) {
  testing::TempDir dir;
  const std::string cache_root = dir.file("tree-caches");
  auto prepare = [&](const std::string& data, const std::string& out) {
    return testing::run_pneumo("prepare --size 24 --data " + shell_quoted(data) + " --out " + shell_quoted(out),
                               cache_root);
  };
  const std::string missing = dir.file("no such tree");
  EXPECT_TRUE(stopped_with(prepare(missing, dir.file("c1")), 1, {missing, "does not exist"}));
  const std::string loop = dir.file("loop"), a_file = dir.file("a file");
  fs::create_symlink(loop, loop);
  testing::write_file(a_file, "x");
  EXPECT_TRUE(stopped_with(prepare(loop, dir.file("c1")), 1, {loop, "is a loop of links"}));
  EXPECT_TRUE(stopped_with(prepare(a_file, dir.file("c1")), 1, {a_file, "is not a folder"}));

  const std::string empty = dir.file("empty");
  fs::create_directories(empty);
  EXPECT_TRUE(stopped_with(prepare(empty, dir.file("c2")), 1, {empty, "not an image tree"}));

  // Class folders present but no image in any of them.
  const std::string no_images = dir.file("no-images");
  fs::create_directories(no_images + "/train/NORMAL");
  fs::create_directories(no_images + "/train/PNEUMONIA");
  testing::write_file(no_images + "/train/NORMAL/notes.txt", "not an image");
  EXPECT_TRUE(stopped_with(prepare(no_images, dir.file("c3")), 1, {no_images, "no image file"}));

  const std::string half = dir.file("half");
  write_image(half + "/train/NORMAL/IM-0001-0001.png", tagged_image(30, 30, 1));
  write_image(half + "/test/NORMAL/IM-0002-0001.png", tagged_image(30, 30, 2));
  write_image(half + "/test/PNEUMONIA/person1_virus_1.png", tagged_image(30, 30, 3));
  EXPECT_TRUE(stopped_with(prepare(half, dir.file("c4")), 1, {half + "/train/PNEUMONIA is missing"}));
  EXPECT_FALSE(fs::exists(dir.file("c4")));

  // An output below a regular file can never be created, whoever runs the test.
  const std::string file = dir.file("file.txt");
  testing::write_file(file, "a file");
  const std::string good = dir.file("good");
  write_image(good + "/train/NORMAL/IM-0001-0001.png", tagged_image(30, 30, 1));
  write_image(good + "/train/PNEUMONIA/person1_virus_1.png", tagged_image(30, 30, 3));
  EXPECT_TRUE(stopped_with(prepare(good, file + "/cache"), 1, {file}));
  EXPECT_EQ(testing::read_file(file), "a file");

  // A folder with a meta.json of its own is no cache: never replaced (which would delete it).
  const std::string project = dir.file("project");
  testing::write_file(project + "/meta.json", "{\"name\": \"my project\"}");
  testing::write_file(project + "/src/a.c", "code");
  EXPECT_TRUE(stopped_with(prepare(good, project), 1, {project, "not a pneumo cache"}));
  EXPECT_EQ(testing::read_file(project + "/src/a.c"), "code");
  // Nor an output that holds the data.
  fs::copy(good, project + "/tree", fs::copy_options::recursive);
  EXPECT_TRUE(stopped_with(prepare(project + "/tree", project), 1, {project, "lies inside the output"}));
  EXPECT_TRUE(fs::exists(project + "/tree/train/NORMAL/IM-0001-0001.png"));
}

// Linux names are bytes: a Latin-1 name (not UTF-8) must not stop prepare, train or eda when it
// goes into meta.json, config.json or a report. It is written there with U+FFFD in place of each
// bad byte, and named byte for byte in the warning.
TEST(BadImages, NamesThatAreNotUtf8NeverStopARun) {
  testing::TempDir dir;
  const std::string cache_root = dir.file("tree-caches");
  const std::string data = dir.file("d\xe9ta");
  fs::copy(PNEUMO_SOURCE_DIR "/data/sample", data, fs::copy_options::recursive);
  testing::write_file(data + "/train/NORMAL/caf\xe9.jpeg", "garbage, no JPEG");
  const std::string cafe = "train/NORMAL/caf\xe9.jpeg";

  const std::string cache = dir.file("cache");
  testing::PneumoRun run = testing::run_pneumo(
      "prepare --size 24 --threads 1 --data " + shell_quoted(data) + " --out " + shell_quoted(cache),
      cache_root);
  EXPECT_TRUE(stopped_with(run, 0, {"warning: skipped " + cafe + ": "}));
  const auto meta = nlohmann::json::parse(testing::read_file(cache + "/meta.json"));
  ASSERT_EQ(meta["skipped"].size(), 1u);
  EXPECT_EQ(meta["skipped"][0]["file"], "train/NORMAL/caf\xef\xbf\xbd.jpeg");  // U+FFFD
  EXPECT_NE(meta["source"]["path"].get<std::string>().find("d\xef\xbf\xbdta"), std::string::npos);

  const std::string run_dir = dir.file("run \xe9");
  run = testing::run_pneumo("train --size 24 --epochs 1 --batch 32 --device cpu --threads 1 --data " +
                                shell_quoted(data) + " --out " + shell_quoted(run_dir),
                            cache_root, 300);
  EXPECT_TRUE(stopped_with(run, 0, {"warning: skipped " + cafe + ": "}));
  const auto config = nlohmann::json::parse(testing::read_file(run_dir + "/config.json"));
  EXPECT_NE(config["data"].get<std::string>().find("d\xef\xbf\xbdta"), std::string::npos);
  EXPECT_TRUE(fs::exists(run_dir + "/model.safetensors"));

  run = testing::run_pneumo("eda --data " + shell_quoted(data) + " --out " +
                                shell_quoted(dir.file("eda")),
                            cache_root);
  EXPECT_TRUE(stopped_with(run, 0, {}));
  EXPECT_NO_THROW(nlohmann::json::parse(testing::read_file(dir.file("eda") + "/counts.json")));
}

// PNEUMO_CACHE_DIR inside the image tree: refused before any folder is made in the tree, naming
// the variable (the user never gave an --out to change).
TEST(BadImages, ACacheDirInsideTheTreeStopsTheRunNamingTheVariable) {
  testing::TempDir dir;
  const std::string tree = dir.file("tree");
  write_image(tree + "/train/NORMAL/IM-0001-0001.png", tagged_image(30, 30, 1));
  write_image(tree + "/train/PNEUMONIA/person1_virus_1.png", tagged_image(30, 30, 3));
  const testing::PneumoRun run = testing::run_pneumo(
      "train --size 24 --epochs 1 --device cpu --threads 1 --data " + shell_quoted(tree) +
          " --out " + shell_quoted(dir.file("run")),
      tree + "/.cache");
  EXPECT_TRUE(stopped_with(run, 1, {"PNEUMO_CACHE_DIR=" + tree + "/.cache", "inside the tree"}));
  EXPECT_EQ(run.output.find("choose another --out"), std::string::npos) << run.output;
  EXPECT_FALSE(fs::exists(tree + "/.cache"));
}

// pneumo run as the user nobody when this test runs as root (permission bits do not stop root),
// else as this user; false from can_drop_root() when root lacks setpriv.
bool can_drop_root() {
  return ::geteuid() != 0 || ::system("setpriv --version > /dev/null 2>&1") == 0;
}
testing::PneumoRun run_as_user(const std::string& args) {
  const std::string as =
      ::geteuid() == 0 ? "setpriv --reuid=65534 --regid=65534 --clear-groups " : "";
  testing::PneumoRun run;
  run.command = "pneumo " + args;
  FILE* pipe = ::popen((as + shell_quoted(PNEUMO_BINARY) + " " + args + " 2>&1").c_str(), "r");
  std::array<char, 4096> buffer{};
  for (size_t n; pipe && (n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0;)
    run.output.append(buffer.data(), n);
  const int raw = pipe ? ::pclose(pipe) : -1;
  run.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128;
  return run;
}

// predict and explain on a folder: a subfolder they cannot read is warned about and counted as
// skipped (exit 3), and a link to a folder is followed, as a linked folder given directly is.
// Permission bits do not stop root, so as root pneumo runs as the user nobody (setpriv).
TEST(BadImages, PredictAndExplainWarnAboutSubfoldersTheyCannotRead) {
  if (!can_drop_root())
    GTEST_SKIP() << "running as root without setpriv: a folder without permissions is readable";
  testing::TempDir dir;
  ::chmod(dir.path().c_str(), 0755);
  const std::string in = dir.file("in");
  write_image(in + "/a/one.png", tagged_image(30, 30, 1));
  write_image(in + "/secret/two.png", tagged_image(30, 30, 2));
  write_image(dir.file("other") + "/three.png", tagged_image(30, 30, 3));
  fs::create_directory_symlink(dir.file("other"), in + "/linked");
  const std::string model = dir.file("model.safetensors");
  save_checkpoint(model, testing::untrained_checkpoint(kSize));
  ::chmod((in + "/secret").c_str(), 0);
  write_image(in + "/a/locked.png", tagged_image(30, 30, 4));  // a file that cannot be opened
  ::chmod((in + "/a/locked.png").c_str(), 0);
  const testing::PneumoRun predicted =
      run_as_user("predict --device cpu --model " + shell_quoted(model) + " " + shell_quoted(in));
  ::chmod(dir.path().c_str(), 0777);  // explain --out, written as nobody
  const testing::PneumoRun explained =
      run_as_user("explain --device cpu --model " + shell_quoted(model) + " --out " +
                  shell_quoted(dir.file("maps")) + " " + shell_quoted(in));
  ::chmod((in + "/secret").c_str(), 0755);
  for (const testing::PneumoRun& run : {predicted, explained}) {
    EXPECT_TRUE(stopped_with(run, 3, {"warning: skipping the folder " + in + "/secret: "}));
    EXPECT_NE(run.output.find("locked.png: cannot open the file: Permission denied"),
              std::string::npos)
        << run.output;
    EXPECT_EQ(run.output.find("two.png"), std::string::npos) << run.output;
  }
  EXPECT_NE(predicted.output.find(in + "/a/one.png"), std::string::npos) << predicted.output;
  EXPECT_NE(predicted.output.find(in + "/linked/three.png"), std::string::npos) << predicted.output;
}

// An output in a folder without write permission, or a read-only output folder (replacing it
// would drop its protection), stops prepare naming the folder, before any decoding; the folder
// stays as it was. As root, pneumo runs as the user nobody.
TEST(BadImages, PrepareIntoAReadOnlyFolderStops) {
  if (!can_drop_root()) GTEST_SKIP() << "running as root without setpriv";
  Corpus corpus;
  ::chmod(corpus.scratch.path().c_str(), 0755);
  const std::string locked = corpus.scratch.file("locked"), open = corpus.scratch.file("open");
  fs::create_directories(locked);
  fs::create_directories(open + "/cache");  // writable beside, read-only itself
  ::chmod(locked.c_str(), 0555);
  ::chmod(open.c_str(), 0777);
  ::chmod((open + "/cache").c_str(), 0555);
  for (const std::string& out : {locked + "/new-cache", open + "/cache"}) {
    const testing::PneumoRun run =
        run_as_user("prepare --size 24 --threads 1 --data " + shell_quoted(corpus.tree.string()) +
                    " --out " + shell_quoted(out));
    EXPECT_TRUE(stopped_with(run, 1, {out})) << run.output;
    EXPECT_EQ(run.output.find("prepare: wrote"), std::string::npos) << run.output;
  }
  struct stat info {};
  ASSERT_EQ(::stat((open + "/cache").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0555u) << "the read-only output is still there, read-only";
  ::chmod(locked.c_str(), 0755);
  ::chmod((open + "/cache").c_str(), 0755);
}

// A TIFF's pixel size is read from its first image directory, in either byte order (OpenCV's
// own TIFF, and a big-endian one with SHORT sizes), so the megapixel limit covers TIFF too.
TEST(ImageHeaders, ATiffsSizeIsReadInEitherByteOrder) {
  std::vector<uint8_t> encoded;
  ASSERT_TRUE(cv::imencode(".tiff", cv::Mat(30, 40, CV_8UC1, cv::Scalar(7)), encoded));
  data_internal::ImageHeader header;
  ASSERT_TRUE(data_internal::read_image_header(encoded, header));
  EXPECT_EQ(header.format, "TIFF");
  EXPECT_EQ(header.width, 40);
  EXPECT_EQ(header.height, 30);
  const std::string big("MM\0*\0\0\0\x08\0\x02"
                        "\x01\x00\x00\x03\x00\x00\x00\x01\x00\x28\x00\x00"  // width SHORT 40
                        "\x01\x01\x00\x03\x00\x00\x00\x01\x00\x1E\x00\x00"  // height SHORT 30
                        "\0\0\0\0", 38);
  ASSERT_TRUE(data_internal::read_image_header(std::vector<uint8_t>(big.begin(), big.end()), header));
  EXPECT_EQ(header.width, 40);
  EXPECT_EQ(header.height, 30);
  // A directory that runs past the end of the file says nothing.
  EXPECT_FALSE(data_internal::read_image_header(
      std::vector<uint8_t>(big.begin(), big.begin() + 20), header));

  // Little-endian directories of size entries (tag, type, value): a signed LONG is read; a size
  // given twice, or of a type sizes never have, says nothing (libtiff believes the first of two,
  // so reading the last would let a 20000 x 20000 image past the limit as 64 x 64).
  auto tiff = [](std::vector<std::array<uint32_t, 3>> entries) {
    std::vector<uint8_t> b = {'I', 'I', 42, 0, 8, 0, 0, 0, static_cast<uint8_t>(entries.size()), 0};
    for (const auto& [tag, type, value] : entries) {
      const uint8_t entry[12] = {static_cast<uint8_t>(tag), static_cast<uint8_t>(tag >> 8),
                                 static_cast<uint8_t>(type), 0, 1, 0, 0, 0,
                                 static_cast<uint8_t>(value), static_cast<uint8_t>(value >> 8),
                                 static_cast<uint8_t>(value >> 16), static_cast<uint8_t>(value >> 24)};
      b.insert(b.end(), entry, entry + 12);
    }
    b.insert(b.end(), 4, 0);
    return b;
  };
  ASSERT_TRUE(data_internal::read_image_header(tiff({{256, 9, 20000}, {257, 4, 20000}}), header));
  EXPECT_EQ(header.width, 20000);
  EXPECT_FALSE(data_internal::read_image_header(
      tiff({{256, 4, 20000}, {257, 4, 20000}, {256, 4, 64}, {257, 4, 64}}), header));
  EXPECT_FALSE(data_internal::read_image_header(tiff({{256, 5, 20000}, {257, 4, 20000}}), header));
}

}  // namespace
}  // namespace pneumo
