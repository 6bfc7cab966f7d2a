// Spatial batch normalisation of an NCHW tensor, training forward and backward, with launchers:
// per-channel reductions over (N, H, W) split into chunks of whole images as the bias gradient's
// are (kernels::bias_reduction), partials merged per channel in chunk order (deterministic), then
// one element-wise pass. CudaBackend times these against cuDNN's and runs the faster.
#include <algorithm>
#include <cmath>
#include <utility>
#include <type_traits>

#include "cuda_check.hpp"
#include "kernel_util.cuh"
#include "bf16.hpp"
#include "block_tail_math.hpp"
#include "elementwise.hpp"
#include "kernels.hpp"

namespace pneumo::kernels {
namespace {

// Running count, mean and sum of squared deviations (Welford), merged pairwise by Chan's rule:
// no cancellation however large the mean is next to the spread.
struct Moments {  // trivial, so it can live in shared memory: start from Moments{0, 0, 0}
  float count, mean, m2;
};

__device__ __forceinline__ void add_value(Moments& m, float x) {
  m.count += 1.0f;
  const float delta = x - m.mean;
  m.mean += delta / m.count;
  m.m2 += delta * (x - m.mean);
}

__device__ __forceinline__ Moments merge(const Moments& a, const Moments& b) {
  const float count = a.count + b.count;
  if (count == 0.0f) return a;
  const float delta = b.mean - a.mean, weight_b = b.count / count;
  return {count, a.mean + delta * weight_b, a.m2 + b.m2 + delta * delta * a.count * weight_b};
}

// Four values at once: their own mean and M2, merged into m by Chan's rule with one approximate
// division (the weight 4 / count, a few ulps off, moves the mean by a few ulps of delta) instead
// of an IEEE division per value, whose slow path is a branch the loads of the next values could
// not be scheduled across.
__device__ __forceinline__ void add_four(Moments& m, float v0, float v1, float v2, float v3) {
  const float mean4 = ((v0 + v1) + (v2 + v3)) * 0.25f;
  const float d0 = v0 - mean4, d1 = v1 - mean4, d2 = v2 - mean4, d3 = v3 - mean4;
  const float m2_4 = (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
  const float count = m.count + 4.0f, delta = mean4 - m.mean;
  const float weight = __fdividef(4.0f, count);
  m.mean += delta * weight;
  m.m2 += m2_4 + delta * delta * m.count * weight;
  m.count = count;
}

__device__ __forceinline__ Moments shuffle_down(const Moments& m, int offset) {
  return {__shfl_down_sync(0xffffffffu, m.count, offset),
          __shfl_down_sync(0xffffffffu, m.mean, offset),
          __shfl_down_sync(0xffffffffu, m.m2, offset)};
}

// Moments of the whole block (blockDim.x == kThreadsPerBlock), valid in thread 0, merged in a
// fixed tree: warps by shuffles, then the warps' results by the first warp. Ends with a barrier,
// so a second call in one kernel cannot overwrite warp_moments while the first warp reads it.
__device__ Moments block_moments(Moments m) {
  constexpr int kWarps = kThreadsPerBlock / 32;
  __shared__ Moments warp_moments[kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int offset = 16; offset > 0; offset >>= 1) m = merge(m, shuffle_down(m, offset));
  if (lane == 0) warp_moments[warp] = m;
  __syncthreads();
  Moments total{0.0f, 0.0f, 0.0f};
  if (warp == 0) {
    total = lane < kWarps ? warp_moments[lane] : Moments{0.0f, 0.0f, 0.0f};
    for (int offset = 16; offset > 0; offset >>= 1)
      total = merge(total, shuffle_down(total, offset));
  }
  __syncthreads();
  return total;
}

// What the moments are taken of: x itself (batch-norm and a tail without dropout), or the block
// tail's activations through dropout (SourceValues, below).
// A block of a per-channel reduction binds its channel once (`for_channel`), so that what the
// channel's values need (the stem's nine weights and bias) is loaded once per block, not per value.
struct PlainValues {
  const float* x;
  __device__ PlainValues for_channel(int64_t) const { return *this; }
  __device__ float operator()(int64_t i) const { return x[i]; }
};

// Block (c, j): the mean and M2 of channel c over chunk j, into partial[2 (c chunks + j) + {0, 1}].
template <class Values>
__global__ void moments_partial_kernel(Values values, float* partial, ChunkGeometry g) {
  const int64_t c = blockIdx.x;
  const auto x = values.for_channel(c);
  Moments m{0.0f, 0.0f, 0.0f};
  g.for_each_by_four(
      [&](int64_t i, int64_t stride) {
        const float v0 = x(i), v1 = x(i + stride), v2 = x(i + 2 * stride), v3 = x(i + 3 * stride);
        add_four(m, v0, v1, v2, v3);
      },
      [&](int64_t i) { add_value(m, x(i)); });
  m = block_moments(m);
  if (threadIdx.x == 0) {
    float* out = partial + 2 * (c * gridDim.y + blockIdx.y);
    out[0] = m.mean;
    out[1] = m.m2;
  }
}

// One thread per channel: its chunks merged in chunk order in double (counts from the geometry),
// then the saved statistics and the running averages, as cudnnBatchNormalizationForwardTraining
// defines them (unbiased variance into running_var).
__global__ void moments_finalize_kernel(const float* partial, ChunkGeometry g, int64_t chunks,
                                        double factor, double epsilon, float* saved_mean,
                                        float* saved_inv_std, float* running_mean,
                                        float* running_var) {
  for (int64_t c = global_thread_index(); c < g.channels; c += grid_stride()) {
    double count = 0.0, mean = 0.0, m2 = 0.0;
    for (int64_t j = 0; j < chunks; ++j) {
      const double first = static_cast<double>(j * g.images_per_chunk);
      const double n_j =
          (fmin(static_cast<double>(g.batch), first + g.images_per_chunk) - first) * g.spatial;
      const float* in = partial + 2 * (c * chunks + j);
      const double total = count + n_j, delta = in[0] - mean;
      mean += delta * n_j / total;
      m2 += in[1] + delta * delta * count * n_j / total;
      count = total;
    }
    const double biased = m2 / count, unbiased = m2 / (count - 1.0);
    saved_mean[c] = static_cast<float>(mean);
    saved_inv_std[c] = static_cast<float>(1.0 / sqrt(biased + epsilon));
    running_mean[c] = static_cast<float>((1.0 - factor) * running_mean[c] + factor * mean);
    running_var[c] = static_cast<float>((1.0 - factor) * running_var[c] + factor * unbiased);
  }
}

// y = the normalised x, four values per thread loaded before any is stored (map_planes).
__global__ void apply_kernel(const float* x, float* y, const float* mean, const float* inv_std,
                             const float* gamma, const float* beta, int64_t planes,
                             int64_t channels, int64_t spatial) {
  map_planes(y, x, planes, spatial, [&](int64_t plane, float v) {
    const int64_t c = mod_index(plane, channels);
    return pneumo::batchnorm_apply(v, mean[c], inv_std[c], gamma[c], beta[c]);
  });
}

// Block (c, j): sum of dy and of dy (x - mean) over chunk j of channel c.
__global__ void gradient_partial_kernel(const float* x, const float* dy, const float* mean,
                                        float* partial, ChunkGeometry g) {
  const int64_t c = blockIdx.x;
  const float mean_c = mean[c];
  float sum_dy = 0.0f, sum_dy_centred = 0.0f;
  g.for_each([&](int64_t i) {  // four at a time: eight loads in flight
    sum_dy += dy[i];
    sum_dy_centred += dy[i] * (x[i] - mean_c);
  });
  sum_dy = block_sum(sum_dy);
  sum_dy_centred = block_sum(sum_dy_centred);
  if (threadIdx.x == 0) {
    float* out = partial + 2 * (c * gridDim.y + blockIdx.y);
    out[0] = sum_dy;
    out[1] = sum_dy_centred;
  }
}

// One thread per channel: dbeta, dgamma, and the three per-channel factors of dx (without the
// batch statistics' terms when the forward normalised with fixed statistics: the block tail's
// inference backward).
__global__ void gradient_finalize_kernel(const float* partial, int64_t channels, int64_t chunks,
                                         double count, const float* gamma, const float* inv_std,
                                         float* dgamma, float* dbeta,
                                         BatchNormGradientFactors* factors,
                                         bool batch_statistics = true) {
  for (int64_t c = global_thread_index(); c < channels; c += grid_stride()) {
    double sum_dy = 0.0, sum_dy_centred = 0.0;
    for (int64_t j = 0; j < chunks; ++j) {
      sum_dy += partial[2 * (c * chunks + j)];
      sum_dy_centred += partial[2 * (c * chunks + j) + 1];
    }
    const double sum_dy_xhat = sum_dy_centred * inv_std[c];
    dbeta[c] = static_cast<float>(sum_dy);
    dgamma[c] = static_cast<float>(sum_dy_xhat);
    const BatchNormChannelFactors f =
        batchnorm_factors_from_sums(batch_statistics ? sum_dy : 0.0,
                                    batch_statistics ? sum_dy_xhat : 0.0, count, gamma[c],
                                    inv_std[c]);
    factors[c] = {f.scale, f.mean_dy, f.mean_dy_xhat};
  }
}

// An element's dx from x, dy and its channel's factors; with relu_gate, through the ReLU that
// produced x as well (and the dropout between them: `kept`, relu_gated).
struct InputGradient {
  const float *mean, *inv_std;
  const BatchNormGradientFactors* factors;
  int64_t channels;
  bool relu_gate;
  float kept;
  __device__ float operator()(int64_t plane, float xv, float dyv) const {
    const int64_t c = mod_index(plane, channels);
    return relu_gated(relu_gate, xv,
                      pneumo::batchnorm_input_gradient(xv, dyv, mean[c], inv_std[c],
                                                       factors[c].scale, factors[c].mean_dy,
                                                       factors[c].mean_dy_xhat),
                      kept);
  }
};

// dx over (planes, spatial), four values per thread (map_planes).
__global__ void input_gradient_kernel(const float* x, const float* dy, float* dx, InputGradient g,
                                      int64_t planes, int64_t spatial) {
  map_planes(dx, x, dy, planes, spatial, g);
}

// The same, and each (plane, block row)'s sum of dx into partial (map_planes_summed): the
// per-channel sums of dx come out of the same pass (the bias gradient of the convolution before,
// Backend::batchnorm_backward's dx_sums).
__global__ void input_gradient_sums_kernel(const float* x, const float* dy, float* dx,
                                           InputGradient g, int64_t planes, int64_t spatial,
                                           float* partial) {
  map_planes_summed(dx, x, dy, planes, spatial, partial, g);
}

// sums[c] = the partials of channel c's planes, a block per channel: thread t adds partials
// t, t + 256, ... of the channel's batch x rows (image by image, block row by block row), then
// block_sum's fixed tree. A thread per channel would wait on each of batch x rows loads in turn
// (1,536 for conv2 at batch 256).
__global__ void plane_sums_total_kernel(const float* partial, float* sums, int64_t batch,
                                        int64_t channels, int64_t rows) {
  const int64_t count = batch * rows;
  for (int64_t c = blockIdx.x; c < channels; c += gridDim.x) {
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < count; j += blockDim.x) {
      const int64_t n = j / rows, y = j - n * rows;
      sum += partial[(n * channels + c) * rows + y];
    }
    sum = block_sum(sum);
    if (threadIdx.x == 0) sums[c] = sum;
  }
}

// One thread per channel: the factors of dx from sums given (over every rank's batch).
__global__ void factors_from_sums_kernel(const float* sums, int64_t channels, double count,
                                         const float* gamma, const float* inv_std,
                                         BatchNormGradientFactors* factors) {
  for (int64_t c = global_thread_index(); c < channels; c += grid_stride()) {
    const BatchNormChannelFactors f =
        batchnorm_factors_from_sums(sums[c], sums[channels + c], count, gamma[c], inv_std[c]);
    factors[c] = {f.scale, f.mean_dy, f.mean_dy_xhat};
  }
}

// ---- The fused block tail and the stem (pneumo/ops/block_tail.hpp) -----------------------------

__device__ __forceinline__ BlockTailChannel tail_channel(const BlockTailArgs& t, int64_t c) {
  return {t.saved_mean[c], t.saved_inv_std[c], t.gamma[c], t.beta[c],
          t.training ? t.rate : 0.0f, t.key, t.keep};
}

// The dropout mask as words of 32 elements (dropout_keep_word), one thread per word.
__global__ void dropout_keep_kernel(uint32_t* keep, int64_t n, float rate, RngKey key) {
  const int64_t words = (n + 31) / 32;
  for (int64_t w = global_thread_index(); w < words; w += grid_stride())
    keep[w] = dropout_keep_word(key, n, static_cast<uint32_t>(w), rate);
}

// The pooled output s of a plane: its window.
__device__ __forceinline__ PoolWindow tail_window(const PoolGeometry& g, int64_t s) {
  return pool_window(g, div_index(s, g.out_width()), mod_index(s, g.out_width()));
}

// Where a plane's activations come from: the tail reads them (a), the stem recomputes them from
// the image and channel c's convolution weights (StemPlane). `channel(c)` binds channel c (the
// stem loads its weights there, once), then `plane(plane_index)` gives one of its planes;
// plane(plane_index, c) does both, for a kernel whose threads meet many channels.
struct StoredActivation {
  const float* a;
  int64_t in_plane;
  __device__ const StoredActivation& channel(int64_t) const { return *this; }
  __device__ PlaneValues plane(int64_t plane_index) const { return {a + plane_index * in_plane}; }
  __device__ PlaneValues plane(int64_t plane_index, int64_t) const { return plane(plane_index); }
};
struct StemChannel {
  const float* x;  // the images
  int64_t channels, height, width;
  float w[9], bias;
  __device__ StemPlane plane(int64_t plane_index) const {
    return {x + div_index(plane_index, channels) * height * width, height, width,
            {w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8]}, bias};
  }
};
struct RecomputedActivation {
  const float *x, *weight, *bias;
  int64_t channels, height, width;
  __device__ void load_weights(int64_t c, float (&w)[9]) const {
    for (int t = 0; t < 9; ++t) w[t] = weight[c * 9 + t];
  }
  __device__ StemChannel channel(int64_t c) const {
    StemChannel s{x, channels, height, width, {}, bias[c]};
    load_weights(c, s.w);
    return s;
  }
  // Built directly, not through channel(c): the copy cost tail_pool_kernel 12 registers.
  __device__ StemPlane plane(int64_t plane_index, int64_t c) const {
    StemPlane s{x + div_index(plane_index, channels) * height * width, height, width, {}, bias[c]};
    load_weights(c, s.w);
    return s;
  }
};

// Element i of channel c's activations through dropout, for the moments kernel.
template <class Channel>
struct ChannelSourceValues {
  Channel source;
  BlockTailChannel ch;  // only rate, key and keep are used
  int64_t spatial;
  __device__ float operator()(int64_t i) const {
    const int64_t plane = div_index(i, spatial);
    return block_tail_dropped(source.plane(plane)(i - plane * spatial), ch, i);
  }
};
template <class Source>
struct SourceValues {
  Source source;
  BlockTailChannel ch;
  int64_t spatial;
  __device__ auto for_channel(int64_t c) const {
    using Channel = std::decay_t<decltype(source.channel(c))>;
    return ChannelSourceValues<Channel>{source.channel(c), ch, spatial};
  }
};

// Inference: the running statistics as saved_mean and saved_inv_std (what the backward reads).
__global__ void running_statistics_kernel(BlockTailArgs t, int64_t channels) {
  for (int64_t c = global_thread_index(); c < channels; c += grid_stride()) {
    t.saved_mean[c] = t.running_mean[c];
    t.saved_inv_std[c] =
        static_cast<float>(1.0 / sqrt(static_cast<double>(t.running_var[c]) + t.epsilon));
  }
}

// One thread per pooled output: its window's max of the normalised dropped values.
template <class Source>
__global__ void tail_pool_kernel(BlockTailArgs t, Source source, float* y, PoolGeometry g) {
  const int64_t in_plane = g.height * g.width, out_plane = g.out_height() * g.out_width();
  for_each_plane_element(g.planes(), out_plane, [&](int64_t plane, int64_t i) {
    const int64_t c = mod_index(plane, g.channels);
    const BlockTailChannel ch = tail_channel(t, c);
    const PoolWindow w = tail_window(g, i - plane * out_plane);
    y[i] = block_tail_winner_of(source.plane(plane, c).window(w), plane * in_plane, w, ch).value;
  });
}

// Block (c, j): over chunk j of channel c's pooled outputs, sum dy and dy (d - mean) at each
// window's winner (the forward's winner, recomputed).
template <class Source>
__global__ void tail_gradient_partial_kernel(BlockTailArgs t, Source source, const float* dy,
                                             PoolGeometry pg, float* partial, ChunkGeometry g) {
  const int64_t c = blockIdx.x;
  const BlockTailChannel ch = tail_channel(t, c);
  const auto channel = source.channel(c);
  const int64_t in_plane = pg.height * pg.width, out_plane = pg.out_height() * pg.out_width();
  float sum_dy = 0.0f, sum_dy_centred = 0.0f;
  g.for_each([&](int64_t i) {
    const int64_t plane = div_index(i, out_plane), first = plane * in_plane;
    const PoolWindow w = tail_window(pg, i - plane * out_plane);
    const auto values = channel.plane(plane).window(w);
    const int p = block_tail_winner_of(values, first, w, ch).position;
    sum_dy += dy[i];
    sum_dy_centred +=
        dy[i] * (block_tail_dropped(values.in_window(w, p), ch, first + w.offset(p)) - ch.mean);
  });
  sum_dy = block_sum(sum_dy);
  sum_dy_centred = block_sum(sum_dy_centred);
  if (threadIdx.x == 0) {
    float* out = partial + 2 * (blockIdx.x * gridDim.y + blockIdx.y);
    out[0] = sum_dy;
    out[1] = sum_dy_centred;
  }
}

// One thread per pooled output: da for every element of its window (windows tile a, so every
// element is written once, no zeroing pass).
__global__ void tail_input_gradient_kernel(BlockTailArgs t, const float* dy, float* da,
                                           const BatchNormGradientFactors* factors,
                                           PoolGeometry g) {
  const int64_t in_plane = g.height * g.width, out_plane = g.out_height() * g.out_width();
  for_each_plane_element(g.planes(), out_plane, [&](int64_t plane, int64_t i) {
    const int64_t c = mod_index(plane, g.channels), first = plane * in_plane;
    const BlockTailChannel ch = tail_channel(t, c);
    const BatchNormGradientFactors f = factors[c];
    const PoolWindow w = tail_window(g, i - plane * out_plane);
    const int winner = block_tail_winner(t.a + first, first, w, ch).position;
    for_each_real_position(w, [&](int p) {
      const int64_t e = first + w.offset(p);
      da[e] = block_tail_gradient(t.a[e], block_tail_mask(ch, e), p == winner ? dy[i] : 0.0f, ch,
                                  f.scale, f.mean_dy, f.mean_dy_xhat);
    });
  });
}

constexpr int kStemSums = 10;  // dweight's 9 taps, then dbias

// Block (k, j): the stem's convolution gradients over chunk j of channel k: each window's
// elements' gradient before the ReLU (never stored) times the input under each tap, and alone
// for the bias, summed by the block into partial[kStemSums (k chunks + j) + v].
__global__ void stem_weight_partial_kernel(BlockTailArgs t, RecomputedActivation source,
                                           const float* dy,
                                           const BatchNormGradientFactors* factors,
                                           PoolGeometry pg, float* partial, ChunkGeometry g) {
  const int64_t k = blockIdx.x;
  const BlockTailChannel ch = tail_channel(t, k);
  const BatchNormGradientFactors f = factors[k];
  const StemChannel channel = source.channel(k);
  const int64_t in_plane = pg.height * pg.width, out_plane = pg.out_height() * pg.out_width();
  float sums[kStemSums] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  g.for_each([&](int64_t i) {
    const int64_t plane = div_index(i, out_plane), first = plane * in_plane;
    const PoolWindow w = tail_window(pg, i - plane * out_plane);
    const StemWindow values = channel.plane(plane).window(w);
    const int winner = block_tail_winner_of(values, first, w, ch).position;
    for_each_real_position(w, [&](int p) {
      const float grad = block_tail_gradient(values.in_window(w, p),
                                             block_tail_mask(ch, first + w.offset(p)),
                                             p == winner ? dy[i] : 0.0f, ch, f.scale, f.mean_dy,
                                             f.mean_dy_xhat);
      if (grad == 0.0f) return;
      for (int tap = 0; tap < 9; ++tap) sums[tap] += grad * values.tap(p, tap);
      sums[9] += grad;
    });
  });
  for (int v = 0; v < kStemSums; ++v) {
    const float total = block_sum(sums[v]);
    if (threadIdx.x == 0) partial[kStemSums * (k * gridDim.y + blockIdx.y) + v] = total;
  }
}

// One thread per channel: its chunks' partial sums in chunk order, in double.
__global__ void stem_weight_finalize_kernel(const float* partial, int64_t channels, int64_t chunks,
                                            float* dweight, float* dbias) {
  for (int64_t k = global_thread_index(); k < channels; k += grid_stride()) {
    double sums[kStemSums] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t j = 0; j < chunks; ++j)
      for (int v = 0; v < kStemSums; ++v) sums[v] += partial[kStemSums * (k * chunks + j) + v];
    for (int tap = 0; tap < 9; ++tap) dweight[k * 9 + tap] = static_cast<float>(sums[tap]);
    dbias[k] = static_cast<float>(sums[9]);
  }
}

