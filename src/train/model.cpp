// The seed network of docs/recipe.md built from layers over one Backend:
//   5 x [Conv3x3+ReLU -> (Dropout) -> BatchNorm -> MaxPool2x2] -> Flatten -> Dense+ReLU ->
//   Dropout -> Dense(1) -> logit.
// Parameters, gradients and batch-norm statistics each sit in one flat buffer; layers hold views.
#include "pneumo/model.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <utility>

#include "pneumo/distributed.hpp"
#include "pneumo/error.hpp"
#include "core/nvtx.hpp"
#include "train/layers.hpp"

namespace pneumo {

Shape with_batch(Shape shape, int64_t n) {
  switch (shape.rank()) {
    case 1: return Shape{n};
    case 2: return Shape{n, shape[1]};
    case 3: return Shape{n, shape[1], shape[2]};
    default: return Shape{n, shape[1], shape[2], shape[3]};
  }
}

TensorView batch_view(Tensor& buffer, Shape shape) {
  PNEUMO_CHECK(shape.numel() <= buffer.numel(), "batch of shape ", shape.str(),
               " exceeds the buffer allocated for ", buffer.shape().str());
  return {buffer.data(), shape, buffer.device()};
}

namespace {

// Offsets are rounded up to 32 floats (128 bytes) so every parameter tensor starts aligned for
// vectorised and tensor-core loads; the gaps stay zero and are never named.
constexpr int64_t kParameterAlignment = 32;

// Hands out named regions of a flat buffer; views are bound once the buffer exists.
class Registry {
 public:
  int64_t add(std::vector<ParameterInfo>& infos, const std::string& name, Shape shape) {
    int64_t offset = (size_ + kParameterAlignment - 1) / kParameterAlignment * kParameterAlignment;
    infos.push_back({name, shape, offset});
    size_ = offset + shape.numel();
    return offset;
  }
  int64_t size() const { return size_; }

 private:
  int64_t size_ = 0;
};

// A region of the flat arrays, resolved to views after allocation.
struct Slot {
  int64_t offset = 0;
  Shape shape;
  TensorView in(Tensor& flat) const { return {flat.data() + offset, shape, flat.device()}; }
};

class Conv2dRelu final : public Layer {
 public:
  Conv2dRelu(std::string name, int in_channels, int out_channels)
      : name_(std::move(name)), in_(in_channels), out_(out_channels) {}
  std::string name() const override { return name_; }
  Shape output_shape(Shape x) const override { return {x.n(), out_, x.h(), x.w()}; }
  void register_parameters(Registry& registry, std::vector<ParameterInfo>& infos) {
    weight_.shape = {out_, in_, 3, 3};
    bias_.shape = {out_};
    weight_.offset = registry.add(infos, name_ + ".weight", weight_.shape);
    bias_.offset = registry.add(infos, name_ + ".bias", bias_.shape);
  }
  void bind(Tensor& params, Tensor& grads) {
    w_ = weight_.in(params), b_ = bias_.in(params);
    dw_ = weight_.in(grads), db_ = bias_.in(grads);
  }
  void allocate(Backend& backend, Shape max_input, bool needs_input_gradient) override {
    y_ = backend.empty(output_shape(max_input));
    if (!gradient_through_relu_) dz_ = backend.empty(output_shape(max_input));
    if (needs_input_gradient) dx_ = backend.empty(max_input);
  }
  ConstTensorView forward(Backend& backend, ConstTensorView x, bool training, RngKey) override {
    PNEUMO_NVTX_RANGE("conv forward");
    x_ = x;
    training_ = training;
    TensorView y = batch_view(y_, output_shape(x.shape));
    backend.conv2d_forward(x, w_, b_, y, /*fuse_relu=*/true);
    return y;
  }
  // The layer after it is a fused block tail, whose backward already applies ReLU's gradient.
  void receive_gradient_through_relu() { gradient_through_relu_ = true; }
  // The block's batch-norm applies it after a training forward (its ReLU gate); after an
  // inference forward it does not, so that Grad-CAM reads the gradient of this layer's output.
  void receive_training_gradient_through_relu() { training_gradient_through_relu_ = true; }
  // After a training forward the bias gradient is summed by the batch-norm after (its dx_sums,
  // written into bias_gradient()), so this layer's backward does not read dz again for it.
  void bias_gradient_from_next_layer(bool from_next) { bias_from_next_ = from_next; }
  TensorView bias_gradient() const { return db_; }
  int64_t in_channels() const { return in_; }
  ConstTensorView backward(Backend& backend, ConstTensorView dy) override {
    PNEUMO_NVTX_RANGE("conv backward");
    ConstTensorView dz = dy;
    if (!gradient_through_relu_ && !(training_gradient_through_relu_ && training_)) {
      TensorView through = batch_view(dz_, dy.shape);
      backend.relu_backward(batch_view(y_, dy.shape), dy, through);
      dz = through;
    }
    // Both gradients in one call (under --precision bf16 CUDA converts dz once for the two).
    const TensorView dx = dx_.numel() == 0 ? TensorView{} : batch_view(dx_, x_.shape);
    backend.conv2d_backward(x_, dz, w_, dx, dw_, bias_from_next_ && training_ ? TensorView{} : db_);
    if (dx_.numel() == 0) return {};
    return dx;
  }

 private:
  std::string name_;
  int64_t in_, out_;
  Slot weight_, bias_;
  TensorView w_, b_, dw_, db_;
  Tensor y_, dz_, dx_;
  ConstTensorView x_;
  bool gradient_through_relu_ = false, training_gradient_through_relu_ = false, training_ = true;
  bool bias_from_next_ = false;
};

class Dropout final : public Layer {
 public:
  Dropout(std::string name, float rate, uint32_t stream_offset)
      : name_(std::move(name)), rate_(rate), stream_offset_(stream_offset) {}
  std::string name() const override { return name_; }
  Shape output_shape(Shape x) const override { return x; }
  void allocate(Backend& backend, Shape max_input, bool) override {
    y_ = backend.empty(max_input);
    dx_ = backend.empty(max_input);
  }
  ConstTensorView forward(Backend& backend, ConstTensorView x, bool training,
                          RngKey key) override {
    training_ = training;
    if (!training) return x;  // inverted dropout: identity at inference
    PNEUMO_NVTX_RANGE("dropout forward");
    key_ = key;
    key_.stream = static_cast<uint32_t>(RngStream::kDropout) + stream_offset_;
    // The model's key counts images (a rank's first image in the global batch); the op counts
    // elements.
    const int64_t first_element = int64_t{key.first} * (x.numel() / x.shape.n());
    PNEUMO_CHECK(first_element < (int64_t{1} << 32), name_, ": image ", key.first,
                 " of the global batch lies past the 32-bit dropout mask index");
    key_.first = static_cast<uint32_t>(first_element);
    TensorView y = batch_view(y_, x.shape);
    backend.dropout_forward(x, y, rate_, key_);
    return y;
  }
  float rate() const { return rate_; }
  // The batch-norm after it applies this layer's gradient with its ReLU gate (BatchNorm2d::
  // gate_relu); false again when that batch-norm is synchronised across ranks.
  void gradient_applied_by_next_layer(bool applied) { applied_by_next_ = applied; }
  ConstTensorView backward(Backend& backend, ConstTensorView dy) override {
    if (!training_ || applied_by_next_) return dy;  // the identity's gradient, or already applied
    PNEUMO_NVTX_RANGE("dropout backward");
    TensorView dx = batch_view(dx_, dy.shape);
    backend.dropout_backward(dy, dx, rate_, key_);
    return dx;
  }

