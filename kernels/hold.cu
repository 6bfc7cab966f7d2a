// A stream held busy for a while, for benchmarks only: bench's CudaTimer issues it before its
// start event, so that the GPU is still working while the host enqueues the timed ops and host
// launch time cannot show up as idle time between the events.
#include <cstdint>

#include "cuda_check.hpp"
#include "kernels.hpp"

namespace pneumo::kernels {
namespace {

__device__ __forceinline__ uint64_t global_nanoseconds() {
  uint64_t now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  return now;
}

// One thread waits until `nanoseconds` have passed on the GPU's global timer.
__global__ void hold_kernel(uint64_t nanoseconds) {
  const uint64_t start = global_nanoseconds();
  while (global_nanoseconds() - start < nanoseconds) __nanosleep(1000);
}

}  // namespace

void hold_stream(int64_t microseconds, cudaStream_t stream) {
  if (microseconds <= 0) return;
  hold_kernel<<<1, 1, 0, stream>>>(static_cast<uint64_t>(microseconds) * 1000u);
  PNEUMO_LAUNCH_CHECK("hold_kernel", "microseconds=", microseconds);
}

}  // namespace pneumo::kernels
