// Out-of-line part of the check macro, so every failure message has the same shape.
#include "pneumo/error.hpp"

namespace pneumo::detail {

void throw_check_failure(const char* file, int line, const char* condition,
                         const std::string& message) {
  std::ostringstream out;
  out << message << " [check `" << condition << "` failed at " << file << ":" << line << "]";
  throw Error(out.str());
}

}  // namespace pneumo::detail
