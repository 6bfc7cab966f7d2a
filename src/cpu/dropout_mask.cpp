// Dropout multipliers on the CPU (cpu/dropout_mask.hpp). Element i of the tensor takes word i % 4
// of Philox call i / 4 (global indices). Runs of 32 elements that start at a multiple of 32 take
// eight consecutive calls; with AVX2 those eight run side by side, one 32-bit lane each, and the
// 32x32 -> 64-bit products of a Philox round are two _mm256_mul_epu32 (even lanes, then odd
// lanes shifted down). Everything else, and CPUs without AVX2, take the scalar philox4x32.
#include "cpu/dropout_mask.hpp"

#include <algorithm>

#include "elementwise.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define PNEUMO_DROPOUT_AVX2 1
#endif

namespace pneumo::cpu {
namespace {

void scalar_multipliers(RngKey key, float rate, int64_t begin, int64_t end, float* m) {
  int64_t i = begin;
  while (i < end) {
    const uint32_t global = static_cast<uint32_t>(i) + key.first;
    const Philox4 bits = philox4x32(key, global >> 2);
    for (uint32_t j = global & 3u; j < 4u && i < end; ++j, ++i)
      m[i - begin] = dropout_multiplier_from_bits(bits.v[j], rate);
  }
}

#if defined(PNEUMO_DROPOUT_AVX2)

constexpr int kLanes = 8;             // Philox calls per batch
constexpr int64_t kRun = 4 * kLanes;  // elements per batch

// lo and hi halves of the products m * c of each 32-bit lane.
__attribute__((target("avx2"))) inline void mulhilo8(__m256i m, __m256i c, __m256i* lo,
                                                      __m256i* hi) {
  const __m256i even = _mm256_mul_epu32(c, m);                         // lanes 0, 2, 4, 6
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(c, 32), m);  // lanes 1, 3, 5, 7
  *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

// The multipliers of elements [32 g, 32 g + 32) (global), g = first_call / 8: philox4x32 of
// calls first_call .. first_call + 7, the rounds of random.hpp lane by lane.
__attribute__((target("avx2"))) void simd_run(RngKey key, float rate, uint32_t first_call,
                                               float* m) {
  const uint32_t step = key.live ? key.live->step : key.step;
  const uint32_t epoch = key.live ? key.live->epoch : key.epoch;
  __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(first_call)),
                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  __m256i c1 = _mm256_set1_epi32(static_cast<int>(step));
  __m256i c2 = _mm256_set1_epi32(static_cast<int>(epoch));
  __m256i c3 = _mm256_set1_epi32(static_cast<int>(key.stream));
  uint32_t k0 = static_cast<uint32_t>(key.seed), k1 = static_cast<uint32_t>(key.seed >> 32);
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  for (int round = 0; round < 10; ++round) {
    __m256i lo0, hi0, lo1, hi1;
    mulhilo8(m0, c0, &lo0, &hi0);
    mulhilo8(m1, c2, &lo1, &hi1);
    c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int>(k0)));
    c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int>(k1)));
    c1 = lo1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  // dropout_multiplier_from_bits lane by lane: (bits >> 8) * 2^-24 < rate ? 0 : 1 / (1 - rate).
  // bits >> 8 < 2^24 converts exactly, and the scale by 2^-24 is exact, as in uniform_from_bits.
  const __m256 scale = _mm256_set1_ps(1.0f / (1.0f - rate));
  const __m256 threshold = _mm256_set1_ps(rate);
  const __m256 unit = _mm256_set1_ps(1.0f / 16777216.0f);
  alignas(32) float words[4][kLanes];
  const __m256i calls[4] = {c0, c1, c2, c3};
  for (int w = 0; w < 4; ++w) {
    const __m256 u = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(calls[w], 8)), unit);
    const __m256 dropped = _mm256_cmp_ps(u, threshold, _CMP_LT_OQ);
    _mm256_store_ps(words[w], _mm256_andnot_ps(dropped, scale));
  }
  for (int lane = 0; lane < kLanes; ++lane)
    for (int w = 0; w < 4; ++w) m[4 * lane + w] = words[w][lane];
}

bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}

#endif

}  // namespace

bool dropout_uses_simd() {
#if defined(PNEUMO_DROPOUT_AVX2)
  return cpu_has_avx2();
#else
  return false;
#endif
}

void dropout_multipliers(RngKey key, float rate, int64_t begin, int64_t end, float* m) {
#if defined(PNEUMO_DROPOUT_AVX2)
  if (cpu_has_avx2()) {
    // Scalar up to the first global index that is a multiple of 32, whole runs, scalar tail. A
    // run starts at a multiple of 32, so its 32 global indices never wrap past 2^32 inside it.
    const uint32_t global = static_cast<uint32_t>(begin) + key.first;
    const int64_t head = std::min<int64_t>(end - begin, (kRun - global % kRun) % kRun);
    scalar_multipliers(key, rate, begin, begin + head, m);
    int64_t i = begin + head;
    for (; i + kRun <= end; i += kRun)
      simd_run(key, rate, (static_cast<uint32_t>(i) + key.first) >> 2, m + (i - begin));
    scalar_multipliers(key, rate, i, end, m + (i - begin));
    return;
  }
#endif
  scalar_multipliers(key, rate, begin, end, m);
}

void apply_dropout_range(const float* x, float* y, float rate, RngKey key, int64_t begin,
                         int64_t end) {
  constexpr int64_t kChunk = 1024;  // multipliers on the stack, then one multiply pass
  alignas(32) float m[kChunk];
  for (int64_t i = begin; i < end; i += kChunk) {
    const int64_t count = std::min(kChunk, end - i);
    dropout_multipliers(key, rate, i, i + count, m);
    for (int64_t j = 0; j < count; ++j) y[i + j] = x[i + j] * m[j];
  }
}

}  // namespace pneumo::cpu
