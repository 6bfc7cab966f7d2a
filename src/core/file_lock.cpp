// flock-based FileLock (see file_lock.hpp).
#include "core/file_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "pneumo/error.hpp"

namespace pneumo {

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);
}

bool FileLock::try_acquire(const std::string& path) { return take(path, false); }

void FileLock::acquire(const std::string& path) { take(path, true); }

bool FileLock::take(const std::string& path, bool wait) {
  PNEUMO_CHECK(fd_ < 0, "FileLock already holds a lock; asked again for ", path);
  // 0666 less the umask, so that in a shared folder another user's runs can take the lock too;
  // flock needs no write access, so a lock file made by someone else is opened to read.
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0 && errno == EACCES) fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open " + path + " to lock it: " + std::strerror(errno));
  int status;
  do {
    status = ::flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB));
  } while (status != 0 && errno == EINTR);
  if (status != 0) {
    const int reason = errno;
    ::close(fd);
    if (reason == EWOULDBLOCK && !wait) return false;
    throw Error("cannot lock " + path + ": " + std::strerror(reason));
  }
  fd_ = fd;
  return true;
}

}  // namespace pneumo
