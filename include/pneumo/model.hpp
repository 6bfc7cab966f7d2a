// The seed network (docs/recipe.md) as a sequence of layers over one Backend. Parameters and their
// gradients live in one contiguous buffer each (so the optimizer is one launch); layers hold views.
// Non-trainable state (batch-norm running statistics) lives in a third buffer.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pneumo/backend.hpp"
#include "pneumo/random.hpp"
#include "pneumo/tensor.hpp"

namespace pneumo {

// One named tensor inside a flat buffer; names and layouts follow PyTorch (conv1.weight is
// (out, in, kh, kw), fc1.weight is (out, in), bn1.running_var, ...).
struct ParameterInfo {
  std::string name;
  Shape shape;
  int64_t offset = 0;  // in elements, into the parameter (or buffer) array
};

// The classifier head after the last block: the recipe's Flatten (256 x 5 x 5 -> fc1), or a global
// average pooling (256 -> fc1), which cannot read where in the image a feature sits.
enum class ModelHead { Flatten, GlobalAverage };
const char* model_head_name(ModelHead head);       // "flatten" | "gap"
// The architecture a checkpoint records: "seed-cnn-v1" (Flatten) or "seed-cnn-v1-gap".
std::string architecture_name(ModelHead head);

struct ModelConfig {
  std::string architecture = "seed-cnn-v1";  // set by Model from `head` (architecture_name)
  ModelHead head = ModelHead::Flatten;
  int input_size = 150;  // square, one channel
  // Block channels and dropout rates of the recipe: conv 32, 64 (0.1), 64, 128 (0.2), 256 (0.2).
  std::vector<int> channels{32, 64, 64, 128, 256};
  std::vector<float> conv_dropout{0.0f, 0.1f, 0.0f, 0.2f, 0.2f};
  int hidden = 128;
  float hidden_dropout = 0.2f;
  double batchnorm_momentum = 0.99;  // Keras convention; cuDNN factor = 1 - momentum
  double batchnorm_epsilon = 1e-3;
  // What the input images go through before conv1 (x/255, or per-image standardisation): the
  // Trainer's gather op applies it to every batch, training and inference alike, and checkpoints
  // record it as their "normalisation" metadata.
  InputNormalization input_normalization = InputNormalization::Unit;
  // Each block's Dropout -> BatchNorm -> MaxPool as one fused layer ("tailK", Backend::
  // block_tail_forward) instead of three, and block 1 on the one-channel image with its
  // convolution as one ("stem", Backend::stem_forward): the same parameters, checkpoints and
  // random streams, fewer passes over memory. A speed option (`--fused-block-tails`), not part of
  // the architecture; not with synchronised batch-norm.
  bool fused_block_tails = false;
  // With fused_block_tails: every block after the stem in bfloat16 channels-last (one layer,
  // "blocks2-5": conv2d_forward_bf16 and block_tail_forward_bf16, pneumo/ops/block_tail.hpp),
  // converted once into that stretch and once out of it, instead of around every convolution.
  // For --precision bf16 with --fused-block-tails; its dropout masks are indexed in the stretch's
  // channels-last storage, so they differ from the float32 tails' (same rates and streams).
  bool bf16_activations = false;
  // Without fused tails: each block's batch-norm backward also applies the gradient of the
  // convolution's ReLU and of the dropout between them (Backend::batchnorm_backward's relu_gate
  // and gate_dropout_rate) and sums the convolution's bias gradient (dx_sums; conv2..conv5), one
  // to three passes fewer per block. The same gradients (zeros aside, whose sign may differ where
  // dropout dropped an element; on a GPU the bias gradient's sums in another order); off only to
  // compare the two in tests.
  bool relu_gate_in_batchnorm = true;
};

class Layer;
class Communicator;

class Model {
 public:
  // Allocates parameters, gradients and every activation for batches up to max_batch.
  Model(Backend& backend, ModelConfig config, int max_batch);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Keras defaults: Glorot-uniform conv and dense weights (Philox stream kInit), zero biases,
  // batch-norm gamma 1, beta 0, running mean 0, running variance 1.
  void initialize(uint64_t seed);

