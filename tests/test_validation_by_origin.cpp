// scripts/validation_by_origin.py, which splits `evaluate --scores` rows by what each image was
// before resizing (224 x 224, or its width/height): sizes read from JPEG and PNG headers (a
// start-of-frame after other segments, a progressive one, a DHT segment that is not a frame),
// pneumo's strict `logit > cut` rule at the threshold, and a clear error for a CSV of another
// kind. The images are headers only: the script never decodes pixels. Skipped without python3.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cli_test_util.hpp"
#include "temp_dir.hpp"

namespace pneumo {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

void write_bytes(const fs::path& path, const Bytes& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
}

void append_be16(Bytes& out, unsigned value) {
  out.push_back(static_cast<uint8_t>(value >> 8));
  out.push_back(static_cast<uint8_t>(value & 0xFF));
}

// A JPEG's markers up to its frame header: SOI, an APP0 segment, a DHT segment (0xC4, in the SOF
// range but not a frame), then the frame header `sof` with the size.
Bytes jpeg_header(unsigned width, unsigned height, uint8_t sof = 0xC0) {
  Bytes out = {0xFF, 0xD8, 0xFF, 0xE0};
  append_be16(out, 16);
  for (const char c : std::string("JFIF\0\1\1\0\0\1\0\1\0\0", 14))
    out.push_back(static_cast<uint8_t>(c));
  out.insert(out.end(), {0xFF, 0xC4});
  append_be16(out, 5);
  out.insert(out.end(), {0x00, 0x01, 0x02});  // not a size: a DHT read as a frame gives 258 x 2
  out.insert(out.end(), {0xFF, sof});
  append_be16(out, 11);
  out.push_back(8);  // precision
  append_be16(out, height);
  append_be16(out, width);
  out.insert(out.end(), {1, 1, 0x11, 0});
  return out;
}

Bytes png_header(unsigned width, unsigned height) {
  Bytes out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
  for (const unsigned v : {width, height})
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
  return out;
}

testing::CommandResult run_script(const std::string& images, const std::string& args) {
  return testing::run_command("python3 '" PNEUMO_SOURCE_DIR "/scripts/validation_by_origin.py' "
                              "--images '" + images + "' " + args + " 2>&1");
}

TEST(ValidationByOrigin, GroupsBySizeFromTheHeadersAndCountsAsPneumoDoes) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  const fs::path images = dir.file("tree");
  write_bytes(images / "train/NORMAL/a.jpeg", jpeg_header(224, 224));
  write_bytes(images / "train/NORMAL/b.jpeg", jpeg_header(224, 224));
  write_bytes(images / "train/PNEUMONIA/c.jpeg", jpeg_header(224, 224, 0xC2));  // progressive
  write_bytes(images / "train/NORMAL/d.jpeg", jpeg_header(300, 256));            // 1.17
  write_bytes(images / "train/NORMAL/e.png", png_header(330, 256));              // 1.29
  write_bytes(images / "train/PNEUMONIA/f.jpeg", jpeg_header(400, 256));         // 1.5625
  write_bytes(images / "train/PNEUMONIA/g.jpeg", jpeg_header(384, 256));         // exactly 1.5
  write_bytes(images / "train/PNEUMONIA/h.jpeg", jpeg_header(360, 256));         // 1.41
  std::ofstream(dir.file("scores.csv"))
      << "index,file,label,logit,probability\n"
      << "0,train/NORMAL/a.jpeg,0,-2.0,0.12\n"
      << "1,train/NORMAL/b.jpeg,0,0.0,0.5\n"       // logit 0 at 0.5: NORMAL (strict >)
      << "2,train/PNEUMONIA/c.jpeg,1,-1.0,0.27\n"  // missed
      << "3,train/NORMAL/d.jpeg,0,1.0,0.73\n"      // false positive
      << "4,train/NORMAL/e.png,0,-3.0,0.05\n"
      << "5,train/PNEUMONIA/f.jpeg,1,2.0,0.88\n"
      << "6,train/PNEUMONIA/g.jpeg,1,0.5,0.62\n"
      << "7,train/PNEUMONIA/h.jpeg,1,-0.5,0.38\n";  // missed
  testing::CommandResult run = run_script(images.string(), "'" + dir.file("scores.csv") + "'");
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("| 224 x 224 | 2 | 1.000 (2/2) | 1 | 0.000 (0/1) |"), std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("| other, width/height < 1.2 | 1 | 0.000 (0/1) | 0 |  |"),
            std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("| other, width/height 1.2 to 1.35 | 1 | 1.000 (1/1) | 0 |  |"),
            std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("| other, width/height >= 1.5 | 0 |  | 2 | 1.000 (2/2) |"),
            std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("| other, width/height 1.35 to 1.5 | 0 |  | 1 | 0.000 (0/1) |"),
            std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("| other, all | 2 | 0.500 (1/2) | 3 | 0.667 (2/3) |"),
            std::string::npos)
      << run.output;

  // A higher threshold turns g (logit 0.5, probability 0.62) into a miss.
  run = run_script(images.string(), "--threshold 0.7 '" + dir.file("scores.csv") + "'");
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("| other, width/height >= 1.5 | 0 |  | 2 | 0.500 (1/2) |"),
            std::string::npos)
      << run.output;
}

TEST(ValidationByOrigin, RefusesACsvOfAnotherKindAndAFileWithoutASize) {
  if (testing::run_command("python3 -c pass").status != 0) GTEST_SKIP() << "no python3";
  testing::TempDir dir;
  const fs::path images = dir.file("tree");
  std::ofstream(dir.file("other.csv")) << "seed,accuracy\n1,0.9\n";
  testing::CommandResult run = run_script(images.string(), "'" + dir.file("other.csv") + "'");
  EXPECT_EQ(run.status, 1) << run.output;
  EXPECT_NE(run.output.find("expected the CSV of `pneumo evaluate --scores`"), std::string::npos)
      << run.output;

  write_bytes(images / "y.jpeg", jpeg_header(300, 0));  // height left to a DNL segment
  std::ofstream(dir.file("no-height.csv"))
      << "index,file,label,logit,probability\n0,y.jpeg,0,-1,0.27\n";
  run = run_script(images.string(), "'" + dir.file("no-height.csv") + "'");
  EXPECT_EQ(run.status, 1) << run.output;
  EXPECT_NE(run.output.find("y.jpeg: its header gives no size (300 x 0)"), std::string::npos)
      << run.output;

  write_bytes(images / "x.jpeg", {0xFF, 0xD8, 0xFF, 0xD9});  // SOI, EOI: no frame header
  std::ofstream(dir.file("scores.csv"))
      << "index,file,label,logit,probability\n0,x.jpeg,0,-1,0.27\n";
  run = run_script(images.string(), "'" + dir.file("scores.csv") + "'");
  EXPECT_EQ(run.status, 1) << run.output;
  EXPECT_NE(run.output.find("x.jpeg: neither a JPEG with a start-of-frame nor a PNG"),
            std::string::npos)
      << run.output;
}

}  // namespace
}  // namespace pneumo
