// Tensors: a shape (up to 4 dims, NCHW), move-only owning arrays on the host or the device, and
// the non-owning views that ops take (layers hold views into one contiguous parameter buffer).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <utility>

namespace pneumo {

enum class Device { Cpu, Cuda };
const char* to_string(Device device);

// A row-major shape of rank 0..4. Activations are (N, C, H, W); dense activations are (N, F).
class Shape {
 public:
  static constexpr int kMaxRank = 4;
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);

  int rank() const { return rank_; }
  int64_t operator[](int axis) const { return dims_[static_cast<size_t>(axis)]; }
  int64_t numel() const;
  // (N, C, H, W) accessors; only for rank-4 shapes.
  int64_t n() const { return dims_[0]; }
  int64_t c() const { return dims_[1]; }
  int64_t h() const { return dims_[2]; }
  int64_t w() const { return dims_[3]; }
  std::string str() const;  // "(32, 1, 150, 150)"

  bool operator==(const Shape& other) const;
  bool operator!=(const Shape& other) const { return !(*this == other); }

 private:
  std::array<int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

// Raw memory helpers; the device ones throw pneumo::Error naming the call and the size.
void* allocate_bytes(Device device, size_t bytes);
void free_bytes(Device device, void* ptr, size_t bytes) noexcept;  // bytes: as allocated
// Testing aid: allocations come filled with 0xFF bytes (NaN as float32, -1 as integers; device
// memory too, by a synchronous cudaMemset)
// instead of whatever the heap held, so code that reads memory it never wrote fails every time,
// not only when recycled memory happens to hold a NaN. On when the environment variable
// PNEUMO_POISON_ALLOCATIONS is set to 1 at the first allocation, or by this call (which returns
// the previous setting).
bool set_poison_host_allocations(bool on);
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);
void zero_bytes(void* ptr, Device device, size_t bytes);

// What allocate_bytes holds on one device: every Array and Tensor (the CUDA backend's cuDNN
// workspace included), not the libraries' own allocations or the CUDA context. `peak` is the
// most held at once since the last reset_peak_memory (or the start).
struct MemoryStats {
  size_t current = 0;
  size_t peak = 0;
};
MemoryStats memory_stats(Device device);
void reset_peak_memory(Device device);  // peak = current
// The host memory allocate_bytes lets host tensors hold at once: what was available when it was
// first asked (Linux's MemAvailable, and a cgroup v2 limit's room), 0 when that cannot be read
// (no limit then). Linux grants allocations beyond it (overcommit) and then kills the process as
// it touches the memory, with no message: an allocation past it is an OutOfMemory instead.
size_t host_memory_budget();
// The room a cgroup v2 memory limit leaves (memory.max, memory.current, memory.stat's
// inactive_file): the limit less what the group holds, its inactive page cache not counted (the
// kernel drops that before it refuses memory, as MemAvailable counts the machine's; a container
// that has just read a dataset or built a project holds gigabytes of it). nullopt without a
// limit (0: "max" or no file), and when the group holds the whole limit even so: it is often full
// of active cache the kernel would also reclaim, and MemAvailable judges then, as it did before.
std::optional<uint64_t> cgroup_memory_room(uint64_t limit, uint64_t current,
                                           uint64_t inactive_file);

// Move-only owning array of T on one device. Move-assignment releases what it held.
template <class T>
class Array {
 public:
  Array() = default;
  Array(int64_t count, Device device)
      : data_(static_cast<T*>(allocate_bytes(device, static_cast<size_t>(count) * sizeof(T)))),
        count_(count),
        device_(device) {}
  ~Array() { free_bytes(device_, data_, bytes()); }
  Array(const Array&) = delete;
  Array& operator=(const Array&) = delete;
  Array(Array&& other) noexcept { *this = std::move(other); }
  Array& operator=(Array&& other) noexcept {
    if (this != &other) {
      free_bytes(device_, data_, bytes());
      data_ = std::exchange(other.data_, nullptr);
      count_ = std::exchange(other.count_, 0);
      device_ = other.device_;
    }
    return *this;
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  int64_t size() const { return count_; }
  size_t bytes() const { return static_cast<size_t>(count_) * sizeof(T); }
  Device device() const { return device_; }
  bool empty() const { return count_ == 0; }

 private:
  T* data_ = nullptr;
  int64_t count_ = 0;
  Device device_ = Device::Cpu;
};

// Non-owning float32 views. Ops take ConstTensorView for inputs and TensorView for outputs.
struct TensorView {
  float* data = nullptr;
  Shape shape;
  Device device = Device::Cpu;
  int64_t numel() const { return shape.numel(); }
  TensorView reshaped(Shape new_shape) const;  // same elements, new shape (Flatten)
};

struct ConstTensorView {
  const float* data = nullptr;
  Shape shape;
  Device device = Device::Cpu;
  ConstTensorView() = default;
  ConstTensorView(const float* d, Shape s, Device dev) : data(d), shape(s), device(dev) {}
  ConstTensorView(const TensorView& v) : data(v.data), shape(v.shape), device(v.device) {}  // NOLINT
  int64_t numel() const { return shape.numel(); }
  ConstTensorView reshaped(Shape new_shape) const;
};

// Non-owning bfloat16 views, channels-last: `shape` is the logical (N, C, H, W) and element
// (n, c, h, w) is at ((n H + h) W + w) C + c, as bits (uint16_t; kernels/bf16.hpp's rounding).
// The layout --precision bf16's convolutions read and write through cuDNN; the ops that take
// these views say so in their contracts.
struct Bf16NhwcView {
  uint16_t* data = nullptr;
  Shape shape;
  Device device = Device::Cpu;
  int64_t numel() const { return shape.numel(); }
};

struct ConstBf16NhwcView {
  const uint16_t* data = nullptr;
  Shape shape;
  Device device = Device::Cpu;
  ConstBf16NhwcView() = default;
  ConstBf16NhwcView(const uint16_t* d, Shape s, Device dev) : data(d), shape(s), device(dev) {}
  ConstBf16NhwcView(const Bf16NhwcView& v)  // NOLINT: as ConstTensorView from TensorView
      : data(v.data), shape(v.shape), device(v.device) {}
  int64_t numel() const { return shape.numel(); }
};

// Owning float32 tensor (contents uninitialised unless zeroed).
class Tensor {
 public:
  Tensor() = default;
  Tensor(Shape shape, Device device) : storage_(shape.numel(), device), shape_(shape) {}
  static Tensor zeros(Shape shape, Device device);
  // Host copy <-> any device.
  static Tensor from_host(Shape shape, const float* values, Device device);
  void copy_to_host(float* values) const;
  void copy_from(ConstTensorView source);  // same number of elements, any devices

  float* data() { return storage_.data(); }
  const float* data() const { return storage_.data(); }
  const Shape& shape() const { return shape_; }
  Device device() const { return storage_.device(); }
  int64_t numel() const { return shape_.numel(); }
  TensorView view() { return {data(), shape_, device()}; }
  ConstTensorView view() const { return {data(), shape_, device()}; }
  operator TensorView() { return view(); }              // NOLINT: views are what ops take
  operator ConstTensorView() const { return view(); }  // NOLINT

 private:
  Array<float> storage_;
  Shape shape_;
};

// Is there a usable CUDA device? (false on machines without a GPU or driver; never throws)
bool cuda_device_available();

}  // namespace pneumo
