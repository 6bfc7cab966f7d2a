// The public entry of every Backend op: the op's argument checks, written once here for every
// backend (each throws pneumo::Error naming the op, the argument and the shapes), then the
// backend's implementation (the protected *_impl method), then the instrumentation hook. A
// backend adds only what its own device needs (where raw pointers point, library limits).
#include <initializer_list>
#include <utility>

#include "pneumo/backend.hpp"
#include "pneumo/error.hpp"
#include "pneumo/op_geometry.hpp"

namespace pneumo {

namespace {

using NamedView = std::pair<const char*, ConstTensorView>;

// Every view lives on the backend's device and has data unless it is empty.
void expect_on(Device device, const char* op, std::initializer_list<NamedView> views) {
  for (const auto& [argument, view] : views) {
    PNEUMO_CHECK(view.device == device, op, ": ", argument, " ", view.shape.str(), " is on ",
                 to_string(view.device), ", but the ", to_string(device),
                 " backend needs it in its own memory");
    PNEUMO_CHECK(view.data != nullptr || view.numel() == 0, op, ": ", argument, " ",
                 view.shape.str(), " has no data");
  }
}

void expect_shape(const char* op, const char* argument, const Shape& shape, const Shape& expected) {
  PNEUMO_CHECK(shape == expected, op, ": ", argument, " has shape ", shape.str(), ", expected ",
               expected.str());
}

void expect_rank(const char* op, const char* argument, const Shape& shape, int rank) {
  PNEUMO_CHECK(shape.rank() == rank, op, ": ", argument, " has shape ", shape.str(),
               ", expected rank ", rank);
}

// The geometry of the input-side tensor (N, C, H, W) and the weight (K, C, 3, 3), both checked.
ConvGeometry checked_conv_geometry(const char* op, const char* input_name, const Shape& input,
                                   const Shape& weight) {
  expect_rank(op, input_name, input, 4);
  expect_rank(op, "weight", weight, 4);
  const ConvGeometry g = conv_geometry(input, weight);
  expect_shape(op, "weight", weight, g.weight());
  return g;
}

// Every view has the expected shape (the per-channel tensors of batch-norm, an optimizer's state).
void expect_shapes(const char* op, const Shape& expected, std::initializer_list<NamedView> views) {
  for (const auto& [argument, view] : views) expect_shape(op, argument, view.shape, expected);
}

ChannelLayout checked_channel_layout(const char* op, const Shape& x) {
  expect_rank(op, "x", x, 4);
  return channel_layout(x);
}

DenseGeometry checked_dense_geometry(const char* op, const Shape& x, const Shape& weight) {
  expect_rank(op, "x", x, 2);
  expect_rank(op, "weight", weight, 2);
  const DenseGeometry g = dense_geometry(x, weight);
  expect_shape(op, "weight", weight, Shape{g.outputs, g.inputs});
  return g;
}

// Batch-norm's epsilon: at least cuDNN's minimum (CUDNN_BN_MIN_EPSILON, 1e-5) on every backend,
// so that a model trained on one backend runs on the other.
constexpr double kMinBatchNormEpsilon = 1e-5;

void check_batchnorm_epsilon(const char* op, double epsilon) {
  PNEUMO_CHECK(epsilon >= kMinBatchNormEpsilon, op, ": epsilon ", epsilon, " is below the minimum ",
               kMinBatchNormEpsilon, " (cuDNN's)");
}

// Dropout masks are indexed by the element's flat position in the global batch (key.first +
// local position) as a 32-bit counter, in groups of four elements per generator call.
void check_dropout(Device device, const char* op, ConstTensorView input, ConstTensorView output,
                   float rate, RngKey key) {
  expect_on(device, op, {{"input", input}, {"output", output}});
  expect_shape(op, "output", output.shape, input.shape);
  PNEUMO_CHECK(rate >= 0.0f && rate < 1.0f, op, ": rate ", rate, " outside [0, 1)");
  PNEUMO_CHECK(input.numel() + key.first <= (int64_t{1} << 32), op, ": ", input.shape.str(),
               " from element ", key.first,
               " of the global batch goes past what the 32-bit mask index covers");
  PNEUMO_CHECK(key.first % 4 == 0, op, ": the global offset ", key.first,
               " is not a multiple of 4 (masks are drawn four elements at a time)");
}

}  // namespace

// ---- Convolution -------------------------------------------------------------------------------

void Backend::conv2d_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                             TensorView y, bool fuse_relu) {
  const char* op = "conv2d_forward";
  expect_on(device(), op, {{"x", x}, {"weight", weight}, {"bias", bias}, {"y", y}});
  const ConvGeometry g = checked_conv_geometry(op, "x", x.shape, weight.shape);
  expect_shape(op, "bias", bias.shape, Shape{g.out_channels});
  expect_shape(op, "y", y.shape, g.output());
  conv2d_forward_impl(x, weight, bias, y, fuse_relu);
  observe(op, x.shape);
}