  // input: (N, 1, S, S) with N <= max_batch, on the backend's device. Returns the logits (N, 1).
  // In training mode batch-norm uses batch statistics (and updates running averages) and dropout
  // draws masks from (seed, epoch, step) with stream kDropout + layer index; dropout_key.first is
  // the index of input image 0 in the global batch (a data-parallel rank's shard), 0 otherwise.
  ConstTensorView forward(ConstTensorView input, bool training, RngKey dropout_key = {});
  // dlogits: (N, 1). Fills gradients() for the last training forward. After an inference forward
  // it gives the input gradients of that (affine batch-norm, identity dropout) network, for
  // explanations; parameter gradients are then not meaningful. down_to > 0 stops after layer
  // down_to's backward (last_input_gradients()[down_to] is d its input). `gradients_final`, when
  // given, is called after each layer's backward with the offset from which gradients() holds its
  // final values (every op writing them issued): parameters lie in layer order, so the backward
  // pass completes the buffer from its end, and a data-parallel trainer can send that part on.
  using GradientsFinal = std::function<void(int64_t from)>;
  void backward(ConstTensorView dlogits, size_t down_to = 0,
                const GradientsFinal& gradients_final = {});
  // Inference from the output of layer `layer` on: runs layers layer+1 .. last on `activation`
  // (shaped as that layer's output) and returns the logits. For finite-difference checks.
  ConstTensorView forward_from(size_t layer, ConstTensorView activation);
  size_t layer_index(const std::string& name) const;  // throws naming the layers there are

  TensorView parameters() { return parameters_.view(); }
  TensorView gradients() { return gradients_.view(); }
  TensorView buffers() { return buffers_.view(); }  // batch-norm running statistics
  const std::vector<ParameterInfo>& parameter_infos() const { return parameter_infos_; }
  // Per layer, the offset from which gradients() is final after that layer's backward (see
  // backward's `gradients_final`); non-increasing, 0 at the first layer with parameters.
  const std::vector<int64_t>& gradients_final_from() const { return gradients_final_from_; }
  const std::vector<ParameterInfo>& buffer_infos() const { return buffer_infos_; }
  // Element counts of the named tensors (the flat arrays also hold alignment gaps).
  int64_t trainable_count() const;
  int64_t total_count() const;  // trainable + batch-norm running statistics

  // Output shape of every layer for batch n, in order, named ("conv1", "dropout2", "bn2", ...).
  std::vector<std::pair<std::string, Shape>> layer_shapes() const;
  // For diagnosis: each layer's output of the last forward and the gradient it passed back in
  // the last backward (its d input; empty for the first layer), in layer order.
  const std::vector<ConstTensorView>& last_outputs() const { return last_outputs_; }
  const std::vector<ConstTensorView>& last_input_gradients() const { return last_input_gradients_; }
  std::string layer_name(size_t index) const;
  size_t layer_count() const { return layers_.size(); }

  // Called right after each layer's forward (backward = false) and backward (true) has been
  // enqueued, with the layer's index: `pneumo bench train --layers` records CUDA events there.
  using LayerMarker = std::function<void(size_t layer, bool backward)>;
  void set_layer_marker(LayerMarker marker) { layer_marker_ = std::move(marker); }

  // Training batch-norm statistics over the whole batch of every rank in `group` (synchronised
  // batch-norm; several host round trips per layer and step); nullptr: over this process's images.
  void synchronise_batchnorm(Communicator* group);
  // True while batch-norm is synchronised: its forward and backward read statistics back to the
  // host within the step, so such a step cannot be recorded as a CUDA graph.
  bool batchnorm_synchronised() const { return batchnorm_group_ != nullptr; }

  const ModelConfig& config() const { return config_; }
  int max_batch() const { return max_batch_; }
  Backend& backend() { return backend_; }

 private:
  // The constructor's steps (src/train/model.cpp): blocks, the bf16 stretch, the head, then the
  // flat buffers, each layer's final-gradient offset and the layers' own allocations.
  struct Assembly;
  void add_block(Assembly& assembly, size_t block);
  void add_bf16_stretch(Assembly& assembly);
  void add_head(Assembly& assembly);
  void bind_flat_buffers(Assembly& assembly);
  void find_final_gradients();

  Backend& backend_;
  ModelConfig config_;
  int max_batch_;
  Tensor parameters_, gradients_, buffers_;
  std::vector<ParameterInfo> parameter_infos_, buffer_infos_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::vector<Layer*> batchnorms_;  // the BatchNorm2d layers
  // Per layer: the offset of the first parameter of this layer or a later one (the buffer's size
  // when none): what that layer's backward leaves final.
  std::vector<int64_t> gradients_final_from_;
  std::vector<ConstTensorView> last_outputs_, last_input_gradients_;
  LayerMarker layer_marker_;
  Communicator* batchnorm_group_ = nullptr;  // synchronise_batchnorm's
};

}  // namespace pneumo