 private:
  std::string name_;
  float rate_;
  uint32_t stream_offset_;
  RngKey key_;
  Tensor y_, dx_;
  bool training_ = true, applied_by_next_ = false;
};

class BatchNorm2d final : public Layer {
 public:
  BatchNorm2d(std::string name, int channels, double momentum, double epsilon)
      : name_(std::move(name)), channels_(channels), momentum_(momentum), epsilon_(epsilon) {}
  std::string name() const override { return name_; }
  Shape output_shape(Shape x) const override { return x; }
  void register_parameters(Registry& params, std::vector<ParameterInfo>& param_infos,
                           Registry& buffers, std::vector<ParameterInfo>& buffer_infos) {
    Shape c{channels_};
    gamma_ = {params.add(param_infos, name_ + ".weight", c), c};
    beta_ = {params.add(param_infos, name_ + ".bias", c), c};
    running_mean_ = {buffers.add(buffer_infos, name_ + ".running_mean", c), c};
    running_var_ = {buffers.add(buffer_infos, name_ + ".running_var", c), c};
  }
  void bind(Tensor& params, Tensor& grads, Tensor& buffers) {
    gamma_v_ = gamma_.in(params), beta_v_ = beta_.in(params);
    dgamma_ = gamma_.in(grads), dbeta_ = beta_.in(grads);
    mean_v_ = running_mean_.in(buffers), var_v_ = running_var_.in(buffers);
  }
  void allocate(Backend& backend, Shape max_input, bool) override {
    y_ = backend.empty(max_input);
    dx_ = backend.empty(max_input);
    saved_mean_ = backend.empty({channels_});
    saved_inv_std_ = backend.empty({channels_});
    zeros_ = backend.zeros({channels_});
  }
  // Statistics over every rank's shard of the batch (synchronised batch-norm) instead of this
  // rank's alone; nullptr: this rank's (as one process, or DDP without SyncBatchNorm).
  void synchronise_over(Communicator* group, Backend& backend) {
    group_ = group;
    // Synchronised, dx is computed again after the op and gated apart: the dropout before it
    // applies its own gradient.
    if (dropout_) dropout_->gradient_applied_by_next_layer(group_ == nullptr);
    if (conv_) conv_->bias_gradient_from_next_layer(group_ == nullptr);
    if (group_ && sums_.numel() == 0) {
      // Zeros, not empty(): the training op with average factor 1 computes 0 * old + batch, and
      // 0 * a NaN left in recycled memory is NaN (seen: a run whose data cache had just been
      // prepared, so the heap held its freed buffers, stopped on a NaN in conv1.weight).
      local_mean_ = backend.zeros({channels_});
      local_var_ = backend.zeros({channels_});
      batch_var_ = backend.empty({channels_});
      sums_ = backend.empty({2, channels_});
    }
  }
  ConstTensorView forward(Backend& backend, ConstTensorView x, bool training, RngKey) override {
    PNEUMO_NVTX_RANGE("batchnorm forward");
    x_ = x;
    training_ = training;
    TensorView y = batch_view(y_, x.shape);
    if (training && group_)
      forward_synchronised(backend, x, y);
    else if (training)
      backend.batchnorm_forward_training(x, gamma_v_, beta_v_, mean_v_, var_v_, 1.0 - momentum_,
                                         epsilon_, y, saved_mean_, saved_inv_std_);
    else
      backend.batchnorm_forward_inference(x, gamma_v_, beta_v_, mean_v_, var_v_, epsilon_, y);
    return y;
  }
  // x is a ReLU's output (`conv`'s, maybe through `dropout`): after a training forward the
  // backward returns the gradient through that ReLU (and the dropout) as well, and the
  // convolution skips its relu_backward (the dropout its backward); it also sums that gradient
  // into the convolution's bias gradient (more than one input channel: the one-channel weight
  // gradient sums it in its own pass). After an inference forward (Grad-CAM) it returns d its
  // input.
  void gate_relu(Dropout* dropout, Conv2dRelu* conv) {
    relu_gate_ = true;
    dropout_ = dropout;
    conv_ = conv->in_channels() > 1 ? conv : nullptr;
    if (dropout_) dropout_->gradient_applied_by_next_layer(group_ == nullptr);
    if (conv_) conv_->bias_gradient_from_next_layer(group_ == nullptr);
  }
  ConstTensorView backward(Backend& backend, ConstTensorView dy) override {
    PNEUMO_NVTX_RANGE("batchnorm backward");
    TensorView dx = batch_view(dx_, x_.shape);
    if (!training_) {
      // After an inference forward the layer is affine per channel: dx = dy gamma / sqrt(var +
      // eps), which is the inference forward itself applied to dy with mean 0 and beta 0
      // (explanations only: no parameter gradients).
      backend.batchnorm_forward_inference(dy, gamma_v_, zeros_, zeros_, var_v_, epsilon_, dx);
      return dx;
    }
    // In the op where the backend can (one pass fewer); synchronised, dx is computed again from
    // every rank's sums, then gated.
    const bool gate = relu_gate_ && !group_;
    backend.batchnorm_backward(x_, dy, gamma_v_, saved_mean_, saved_inv_std_, epsilon_, dx,
                               dgamma_, dbeta_, gate, gate && dropout_ ? dropout_->rate() : 0.0f,
                               gate && conv_ ? conv_->bias_gradient() : TensorView{});
    if (group_) {
      backward_synchronised(backend, dy, dx);
      if (relu_gate_) backend.relu_backward(x_, dx, dx);
    }
    return dx;
  }