// A tail forward's saved statistics (and running averages): from the moments' partials in
// scratch after a training forward's partial kernel, else the running ones.
void tail_statistics(const BlockTailArgs& t, float* scratch, const BiasReduction& r,
                     cudaStream_t stream) {
  if (t.training) {
    const ChunkGeometry g{t.batch, t.channels, t.height * t.width, r.images_per_chunk};
    moments_finalize_kernel<<<blocks_for(t.channels), kThreadsPerBlock, 0, stream>>>(
        scratch, g, r.chunks, t.factor, t.epsilon, t.saved_mean, t.saved_inv_std,
        t.running_mean, t.running_var);
    PNEUMO_LAUNCH_CHECK("block tail moments_finalize_kernel", "channels=", t.channels);
  } else {
    running_statistics_kernel<<<blocks_for(t.channels), kThreadsPerBlock, 0, stream>>>(
        t, t.channels);
    PNEUMO_LAUNCH_CHECK("running_statistics_kernel", "channels=", t.channels);
  }
}

// The forward both share: statistics of the dropped activations (training) or the running ones,
// then the pooled output.
template <class Source>
void tail_forward(const BlockTailArgs& t, const Source& source, bool plain, float* y,
                  float* scratch, const BiasReduction& r, cudaStream_t stream) {
  const PoolGeometry pg{t.batch, t.channels, t.height, t.width};
  const int64_t spatial = t.height * t.width;
  if (t.training) {
    const dim3 grid = chunk_grid("block tail forward", r, t.batch, t.channels);
    const ChunkGeometry g{t.batch, t.channels, spatial, r.images_per_chunk};
    if (plain) {  // a stored, no dropout: the batch-norm kernel's own loads
      moments_partial_kernel<<<grid, kThreadsPerBlock, 0, stream>>>(PlainValues{t.a}, scratch, g);
    } else {
      const SourceValues<Source> values{source, {0.0f, 0.0f, 0.0f, 0.0f, t.rate, t.key, t.keep},
                                        spatial};
      moments_partial_kernel<<<grid, kThreadsPerBlock, 0, stream>>>(values, scratch, g);
    }
    PNEUMO_LAUNCH_CHECK("block tail moments_partial_kernel", "batch=", t.batch,
                        " channels=", t.channels, " spatial=", spatial);
  }
  tail_statistics(t, scratch, r, stream);
  tail_pool_kernel<<<plane_grid(pg.planes(), pg.out_height() * pg.out_width()), kThreadsPerBlock,
                     0, stream>>>(t, source, y, pg);
  PNEUMO_LAUNCH_CHECK("tail_pool_kernel", "batch=", t.batch, " channels=", t.channels,
                      " height=", t.height, " width=", t.width);
}

