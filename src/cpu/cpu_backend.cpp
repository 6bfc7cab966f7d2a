// CpuBackend's construction and name, the input-pipeline ops (gather with
// augmentation, gather of per-sample values) and make_cpu_backend.
#include "cpu/cpu_backend.hpp"

#include <sstream>

#include "cpu/gemm.hpp"
#include "pneumo/error.hpp"

namespace pneumo {
namespace cpu {

CpuBackend::CpuBackend(int threads, bool bf16)
    : bf16_(bf16), pool_(threads) {
  // Each worker runs its own single-threaded GEMM; OpenBLAS threads on top would oversubscribe.
  gemm_use_single_thread();
  scratch_.assign(static_cast<size_t>(pool_.size()),
                  std::vector<std::vector<float>>(static_cast<size_t>(kScratchSlots)));
}

std::string CpuBackend::name() const {
  std::ostringstream out;
  out << "cpu (" << pool_.size() << (pool_.size() == 1 ? " thread, " : " threads, ")
      << (gemm_uses_blas() ? "OpenBLAS" : "built-in GEMM")
      << (bf16_ ? ", bf16 emulated" : "") << ")";
  return out.str();
}

std::vector<float*> CpuBackend::worker_scratch(int slot, int64_t count) {
  PNEUMO_CHECK(slot >= 0 && slot < kScratchSlots, "scratch slot ", slot, " out of range");
  std::vector<float*> buffers;
  for (auto& slots : scratch_) {
    auto& buffer = slots[static_cast<size_t>(slot)];
    if (buffer.size() < static_cast<size_t>(count)) buffer.resize(static_cast<size_t>(count));
    buffers.push_back(buffer.data());
  }
  return buffers;
}

float* CpuBackend::tensor_scratch(int slot, int64_t count) {
  PNEUMO_CHECK(slot >= 0 && slot < kTensorSlots, "tensor scratch slot ", slot, " out of range");
  std::vector<float>& buffer = tensor_scratch_[slot];
  if (buffer.size() < static_cast<size_t>(count)) buffer.resize(static_cast<size_t>(count));
  return buffer.data();
}

void CpuBackend::gather_augment_impl(const uint8_t* images, int64_t image_count, int size,
                                     const int32_t* indices, const AugmentSettings& settings,
                                     RngKey key, TensorView out) {
  const int64_t batch = out.shape.n();
  augment_batch_cpu(images, image_count, size, indices, static_cast<int>(batch), settings, key,
                    out.data);
}

void CpuBackend::gather_values_impl(const float* values, int64_t value_count,
                                    const int32_t* indices, TensorView out) {
  const int64_t count = out.numel();
  for (int64_t i = 0; i < count; ++i) {
    PNEUMO_CHECK(indices[i] >= 0 && indices[i] < value_count, "gather_values: index ", indices[i],
                 " at position ", i, " out of range [0, ", value_count, ")");
    out.data[i] = values[indices[i]];
  }
}

void CpuBackend::begin_step_impl(const LiveStep* table, int64_t table_size, uint32_t* cursor,
                                 const int32_t* order, int count, LiveStep* current,
                                 int32_t* indices) {
  const uint32_t i = *cursor;
  PNEUMO_CHECK(i < table_size, "begin_step: step ", i, " is past the table's ", table_size,
               " steps");
  *current = table[i];
  for (int j = 0; j < count; ++j) indices[j] = order[current->first + j];
  *cursor = i + 1;
}

}  // namespace cpu

std::unique_ptr<Backend> make_cpu_backend(int threads, bool bf16) {
  return std::make_unique<cpu::CpuBackend>(threads, bf16);
}

}  // namespace pneumo
