// Backend's public entry (src/core/backend_entry.cpp): the argument checks run there, before any
// backend's implementation, so they hold for the CUDA backend as for the CPU one; the op
// observer sees every op. Checked with a backend whose implementations only record that they ran.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "pneumo/backend.hpp"
#include "pneumo/error.hpp"
#include "pneumo/tensor.hpp"

namespace pneumo {
namespace {

class RecordingBackend final : public Backend {
 public:
  Device device() const override { return Device::Cpu; }
  std::string name() const override { return "recording"; }
  std::vector<std::string> calls;

 protected:
  // Every op, from the interface's own list: each records its name and does nothing else.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#define RECORD_CALL(name, params) \
  void name##_impl params override { calls.push_back(#name); }
  PNEUMO_BACKEND_OPS(RECORD_CALL)
#undef RECORD_CALL
#pragma GCC diagnostic pop
};

Tensor cpu(Shape shape) { return Tensor::zeros(shape, Device::Cpu); }

// A view that claims to live on the GPU (never dereferenced: the check refuses it first).
TensorView on_cuda(Tensor& t) { return TensorView{t.data(), t.shape(), Device::Cuda}; }

struct Refusal {
  const char* op;        // expected in the message
  const char* argument;  // expected in the message
  std::function<void(Backend&)> call;
};

TEST(BackendEntry, BadArgumentsAreRefusedBeforeAnyImplementationRuns) {
  Tensor x = cpu({2, 3, 5, 5}), w = cpu({4, 3, 3, 3}), b = cpu({4}), y = cpu({2, 4, 5, 5});
  Tensor wrong_y = cpu({2, 4, 4, 5}), pooled = cpu({2, 3, 3, 3}), bad_pool = cpu({2, 3, 2, 2});
  Tensor c3 = cpu({3}), c4 = cpu({4}), c5 = cpu({5}), dense_x = cpu({2, 6}), dense_w = cpu({5, 6});
  Tensor dense_y = cpu({2, 5}), logits = cpu({2}), labels = cpu({3}), stats = cpu({2});
  Tensor params = cpu({7}), grads = cpu({8}), state = cpu({7});
  Array<uint16_t> bits(y.numel(), Device::Cpu);  // bfloat16 storage for the channels-last views
  const std::vector<Refusal> refusals = {
      {"conv2d_forward", "y", [&](Backend& k) { k.conv2d_forward(x, w, b, wrong_y, true); }},
      {"conv2d_forward", "bias", [&](Backend& k) { k.conv2d_forward(x, w, c3, y, true); }},
      {"conv2d_backward_data", "dy", [&](Backend& k) { k.conv2d_backward_data(wrong_y, w, x); }},
      {"conv2d_backward_filter", "dbias",
       [&](Backend& k) { k.conv2d_backward_filter(x, y, w, c3); }},
      {"conv2d_backward", "dx", [&](Backend& k) { k.conv2d_backward(x, y, w, y, w, b); }},
      {"conv2d_backward", "dbias", [&](Backend& k) { k.conv2d_backward(x, y, w, x, w, c3); }},
      {"relu_forward", "y", [&](Backend& k) { k.relu_forward(x, y); }},
      {"maxpool2d_forward", "y", [&](Backend& k) { k.maxpool2d_forward(x, bad_pool); }},
      {"maxpool2d_backward", "dx", [&](Backend& k) { k.maxpool2d_backward(x, pooled, pooled, y); }},
      {"batchnorm_forward_inference", "gamma",
       [&](Backend& k) { k.batchnorm_forward_inference(x, c4, c3, c3, c3, 1e-3, x); }},
      {"batchnorm_forward_training", "epsilon",
       [&](Backend& k) { k.batchnorm_forward_training(x, c3, c3, c3, c3, 0.01, 1e-9, x, c3, c3); }},
      {"dropout_forward", "rate", [&](Backend& k) { k.dropout_forward(x, x, 1.0f, RngKey{}); }},
      {"block_tail_forward", "y",
       [&](Backend& k) { k.block_tail_forward(x, c3, c3, c3, c3, {}, bad_pool, c3, c3); }},
      {"stem_forward", "x",
       [&](Backend& k) {
         k.stem_forward(x, w, c4, c4, c4, c4, c4, {}, y, c4, c4);  // x has 3 channels
       }},
      {"stem_backward", "dweight",
       [&](Backend& k) {
         Tensor image = cpu({2, 1, 5, 5}), stem_w = cpu({4, 1, 3, 3}), stem_dy = cpu({2, 4, 3, 3});
         k.stem_backward(image, stem_dy, stem_w, c4, c4, c4, c4, c4, {}, w, c4, c4, c4);
       }},
      {"block_tail_backward", "da",
       [&](Backend& k) { k.block_tail_backward(x, pooled, c3, c3, c3, c3, {}, pooled, c3, c3); }},
      {"block_tail_forward_bf16", "y",
       [&](Backend& k) {
         const Bf16NhwcView z{bits.data(), x.shape(), Device::Cpu},
             y16{bits.data(), bad_pool.shape(), Device::Cpu};
         k.block_tail_forward_bf16(z, c3, c3, c3, c3, c3, {}, y16, c3, c3);
       }},
      {"block_tail_backward_bf16", "dbias",
       [&](Backend& k) {
         const Bf16NhwcView z{bits.data(), x.shape(), Device::Cpu},
             dy16{bits.data(), pooled.shape(), Device::Cpu};
         k.block_tail_backward_bf16(z, c3, dy16, c3, c3, c3, c3, {}, z, c4, c3, c3);
       }},
      {"block_tail_backward_bf16", "dy",
       [&](Backend& k) {
         const Bf16NhwcView z{bits.data(), x.shape(), Device::Cpu},
             dy16{bits.data(), pooled.shape(), Device::Cuda};
         k.block_tail_backward_bf16(z, c3, dy16, c3, c3, c3, c3, {}, z, c3, c3, c3);
       }},
      {"conv2d_forward_bf16", "z",
       [&](Backend& k) {
         const Bf16NhwcView x16{bits.data(), x.shape(), Device::Cpu},
             z16{bits.data(), wrong_y.shape(), Device::Cpu};
         k.conv2d_forward_bf16(x16, w, z16);
       }},
      {"conv2d_backward_bf16", "x",
       [&](Backend& k) {  // one input channel: the first convolution stays float32
         Tensor w1 = cpu({4, 1, 3, 3});
         const Bf16NhwcView x16{bits.data(), {2, 1, 5, 5}, Device::Cpu},
             dz16{bits.data(), y.shape(), Device::Cpu};
         k.conv2d_backward_bf16(x16, dz16, w1, Bf16NhwcView{}, w1);
       }},
      {"from_bf16_channels_last", "y",
       [&](Backend& k) {
         k.from_bf16_channels_last({bits.data(), x.shape(), Device::Cpu}, pooled);
       }},
      {"dense_forward", "bias", [&](Backend& k) { k.dense_forward(dense_x, dense_w, c4, dense_y); }},
      {"dense_forward", "y", [&](Backend& k) { k.dense_forward(dense_x, dense_w, c5, c4); }},
      {"dense_forward", "x", [&](Backend& k) { k.dense_forward(x, dense_w, b, dense_y); }},
      {"sigmoid_bce", "labels",
       [&](Backend& k) { k.sigmoid_bce(logits, labels, TensorView{}, logits, stats); }},
      {"rmsprop_step", "grads",
       [&](Backend& k) { k.rmsprop_step(params, grads, state, 1e-3f, 0.9f, 1e-7f); }},
      {"conv2d_forward", "x", [&](Backend& k) { k.conv2d_forward(on_cuda(x), w, b, y, true); }},
  };
  for (const Refusal& refusal : refusals) {
    RecordingBackend backend;
    SCOPED_TRACE(std::string(refusal.op) + " / " + refusal.argument);
    try {
      refusal.call(backend);
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      // The message names the op and the argument as a word, before the check's location
      // (whose file path must not be what matches).
      const std::string full = e.what();
      const std::string message = full.substr(0, full.find(" [check"));
      EXPECT_EQ(message.rfind(refusal.op, 0), 0u) << full;
      EXPECT_NE(message.find(" " + std::string(refusal.argument) + " "), std::string::npos) << full;
    }
    EXPECT_TRUE(backend.calls.empty()) << "the implementation ran: " << backend.calls.front();
  }
}

TEST(BackendEntry, AGoodCallRunsTheImplementationOnceAndThenTheObserver) {
  RecordingBackend backend;
  std::vector<std::pair<std::string, Shape>> seen;
  backend.set_op_observer([&](const char* op, const Shape& shape) {
    seen.emplace_back(op, shape);
    EXPECT_EQ(backend.calls.size(), seen.size()) << "the observer runs after the op";
  });
  Tensor x = cpu({2, 3, 5, 5}), pooled = cpu({2, 3, 3, 3});
  backend.relu_forward(x, x);
  backend.maxpool2d_forward(x, pooled);
  EXPECT_EQ(backend.calls, (std::vector<std::string>{"relu_forward", "maxpool2d_forward"}));
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].first, "relu_forward");
  EXPECT_EQ(seen[1].first, "maxpool2d_forward");
  EXPECT_EQ(seen[1].second, x.shape());
  backend.set_op_observer({});
  backend.relu_forward(x, x);
  EXPECT_EQ(seen.size(), 2u);
}

}  // namespace
}  // namespace pneumo
