// Shape arithmetic and host/device memory for Array and Tensor.
#include "pneumo/tensor.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <cctype>
#include <mutex>
#include <new>
#include <sstream>
#include <string>

#include "pneumo/error.hpp"

namespace pneumo {

const char* to_string(Device device) { return device == Device::Cuda ? "cuda" : "cpu"; }

Shape::Shape(std::initializer_list<int64_t> dims) {
  PNEUMO_CHECK(dims.size() <= static_cast<size_t>(kMaxRank), "shape of rank ", dims.size(),
               " exceeds the maximum rank ", kMaxRank);
  for (int64_t d : dims) {
    PNEUMO_CHECK(d >= 0, "negative dimension ", d, " in shape");
    dims_[static_cast<size_t>(rank_++)] = d;
  }
}

int64_t Shape::numel() const {
  int64_t count = 1;
  for (int i = 0; i < rank_; ++i) count *= dims_[static_cast<size_t>(i)];
  return rank_ == 0 ? 0 : count;
}

std::string Shape::str() const {
  std::ostringstream out;
  out << "(";
  for (int i = 0; i < rank_; ++i) out << (i ? ", " : "") << dims_[static_cast<size_t>(i)];
  out << ")";
  return out.str();
}

bool Shape::operator==(const Shape& other) const {
  if (rank_ != other.rank_) return false;
  for (int i = 0; i < rank_; ++i)
    if (dims_[static_cast<size_t>(i)] != other.dims_[static_cast<size_t>(i)]) return false;
  return true;
}

TensorView TensorView::reshaped(Shape new_shape) const {
  PNEUMO_CHECK(new_shape.numel() == shape.numel(), "cannot reshape ", shape.str(), " to ",
               new_shape.str());
  return {data, new_shape, device};
}

ConstTensorView ConstTensorView::reshaped(Shape new_shape) const {
  PNEUMO_CHECK(new_shape.numel() == shape.numel(), "cannot reshape ", shape.str(), " to ",
               new_shape.str());
  return {data, new_shape, device};
}

namespace {
constexpr size_t kHostAlignment = 64;  // cache line; also enough for AVX-512 loads

// What allocate_bytes holds, per device. Allocation happens at set-up (none per training step),
// so one mutex is no cost. Never destroyed: arrays held by statics may be freed after it would
// have been.
struct Ledger {
  std::mutex mutex;
  MemoryStats stats[2];  // by Device
};
Ledger& ledger() {
  static Ledger* instance = new Ledger;
  return *instance;
}
size_t index_of(Device device) { return device == Device::Cuda ? 1 : 0; }

void record_allocation(Device device, size_t bytes) {
  Ledger& l = ledger();
  const std::lock_guard<std::mutex> lock(l.mutex);
  MemoryStats& stats = l.stats[index_of(device)];
  stats.current += bytes;
  stats.peak = std::max(stats.peak, stats.current);
}

void record_free(Device device, size_t bytes) {
  Ledger& l = ledger();
  const std::lock_guard<std::mutex> lock(l.mutex);
  l.stats[index_of(device)].current -= bytes;
}
}  // namespace

MemoryStats memory_stats(Device device) {
  Ledger& l = ledger();
  const std::lock_guard<std::mutex> lock(l.mutex);
  return l.stats[index_of(device)];
}

void reset_peak_memory(Device device) {
  Ledger& l = ledger();
  const std::lock_guard<std::mutex> lock(l.mutex);
  MemoryStats& stats = l.stats[index_of(device)];
  stats.peak = stats.current;
}

namespace {

std::atomic<bool>& poison_host_allocations() {
  static std::atomic<bool> on{[] {
    const char* value = std::getenv("PNEUMO_POISON_ALLOCATIONS");
    return value != nullptr && std::string(value) == "1";
  }()};
  return on;
}

}  // namespace

bool set_poison_host_allocations(bool on) { return poison_host_allocations().exchange(on); }

namespace {

// A "Key:   N kB" line's N in bytes from /proc/meminfo, or 0.
uint64_t meminfo_bytes(const char* key) {
  std::ifstream in("/proc/meminfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key, 0) == 0) return std::strtoull(line.c_str() + std::strlen(key), nullptr, 10) * 1024;
  return 0;
}

// A cgroup v2 file holding one number (memory.max, memory.current), or 0 ("max", absent).
uint64_t cgroup_number(const char* name) {
  std::ifstream in(std::string("/sys/fs/cgroup/") + name);
  std::string text;
  if (!(in >> text) || text.empty() || !std::isdigit(static_cast<unsigned char>(text[0]))) return 0;
  return std::strtoull(text.c_str(), nullptr, 10);
}

// A "key N" line's N from the cgroup v2 memory.stat, or 0.
uint64_t cgroup_stat(const std::string& key) {
  std::ifstream in("/sys/fs/cgroup/memory.stat");
  std::string name;
  uint64_t value = 0;
  while (in >> name >> value)
    if (name == key) return value;
  return 0;
}

}  // namespace

std::optional<uint64_t> cgroup_memory_room(uint64_t limit, uint64_t current,
                                           uint64_t inactive_file) {
  const uint64_t held = current - std::min(current, inactive_file);
  if (limit == 0 || held >= limit) return std::nullopt;
  return limit - held;
}

size_t host_memory_budget() {
  static const size_t budget = [] {
    uint64_t available = meminfo_bytes("MemAvailable:");
    const std::optional<uint64_t> room =
        cgroup_memory_room(cgroup_number("memory.max"), cgroup_number("memory.current"),
                           cgroup_stat("inactive_file"));
    if (room) available = available == 0 ? *room : std::min(available, *room);
    // What this process's tensors already hold was counted as used by then.
    return static_cast<size_t>(available) + memory_stats(Device::Cpu).current;
  }();
  return budget;
}

void* allocate_bytes(Device device, size_t bytes) {
  if (bytes == 0) return nullptr;
  if (device == Device::Cpu) {
    const size_t budget = host_memory_budget(), held = memory_stats(Device::Cpu).current;
    if (budget > 0 && bytes > budget - std::min(budget, held))
      throw OutOfMemory(detail::concat("could not allocate ", bytes, " bytes (", bytes >> 20,
                                       " MiB) of host memory: host tensors already hold ",
                                       held >> 20, " MiB of the ", budget >> 20,
                                       " MiB available when the first was made"),
                        /*on_device=*/false, bytes);
    void* ptr = std::aligned_alloc(kHostAlignment, (bytes + kHostAlignment - 1) / kHostAlignment *
                                                       kHostAlignment);
    if (!ptr)
      throw OutOfMemory(detail::concat("could not allocate ", bytes, " bytes (", bytes >> 20,
                                       " MiB) of host memory"),
                        /*on_device=*/false, bytes);
    if (poison_host_allocations()) std::memset(ptr, 0xFF, bytes);
    record_allocation(device, bytes);
    return ptr;
  }
  void* ptr = nullptr;
  cudaError_t status = cudaMalloc(&ptr, bytes);
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls are not blamed
    std::string message = detail::concat("cudaMalloc of ", bytes, " bytes (", bytes >> 20,
                                         " MiB) failed: ", cudaGetErrorString(status));
    if (status == cudaErrorMemoryAllocation) {
      size_t free_bytes = 0, total_bytes = 0;
      if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess)
        message += detail::concat(" (", free_bytes >> 20, " MiB free of ", total_bytes >> 20,
                                  " MiB)");
      throw OutOfMemory(message, /*on_device=*/true, bytes);
    }
    throw Error(message);
  }
  if (poison_host_allocations()) {  // the device's fresh memory as well, for GPU test runs
    status = cudaMemset(ptr, 0xFF, bytes);
    if (status != cudaSuccess) {
      cudaFree(ptr);
      throw Error(detail::concat("cudaMemset of ", bytes, " fresh bytes (poisoning) failed: ",
                                 cudaGetErrorString(status)));
    }
  }
  record_allocation(device, bytes);
  return ptr;
}