 private:
  // This rank's mean and unbiased variance (the training op with average factor 1 leaves them in
  // its running-average outputs), gathered from every rank and combined in rank order in double
  // (Chan et al.'s pairwise update), so every rank normalises with the same global statistics and
  // updates the running averages as one process would.
  void forward_synchronised(Backend& backend, ConstTensorView x, TensorView y) {
    backend.batchnorm_forward_training(x, gamma_v_, beta_v_, local_mean_.view(), local_var_.view(),
                                       1.0, epsilon_, y, saved_mean_, saved_inv_std_);
    const auto c = static_cast<size_t>(channels_);
    const double count = static_cast<double>(x.numel() / channels_);
    std::vector<float> mean(c), var(c);
    local_mean_.copy_to_host(mean.data());
    local_var_.copy_to_host(var.data());
    std::vector<double> mine{count};
    mine.insert(mine.end(), mean.begin(), mean.end());
    mine.insert(mine.end(), var.begin(), var.end());
    const std::vector<double> all = group_->all_gather(mine);
    const size_t stride = 1 + 2 * c;
    std::vector<double> total_mean(c, 0.0), squares(c, 0.0);
    double total = 0.0;
    for (size_t r = 0; r * stride < all.size(); ++r) {
      const double* rank = all.data() + r * stride;
      const double n = rank[0];
      for (size_t k = 0; k < c; ++k) {
        const double delta = rank[1 + k] - total_mean[k];
        total_mean[k] += delta * n / (total + n);
        squares[k] += rank[1 + c + k] * (n - 1.0) + delta * delta * total * n / (total + n);
      }
      total += n;
    }
    count_ = total;
    std::vector<float> running_mean(c), running_var(c), batch_mean(c), batch_var(c), inv_std(c);
    copy_bytes(running_mean.data(), Device::Cpu, mean_v_.data, mean_v_.device, c * sizeof(float));
    copy_bytes(running_var.data(), Device::Cpu, var_v_.data, var_v_.device, c * sizeof(float));
    const double factor = 1.0 - momentum_;
    for (size_t k = 0; k < c; ++k) {
      batch_mean[k] = static_cast<float>(total_mean[k]);
      batch_var[k] = static_cast<float>(squares[k] / total);
      inv_std[k] = static_cast<float>(1.0 / std::sqrt(squares[k] / total + epsilon_));
      running_mean[k] = static_cast<float>((1.0 - factor) * running_mean[k] + factor * total_mean[k]);
      running_var[k] =
          static_cast<float>((1.0 - factor) * running_var[k] + factor * squares[k] / (total - 1.0));
    }
    const size_t bytes = c * sizeof(float);
    const Device device = backend.device();
    copy_bytes(saved_mean_.data(), device, batch_mean.data(), Device::Cpu, bytes);
    copy_bytes(saved_inv_std_.data(), device, inv_std.data(), Device::Cpu, bytes);
    copy_bytes(batch_var_.data(), device, batch_var.data(), Device::Cpu, bytes);
    copy_bytes(mean_v_.data, device, running_mean.data(), Device::Cpu, bytes);
    copy_bytes(var_v_.data, device, running_var.data(), Device::Cpu, bytes);
    backend.batchnorm_forward_inference(x, gamma_v_, beta_v_, saved_mean_.view(),
                                        batch_var_.view(), epsilon_, y);
  }
  // dgamma and dbeta stay this rank's sums (the gradient all-reduce adds them up with the rest);
  // dx needs them over every rank now.
  void backward_synchronised(Backend& backend, ConstTensorView dy, TensorView dx) {
    const auto c = static_cast<size_t>(channels_);
    std::vector<float> host(2 * c);
    copy_bytes(host.data(), Device::Cpu, dbeta_.data, dbeta_.device, c * sizeof(float));
    copy_bytes(host.data() + c, Device::Cpu, dgamma_.data, dgamma_.device, c * sizeof(float));
    std::vector<double> sums(host.begin(), host.end());
    group_->all_reduce_sum(sums.data(), static_cast<int>(sums.size()));
    for (size_t k = 0; k < 2 * c; ++k) host[k] = static_cast<float>(sums[k]);
    copy_bytes(sums_.data(), backend.device(), host.data(), Device::Cpu, host.size() * sizeof(float));
    backend.batchnorm_backward_input(x_, dy, gamma_v_, saved_mean_.view(), saved_inv_std_.view(),
                                     sums_.view(), count_, dx);
  }