// The backward's first half, both share: dgamma, dbeta and the factors of the input gradient.
template <class Source>
BatchNormGradientFactors* tail_gradient_factors(const BlockTailArgs& t, const Source& source,
                                                const float* dy, float* dgamma, float* dbeta,
                                                float* scratch, const BiasReduction& r,
                                                cudaStream_t stream) {
  const PoolGeometry pg{t.batch, t.channels, t.height, t.width};
  const int64_t out_plane = pg.out_height() * pg.out_width();
  const dim3 grid = chunk_grid("block tail backward", r, t.batch, t.channels);
  const ChunkGeometry g{t.batch, t.channels, out_plane, r.images_per_chunk};
  auto* factors = reinterpret_cast<BatchNormGradientFactors*>(scratch + 2 * r.partial_floats);
  tail_gradient_partial_kernel<<<grid, kThreadsPerBlock, 0, stream>>>(t, source, dy, pg, scratch,
                                                                      g);
  PNEUMO_LAUNCH_CHECK("tail_gradient_partial_kernel", "batch=", t.batch,
                      " channels=", t.channels, " spatial=", t.height * t.width);
  gradient_finalize_kernel<<<blocks_for(t.channels), kThreadsPerBlock, 0, stream>>>(
      scratch, t.channels, r.chunks, static_cast<double>(t.batch * t.height * t.width), t.gamma,
      t.saved_inv_std, dgamma, dbeta, factors, t.training);
  PNEUMO_LAUNCH_CHECK("block tail gradient_finalize_kernel", "channels=", t.channels);
  return factors;
}

}  // namespace