void free_bytes(Device device, void* ptr, size_t bytes) noexcept {
  if (!ptr) return;
  record_free(device, bytes);
  if (device == Device::Cpu)
    std::free(ptr);
  else
    cudaFree(ptr);  // errors here cannot be reported from a destructor; the next call sees them
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  if (dst_device == Device::Cpu && src_device == Device::Cpu) {
    std::memcpy(dst, src, bytes);
    return;
  }
  cudaError_t status = cudaMemcpy(dst, src, bytes, cudaMemcpyDefault);
  PNEUMO_CHECK(status == cudaSuccess, "cudaMemcpy of ", bytes, " bytes (", to_string(src_device),
               " -> ", to_string(dst_device), ") failed: ", cudaGetErrorString(status));
}

void zero_bytes(void* ptr, Device device, size_t bytes) {
  if (bytes == 0) return;
  if (device == Device::Cpu) {
    std::memset(ptr, 0, bytes);
    return;
  }
  cudaError_t status = cudaMemset(ptr, 0, bytes);
  PNEUMO_CHECK(status == cudaSuccess, "cudaMemset of ", bytes,
               " bytes failed: ", cudaGetErrorString(status));
}

Tensor Tensor::zeros(Shape shape, Device device) {
  Tensor t(shape, device);
  zero_bytes(t.data(), device, static_cast<size_t>(t.numel()) * sizeof(float));
  return t;
}

Tensor Tensor::from_host(Shape shape, const float* values, Device device) {
  Tensor t(shape, device);
  copy_bytes(t.data(), device, values, Device::Cpu, static_cast<size_t>(t.numel()) * sizeof(float));
  return t;
}

void Tensor::copy_to_host(float* values) const {
  copy_bytes(values, Device::Cpu, data(), device(), static_cast<size_t>(numel()) * sizeof(float));
}

void Tensor::copy_from(ConstTensorView source) {
  PNEUMO_CHECK(source.numel() == numel(), "copy from ", source.shape.str(), " into ", shape_.str(),
               ": element counts differ");
  copy_bytes(data(), device(), source.data, source.device,
             static_cast<size_t>(numel()) * sizeof(float));
}

bool cuda_device_available() {
  int count = 0;
  cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return count > 0;
}

}  // namespace pneumo
