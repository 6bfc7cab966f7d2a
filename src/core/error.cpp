// Out-of-line part of the check macro, so every failure message has the same shape, and the
// excerpt and one_line used to quote values and file names.
#include "pneumo/error.hpp"

namespace pneumo::detail {

std::string excerpt(const std::string& text, size_t limit) {
  if (text.size() <= limit) return text;
  return text.substr(0, limit) + "... (" + std::to_string(text.size()) + " bytes)";
}

std::string one_line(const std::string& path) {
  std::string out;
  for (const char c : path) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '\\') {
      out += "\\\\";  // so that a name holding "\\n" reads apart from one with a line break
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (byte < 0x20 || byte == 0x7F) {
      static const char kHex[] = "0123456789abcdef";
      out += std::string("\\x") + kHex[byte >> 4] + kHex[byte & 15];
    } else {
      out += c;
    }
  }
  return out;
}

void throw_check_failure(const char* file, int line, const char* condition,
                         const std::string& message) {
  std::ostringstream out;
  out << message << " [check `" << condition << "` failed at " << file << ":" << line << "]";
  throw Error(out.str());
}

}  // namespace pneumo::detail
