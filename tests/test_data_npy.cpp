// The .npy reader and writer: round trips for every supported dtype, numpy's own files, and
// refusal (with the file named, never an out-of-bounds read) of every kind of malformed file.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <random>

#include "data_test_util.hpp"
#include "pneumo/error.hpp"
#include "pneumo/npy.hpp"

namespace pneumo {
namespace {

using testing::ScratchDir;

template <class T>
void expect_round_trip(NpyType type, std::vector<int64_t> shape, const ScratchDir& dir) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<T> values(static_cast<size_t>(n));
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<T>(i * 7 % 251) - T(3);
  const std::string path = (dir / "a.npy").string();
  write_npy(path, type, shape, values.data());
  const NpyArray back = read_npy(path);
  EXPECT_EQ(back.type, type);
  EXPECT_EQ(back.shape, shape);
  ASSERT_EQ(back.bytes.size(), values.size() * sizeof(T));
  if (!values.empty()) {  // memcmp on the null data() of empty vectors is undefined
    EXPECT_EQ(std::memcmp(back.bytes.data(), values.data(), back.bytes.size()), 0);
  }
  // numpy's alignment: the data starts on a 64-byte boundary, the header ends with '\n'.
  const std::string raw = testing::read_file(path);
  const size_t header_end = 10 + static_cast<uint8_t>(raw[8]) + 256u * static_cast<uint8_t>(raw[9]);
  EXPECT_EQ(header_end % 64, 0u);
  EXPECT_EQ(raw[header_end - 1], '\n');
}

TEST(Npy, RoundTripsEveryDtypeAndRank) {
  ScratchDir dir;
  expect_round_trip<uint8_t>(NpyType::UInt8, {3, 5, 7}, dir);
  expect_round_trip<uint8_t>(NpyType::UInt8, {11}, dir);
  expect_round_trip<uint8_t>(NpyType::UInt8, {0, 150, 150}, dir);
  expect_round_trip<int32_t>(NpyType::Int32, {4, 6}, dir);
  expect_round_trip<int64_t>(NpyType::Int64, {9}, dir);
  expect_round_trip<float>(NpyType::Float32, {2, 1, 3, 3}, dir);
  expect_round_trip<float>(NpyType::Float32, {}, dir);  // a scalar: one element
}

TEST(Npy, NoTemporaryFileLeftBehind) {
  ScratchDir dir;
  const uint8_t v[3] = {1, 2, 3};
  write_npy((dir / "x.npy").string(), NpyType::UInt8, {3}, v);
  int files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path())) ++files;
  EXPECT_EQ(files, 1);
}

// A valid header followed by `data_bytes` bytes of data, with the dict text replaceable.
std::string npy_file(const std::string& dict, size_t data_bytes, char major = 1) {
  std::string header = dict;
  while ((10 + header.size() + 1) % 64) header.push_back(' ');
  header.push_back('\n');
  std::string file("\x93NUMPY", 6);
  file.push_back(major);
  file.push_back(0);
  file.push_back(static_cast<char>(header.size() & 0xFF));
  file.push_back(static_cast<char>(header.size() >> 8));
  return file + header + std::string(data_bytes, '\x05');
}

void expect_refused(const std::string& bytes, const std::string& message_part) {
  ScratchDir dir;
  const std::string path = (dir / "bad.npy").string();
  testing::write_file(path, bytes);
  try {
    read_npy(path);
    ADD_FAILURE() << "accepted a bad file; expected an error mentioning '" << message_part << "'";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(path), std::string::npos) << "error does not name the file: " << what;
    EXPECT_NE(what.find(message_part), std::string::npos) << what;
  }
}

TEST(Npy, ParsesHandWrittenHeaders) {
  ScratchDir dir;
  const std::string path = (dir / "ok.npy").string();
  testing::write_file(path, npy_file("{\"shape\": (2,3), 'fortran_order': False, 'descr': '<f4'}", 24));
  const NpyArray a = read_npy(path);
  EXPECT_EQ(a.type, NpyType::Float32);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
}

