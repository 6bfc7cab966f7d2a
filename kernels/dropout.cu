// Inverted dropout kernel and launcher. The mask is recomputed from (key, element index) by
// pneumo::dropout_group (elementwise.hpp, four elements per Philox call), so forward and backward
// are the same map and the CPU twin draws the very same mask.
#include <cstdint>

#include "cuda_check.hpp"
#include "kernel_util.cuh"
#include "elementwise.hpp"
#include "kernels.hpp"

namespace pneumo::kernels {
namespace {

// One thread per group of four elements (one Philox call each), grid-stride over the groups.
// With x and y 16-byte aligned (`vectors`), a full group moves as one float4 load and one store
// (four scalar loads a group apart from the next thread's touched each cache sector four times);
// the multipliers and products are dropout_group's (dropout_scale_group), so the bits are too.
__global__ void dropout_kernel(const float* x, float* y, int64_t n, float rate, RngKey key,
                               bool vectors) {
  const int64_t groups = (n + 3) / 4, full = vectors ? n / 4 : 0;
  for (int64_t g = global_thread_index(); g < groups; g += grid_stride()) {
    if (g >= full) {
      dropout_group(x, y, n, static_cast<uint32_t>(g), rate, key);
      continue;
    }
    const float4 in = reinterpret_cast<const float4*>(x)[g];
    float v[4] = {in.x, in.y, in.z, in.w};
    dropout_scale_group(v, 4, static_cast<uint32_t>(g), rate, key);
    reinterpret_cast<float4*>(y)[g] = make_float4(v[0], v[1], v[2], v[3]);
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

void dropout_apply(const float* x, float* y, int64_t n, float rate, RngKey key,
                   cudaStream_t stream) {
  PNEUMO_CHECK(n <= (int64_t{1} << 32), "dropout over ", n,
               " elements: the mask index is 32-bit (at most 2^32 elements per tensor)");
  PNEUMO_CHECK(rate >= 0.0f && rate < 1.0f, "dropout rate ", rate, " outside [0, 1)");
  if (n == 0) return;
  dropout_kernel<<<blocks_for((n + 3) / 4), kThreadsPerBlock, 0, stream>>>(
      x, y, n, rate, key, aligned16(x) && aligned16(y));
  PNEUMO_LAUNCH_CHECK("dropout_kernel", "n=", n, " rate=", rate);
}

}  // namespace pneumo::kernels
