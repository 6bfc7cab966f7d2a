// Row-major single-precision GEMM for the CPU backend: OpenBLAS's cblas_sgemm when the build has
// it (PNEUMO_WITH_BLAS), else a cache-blocked GEMM written here. Both are exposed so that tests can
// compare them; callers use sgemm().
#pragma once

#include <cstdint>

namespace pneumo::cpu {

// C (m, n) = alpha * op(A) * op(B) + beta * C, all row-major; op(A) is (m, k), op(B) is (k, n).
// A is stored (m, k) with leading dimension lda, or (k, m) when transpose_a; likewise B is stored
// (k, n) or (n, k). With beta == 0, C is never read (NaN in C does not leak), as in BLAS.
// Single-threaded: the backend parallelises over the batch and calls this from each worker.
void sgemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc);

// The built-in blocked GEMM (same contract); sgemm() uses it when the build has no BLAS. Each
// element of C is summed in the same order whatever m and n and wherever it sits, so a row of C
// does not depend on the other rows: a layer that multiplies a batch by its weights through it
// gives an image the same bits in any batch. OpenBLAS's does not (its small-m and GEMV kernels
// sum in other orders: a row alone differs in the last bits from the same row among 64).
void sgemm_blocked(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k,
                   float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
                   float beta, float* c, int64_t ldc);

// True when sgemm() calls OpenBLAS.
bool gemm_uses_blas();

// Pins OpenBLAS to one thread (the backend runs one GEMM per worker); no-op without BLAS.
void gemm_use_single_thread();

}  // namespace pneumo::cpu
