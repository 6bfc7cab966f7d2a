// NVTX ranges for Nsight Systems / Compute: one RAII type and a one-line macro placed at the top
// of every launcher and trainer phase. NVTX3 is header-only; without a profiler attached the
// calls cost a few nanoseconds.
#pragma once

#include <nvtx3/nvToolsExt.h>

namespace pneumo {

class NvtxRange {
 public:
  explicit NvtxRange(const char* name) { nvtxRangePushA(name); }
  ~NvtxRange() { nvtxRangePop(); }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

}  // namespace pneumo

#define PNEUMO_NVTX_CONCAT_INNER(a, b) a##b
#define PNEUMO_NVTX_CONCAT(a, b) PNEUMO_NVTX_CONCAT_INNER(a, b)
// PNEUMO_NVTX_RANGE("conv forward"): a range from here to the end of the enclosing scope.
#define PNEUMO_NVTX_RANGE(name) ::pneumo::NvtxRange PNEUMO_NVTX_CONCAT(pneumo_nvtx_range_, __LINE__)(name)
