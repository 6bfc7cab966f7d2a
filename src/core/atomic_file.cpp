// POSIX implementation of the atomic write (mkstemp + fsync + rename + directory fsync) and of
// the whole-file read, with errors that name the file and the reason.
#include "core/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>

#include "pneumo/error.hpp"

namespace pneumo {

namespace {

// What mkstemp fills in (XXXXXX) after the target's name.
constexpr char kTemporarySuffix[] = ".tmp.XXXXXX";

std::string directory_of(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// The process's umask, read without changing it (umask(2) sets it, which would race with other
// threads creating files): /proc/self/status says "Umask:\t0022" on Linux 4.7 and later; 022
// where it cannot be read.
mode_t current_umask() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("Umask:", 0) == 0)
      return static_cast<mode_t>(std::stoul(line.substr(6), nullptr, 8));
  return 022;
}

[[noreturn]] void fail(const std::string& path, const std::string& what, int error_number) {
  throw Error(detail::concat("cannot write ", path, ": ", what, ": ", std::strerror(error_number)));
}

// Writes all `size` bytes to `fd`, retrying short and interrupted writes; 0, or the errno.
int write_all(int fd, const void* data, size_t size) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  size_t written = 0;
  while (written < size) {
    ssize_t n = ::write(fd, bytes + written, size - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    written += static_cast<size_t>(n);
  }
  return 0;
}

// What the process printed so far goes out before a file written past the streams: into a pipe or
// terminal that is also standard output (/dev/stdout), it must come first.
void flush_standard_streams() {
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
}

// Writes straight into something that is not a regular file (a FIFO, /dev/stdout, a terminal):
// there is nothing to replace, and renaming over it would put a regular file in its place.
void write_through(const std::string& path, const void* data, size_t size) {
  flush_standard_streams();
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) fail(path, "opening it", errno);
  if (const int error_number = write_all(fd, data, size)) {
    ::close(fd);
    fail(path, "writing", error_number);
  }
  if (::close(fd) != 0) fail(path, "closing", errno);
}

// The descriptor (1 or 2) whose open file `path` is, when the process's standard output or error
// was sent to that very file (`--json /dev/stdout > out.txt`, or the file's own name): -1 else.
// Such a file is written through the descriptor, after what the streams hold, at its offset: a
// rename would leave the redirected output, already written, in an unlinked file, and opening the
// name again would write over it from the start.
int standard_stream_of(const std::string& path) {
  struct stat target {};
  if (::stat(path.c_str(), &target) != 0 || !S_ISREG(target.st_mode)) return -1;
  for (const int fd : {STDOUT_FILENO, STDERR_FILENO}) {
    struct stat open_file {};
    if (::fstat(fd, &open_file) == 0 && open_file.st_dev == target.st_dev &&
        open_file.st_ino == target.st_ino)
      return fd;
  }
  return -1;
}

}  // namespace

bool is_a_standard_stream_file(const std::string& path) { return standard_stream_of(path) >= 0; }

void write_file_atomically(const std::string& path, const void* data, size_t size) {
  if (path.empty() || path.back() == '/') throw Error("cannot write '" + path + "': not a file name");
  if (const int fd = standard_stream_of(path); fd >= 0) {
    flush_standard_streams();
    if (const int error_number = write_all(fd, data, size)) fail(path, "writing", error_number);
    return;
  }
  struct stat info {};
  if (::lstat(path.c_str(), &info) == 0 && S_ISLNK(info.st_mode)) {
    // A link is kept and its target replaced, as an editor saving through a link does.
    char resolved[PATH_MAX];
    if (::realpath(path.c_str(), resolved) != nullptr) {
      try {
        write_file_atomically(std::string(resolved), data, size);
      } catch (const Error& e) {  // the name the user gave, beside the one that failed
        throw Error(std::string(e.what()) + " (the target of the link " + path + ")");
      }
      return;
    }
    // A dangling link or a loop: written over like any file name.
  }
  // A file replaced keeps its permissions; a new one gets what creating it would (0666 less the
  // umask), not mkstemp's 0600 nor a fixed 0644 that would make a private run world-readable.
  mode_t mode = 0666 & ~current_umask();
  if (::stat(path.c_str(), &info) == 0) {
    if (S_ISDIR(info.st_mode)) throw Error("cannot write " + path + ": it is a folder");
    if (!S_ISREG(info.st_mode)) {
      write_through(path, data, size);
      return;
    }
    mode = info.st_mode & 07777;
  }
  const std::string directory = directory_of(path);
  std::string temporary = path + kTemporarySuffix;
  int fd = ::mkstemp(temporary.data());
  if (fd < 0) fail(path, "cannot create a temporary file in directory " + directory, errno);

  // From here on, any failure removes the temporary file before reporting.
  auto abandon = [&](const std::string& what, int error_number) {
    ::close(fd);
    ::unlink(temporary.c_str());
    fail(path, what, error_number);
  };
  if (const int error_number = write_all(fd, data, size))
    abandon("writing " + temporary, error_number);
  if (::fchmod(fd, mode) != 0) abandon("setting permissions of " + temporary, errno);
  if (::fsync(fd) != 0) abandon("flushing " + temporary + " to disk", errno);
  if (::close(fd) != 0) {
    int error_number = errno;
    ::unlink(temporary.c_str());
    fail(path, "closing " + temporary, error_number);
  }
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    int error_number = errno;
    ::unlink(temporary.c_str());
    fail(path, "renaming " + temporary + " over it", error_number);
  }
  sync_directory(directory);  // the rename itself
}

bool is_atomic_write_temporary(const std::string& name) {
  const size_t suffix = sizeof kTemporarySuffix - 1, marker = suffix - 6;  // ".tmp." + 6 chars
  return name.size() > suffix &&
         name.compare(name.size() - suffix, marker, kTemporarySuffix, marker) == 0;
}

void sync_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail(path, "opening it to flush it to disk", errno);
  if (::fsync(fd) != 0) {
    const int error_number = errno;
    ::close(fd);
    fail(path, "flushing it to disk", error_number);
  }
  ::close(fd);
}

void sync_directory(const std::string& directory) {
  int directory_fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY);
  if (directory_fd >= 0) {
    ::fsync(directory_fd);
    ::close(directory_fd);
  }
}

void write_file_atomically(const std::string& path, const std::string& text) {
  write_file_atomically(path, text.data(), text.size());
}

std::vector<uint8_t> read_file_bytes(const std::string& path, uint64_t most) {
  // O_NONBLOCK: a FIFO named by mistake opens at once, to be refused below; a plain open waited
  // for a writer for ever. (Reads of a regular file ignore the flag.)
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw Error(detail::concat("cannot open ", path, ": ", std::strerror(errno)));
  struct stat info {};
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    ::close(fd);
    throw Error("cannot read " + path + ": not a regular file");
  }
  if (static_cast<uint64_t>(info.st_size) > most) {
    ::close(fd);
    throw Error(detail::concat("cannot read ", path, ": it is ", info.st_size,
                               " bytes, more than the ", most, " such a file can be"));
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(info.st_size));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int error_number = n < 0 ? errno : 0;
      ::close(fd);
      throw Error(detail::concat("cannot read ", path, ": ",
                                 n < 0 ? std::strerror(error_number) : "file shrank while reading"));
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return bytes;
}

std::string read_file_text(const std::string& path, uint64_t most) {
  const std::vector<uint8_t> bytes = read_file_bytes(path, most);
  return std::string(bytes.begin(), bytes.end());
}

}  // namespace pneumo
