// The PNG checks made before libpng sees a file (src/data/image_check.cpp: chunks, CRCs, IHDR;
// src/data/opencv/png_data.cpp: the compressed image data): every PNG libpng reads passes them,
// and damage that libpng would report on stderr alone (naming no file) is refused in words that
// say what is wrong. The expected row layout is counted here from the PNG spec's 8x8 Adam7
// pattern, pixel by pixel, not from the pass arithmetic the code uses.
#include <gtest/gtest.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "data/cache_internal.hpp"
#include "pneumo/error.hpp"
#include "pneumo/explain.hpp"
#include "data_test_util.hpp"
#include "temp_dir.hpp"
#include "png_util.hpp"

namespace pneumo {
namespace {

using data_internal::check_png;
using data_internal::check_png_image_data;
using data_internal::PngLayout;
using testing::png_file;
using testing::zlib_compressed;

// The PNG spec's Adam7 pattern: the pass (1-7) of each pixel of an 8x8 tile.
constexpr int kAdam7[8][8] = {{1, 6, 4, 6, 2, 6, 4, 6}, {7, 7, 7, 7, 7, 7, 7, 7},
                              {5, 6, 5, 6, 5, 6, 5, 6}, {7, 7, 7, 7, 7, 7, 7, 7},
                              {3, 6, 4, 6, 3, 6, 4, 6}, {7, 7, 7, 7, 7, 7, 7, 7},
                              {5, 6, 5, 6, 5, 6, 5, 6}, {7, 7, 7, 7, 7, 7, 7, 7}};

int channels(int colour_type) { return colour_type == 2 ? 3 : colour_type == 4 ? 2 : colour_type == 6 ? 4 : 1; }

// (rows, bytes per row with the filter byte) of each non-empty pass, from the pattern.
std::vector<std::pair<uint64_t, uint64_t>> counted_rows(int width, int height, int bits_per_pixel,
                                                        bool interlaced) {
  const auto row_bytes = [&](uint64_t pixels) { return 1 + (pixels * bits_per_pixel + 7) / 8; };
  if (!interlaced) return {{height, row_bytes(width)}};
  std::vector<std::pair<uint64_t, uint64_t>> rows;
  for (int pass = 1; pass <= 7; ++pass) {
    std::set<int> xs, ys;
    for (int y = 0; y < height; ++y)
      for (int x = 0; x < width; ++x)
        if (kAdam7[y % 8][x % 8] == pass) xs.insert(x), ys.insert(y);
    if (!xs.empty()) rows.emplace_back(ys.size(), row_bytes(xs.size()));
  }
  return rows;
}

// Raw image data for the layout: each row filter type 0 (none), then bytes of a pattern.
std::string raw_rows(const std::vector<std::pair<uint64_t, uint64_t>>& rows) {
  std::string raw;
  for (const auto& [count, bytes] : rows)
    for (uint64_t r = 0; r < count; ++r) {
      raw += '\0';
      for (uint64_t i = 1; i < bytes; ++i) raw += static_cast<char>((r * 7 + i * 13) & 0xFF);
    }
  return raw;
}

std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

// check_png, then (when it passes) the image data check: "" when both pass.
std::string checked(const std::string& png) {
  const std::vector<uint8_t> bytes = bytes_of(png);
  PngLayout layout;
  if (std::string why = check_png(bytes, &layout); !why.empty()) return why;
  return check_png_image_data(bytes, layout);
}

struct Kind {
  int bit_depth, colour_type;
};
const Kind kKinds[] = {{1, 0}, {2, 0}, {4, 0}, {8, 0}, {16, 0}, {8, 2}, {16, 2}, {1, 3}, {2, 3},
                       {4, 3}, {8, 3}, {8, 4}, {16, 4}, {8, 6}, {16, 6}};

TEST(PngData, RowLayoutIsTheSpecsForEveryKindSizeAndInterlace) {
  for (const Kind& kind : kKinds)
    for (int interlace = 0; interlace <= 1; ++interlace)
      for (int width = 1; width <= 19; ++width)
        for (int height = 1; height <= 19; ++height) {
          PngLayout png;
          png.width = static_cast<uint64_t>(width);
          png.height = static_cast<uint64_t>(height);
          png.bit_depth = kind.bit_depth;
          png.colour_type = kind.colour_type;
          png.interlaced = interlace == 1;
          ASSERT_EQ(data_internal::png_rows(png),
                    counted_rows(width, height, kind.bit_depth * channels(kind.colour_type), png.interlaced))
              << width << "x" << height << " depth " << kind.bit_depth << " colour " << kind.colour_type
              << " interlace " << interlace;
        }
}

TEST(PngData, EveryPngLibpngReadsPasses) {
  // Built here: every kind, interlaced or not, odd sizes, the data in one IDAT or one byte per
  // IDAT. libpng (through OpenCV) is the judge that each is a good PNG.
  int built = 0;
  for (const Kind& kind : kKinds)
    for (int interlace = 0; interlace <= 1; ++interlace)
      for (const auto& [width, height] : {std::pair{1, 1}, {5, 3}, {13, 9}})
        for (size_t idat_size : {size_t{1} << 20, size_t{1}}) {
          const auto rows = counted_rows(width, height, kind.bit_depth * channels(kind.colour_type), interlace);
          const std::string png = png_file(width, height, kind.bit_depth, kind.colour_type, interlace,
                                           zlib_compressed(raw_rows(rows)), idat_size);
          const cv::Mat decoded = cv::imdecode(cv::Mat(1, static_cast<int>(png.size()), CV_8UC1,
                                                       const_cast<char*>(png.data())),
                                               cv::IMREAD_UNCHANGED);
          ASSERT_EQ(decoded.cols, width) << "libpng refused the test's own PNG";
          ASSERT_EQ(decoded.rows, height);
          EXPECT_EQ(checked(png), "") << width << "x" << height << " depth " << kind.bit_depth
                                      << " colour " << kind.colour_type << " interlace " << interlace
                                      << " idat " << idat_size;
          ++built;
        }
  EXPECT_EQ(built, 15 * 2 * 3 * 2);
  // Written by OpenCV: grey, colour, alpha, 16-bit, stored (level 0) and best compression.
  const std::vector<cv::Mat> images = {cv::Mat(37, 41, CV_8UC1, cv::Scalar(90)),
                                       cv::Mat(20, 30, CV_8UC3, cv::Scalar(1, 2, 3)),
                                       cv::Mat(9, 8, CV_8UC4, cv::Scalar(1, 2, 3, 4)),
                                       cv::Mat(20, 30, CV_16UC1, cv::Scalar(40000))};
  for (const cv::Mat& image : images)
    for (int level : {0, 9}) {
      std::vector<uint8_t> encoded;
      ASSERT_TRUE(cv::imencode(".png", image, encoded, {cv::IMWRITE_PNG_COMPRESSION, level}));
      EXPECT_EQ(checked(std::string(encoded.begin(), encoded.end())), "") << image.size << " level " << level;
    }
}

// A 13 x 9 8-bit grey PNG (9 rows of 1 + 13 bytes = 126 bytes of image data) from raw data.
std::string grey_png(const std::string& raw, size_t idat_size = 1 << 20) {
  return png_file(13, 9, 8, 0, 0, zlib_compressed(raw), idat_size);
}
std::string grey_raw() { return raw_rows({{9, 14}}); }

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

TEST(PngData, DamagedCompressedDataUnderRightCrcsIsRefused) {
  ASSERT_EQ(checked(grey_png(grey_raw())), "");
  // Bytes flipped inside the deflate stream, the CRC written again: only zlib can tell.
  const std::string good = png_file(64, 64, 8, 0, 0, zlib_compressed(raw_rows(counted_rows(64, 64, 8, false))));
  for (size_t at : {size_t{2}, size_t{10}, size_t{40}}) {
    const std::string damaged = testing::damage_idat_keeping_crc(good, at, 4);
    EXPECT_EQ(check_png(bytes_of(damaged)), "") << "the CRCs are right";
    EXPECT_TRUE(starts_with(checked(damaged), "damaged PNG (")) << at << ": " << checked(damaged);
  }
  // A stream whose zlib header is broken says what zlib says.
  EXPECT_NE(checked(testing::damage_idat_keeping_crc(good, 0, 1, 0x0F)).find("cannot be inflated: zlib says"),
            std::string::npos)
      << checked(testing::damage_idat_keeping_crc(good, 0, 1, 0x0F));
}

TEST(PngData, TooLittleImageDataIsRefusedSurplusIsReadPast) {
  const std::string raw = grey_raw();
  EXPECT_EQ(checked(grey_png(raw.substr(0, raw.size() - 1))),
            "damaged PNG (its image data inflates to 125 of the 126 bytes its header needs)");
  EXPECT_EQ(checked(grey_png("")), "damaged PNG (its image data inflates to 0 of the 126 bytes its header needs)");
  // A byte or a row too many: libpng reads its rows and passes over the rest (a warning at
  // most), so the image is good.
  for (const std::string& more : {raw + '\0', raw + std::string(14, '\0')}) {
    const std::string png = grey_png(more);
    EXPECT_EQ(checked(png), "");
    EXPECT_EQ(cv::imdecode(cv::Mat(1, static_cast<int>(png.size()), CV_8UC1, const_cast<char*>(png.data())),
                           cv::IMREAD_UNCHANGED).cols, 13);
  }
}

TEST(PngData, AnUnknownRowFilterIsRefused) {
  std::string raw = grey_raw();
  raw[14] = 5;  // the second row's filter type: PNG has 0 (none) to 4 (Paeth)
  EXPECT_EQ(checked(grey_png(raw)), "damaged PNG (row 2 has filter type 5; PNG has 0 to 4)");
  raw[14] = 4;
  EXPECT_EQ(checked(grey_png(raw)), "");
  // In an interlaced image, the rows are counted through the passes in order.
  const auto rows = counted_rows(13, 9, 8, true);
  std::string interlaced = raw_rows(rows);
  uint64_t at = 0, row = 0;
  for (size_t pass = 0; pass < 3; ++pass) at += rows[pass].first * rows[pass].second, row += rows[pass].first;
  interlaced[at + rows[3].second] = static_cast<char>(200);  // the fourth pass's second row
  EXPECT_EQ(checked(png_file(13, 9, 8, 0, 1, zlib_compressed(interlaced))),
            "damaged PNG (row " + std::to_string(row + 2) +
                " of its interlaced data has filter type 200; PNG has 0 to 4)");
}

// The window a zlib header gives (CINFO: 2^(8 + CINFO) bytes), with the header's check bits
// written again so that only the window is wrong.
std::string with_window(std::string stream, int cinfo) {
  const int cmf = (cinfo << 4) | 8;
  int flg = static_cast<uint8_t>(stream[1]) & 0xE0;  // FLEVEL and FDICT kept
  flg += 31 - ((cmf << 8) | flg) % 31;
  stream[0] = static_cast<char>(cmf);
  stream[1] = static_cast<char>(flg);
  return stream;
}

TEST(PngData, AStreamCutShortIsRefusedSurplusAfterItsEndIsReadPast) {
  const std::string compressed = zlib_compressed(grey_raw());
  // The stream cut in half (the CRCs right): the data stops before its end.
  const std::string cut = png_file(13, 9, 8, 0, 0, compressed.substr(0, compressed.size() / 2));
  EXPECT_TRUE(starts_with(checked(cut), "damaged PNG (its image data inflates to ")) << checked(cut);
  // Every byte there but the stream's last four (its Adler-32): all rows, no end.
  const std::string no_end = png_file(13, 9, 8, 0, 0, compressed.substr(0, compressed.size() - 4));
  EXPECT_EQ(checked(no_end), "damaged PNG (its compressed image data stops short of its end)");
  // Bytes after the end of the stream, in its IDAT or in one more, and an empty IDAT after it:
  // libpng decodes them all.
  std::string empty_after = png_file(13, 9, 8, 0, 0, compressed);
  empty_after.insert(empty_after.size() - 12, testing::png_chunk("IDAT", ""));
  for (const std::string& png : {png_file(13, 9, 8, 0, 0, compressed + "xyz"),
                                 png_file(13, 9, 8, 0, 0, compressed + "xyz", compressed.size()),
                                 empty_after}) {
    EXPECT_EQ(checked(png), "");
    EXPECT_EQ(cv::imdecode(cv::Mat(1, static_cast<int>(png.size()), CV_8UC1, const_cast<char*>(png.data())),
                           cv::IMREAD_UNCHANGED).cols, 13);
  }
  // IDATs with another chunk between them: libpng stops reading image data at that chunk.
  std::string split = png_file(13, 9, 8, 0, 0, compressed, compressed.size() / 2 + 1);
  const size_t first_end = 8 + 25 + 12 + compressed.size() / 2 + 1;  // signature, IHDR, IDAT
  split.insert(first_end, testing::png_chunk("tEXt", std::string("k\0v", 3)));
  EXPECT_EQ(checked(split),
            "corrupt PNG (its IDAT chunks are not consecutive: another chunk comes between them)");
}

// A stream whose zlib header gives a window smaller than the distances its data uses: libpng
// reads with that window and stops ("invalid distance too far back"); so does the check.
TEST(PngData, AStreamReachingPastItsWindowIsRefused) {
  // 20 equal rows of 400 bytes without a repeat inside them: each row matches the one before,
  // 401 bytes back, and nothing nearer.
  std::string row(1, '\0');
  uint32_t state = 12345;
  for (int i = 0; i < 400; ++i) {
    state = state * 1664525u + 1013904223u;
    row += static_cast<char>(state >> 24);
  }
  std::string raw;
  for (int r = 0; r < 20; ++r) raw += row;
  const std::string compressed = zlib_compressed(raw);
  ASSERT_EQ(checked(png_file(400, 20, 8, 0, 0, compressed)), "");
  const std::string narrow = png_file(400, 20, 8, 0, 0, with_window(compressed, 0));  // 256 bytes
  EXPECT_EQ(checked(narrow),
            "damaged PNG (its compressed image data cannot be inflated: zlib says invalid "
            "distance too far back)");
  EXPECT_EQ(checked(png_file(400, 20, 8, 0, 0, with_window(compressed, 7))), "") << "32 KiB";
}

TEST(PngData, HeadersPngDoesNotAllowAreRefused) {
  const std::string data = testing::png_chunk("IDAT", zlib_compressed(grey_raw())) + testing::png_chunk("IEND", "");
  const auto with_header = [&](const std::string& header) {
    return check_png(bytes_of(testing::kPngSignature + header + data));
  };
  EXPECT_EQ(with_header(testing::png_header(13, 9, 8, 0)), "");
  EXPECT_EQ(with_header(testing::png_header(13, 9, 4, 2)),
            "corrupt PNG (its IHDR chunk gives colour type 2, bit depth 4, compression 0, filter 0, "
            "interlace 0: not a combination PNG allows)");
  EXPECT_NE(with_header(testing::png_header(13, 9, 8, 5)).find("colour type 5"), std::string::npos);
  EXPECT_NE(with_header(testing::png_header(13, 9, 16, 3)).find("bit depth 16"), std::string::npos);
  EXPECT_NE(with_header(testing::png_header(13, 9, 8, 0, 2)).find("interlace 2"), std::string::npos);
  EXPECT_NE(with_header(testing::png_header(13, 9, 8, 0, 0, 1)).find("compression 1"), std::string::npos);
  EXPECT_NE(with_header(testing::png_header(13, 9, 8, 0, 0, 0, 1)).find("filter 1"), std::string::npos);
  EXPECT_EQ(with_header(testing::png_chunk("tEXt", "a\0b") + testing::png_header(13, 9, 8, 0)),
            "corrupt PNG (it does not start with an IHDR chunk)");
  // A palette image needs its PLTE before the image data.
  EXPECT_EQ(with_header(testing::png_header(13, 9, 8, 3)),
            "corrupt PNG (a palette image whose IDAT comes before any PLTE chunk)");
}

// A Grad-CAM overlay that cannot be written stops the command (explain, the gallery) instead of
// leaving its maps out while the command reports success.
TEST(HeatmapOverlay, AFileThatCannotBeWrittenIsAnError) {
  testing::TempDir dir;
  const std::vector<uint8_t> image(16 * 16, 100);
  std::vector<float> map(16 * 16, 0.0f);
  map[5 * 16 + 7] = 2.0f;
  EXPECT_EQ(write_heatmap_overlay(dir.file("ok.png"), image.data(), 16, map.data()), "");
  EXPECT_EQ(cv::imread(dir.file("ok.png")).cols, 16);
  testing::write_file(dir.file("blocker"), "a file, not a folder");
  EXPECT_THROW(write_heatmap_overlay(dir.file("blocker") + "/overlay.png", image.data(), 16,
                                     map.data()),
               Error);
}

}  // namespace
}  // namespace pneumo
