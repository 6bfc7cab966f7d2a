// Errors: one exception type for everything a user can get wrong or a library can refuse, and the
// check macro that builds its message (the failed condition, file, line and what the caller adds).
#pragma once

#include <cmath>
#include <cstddef>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

namespace pneumo {

// Thrown for bad input, bad flags, refused files and failed library calls. The CLI prints what()
// and exits non-zero; nothing below main() prints and exits on its own.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// An allocation that did not fit: host memory (aligned_alloc returned null) or device memory
// (cudaMalloc, or cuDNN/cuBLAS reporting an allocation failure). Commands that know the batch size
// catch it and say which batch failed and what to try instead.
class OutOfMemory : public Error {
 public:
  OutOfMemory(const std::string& message, bool on_device, size_t bytes)
      : Error(message), on_device_(on_device), bytes_(bytes) {}
  bool on_device() const { return on_device_; }
  size_t bytes() const { return bytes_; }  // 0 when the library did not say

 private:
  bool on_device_;
  size_t bytes_;
};

// A flag or configuration value outside what it may be (a zero epoch count, an unknown device, a
// threshold outside [0, 1]): the command line was wrong, not the data, so `pneumo` exits with
// status 2 ("bad usage") instead of 1.
class UsageError : public Error {
 public:
  using Error::Error;
};

namespace detail {
// One part of a message as an ostream writes it, except a NaN: "nan" whatever its sign bit, which
// depends on which operand's NaN an operation passed on (the order of a threaded sum), so a message
// reads the same from run to run ("-nan" in one, "nan" in the next otherwise).
template <class Part>
void write_part(std::ostream& out, Part&& part) {
  if constexpr (std::is_floating_point_v<std::decay_t<Part>>) {
    if (std::isnan(part)) {
      out << "nan";
      return;
    }
  }
  out << std::forward<Part>(part);
}
template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream out;
  (write_part(out, std::forward<Parts>(parts)), ...);
  return out.str();
}
// `text` cut to its first `limit` bytes with a note of its full length, so a message that quotes
// a value read from a file (a checkpoint's JSON, a flag) stays one readable line whatever the file
// holds.
std::string excerpt(const std::string& text, size_t limit = 120);
// A file name on one line of plain output: control characters (a line break in a file name)
// written as \n, \r, \t or \xNN, and a backslash as \\, so each file stays one line and reads back
// unambiguously; anything else as it is (predict's lines, prepare's and explain's warnings).
std::string one_line(const std::string& path);
[[noreturn]] void throw_check_failure(const char* file, int line, const char* condition,
                                      const std::string& message);
}  // namespace detail

}  // namespace pneumo

// PNEUMO_CHECK(cond, "message parts", value, ...): throws pneumo::Error naming the condition,
// the file and line, and the streamed message parts when cond is false.
#define PNEUMO_CHECK(cond, ...)                                                             \
  do {                                                                                      \
    if (!(cond))                                                                            \
      ::pneumo::detail::throw_check_failure(__FILE__, __LINE__, #cond,                      \
                                            ::pneumo::detail::concat(__VA_ARGS__));          \
  } while (0)
