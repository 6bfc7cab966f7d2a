// CRC-32 (the zlib / PNG / gzip polynomial), for checksums stored next to data pneumo writes:
// the same value as Python's zlib.crc32, so anyone can check a file without pneumo.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace pneumo {

// CRC-32 of `size` bytes, continuing from `crc` (0 to start): crc32(b, crc32(a)) == crc32(a + b).
uint32_t crc32(const void* data, size_t size, uint32_t crc = 0);

// `value` as eight lower-case hex digits, the way pneumo stores every CRC ("0000beef").
std::string hex32(uint32_t value);

}  // namespace pneumo
