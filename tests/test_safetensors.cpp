// safetensors: round trip, byte layout, compatibility with Python's `safetensors` and NumPy
// (skipped when they are not installed), every malformed-input case rejected with a clear
// pneumo::Error, random corruption never escaping as anything else, and the atomic writer.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <thread>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>

#include "core/atomic_file.hpp"
#include "pneumo/error.hpp"
#include "pneumo/safetensors.hpp"
#include "temp_dir.hpp"

namespace pneumo {
namespace {

using pneumo::testing::TempDir;

// A file image from a header text and `data_bytes` bytes of data (all 0x11).
std::vector<uint8_t> make_image(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> out(8);
  uint64_t length = header.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<uint8_t>(length >> (8 * i));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data_bytes, 0x11);
  return out;
}

SafetensorsWriter sample_writer() {
  SafetensorsWriter writer;
  std::vector<float> weights{0.5f, -1.25f, 3.0f, 1e-8f, -0.0f, 65504.0f};
  std::vector<int64_t> counts{1, -2, int64_t{1} << 40};
  std::vector<uint8_t> bytes{0, 7, 255};
  float scalar = 2.5f;
  writer.add_f32("conv1.weight", {2, 3}, weights.data());
  writer.add_i64("counts", {3}, counts.data());
  writer.add_u8("mask", {3}, bytes.data());
  writer.add_f32("scalar", {}, &scalar);
  writer.add_f32("empty", {0, 4}, nullptr);
  writer.set_metadata("architecture", "seed-cnn-v1");
  writer.set_metadata("note", "ünïcode ✓");
  return writer;
}

TEST(Safetensors, RoundTripInMemory) {
  auto image = sample_writer().serialize();
  SafetensorsFile file = SafetensorsFile::from_bytes(image, "sample");
  EXPECT_EQ(file.tensors().size(), 5u);
  EXPECT_EQ(file.to_f32("conv1.weight"),
            (std::vector<float>{0.5f, -1.25f, 3.0f, 1e-8f, -0.0f, 65504.0f}));
  EXPECT_EQ(file.entry("conv1.weight").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(file.to_i64("counts"), (std::vector<int64_t>{1, -2, int64_t{1} << 40}));
  EXPECT_EQ(file.to_u8("mask"), (std::vector<uint8_t>{0, 7, 255}));
  EXPECT_EQ(file.to_f32("scalar"), std::vector<float>{2.5f});
  EXPECT_TRUE(file.entry("scalar").shape.empty());
  EXPECT_TRUE(file.to_f32("empty").empty());
  EXPECT_EQ(file.metadata().at("architecture"), "seed-cnn-v1");
  EXPECT_EQ(file.metadata().at("note"), "ünïcode ✓");
  EXPECT_EQ(file.find("missing"), nullptr);
  EXPECT_THROW(file.entry("missing"), Error);
  EXPECT_THROW(file.to_f32("counts"), Error);  // stored as I64: no silent cast
}

TEST(Safetensors, ByteLayoutFollowsTheFormat) {
  auto image = sample_writer().serialize();
  uint64_t length = 0;
  std::memcpy(&length, image.data(), 8);
  EXPECT_EQ(length % 8, 0u) << "header padded so the data is 8-byte aligned";
  EXPECT_EQ(image[8], '{');
  // Data in insertion order right after the header: conv1.weight first.
  float first = 0;
  std::memcpy(&first, image.data() + 8 + length, 4);
  EXPECT_EQ(first, 0.5f);
  EXPECT_EQ(image.size(), 8 + length + 6 * 4 + 3 * 8 + 3 + 4);
}

TEST(Safetensors, WriteAtomicallyAndReadBack) {
  TempDir dir;
  std::string path = dir.file("model.safetensors");
  write_file_atomically(path, std::string("old contents"));
  sample_writer().write(path);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"model.safetensors"}) << "no temporary left";
  EXPECT_EQ(SafetensorsFile::read(path).to_f32("scalar"), std::vector<float>{2.5f});
  EXPECT_THROW(SafetensorsFile::read(dir.file("absent.safetensors")), Error);
  EXPECT_THROW(SafetensorsFile::read(dir.path()), Error);  // a directory
}