void Backend::conv2d_backward_data(ConstTensorView dy, ConstTensorView weight, TensorView dx) {
  const char* op = "conv2d_backward_data";
  expect_on(device(), op, {{"dy", dy}, {"weight", weight}, {"dx", dx}});
  const ConvGeometry g = checked_conv_geometry(op, "dx", dx.shape, weight.shape);
  expect_shape(op, "dy", dy.shape, g.output());
  conv2d_backward_data_impl(dy, weight, dx);
  observe(op, dx.shape);
}

void Backend::conv2d_backward_filter(ConstTensorView x, ConstTensorView dy, TensorView dweight,
                                     TensorView dbias) {
  const char* op = "conv2d_backward_filter";
  expect_on(device(), op, {{"x", x}, {"dy", dy}, {"dweight", dweight}, {"dbias", dbias}});
  const ConvGeometry g = checked_conv_geometry(op, "x", x.shape, dweight.shape);
  expect_shape(op, "dy", dy.shape, g.output());
  expect_shape(op, "dbias", dbias.shape, Shape{g.out_channels});
  conv2d_backward_filter_impl(x, dy, dweight, dbias);
  observe(op, x.shape);
}

// ---- ReLU --------------------------------------------------------------------------------------

void Backend::relu_forward(ConstTensorView x, TensorView y) {
  const char* op = "relu_forward";
  expect_on(device(), op, {{"x", x}, {"y", y}});
  expect_shape(op, "y", y.shape, x.shape);
  relu_forward_impl(x, y);
  observe(op, x.shape);
}

void Backend::relu_backward(ConstTensorView y, ConstTensorView dy, TensorView dx) {
  const char* op = "relu_backward";
  expect_on(device(), op, {{"y", y}, {"dy", dy}, {"dx", dx}});
  expect_shape(op, "dy", dy.shape, y.shape);
  expect_shape(op, "dx", dx.shape, y.shape);
  relu_backward_impl(y, dy, dx);
  observe(op, y.shape);
}

// ---- Pooling -----------------------------------------------------------------------------------

void Backend::maxpool2d_forward(ConstTensorView x, TensorView y) {
  const char* op = "maxpool2d_forward";
  expect_on(device(), op, {{"x", x}, {"y", y}});
  expect_rank(op, "x", x.shape, 4);
  expect_shape(op, "y", y.shape, pool_geometry(x.shape).output());
  maxpool2d_forward_impl(x, y);
  observe(op, x.shape);
}

void Backend::maxpool2d_backward(ConstTensorView x, ConstTensorView y, ConstTensorView dy,
                                 TensorView dx) {
  const char* op = "maxpool2d_backward";
  expect_on(device(), op, {{"x", x}, {"y", y}, {"dy", dy}, {"dx", dx}});
  expect_rank(op, "x", x.shape, 4);
  const PoolGeometry g = pool_geometry(x.shape);
  expect_shape(op, "y", y.shape, g.output());
  expect_shape(op, "dy", dy.shape, g.output());
  expect_shape(op, "dx", dx.shape, g.input());
  maxpool2d_backward_impl(x, y, dy, dx);
  observe(op, x.shape);
}

void Backend::global_avgpool_forward(ConstTensorView x, TensorView y) {
  const char* op = "global_avgpool_forward";
  expect_on(device(), op, {{"x", x}, {"y", y}});
  expect_rank(op, "x", x.shape, 4);
  expect_shape(op, "y", y.shape, Shape{x.shape.n(), x.shape.c()});
  global_avgpool_forward_impl(x, y);
  observe(op, x.shape);
}

