// Shapes, tensors and the philox generator.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "pneumo/error.hpp"
#include "pneumo/random.hpp"
#include "test_util.hpp"

namespace pneumo {
namespace {

TEST(Shape, NumelAndString) {
  Shape s{32, 1, 150, 150};
  EXPECT_EQ(s.numel(), 32 * 150 * 150);
  EXPECT_EQ(s.str(), "(32, 1, 150, 150)");
  EXPECT_EQ(s.rank(), 4);
  EXPECT_EQ(Shape({6400}).numel(), 6400);
  EXPECT_THROW(Shape({-1, 2}), Error);
}

TEST(Tensor, HostRoundTripAndMove) {
  std::vector<float> values{1, 2, 3, 4, 5, 6};
  Tensor t = Tensor::from_host({2, 3}, values.data(), Device::Cpu);
  Tensor moved = std::move(t);
  EXPECT_EQ(t.data(), nullptr);
  std::vector<float> back(6);
  moved.copy_to_host(back.data());
  EXPECT_EQ(back, values);
  EXPECT_THROW(moved.view().reshaped({4}), Error);
  EXPECT_EQ(moved.view().reshaped({6}).shape, Shape({6}));
}

// Every allocation is counted while it lives, moves do not count twice, and the peak holds the
// most held at once until reset (nothing else in the test allocates meanwhile).
TEST(Memory, AllocationsAreCountedUntilFreedAndThePeakIsKept) {
  const MemoryStats start = memory_stats(Device::Cpu);
  reset_peak_memory(Device::Cpu);
  {
    Array<float> a(1000, Device::Cpu);
    EXPECT_EQ(memory_stats(Device::Cpu).current, start.current + 4000);
    Array<double> b(500, Device::Cpu);
    EXPECT_EQ(memory_stats(Device::Cpu).current, start.current + 8000);
    Array<float> moved = std::move(a);
    EXPECT_EQ(memory_stats(Device::Cpu).current, start.current + 8000);
  }
  EXPECT_EQ(memory_stats(Device::Cpu).current, start.current);
  EXPECT_EQ(memory_stats(Device::Cpu).peak, start.current + 8000);
  reset_peak_memory(Device::Cpu);
  EXPECT_EQ(memory_stats(Device::Cpu).peak, start.current);
}

// A container's limit leaves room for what its page cache holds inactive: a group at 7 of its
// 8 GiB, 3 of them cache just read, has 4 GiB of room, not 1. A group at or over its limit with
// nothing inactive to drop is left to MemAvailable, as before the cache counted: it is often
// full of active cache the kernel would also reclaim, and refusing every tensor there would stop
// runs that fit.
TEST(Memory, ACgroupsRoomCountsItsInactivePageCacheAsFree) {
  constexpr uint64_t GiB = uint64_t{1} << 30;
  EXPECT_EQ(cgroup_memory_room(8 * GiB, 7 * GiB, 0), 1 * GiB);
  EXPECT_EQ(cgroup_memory_room(8 * GiB, 7 * GiB, 3 * GiB), 4 * GiB);
  // The files are read one after the other: more cache than the group held is no more room.
  EXPECT_EQ(cgroup_memory_room(8 * GiB, 2 * GiB, 5 * GiB), 8 * GiB);
  EXPECT_EQ(cgroup_memory_room(0, 7 * GiB, 0), std::nullopt);  // "max": no limit
  EXPECT_EQ(cgroup_memory_room(8 * GiB, 9 * GiB, 0), std::nullopt);
  EXPECT_EQ(cgroup_memory_room(8 * GiB, 8 * GiB, 0), std::nullopt);
}

// Linux grants an allocation larger than the machine has (overcommit) and kills the process when
// it touches the memory: `bench train --batch 4097` ended with status 137 and no word. Host
// tensors are held within the memory available when the first was made; past it, OutOfMemory
// (which the commands turn into advice naming the batch). Poisoning is off here, so that a
// regression's granted allocation is never touched.
TEST(Memory, AHostAllocationPastTheAvailableMemoryIsOutOfMemory) {
  const size_t budget = host_memory_budget();
  if (budget == 0) GTEST_SKIP() << "no MemAvailable or cgroup limit to read here";
  const bool poisoned = set_poison_host_allocations(false);
  const size_t held = memory_stats(Device::Cpu).current;
  const size_t bytes = budget - std::min(budget, held) + 1;
  try {
    void* granted = allocate_bytes(Device::Cpu, bytes);
    free_bytes(Device::Cpu, granted, bytes);
    ADD_FAILURE() << bytes << " bytes allocated past a budget of " << budget;
  } catch (const OutOfMemory& e) {
    EXPECT_FALSE(e.on_device());
    EXPECT_NE(std::string(e.what()).find("MiB available when the first was made"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(memory_stats(Device::Cpu).current, held);
  set_poison_host_allocations(poisoned);
  Tensor small = Tensor::zeros({1024}, Device::Cpu);  // within it, allocation goes on
  EXPECT_EQ(small.numel(), 1024);
}

// Random123's known-answer vectors for Philox4x32-10 (kat_vectors: counter, key -> output), with
// the counter read as (index, step, epoch, stream) and the key as the seed's low and high words.
TEST(Philox, GivesRandom123sKnownAnswers) {
  struct Vector {
    uint32_t counter[4];
    uint64_t seed;
    uint32_t expected[4];
  };
  const Vector vectors[] = {
      {{0, 0, 0, 0}, 0, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
      {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
       0xffffffffffffffffull,
       {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
      {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
       0x299f31d0a4093822ull,
       {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
  };
  for (const Vector& v : vectors) {
    RngKey key{v.seed, v.counter[3], v.counter[2], v.counter[1]};
    const Philox4 out = philox4x32(key, v.counter[0]);
    for (int i = 0; i < 4; ++i)
      EXPECT_EQ(out.v[i], v.expected[i]) << "word " << i << " of the vector keyed " << v.seed;
  }
}

TEST(Philox, DeterministicAndKeyed) {
  RngKey a{42, 1, 0, 0}, b{42, 1, 0, 1}, c{43, 1, 0, 0};
  EXPECT_NE(philox4x32(a, 7).v[0], philox4x32(b, 7).v[0]);
  EXPECT_NE(philox4x32(a, 7).v[0], philox4x32(c, 7).v[0]);
  EXPECT_NE(philox4x32(a, 7).v[0], philox4x32(a, 8).v[0]);
  // Uniformity: the mean of many draws is near 1/2, none reaches 1.
  double sum = 0;
  for (uint32_t i = 0; i < 100000; ++i) {
    float u = uniform_from_bits(philox4x32(a, i).v[i & 3]);
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    sum += u;
  }
  EXPECT_NEAR(sum / 100000, 0.5, 0.005);
}

TEST(Memory, PoisonedHostAllocationsHoldNanUntilWritten) {
  const bool before = set_poison_host_allocations(true);
  Tensor fresh({3, 5}, Device::Cpu);
  Tensor zeros = Tensor::zeros({3, 5}, Device::Cpu);
  Array<int32_t> ints(4, Device::Cpu);
  set_poison_host_allocations(before);  // as the environment had it (scripts/test.sh: on)
  std::vector<float> values(15);
  fresh.copy_to_host(values.data());
  for (size_t i = 0; i < values.size(); ++i)
    EXPECT_TRUE(std::isnan(values[i])) << "element " << i << " = " << values[i];
  zeros.copy_to_host(values.data());
  for (float v : values) EXPECT_EQ(v, 0.0f);
  for (int64_t i = 0; i < ints.size(); ++i) EXPECT_EQ(ints.data()[i], -1);
}

// Error messages print a NaN as "nan" whatever its sign bit (which a threaded sum's order picks),
// so a message reads the same from run to run; other values as an ostream writes them.
TEST(Message, ANanReadsNanWhateverItsSignBit) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(detail::concat("loss ", std::copysign(nan, -1.0f)), "loss nan");
  EXPECT_EQ(detail::concat("loss ", static_cast<double>(std::copysign(nan, -1.0f))), "loss nan");
  EXPECT_EQ(detail::concat(nan, " at step ", 3), "nan at step 3");
  EXPECT_EQ(detail::concat(-std::numeric_limits<double>::infinity(), ' ', -0.5f), "-inf -0.5");
}

}  // namespace
}  // namespace pneumo
