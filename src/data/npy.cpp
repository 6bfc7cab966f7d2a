// NumPy .npy reading and writing (see include/pneumo/npy.hpp). The header is a Python dict
// literal; this file parses exactly the subset numpy writes ({'descr': ..., 'fortran_order': ...,
// 'shape': (...), }) and refuses anything else rather than guessing.
#include "pneumo/npy.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <sstream>

#include "core/atomic_file.hpp"
#include "pneumo/error.hpp"

namespace pneumo {

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLength = 6;
// numpy itself refuses headers above 10,000 bytes by default; allow more, but not a memory bomb.
constexpr size_t kMaxHeaderLength = 1 << 16;

struct FileCloser {
  void operator()(FILE* f) const {
    if (f) std::fclose(f);
  }
};
using File = std::unique_ptr<FILE, FileCloser>;

std::string shape_to_string(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << "(";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  if (shape.size() == 1) out << ",";
  out << ")";
  return out.str();
}

// A cursor over the header text with the few token kinds a numpy header holds.
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& what) : text_(text), what_(what) {}

  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r'))
      ++pos_;
  }
  bool peek(char c) {
    skip_space();
    return pos_ < text_.size() && text_[pos_] == c;
  }
  void expect(char c) {
    if (!peek(c)) fail(detail::concat("expected '", c, "'"));
    ++pos_;
  }
  std::string quoted() {
    skip_space();
    if (pos_ >= text_.size() || (text_[pos_] != '\'' && text_[pos_] != '"'))
      fail("expected a quoted string");
    char quote = text_[pos_++];
    size_t end = text_.find(quote, pos_);
    if (end == std::string::npos) fail("unterminated string");
    std::string value = text_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return value;
  }
  bool boolean() {
    skip_space();
    if (text_.compare(pos_, 4, "True") == 0) {
      pos_ += 4;
      return true;
    }
    if (text_.compare(pos_, 5, "False") == 0) {
      pos_ += 5;
      return false;
    }
    fail("expected True or False");
  }
  int64_t dimension() {
    skip_space();
    if (pos_ >= text_.size() || text_[pos_] < '0' || text_[pos_] > '9')
      fail("expected a non-negative integer dimension");
    int64_t value = 0;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
      int digit = text_[pos_++] - '0';
      if (value > (std::numeric_limits<int64_t>::max() - digit) / 10)
        fail("dimension overflows 64 bits");
      value = value * 10 + digit;
    }
    // Python 2 era headers may write 3L.
    if (pos_ < text_.size() && text_[pos_] == 'L') ++pos_;
    return value;
  }
  std::vector<int64_t> tuple() {
    std::vector<int64_t> dims;
    expect('(');
    while (!peek(')')) {
      dims.push_back(dimension());
      if (peek(',')) {
        ++pos_;
      } else if (!peek(')')) {
        fail("expected ',' or ')' in the shape");
      }
    }
    ++pos_;
    return dims;
  }
  bool at_end() {
    skip_space();
    return pos_ == text_.size();
  }
  [[noreturn]] void fail(const std::string& message) const {
    throw Error(detail::concat(what_, ": bad .npy header at character ", pos_, " (", message,
                               "): ", text_));
  }

 private:
  const std::string& text_;
  const std::string& what_;
  size_t pos_ = 0;
};

NpyType type_from_descr(const std::string& descr, const std::string& what) {
  if (descr == "|u1" || descr == "<u1" || descr == "u1") return NpyType::UInt8;
  if (descr == "<i4") return NpyType::Int32;
  if (descr == "<i8") return NpyType::Int64;
  if (descr == "<f4") return NpyType::Float32;
  throw Error(detail::concat(what, ": unsupported .npy dtype '", descr,
                             "' (expected |u1, <i4, <i8 or <f4, little-endian)"));
}

}  // namespace

const char* npy_descr(NpyType type) {
  switch (type) {
    case NpyType::UInt8: return "|u1";
    case NpyType::Int32: return "<i4";
    case NpyType::Int64: return "<i8";
    case NpyType::Float32: return "<f4";
  }
  return "?";
}

size_t npy_item_size(NpyType type) {
  switch (type) {
    case NpyType::UInt8: return 1;
    case NpyType::Int32: return 4;
    case NpyType::Int64: return 8;
    case NpyType::Float32: return 4;
  }
  return 0;
}

int64_t NpyArray::numel() const {
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  return count;
}

std::string NpyArray::shape_string() const { return shape_to_string(shape); }

