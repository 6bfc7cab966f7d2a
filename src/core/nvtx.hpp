// NVTX ranges for Nsight Systems / Compute: an RAII range type over NVTX3 (header-only; costs a
// null check when no profiler is attached) and the one-line macro used at the top of every
// backend op and trainer phase: PNEUMO_NVTX_RANGE("conv2d_forward");
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
// Opens a range that closes at the end of the enclosing scope.
#define PNEUMO_NVTX_RANGE(name) \
  const ::pneumo::NvtxRange PNEUMO_NVTX_CONCAT(pneumo_nvtx_range_, __LINE__)(name)
