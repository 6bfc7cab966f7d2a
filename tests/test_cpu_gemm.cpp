// The CPU GEMM: the built-in blocked fallback and the BLAS path (when built with OpenBLAS) against
// a naive double-precision product, on odd sizes that straddle the fallback's tiles and blocks,
// with every transpose combination, padded leading dimensions, alpha and beta.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "cpu/gemm.hpp"
#include "pneumo/error.hpp"
#include "test_util.hpp"

namespace pneumo {
namespace {

using testing::all_close;
using testing::random_values;

constexpr float kSentinel = 12345.0f;  // fills C's padding columns, which no GEMM may touch

struct GemmCase {
  bool transpose_a, transpose_b;
  int64_t m, n, k;
  float alpha, beta;
};

struct GemmOperands {
  int64_t lda, ldb, ldc;
  std::vector<float> a, b, c;
};

// Stored A is (m, k) or (k, m), B (k, n) or (n, k), each row padded by 3 unused elements.
GemmOperands make_operands(const GemmCase& t, uint32_t seed) {
  GemmOperands o;
  o.lda = (t.transpose_a ? t.m : t.k) + 3;
  o.ldb = (t.transpose_b ? t.k : t.n) + 3;
  o.ldc = t.n + 3;
  o.a = random_values((t.transpose_a ? t.k : t.m) * o.lda, seed);
  o.b = random_values((t.transpose_b ? t.n : t.k) * o.ldb, seed + 1);
  o.c = random_values(t.m * o.ldc, seed + 2);
  for (int64_t i = 0; i < t.m; ++i)
    for (int64_t j = t.n; j < o.ldc; ++j) o.c[static_cast<size_t>(i * o.ldc + j)] = kSentinel;
  if (t.beta == 0.0f)  // beta == 0 must not read C: NaN there must not leak into the result
    for (int64_t i = 0; i < t.m; ++i)
      for (int64_t j = 0; j < t.n; ++j) o.c[static_cast<size_t>(i * o.ldc + j)] = NAN;
  return o;
}

std::vector<float> naive_gemm(const GemmCase& t, const GemmOperands& o) {
  std::vector<float> c = o.c;
  for (int64_t i = 0; i < t.m; ++i)
    for (int64_t j = 0; j < t.n; ++j) {
      double sum = 0.0;
      for (int64_t p = 0; p < t.k; ++p) {
        double a = t.transpose_a ? o.a[static_cast<size_t>(p * o.lda + i)]
                                 : o.a[static_cast<size_t>(i * o.lda + p)];
        double b = t.transpose_b ? o.b[static_cast<size_t>(j * o.ldb + p)]
                                 : o.b[static_cast<size_t>(p * o.ldb + j)];
        sum += a * b;
      }
      float& out = c[static_cast<size_t>(i * o.ldc + j)];
      double previous = t.beta == 0.0f ? 0.0 : t.beta * static_cast<double>(out);
      out = static_cast<float>(t.alpha * sum + previous);
    }
  return c;
}

using GemmFunction = void (*)(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                              const float*, int64_t, float, float*, int64_t);

std::vector<float> run_gemm(GemmFunction gemm, const GemmCase& t, const GemmOperands& o) {
  std::vector<float> c = o.c;
  gemm(t.transpose_a, t.transpose_b, t.m, t.n, t.k, t.alpha, o.a.data(), o.lda, o.b.data(), o.ldb,
       t.beta, c.data(), o.ldc);
  return c;
}

TEST(CpuGemm, BlockedAndBlasMatchNaiveOnOddSizes) {
  // Sizes cross the fallback's 4x8 tiles and its 64 (m), 256 (n) and 128 (k) blocks.
  const int64_t sizes[][3] = {{1, 1, 1}, {37, 53, 29}, {5, 300, 130}, {70, 9, 260}, {3, 2, 0}};
  uint32_t seed = 10;
  for (const auto& size : sizes)
    for (bool transpose_a : {false, true})
      for (bool transpose_b : {false, true})
        for (float beta : {0.0f, 1.3f}) {
          GemmCase t{transpose_a, transpose_b, size[0], size[1], size[2], 0.7f, beta};
          GemmOperands o = make_operands(t, seed += 3);
          std::vector<float> expected = naive_gemm(t, o);
          std::ostringstream label;
          label << "m " << t.m << " n " << t.n << " k " << t.k << " transpose_a " << transpose_a
                << " transpose_b " << transpose_b << " beta " << beta;
          EXPECT_TRUE(all_close(run_gemm(cpu::sgemm_blocked, t, o), expected, 2e-4, 1e-4,
                                "blocked, " + label.str()));
          EXPECT_TRUE(all_close(run_gemm(cpu::sgemm, t, o), expected, 2e-4, 1e-4,
                                std::string(cpu::gemm_uses_blas() ? "BLAS, " : "fallback, ") +
                                    label.str()));
        }
}

TEST(CpuGemm, RejectsLeadingDimensionsTooSmall) {
  std::vector<float> a(6), b(6), c(4);
  // A (2, 3) row-major needs lda >= 3.
  EXPECT_THROW(cpu::sgemm_blocked(false, false, 2, 2, 3, 1.0f, a.data(), 2, b.data(), 2, 0.0f,
                                  c.data(), 2),
               Error);
  EXPECT_THROW(cpu::sgemm(false, false, 2, 2, 3, 1.0f, a.data(), 2, b.data(), 2, 0.0f, c.data(), 2),
               Error);
}

}  // namespace
}  // namespace pneumo
