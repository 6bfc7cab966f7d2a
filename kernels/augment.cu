// CUDA gather-augment-normalise. TEMPORARY placeholder until the data issue lands the kernel.
#include "pneumo/augment.hpp"
#include "pneumo/error.hpp"

namespace pneumo {

void augment_batch_cuda(const uint8_t*, int64_t, int, const int32_t*, int, const AugmentSettings&,
                        RngKey, float*, void*) {
  throw Error("augment_batch_cuda is not implemented yet");
}

}  // namespace pneumo
