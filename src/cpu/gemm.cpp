// sgemm: the OpenBLAS path and the built-in blocked fallback. The fallback packs blocks of op(A)
// and op(B) into contiguous panels (which also absorbs the transposes) and multiplies them in
// 4 x 8 register tiles, so its inner loop is a plain vectorisable multiply-add.
#include "cpu/gemm.hpp"

#include <algorithm>
#include <climits>
#include <vector>

#include "pneumo/error.hpp"

#if defined(PNEUMO_WITH_BLAS)
#include <cblas.h>
#endif

namespace pneumo::cpu {
namespace {

// Register tile and cache blocks: a (kBlockK x kTileN) slice of the B panel and a
// (kTileM x kBlockK) slice of the A panel stay in L1; the B panel (kBlockK x kBlockN, 128 KiB) in L2.
constexpr int64_t kTileM = 4;
constexpr int64_t kTileN = 8;
constexpr int64_t kBlockM = 64;
constexpr int64_t kBlockN = 256;
constexpr int64_t kBlockK = 128;

void check_gemm_arguments(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k,
                          int64_t lda, int64_t ldb, int64_t ldc) {
  PNEUMO_CHECK(m >= 0 && n >= 0 && k >= 0, "sgemm: negative size m ", m, " n ", n, " k ", k);
  PNEUMO_CHECK(lda >= std::max<int64_t>(1, transpose_a ? m : k) &&
                   ldb >= std::max<int64_t>(1, transpose_b ? k : n) &&
                   ldc >= std::max<int64_t>(1, n),
               "sgemm: leading dimensions lda ", lda, " ldb ", ldb, " ldc ", ldc,
               " too small for m ", m, " n ", n, " k ", k);
}

// C = beta * C over the (m, n) block, writing zeros (not reading C) when beta == 0.
void scale_c(int64_t m, int64_t n, float beta, float* c, int64_t ldc) {
  if (beta == 1.0f) return;
  for (int64_t i = 0; i < m; ++i) {
    float* row = c + i * ldc;
    if (beta == 0.0f)
      std::fill(row, row + n, 0.0f);
    else
      for (int64_t j = 0; j < n; ++j) row[j] *= beta;
  }
}

// Packs op(A)[i0 : i0+rows, p0 : p0+depth] as row tiles of kTileM: element (i, p) goes to
// panel[(i / kTileM * depth + p) * kTileM + i % kTileM]; rows past the edge are zero.
void pack_a(bool transpose_a, const float* a, int64_t lda, int64_t i0, int64_t rows, int64_t p0,
            int64_t depth, float* panel) {
  int64_t padded_rows = (rows + kTileM - 1) / kTileM * kTileM;
  for (int64_t i = 0; i < padded_rows; ++i) {
    float* out = panel + (i / kTileM) * depth * kTileM + i % kTileM;
    for (int64_t p = 0; p < depth; ++p) {
      float value = 0.0f;
      if (i < rows)
        value = transpose_a ? a[(p0 + p) * lda + i0 + i] : a[(i0 + i) * lda + p0 + p];
      out[p * kTileM] = value;
    }
  }
}

// Packs op(B)[p0 : p0+depth, j0 : j0+cols] as column tiles of kTileN: element (p, j) goes to
// panel[(j / kTileN * depth + p) * kTileN + j % kTileN]; columns past the edge are zero.
void pack_b(bool transpose_b, const float* b, int64_t ldb, int64_t p0, int64_t depth, int64_t j0,
            int64_t cols, float* panel) {
  int64_t padded_cols = (cols + kTileN - 1) / kTileN * kTileN;
  for (int64_t j = 0; j < padded_cols; ++j) {
    float* out = panel + (j / kTileN) * depth * kTileN + j % kTileN;
    for (int64_t p = 0; p < depth; ++p) {
      float value = 0.0f;
      if (j < cols)
        value = transpose_b ? b[(j0 + j) * ldb + p0 + p] : b[(p0 + p) * ldb + j0 + j];
      out[p * kTileN] = value;
    }
  }
}

// C tile (rows <= kTileM, cols <= kTileN) += alpha * A tile (kTileM x depth) * B tile (depth x kTileN).
void multiply_tile(const float* a_tile, const float* b_tile, int64_t depth, float alpha, float* c,
                   int64_t ldc, int64_t rows, int64_t cols) {
  float sum[kTileM][kTileN] = {};
  for (int64_t p = 0; p < depth; ++p) {
    const float* a_column = a_tile + p * kTileM;
    const float* b_row = b_tile + p * kTileN;
    for (int64_t r = 0; r < kTileM; ++r)
      for (int64_t j = 0; j < kTileN; ++j) sum[r][j] += a_column[r] * b_row[j];
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) c[r * ldc + j] += alpha * sum[r][j];
}

}  // namespace

void sgemm_blocked(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k,
                   float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
                   float beta, float* c, int64_t ldc) {
  check_gemm_arguments(transpose_a, transpose_b, m, n, k, lda, ldb, ldc);
  scale_c(m, n, beta, c, ldc);
  if (m == 0 || n == 0 || k == 0 || alpha == 0.0f) return;

  // Panels are reused across calls on the same thread (one per backend worker).
  thread_local std::vector<float> a_panel, b_panel;
  a_panel.resize(static_cast<size_t>(kBlockM * kBlockK));
  b_panel.resize(static_cast<size_t>(kBlockK * kBlockN));

  for (int64_t j0 = 0; j0 < n; j0 += kBlockN) {
    int64_t cols = std::min(kBlockN, n - j0);
    for (int64_t p0 = 0; p0 < k; p0 += kBlockK) {
      int64_t depth = std::min(kBlockK, k - p0);
      pack_b(transpose_b, b, ldb, p0, depth, j0, cols, b_panel.data());
      for (int64_t i0 = 0; i0 < m; i0 += kBlockM) {
        int64_t rows = std::min(kBlockM, m - i0);
        pack_a(transpose_a, a, lda, i0, rows, p0, depth, a_panel.data());
        for (int64_t ti = 0; ti < rows; ti += kTileM)
          for (int64_t tj = 0; tj < cols; tj += kTileN)
            multiply_tile(a_panel.data() + ti * depth, b_panel.data() + tj * depth, depth, alpha,
                          c + (i0 + ti) * ldc + j0 + tj, ldc, std::min(kTileM, rows - ti),
                          std::min(kTileN, cols - tj));
      }
    }
  }
}

#if defined(PNEUMO_WITH_BLAS)

void sgemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc) {
  check_gemm_arguments(transpose_a, transpose_b, m, n, k, lda, ldb, ldc);
  PNEUMO_CHECK(std::max({m, n, k, lda, ldb, ldc}) <= INT_MAX, "sgemm: size m ", m, " n ", n,
               " k ", k, " exceeds the BLAS integer range");
  if (m == 0 || n == 0) return;
  if (k == 0 || alpha == 0.0f) {  // BLAS may skip these; keep the beta == 0 contract exact
    scale_c(m, n, beta, c, ldc);
    return;
  }
  cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans,
              transpose_b ? CblasTrans : CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta,
              c, static_cast<int>(ldc));
}

bool gemm_uses_blas() { return true; }
void gemm_use_single_thread() { openblas_set_num_threads(1); }

#else

void sgemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc) {
  sgemm_blocked(transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

bool gemm_uses_blas() { return false; }
void gemm_use_single_thread() {}

#endif

}  // namespace pneumo::cpu