  std::string name_;
  int64_t channels_;
  double momentum_, epsilon_;
  Slot gamma_, beta_, running_mean_, running_var_;
  TensorView gamma_v_, beta_v_, dgamma_, dbeta_, mean_v_, var_v_;
  Tensor y_, dx_, saved_mean_, saved_inv_std_, zeros_;
  Communicator* group_ = nullptr;
  Dropout* dropout_ = nullptr;  // between the ReLU and this layer, its gradient folded in
  Conv2dRelu* conv_ = nullptr;  // whose bias gradient this layer's backward sums
  Tensor local_mean_, local_var_, batch_var_, sums_;
  double count_ = 0.0;  // values per channel over every rank in the last training forward
  ConstTensorView x_;
  bool training_ = true;
  bool relu_gate_ = false;
};

// A block tail's settings for one forward: batch-norm's, and in training with a rate the Dropout
// layer's key: stream kDropout + the block's dropout index, and the image offset of a
// data-parallel shard counted in elements of the activation (`per_image` of them an image).
BlockTailSettings tail_settings(const std::string& layer, bool training, float rate,
                                uint32_t stream_offset, double momentum, double epsilon,
                                RngKey key, int64_t per_image) {
  BlockTailSettings s;
  s.training = training;
  s.average_factor = 1.0 - momentum;
  s.epsilon = epsilon;
  if (training && rate > 0.0f) {
    s.dropout_rate = rate;
    s.dropout_key = key;
    s.dropout_key.stream = static_cast<uint32_t>(RngStream::kDropout) + stream_offset;
    const int64_t first_element = int64_t{key.first} * per_image;
    PNEUMO_CHECK(first_element < (int64_t{1} << 32), layer, ": image ", key.first,
                 " of the global batch lies past the 32-bit dropout mask index");
    s.dropout_key.first = static_cast<uint32_t>(first_element);
  }
  return s;
}

// Dropout -> batch-norm -> max pooling of one block as one op (Backend::block_tail_forward,
// pneumo/ops/block_tail.hpp), for ModelConfig::fused_block_tails: the same parameters, buffers
// and random streams as the unfused Dropout, BatchNorm2d and MaxPool2d layers (named "bnK.*"
// as theirs, so checkpoints do not change), without their intermediate tensors. Its backward
// returns the gradient before the convolution's ReLU. As the stem (block 1 with one input
// channel: Backend::stem_forward), it is the convolution too, registers "conv1.*" first, and
// recomputes the convolution's output instead of storing it; its backward ends in the
// convolution's gradients.
class BlockTail final : public Layer {
 public:
  BlockTail(const std::string& id, int in_channels, int channels, float rate,
            uint32_t stream_offset, double momentum, double epsilon, bool stem)
      : name_(stem ? "stem" : "tail" + id), conv_name_("conv" + id), norm_name_("bn" + id),
        in_channels_(in_channels), channels_(channels), rate_(rate),
        stream_offset_(stream_offset), momentum_(momentum), epsilon_(epsilon), stem_(stem) {}
  std::string name() const override { return name_; }
  bool owns(const std::string& parameter) const override {
    return parameter.rfind(norm_name_ + ".", 0) == 0 ||
           (stem_ && parameter.rfind(conv_name_ + ".", 0) == 0);
  }
  Shape output_shape(Shape x) const override {
    return {x.n(), channels_, (x.h() + 1) / 2, (x.w() + 1) / 2};
  }
  void register_parameters(Registry& params, std::vector<ParameterInfo>& param_infos,
                           Registry& buffers, std::vector<ParameterInfo>& buffer_infos) {
    Shape c{channels_};
    if (stem_) {
      weight_ = {params.add(param_infos, conv_name_ + ".weight", {channels_, in_channels_, 3, 3}),
                 {channels_, in_channels_, 3, 3}};
      bias_ = {params.add(param_infos, conv_name_ + ".bias", c), c};
    }
    gamma_ = {params.add(param_infos, norm_name_ + ".weight", c), c};
    beta_ = {params.add(param_infos, norm_name_ + ".bias", c), c};
    running_mean_ = {buffers.add(buffer_infos, norm_name_ + ".running_mean", c), c};
    running_var_ = {buffers.add(buffer_infos, norm_name_ + ".running_var", c), c};
  }
  void bind(Tensor& params, Tensor& grads, Tensor& buffers) {
    if (stem_) {
      w_ = weight_.in(params), b_ = bias_.in(params);
      dw_ = weight_.in(grads), db_ = bias_.in(grads);
    }
    gamma_v_ = gamma_.in(params), beta_v_ = beta_.in(params);
    dgamma_ = gamma_.in(grads), dbeta_ = beta_.in(grads);
    mean_v_ = running_mean_.in(buffers), var_v_ = running_var_.in(buffers);
  }
  void allocate(Backend& backend, Shape max_input, bool) override {
    y_ = backend.empty(output_shape(max_input));
    if (!stem_) da_ = backend.empty(max_input);
    saved_mean_ = backend.empty({channels_});
    saved_inv_std_ = backend.empty({channels_});
  }
  ConstTensorView forward(Backend& backend, ConstTensorView x, bool training,
                          RngKey key) override {
    PNEUMO_NVTX_RANGE(stem_ ? "stem forward" : "block tail forward");
    x_ = x;
    settings_ = tail_settings(name_, training, rate_, stream_offset_, momentum_, epsilon_, key,
                              channels_ * x.shape.h() * x.shape.w());
    TensorView y = batch_view(y_, output_shape(x.shape));
    if (stem_)
      backend.stem_forward(x, w_, b_, gamma_v_, beta_v_, mean_v_, var_v_, settings_, y,
                           saved_mean_, saved_inv_std_);
    else
      backend.block_tail_forward(x, gamma_v_, beta_v_, mean_v_, var_v_, settings_, y,
                                 saved_mean_, saved_inv_std_);
    return y;
  }
  ConstTensorView backward(Backend& backend, ConstTensorView dy) override {
    PNEUMO_NVTX_RANGE(stem_ ? "stem backward" : "block tail backward");
    if (stem_) {
      backend.stem_backward(x_, dy, w_, b_, gamma_v_, beta_v_, saved_mean_, saved_inv_std_,
                            settings_, dw_, db_, dgamma_, dbeta_);
      return {};  // the first layer: no input gradient
    }
    TensorView da = batch_view(da_, x_.shape);
    backend.block_tail_backward(x_, dy, gamma_v_, beta_v_, saved_mean_, saved_inv_std_,
                                settings_, da, dgamma_, dbeta_);
    return da;
  }

