// Fully connected layer on the CPU, row-major with PyTorch's (out, in) weight: three GEMMs.
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

  // y (N, out) = x (N, in) * weight^T (in, out) + bias
  sgemm(false, true, g.batch, g.outputs, g.inputs, 1.0f, xs, g.inputs, ws, g.inputs, 0.0f, y.data,
        g.outputs);
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
