// OrderedWorker (see ordered_worker.hpp): a queue, one thread, the first failure kept.
#include "core/ordered_worker.hpp"

#include <utility>

namespace pneumo {

OrderedWorker::OrderedWorker() : thread_([this] { run(); }) {}

OrderedWorker::~OrderedWorker() {
  {
    std::unique_lock<std::mutex> lock(mutex_);
    idle_.wait(lock, [this] { return tasks_.empty() && !busy_; });
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void OrderedWorker::rethrow_failure() {
  if (!failure_) return;
  std::exception_ptr failure = std::exchange(failure_, nullptr);
  std::rethrow_exception(failure);
}

void OrderedWorker::post(std::function<void()> task) {
  {
    std::unique_lock<std::mutex> lock(mutex_);
    rethrow_failure();
    tasks_.push_back(std::move(task));
  }
  wake_.notify_one();
}

void OrderedWorker::drain() {
  std::unique_lock<std::mutex> lock(mutex_);
  idle_.wait(lock, [this] { return tasks_.empty() && !busy_; });
  rethrow_failure();
}

void OrderedWorker::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    wake_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
    if (tasks_.empty()) return;  // stopping, nothing left
    std::function<void()> task = std::move(tasks_.front());
    tasks_.pop_front();
    busy_ = true;
    lock.unlock();
    std::exception_ptr failure;
    try {
      task();
    } catch (...) {
      failure = std::current_exception();
    }
    lock.lock();
    busy_ = false;
    if (failure) {
      if (!failure_) failure_ = failure;
      failed_ = true;
      tasks_.clear();  // what followed the failed task depended on it
    }
    if (tasks_.empty()) idle_.notify_all();
  }
}

}  // namespace pneumo
