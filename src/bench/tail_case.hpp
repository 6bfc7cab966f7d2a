// The fused block tail in `pneumo bench kernels` (--ops tail): one block's dropout -> batch-norm
// -> max pooling, forward and backward, as the fused op (Backend::block_tail_forward/backward)
// and as the unfused chain of backend ops it replaces, on the model's block shapes with the
// recipe's dropout rates. Both suites run it through Backend objects (the CPU backend; on CUDA the
// backend with its own picks and one restricted to cuDNN), so the chain is exactly what training
// runs. The reference is the unfused chain on the same device (each of its ops is checked against
// its own reference in the test suite): the fused op must match it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bench/kernel_bench.hpp"
#include "pneumo/backend.hpp"

namespace pneumo::bench {

// Where a tail case's variants are measured against: label of the reference and its tolerance
// (statistics summed in another order; ties are exact in the inputs, so a wrong winner fails).
constexpr double kTailRtol = 1e-4;
// The stem's weight gradient sums a whole batch's pixels per tap (150 x 150 x batch products, with
// cancellation) in another order than the convolution's backward: 1e-3 of its largest value.
constexpr double kStemGradientRtol = 1e-3;
extern const char* const kTailReference;

class TailCase {
 public:
  // Block `block` (0-based) of model_layers(): a = the ReLU output of its convolution, batch
  // images; inputs on `device`.
  TailCase(size_t block, int64_t batch, Device device);

  void fused_forward(Backend& backend);
  void fused_backward(Backend& backend);  // after a forward of either kind
  void chain_forward(Backend& backend);
  void chain_backward(Backend& backend);  // after chain_forward
  // Fill y, or every output of a backward (da, dgamma, dbeta; and dweight, dbias with a stem),
  // with kPoison, so that an element a variant fails to write fails its check (not y before a
  // backward: the chain's pooling backward reads it).
  void poison_y();
  void poison_gradients();

  // What a backward writes, as it is now: da (not for the fused stem, which never writes it),
  // dgamma and dbeta, and with `stem` the convolution's dweight and dbias.
  struct Gradients {
    std::vector<float> da, dgamma, dbeta, dweight, dbias;
  };
  Gradients gradients(bool stem) const;
  // Each part `expected` holds against the same part now, within its own tolerance of its own
  // largest value (kTailRtol; the convolution's sums over whole images kStemGradientRtol): the
  // first part that fails, else da's (or dweight's) comparison.
  Comparison check_gradients(const Gradients& expected) const;

  // Block 1 only (the stem): the image x and the convolution, so the whole block can run as
  // conv2d_forward + the chain or the fused tail, or as the fused stem (the convolution's output
  // recomputed); backward ends in dweight (checked) and dbias.
  bool has_stem() const { return x_.numel() > 0; }
  void conv_forward(Backend& backend);           // a = relu(conv(x) + b), before a tail
  void conv_backward(Backend& backend);          // dweight, dbias from da
  void stem_forward(Backend& backend);
  void stem_backward(Backend& backend);
  double stem_forward_bytes() const;   // x read once, y written once
  double stem_backward_bytes() const;  // x and dy read once, dweight and dbias written

  std::vector<float> y() const;
  const Shape& a_shape() const { return a_.shape(); }
  const Shape& y_shape() const { return y_.shape(); }
  std::string layer() const;         // "tail2"
  std::string shape_label() const;   // "64x75x75 -> 64x38x38, dropout 0.1"
  double forward_bytes() const;      // a read once, y written once
  double backward_bytes() const;     // a and dy read once, da written once
  float rate() const { return settings_.dropout_rate; }

 private:
  size_t block_;
  BlockTailSettings settings_;
  Tensor a_, gamma_, beta_, running_mean_, running_var_, saved_mean_, saved_inv_std_;
  Tensor y_, dy_, da_, dgamma_, dbeta_;
  Tensor d_, z_, dz_;  // the chain's intermediates
  Tensor x_, weight_, bias_, dweight_, dbias_;  // block 1's convolution
};

}  // namespace pneumo::bench