// The in-memory entry point (read_npy is built on it, the fuzz target calls it): the data section
// comes back without the header, and refusals name what the caller called the buffer.
TEST(Npy, ParsesFromMemory) {
  const std::string file =
      npy_file("{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", 0) +
      std::string("\x01\x00\x00\x00\xff\xff\xff\xff", 8);
  const NpyArray a = npy_from_bytes(std::vector<uint8_t>(file.begin(), file.end()), "in memory");
  EXPECT_EQ(a.type, NpyType::Int32);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2}));
  ASSERT_EQ(a.bytes.size(), 8u);
  int32_t values[2];
  std::memcpy(values, a.bytes.data(), sizeof(values));
  EXPECT_EQ(values[0], 1);
  EXPECT_EQ(values[1], -1);
  try {
    npy_from_bytes(std::vector<uint8_t>(file.begin(), file.end() - 1), "in memory");
    ADD_FAILURE() << "accepted an array one byte short";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("in memory"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
  EXPECT_THROW(npy_from_bytes({}, "empty"), Error);
}

TEST(Npy, RefusesMalformedFiles) {
  const std::string good = "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3), }";
  expect_refused("", "bad magic");
  expect_refused("hello world, not numpy at all", "bad magic");
  expect_refused(std::string("\x93NUMPY\x01\x00", 8), "bad magic");  // shorter than a prefix
  expect_refused(npy_file(good, 6).substr(0, 40), "truncated");      // header cut short
  expect_refused(npy_file(good, 5), "truncated");                    // data one byte short
  expect_refused(npy_file(good, 7), "file holds 7");                 // one byte too many
  expect_refused(npy_file(good, 6, 9), "format version 9");
  expect_refused(npy_file("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", 4), "dtype");
  expect_refused(npy_file("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", 8), "dtype");
  expect_refused(npy_file("{'descr': '|u1', 'fortran_order': True, 'shape': (2, 3), }", 6), "Fortran");
  expect_refused(npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': (-2, 3), }", 6), "dimension");
  expect_refused(npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3) ", 6),
                 "expected ',' or '}'");
  expect_refused(npy_file("{'descr': '|u1', 'shape': (2, 3), }", 6), "missing");
  expect_refused(npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3), 'x': 1}", 6), "unexpected");
  expect_refused(npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3), } junk", 6), "after");
  // Sizes whose product overflows, and a single dimension past 64 bits.
  expect_refused(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': "
                          "(4294967296, 4294967296), }", 0), "overflows");
  expect_refused(npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': "
                          "(99999999999999999999,), }", 0), "overflows");
  // Huge but representable: must be refused by size, not allocated.
  expect_refused(npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': (1000000000000,), }", 0),
                 "truncated");
  // Header length field pointing past the end of the file.
  std::string lying = npy_file(good, 6);
  lying[8] = '\xff';
  lying[9] = '\x7f';
  expect_refused(lying, "truncated");
}

// Random corruptions of a valid file: each is either parsed into a header consistent with the
// file size or refused with pneumo::Error; never anything else (the sanitizer build would catch
// an out-of-bounds read here).
TEST(Npy, CorruptedHeadersAreParsedOrRefusedNeverMisread) {
  const std::string good =
      npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", 24);
  std::mt19937 gen(99);
  int refused = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string bytes = good;
    const int edits = 1 + static_cast<int>(gen() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t at = gen() % bytes.size();
      switch (gen() % 3) {
        case 0: bytes[at] = static_cast<char>(gen()); break;
        case 1: bytes.erase(at, 1 + gen() % 8); break;
        default: bytes.insert(at, 1, "(),:'\"0123456789 {}"[gen() % 20]); break;
      }
      if (bytes.empty()) bytes = "x";
    }
    // Parse from an exact-size heap copy so any over-read leaves the allocation.
    std::vector<uint8_t> exact(bytes.begin(), bytes.end());
    try {
      const NpyHeader h = parse_npy_header(exact.data(), exact.size(), exact.size(), "fuzz");
      ASSERT_EQ(h.data_offset + h.data_bytes, exact.size());
    } catch (const Error&) {
      ++refused;
    }
  }
  EXPECT_GT(refused, 1000);
}

TEST(Npy, ReadsNumpyFilesAndNumpyReadsOurs) {
  if (!testing::python_numpy_available()) GTEST_SKIP() << "python3 with numpy not available";
  ScratchDir dir;
  const std::string theirs = (dir / "theirs.npy").string();
  const std::string ours = (dir / "ours.npy").string();
  std::vector<float> values(24);
  std::iota(values.begin(), values.end(), -5.0f);
  write_npy(ours, NpyType::Float32, {2, 3, 4}, values.data());
  const std::string out = testing::run_python(
      "import numpy as np\n"
      "np.save('" + theirs + "', np.arange(12, dtype=np.int32).reshape(3, 4) * 3)\n"
      "a = np.load('" + ours + "')\n"
      "print(a.dtype, a.shape, float(a.sum()), a.flags['C_CONTIGUOUS'])\n");
  EXPECT_EQ(out, "float32 (2, 3, 4) 156.0 True");
  const NpyArray a = read_npy(theirs);
  EXPECT_EQ(a.type, NpyType::Int32);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{3, 4}));
  const auto* v = reinterpret_cast<const int32_t*>(a.bytes.data());
  for (int i = 0; i < 12; ++i) EXPECT_EQ(v[i], 3 * i);
}

}  // namespace
}  // namespace pneumo
