// libFuzzer target for the .npy reader. Each input is a whole file: it must be refused with
// pneumo::Error or accepted; an accepted array then has every element read as its type (as the
// cache loader reads images and labels), and its size must match its shape. The header is also
// parsed from the first three quarters of the input alone (a reader that has not loaded the data
// yet): that must never read past those bytes, and must agree with the whole-file parse.
// Any other exception, an out-of-bounds read (ASan) or a failed invariant is a crash.
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#include "fuzz_check.hpp"
#include "pneumo/error.hpp"
#include "pneumo/npy.hpp"

namespace {

volatile uint64_t g_sink;  // keeps the element reads from being optimised away

template <class T>
uint64_t read_elements(const std::vector<uint8_t>& bytes) {
  FUZZ_REQUIRE(bytes.size() % sizeof(T) == 0);
  uint64_t mix = 0;
  for (size_t at = 0; at < bytes.size(); at += sizeof(T)) {
    T value;
    std::memcpy(&value, bytes.data() + at, sizeof(T));
    uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    mix = mix * 31 + bits;
  }
  return mix;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The prefix lives in a buffer of its own, exactly `available` long, so ASan sees a read past it.
  const size_t available = size - size / 4;
  std::optional<pneumo::NpyHeader> from_prefix;
  {
    const std::vector<uint8_t> prefix(data, data + available);
    try {
      from_prefix = pneumo::parse_npy_header(prefix.data(), prefix.size(), size, "fuzz prefix");
      FUZZ_REQUIRE(from_prefix->data_offset <= available);
      FUZZ_REQUIRE(from_prefix->data_offset + from_prefix->data_bytes == size);
    } catch (const pneumo::Error&) {
    }
  }

  pneumo::NpyArray array;
  try {
    array = pneumo::npy_from_bytes(std::vector<uint8_t>(data, data + size), "fuzz input");
  } catch (const pneumo::Error&) {
    FUZZ_REQUIRE(!from_prefix);  // a header that parses from a prefix parses from the whole file
    return 0;
  }
  if (from_prefix) {
    FUZZ_REQUIRE(from_prefix->type == array.type && from_prefix->shape == array.shape);
  }

  uint64_t numel = 1, bytes = 0;
  for (int64_t dim : array.shape) {
    FUZZ_REQUIRE(dim >= 0);
    FUZZ_REQUIRE(!__builtin_mul_overflow(numel, static_cast<uint64_t>(dim), &numel));
  }
  FUZZ_REQUIRE(!__builtin_mul_overflow(numel, pneumo::npy_item_size(array.type), &bytes));
  FUZZ_REQUIRE(bytes == array.bytes.size());
  FUZZ_REQUIRE(static_cast<uint64_t>(array.numel()) == numel);

  uint64_t mix = array.shape_string().size();
  switch (array.type) {
    case pneumo::NpyType::UInt8: mix += read_elements<uint8_t>(array.bytes); break;
    case pneumo::NpyType::Int32: mix += read_elements<int32_t>(array.bytes); break;
    case pneumo::NpyType::Int64: mix += read_elements<int64_t>(array.bytes); break;
    case pneumo::NpyType::Float32: mix += read_elements<float>(array.bytes); break;
  }
  g_sink = g_sink + mix;
  return 0;
}
