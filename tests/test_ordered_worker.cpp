// OrderedWorker (src/core/ordered_worker.hpp): tasks run in the order posted, off the caller's
// thread; a failure drops what was queued after it and reaches the owner at the next post or
// drain, once.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/ordered_worker.hpp"

namespace pneumo {
namespace {

TEST(OrderedWorker, RunsTasksInOrderOffTheCallersThread) {
  std::vector<int> done;
  std::thread::id ran_on;
  OrderedWorker worker;
  for (int i = 0; i < 50; ++i)
    worker.post([&done, &ran_on, i] {
      if (i == 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a slow first
      ran_on = std::this_thread::get_id();
      done.push_back(i);
    });
  worker.drain();
  ASSERT_EQ(done.size(), 50u);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(done[static_cast<size_t>(i)], i);
  EXPECT_NE(ran_on, std::this_thread::get_id());
}

TEST(OrderedWorker, AFailureDropsWhatFollowedAndReachesTheOwnerOnce) {
  std::vector<std::string> done;
  std::atomic<bool> release{false};
  OrderedWorker worker;
  EXPECT_FALSE(worker.failed());
  worker.post([&] {
    while (!release) std::this_thread::yield();  // hold the queue until all three are posted
    done.push_back("checkpoint 1");
  });
  worker.post([] { throw std::runtime_error("disk full writing checkpoint 2"); });
  worker.post([&] { done.push_back("history row 2"); });
  release = true;
  try {
    worker.drain();
    FAIL() << "the failure must reach drain()";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "disk full writing checkpoint 2");
  }
  EXPECT_EQ(done, std::vector<std::string>{"checkpoint 1"}) << "the row after it was dropped";
  EXPECT_TRUE(worker.failed()) << "set without waiting, and kept after the failure was reported";
  worker.drain();  // reported once
  worker.post([&] { done.push_back("next"); });
  worker.drain();
  EXPECT_EQ(done.back(), "next");
  EXPECT_TRUE(worker.failed());
}

TEST(OrderedWorker, TheDestructorFinishesWhatWasQueued) {
  std::atomic<int> done{0};
  {
    OrderedWorker worker;
    for (int i = 0; i < 10; ++i)
      worker.post([&done] {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        ++done;
      });
  }
  EXPECT_EQ(done.load(), 10);
}

}  // namespace
}  // namespace pneumo
