// Launchers of the hand-written CUDA kernels (kernels/*.cu), host-only declarations. CudaBackend
// calls them; benchmarks and tests call the very same launchers (never copies of the kernels).
// Every launcher enqueues on `stream`, checks the launch, and takes device pointers.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "pneumo/random.hpp"

namespace pneumo {
struct AdamWStep;
}

namespace pneumo::kernels {

// ---- kernels/activation.cu ----------------------------------------------------------------------
// y: (batch, channels, spatial) in place: y = y + bias[c], then relu when `relu`.
void bias_activation_forward(float* y, const float* bias, int64_t batch, int64_t channels,
                             int64_t spatial, bool relu, cudaStream_t stream);
// dbias[c] = sum over batch and spatial of dy (batch, channels, spatial), in two passes: a
// (channels x chunks) grid of blocks each sums whole images of one channel into `partial`, then
// each channel's partials are added in chunk order. The split depends only on the shape and the
// SM count (bias_reduction), so the result is deterministic on a given GPU.
struct BiasReduction {
  int64_t images_per_chunk = 1, chunks = 1;
  int64_t partial_floats = 0;  // the size `partial` needs
};
// About blocks_per_sm blocks on each SM in all (the backend's 4; `bench kernels` also times
// others on batch-norm).
BiasReduction bias_reduction(int64_t batch, int64_t channels, int sm_count, int blocks_per_sm = 4);
// The split into chunks of `images_per_chunk` whole images (clamped to [1, batch]; the last chunk
// holds what is left): what bias_reduction ends in, and what tests force to reach several images
// per chunk and a short last chunk on any GPU (CudaBackendOptions::reduction_images_per_chunk).
BiasReduction reduction_of_chunk_size(int64_t batch, int64_t channels, int64_t images_per_chunk);
void bias_backward(const float* dy, float* dbias, float* partial, const BiasReduction& reduction,
                   int64_t batch, int64_t channels, int64_t spatial, cudaStream_t stream);
// y = relu(x) over n elements (y may alias x).
void relu_forward(const float* x, float* y, int64_t n, cudaStream_t stream);
// dx = relu_backward(y, dy) over n elements (dx may alias dy); times `kept` where not 1
// (pneumo::relu_gated: the gate after cuDNN's batch-norm backward, with dropout before it).
void relu_backward(const float* y, const float* dy, float* dx, int64_t n, cudaStream_t stream,
                   float kept = 1.0f);

// ---- kernels/bf16_convert.cu ------------------------------------------------------------------
// --precision bf16 (bf16.hpp rounding). src (batch, channels, spatial) float32 -> dst (batch,
// spatial, channels) bfloat16 bits: NCHW -> NHWC, and a weight (K, C, 3, 3) -> (K, 3, 3, C) with
// batch = K, spatial = 9.
void to_bf16_channels_last(const float* src, uint16_t* dst, int64_t batch, int64_t channels,
                           int64_t spatial, cudaStream_t stream);
// The way back: src (batch, spatial, channels) bfloat16 -> dst (batch, channels, spatial) float32,
// plus bias[c] when bias is not null, then ReLU when `relu`.
void from_bf16_channels_last(const uint16_t* src, float* dst, int64_t batch, int64_t channels,
                             int64_t spatial, const float* bias, bool relu, cudaStream_t stream);

// ---- kernels/dropout.cu -------------------------------------------------------------------------
// y[i] = x[i] * dropout_multiplier(key, i, rate); the backward pass is the same map on dy.
// n < 2^32 (the mask index is 32-bit).
void dropout_apply(const float* x, float* y, int64_t n, float rate, RngKey key,
                   cudaStream_t stream);

// ---- kernels/loss.cu ----------------------------------------------------------------------------
// Fused sigmoid + BCE over n logits: dlogits[i] = weight_i (p_i - y_i) / n; stats[0] += sum of
// weighted losses, stats[1] += correct count (block reduction, one atomic per block and stat).
// weights == nullptr means weight 1.
void sigmoid_bce(const float* logits, const float* labels, const float* weights, float* dlogits,
                 float* stats, int64_t n, int64_t batch_count, cudaStream_t stream);

// If value[0] is not finite and marker[0] == 0: marker[0] = step + 1 (one thread); the step is
// live->step where live is set.
void mark_nonfinite(const float* value, float* marker, int64_t step, const LiveStep* live,
                    cudaStream_t stream);

// ---- kernels/optimizer.cu -----------------------------------------------------------------------
// One launch over the whole parameter buffer: rmsprop_update per element (the learning rate
// live->learning_rate where live is set).
void rmsprop_step(float* params, const float* grads, float* mean_square, int64_t n,
                  float learning_rate, float rho, float epsilon, bool eps_inside,
                  const LiveStep* live, cudaStream_t stream);

// One launch over the whole buffer: adamw_update per element (exp_avg, exp_avg_sq like params;
// with_live_values(step, live) its constants).
void adamw_step(float* params, const float* grads, float* exp_avg, float* exp_avg_sq, int64_t n,
                const AdamWStep& step, const LiveStep* live, cudaStream_t stream);

// ---- kernels/hold.cu ----------------------------------------------------------------------------
// Keeps `stream` busy for about `microseconds` (one thread sleeping on the GPU's clock): the
// benchmarks' timer issues it before its start event (src/bench/timing.hpp).
void hold_stream(int64_t microseconds, cudaStream_t stream);

// ---- kernels/gather.cu --------------------------------------------------------------------------
// out[i] = values[indices[i]] for i < n; NaN where indices[i] is outside [0, value_count).
void gather_values(const float* values, int64_t value_count, const int32_t* indices, float* out,
                   int64_t n, cudaStream_t stream);

// Backend::begin_step (pneumo/live_step.hpp), one block: *current = table[*cursor], indices[j] =
// order[current->first + j] for j < count, ++*cursor; traps when the cursor is past table_size.
void begin_step(const LiveStep* table, int64_t table_size, uint32_t* cursor, const int32_t* order,
                int count, LiveStep* current, int32_t* indices, cudaStream_t stream);

// ---- kernels/batchnorm.cu -----------------------------------------------------------------------
// The gradient sums of an empty batch: `count` floats at p zeroed on `stream` (a memset on the
// stream, so a recorded step graph holds it like any other write of the step).
void zero_floats(float* p, int64_t count, cudaStream_t stream);
// Spatial batch-norm training forward and backward on x (batch, channels, spatial), the meaning of
// cuDNN's (saved_inv_std = 1 / sqrt(biased variance + epsilon); running_var takes the unbiased
// variance; running = (1 - factor) running + factor batch). Per-channel sums are split as
// bias_reduction(batch, channels, SMs) says and merged in chunk order: deterministic on a GPU.
// `scratch` holds batchnorm_scratch_floats(r, channels) floats.
struct BatchNormGradientFactors {
  float scale, mean_dy, mean_dy_xhat;  // see pneumo::batchnorm_input_gradient
};
int64_t batchnorm_scratch_floats(const BiasReduction& r, int64_t channels);
// What batchnorm_backward's scratch needs beyond batchnorm_scratch_floats when it also sums dx
// per channel (dx_sums).
int64_t batchnorm_dx_sums_floats(int64_t batch, int64_t channels, int64_t spatial);
void batchnorm_forward_training(const float* x, const float* gamma, const float* beta,
                                float* running_mean, float* running_var, double factor,
                                double epsilon, float* y, float* saved_mean, float* saved_inv_std,
                                float* scratch, const BiasReduction& r, int64_t batch,
                                int64_t channels, int64_t spatial, cudaStream_t stream);
// relu_gate: dx also through the gradient of the ReLU whose output x is, and of the dropout
// between them whose kept elements' multiplier is `kept` (1: none) (pneumo::relu_gated).
// dx_sums (channels), when not null: the sums of dx over (batch, spatial), from the same pass.
void batchnorm_backward(const float* x, const float* dy, const float* gamma,
                        const float* saved_mean, const float* saved_inv_std, float* dx,
                        float* dgamma, float* dbeta, float* scratch, const BiasReduction& r,
                        int64_t batch, int64_t channels, int64_t spatial, cudaStream_t stream,
                        bool relu_gate = false, float kept = 1.0f, float* dx_sums = nullptr);
// dx from per-channel sums (2, channels) over `count` values (Backend::batchnorm_backward_input);
// `scratch` holds 3 * channels floats.
void batchnorm_backward_input(const float* x, const float* dy, const float* gamma,
                              const float* saved_mean, const float* saved_inv_std,
                              const float* sums, double count, float* dx, float* scratch,
                              int64_t batch, int64_t channels, int64_t spatial,
                              cudaStream_t stream);

// The fused block tail (pneumo/ops/block_tail.hpp), in kernels/batchnorm.cu: dropout ->
// batch-norm -> 2x2 max pooling of a (batch, channels, height, width), and its backward into da,
// with batch-norm's reductions (same split). Each window's winner is recomputed, never stored;
// with dropout, each pass first draws the mask into scratch as bits (dropout_keep_word), one
// Philox call per four elements, and reads an element's multiplier from there as often as it
// needs it. `scratch` holds tail_scratch_floats(t, r) floats.
struct BlockTailArgs {
  const float* a;  // the tail's input; the stem recomputes it from x, weight and conv_bias
  const float *x = nullptr, *weight = nullptr, *conv_bias = nullptr;  // the stem's
  const float *gamma, *beta;
  float *running_mean, *running_var;  // read by an inference forward, updated by a training one
  float *saved_mean, *saved_inv_std;  // written by the forward, read by the backward
  bool training;
  float rate;  // dropout rate (training only)
  RngKey key;
  double factor, epsilon;
  int64_t batch, channels, height, width;
  const uint32_t* keep = nullptr;  // the drawn mask: set by the launchers below, not by callers
  // The bfloat16 tail's input (a null): z channels-last, a = relu(z + conv_bias).
  const uint16_t* z = nullptr;
};
int64_t tail_scratch_floats(const BlockTailArgs& t, const BiasReduction& r);
void block_tail_forward(const BlockTailArgs& t, float* y, float* scratch, const BiasReduction& r,
                        cudaStream_t stream);
void block_tail_backward(const BlockTailArgs& t, const float* dy, float* da, float* dgamma,
                         float* dbeta, float* scratch, const BiasReduction& r,
                         cudaStream_t stream);
// The tail in bfloat16, channels-last (pneumo/ops/block_tail.hpp): t.z and t.conv_bias set, t.a
// null; y, dy and dz bfloat16 channels-last, the dropout mask indexed in z's storage order. Its
// reductions run (channel tiles of 32) x (chunks of whole images) blocks: the split is
// tail_bf16_reduction's (partial_floats: channels x chunks), which tail_scratch_floats takes.
BiasReduction tail_bf16_reduction(int64_t batch, int64_t channels, int sm_count);
void block_tail_forward_bf16(const BlockTailArgs& t, uint16_t* y, float* scratch,
                             const BiasReduction& r, cudaStream_t stream);
void block_tail_backward_bf16(const BlockTailArgs& t, const uint16_t* dy, uint16_t* dz,
                              float* dbias, float* dgamma, float* dbeta, float* scratch,
                              const BiasReduction& r, cudaStream_t stream);
// The stem (block 1 whole): the same with a = relu(conv(x) + conv_bias) recomputed where needed
// (x: batch images of height x width, one channel; weight: (channels, 1, 3, 3)); its backward
// ends in dweight and dbias (tail_scratch_floats counts its weight sums).
void stem_forward(const BlockTailArgs& t, float* y, float* scratch, const BiasReduction& r,
                  cudaStream_t stream);
void stem_backward(const BlockTailArgs& t, const float* dy, float* dweight, float* dbias,
                   float* dgamma, float* dbeta, float* scratch, const BiasReduction& r,
                   cudaStream_t stream);

// ---- kernels/pooling.cu -------------------------------------------------------------------------
// Hand-written 2x2 / stride-2 'same' max pool (top/left padding on odd sizes), the twin of the
// cuDNN path with the interface's tie rule built in: the first maximum in row-major order wins.
// x: (planes, height, width) with planes = N * C; y: (planes, ceil(H/2), ceil(W/2)).
void maxpool2d_forward(const float* x, float* y, int64_t planes, int64_t height, int64_t width,
                       cudaStream_t stream);
// Writes every element of dx (windows tile the input, so no zeroing pass and no atomics).
// Global average pooling over `planes` planes of `count` values: y[p] = plane_mean(x + p count);
// dx[p count + i] = plane_mean_gradient(dy[p], count).
void global_avgpool_forward(const float* x, float* y, int64_t planes, int64_t count,
                            cudaStream_t stream);
void global_avgpool_backward(const float* dy, float* dx, int64_t planes, int64_t count,
                             cudaStream_t stream);
void maxpool2d_backward(const float* x, const float* dy, float* dx, int64_t planes, int64_t height,
                        int64_t width, cudaStream_t stream);

// ---- kernels/conv_direct.cu ------------------------------------------------------------------
// Hand-written 3x3 'same' convolution forward, y = conv(x) + bias then ReLU when `relu` (what
// CudaBackend::conv2d_forward computes), in one kernel. x: (batch, in_channels, height, width),
// weight: (out_channels, in_channels, 3, 3), bias: (out_channels), y: (batch, out_channels, height,
// width). Benchmarked against cuDNN by `pneumo bench kernels`. CudaBackend times the
// single-channel kernel against cuDNN's pick on the first layer and runs the faster; the tiled
// one is not used by the backend.
// Single input channel (the first layer), out_channels 16, 32 or 64: each thread computes four
// consecutive pixels for every output channel and stores them as float4 when H*W % 4 == 0.
bool conv3x3_single_channel_supported(int64_t in_channels, int64_t out_channels);
void conv3x3_forward_single_channel(const float* x, const float* weight, const float* bias, float* y,
                                    int64_t batch, int64_t height, int64_t width,
                                    int64_t out_channels, bool relu, cudaStream_t stream);
// Any channel count: tiled direct convolution (8x16 pixels x 64 output channels per block, input
// channels staged through shared memory 8 at a time). batch <= 65535.
void conv3x3_forward_tiled(const float* x, const float* weight, const float* bias, float* y,
                           int64_t batch, int64_t in_channels, int64_t height, int64_t width,
                           int64_t out_channels, bool relu, cudaStream_t stream);

// ---- kernels/conv_backward.cu -------------------------------------------------------------------
// dweight (K, 1, 3, 3) of a 3x3 'same' convolution with one input channel: the sum over the batch
// of dy (N, K, H, W) correlated with x (N, 1, H, W); and dbias (K), dy's sum, in the same pass.
// Per-tile partials go to `scratch` (its size from the _scratch_floats function) and are added
// in a fixed order: deterministic.
int64_t conv3x3_backward_filter_single_channel_scratch_floats(int64_t batch, int64_t height,
                                                               int64_t width,
                                                               int64_t out_channels);
void conv3x3_backward_filter_single_channel(const float* x, const float* dy, float* dweight,
                                            float* dbias, float* scratch, int64_t batch,
                                            int64_t height, int64_t width, int64_t out_channels,
                                            cudaStream_t stream);

// ---- kernels/loss_unfused.cu (benchmark baseline only) ----------------------------------------
// The unfused path the fused sigmoid_bce kernel replaces, given p = sigmoid(logits) from a
// separate activation pass (cuDNN's): one kernel for the loss statistics, one for the gradient.
// A timing baseline, not a reference: the same loss as sigmoid_bce above (p clamped to
// [1e-7, 1 - 1e-7] inside the logarithms, as Keras does), but its correct count compares p > 0.5
// where sigmoid_bce compares z > 0 (they differ where the sigmoid rounds a tiny positive logit to
// 0.5), its gradient divides by this call's n (sigmoid_bce's by batch_count), and blocks add
// their sums atomically (not reproducible to the bit). weights == nullptr means weight 1.
// stats[0] += sum of weighted losses, stats[1] += correct count (p > 0.5 vs label > 0.5).
void bce_loss_from_probabilities(const float* probabilities, const float* labels,
                                 const float* weights, float* stats, int64_t n,
                                 cudaStream_t stream);
// dlogits[i] = weight_i (p_i - y_i) / n.
void bce_gradient_from_probabilities(const float* probabilities, const float* labels,
                                     const float* weights, float* dlogits, int64_t n,
                                     cudaStream_t stream);

}  // namespace pneumo::kernels