NpyHeader parse_npy_header(const uint8_t* bytes, size_t available, uint64_t file_size,
                           const std::string& what) {
  PNEUMO_CHECK(available <= file_size, what, ": ", available, " bytes read from a file of ",
               file_size);
  if (available < 10 || std::memcmp(bytes, kMagic, kMagicLength) != 0)
    throw Error(what + ": not a NumPy .npy file (bad magic string)");
  const int major = bytes[6];
  size_t header_length = 0, prefix = 0;
  if (major == 1) {
    header_length = bytes[8] | (static_cast<size_t>(bytes[9]) << 8);
    prefix = 10;
  } else if (major == 2 || major == 3) {
    if (available < 12) throw Error(what + ": truncated .npy header");
    header_length = bytes[8] | (static_cast<size_t>(bytes[9]) << 8) |
                    (static_cast<size_t>(bytes[10]) << 16) | (static_cast<size_t>(bytes[11]) << 24);
    prefix = 12;
  } else {
    throw Error(detail::concat(what, ": unsupported .npy format version ", major, ".",
                               static_cast<int>(bytes[7])));
  }
  if (header_length > kMaxHeaderLength)
    throw Error(detail::concat(what, ": .npy header of ", header_length, " bytes is too long"));
  if (prefix + header_length > available)
    throw Error(detail::concat(what, ": truncated .npy file (header of ", header_length,
                               " bytes, file of ", file_size, ")"));

  const std::string text(reinterpret_cast<const char*>(bytes + prefix), header_length);
  HeaderParser parser(text, what);
  std::string descr;
  bool have_descr = false, have_order = false, have_shape = false, fortran = false;
  std::vector<int64_t> shape;
  parser.expect('{');
  while (!parser.peek('}')) {
    std::string key = parser.quoted();
    parser.expect(':');
    if (key == "descr" && !have_descr) {
      descr = parser.quoted();
      have_descr = true;
    } else if (key == "fortran_order" && !have_order) {
      fortran = parser.boolean();
      have_order = true;
    } else if (key == "shape" && !have_shape) {
      shape = parser.tuple();
      have_shape = true;
    } else {
      parser.fail("unexpected or repeated key '" + key + "'");
    }
    if (parser.peek(',')) parser.expect(',');
    else if (!parser.peek('}')) parser.fail("expected ',' or '}'");
  }
  parser.expect('}');
  if (!parser.at_end()) parser.fail("text after the closing '}'");
  if (!have_descr || !have_order || !have_shape)
    parser.fail("missing one of 'descr', 'fortran_order', 'shape'");
  if (fortran) throw Error(what + ": Fortran-order .npy arrays are not supported (need C order)");

  NpyHeader header;
  header.type = type_from_descr(descr, what);
  header.shape = shape;
  header.data_offset = prefix + header_length;
  // numel * item size without overflow; a dimension of 0 makes an empty array.
  uint64_t bytes_needed = npy_item_size(header.type);
  const uint64_t limit = std::numeric_limits<int64_t>::max();
  for (int64_t d : shape) {
    const uint64_t dim = static_cast<uint64_t>(d);
    if (dim != 0 && bytes_needed > limit / dim)
      throw Error(what + ": .npy shape " + shape_to_string(shape) + " overflows 64 bits");
    bytes_needed *= dim;
  }
  const uint64_t data_available = file_size - header.data_offset;
  if (bytes_needed != data_available)
    throw Error(detail::concat(what, ": .npy shape ", shape_to_string(shape), " of ", descr,
                               " needs ", bytes_needed, " data bytes but the file holds ",
                               data_available, bytes_needed > data_available ? " (truncated)" : ""));
  header.data_bytes = static_cast<size_t>(bytes_needed);
  return header;
}

NpyArray npy_from_bytes(std::vector<uint8_t> file_bytes, const std::string& what) {
  const NpyHeader header =
      parse_npy_header(file_bytes.data(), file_bytes.size(), file_bytes.size(), what);
  NpyArray array;
  array.type = header.type;
  array.shape = header.shape;
  // The header is at most 64 KiB: sliding the data down costs far less than reading it did, and
  // needs no second buffer the size of the array.
  file_bytes.erase(file_bytes.begin(),
                   file_bytes.begin() + static_cast<std::ptrdiff_t>(header.data_offset));
  array.bytes = std::move(file_bytes);
  return array;
}

NpyArray read_npy(const std::string& path) { return npy_from_bytes(read_file_bytes(path), path); }

void write_npy(const std::string& path, NpyType type, const std::vector<int64_t>& shape,
               const void* data) {
  uint64_t numel = 1;
  for (int64_t d : shape) {
    PNEUMO_CHECK(d >= 0, path, ": negative dimension in shape ", shape_to_string(shape));
    numel *= static_cast<uint64_t>(d);
  }
  const size_t data_bytes = static_cast<size_t>(numel) * npy_item_size(type);
  PNEUMO_CHECK(data != nullptr || data_bytes == 0, path, ": no data for shape ",
               shape_to_string(shape));

  // Header padded with spaces and ended by '\n' so the data starts on a 64-byte boundary,
  // as numpy's own writer does.
  std::string header = detail::concat("{'descr': '", npy_descr(type),
                                      "', 'fortran_order': False, 'shape': ",
                                      shape_to_string(shape), ", }");
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  PNEUMO_CHECK(header.size() <= 65535, path, ": .npy header too long for format 1.0");

  std::string prefix(kMagic, kMagicLength);
  prefix.push_back('\x01');
  prefix.push_back('\x00');
  prefix.push_back(static_cast<char>(header.size() & 0xFF));
  prefix.push_back(static_cast<char>(header.size() >> 8));

  const std::string temp = detail::concat(path, ".tmp-", ::getpid());
  {
    File file(std::fopen(temp.c_str(), "wb"));
    if (!file) throw Error(temp + ": cannot create: " + std::strerror(errno));
    bool ok = std::fwrite(prefix.data(), 1, prefix.size(), file.get()) == prefix.size() &&
              std::fwrite(header.data(), 1, header.size(), file.get()) == header.size() &&
              (data_bytes == 0 ||
               std::fwrite(data, 1, data_bytes, file.get()) == data_bytes);
    ok = (std::fflush(file.get()) == 0) && ok;
    if (!ok) {
      const std::string reason = std::strerror(errno);
      file.reset();
      std::remove(temp.c_str());
      throw Error(detail::concat(temp, ": write of ", data_bytes, " data bytes failed: ", reason));
    }
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    std::remove(temp.c_str());
    throw Error(path + ": cannot rename the written file into place: " + reason);
  }
}

}  // namespace pneumo
