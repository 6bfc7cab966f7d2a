// ThreadPool: helpers sleep on a condition variable between jobs; each job is one generation.
#include "cpu/parallel.hpp"

#include <algorithm>

#include "pneumo/error.hpp"

namespace pneumo::cpu {

ThreadPool::ThreadPool(int threads) {
  PNEUMO_CHECK(threads >= 0, "thread count ", threads, " must be >= 0 (0: all hardware threads)");
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  errors_.resize(static_cast<size_t>(threads));
  helpers_.reserve(static_cast<size_t>(threads - 1));
  for (int worker = 1; worker < threads; ++worker)
    helpers_.emplace_back([this, worker] { helper_loop(worker); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_ready_.notify_all();
  for (auto& helper : helpers_) helper.join();
}

void ThreadPool::run_chunk(int worker) {
  if (worker >= chunks_) return;
  int64_t begin = count_ * worker / chunks_;
  int64_t end = count_ * (worker + 1) / chunks_;
  try {
    (*body_)(begin, end, worker);
  } catch (...) {
    errors_[static_cast<size_t>(worker)] = std::current_exception();
  }
}

void ThreadPool::helper_loop(int worker) {
  uint64_t seen_generation = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_ready_.wait(lock, [&] { return stopping_ || generation_ != seen_generation; });
      if (stopping_) return;
      seen_generation = generation_;
    }
    run_chunk(worker);  // the job's fields are not written again until every helper is done
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (--helpers_running_ == 0) work_done_.notify_one();
    }
  }
}

void ThreadPool::parallel_for(int64_t count, const Body& body) {
  if (count <= 0) return;
  int chunks = static_cast<int>(std::min<int64_t>(size(), count));
  if (chunks == 1) {
    body(0, count, 0);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    body_ = &body;
    count_ = count;
    chunks_ = chunks;
    helpers_running_ = static_cast<int>(helpers_.size());
    std::fill(errors_.begin(), errors_.end(), nullptr);
    ++generation_;
  }
  work_ready_.notify_all();
  run_chunk(0);
  {
    std::unique_lock<std::mutex> lock(mutex_);
    work_done_.wait(lock, [&] { return helpers_running_ == 0; });
    body_ = nullptr;
  }
  for (auto& error : errors_)
    if (error) std::rethrow_exception(error);
}

}  // namespace pneumo::cpu
