// Gather kernels and launchers: per-sample values (labels, sample weights) picked by the batch's
// dataset indices, and a live step's start (its values and image indices), all on the device.
#include "cuda_check.hpp"
#include "kernel_util.cuh"
#include "kernels.hpp"

namespace pneumo::kernels {
namespace {

// An index outside the values (a caller's bug) gives NaN, as gather_augment's bad image index
// does, rather than another allocation's memory: the loss turns NaN and the trainer names the step.
__global__ void gather_values_kernel(const float* values, int64_t value_count,
                                     const int32_t* indices, float* out, int64_t n) {
  for (int64_t i = global_thread_index(); i < n; i += grid_stride()) {
    const int32_t index = indices[i];
    out[i] = index >= 0 && index < value_count ? values[index] : nanf("");
  }
}

// One block: every thread reads the cursor before thread 0 advances it.
__global__ void begin_step_kernel(const LiveStep* table, int64_t table_size, uint32_t* cursor,
                                  const int32_t* order, int count, LiveStep* current,
                                  int32_t* indices) {
  const uint32_t i = *cursor;
  if (i >= table_size) __trap();  // the host sized the table for every step it launches
  const int32_t first = table[i].first;
  for (int j = static_cast<int>(threadIdx.x); j < count; j += static_cast<int>(blockDim.x))
    indices[j] = order[first + j];
  __syncthreads();
  if (threadIdx.x == 0) {
    *current = table[i];
    *cursor = i + 1;
  }
}

}  // namespace

void gather_values(const float* values, int64_t value_count, const int32_t* indices, float* out,
                   int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  gather_values_kernel<<<blocks_for(n), kThreadsPerBlock, 0, stream>>>(values, value_count,
                                                                       indices, out, n);
  PNEUMO_LAUNCH_CHECK("gather_values_kernel", "n=", n, " value_count=", value_count);
}

void begin_step(const LiveStep* table, int64_t table_size, uint32_t* cursor, const int32_t* order,
                int count, LiveStep* current, int32_t* indices, cudaStream_t stream) {
  begin_step_kernel<<<1, kThreadsPerBlock, 0, stream>>>(table, table_size, cursor, order, count,
                                                        current, indices);
  PNEUMO_LAUNCH_CHECK("begin_step_kernel", "count=", count, " table_size=", table_size);
}

}  // namespace pneumo::kernels
