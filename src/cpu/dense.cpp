// Fully connected layer on the CPU, row-major with PyTorch's (out, in) weight: three GEMMs, the
// forward one batch-invariant.
// The matrices are small (batch x 6400 x 128 at most), so one GEMM call each is enough. Under
// --precision bf16 each GEMM reads bfloat16-rounded copies of its operands (ops/dense.hpp).
#include "bf16.hpp"
#include "cpu/cpu_backend.hpp"
#include "cpu/gemm.hpp"
#include "pneumo/error.hpp"
#include "pneumo/op_geometry.hpp"

namespace pneumo::cpu {

const float* CpuBackend::dense_operand(ConstTensorView values, std::vector<float>& scratch) const {
  if (!bf16_) return values.data;
  scratch.resize(static_cast<size_t>(values.numel()));
  round_all_to_bf16(values.data, scratch.data(), values.numel());
  return scratch.data();
}

void CpuBackend::dense_forward_impl(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                                    TensorView y) {
  const DenseGeometry g = dense_geometry(x.shape, weight.shape);
  const float* xs = dense_operand(x, dense_x_);
  const float* ws = dense_operand(weight, dense_weight_);

  // y (N, out) = x (N, in) * weight^T (in, out) + bias, through the built-in GEMM even where
  // OpenBLAS is linked: its rows do not depend on each other (gemm.hpp), so an image's logit is the
  // same whatever batch, --batch or partial last batch it is scored in (1.6 MFLOP an image at 150
  // px, against 439 in the convolutions). The convolutions run one image per GEMM already. Rows
  // split over the workers, which the same independence leaves the bits unchanged by, unless the
  // product is too small to pay for waking them (fc2, 128 -> 1 at batch 32: 0.011 ms on one
  // thread, 0.077 split over two, on the dev VM).
  const auto rows = [&](int64_t begin, int64_t end, int /*worker*/) {
    sgemm_blocked(false, true, end - begin, g.outputs, g.inputs, 1.0f, xs + begin * g.inputs,
                  g.inputs, ws, g.inputs, 0.0f, y.data + begin * g.outputs, g.outputs);
  };
  constexpr int64_t kParallelMultiplyAdds = int64_t{1} << 20;
  if (g.batch * g.outputs * g.inputs < kParallelMultiplyAdds)
    rows(0, g.batch, 0);
  else
    pool_.parallel_for(g.batch, rows);
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t o = 0; o < g.outputs; ++o) y.data[n * g.outputs + o] += bias.data[o];
}

void CpuBackend::dense_backward_impl(ConstTensorView x, ConstTensorView weight, ConstTensorView dy,
                                     TensorView dx, TensorView dweight, TensorView dbias) {
  const DenseGeometry g = dense_geometry(x.shape, weight.shape);
  const bool want_dx = dx.data != nullptr;  // the first layer's input needs no gradient
  const float* dys = dense_operand(dy, dense_dy_);
  if (want_dx) {
    // dx (N, in) = dy (N, out) * weight (out, in)
    sgemm(false, false, g.batch, g.inputs, g.outputs, 1.0f, dys, g.outputs,
          dense_operand(weight, dense_weight_), g.inputs, 0.0f, dx.data, g.inputs);
  }
  // dweight (out, in) = dy^T (out, N) * x (N, in)
  sgemm(true, false, g.outputs, g.inputs, g.batch, 1.0f, dys, g.outputs,
        dense_operand(x, dense_x_), g.inputs, 0.0f, dweight.data, g.inputs);
  // dbias[o] = sum over the batch of the float32 dy[n, o], in double
  for (int64_t o = 0; o < g.outputs; ++o) {
    double sum = 0.0;
    for (int64_t n = 0; n < g.batch; ++n) sum += dy.data[n * g.outputs + o];
    dbias.data[o] = static_cast<float>(sum);
  }
}

}  // namespace pneumo::cpu