void zero_floats(float* p, int64_t count, cudaStream_t stream) {
  if (count == 0) return;
  PNEUMO_CUDA_CHECK(cudaMemsetAsync(p, 0, static_cast<size_t>(count) * sizeof(float), stream),
                    "zeroing ", count, " gradient values of an empty batch");
}

int64_t batchnorm_scratch_floats(const BiasReduction& r, int64_t channels) {
  // Two partial floats per (channel, chunk), then the backward's factors per channel.
  constexpr int64_t kFactorFloats = sizeof(BatchNormGradientFactors) / sizeof(float);
  return 2 * r.partial_floats + kFactorFloats * channels;
}

int64_t batchnorm_dx_sums_floats(int64_t batch, int64_t channels, int64_t spatial) {
  return batch * channels * plane_grid_size(batch * channels, spatial).y;
}

void batchnorm_forward_training(const float* x, const float* gamma, const float* beta,
                                float* running_mean, float* running_var, double factor,
                                double epsilon, float* y, float* saved_mean, float* saved_inv_std,
                                float* scratch, const BiasReduction& r, int64_t batch,
                                int64_t channels, int64_t spatial, cudaStream_t stream) {
  const int64_t total = batch * channels * spatial;
  if (total == 0) return;
  const dim3 grid = chunk_grid("batchnorm_forward_training", r, batch, channels);
  const ChunkGeometry g{batch, channels, spatial, r.images_per_chunk};
  moments_partial_kernel<<<grid, kThreadsPerBlock, 0, stream>>>(PlainValues{x}, scratch, g);
  PNEUMO_LAUNCH_CHECK("moments_partial_kernel", "batch=", batch, " channels=", channels,
                      " spatial=", spatial);
  moments_finalize_kernel<<<blocks_for(channels), kThreadsPerBlock, 0, stream>>>(
      scratch, g, r.chunks, factor, epsilon, saved_mean, saved_inv_std, running_mean,
      running_var);
  PNEUMO_LAUNCH_CHECK("moments_finalize_kernel", "channels=", channels);
  apply_kernel<<<plane_grid(batch * channels, spatial), kThreadsPerBlock, 0, stream>>>(
      x, y, saved_mean, saved_inv_std, gamma, beta, batch * channels, channels, spatial);
  PNEUMO_LAUNCH_CHECK("batchnorm apply_kernel", "total=", total);
}

