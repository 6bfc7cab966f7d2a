// An exclusive lock on a file (flock), held for as long as the object lives and released by the
// system when the process ends, however it ends: what keeps two pneumo processes from writing one
// run directory, or preparing one cache, at the same time.
#pragma once

#include <string>

namespace pneumo {

class FileLock {
 public:
  FileLock() = default;
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  ~FileLock();

  // Opens `path` (made if missing) and takes the lock; false, holding nothing, when another
  // process holds it. Throws pneumo::Error naming the path when it cannot be opened or locked.
  bool try_acquire(const std::string& path);
  // The same, waiting for the other process to let go.
  void acquire(const std::string& path);

 private:
  bool take(const std::string& path, bool wait);
  int fd_ = -1;
};

}  // namespace pneumo
