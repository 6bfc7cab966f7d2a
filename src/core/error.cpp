// Out-of-line part of the check macro, so every failure message has the same shape, and the
// excerpt used to quote values read from files.
#include "pneumo/error.hpp"

namespace pneumo::detail {

std::string excerpt(const std::string& text, size_t limit) {
  if (text.size() <= limit) return text;
  return text.substr(0, limit) + "... (" + std::to_string(text.size()) + " bytes)";
}

void throw_check_failure(const char* file, int line, const char* condition,
                         const std::string& message) {
  std::ostringstream out;
  out << message << " [check `" << condition << "` failed at " << file << ":" << line << "]";
  throw Error(out.str());
}

}  // namespace pneumo::detail