void batchnorm_backward(const float* x, const float* dy, const float* gamma,
                        const float* saved_mean, const float* saved_inv_std, float* dx,
                        float* dgamma, float* dbeta, float* scratch, const BiasReduction& r,
                        int64_t batch, int64_t channels, int64_t spatial, cudaStream_t stream,
                        bool relu_gate, float kept, float* dx_sums) {
  const int64_t total = batch * channels * spatial;
  if (total == 0) {  // the parameter gradients of nothing are zero, as on the CPU
    zero_floats(dgamma, channels, stream);
    zero_floats(dbeta, channels, stream);
    if (dx_sums) zero_floats(dx_sums, channels, stream);
    return;
  }
  const dim3 grid = chunk_grid("batchnorm_backward", r, batch, channels);
  const ChunkGeometry g{batch, channels, spatial, r.images_per_chunk};
  auto* factors = reinterpret_cast<BatchNormGradientFactors*>(scratch + 2 * r.partial_floats);
  gradient_partial_kernel<<<grid, kThreadsPerBlock, 0, stream>>>(x, dy, saved_mean, scratch, g);
  PNEUMO_LAUNCH_CHECK("gradient_partial_kernel", "batch=", batch, " channels=", channels,
                      " spatial=", spatial);
  gradient_finalize_kernel<<<blocks_for(channels), kThreadsPerBlock, 0, stream>>>(
      scratch, channels, r.chunks, static_cast<double>(batch * spatial), gamma, saved_inv_std,
      dgamma, dbeta, factors);
  PNEUMO_LAUNCH_CHECK("gradient_finalize_kernel", "channels=", channels);
  const InputGradient element{saved_mean, saved_inv_std, factors, channels, relu_gate, kept};
  if (!dx_sums) {
    input_gradient_kernel<<<plane_grid(batch * channels, spatial), kThreadsPerBlock, 0, stream>>>(
        x, dy, dx, element, batch * channels, spatial);
    PNEUMO_LAUNCH_CHECK("input_gradient_kernel", "total=", total);
    return;
  }
  // After the factors: one float per (plane, block row) of the input-gradient pass.
  float* partial = scratch + batchnorm_scratch_floats(r, channels);
  const dim3 planes = plane_grid(batch * channels, spatial);
  input_gradient_sums_kernel<<<planes, kThreadsPerBlock, 0, stream>>>(
      x, dy, dx, element, batch * channels, spatial, partial);
  PNEUMO_LAUNCH_CHECK("input_gradient_sums_kernel", "total=", total);
  plane_sums_total_kernel<<<static_cast<unsigned int>(std::min<int64_t>(channels, kMaxBlocks)),
                            kThreadsPerBlock, 0, stream>>>(
      partial, dx_sums, batch, channels, static_cast<int64_t>(planes.y));
  PNEUMO_LAUNCH_CHECK("plane_sums_total_kernel", "channels=", channels);
}

void batchnorm_backward_input(const float* x, const float* dy, const float* gamma,
                              const float* saved_mean, const float* saved_inv_std,
                              const float* sums, double count, float* dx, float* scratch,
                              int64_t batch, int64_t channels, int64_t spatial,
                              cudaStream_t stream) {
  const int64_t total = batch * channels * spatial;
  if (total == 0) return;
  static_assert(sizeof(BatchNormGradientFactors) == 3 * sizeof(float), "scratch: 3 floats each");
  auto* factors = reinterpret_cast<BatchNormGradientFactors*>(scratch);
  factors_from_sums_kernel<<<blocks_for(channels), kThreadsPerBlock, 0, stream>>>(
      sums, channels, count, gamma, saved_inv_std, factors);
  PNEUMO_LAUNCH_CHECK("factors_from_sums_kernel", "channels=", channels);
  const InputGradient element{saved_mean, saved_inv_std, factors, channels, /*relu_gate=*/false,
                              /*kept=*/1.0f};
  input_gradient_kernel<<<plane_grid(batch * channels, spatial), kThreadsPerBlock, 0, stream>>>(
      x, dy, dx, element, batch * channels, spatial);
  PNEUMO_LAUNCH_CHECK("input_gradient_kernel", "total=", total);
}

}  // namespace pneumo::kernels

