// Timing helpers of `pneumo bench kernels` (see timing.hpp).
#include "bench/timing.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <sstream>

#include "cuda_check.hpp"
#include "kernels.hpp"

namespace pneumo::bench {

TimingSummary summarize(std::vector<double> samples_ms) {
  TimingSummary s;
  s.repeats = static_cast<int>(samples_ms.size());
  if (samples_ms.empty()) return s;
  std::sort(samples_ms.begin(), samples_ms.end());
  const size_t n = samples_ms.size();
  s.median_ms = n % 2 == 1 ? samples_ms[n / 2] : 0.5 * (samples_ms[n / 2 - 1] + samples_ms[n / 2]);
  s.min_ms = samples_ms.front();
  return s;
}

// ---- Host ---------------------------------------------------------------------------------------

size_t host_flush_bytes() {
  long llc = -1;
#ifdef _SC_LEVEL3_CACHE_SIZE
  llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
#ifdef _SC_LEVEL2_CACHE_SIZE
  if (llc <= 0) llc = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
  // Capped at 128 MiB: some VMs report the whole socket's L3 (256 MiB on an EPYC) where a core
  // only ever uses its own complex's slice (32 MiB), and a flush that big dominates a CPU run.
  constexpr size_t kCap = size_t{128} << 20;
  return llc > 0 ? std::min(2 * static_cast<size_t>(llc), kCap) : size_t{64} << 20;
}

HostTimer::HostTimer(size_t flush_bytes) : buffer_(flush_bytes) {}

void HostTimer::flush() {
  // A different byte each time, so no layer of the memory system can skip the writes.
  std::memset(buffer_.data(), fill_++, buffer_.size());
}

TimingSummary HostTimer::time(const std::function<void()>& run, int warmup, int repeats) {
  for (int i = 0; i < warmup; ++i) run();
  std::vector<double> samples;
  samples.reserve(static_cast<size_t>(repeats));
  for (int i = 0; i < repeats; ++i) {
    flush();
    const auto start = std::chrono::steady_clock::now();
    run();
    const auto stop = std::chrono::steady_clock::now();
    samples.push_back(std::chrono::duration<double, std::milli>(stop - start).count());
  }
  return summarize(std::move(samples));
}

// ---- CUDA ---------------------------------------------------------------------------------------

CudaTimer::CudaTimer(cudaStream_t stream, size_t flush_bytes)
    : stream_(stream),
      start_(cuda::Event::create()),
      stop_(cuda::Event::create()),
      flush_(static_cast<int64_t>(flush_bytes), Device::Cuda) {}

TimingSummary CudaTimer::time(const std::function<void()>& enqueue, int warmup, int repeats) {
  for (int i = 0; i < warmup; ++i) enqueue();
  PNEUMO_CUDA_CHECK(cudaStreamSynchronize(stream_), "after warm-up");
  std::vector<double> samples;
  samples.reserve(static_cast<size_t>(repeats));
  for (int i = 0; i < repeats; ++i) {
    if (flush_.bytes() > 0)
      PNEUMO_CUDA_CHECK(cudaMemsetAsync(flush_.data(), i & 0xFF, flush_.bytes(), stream_),
                        "L2 flush of ", flush_.bytes(), " bytes");
    kernels::hold_stream(kHoldMicroseconds, stream_);
    PNEUMO_CUDA_CHECK(cudaEventRecord(start_.get(), stream_), "timing start");
    enqueue();
    PNEUMO_CUDA_CHECK(cudaEventRecord(stop_.get(), stream_), "timing stop");
    PNEUMO_CUDA_CHECK(cudaEventSynchronize(stop_.get()), "timing stop");
    float ms = 0.0f;
    PNEUMO_CUDA_CHECK(cudaEventElapsedTime(&ms, start_.get(), stop_.get()), "elapsed time");
    samples.push_back(ms);
  }
  return summarize(std::move(samples));
}

int bf16_tensor_flops_per_sm_clock(int major, int minor) {
  if (minor != 0) return 0;
  switch (major) {
    case 8: return 2048;  // A100: 108 SMs x 2048 x 1.41 GHz = 312 TFLOP/s
    // H100 SXM: 132 SMs x 4096 x 1.83 GHz = 989 TFLOP/s of the datasheet; the bench multiplies
    // by the maximum SM clock the device reports (1.98 GHz on H100 and H200): about 1,070.
    case 9: return 4096;
    default: return 0;
  }
}

int fp32_lanes_per_sm(int major, int minor) {
  switch (major) {
    case 6: return minor == 0 ? 64 : 128;  // P100: 64; consumer Pascal: 128
    case 7: return 64;                     // Volta, Turing
    case 8: return minor == 0 ? 64 : 128;  // A100: 64; GA10x, Orin, Ada: 128
    case 9: return 128;                    // Hopper
    case 10: case 11: case 12: return 128;  // Blackwell
    default: return 0;
  }
}

namespace {

int attribute(cudaDeviceAttr which, int device) {
  int value = 0;
  if (cudaDeviceGetAttribute(&value, which, device) != cudaSuccess) {
    cudaGetLastError();  // not sticky; keep it from being blamed on a later call
    return 0;
  }
  return value;
}

}  // namespace

size_t cuda_l2_bytes(int device) {
  return static_cast<size_t>(std::max(0, attribute(cudaDevAttrL2CacheSize, device)));
}

DevicePeaks cuda_device_peaks(int device) {
  DevicePeaks peaks;
  const int sms = attribute(cudaDevAttrMultiProcessorCount, device);
  const int major = attribute(cudaDevAttrComputeCapabilityMajor, device);
  const int minor = attribute(cudaDevAttrComputeCapabilityMinor, device);
  const int clock_khz = attribute(cudaDevAttrClockRate, device);
  const int lanes = fp32_lanes_per_sm(major, minor);
  std::ostringstream fp32;
  if (sms > 0 && lanes > 0 && clock_khz > 0) {
    peaks.fp32_gflops = 2.0 * sms * lanes * clock_khz * 1e3 / 1e9;
    fp32 << sms << " SMs x " << lanes << " FP32 lanes x 2 x " << clock_khz / 1e6
         << " GHz (maximum SM clock)";
  } else {
    fp32 << "peak unknown (SMs " << sms << ", sm_" << major << minor << " lanes "
         << (lanes > 0 ? std::to_string(lanes) : std::string("not in the table")) << ", clock "
         << clock_khz << " kHz)";
  }
  peaks.fp32_basis = fp32.str();
  const int tensor = bf16_tensor_flops_per_sm_clock(major, minor);
  std::ostringstream bf16;
  if (sms > 0 && tensor > 0 && clock_khz > 0) {
    peaks.bf16_tensor_gflops = static_cast<double>(sms) * tensor * clock_khz * 1e3 / 1e9;
    bf16 << sms << " SMs x " << tensor << " dense bf16 flops a clock x " << clock_khz / 1e6
         << " GHz (maximum SM clock)";
  } else {
    bf16 << "peak unknown (sm_" << major << minor << " is not in the table)";
  }
  peaks.bf16_tensor_basis = bf16.str();
  const int memory_khz = attribute(cudaDevAttrMemoryClockRate, device);
  const int bus_bits = attribute(cudaDevAttrGlobalMemoryBusWidth, device);
  std::ostringstream dram;
  if (memory_khz > 0 && bus_bits > 0) {
    peaks.dram_gbps = 2.0 * memory_khz * 1e3 * (bus_bits / 8.0) / 1e9;
    dram << "2 x " << memory_khz / 1e6 << " GHz memory clock x " << bus_bits << "-bit bus";
  } else {
    dram << "peak unknown (memory clock " << memory_khz << " kHz, bus " << bus_bits << " bits)";
  }
  peaks.dram_basis = dram.str();
  return peaks;
}

}  // namespace pneumo::bench
