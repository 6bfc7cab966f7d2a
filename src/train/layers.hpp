// The layers the seed network is made of. Each owns its output and input-gradient buffers
// (allocated once for the largest batch) and holds views into the model's flat parameter,
// gradient and buffer arrays. Private to the model: users see only pneumo::Model.
#pragma once

#include <string>

#include "pneumo/backend.hpp"
#include "pneumo/random.hpp"
#include "pneumo/tensor.hpp"

namespace pneumo {

class Layer {
 public:
  virtual ~Layer() = default;
  virtual std::string name() const = 0;
  // Whether the named parameter is this layer's: "<name>.*", except for a fused layer that keeps
  // the unfused layers' parameter names (the block tail keeps "bnK.*", the stem "conv1.*" too).
  virtual bool owns(const std::string& parameter) const {
    return parameter.rfind(name() + ".", 0) == 0;
  }
  // Shape of the output for an input of shape `input` (any batch size).
  virtual Shape output_shape(Shape input) const = 0;
  // Allocates the layer's buffers for inputs up to `max_input`; `needs_input_gradient` is false
  // for the first layer (no one consumes d input).
  virtual void allocate(Backend& backend, Shape max_input, bool needs_input_gradient) = 0;
  // Returns a view of the output (valid until the next forward). `key` seeds dropout masks.
  virtual ConstTensorView forward(Backend& backend, ConstTensorView x, bool training,
                                  RngKey key) = 0;
  // dy: gradient of the output of the last training forward. Writes parameter gradients into the
  // gradient views and returns d input (an empty view when not needed).
  virtual ConstTensorView backward(Backend& backend, ConstTensorView dy) = 0;
};

// Leading dimension replaced by n: the view of a max-batch buffer used for a smaller batch.
Shape with_batch(Shape shape, int64_t n);
TensorView batch_view(Tensor& buffer, Shape shape);

}  // namespace pneumo
