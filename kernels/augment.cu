// CUDA gather-augment-normalise: uint8 images (image_count, size, size) already on the device,
// gathered by index, warped, adjusted and scaled into float (batch, 1, size, size), then (with
// InputNormalization::PerImage) standardised per image by a second kernel. The geometry, the
// per-pixel arithmetic and the standardisation live in kernels/augment_math.hpp, shared with the
// CPU twin src/cpu/augment.cpp.
#include <cuda_runtime.h>

#include "pneumo/augment.hpp"
#include "augment_math.hpp"
#include "pneumo/error.hpp"

namespace pneumo {

namespace {

constexpr int kThreadsPerBlock = 256;

// Grid: x covers the size*size pixels of one image (consecutive threads write consecutive
// output pixels, so writes coalesce), y is the batch slot. The slot's transform is computed once
// per block by thread 0 into shared memory (two Philox calls and a sincos).
__global__ void augment_batch_kernel(const uint8_t* __restrict__ images, int64_t image_count,
                                     int size, const int32_t* __restrict__ indices,
                                     AugmentSettings settings, RngKey key,
                                     float* __restrict__ out) {
  __shared__ AugmentTransform transform;
  const int slot = static_cast<int>(blockIdx.y);
  const int pixels = size * size;
  const int p = static_cast<int>(blockIdx.x) * blockDim.x + static_cast<int>(threadIdx.x);
  if (threadIdx.x == 0) transform = augment_transform(key, static_cast<uint32_t>(slot), settings, size);
  __syncthreads();
  if (p >= pixels) return;
  float* dst = out + static_cast<int64_t>(slot) * pixels;
  const int32_t index = indices[slot];
  if (index < 0 || index >= image_count) {
    dst[p] = nanf("");  // a bad index poisons its slot visibly instead of reading foreign memory
    return;
  }
  const uint8_t* image = images + static_cast<int64_t>(index) * pixels;
  dst[p] = augment_pixel(image, size, transform, p % size, p / size);
}

// One block per image (grid x = batch slot): the block sums the image's values and their squares
// in double (each thread a strided share, then a fixed-order tree in shared memory, so the result
// is deterministic), then every thread standardises its share in place.
__global__ void standardize_images_kernel(float* __restrict__ out, int pixels) {
  __shared__ double sums[kThreadsPerBlock];
  __shared__ double squares[kThreadsPerBlock];
  __shared__ ImageMoments moments;
  float* image = out + static_cast<int64_t>(blockIdx.x) * pixels;
  double sum = 0.0, sum_squares = 0.0;
  for (int p = static_cast<int>(threadIdx.x); p < pixels; p += kThreadsPerBlock) {
    const double v = image[p];
    sum += v;
    sum_squares += v * v;
  }
  sums[threadIdx.x] = sum;
  squares[threadIdx.x] = sum_squares;
  __syncthreads();
  for (int half = kThreadsPerBlock / 2; half > 0; half >>= 1) {
    if (static_cast<int>(threadIdx.x) < half) {
      sums[threadIdx.x] += sums[threadIdx.x + half];
      squares[threadIdx.x] += squares[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) moments = standardization_moments(sums[0], squares[0], pixels);
  __syncthreads();
  for (int p = static_cast<int>(threadIdx.x); p < pixels; p += kThreadsPerBlock)
    image[p] = standardize_value(image[p], moments);
}

}  // namespace

void augment_batch_cuda(const uint8_t* images, int64_t image_count, int size,
                        const int32_t* indices, int batch, const AugmentSettings& settings,
                        RngKey key, float* out, void* stream) {
  PNEUMO_CHECK(size > 0 && size <= 8192 && batch >= 0, "augment_batch_cuda: bad size ", size,
               " or batch ", batch);
  PNEUMO_CHECK(batch <= 65535, "augment_batch_cuda: batch ", batch,
               " exceeds the grid's y limit of 65535");
  if (batch == 0) return;
  PNEUMO_CHECK(images != nullptr && indices != nullptr && out != nullptr,
               "augment_batch_cuda: null pointer (batch ", batch, ", size ", size, ")");
  const int pixels = size * size;
  const dim3 grid(static_cast<unsigned>((pixels + kThreadsPerBlock - 1) / kThreadsPerBlock),
                  static_cast<unsigned>(batch));
  augment_batch_kernel<<<grid, kThreadsPerBlock, 0, static_cast<cudaStream_t>(stream)>>>(
      images, image_count, size, indices, settings, key, out);
  cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess)
    throw Error(detail::concat("augment_batch_kernel launch failed (images (", image_count, ", ",
                               size, ", ", size, ") -> out (", batch, ", 1, ", size, ", ", size,
                               "), grid ", grid.x, "x", grid.y, " of ", kThreadsPerBlock,
                               " threads): ", cudaGetErrorString(status)));
  if (settings.normalization != InputNormalization::PerImage) return;
  standardize_images_kernel<<<static_cast<unsigned>(batch), kThreadsPerBlock, 0,
                              static_cast<cudaStream_t>(stream)>>>(out, pixels);
  status = cudaGetLastError();
  if (status != cudaSuccess)
    throw Error(detail::concat("standardize_images_kernel launch failed (out (", batch, ", 1, ",
                               size, ", ", size, "), ", batch, " blocks of ", kThreadsPerBlock,
                               " threads): ", cudaGetErrorString(status)));
}

}  // namespace pneumo
