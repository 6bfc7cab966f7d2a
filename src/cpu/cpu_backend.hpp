// CpuBackend: the reference implementation of every Backend op (the trusted twin CUDA is tested
// against, and the fallback without a GPU). Ops are split by family over src/cpu/*.cpp; their
// argument checks run before them, in Backend's public entry (src/core/backend_entry.cpp).
#pragma once

#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "cpu/parallel.hpp"
#include "pneumo/backend.hpp"
#include "pneumo/op_geometry.hpp"

namespace pneumo::cpu {

// One op at a time: the backend's scratch buffers are shared between calls, so a CpuBackend must
// not be called from several threads at once (it parallelises internally).
class CpuBackend final : public Backend {
 public:
  // threads 0: one per hardware thread. bf16: emulate --precision bf16
  // (pneumo/ops/conv2d.hpp, pneumo/ops/dense.hpp).
  explicit CpuBackend(int threads, bool bf16 = false);

  Device device() const override { return Device::Cpu; }
  std::string name() const override;
  int threads() const { return pool_.size(); }
  // Every op of the interface (include/pneumo/backend.hpp); the checks ran before.
  PNEUMO_BACKEND_IMPLEMENTS

 private:
  // Scratch buffer number `slot` of every worker, each at least `count` floats (kept and reused
  // across calls). Call before parallel_for: buffers are grown only from the calling thread.
  std::vector<float*> worker_scratch(int slot, int64_t count);
  // im2col columns (also the bfloat16 tail's one image of dropout multipliers), one image's dy
  // rounded to bfloat16
  static constexpr int kScratchSlots = 2;
  // Whole-tensor float32 buffer number `slot`, at least `count` floats, kept and reused across
  // calls: the bfloat16 channels-last twins' decoded inputs and results before rounding (a new
  // tensor per call paid a page fault for every 4 KiB of it).
  float* tensor_scratch(int slot, int64_t count);
  TensorView tensor_scratch(int slot, const Shape& shape) {
    return {tensor_scratch(slot, shape.numel()), shape, Device::Cpu};
  }
  // Slots 0-3: the bfloat16 twins' (0 x, 1 dz or z, 2 dx; the tail's 3); 4: the convolution
  // filter gradient's kFilterGradientGroups partial sums.
  static constexpr int kTensorSlots = 5, kFilterPartialsSlot = 4;
  // The filter gradient sums this many groups of images (fewer for a smaller batch), a count
  // that does not depend on the threads: the bits do not either.
  static constexpr int64_t kFilterGradientGroups = 16;
  // Whether a convolution of geometry g rounds to bfloat16, and its weights as it reads them
  // (rounded into rounded_weight_ when it does).
  bool rounds_to_bf16(const ConvGeometry& g) const;
  const float* conv_weight(ConstTensorView weight, const ConvGeometry& g);

  // The bfloat16 tail's opening, forward and backward (block_tail.cpp): z as the float32 tail
  // reads it, a = relu(z + bias) in tensor slot 0 and, with dropout, each element's multiplier
  // in slot 1 (m null without), both NCHW.
  struct Bf16TailPlanes {
    const float* a;
    const float* m;
  };
  Bf16TailPlanes bf16_tail_planes(ConstBf16NhwcView z, ConstTensorView bias,
                                  const BlockTailSettings& s);

  bool bf16_ = false;
  // Set while a bfloat16 channels-last convolution runs the float32 ops' code: their rule holds
  // whatever the backend's precision (pneumo/ops/conv2d.hpp).
  bool conv_rule_bf16_ = false;
  std::vector<float> rounded_weight_;
  // A dense layer's operands as its products read them: `values` itself in float32, or its
  // bfloat16 rounding in `scratch` under bf16 (dense.cpp).
  const float* dense_operand(ConstTensorView values, std::vector<float>& scratch) const;
  std::vector<float> dense_x_, dense_weight_, dense_dy_;

  ThreadPool pool_;
  std::vector<std::vector<std::vector<float>>> scratch_;  // [worker][slot]
  std::vector<float> tensor_scratch_[kTensorSlots];
};

}  // namespace pneumo::cpu
