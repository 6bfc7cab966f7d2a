// The dense layers in `pneumo bench kernels` (--ops dense): fc1 (the flattened 256x5x5 -> 128) and
// fc2 (128 -> 1), forward and backward (dx, dweight, dbias), through Backend objects: float32, and
// --precision bf16 (pneumo/ops/dense.hpp: every product on bfloat16 copies of its operands, float32
// sums and results; on CUDA the conversions are part of what is timed). Each precision is checked
// against sums in double of the operands as it reads them (rounded to bfloat16 or not).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bench/kernel_bench.hpp"
#include "pneumo/backend.hpp"

namespace pneumo::bench {

// float32 sums of up to 6,400 products against double: 1e-4 of the largest value.
constexpr double kDenseRtol = 1e-4;
extern const char* const kDenseReference;

class DenseCase {
 public:
  // layer 0: fc1, 1: fc2, at the recipe's 150 px; inputs on `device`.
  DenseCase(int layer, int64_t batch, Device device);

  void forward(Backend& backend);   // y = x W^T + b
  void backward(Backend& backend);  // dx, dweight, dbias from dy
  void poison_outputs();            // y, dx, dweight and dbias to kPoison
  // The outputs against the double sums of the operands as `bf16` reads them: forward y;
  // backward dx, dweight and dbias (the first that fails, else dweight's comparison).
  Comparison check_forward(bool bf16) const;
  Comparison check_backward(bool bf16) const;

  // One direction of a variant: run it, check it, and a row's op name, layer, shape, reference,
  // FLOPs and bytes filled in.
  void run(Backend& backend, bool backward) {
    backward ? this->backward(backend) : forward(backend);
  }
  Comparison check(bool backward, bool bf16) const {
    return backward ? check_backward(bf16) : check_forward(bf16);
  }
  BenchRow row(const char* platform, bool backward, int64_t batch, const std::string& variant,
               bool baseline) const;

  std::string layer() const;        // "fc1"
  std::string shape_label() const;  // "6400 -> 128"

 private:
  double forward_flops() const;     // 2 N in out
  double backward_flops() const;    // two products: 4 N in out
  double forward_bytes() const;     // x, W, b read; y written (float32)
  double backward_bytes() const;    // x, W, dy read; dx, dW, db written

  struct Expected {
    std::vector<double> y, dx, dweight, dbias;
  };
  static Expected sums(const std::vector<float>& x, const std::vector<float>& w,
                       const std::vector<float>& b, const std::vector<float>& dy, int64_t batch,
                       int64_t in, int64_t out);

  int layer_;
  int64_t batch_, in_, out_;
  Tensor x_, weight_, bias_, y_, dy_, dx_, dweight_, dbias_;
  Expected fp32_, bf16_;  // from the operands as read, and from their bfloat16 roundings
};

}  // namespace pneumo::bench
