// NumPy .npy files, the storage of the dataset cache (docs/conventions.md): C-order arrays of uint8, int32,
// int64 and float32. Writes format 1.0; reads 1.0, 2.0 and 3.0. Every malformed file (bad magic,
// bad header, a size that overflows or does not match the file) is refused with a pneumo::Error
// naming the file; nothing is ever read past the end of what was read from disk.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace pneumo {

enum class NpyType { UInt8, Int32, Int64, Float32 };

const char* npy_descr(NpyType type);  // "|u1", "<i4", "<i8", "<f4"
size_t npy_item_size(NpyType type);   // 1, 4, 8, 4

// What the header says, and where the data lies in the file.
struct NpyHeader {
  NpyType type = NpyType::UInt8;
  std::vector<int64_t> shape;  // () for a scalar
  size_t data_offset = 0;      // bytes from the start of the file to the first element
  size_t data_bytes = 0;       // numel * item size, checked against overflow
};

// Parses the header from the first `available` bytes of a file that holds `file_size` bytes in
// all; `what` names the file in errors. Requires the data to fill the rest of the file exactly.
NpyHeader parse_npy_header(const uint8_t* bytes, size_t available, uint64_t file_size,
                           const std::string& what);

// A whole array in memory: raw little-endian elements in C order.
struct NpyArray {
  NpyType type = NpyType::UInt8;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
  int64_t numel() const;
  std::string shape_string() const;  // "(5216, 150, 150)"
};

// Parses a whole .npy file held in memory; `what` names it in errors. Takes the buffer over and
// keeps only its data section, so the elements are never copied a second time. read_npy is this
// on top of the file's bytes; the fuzz target (tests/fuzz/fuzz_npy.cpp) calls it directly.
NpyArray npy_from_bytes(std::vector<uint8_t> file_bytes, const std::string& what);

NpyArray read_npy(const std::string& path);

// Writes `data` (numel(shape) elements of `type`, C order) as a format-1.0 .npy file. The file is
// written beside its final name and renamed into place, so a reader never sees half a file.
void write_npy(const std::string& path, NpyType type, const std::vector<int64_t>& shape,
               const void* data);

}  // namespace pneumo