namespace pneumo::kernels {

namespace {

// An empty batch (a rank's empty shard, an explain of nothing) still writes the per-channel
// outputs, as the CPU twins do: inference's saved statistics are the running ones, and the
// parameter gradients are zero.
void write_empty_batch_forward(const BlockTailArgs& t, cudaStream_t stream) {
  if (t.training || t.channels == 0) return;
  running_statistics_kernel<<<blocks_for(t.channels), kThreadsPerBlock, 0, stream>>>(t,
                                                                                     t.channels);
  PNEUMO_LAUNCH_CHECK("running_statistics_kernel", "channels=", t.channels);
}

// Scratch: batch-norm's partial sums and factors, the stem's weight sums or the bfloat16 tail's
// bias sums, then the mask's words.
int64_t sums_floats(const BlockTailArgs& t, const BiasReduction& r) {
  return batchnorm_scratch_floats(r, t.channels) + (t.x ? kStemSums * r.chunks * t.channels : 0) +
         (t.z ? r.partial_floats : 0);
}
bool draws_mask(const BlockTailArgs& t) { return t.training && t.rate > 0.0f; }
int64_t elements(const BlockTailArgs& t) { return t.batch * t.channels * t.height * t.width; }

// t with its dropout mask drawn into scratch (a training call with dropout), else t as it is.
BlockTailArgs with_mask(BlockTailArgs t, float* scratch, const BiasReduction& r,
                        cudaStream_t stream) {
  if (!draws_mask(t)) return t;
  auto* keep = reinterpret_cast<uint32_t*>(scratch + sums_floats(t, r));
  const int64_t n = elements(t);
  dropout_keep_kernel<<<blocks_for((n + 31) / 32), kThreadsPerBlock, 0, stream>>>(keep, n, t.rate,
                                                                                   t.key);
  PNEUMO_LAUNCH_CHECK("dropout_keep_kernel", "n=", n, " rate=", t.rate);
  t.keep = keep;
  return t;
}

}  // namespace

int64_t tail_scratch_floats(const BlockTailArgs& t, const BiasReduction& r) {
  static_assert(sizeof(uint32_t) == sizeof(float));
  return sums_floats(t, r) + (draws_mask(t) ? (elements(t) + 31) / 32 : 0);
}

void block_tail_forward(const BlockTailArgs& args, float* y, float* scratch,
                        const BiasReduction& r, cudaStream_t stream) {
  if (elements(args) == 0) return write_empty_batch_forward(args, stream);
  const BlockTailArgs t = with_mask(args, scratch, r, stream);
  tail_forward(t, StoredActivation{t.a, t.height * t.width}, /*plain=*/!draws_mask(t), y, scratch,
               r, stream);
}

void block_tail_backward(const BlockTailArgs& args, const float* dy, float* da, float* dgamma,
                         float* dbeta, float* scratch, const BiasReduction& r,
                         cudaStream_t stream) {
  if (elements(args) == 0) {
    zero_floats(dgamma, args.channels, stream);
    zero_floats(dbeta, args.channels, stream);
    return;
  }
  const BlockTailArgs t = with_mask(args, scratch, r, stream);
  const PoolGeometry pg{t.batch, t.channels, t.height, t.width};
  const BatchNormGradientFactors* factors = tail_gradient_factors(
      t, StoredActivation{t.a, t.height * t.width}, dy, dgamma, dbeta, scratch, r, stream);
  tail_input_gradient_kernel<<<plane_grid(pg.planes(), pg.out_height() * pg.out_width()),
                               kThreadsPerBlock, 0, stream>>>(t, dy, da, factors, pg);
  PNEUMO_LAUNCH_CHECK("tail_input_gradient_kernel", "total=", elements(t));
}

void stem_forward(const BlockTailArgs& args, float* y, float* scratch, const BiasReduction& r,
                  cudaStream_t stream) {
  if (elements(args) == 0) return write_empty_batch_forward(args, stream);
  const BlockTailArgs t = with_mask(args, scratch, r, stream);
  const RecomputedActivation source{t.x, t.weight, t.conv_bias, t.channels, t.height, t.width};
  tail_forward(t, source, /*plain=*/false, y, scratch, r, stream);
}

void stem_backward(const BlockTailArgs& args, const float* dy, float* dweight, float* dbias,
                   float* dgamma, float* dbeta, float* scratch, const BiasReduction& r,
                   cudaStream_t stream) {
  if (elements(args) == 0) {
    for (auto [gradient, count] : {std::pair{dweight, 9 * args.channels}, {dbias, args.channels},
                                   {dgamma, args.channels}, {dbeta, args.channels}})
      zero_floats(gradient, count, stream);
    return;
  }
  const BlockTailArgs t = with_mask(args, scratch, r, stream);
  const RecomputedActivation source{t.x, t.weight, t.conv_bias, t.channels, t.height, t.width};
  const BatchNormGradientFactors* factors =
      tail_gradient_factors(t, source, dy, dgamma, dbeta, scratch, r, stream);
  const PoolGeometry pg{t.batch, t.channels, t.height, t.width};
  const dim3 grid = chunk_grid("stem backward", r, t.batch, t.channels);
  const ChunkGeometry g{t.batch, t.channels, pg.out_height() * pg.out_width(), r.images_per_chunk};
  float* partial = scratch + batchnorm_scratch_floats(r, t.channels);
  stem_weight_partial_kernel<<<grid, kThreadsPerBlock, 0, stream>>>(t, source, dy, factors, pg,
                                                                    partial, g);
  PNEUMO_LAUNCH_CHECK("stem_weight_partial_kernel", "batch=", t.batch, " channels=", t.channels);
  stem_weight_finalize_kernel<<<blocks_for(t.channels), kThreadsPerBlock, 0, stream>>>(
      partial, t.channels, r.chunks, dweight, dbias);
  PNEUMO_LAUNCH_CHECK("stem_weight_finalize_kernel", "channels=", t.channels);
}

}  // namespace pneumo::kernels

// ---- The tail in bfloat16, channels-last -------------------------------------------------------
// z is an (N H W) x C matrix: a warp's 32 threads take 32 neighbouring channels of one pixel
// (64 contiguous bytes), the block's 8 rows of threads 8 pixels. The reductions give each block
// a tile of 32 channels and a chunk of whole images; each thread keeps its channel's sums over
// the pixels its row visits, and the block merges its 8 rows per channel in a fixed order.

