// Fully connected layer on the CPU, row-major with PyTorch's (out, in) weight: three GEMMs.
// The matrices are small (batch x 6400 x 128 at most), so one GEMM call each is enough.
#include "cpu/cpu_backend.hpp"
#include "cpu/gemm.hpp"
#include "pneumo/error.hpp"

namespace pneumo::cpu {
namespace {

struct DenseGeometry {
  int64_t batch, inputs, outputs;
};

// From x (N, in) and weight (out, in), both checked.
DenseGeometry dense_geometry(const char* op, const Shape& x, const Shape& weight) {
  expect_rank(op, "x", x, 2);
  expect_rank(op, "weight", weight, 2);
  DenseGeometry g{x[0], x[1], weight[0]};
  expect_shape(op, "weight", weight, Shape{g.outputs, g.inputs});
  return g;
}

}  // namespace

void CpuBackend::dense_forward_impl(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                               TensorView y) {
  const char* op = "dense_forward";
  expect_on_cpu(op, {{"x", x}, {"weight", weight}, {"bias", bias}, {"y", y}});
  const DenseGeometry g = dense_geometry(op, x.shape, weight.shape);
  expect_shape(op, "bias", bias.shape, Shape{g.outputs});
  expect_shape(op, "y", y.shape, Shape{g.batch, g.outputs});

  // y (N, out) = x (N, in) * weight^T (in, out) + bias
  sgemm(false, true, g.batch, g.outputs, g.inputs, 1.0f, x.data, g.inputs, weight.data, g.inputs,
        0.0f, y.data, g.outputs);
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t o = 0; o < g.outputs; ++o) y.data[n * g.outputs + o] += bias.data[o];
}

void CpuBackend::dense_backward_impl(ConstTensorView x, ConstTensorView weight, ConstTensorView dy,
                                TensorView dx, TensorView dweight, TensorView dbias) {
  const char* op = "dense_backward";
  expect_on_cpu(op, {{"x", x}, {"weight", weight}, {"dy", dy}, {"dweight", dweight},
                     {"dbias", dbias}});
  const DenseGeometry g = dense_geometry(op, x.shape, weight.shape);
  expect_shape(op, "dy", dy.shape, Shape{g.batch, g.outputs});
  expect_shape(op, "dweight", dweight.shape, weight.shape);
  expect_shape(op, "dbias", dbias.shape, Shape{g.outputs});
  const bool want_dx = dx.data != nullptr;  // the first layer's input needs no gradient
  if (want_dx) {
    expect_on_cpu(op, {{"dx", dx}});
    expect_shape(op, "dx", dx.shape, x.shape);
    // dx (N, in) = dy (N, out) * weight (out, in)
    sgemm(false, false, g.batch, g.inputs, g.outputs, 1.0f, dy.data, g.outputs, weight.data,
          g.inputs, 0.0f, dx.data, g.inputs);
  }
  // dweight (out, in) = dy^T (out, N) * x (N, in)
  sgemm(true, false, g.outputs, g.inputs, g.batch, 1.0f, dy.data, g.outputs, x.data, g.inputs,
        0.0f, dweight.data, g.inputs);
  // dbias[o] = sum over the batch of dy[n, o], in double
  for (int64_t o = 0; o < g.outputs; ++o) {
    double sum = 0.0;
    for (int64_t n = 0; n < g.batch; ++n) sum += dy.data[n * g.outputs + o];
    dbias.data[o] = static_cast<float>(sum);
  }
}

}  // namespace pneumo::cpu
