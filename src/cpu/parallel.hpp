// A small persistent thread pool for the CPU backend: parallel_for splits a range into one
// contiguous chunk per worker, so which worker handles which items depends only on the range and
// the thread count, never on timing (per-worker partial sums then reduce deterministically).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace pneumo::cpu {

class ThreadPool {
 public:
  // Loop body over items [begin, end), run by worker `worker` in [0, size()).
  using Body = std::function<void(int64_t begin, int64_t end, int worker)>;

  explicit ThreadPool(int threads);  // 0: one per hardware thread
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(helpers_.size()) + 1; }

  // Runs body over [0, count) split into min(size(), count) chunks; chunk w (items
  // [count*w/chunks, count*(w+1)/chunks)) runs on worker w, worker 0 being the calling thread.
  // Blocks until every chunk is done and rethrows the first exception (lowest worker) a chunk
  // threw. Not reentrant: a body must not call parallel_for on the same pool.
  void parallel_for(int64_t count, const Body& body);

 private:
  void helper_loop(int worker);
  void run_chunk(int worker);

  std::vector<std::thread> helpers_;  // workers 1 .. size()-1
  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::condition_variable work_done_;
  // The job being run, published under mutex_ with a new generation number.
  const Body* body_ = nullptr;
  int64_t count_ = 0;
  int chunks_ = 0;
  uint64_t generation_ = 0;
  int helpers_running_ = 0;
  bool stopping_ = false;
  std::vector<std::exception_ptr> errors_;  // one slot per worker
};

}  // namespace pneumo::cpu
