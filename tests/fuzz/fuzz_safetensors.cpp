// libFuzzer target for the safetensors reader. Each input is a whole file: it must be refused with
// pneumo::Error or accepted; an accepted file then goes through what the checkpoint loader does
// with it (its own copy of the bytes, typed copies of every tensor, every tensor byte read), must
// satisfy the layout the callers rely on, and must survive a write/read round trip unchanged.
// Any other exception, an out-of-bounds read (ASan) or a failed invariant is a crash.
#include <cstdint>
#include <cstring>
#include <vector>

#include "fuzz_check.hpp"
#include "pneumo/error.hpp"
#include "pneumo/safetensors.hpp"

namespace {

volatile uint64_t g_sink;  // keeps the reads of tensor bytes and values from being optimised away

// Tensors in data order, tiling the data section exactly, each as long as dtype x shape says.
void check_layout(const pneumo::SafetensorsHeader& header, size_t size) {
  FUZZ_REQUIRE(header.data_offset >= 8 && header.data_offset <= size);
  uint64_t covered = 0;
  for (const auto& tensor : header.tensors) {
    FUZZ_REQUIRE(tensor.begin == covered && tensor.end >= tensor.begin);
    uint64_t numel = 1, bytes = 0;
    for (int64_t dim : tensor.shape) {
      FUZZ_REQUIRE(dim >= 0);
      FUZZ_REQUIRE(!__builtin_mul_overflow(numel, static_cast<uint64_t>(dim), &numel));
    }
    FUZZ_REQUIRE(numel == tensor.numel());
    FUZZ_REQUIRE(!__builtin_mul_overflow(numel, pneumo::dtype_size(tensor.dtype), &bytes));
    FUZZ_REQUIRE(bytes == tensor.byte_size());
    covered = tensor.end;
  }
  FUZZ_REQUIRE(header.data_offset + covered == size);
}

template <class T>
void read_values(const std::vector<T>& values, const pneumo::TensorEntry& tensor) {
  FUZZ_REQUIRE(values.size() == tensor.numel());
  uint64_t mix = 0;
  for (const T& value : values) {
    uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    mix = mix * 31 + bits;
  }
  g_sink = g_sink + mix;
}

// The typed accessors a caller would use; each must agree with the stored dtype or refuse.
void copy_typed(const pneumo::SafetensorsFile& file, const pneumo::TensorEntry& tensor) {
  using pneumo::DType;
  const bool f32 = tensor.dtype == DType::F32, i64 = tensor.dtype == DType::I64;
  const bool u8 = tensor.dtype == DType::U8 || tensor.dtype == DType::Bool;
  try {
    read_values(file.to_f32(tensor.name), tensor);
    FUZZ_REQUIRE(f32);
  } catch (const pneumo::Error&) {
    FUZZ_REQUIRE(!f32);
  }
  try {
    read_values(file.to_i64(tensor.name), tensor);
    FUZZ_REQUIRE(i64);
  } catch (const pneumo::Error&) {
    FUZZ_REQUIRE(!i64);
  }
  try {
    read_values(file.to_u8(tensor.name), tensor);
    FUZZ_REQUIRE(u8);
  } catch (const pneumo::Error&) {
    FUZZ_REQUIRE(!u8);
  }
}

// Writes what was read and reads it back: same tensors (names, dtypes, shapes, bytes), same
// metadata. The writer refuses empty tensor names, which the format (and so the reader) allows.
void check_round_trip(const pneumo::SafetensorsFile& file) {
  pneumo::SafetensorsWriter writer;
  for (const auto& tensor : file.tensors()) {
    if (tensor.name.empty()) return;
    writer.add_raw(tensor.name, tensor.dtype, tensor.shape, file.raw_bytes(tensor),
                   tensor.byte_size());
  }
  for (const auto& [key, value] : file.metadata()) writer.set_metadata(key, value);
  const std::vector<uint8_t> written = writer.serialize();
  const pneumo::SafetensorsFile back = pneumo::SafetensorsFile::from_bytes(written, "round trip");
  FUZZ_REQUIRE(back.metadata() == file.metadata());
  FUZZ_REQUIRE(back.tensors().size() == file.tensors().size());
  for (size_t i = 0; i < file.tensors().size(); ++i) {
    const auto& a = file.tensors()[i];
    const auto& b = back.tensors()[i];
    FUZZ_REQUIRE(a.name == b.name && a.dtype == b.dtype && a.shape == b.shape);
    FUZZ_REQUIRE(a.begin == b.begin && a.end == b.end);
    FUZZ_REQUIRE(a.byte_size() == 0 ||
                 std::memcmp(file.raw_bytes(a), back.raw_bytes(b), a.byte_size()) == 0);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pneumo::SafetensorsHeader header;
  try {
    header = pneumo::parse_safetensors(data, size, "fuzz input");
  } catch (const pneumo::Error&) {
    return 0;  // refused cleanly: the outcome most inputs should have
  }
  check_layout(header, size);

  // As load_checkpoint reads a file: the bytes in a buffer of their own (exactly `size` long, so
  // ASan sees any read past the end), then every tensor touched.
  const pneumo::SafetensorsFile file =
      pneumo::SafetensorsFile::from_bytes(std::vector<uint8_t>(data, data + size), "fuzz input");
  FUZZ_REQUIRE(file.tensors().size() == header.tensors.size());
  FUZZ_REQUIRE(file.metadata() == header.metadata);
  uint64_t mix = 0;
  for (const auto& tensor : file.tensors()) {
    FUZZ_REQUIRE(file.find(tensor.name) == &tensor);  // names are unique
    const uint8_t* bytes = file.raw_bytes(tensor);
    for (uint64_t i = 0; i < tensor.byte_size(); ++i) mix = mix * 131 + bytes[i];
    copy_typed(file, tensor);
  }
  for (const auto& [key, value] : file.metadata()) mix += key.size() * 7 + value.size();
  g_sink = g_sink + mix;

  check_round_trip(file);
  return 0;
}