void Backend::global_avgpool_backward(ConstTensorView dy, TensorView dx) {
  const char* op = "global_avgpool_backward";
  expect_on(device(), op, {{"dy", dy}, {"dx", dx}});
  expect_rank(op, "dx", dx.shape, 4);
  expect_shape(op, "dy", dy.shape, Shape{dx.shape.n(), dx.shape.c()});
  global_avgpool_backward_impl(dy, dx);
  observe(op, dx.shape);
}

// ---- Batch normalisation -----------------------------------------------------------------------

void Backend::batchnorm_forward_training(ConstTensorView x, ConstTensorView gamma,
                                         ConstTensorView beta, TensorView running_mean,
                                         TensorView running_var, double average_factor,
                                         double epsilon, TensorView y, TensorView saved_mean,
                                         TensorView saved_inv_std) {
  const char* op = "batchnorm_forward_training";
  expect_on(device(), op,
            {{"x", x},
             {"gamma", gamma},
             {"beta", beta},
             {"running_mean", running_mean},
             {"running_var", running_var},
             {"y", y},
             {"saved_mean", saved_mean},
             {"saved_inv_std", saved_inv_std}});
  const ChannelLayout layout = checked_channel_layout(op, x.shape);
  const Shape channel = layout.channel_shape();
  expect_shapes(op, channel,
                {{"gamma", gamma},
                 {"beta", beta},
                 {"running_mean", running_mean},
                 {"running_var", running_var},
                 {"saved_mean", saved_mean},
                 {"saved_inv_std", saved_inv_std}});
  expect_shape(op, "y", y.shape, x.shape);
  PNEUMO_CHECK(layout.count() > 1, op, ": x ", x.shape.str(),
               " has one value per channel; the batch variance needs at least two");
  PNEUMO_CHECK(average_factor >= 0.0 && average_factor <= 1.0, op, ": average_factor ",
               average_factor, " outside [0, 1]");
  check_batchnorm_epsilon(op, epsilon);
  batchnorm_forward_training_impl(x, gamma, beta, running_mean, running_var, average_factor,
                                  epsilon, y, saved_mean, saved_inv_std);
  observe(op, x.shape);
}

void Backend::batchnorm_forward_inference(ConstTensorView x, ConstTensorView gamma,
                                          ConstTensorView beta, ConstTensorView running_mean,
                                          ConstTensorView running_var, double epsilon,
                                          TensorView y) {
  const char* op = "batchnorm_forward_inference";
  expect_on(device(), op,
            {{"x", x},
             {"gamma", gamma},
             {"beta", beta},
             {"running_mean", running_mean},
             {"running_var", running_var},
             {"y", y}});
  const Shape channel = checked_channel_layout(op, x.shape).channel_shape();
  expect_shapes(op, channel,
                {{"gamma", gamma},
                 {"beta", beta},
                 {"running_mean", running_mean},
                 {"running_var", running_var}});
  expect_shape(op, "y", y.shape, x.shape);
  check_batchnorm_epsilon(op, epsilon);
  batchnorm_forward_inference_impl(x, gamma, beta, running_mean, running_var, epsilon, y);
  observe(op, x.shape);
}

namespace {

// The operands both backward ops take: x, dy, dx (N, C, H, W) alike, gamma and the saved
// statistics (C), all on `device`. Returns x's layout.
ChannelLayout checked_batchnorm_backward(Device device, const char* op, ConstTensorView x,
                                         ConstTensorView dy, ConstTensorView gamma,
                                         ConstTensorView saved_mean,
                                         ConstTensorView saved_inv_std, ConstTensorView dx) {
  expect_on(device, op,
            {{"x", x},
             {"dy", dy},
             {"gamma", gamma},
             {"saved_mean", saved_mean},
             {"saved_inv_std", saved_inv_std},
             {"dx", dx}});
  const ChannelLayout layout = checked_channel_layout(op, x.shape);
  expect_shape(op, "dy", dy.shape, x.shape);
  expect_shape(op, "dx", dx.shape, x.shape);
  expect_shapes(op, layout.channel_shape(),
                {{"gamma", gamma}, {"saved_mean", saved_mean}, {"saved_inv_std", saved_inv_std}});
  return layout;
}

}  // namespace