// A new file gets 0666 less the umask (a private run's checkpoints stay private); a replaced one
// keeps the permissions it had.
TEST(Safetensors, AtomicWritesFollowTheUmaskAndKeepAFilesMode) {
  TempDir dir;
  const mode_t old_mask = ::umask(077);
  write_file_atomically(dir.file("new"), std::string("x"));
  ::umask(old_mask);
  struct stat info {};
  ASSERT_EQ(::stat(dir.file("new").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  ASSERT_EQ(::chmod(dir.file("new").c_str(), 0640), 0);
  write_file_atomically(dir.file("new"), std::string("y"));
  ASSERT_EQ(::stat(dir.file("new").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0640u);
}

TEST(Safetensors, UnwritableDirectoryFailsClearly) {
  TempDir dir;
  std::string path = dir.file("no/such/dir/model.safetensors");
  try {
    sample_writer().write(path);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string message = e.what();
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find("No such file or directory"), std::string::npos) << message;
  }
  // A regular file where the directory should be.
  write_file_atomically(dir.file("plain"), std::string("x"));
  EXPECT_THROW(write_file_atomically(dir.file("plain/model.safetensors"), std::string("y")), Error);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"plain"});
  // A non-empty directory where the file should go: the rename fails, the temporary goes.
  std::filesystem::create_directories(dir.file("occupied/inside"));
  EXPECT_THROW(write_file_atomically(dir.file("occupied"), std::string("z")), Error);
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"occupied", "plain"}));
}

// What a user may name as an output file that is not a plain one: a link keeps pointing at its
// target, which gets the new contents; a FIFO (as a device would: /dev/stdout, not tried here,
// where a regression would replace it) stays what it is and receives them; a folder is refused.
TEST(Safetensors, AtomicWritesKeepLinksFifosAndDevices) {
  TempDir dir;
  write_file_atomically(dir.file("target.json"), std::string("old"));
  std::filesystem::create_symlink(dir.file("target.json"), dir.file("link.json"));
  write_file_atomically(dir.file("link.json"), std::string("new"));
  EXPECT_TRUE(std::filesystem::is_symlink(dir.file("link.json")));
  EXPECT_EQ(testing::read_text(dir.file("target.json")), "new");

  const std::string fifo = dir.file("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::string received;
  std::thread reader([&] { received = testing::read_text(fifo); });
  write_file_atomically(fifo, std::string("through the pipe"));
  reader.join();
  EXPECT_EQ(received, "through the pipe");
  EXPECT_TRUE(std::filesystem::is_fifo(fifo)) << "the FIFO was replaced by a regular file";

  std::filesystem::create_directories(dir.file("folder"));
  EXPECT_THROW(write_file_atomically(dir.file("folder"), std::string("x")), Error);
}

// Reading: a FIFO named as a checkpoint is refused at once (open waited for a writer for ever); a
// large file that is no safetensors file is refused by its first bytes, before it is read whole
// (a 3 GB sparse file: gigabytes of memory and seconds before, or an out-of-memory error).
TEST(Safetensors, AFifoOrALargeForeignFileIsRefusedWithoutReadingIt) {
  TempDir dir;
  const std::string fifo = dir.file("fifo.safetensors");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  try {
    SafetensorsFile::read(fifo);
    ADD_FAILURE() << "a FIFO was read";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos) << e.what();
  }
  try {
    read_file_bytes(fifo);
    ADD_FAILURE() << "a FIFO was read";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos) << e.what();
  }
  const std::string large = dir.file("large.safetensors");
  { std::ofstream(large) << "not a safetensors file"; }
  std::filesystem::resize_file(large, uint64_t{3} << 30);  // sparse: no disk used
  try {
    SafetensorsFile::read(large);
    ADD_FAILURE() << "a foreign file was taken for a checkpoint";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(large + ": header length"), std::string::npos) << e.what();
  }
  // read_file_bytes' limit: refused before anything is allocated.
  try {
    read_file_bytes(large, 1 << 20);
    ADD_FAILURE() << "read past its limit";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("it is 3221225472 bytes, more than the 1048576"),
              std::string::npos)
        << e.what();
  }
}