 private:
  std::string name_, conv_name_, norm_name_;
  int64_t in_channels_, channels_;
  float rate_;
  uint32_t stream_offset_;
  double momentum_, epsilon_;
  bool stem_;
  Slot weight_, bias_, gamma_, beta_, running_mean_, running_var_;
  TensorView w_, b_, dw_, db_, gamma_v_, beta_v_, dgamma_, dbeta_, mean_v_, var_v_;
  Tensor y_, da_, saved_mean_, saved_inv_std_;
  BlockTailSettings settings_;
  ConstTensorView x_;
};

// Blocks 2..5 (every block after the stem) as one bfloat16 channels-last stretch, for
// ModelConfig::bf16_activations: each block's convolution (conv2d_forward_bf16) and fused tail
// (block_tail_forward_bf16) read and write bfloat16 channels-last tensors, so that nothing is
// converted between them; the stretch converts its float32 NCHW input once on the way in and its
// output once on the way out (the head reads float32 NCHW), and the same backward. The
// parameters, buffers and random streams of the blocks it replaces (named convK.* and bnK.*, in
// their order): checkpoints do not change. One layer, because activations between layers are
// float32 NCHW views.
class Bf16Blocks final : public Layer {
 public:
  struct Block {
    std::string id;  // "2"
    int64_t in_channels, channels;
    float rate;
    uint32_t stream_offset;
  };
  Bf16Blocks(std::vector<Block> blocks, double momentum, double epsilon)
      : blocks_(std::move(blocks)), momentum_(momentum), epsilon_(epsilon),
        name_("blocks" + blocks_.front().id + "-" + blocks_.back().id), parts_(blocks_.size()) {}
  std::string name() const override { return name_; }
  bool owns(const std::string& parameter) const override {
    for (const Block& b : blocks_)
      if (parameter.rfind("conv" + b.id + ".", 0) == 0 || parameter.rfind("bn" + b.id + ".", 0) == 0)
        return true;
    return false;
  }
  Shape output_shape(Shape x) const override {
    for (const Block& b : blocks_) x = {x.n(), b.channels, (x.h() + 1) / 2, (x.w() + 1) / 2};
    return x;
  }
  void register_parameters(Registry& params, std::vector<ParameterInfo>& param_infos,
                           Registry& buffers, std::vector<ParameterInfo>& buffer_infos) {
    for (size_t j = 0; j < blocks_.size(); ++j) {
      const Block& b = blocks_[j];
      Part& p = parts_[j];
      const Shape w{b.channels, b.in_channels, 3, 3}, c{b.channels};
      p.weight = {params.add(param_infos, "conv" + b.id + ".weight", w), w};
      p.bias = {params.add(param_infos, "conv" + b.id + ".bias", c), c};
      p.gamma = {params.add(param_infos, "bn" + b.id + ".weight", c), c};
      p.beta = {params.add(param_infos, "bn" + b.id + ".bias", c), c};
      p.running_mean = {buffers.add(buffer_infos, "bn" + b.id + ".running_mean", c), c};
      p.running_var = {buffers.add(buffer_infos, "bn" + b.id + ".running_var", c), c};
    }
  }
  void bind(Tensor& params, Tensor& grads, Tensor& buffers) {
    for (Part& p : parts_) {
      p.w = p.weight.in(params), p.b = p.bias.in(params);
      p.dw = p.weight.in(grads), p.db = p.bias.in(grads);
      p.gamma_v = p.gamma.in(params), p.beta_v = p.beta.in(params);
      p.dgamma = p.gamma.in(grads), p.dbeta = p.beta.in(grads);
      p.mean_v = p.running_mean.in(buffers), p.var_v = p.running_var.in(buffers);
    }
  }
  void allocate(Backend& backend, Shape max_input, bool) override {
    Shape x = max_input;
    for (size_t j = 0; j < blocks_.size(); ++j) {
      Part& p = parts_[j];
      const Shape z{x.n(), blocks_[j].channels, x.h(), x.w()};
      const Shape y{x.n(), blocks_[j].channels, (x.h() + 1) / 2, (x.w() + 1) / 2};
      p.in = Bits(x, backend.device());  // block 0's: the converted input
      p.z = Bits(z, backend.device());
      p.dz = Bits(z, backend.device());
      p.dx = Bits(x, backend.device());
      p.saved_mean = backend.empty({blocks_[j].channels});
      p.saved_inv_std = backend.empty({blocks_[j].channels});
      x = y;
    }
    out_ = Bits(x, backend.device());
    dout_ = Bits(x, backend.device());
    y_ = backend.empty(x);
    dx_ = backend.empty(max_input);
  }
  ConstTensorView forward(Backend& backend, ConstTensorView x, bool training,
                          RngKey key) override {
    PNEUMO_NVTX_RANGE("bf16 blocks forward");
    input_shape_ = x.shape;
    backend.to_bf16_channels_last(x, parts_[0].in.view(x.shape));
    Shape in = x.shape;
    for (size_t j = 0; j < blocks_.size(); ++j) {
      const Block& b = blocks_[j];
      Part& p = parts_[j];
      const Shape z{in.n(), b.channels, in.h(), in.w()};
      const Shape y{in.n(), b.channels, (in.h() + 1) / 2, (in.w() + 1) / 2};
      p.settings = tail_settings("tail" + b.id, training, b.rate, b.stream_offset, momentum_,
                                 epsilon_, key, b.channels * in.h() * in.w());
      const Bf16NhwcView out = j + 1 < blocks_.size() ? parts_[j + 1].in.view(y) : out_.view(y);
      backend.conv2d_forward_bf16(p.in.view(in), p.w, p.z.view(z));
      backend.block_tail_forward_bf16(p.z.view(z), p.b, p.gamma_v, p.beta_v, p.mean_v, p.var_v,
                                      p.settings, out, p.saved_mean, p.saved_inv_std);
      p.output = y;
      in = y;
    }
    TensorView y = batch_view(y_, in);
    backend.from_bf16_channels_last(out_.view(in), y);
    return y;
  }
  ConstTensorView backward(Backend& backend, ConstTensorView dy) override {
    PNEUMO_NVTX_RANGE("bf16 blocks backward");
    backend.to_bf16_channels_last(dy, dout_.view(dy.shape));
    Bf16NhwcView d = dout_.view(dy.shape);  // the gradient of block j's output
    for (size_t j = blocks_.size(); j-- > 0;) {
      Part& p = parts_[j];
      const Shape in = j == 0 ? input_shape_ : parts_[j - 1].output;
      const Shape z{in.n(), blocks_[j].channels, in.h(), in.w()};
      backend.block_tail_backward_bf16(p.z.view(z), p.b, d, p.gamma_v, p.beta_v, p.saved_mean,
                                       p.saved_inv_std, p.settings, p.dz.view(z), p.db, p.dgamma,
                                       p.dbeta);
      backend.conv2d_backward_bf16(p.in.view(in), p.dz.view(z), p.w, p.dx.view(in), p.dw);
      d = p.dx.view(in);
    }
    TensorView dx = batch_view(dx_, input_shape_);
    backend.from_bf16_channels_last(d, dx);
    return dx;
  }

 private:
  // bfloat16 channels-last storage for a tensor of up to the allocated shape's elements.
  struct Bits {
    Array<uint16_t> bits;
    Bits() = default;
    Bits(const Shape& max, Device device) : bits(max.numel(), device) {}
    Bf16NhwcView view(const Shape& shape) {
      PNEUMO_CHECK(shape.numel() <= bits.size(), "bf16 blocks: ", shape.str(),
                   " exceeds the buffer allocated");
      return {bits.data(), shape, bits.device()};
    }
  };
  struct Part {
    Slot weight, bias, gamma, beta, running_mean, running_var;
    TensorView w, b, dw, db, gamma_v, beta_v, dgamma, dbeta, mean_v, var_v;
    Bits in, z, dz, dx;  // in: this block's input (block 0: the converted input)
    Tensor saved_mean, saved_inv_std;
    BlockTailSettings settings;
    Shape output;  // of the last forward
  };

  std::vector<Block> blocks_;
  double momentum_, epsilon_;
  std::string name_;
  std::vector<Part> parts_;
  Bits out_, dout_;
  Tensor y_, dx_;
  Shape input_shape_;
};

class MaxPool2d final : public Layer {
 public:
  explicit MaxPool2d(std::string name) : name_(std::move(name)) {}
  std::string name() const override { return name_; }
  Shape output_shape(Shape x) const override {
    return {x.n(), x.c(), (x.h() + 1) / 2, (x.w() + 1) / 2};
  }
  void allocate(Backend& backend, Shape max_input, bool) override {
    y_ = backend.empty(output_shape(max_input));
    dx_ = backend.empty(max_input);
  }
  ConstTensorView forward(Backend& backend, ConstTensorView x, bool, RngKey) override {
    PNEUMO_NVTX_RANGE("maxpool forward");
    x_ = x;
    TensorView y = batch_view(y_, output_shape(x.shape));
    backend.maxpool2d_forward(x, y);
    return y;
  }
  ConstTensorView backward(Backend& backend, ConstTensorView dy) override {
    PNEUMO_NVTX_RANGE("maxpool backward");
    TensorView dx = batch_view(dx_, x_.shape);
    backend.maxpool2d_backward(x_, batch_view(y_, dy.shape), dy, dx);
    return dx;
  }

