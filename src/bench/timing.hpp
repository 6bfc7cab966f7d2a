// Timing for `pneumo bench kernels`, all in one place: median and minimum of repeats, the host
// timer (std::chrono, a last-level-cache flush between repeats), the CUDA event timer (an L2 flush
// between repeats), and the GPU's peak fp32 rate and DRAM bandwidth.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <functional>
#include <vector>

#include "bench/kernel_bench.hpp"
#include "cuda/cuda_raii.hpp"

namespace pneumo::bench {

struct TimingSummary {
  double median_ms = kNaN, min_ms = kNaN;
  int repeats = 0;
};
// Median (mean of the middle two for an even count) and minimum; NaNs when empty.
TimingSummary summarize(std::vector<double> samples_ms);

// Host timing: `run` `warmup` times, then `repeats` times, each timed alone with
// std::chrono::steady_clock after writing over a buffer larger than the last-level cache.
class HostTimer {
 public:
  explicit HostTimer(size_t flush_bytes);
  TimingSummary time(const std::function<void()>& run, int warmup, int repeats);
  size_t flush_bytes() const { return buffer_.size(); }

 private:
  void flush();
  std::vector<unsigned char> buffer_;
  unsigned char fill_ = 1;
};
// Twice the last-level cache the OS reports (at most 128 MiB), or 64 MiB when it reports none.
size_t host_flush_bytes();

// Device timing on one stream: `enqueue` `warmup` times, then per repeat a memset over a buffer
// of twice the L2 size (evicting what the previous run left in L2), a hold of the stream
// (kernels::hold_stream, kHoldMicroseconds), an event, `enqueue`, an event; each repeat's time is
// cudaEventElapsedTime between the two events (flush and hold are outside them). The hold keeps
// the GPU busy while the host enqueues the timed work (a chain of backend ops takes tens of
// microseconds of host time to issue), so that what is timed is the device's work, not host
// launch overhead seen as idle time between the events; a CUDA graph's replay has none either.
class CudaTimer {
 public:
  static constexpr int64_t kHoldMicroseconds = 500;
  CudaTimer(cudaStream_t stream, size_t flush_bytes);
  TimingSummary time(const std::function<void()>& enqueue, int warmup, int repeats);
  size_t flush_bytes() const { return flush_.bytes(); }

 private:
  cudaStream_t stream_;
  cuda::Event start_, stop_;
  Array<unsigned char> flush_;
};

// FP32 lanes (CUDA cores) per SM for a compute capability, 0 when this table does not know it.
int fp32_lanes_per_sm(int major, int minor);
// Dense bf16 tensor-core flops (fp32 accumulation) per SM per clock for a compute capability, 0
// when this table does not know it: the data-centre parts only (sm_80: A100, sm_90: H100 and
// H200), whose datasheet figures this reproduces; consumer parts of the same compute capability
// run fp32 accumulation at other rates, so no guess is made for the others.
int bf16_tensor_flops_per_sm_clock(int major, int minor);
// fp32 peak = SMs x lanes x 2 (an FMA is two flops) x the maximum SM clock; the bf16 tensor-core
// peak = SMs x its flops per SM and clock x the same clock; DRAM peak = 2 (double
// data rate) x memory clock x bus width / 8. From cudaDeviceGetAttribute (CUDA 13 dropped the
// clock fields of cudaDeviceProp); a missing attribute or an unknown architecture leaves the peak
// at 0 ("unknown") with the reason in the basis string.
DevicePeaks cuda_device_peaks(int device);
// L2 size in bytes (cudaDevAttrL2CacheSize), 0 if unknown.
size_t cuda_l2_bytes(int device);

}  // namespace pneumo::bench
