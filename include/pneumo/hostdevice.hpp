// PNEUMO_HD marks per-element functions compiled for both the host and the device, so that a CUDA
// kernel and its CPU twin call the very same code.
#pragma once

#if defined(__CUDACC__)
#define PNEUMO_HD __host__ __device__ __forceinline__
#else
#define PNEUMO_HD inline
#endif