TEST(Safetensors, WriterRefusesBadTensors) {
  SafetensorsWriter writer;
  float value = 1;
  writer.add_f32("a", {1}, &value);
  EXPECT_THROW(writer.add_f32("a", {1}, &value), Error);
  EXPECT_THROW(writer.add_f32("__metadata__", {1}, &value), Error);
  EXPECT_THROW(writer.add_f32("", {1}, &value), Error);
  EXPECT_THROW(writer.add_f32("negative", {-1}, &value), Error);
  EXPECT_THROW(writer.add_raw("short", DType::F32, {2}, &value, 4), Error);
  EXPECT_THROW(writer.add_f32("null", {2}, nullptr), Error);
}

TEST(Safetensors, PythonAndNumpyReadOursAndWeReadTheirs) {
  if (std::system("python3 -c 'import safetensors.numpy, numpy' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "python3 with the safetensors and numpy packages is not installed";
  TempDir dir;
  sample_writer().write(dir.file("ours.safetensors"));
  const char* script = R"PY(
import sys, numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
ours, theirs = sys.argv[1], sys.argv[2]
t = load_file(ours)
assert t["conv1.weight"].dtype == np.float32 and t["conv1.weight"].shape == (2, 3)
assert t["conv1.weight"].tolist() == [[0.5, -1.25, 3.0], [np.float32(1e-8), -0.0, 65504.0]]
assert t["counts"].dtype == np.int64 and t["counts"].tolist() == [1, -2, 2**40]
assert t["mask"].dtype == np.uint8 and t["mask"].tolist() == [0, 7, 255]
assert t["scalar"].shape == () and float(t["scalar"]) == 2.5
assert t["empty"].shape == (0, 4)
with safe_open(ours, "np") as f:
    assert f.metadata() == {"architecture": "seed-cnn-v1", "note": "\u00fcn\u00efcode \u2713"}
save_file({"b": np.array([1, -2, 3], dtype=np.int64),
           "a": np.arange(6, dtype=np.float32).reshape(3, 2) / 4,
           "c": np.array([9], dtype=np.uint8)}, theirs, metadata={"from": "python"})
)PY";
  std::ofstream(dir.file("check.py")) << script;
  std::string command = "python3 " + dir.file("check.py") + " " + dir.file("ours.safetensors") +
                        " " + dir.file("theirs.safetensors");
  ASSERT_EQ(std::system(command.c_str()), 0) << "the Python check failed: " << command;
  SafetensorsFile theirs = SafetensorsFile::read(dir.file("theirs.safetensors"));
  EXPECT_EQ(theirs.to_f32("a"), (std::vector<float>{0, 0.25f, 0.5f, 0.75f, 1, 1.25f}));
  EXPECT_EQ(theirs.entry("a").shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(theirs.to_i64("b"), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(theirs.to_u8("c"), std::vector<uint8_t>{9});
  EXPECT_EQ(theirs.metadata().at("from"), "python");
}

// Expects parse_safetensors to refuse `image` with a message containing `expected`.
void expect_refused(const std::vector<uint8_t>& image, const std::string& expected) {
  try {
    parse_safetensors(image.data(), image.size(), "case.safetensors");
    ADD_FAILURE() << "accepted, expected a refusal mentioning: " << expected;
  } catch (const Error& e) {
    std::string message = e.what();
    EXPECT_NE(message.find("case.safetensors"), std::string::npos) << message;
    EXPECT_NE(message.find(expected), std::string::npos)
        << "message \"" << message << "\" lacks \"" << expected << "\"";
  }
}

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  uint64_t begin, uint64_t end) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
         ",\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(end) + "]}";
}