 private:
  std::string name_;
  Tensor y_, dx_;
  ConstTensorView x_;
};

// Global average pooling (N, C, H, W) -> (N, C): the GAP head's first layer.
class GlobalAveragePool final : public Layer {
 public:
  std::string name() const override { return "gap"; }
  Shape output_shape(Shape x) const override { return {x[0], x[1]}; }
  void allocate(Backend& backend, Shape max_input, bool) override {
    y_ = backend.empty(output_shape(max_input));
    dx_ = backend.empty(max_input);
  }
  ConstTensorView forward(Backend& backend, ConstTensorView x, bool, RngKey) override {
    input_shape_ = x.shape;
    TensorView y = batch_view(y_, output_shape(x.shape));
    backend.global_avgpool_forward(x, y);
    return y;
  }
  ConstTensorView backward(Backend& backend, ConstTensorView dy) override {
    TensorView dx = batch_view(dx_, input_shape_);
    backend.global_avgpool_backward(dy, dx);
    return dx;
  }

 private:
  Tensor y_, dx_;
  Shape input_shape_;
};

// Flatten (N, C, H, W) -> (N, C*H*W) in C, H, W order (PyTorch's flatten): a reshape of views.
class Flatten final : public Layer {
 public:
  std::string name() const override { return "flatten"; }
  Shape output_shape(Shape x) const override { return {x[0], x.numel() / x[0]}; }
  void allocate(Backend&, Shape, bool) override {}
  ConstTensorView forward(Backend&, ConstTensorView x, bool, RngKey) override {
    input_shape_ = x.shape;
    return x.reshaped(output_shape(x.shape));
  }
  ConstTensorView backward(Backend&, ConstTensorView dy) override {
    return dy.reshaped(input_shape_);
  }

 private:
  Shape input_shape_;
};

class Dense final : public Layer {
 public:
  Dense(std::string name, int in_features, int out_features, bool relu)
      : name_(std::move(name)), in_(in_features), out_(out_features), relu_(relu) {}
  std::string name() const override { return name_; }
  Shape output_shape(Shape x) const override { return {x[0], out_}; }
  void register_parameters(Registry& registry, std::vector<ParameterInfo>& infos) {
    weight_.shape = {out_, in_};
    bias_.shape = {out_};
    weight_.offset = registry.add(infos, name_ + ".weight", weight_.shape);
    bias_.offset = registry.add(infos, name_ + ".bias", bias_.shape);
  }
  void bind(Tensor& params, Tensor& grads) {
    w_ = weight_.in(params), b_ = bias_.in(params);
    dw_ = weight_.in(grads), db_ = bias_.in(grads);
  }
  void allocate(Backend& backend, Shape max_input, bool) override {
    y_ = backend.empty(output_shape(max_input));
    dz_ = backend.empty(output_shape(max_input));
    dx_ = backend.empty(max_input);
  }
  ConstTensorView forward(Backend& backend, ConstTensorView x, bool, RngKey) override {
    PNEUMO_NVTX_RANGE("dense forward");
    PNEUMO_CHECK(x.shape.rank() == 2 && x.shape[1] == in_, name_, " expects (N, ", in_,
                 ") inputs, got ", x.shape.str());
    x_ = x;
    TensorView y = batch_view(y_, output_shape(x.shape));
    backend.dense_forward(x, w_, b_, y);
    if (relu_) backend.relu_forward(y, y);
    return y;
  }
  ConstTensorView backward(Backend& backend, ConstTensorView dy) override {
    PNEUMO_NVTX_RANGE("dense backward");
    ConstTensorView dz = dy;
    if (relu_) {
      TensorView relu_grad = batch_view(dz_, dy.shape);
      backend.relu_backward(batch_view(y_, dy.shape), dy, relu_grad);
      dz = relu_grad;
    }
    TensorView dx = batch_view(dx_, x_.shape);
    backend.dense_backward(x_, w_, dz, dx, dw_, db_);
    return dx;
  }

