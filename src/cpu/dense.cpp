// Fully connected layer on the CPU, row-major with PyTorch's (out, in) weight: three GEMMs.
// The matrices are small (batch x 6400 x 128 at most), so one GEMM call each is enough.
#include "cpu/cpu_backend.hpp"
#include "cpu/gemm.hpp"
#include "pneumo/error.hpp"
#include "pneumo/op_geometry.hpp"

namespace pneumo::cpu {

void CpuBackend::dense_forward_impl(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                                    TensorView y) {
  const DenseGeometry g = dense_geometry(x.shape, weight.shape);

  // y (N, out) = x (N, in) * weight^T (in, out) + bias
  sgemm(false, true, g.batch, g.outputs, g.inputs, 1.0f, x.data, g.inputs, weight.data, g.inputs,
        0.0f, y.data, g.outputs);
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t o = 0; o < g.outputs; ++o) y.data[n * g.outputs + o] += bias.data[o];
}

void CpuBackend::dense_backward_impl(ConstTensorView x, ConstTensorView weight, ConstTensorView dy,
                                     TensorView dx, TensorView dweight, TensorView dbias) {
  const DenseGeometry g = dense_geometry(x.shape, weight.shape);
  const bool want_dx = dx.data != nullptr;  // the first layer's input needs no gradient
  if (want_dx) {
    // dx (N, in) = dy (N, out) * weight (out, in)
    sgemm(false, false, g.batch, g.inputs, g.outputs, 1.0f, dy.data, g.outputs, weight.data,
          g.inputs, 0.0f, dx.data, g.inputs);
  }
  // dweight (out, in) = dy^T (out, N) * x (N, in)
  sgemm(true, false, g.outputs, g.inputs, g.batch, 1.0f, dy.data, g.outputs, x.data, g.inputs, 0.0f,
        dweight.data, g.inputs);
  // dbias[o] = sum over the batch of dy[n, o], in double
  for (int64_t o = 0; o < g.outputs; ++o) {
    double sum = 0.0;
    for (int64_t n = 0; n < g.batch; ++n) sum += dy.data[n * g.outputs + o];
    dbias.data[o] = static_cast<float>(sum);
  }
}

}  // namespace pneumo::cpu