void Backend::batchnorm_backward(ConstTensorView x, ConstTensorView dy, ConstTensorView gamma,
                                 ConstTensorView saved_mean, ConstTensorView saved_inv_std,
                                 double epsilon, TensorView dx, TensorView dgamma,
                                 TensorView dbeta) {
  const char* op = "batchnorm_backward";
  const ChannelLayout layout =
      checked_batchnorm_backward(device(), op, x, dy, gamma, saved_mean, saved_inv_std, dx);
  expect_on(device(), op, {{"dgamma", dgamma}, {"dbeta", dbeta}});
  expect_shapes(op, layout.channel_shape(), {{"dgamma", dgamma}, {"dbeta", dbeta}});
  check_batchnorm_epsilon(op, epsilon);
  batchnorm_backward_impl(x, dy, gamma, saved_mean, saved_inv_std, epsilon, dx, dgamma, dbeta);
  observe(op, x.shape);
}

void Backend::batchnorm_backward_input(ConstTensorView x, ConstTensorView dy,
                                       ConstTensorView gamma, ConstTensorView saved_mean,
                                       ConstTensorView saved_inv_std, ConstTensorView sums,
                                       double count, TensorView dx) {
  const char* op = "batchnorm_backward_input";
  const ChannelLayout layout =
      checked_batchnorm_backward(device(), op, x, dy, gamma, saved_mean, saved_inv_std, dx);
  expect_on(device(), op, {{"sums", sums}});
  expect_shape(op, "sums", sums.shape, Shape{2, layout.channels});
  PNEUMO_CHECK(count >= static_cast<double>(layout.count()), op, ": count ", count,
               " is below the ", layout.count(), " values per channel of x");
  batchnorm_backward_input_impl(x, dy, gamma, saved_mean, saved_inv_std, sums, count, dx);
  observe(op, x.shape);
}

// ---- Dropout -----------------------------------------------------------------------------------

void Backend::dropout_forward(ConstTensorView x, TensorView y, float rate, RngKey key) {
  check_dropout(device(), "dropout_forward", x, y, rate, key);
  dropout_forward_impl(x, y, rate, key);
  observe("dropout_forward", x.shape);
}

void Backend::dropout_backward(ConstTensorView dy, TensorView dx, float rate, RngKey key) {
  check_dropout(device(), "dropout_backward", dy, dx, rate, key);
  dropout_backward_impl(dy, dx, rate, key);
  observe("dropout_backward", dy.shape);
}

// ---- Dense -------------------------------------------------------------------------------------

void Backend::dense_forward(ConstTensorView x, ConstTensorView weight, ConstTensorView bias,
                            TensorView y) {
  const char* op = "dense_forward";
  expect_on(device(), op, {{"x", x}, {"weight", weight}, {"bias", bias}, {"y", y}});
  const DenseGeometry g = checked_dense_geometry(op, x.shape, weight.shape);
  expect_shape(op, "bias", bias.shape, Shape{g.outputs});
  expect_shape(op, "y", y.shape, Shape{g.batch, g.outputs});
  dense_forward_impl(x, weight, bias, y);
  observe(op, x.shape);
}

void Backend::dense_backward(ConstTensorView x, ConstTensorView weight, ConstTensorView dy,
                             TensorView dx, TensorView dweight, TensorView dbias) {
  const char* op = "dense_backward";
  expect_on(device(), op,
            {{"x", x}, {"weight", weight}, {"dy", dy}, {"dweight", dweight}, {"dbias", dbias}});
  const DenseGeometry g = checked_dense_geometry(op, x.shape, weight.shape);
  expect_shape(op, "dy", dy.shape, Shape{g.batch, g.outputs});
  expect_shape(op, "dweight", dweight.shape, weight.shape);
  expect_shape(op, "dbias", dbias.shape, Shape{g.outputs});
  if (dx.data != nullptr) {  // null: the first layer's input needs no gradient
    expect_on(device(), op, {{"dx", dx}});
    expect_shape(op, "dx", dx.shape, x.shape);
  }
  dense_backward_impl(x, weight, dy, dx, dweight, dbias);
  observe(op, x.shape);
}

// ---- Loss, guards, optimizers
// --------------------------------------------------------------------