namespace pneumo::kernels {
namespace {

constexpr int kTileChannels = 32, kTileRows = kThreadsPerBlock / kTileChannels;

dim3 tile_block() { return dim3(kTileChannels, kTileRows); }

dim3 tile_grid(const char* op, const BiasReduction& r, int64_t batch, int64_t channels) {
  const int64_t tiles = (channels + kTileChannels - 1) / kTileChannels;
  return chunk_grid(op, r, batch, tiles);
}

// Element e of z as the tail sees it: a = relu(z + bias), and its dropout multiplier.
__device__ __forceinline__ float tail_bf16_activation(const BlockTailArgs& t, int64_t e, float bias) {
  return pneumo::bias_relu(float_from_bf16(t.z[e]), bias, /*apply_relu=*/true);
}
__device__ __forceinline__ float tail_bf16_mask(const BlockTailArgs& t, int64_t e) {
  return t.training && t.rate > 0.0f ? dropout_multiplier_from_words(t.keep, e, t.rate) : 1.0f;
}

// The pixel range [first, last) of (N H W) that chunk blockIdx.y covers.
struct PixelChunk {
  int64_t first, last;
};
__device__ __forceinline__ PixelChunk pixel_chunk(int64_t batch, int64_t images_per_chunk,
                                                  int64_t pixels) {
  const int64_t n0 = blockIdx.y * images_per_chunk;
  const int64_t n1 = n0 + images_per_chunk < batch ? n0 + images_per_chunk : batch;
  return {n0 * pixels, n1 * pixels};
}

// This thread's channel in its block's tile (real: below the channel count) and the block's
// chunk of a tensor with `pixels` pixels an image.
struct TileThread {
  int64_t c;
  bool real;
  PixelChunk chunk;
};
__device__ __forceinline__ TileThread tile_thread(const BlockTailArgs& t, int64_t images_per_chunk,
                                                  int64_t pixels) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kTileChannels + threadIdx.x;
  return {c, c < t.channels, pixel_chunk(t.batch, images_per_chunk, pixels)};
}

// A pooling window at channel c: a and the multiplier at each real position (0 and 1 elsewhere),
// its element indices, and the winner of the normalised dropped values.
struct ChannelsLastWindow {
  float a[4], m[4];
  int64_t e[4];
  // Selected, not indexed (StemWindow's reason).
  __device__ float pick(const float (&v)[4], int p) const {
    return p == 0 ? v[0] : p == 1 ? v[1] : p == 2 ? v[2] : v[3];
  }
  __device__ float in_window(const PoolWindow&, int p) const { return pick(a, p) * pick(m, p); }
};

// Window w of image n at channel c.
__device__ __forceinline__ ChannelsLastWindow load_window(const BlockTailArgs& t, int64_t n,
                                                          const PoolWindow& w, int64_t c,
                                                          float bias) {
  ChannelsLastWindow v;
  const int64_t pixels = t.height * t.width;
#pragma unroll
  for (int p = 0; p < 4; ++p) {
    const bool real = w.real(p);
    v.e[p] = real ? (n * pixels + w.offset(p)) * t.channels + c : 0;
    v.a[p] = real ? tail_bf16_activation(t, v.e[p], bias) : 0.0f;
    v.m[p] = real ? tail_bf16_mask(t, v.e[p]) : 1.0f;
  }
  return v;
}

// The winner among the dropped values (already in in_window: the constants' rate set to 0).
__device__ __forceinline__ WindowWinner channels_last_winner(const ChannelsLastWindow& v,
                                                             const PoolWindow& w,
                                                             BlockTailChannel ch) {
  ch.rate = 0.0f;
  return block_tail_winner_of(v, 0, w, ch);
}

// Pooled pixel q (of N x out_h x out_w) as image and window.
struct PooledPixel {
  int64_t n;
  PoolWindow w;
};
__device__ __forceinline__ PooledPixel pooled_pixel(const PoolGeometry& g, int64_t q) {
  const int64_t out_plane = g.out_height() * g.out_width();
  const int64_t n = div_index(q, out_plane), s = q - n * out_plane;
  return {n, pool_window(g, div_index(s, g.out_width()), mod_index(s, g.out_width()))};
}

// Block (tile, chunk): mean and M2 of each of the tile's channels over the chunk's pixels, of
// the dropped activations, into partial[2 (c chunks + chunk) + {0, 1}] (moments_partial_kernel's
// layout, so moments_finalize_kernel merges them).
__global__ void tail_bf16_moments_kernel(BlockTailArgs t, float* partial,
                                         int64_t images_per_chunk) {
  const TileThread tile = tile_thread(t, images_per_chunk, t.height * t.width);
  const int64_t c = tile.c;
  const bool real = tile.real;
  const PixelChunk chunk = tile.chunk;
  Moments m{0.0f, 0.0f, 0.0f};
  if (real) {
    const float bias = t.conv_bias[c];
    auto value = [&](int64_t pixel) {
      const int64_t e = pixel * t.channels + c;
      return tail_bf16_activation(t, e, bias) * tail_bf16_mask(t, e);
    };
    int64_t q = chunk.first + threadIdx.y;
    for (; q + 3 * kTileRows < chunk.last; q += 4 * kTileRows)
      add_four(m, value(q), value(q + kTileRows), value(q + 2 * kTileRows),
               value(q + 3 * kTileRows));
    for (; q < chunk.last; q += kTileRows) add_value(m, value(q));
  }
  __shared__ Moments rows[kTileRows][kTileChannels];
  rows[threadIdx.y][threadIdx.x] = m;
  __syncthreads();
  if (threadIdx.y == 0 && real) {
    Moments total = rows[0][threadIdx.x];
    for (int k = 1; k < kTileRows; ++k) total = merge(total, rows[k][threadIdx.x]);
    float* out = partial + 2 * (c * gridDim.y + blockIdx.y);
    out[0] = total.mean;
    out[1] = total.m2;
  }
}

// One thread per pooled output (pixel, channel), channels fastest: the window's max of the
// normalised dropped values, rounded, into y (channels-last).
__global__ void tail_bf16_pool_kernel(BlockTailArgs t, uint16_t* y, PoolGeometry g) {
  const int64_t total = g.batch * g.out_height() * g.out_width() * t.channels;
  for (int64_t o = global_thread_index(); o < total; o += grid_stride()) {
    const int64_t q = div_index(o, t.channels), c = o - q * t.channels;
    const PooledPixel px = pooled_pixel(g, q);
    const ChannelsLastWindow v = load_window(t, px.n, px.w, c, t.conv_bias[c]);
    y[o] = bf16_from_float(channels_last_winner(v, px.w, tail_channel(t, c)).value);
  }
}

// Sums of 8 rows of a tile, channel by channel in row order, into out[c * gridDim.y + chunk]
// (stride floats apart for several sums per channel): `sums` holds the thread's `count` values.
template <int kCount>
__device__ void store_tile_sums(const float (&sums)[kCount], bool real, int64_t c, float* out) {
  __shared__ float rows[kCount][kTileRows][kTileChannels];
  for (int v = 0; v < kCount; ++v) rows[v][threadIdx.y][threadIdx.x] = sums[v];
  __syncthreads();
  if (threadIdx.y != 0 || !real) return;
  for (int v = 0; v < kCount; ++v) {
    float total = rows[v][0][threadIdx.x];
    for (int k = 1; k < kTileRows; ++k) total += rows[v][k][threadIdx.x];
    out[kCount * (c * gridDim.y + blockIdx.y) + v] = total;
  }
}

// Block (tile, chunk): per channel, sum dy and dy (d - mean) at each window's winner over the
// chunk's pooled pixels, into partial[2 (c chunks + chunk) + {0, 1}] (gradient_partial_kernel's
// layout, for gradient_finalize_kernel).
__global__ void tail_bf16_gradient_partial_kernel(BlockTailArgs t, const uint16_t* dy,
                                                  PoolGeometry g, float* partial,
                                                  int64_t images_per_chunk) {
  const TileThread tile = tile_thread(t, images_per_chunk, g.out_height() * g.out_width());
  const int64_t c = tile.c;
  const bool real = tile.real;
  const PixelChunk chunk = tile.chunk;
  float sums[2] = {0.0f, 0.0f};
  if (real) {
    const BlockTailChannel ch = tail_channel(t, c);
    const float bias = t.conv_bias[c];
    for (int64_t q = chunk.first + threadIdx.y; q < chunk.last; q += kTileRows) {
      const PooledPixel px = pooled_pixel(g, q);
      const ChannelsLastWindow v = load_window(t, px.n, px.w, c, bias);
      const WindowWinner won = channels_last_winner(v, px.w, ch);
      const float dyv = float_from_bf16(dy[q * t.channels + c]);
      sums[0] += dyv;
      sums[1] += dyv * (v.in_window(px.w, won.position) - ch.mean);
    }
  }
  store_tile_sums<2>(sums, real, c, partial);
}

// Block (tile, chunk): dz for every element of the chunk's windows at the tile's channels (the
// windows tile z: each element written once), rounded; and per channel the sum of dz before
// rounding into bias_partial[c chunks + chunk].
__global__ void tail_bf16_input_gradient_kernel(BlockTailArgs t, const uint16_t* dy, uint16_t* dz,
                                                const BatchNormGradientFactors* factors,
                                                PoolGeometry g, float* bias_partial,
                                                int64_t images_per_chunk) {
  const TileThread tile = tile_thread(t, images_per_chunk, g.out_height() * g.out_width());
  const int64_t c = tile.c;
  const bool real = tile.real;
  const PixelChunk chunk = tile.chunk;
  float sums[1] = {0.0f};
  if (real) {
    const BlockTailChannel ch = tail_channel(t, c);
    const BatchNormGradientFactors f = factors[c];
    const float bias = t.conv_bias[c];
    for (int64_t q = chunk.first + threadIdx.y; q < chunk.last; q += kTileRows) {
      const PooledPixel px = pooled_pixel(g, q);
      const ChannelsLastWindow v = load_window(t, px.n, px.w, c, bias);
      const int winner = channels_last_winner(v, px.w, ch).position;
      const float dyv = float_from_bf16(dy[q * t.channels + c]);
      for_each_real_position(px.w, [&](int p) {
        const float grad = block_tail_gradient(v.pick(v.a, p), v.pick(v.m, p),
                                               p == winner ? dyv : 0.0f, ch, f.scale, f.mean_dy,
                                               f.mean_dy_xhat);
        dz[v.e[p]] = bf16_from_float(grad);
        sums[0] += grad;
      });
    }
  }
  store_tile_sums<1>(sums, real, c, bias_partial);
}

// One thread per channel: its chunks' bias sums in chunk order, in double.
__global__ void chunk_sums_total_kernel(const float* partial, int64_t channels, int64_t chunks,
                                        float* total) {
  for (int64_t c = global_thread_index(); c < channels; c += grid_stride()) {
    double sum = 0.0;
    for (int64_t j = 0; j < chunks; ++j) sum += partial[c * chunks + j];
    total[c] = static_cast<float>(sum);
  }
}

}  // namespace