 private:
  std::string name_;
  int64_t in_, out_;
  bool relu_;
  Slot weight_, bias_;
  TensorView w_, b_, dw_, db_;
  Tensor y_, dz_, dx_;
  ConstTensorView x_;
};

// Glorot (Xavier) uniform: U(-l, l), l = sqrt(6 / (fan_in + fan_out)); Keras' default.
void glorot_uniform(std::vector<float>& host, const ParameterInfo& info, int64_t fan_in,
                    int64_t fan_out, uint64_t seed) {
  const float limit = static_cast<float>(std::sqrt(6.0 / static_cast<double>(fan_in + fan_out)));
  RngKey key = make_key(seed, RngStream::kInit);
  for (int64_t i = 0; i < info.shape.numel(); ++i) {
    const auto index = static_cast<uint32_t>(info.offset + i);
    host[static_cast<size_t>(info.offset + i)] =
        uniform_in(philox4x32(key, index).v[0], -limit, limit);
  }
}

}  // namespace

const char* model_head_name(ModelHead head) {
  return head == ModelHead::GlobalAverage ? "gap" : "flatten";
}


std::string architecture_name(ModelHead head) {
  return head == ModelHead::GlobalAverage ? "seed-cnn-v1-gap" : "seed-cnn-v1";
}

// What the constructor gathers while it lays out the layers, block by block: the flat buffers'
// registries, how to point each layer holding parameters into them once they exist, and the
// running input shape (channels, side) of the next block.
struct Model::Assembly {
  Registry params, buffers;
  std::vector<std::function<void(Tensor& parameters, Tensor& gradients, Tensor& buffers)>> binds;
  std::vector<Layer*> norms;                   // the unfused chain's BatchNorm2d layers
  std::vector<Bf16Blocks::Block> bf16_blocks;  // bf16_activations: every block after the stem
  int in_channels = 1;
  int64_t spatial = 0;
  uint32_t dropout_index = 0;  // each dropout's place in the random streams, in layer order
};

Model::Model(Backend& backend, ModelConfig config, int max_batch)
    : backend_(backend), config_(std::move(config)), max_batch_(max_batch) {
  config_.architecture = architecture_name(config_.head);
  PNEUMO_CHECK(max_batch > 0, "batch size must be positive, got ", max_batch);
  PNEUMO_CHECK(config_.input_size >= 1, "input size must be positive, got ", config_.input_size);
  PNEUMO_CHECK(config_.channels.size() == config_.conv_dropout.size(),
               "one dropout rate per convolution block is needed (", config_.channels.size(),
               " blocks, ", config_.conv_dropout.size(), " rates)");
  PNEUMO_CHECK(!config_.bf16_activations || config_.fused_block_tails,
               "bfloat16 activations run between fused block tails: they need fused_block_tails");
  Assembly assembly;
  assembly.spatial = config_.input_size;
  for (size_t block = 0; block < config_.channels.size(); ++block) add_block(assembly, block);
  if (!assembly.bf16_blocks.empty()) add_bf16_stretch(assembly);
  add_head(assembly);
  bind_flat_buffers(assembly);
  find_final_gradients();
  Shape shape{max_batch, 1, config_.input_size, config_.input_size};
  for (size_t i = 0; i < layers_.size(); ++i) {
    layers_[i]->allocate(backend_, shape, /*needs_input_gradient=*/i > 0);
    shape = layers_[i]->output_shape(shape);
  }
}

// Convolution block `block` (0-based): the stem or a fused tail, the unfused chain (conv, dropout,
// batch-norm, pool), or, with bf16 activations, a place in the stretch added after the loop.
void Model::add_block(Assembly& a, size_t block) {
  const std::string id = std::to_string(block + 1);
  const float rate = config_.conv_dropout[block];
  const int channels = config_.channels[block];
  const uint32_t stream = rate > 0.0f ? a.dropout_index++ : 0;
  // With fused tails, block 1 on the one-channel image is the stem (its convolution inside).
  const bool stem = config_.fused_block_tails && block == 0 && a.in_channels == 1;
  auto add_conv = [&] {
    auto conv = std::make_unique<Conv2dRelu>("conv" + id, a.in_channels, channels);
    conv->register_parameters(a.params, parameter_infos_);
    a.binds.push_back([layer = conv.get()](Tensor& p, Tensor& g, Tensor&) { layer->bind(p, g); });
    Conv2dRelu* raw = conv.get();
    layers_.push_back(std::move(conv));
    return raw;
  };
  if (config_.bf16_activations && !stem) {
    a.bf16_blocks.push_back({id, a.in_channels, channels, rate, stream});
  } else if (config_.fused_block_tails) {
    if (!stem) {
      add_conv()->receive_gradient_through_relu();
    }
    auto tail = std::make_unique<BlockTail>(id, a.in_channels, channels, rate, stream,
                                            config_.batchnorm_momentum, config_.batchnorm_epsilon,
                                            stem);
    tail->register_parameters(a.params, parameter_infos_, a.buffers, buffer_infos_);
    a.binds.push_back([layer = tail.get()](Tensor& p, Tensor& g, Tensor& b) { layer->bind(p, g, b); });
    layers_.push_back(std::move(tail));
  } else {
    Conv2dRelu* conv = add_conv();
    if (config_.relu_gate_in_batchnorm) conv->receive_training_gradient_through_relu();
    Dropout* dropout = nullptr;
    if (rate > 0.0f) {
      auto owned = std::make_unique<Dropout>("dropout" + id, rate, stream);
      dropout = owned.get();
      layers_.push_back(std::move(owned));
    }
    auto norm = std::make_unique<BatchNorm2d>("bn" + id, channels, config_.batchnorm_momentum,
                                              config_.batchnorm_epsilon);
    if (config_.relu_gate_in_batchnorm) norm->gate_relu(dropout, conv);
    norm->register_parameters(a.params, parameter_infos_, a.buffers, buffer_infos_);
    a.binds.push_back([layer = norm.get()](Tensor& p, Tensor& g, Tensor& b) { layer->bind(p, g, b); });
    a.norms.push_back(norm.get());
    layers_.push_back(std::move(norm));
    layers_.push_back(std::make_unique<MaxPool2d>("pool" + id));
  }
  a.in_channels = channels;
  a.spatial = (a.spatial + 1) / 2;
}

void Model::add_bf16_stretch(Assembly& a) {
  auto stretch = std::make_unique<Bf16Blocks>(std::move(a.bf16_blocks), config_.batchnorm_momentum,
                                              config_.batchnorm_epsilon);
  stretch->register_parameters(a.params, parameter_infos_, a.buffers, buffer_infos_);
  a.binds.push_back([layer = stretch.get()](Tensor& p, Tensor& g, Tensor& b) { layer->bind(p, g, b); });
  layers_.push_back(std::move(stretch));
}

// Flatten (or global average pooling), fc1 with ReLU, the hidden dropout, fc2 to one logit.
void Model::add_head(Assembly& a) {
  const bool gap = config_.head == ModelHead::GlobalAverage;
  if (gap)
    layers_.push_back(std::make_unique<GlobalAveragePool>());
  else
    layers_.push_back(std::make_unique<Flatten>());
  const int flat =
      static_cast<int>(gap ? a.in_channels : a.in_channels * a.spatial * a.spatial);
  auto add_dense = [&](const std::string& name, int in, int out, bool relu) {
    auto dense = std::make_unique<Dense>(name, in, out, relu);
    dense->register_parameters(a.params, parameter_infos_);
    a.binds.push_back([layer = dense.get()](Tensor& p, Tensor& g, Tensor&) { layer->bind(p, g); });
    layers_.push_back(std::move(dense));
  };
  add_dense("fc1", flat, config_.hidden, /*relu=*/true);
  if (config_.hidden_dropout > 0.0f)
    layers_.push_back(
        std::make_unique<Dropout>("dropout_fc", config_.hidden_dropout, a.dropout_index++));
  add_dense("fc2", config_.hidden, 1, /*relu=*/false);
}

void Model::bind_flat_buffers(Assembly& a) {
  batchnorms_ = a.norms;
  parameters_ = backend_.zeros({a.params.size()});
  gradients_ = backend_.zeros({a.params.size()});
  buffers_ = backend_.zeros({a.buffers.size()});
  for (const auto& bind : a.binds) bind(parameters_, gradients_, buffers_);
}

// A parameter named "<layer>.<tensor>" belongs to that layer. Layers register theirs in layer
// order, so a layer's backward leaves final everything from its first parameter on once the
// later layers' have run (checked: the offsets grow with the layer index).
void Model::find_final_gradients() {
  gradients_final_from_.assign(layers_.size(), gradients_.numel());
  size_t owner = 0;
  for (const ParameterInfo& info : parameter_infos_) {
    while (owner < layers_.size() && !layers_[owner]->owns(info.name)) ++owner;
    PNEUMO_CHECK(owner < layers_.size(), "parameter ", info.name,
                 " does not follow the layer order of the flat buffer");
    gradients_final_from_[owner] = std::min(gradients_final_from_[owner], info.offset);
  }
  for (size_t i = layers_.size() - 1; i-- > 0;)
    gradients_final_from_[i] = std::min(gradients_final_from_[i], gradients_final_from_[i + 1]);
}

Model::~Model() = default;

void Model::synchronise_batchnorm(Communicator* group) {
  PNEUMO_CHECK(!group || !config_.fused_block_tails,
               "synchronised batch-norm needs the unfused block tails (its statistics cross "
               "ranks between the ops the fused tail joins): leave --fused-block-tails off");
  for (Layer* norm : batchnorms_) static_cast<BatchNorm2d*>(norm)->synchronise_over(group, backend_);
  batchnorm_group_ = group;
}

void Model::initialize(uint64_t seed) {
  std::vector<float> host(static_cast<size_t>(parameters_.numel()), 0.0f);
  for (const auto& info : parameter_infos_) {
    const bool is_weight = info.name.size() > 7 && info.name.substr(info.name.size() - 7) == ".weight";
    if (!is_weight) continue;  // biases and beta start at 0
    if (info.name.rfind("bn", 0) == 0) {
      for (int64_t i = 0; i < info.shape.numel(); ++i)
        host[static_cast<size_t>(info.offset + i)] = 1.0f;  // gamma
    } else if (info.shape.rank() == 4) {  // conv (K, C, 3, 3)
      const int64_t receptive = info.shape[2] * info.shape[3];
      glorot_uniform(host, info, info.shape[1] * receptive, info.shape[0] * receptive, seed);
    } else {  // dense (out, in)
      glorot_uniform(host, info, info.shape[1], info.shape[0], seed);
    }
  }
  parameters_.copy_from(ConstTensorView(host.data(), parameters_.shape(), Device::Cpu));
  std::vector<float> stats(static_cast<size_t>(buffers_.numel()), 0.0f);
  for (const auto& info : buffer_infos_)
    if (info.name.find("running_var") != std::string::npos)
      for (int64_t i = 0; i < info.shape.numel(); ++i)
        stats[static_cast<size_t>(info.offset + i)] = 1.0f;
  buffers_.copy_from(ConstTensorView(stats.data(), buffers_.shape(), Device::Cpu));
  zero_bytes(gradients_.data(), gradients_.device(),
             static_cast<size_t>(gradients_.numel()) * sizeof(float));
}

ConstTensorView Model::forward(ConstTensorView input, bool training, RngKey dropout_key) {
  PNEUMO_NVTX_RANGE(training ? "model forward (train)" : "model forward (eval)");
  PNEUMO_CHECK(input.shape.rank() == 4 && input.shape.c() == 1 &&
                   input.shape.h() == config_.input_size && input.shape.w() == config_.input_size,
               "model input must be (N, 1, ", config_.input_size, ", ", config_.input_size,
               "), got ", input.shape.str());
  PNEUMO_CHECK(input.shape.n() >= 1 && input.shape.n() <= max_batch_, "batch of ",
               input.shape.n(), " images exceeds the model's maximum batch ", max_batch_);
  PNEUMO_CHECK(input.device == backend_.device(), "model input is on ", to_string(input.device),
               " but the backend runs on ", to_string(backend_.device()));
  ConstTensorView x = input;
  last_outputs_.resize(layers_.size());
  for (size_t i = 0; i < layers_.size(); ++i) {
    last_outputs_[i] = x = layers_[i]->forward(backend_, x, training, dropout_key);
    if (layer_marker_) layer_marker_(i, false);
  }
  return x;
}

ConstTensorView Model::forward_from(size_t layer, ConstTensorView activation) {
  PNEUMO_CHECK(layer + 1 < layers_.size(), "forward_from: layer ", layer, " of ", layers_.size());
  Shape expected{1, 1, config_.input_size, config_.input_size};
  for (size_t i = 0; i <= layer; ++i) expected = layers_[i]->output_shape(expected);
  PNEUMO_CHECK(activation.shape == with_batch(expected, activation.shape[0]) &&
                   activation.shape[0] <= max_batch_ && activation.device == backend_.device(),
               "forward_from: layer ", layers_[layer]->name(), " outputs ",
               with_batch(expected, activation.shape[0]).str(), " on ",
               to_string(backend_.device()), ", got ", activation.shape.str());
  ConstTensorView x = activation;
  last_outputs_.resize(layers_.size());
  for (size_t i = layer + 1; i < layers_.size(); ++i)
    last_outputs_[i] = x = layers_[i]->forward(backend_, x, /*training=*/false, {});
  return x;
}

size_t Model::layer_index(const std::string& name) const {
  for (size_t i = 0; i < layers_.size(); ++i)
    if (layers_[i]->name() == name) return i;
  std::string names;
  for (const auto& layer : layers_) names += (names.empty() ? "" : ", ") + layer->name();
  throw Error("no layer named '" + name + "' (layers: " + names + ")");
}

void Model::backward(ConstTensorView dlogits, size_t down_to,
                     const GradientsFinal& gradients_final) {
  PNEUMO_NVTX_RANGE("model backward");
  PNEUMO_CHECK(down_to < layers_.size(), "backward down to layer ", down_to, " of ",
               layers_.size());
  ConstTensorView dy = dlogits;
  last_input_gradients_.resize(layers_.size());
  for (size_t i = layers_.size(); i-- > down_to;) {
    last_input_gradients_[i] = dy = layers_[i]->backward(backend_, dy);
    if (layer_marker_) layer_marker_(i, true);
    if (gradients_final) gradients_final(gradients_final_from_[i]);
  }
}

std::string Model::layer_name(size_t index) const { return layers_.at(index)->name(); }

namespace {
int64_t count_elements(const std::vector<ParameterInfo>& infos) {
  int64_t count = 0;
  for (const auto& info : infos) count += info.shape.numel();
  return count;
}
}  // namespace

int64_t Model::trainable_count() const { return count_elements(parameter_infos_); }
int64_t Model::total_count() const {
  return count_elements(parameter_infos_) + count_elements(buffer_infos_);
}

std::vector<std::pair<std::string, Shape>> Model::layer_shapes() const {
  std::vector<std::pair<std::string, Shape>> shapes;
  Shape shape{1, 1, config_.input_size, config_.input_size};
  for (const auto& layer : layers_) {
    shape = layer->output_shape(shape);
    shapes.emplace_back(layer->name(), shape);
  }
  return shapes;
}

}  // namespace pneumo