void Backend::sigmoid_bce(ConstTensorView logits, ConstTensorView labels, ConstTensorView weights,
                          TensorView dlogits, TensorView stats, int64_t batch_count) {
  const char* op = "sigmoid_bce";
  expect_on(device(), op,
            {{"logits", logits}, {"labels", labels}, {"dlogits", dlogits}, {"stats", stats}});
  const bool weighted = weights.data != nullptr;
  if (weighted) expect_on(device(), op, {{"weights", weights}});
  const Shape& shape = logits.shape;
  PNEUMO_CHECK(shape.rank() == 1 || (shape.rank() == 2 && shape[1] == 1), op,
               ": logits have shape ", shape.str(), ", expected (N) or (N, 1)");
  const int64_t batch = shape[0];
  PNEUMO_CHECK(labels.numel() == batch, op, ": labels ", labels.shape.str(),
               " do not match logits ", shape.str());
  PNEUMO_CHECK(!weighted || weights.numel() == batch, op, ": weights ", weights.shape.str(),
               " do not match logits ", shape.str());
  expect_shape(op, "dlogits", dlogits.shape, shape);
  expect_shape(op, "stats", stats.shape, Shape{2});
  PNEUMO_CHECK(batch_count >= batch, op, ": batch_count ", batch_count, " is below the ", batch,
               " logits given");
  sigmoid_bce_impl(logits, labels, weights, dlogits, stats, batch_count);
  observe(op, logits.shape);
}

void Backend::mark_nonfinite(ConstTensorView value, int64_t step, TensorView marker) {
  const char* op = "mark_nonfinite";
  expect_on(device(), op, {{"value", value}, {"marker", marker}});
  PNEUMO_CHECK(value.numel() == 1 && marker.numel() == 1, op, ": value ", value.shape.str(),
               " and marker ", marker.shape.str(), " must hold one element each");
  PNEUMO_CHECK(step >= 0 && step < (int64_t{1} << 24), op, ": step ", step,
               " is outside [0, 2^24) (the marker is a float)");
  mark_nonfinite_impl(value, step, marker);
  observe(op, value.shape);
}

void Backend::rmsprop_step(TensorView params, ConstTensorView grads, TensorView mean_square,
                           float learning_rate, float rho, float epsilon) {
  const char* op = "rmsprop_step";
  expect_on(device(), op, {{"params", params}, {"grads", grads}, {"mean_square", mean_square}});
  expect_shape(op, "grads", grads.shape, params.shape);
  expect_shape(op, "mean_square", mean_square.shape, params.shape);
  PNEUMO_CHECK(rho >= 0.0f && rho <= 1.0f, op, ": rho ", rho, " outside [0, 1]");
  rmsprop_step_impl(params, grads, mean_square, learning_rate, rho, epsilon);
  observe(op, params.shape);
}

void Backend::adamw_step(TensorView params, ConstTensorView grads, TensorView exp_avg,
                         TensorView exp_avg_sq, const AdamWStep& step) {
  const char* op = "adamw_step";
  expect_on(
      device(), op,
      {{"params", params}, {"grads", grads}, {"exp_avg", exp_avg}, {"exp_avg_sq", exp_avg_sq}});
  expect_shapes(op, params.shape,
                {{"grads", grads}, {"exp_avg", exp_avg}, {"exp_avg_sq", exp_avg_sq}});
  PNEUMO_CHECK(step.bias_correction1 > 0.0f && step.bias_correction2 > 0.0f, op,
               ": bias corrections must be positive (step counted from 1), got ",
               step.bias_correction1, " and ", step.bias_correction2);
  adamw_step_impl(params, grads, exp_avg, exp_avg_sq, step);
  observe(op, params.shape);
}

// ---- Input pipeline ----------------------------------------------------------------------------

void Backend::gather_augment(const uint8_t* images, int64_t image_count, int size,
                             const int32_t* indices, const AugmentSettings& settings, RngKey key,
                             TensorView out) {
  const char* op = "gather_augment";
  expect_on(device(), op, {{"out", out}});
  expect_rank(op, "out", out.shape, 4);
  const int64_t batch = out.shape.n();
  expect_shape(op, "out", out.shape, Shape{batch, 1, size, size});
  PNEUMO_CHECK(batch == 0 || (images && indices), op, ": null images or indices for a batch of ",
               batch);
  gather_augment_impl(images, image_count, size, indices, settings, key, out);
  observe(op, out.shape);
}

void Backend::gather_values(const float* values, const int32_t* indices, TensorView out) {
  const char* op = "gather_values";
  expect_on(device(), op, {{"out", out}});
  PNEUMO_CHECK(out.numel() == 0 || (values && indices), op, ": null values or indices for ",
               out.numel(), " outputs");
  gather_values_impl(values, indices, out);
  observe(op, out.shape);
}

}  // namespace pneumo