BiasReduction tail_bf16_reduction(int64_t batch, int64_t channels, int sm_count) {
  BiasReduction r =
      bias_reduction(batch, (channels + kTileChannels - 1) / kTileChannels, sm_count);
  r.partial_floats = channels * r.chunks;
  return r;
}

void block_tail_forward_bf16(const BlockTailArgs& args, uint16_t* y, float* scratch,
                             const BiasReduction& r, cudaStream_t stream) {
  if (elements(args) == 0) return write_empty_batch_forward(args, stream);
  const BlockTailArgs t = with_mask(args, scratch, r, stream);
  const PoolGeometry pg{t.batch, t.channels, t.height, t.width};
  if (t.training) {
    tail_bf16_moments_kernel<<<tile_grid("block_tail_forward_bf16", r, t.batch, t.channels),
                               tile_block(), 0, stream>>>(t, scratch, r.images_per_chunk);
    PNEUMO_LAUNCH_CHECK("tail_bf16_moments_kernel", "batch=", t.batch, " channels=", t.channels,
                        " height=", t.height, " width=", t.width);
  }
  tail_statistics(t, scratch, r, stream);
  const int64_t outputs = pg.batch * pg.out_height() * pg.out_width() * t.channels;
  tail_bf16_pool_kernel<<<blocks_for(outputs), kThreadsPerBlock, 0, stream>>>(t, y, pg);
  PNEUMO_LAUNCH_CHECK("tail_bf16_pool_kernel", "batch=", t.batch, " channels=", t.channels,
                      " height=", t.height, " width=", t.width);
}

void block_tail_backward_bf16(const BlockTailArgs& args, const uint16_t* dy, uint16_t* dz,
                              float* dbias, float* dgamma, float* dbeta, float* scratch,
                              const BiasReduction& r, cudaStream_t stream) {
  if (elements(args) == 0) {
    for (float* gradient : {dbias, dgamma, dbeta}) zero_floats(gradient, args.channels, stream);
    return;
  }
  const BlockTailArgs t = with_mask(args, scratch, r, stream);
  const PoolGeometry pg{t.batch, t.channels, t.height, t.width};
  const dim3 grid = tile_grid("block_tail_backward_bf16", r, t.batch, t.channels);
  tail_bf16_gradient_partial_kernel<<<grid, tile_block(), 0, stream>>>(t, dy, pg, scratch,
                                                                      r.images_per_chunk);
  PNEUMO_LAUNCH_CHECK("tail_bf16_gradient_partial_kernel", "batch=", t.batch,
                      " channels=", t.channels);
  auto* factors = reinterpret_cast<BatchNormGradientFactors*>(scratch + 2 * r.partial_floats);
  gradient_finalize_kernel<<<blocks_for(t.channels), kThreadsPerBlock, 0, stream>>>(
      scratch, t.channels, r.chunks, static_cast<double>(t.batch * t.height * t.width), t.gamma,
      t.saved_inv_std, dgamma, dbeta, factors, t.training);
  PNEUMO_LAUNCH_CHECK("bfloat16 tail gradient_finalize_kernel", "channels=", t.channels);
  float* bias_partial = scratch + batchnorm_scratch_floats(r, t.channels);
  tail_bf16_input_gradient_kernel<<<grid, tile_block(), 0, stream>>>(
      t, dy, dz, factors, pg, bias_partial, r.images_per_chunk);
  PNEUMO_LAUNCH_CHECK("tail_bf16_input_gradient_kernel", "batch=", t.batch,
                      " channels=", t.channels);
  chunk_sums_total_kernel<<<blocks_for(t.channels), kThreadsPerBlock, 0, stream>>>(
      bias_partial, t.channels, r.chunks, dbias);
  PNEUMO_LAUNCH_CHECK("chunk_sums_total_kernel", "channels=", t.channels);
}

}  // namespace pneumo::kernels
