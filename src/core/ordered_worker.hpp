// One background thread that runs posted tasks in the order they were posted: how `train` writes
// its checkpoints and history off the training loop's critical path while keeping their order
// (the history never ahead of the checkpoint it follows).
//
// A task that throws stops the queue: the tasks after it are dropped (a history row must not be
// written after its checkpoint failed), and the failure is rethrown to the owner by the next
// post() or drain(), on the owner's thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace pneumo {

class OrderedWorker {
 public:
  OrderedWorker();
  // Waits for the posted tasks; a failure nobody drained is lost here (drain before, to see it).
  ~OrderedWorker();
  OrderedWorker(const OrderedWorker&) = delete;
  OrderedWorker& operator=(const OrderedWorker&) = delete;

  // Queues `task` after every task posted before it; first rethrows an earlier task's failure.
  void post(std::function<void()> task);
  // Returns once every posted task has run; rethrows the first failure (once).
  void drain();
  // Set once a task has failed (and stays set): a loop that posts rarely can look between posts
  // without waiting, and stop early (train checks it at every step).
  const std::atomic<bool>& failed() const { return failed_; }

 private:
  void run();
  void rethrow_failure();  // with mutex_ held by the caller's lock

  std::mutex mutex_;
  std::condition_variable wake_, idle_;
  std::deque<std::function<void()>> tasks_;
  bool busy_ = false, stopping_ = false;
  std::exception_ptr failure_;
  std::atomic<bool> failed_{false};
  std::thread thread_;  // last: started once the members it uses exist
};

}  // namespace pneumo
