// The safetensors format (as written by Hugging Face's `safetensors` and read by PyTorch/NumPy):
// an 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets},
// "__metadata__": {string: string}}, then the raw little-endian tensor bytes. Reader and writer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace pneumo {

enum class DType { Bool, U8, I8, I16, U16, I32, U32, I64, U64, F16, BF16, F32, F64, F8_E4M3, F8_E5M2 };
const char* dtype_name(DType dtype);  // "F32", as in the header
size_t dtype_size(DType dtype);       // bytes per element

// Headers larger than this are refused before any allocation (the reference implementation's
// limit too): a hostile length field must not make the reader reserve gigabytes.
constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// One tensor of a file: where its bytes lie in the data section (after the header).
struct TensorEntry {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // [] is a scalar (one element)
  uint64_t begin = 0, end = 0;  // byte offsets into the data section, end exclusive
  uint64_t numel() const;
  uint64_t byte_size() const { return end - begin; }
};

struct SafetensorsHeader {
  std::vector<TensorEntry> tensors;  // in data order (ascending offsets)
  std::map<std::string, std::string> metadata;
  uint64_t data_offset = 0;  // absolute position of the data section: 8 + header length
};

// Parses and validates a complete safetensors image held in memory. Every structural fault is a
// pneumo::Error that names `source` and the offending value: header length past the end or above
// kMaxSafetensorsHeaderBytes, JSON that is invalid, not an object or nested deeper than the format
// needs, duplicate keys (names or fields), unknown dtypes or fields, shapes that are not arrays of
// non-negative integers or whose element or byte count overflows 64 bits, data_offsets that are
// reversed, run past the end, overlap, leave gaps or do not cover the data section exactly (as the
// reference implementation requires), byte counts that disagree with dtype x shape, and metadata
// that is not an object of strings. It never reads outside [data, data + size), and its cost is
// linear in the header's size; the libFuzzer target tests/fuzz/fuzz_safetensors.cpp calls it.
SafetensorsHeader parse_safetensors(const uint8_t* data, size_t size,
                                    const std::string& source = "safetensors buffer");

// Does the file at `path` begin as a safetensors file does (parse_safetensors' first checks: a
// header length that fits in the file, then '{')? Reads 9 bytes; false when it cannot be read.
bool starts_like_safetensors(const std::string& path);

// A parsed file held in memory, with typed copies of its tensors.
class SafetensorsFile {
 public:
  static SafetensorsFile read(const std::string& path);
  static SafetensorsFile from_bytes(std::vector<uint8_t> bytes, std::string source);

  const std::string& source() const { return source_; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const std::vector<TensorEntry>& tensors() const { return header_.tensors; }
  const TensorEntry* find(const std::string& name) const;  // nullptr when absent
  const TensorEntry& entry(const std::string& name) const;  // throws naming the file and name

  // Copies of a tensor's elements; each throws when the stored dtype differs (no silent casts).
  std::vector<float> to_f32(const std::string& name) const;
  std::vector<int64_t> to_i64(const std::string& name) const;
  std::vector<uint8_t> to_u8(const std::string& name) const;  // U8 or BOOL
  // The stored bytes of a tensor (byte_size() of them), for dtypes without a typed accessor.
  const uint8_t* raw_bytes(const TensorEntry& entry) const;

 private:
  template <class T>
  std::vector<T> copy_as(const std::string& name, DType expected, DType also_accepted) const;
  std::vector<uint8_t> bytes_;
  std::string source_;
  SafetensorsHeader header_;
  // name -> position in header_.tensors: a loader looks up every tensor by name, and a linear
  // search would make that quadratic in the tensor count a (hostile) header may choose.
  std::map<std::string, size_t> index_;
};

// Collects tensors (copied) and metadata, then serialises them: tensors in the order added,
// header keys sorted, header padded with spaces to a multiple of 8 bytes so that the data section
// is 8-byte aligned (as the reference writer does). Refuses duplicate or reserved names and
// byte counts that disagree with the shape.
class SafetensorsWriter {
 public:
  void add_f32(const std::string& name, std::vector<int64_t> shape, const float* values);
  void add_i64(const std::string& name, std::vector<int64_t> shape, const int64_t* values);
  void add_u8(const std::string& name, std::vector<int64_t> shape, const uint8_t* values);
  void add_raw(const std::string& name, DType dtype, std::vector<int64_t> shape,
               const void* bytes, size_t byte_count);
  void set_metadata(const std::string& key, const std::string& value);

  std::vector<uint8_t> serialize() const;
  // serialize() written with write_file_atomically (temporary file, fsync, rename).
  void write(const std::string& path) const;

 private:
  struct Pending {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::vector<Pending> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace pneumo
