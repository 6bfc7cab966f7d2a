// cpu/dropout_mask.hpp against dropout_multiplier (kernels/elementwise.hpp) element by element: the
// eight-call batches (AVX2 where the CPU has it) must give the scalar generator's bits for any
// start, length, global offset (key.first, including one that wraps past 2^32), live key and rate.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "cpu/dropout_mask.hpp"
#include "elementwise.hpp"
#include "pneumo/live_step.hpp"
#include "pneumo/random.hpp"

namespace pneumo {
namespace {

void expect_scalar_bits(RngKey key, float rate, int64_t begin, int64_t end) {
  SCOPED_TRACE(::testing::Message() << "first " << key.first << ", elements [" << begin << ", "
                                    << end << "), rate " << rate);
  std::vector<float> m(static_cast<size_t>(end - begin), -1.0f);
  cpu::dropout_multipliers(key, rate, begin, end, m.data());
  for (int64_t i = begin; i < end; ++i)
    ASSERT_EQ(m[size_t(i - begin)], dropout_multiplier(key, static_cast<uint32_t>(i), rate))
        << "element " << i;
}

TEST(CpuDropoutMask, BatchesGiveTheScalarGeneratorsBits) {
  std::printf("eight-call batches on AVX2: %s\n", cpu::dropout_uses_simd() ? "yes" : "no");
  RngKey key = make_key(0x123456789ABCDEFull, RngStream::kDropout, 4, 17, 3);
  for (uint32_t first : {0u, 4u, 1u, 30u, 4096u})
    for (int64_t begin : {0, 1, 3, 31, 32, 100})
      for (int64_t length : {0, 1, 5, 31, 32, 33, 64, 1000}) {
        key.first = first;
        expect_scalar_bits(key, 0.3f, begin, begin + length);
      }
  key.first = 0;
  for (float rate : {0.0f, 0.1f, 0.5f, 0.9f}) expect_scalar_bits(key, rate, 0, 4096);
}

// A draw equal to the rate is kept (the rule is u < rate drops): the rate set to the exact draw
// of some elements, in the batched part of the range, catches a <= in place of <.
TEST(CpuDropoutMask, ADrawEqualToTheRateIsKept) {
  const RngKey key = make_key(11, RngStream::kDropout, 1, 2);
  for (uint32_t element : {40u, 77u, 95u}) {  // inside the runs [32, 64), [64, 96)
    const Philox4 bits = philox4x32(key, element >> 2);
    const float rate = uniform_from_bits(bits.v[element & 3u]);
    ASSERT_GT(rate, 0.0f);
    std::vector<float> m(128, -1.0f);
    cpu::dropout_multipliers(key, rate, 0, 128, m.data());
    EXPECT_EQ(m[element], 1.0f / (1.0f - rate)) << "element " << element << " was dropped";
    expect_scalar_bits(key, rate, 0, 128);
  }
}

TEST(CpuDropoutMask, LiveKeysAndWrappingIndices) {
  const LiveStep live{7, 123};
  RngKey key = make_key(99, RngStream::kDropout, 0, 0);
  key.live = &live;
  expect_scalar_bits(key, 0.25f, 5, 5000);
  // Global indices that pass 2^32 inside the range: each element wraps on its own.
  key.live = nullptr;
  key.first = UINT32_MAX - 100;
  expect_scalar_bits(key, 0.25f, 0, 400);
}

TEST(CpuDropoutMask, ApplyingItScalesEveryElementByItsMultiplier) {
  const RngKey key = make_key(5, RngStream::kDropout, 2, 9);
  std::vector<float> x(3000), y(3000, -1.0f);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.5f + 0.001f * static_cast<float>(i);
  cpu::apply_dropout_range(x.data(), y.data(), 0.4f, key, 7, 2999);
  EXPECT_EQ(y[6], -1.0f);
  EXPECT_EQ(y[2999], -1.0f);
  for (int64_t i = 7; i < 2999; ++i)
    ASSERT_EQ(y[size_t(i)], x[size_t(i)] * dropout_multiplier(key, static_cast<uint32_t>(i), 0.4f))
        << "element " << i;
}

// dropout_keep_word (the fused block tail's mask, drawn once per pass on the GPU) read back
// through dropout_multiplier_from_words gives dropout_multiplier's value for every element, and
// leaves the bits past the tensor's end clear. The index space does not wrap here: the tail's
// entry checks n + key.first <= 2^32.
void expect_words_give_the_multipliers(RngKey key, float rate, int64_t n) {
  SCOPED_TRACE(::testing::Message() << "first " << key.first << ", n " << n << ", rate " << rate);
  const int64_t words = (n + 31) / 32;
  std::vector<uint32_t> keep(static_cast<size_t>(words));
  for (int64_t w = 0; w < words; ++w)
    keep[size_t(w)] = dropout_keep_word(key, n, static_cast<uint32_t>(w), rate);
  for (int64_t i = 0; i < n; ++i)
    ASSERT_EQ(dropout_multiplier_from_words(keep.data(), i, rate),
              dropout_multiplier(key, static_cast<uint32_t>(i), rate))
        << "element " << i;
  if (n % 32 != 0) {
    EXPECT_EQ(keep.back() >> (n % 32), 0u) << "bits past the end are set";
  }
}

TEST(DropoutKeepWords, ReadBackAsTheMultipliersOfEveryElement) {
  RngKey key = make_key(0x2468ACE013579BDFull, RngStream::kDropout, 3, 11, 2);
  for (uint32_t first : {0u, 4u, 36u, 4096u, UINT32_MAX - 4095u})
    for (int64_t n : {1, 4, 31, 32, 33, 100, 1000, 4096}) {
      key.first = first;
      expect_words_give_the_multipliers(key, 0.2f, n);
    }
  key.first = 0;
  for (float rate : {0.0f, 0.1f, 0.5f, 0.9f}) expect_words_give_the_multipliers(key, rate, 5000);
  const LiveStep live{5, 42};
  key.live = &live;
  expect_words_give_the_multipliers(key, 0.3f, 777);
}

// A draw equal to the rate is kept in the words too (u < rate drops).
TEST(DropoutKeepWords, ADrawEqualToTheRateIsKept) {
  const RngKey key = make_key(11, RngStream::kDropout, 1, 2);
  for (uint32_t element : {5u, 40u, 95u}) {
    const float rate = uniform_from_bits(philox4x32(key, element >> 2).v[element & 3u]);
    const uint32_t word = dropout_keep_word(key, 128, element / 32, rate);
    EXPECT_NE((word >> (element % 32)) & 1u, 0u) << "element " << element << " was dropped";
    expect_words_give_the_multipliers(key, rate, 128);
  }
}

}  // namespace
}  // namespace pneumo