TEST(Safetensors, MalformedFilesAreRefusedClearly) {
  // The valid baseline the cases below break one thing at a time.
  auto valid = make_image("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "U8", "[3]", 8, 11) + "}", 11);
  EXPECT_NO_THROW(parse_safetensors(valid.data(), valid.size()));

  expect_refused({1, 2, 3}, "too short");
  {
    auto image = valid;
    image[0] = 0xFF;  // header length 255 + ...: past the end of this small file
    expect_refused(image, "runs past the end of the file");
  }
  {
    std::vector<uint8_t> image(16, 0);
    uint64_t huge = uint64_t{1} << 40;
    std::memcpy(image.data(), &huge, 8);
    expect_refused(image, "exceeds the limit");
  }
  expect_refused(make_image("[1,2]", 0), "does not start with '{'");
  expect_refused(make_image("", 0), "does not start with '{'");
  expect_refused(make_image("{\"a\":", 0), "not valid JSON");
  expect_refused(make_image("{\"a\xff\":1}", 0), "not valid JSON");  // invalid UTF-8
  expect_refused(make_image("{\"a\":{\"dtype\":\"F32\",\"shape\":[[[1]]],\"data_offsets\":[0,4]}}", 4),
                 "deeper");
  expect_refused(make_image("{" + entry("a", "F32", "[1]", 0, 4) + "," + entry("a", "F32", "[1]", 4, 8) + "}", 8),
                 "\"a\" twice (two tensors with one name)");
  expect_refused(make_image("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4),
                 "\"dtype\" twice");
  expect_refused(make_image("{\"a\":[1]}", 0), "expected an object");
  expect_refused(make_image("{" + entry("a", "F31", "[1]", 0, 4) + "}", 4), "unknown dtype");
  expect_refused(make_image("{" + entry("a", "F32", "[-1]", 0, 4) + "}", 4), "non-negative integers");
  expect_refused(make_image("{" + entry("a", "F32", "[1.5]", 0, 4) + "}", 4), "non-negative integers");
  expect_refused(make_image("{" + entry("a", "F32", "4", 0, 16) + "}", 16), "shape must be an array");
  expect_refused(make_image("{" + entry("a", "F32", "[4294967296,4294967296,4294967296]", 0, 4) + "}", 4),
                 "overflows 64 bits");
  expect_refused(make_image("{" + entry("a", "F32", "[4611686018427387905]", 0, 4) + "}", 4),
                 "overflows 64 bits");  // numel fits, numel * 4 bytes does not
  expect_refused(make_image("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4),
                 "data_offsets must be [begin, end]");
  expect_refused(make_image("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4), "needs all of");
  expect_refused(make_image("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"crc\":1}}", 4),
                 "unexpected field \"crc\"");
  expect_refused(make_image("{" + entry("a", "F32", "[1]", 4, 0) + "}", 4), "reversed");
  expect_refused(make_image("{" + entry("a", "F32", "[2]", 0, 8) + "}", 4), "run past the end of the data section");
  expect_refused(make_image("{" + entry("a", "F32", "[2]", 0, 4) + "}", 4), "needs 8");
  expect_refused(make_image("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[1]", 4, 8) + "}", 8),
                 "overlaps tensor \"a\"");
  expect_refused(make_image("{" + entry("a", "F32", "[1]", 0, 4) + "," + entry("b", "F32", "[1]", 8, 12) + "}", 12),
                 "gap of 4 bytes");
  expect_refused(make_image("{" + entry("a", "F32", "[1]", 0, 4) + "}", 6), "trailing bytes");
  expect_refused(make_image("{\"__metadata__\":{\"epoch\":3}}", 0), "must be a string");
  expect_refused(make_image("{\"__metadata__\":[\"x\"]}", 0), "object of strings");
  {
    auto truncated = sample_writer().serialize();
    truncated.resize(truncated.size() - 5);
    expect_refused(truncated, "run past the end of the data section");
  }
}

// Nesting a million levels deep is refused at the fourth, without recursion.
TEST(Safetensors, DeepNestingIsRefusedEarly) {
  const std::string deep = "{\"a\":" + std::string(1000000, '[') + std::string(1000000, ']') + "}";
  expect_refused(make_image(deep, 0), "deeper");
}

// Seconds to parse a header of `count` one-byte tensors and look every one up by name, as a
// checkpoint loader does.
double parse_and_look_up_seconds(int count) {
  std::string header = "{";
  for (int i = 0; i < count; ++i)
    header += (i ? "," : "") + entry("t" + std::to_string(i), "U8", "[1]", i, i + 1);
  header += "}";
  const std::vector<uint8_t> image = make_image(header, static_cast<size_t>(count));
  const auto start = std::chrono::steady_clock::now();
  const SafetensorsFile file = SafetensorsFile::from_bytes(image, "many");
  EXPECT_EQ(file.tensors().size(), static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    const std::string name = "t" + std::to_string(i);
    EXPECT_EQ(file.to_u8(name), std::vector<uint8_t>{0x11}) << name;
    EXPECT_EQ(file.entry(name).begin, static_cast<uint64_t>(i)) << name;
  }
  EXPECT_EQ(file.find("t" + std::to_string(count)), nullptr);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Many tensors load whole and are all found by name. The parse was once quadratic (nlohmann's
// parse callback and a linear find(): a 2.3 MB header of 40,000 entries took over 5 minutes on a
// loaded 2-core machine), so a small hostile file could stall any loader; the parse is now a SAX
// check then a plain parse, and lookups go through a hash index. Its cost is printed, not
// asserted (speed is measured, never a test's verdict): 0.26 s for 80,000 entries on the dev VM,
// where the quadratic parse would run past the suite's 900 s per-test timeout.
TEST(Safetensors, ManyTensorsLoadAndAreFoundByName) {
  const double small = parse_and_look_up_seconds(10000);
  const double large = parse_and_look_up_seconds(80000);
  std::cout << "10,000 tensors: " << small << " s, 80,000: " << large << " s\n";
}

TEST(Safetensors, OffsetsInAnyHeaderOrderAreFine) {
  // JSON object order carries no meaning: "b" holds the first bytes here.
  auto image = make_image("{" + entry("a", "U8", "[2]", 1, 3) + "," + entry("b", "U8", "[1]", 0, 1) + "}", 3);
  SafetensorsHeader header = parse_safetensors(image.data(), image.size());
  ASSERT_EQ(header.tensors.size(), 2u);
  EXPECT_EQ(header.tensors[0].name, "b");
  EXPECT_EQ(header.data_offset, 8 + image.size() - 8 - 3);
}

TEST(Safetensors, RandomCorruptionOnlyEverRaisesPneumoError) {
  const auto valid = sample_writer().serialize();
  std::mt19937 gen(1234);
  int accepted = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    auto image = valid;
    int edits = 1 + static_cast<int>(gen() % 4);
    for (int e = 0; e < edits; ++e) {
      switch (gen() % 3) {
        case 0:  // flip a byte, biased toward the length field and the header
          image[gen() % std::min<size_t>(image.size(), (gen() % 2) ? 16 : image.size())] ^=
              static_cast<uint8_t>(1 + gen() % 255);
          break;
        case 1:  // truncate
          image.resize(gen() % image.size());
          break;
        default:  // append junk
          image.push_back(static_cast<uint8_t>(gen()));
          break;
      }
      if (image.empty()) break;
    }
    try {
      parse_safetensors(image.data(), image.size());
      ++accepted;
    } catch (const Error&) {
    }
  }
  // None escapes as another exception (the loop above); most are caught. A change to a tensor's
  // bytes that keeps the layout parses (only the checkpoint's CRC catches it), so some pass.
  std::cout << accepted << " of 3000 corrupted files parsed\n";
  EXPECT_LT(accepted, 1500);
  // And every file cut short anywhere is refused: the header's length and the tensors' offsets
  // say how long it must be.
  for (size_t size = 0; size < valid.size(); ++size)
    EXPECT_THROW(parse_safetensors(valid.data(), size), Error) << "cut to " << size << " bytes";
}

}  // namespace
}  // namespace pneumo
