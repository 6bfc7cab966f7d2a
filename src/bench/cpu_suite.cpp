// The CPU suite of `pneumo bench kernels`: the CPU backend's ops on the model's shapes (conv
// forward per layer, max-pool forward and backward per pool, batch-norm training forward and
// backward per conv output, the fused sigmoid + BCE, augmentation next to a plain memcpy of the
// same output bytes), validated against the fp64 references and timed with std::chrono. What
// runs on a machine without a GPU; every row says CPU.
#include <cstring>
#include <memory>
#include <sstream>

#include "bench/dense_case.hpp"
#include "bench/kernel_bench.hpp"
#include "bench/reference.hpp"
#include "bench/suite_common.hpp"
#include "bench/tail_case.hpp"
#include "bench/timing.hpp"
#include "pneumo/backend.hpp"

namespace pneumo::bench {
namespace {

class CpuSuite {
 public:
  CpuSuite(const KernelBenchConfig& config, BenchRun& run)
      : config_(config), run_(run), backend_(make_cpu_backend(config.threads)),
        timer_(host_flush_bytes()) {
    run_.platform = "CPU";
    run_.device = backend_->name() + ", no GPU";
    run_.peaks.fp32_basis = "peak unknown (not estimated for CPUs)";
    run_.peaks.dram_basis = "peak unknown (not estimated for CPUs)";
    std::ostringstream timing;
    timing << "timing: std::chrono::steady_clock per run, median and min of " << config.repeats
           << " repeats after " << config.warmup << " warm-up run(s); " << timer_.flush_bytes() / (1 << 20)
           << " MiB written between repeats to flush the last-level cache";
    run_.notes.push_back(timing.str());
    run_.notes.push_back(kSpeedupNote);
  }

  void run() { run_cases(config_, *this); }
  template <class Suite>
  friend void bench::run_cases(const KernelBenchConfig& config, Suite& suite);  // calls the cases

 private:
  BenchRow row(const std::string& op, const std::string& layer, const std::string& shape,
               int64_t batch, const std::string& variant, bool baseline) const {
    return make_row("CPU", op, layer, shape, batch, variant, baseline);
  }
  void case_failed(const char* family, const std::string& layer, int64_t batch,
                   const std::string& why) {
    run_.rows.push_back(failed_case_row("CPU", family, layer, batch, why));
  }
  std::function<TimingSummary()> timed(const std::function<void()>& op) {
    return [this, op] { return timer_.time(op, config_.warmup, config_.repeats); };
  }

  void conv(const LayerShape& layer, int64_t batch) {
    const ConvProblem p = make_conv_problem(layer, batch, kSeed);
    const std::vector<int64_t> images = checked_images(batch);
    const std::vector<float> expected = reference_conv(p, images);
    std::vector<float> y(static_cast<size_t>(p.y.numel()));
    BenchRow r = row("conv2d_forward", layer.conv, conv_shape_label(layer), batch,
                     "cpu backend: im2col + GEMM, bias + ReLU", false);
    r.reference = conv_reference_label(images);
    r.flops = p.flops();
    r.bytes = p.bytes();
    auto op = [&] {
      backend_->conv2d_forward({p.x_values.data(), p.x, Device::Cpu},
                               {p.weight_values.data(), p.weight, Device::Cpu},
                               {p.bias_values.data(), {p.weight[0]}, Device::Cpu},
                               {y.data(), p.y, Device::Cpu}, true);
    };
    measure(
        r, [&] { std::fill(y.begin(), y.end(), kPoison); op(); },
        [&] {
          const std::vector<float> checked = select_images(y.data(), p.y, images);
          return compare_outputs(checked.data(), expected.data(), checked_shape(p.y, images),
                                 kConvRtol);
        },
        timed(op));
    run_.rows.push_back(r);
  }

  void pool(const LayerShape& layer, int64_t batch) {
    const PoolProblem p = make_pool_problem(layer, batch, kSeed);
    std::vector<float> y(static_cast<size_t>(p.y.numel())), dx(static_cast<size_t>(p.x.numel()));
    const ConstTensorView x_view{p.x_values.data(), p.x, Device::Cpu};
    {
      BenchRow r = row("maxpool2d_forward", layer.pool, pool_shape_label(p.x), batch,
                       "cpu backend", false);
      r.reference = kPoolReference;
      r.bytes = p.forward_bytes();
      auto op = [&] { backend_->maxpool2d_forward(x_view, {y.data(), p.y, Device::Cpu}); };
      measure(
          r, [&] { std::fill(y.begin(), y.end(), kPoison); op(); },
          [&] { return compare_outputs(y.data(), p.y_expected.data(), p.y, 0.0); }, timed(op));
      run_.rows.push_back(r);
    }
    {
      BenchRow r = row("maxpool2d_backward", layer.pool, pool_shape_label(p.x), batch,
                       "cpu backend", false);
      r.reference = kPoolReference;
      r.bytes = p.backward_bytes();
      auto op = [&] {
        backend_->maxpool2d_backward(x_view, {p.y_expected.data(), p.y, Device::Cpu},
                                     {p.dy_values.data(), p.y, Device::Cpu},
                                     {dx.data(), p.x, Device::Cpu});
      };
      measure(
          r, [&] { std::fill(dx.begin(), dx.end(), kPoison); op(); },
          [&] { return compare_outputs(dx.data(), p.dx_expected.data(), p.x, 0.0); }, timed(op));
      run_.rows.push_back(r);
    }
  }

  void batchnorm(const LayerShape& layer, int64_t batch) {
    const BatchNormProblem p = make_batchnorm_problem(layer, batch, kSeed);
    const size_t n = static_cast<size_t>(p.x.numel()), k = static_cast<size_t>(p.channel.numel());
    std::vector<float> y(n), dx(n), mean(k), inv_std(k), dgamma(k), dbeta(k);
    std::vector<float> running_mean(k, 0.0f), running_var(k, 1.0f);
    auto in = [](const std::vector<float>& v, const Shape& s) {
      return ConstTensorView{v.data(), s, Device::Cpu};
    };
    auto out = [](std::vector<float>& v, const Shape& s) {
      return TensorView{v.data(), s, Device::Cpu};
    };
    const std::string shape = batchnorm_shape_label(p.x);
    const std::function<void()> forward = [&] {
      backend_->batchnorm_forward_training(
          in(p.x_values, p.x), in(p.gamma, p.channel), in(p.beta, p.channel),
          out(running_mean, p.channel), out(running_var, p.channel), BatchNormProblem::kFactor,
          BatchNormProblem::kEpsilon, out(y, p.x), out(mean, p.channel), out(inv_std, p.channel));
    };
    const std::function<void()> backward = [&] {
      backend_->batchnorm_backward(in(p.x_values, p.x), in(p.dy_values, p.x),
                                   in(p.gamma, p.channel), in(p.mean_expected, p.channel),
                                   in(p.inv_std_expected, p.channel), BatchNormProblem::kEpsilon,
                                   out(dx, p.x), out(dgamma, p.channel), out(dbeta, p.channel));
    };
    struct Direction {
      const char* op;
      double bytes;
      std::vector<float>& poisoned;
      const std::function<void()>& run;
      std::function<Comparison()> check;
    };
    const Direction directions[] = {
        {"batchnorm_forward_training", p.forward_bytes(), y, forward,
         [&] { return check_batchnorm_forward(y.data(), mean.data(), inv_std.data(), p); }},
        {"batchnorm_backward", p.backward_bytes(), dx, backward,
         [&] { return check_batchnorm_backward(dx.data(), dgamma.data(), dbeta.data(), p); }}};
    for (const Direction& d : directions) {
      BenchRow r = row(d.op, layer.conv, shape, batch, "cpu backend", false);
      r.reference = kBatchNormReference;
      r.bytes = d.bytes;
      measure(
          r, [&] { std::fill(d.poisoned.begin(), d.poisoned.end(), kPoison); d.run(); }, d.check,
          timed(d.run));
      run_.rows.push_back(r);
    }
    if (!has_gated_batchnorm(layer)) return;
    // As the unfused model calls it on conv2..conv5's outputs (suite_common.hpp).
    const GatedBatchNormExpected expected = gated_batchnorm_expected(p, layer);
    std::vector<float> sums(k);
    const std::function<void()> gated = [&] {
      backend_->batchnorm_backward(in(p.x_values, p.x), in(p.dy_values, p.x),
                                   in(p.gamma, p.channel), in(p.mean_expected, p.channel),
                                   in(p.inv_std_expected, p.channel), BatchNormProblem::kEpsilon,
                                   out(dx, p.x), out(dgamma, p.channel), out(dbeta, p.channel),
                                   true, expected.rate, out(sums, p.channel));
    };
    BenchRow r = row(kGatedBatchNormOp, layer.conv, shape, batch, "cpu backend", false);
    r.reference = kBatchNormReference;
    r.bytes = p.backward_bytes();
    measure(
        r,
        [&] {
          for (auto* v : {&dx, &sums}) std::fill(v->begin(), v->end(), kPoison);
          gated();
        },
        [&] {
          return check_gated_batchnorm_backward(dx.data(), dgamma.data(), dbeta.data(),
                                                sums.data(), p, expected);
        },
        timed(gated));
    run_.rows.push_back(r);
  }

  void loss(int64_t batch, int64_t n, const std::string& layer) {
    const LossProblem p = make_loss_problem(n, kSeed);
    std::vector<float> dlogits(static_cast<size_t>(n)), stats(2);
    BenchRow r = row("sigmoid_bce", layer, loss_shape_label(n), batch,
                     "cpu backend: fused sigmoid + BCE", false);
    r.reference = kLossReference;
    r.bytes = p.bytes();
    auto op = [&] {
      backend_->sigmoid_bce({p.logits.data(), {n}, Device::Cpu}, {p.labels.data(), {n}, Device::Cpu},
                            ConstTensorView{}, {dlogits.data(), {n}, Device::Cpu},
                            {stats.data(), {2}, Device::Cpu});
    };
    measure(
        r,
        [&] {
          std::fill(dlogits.begin(), dlogits.end(), kPoison);
          std::fill(stats.begin(), stats.end(), 0.0f);
          op();
        },
        [&] { return check_loss(dlogits.data(), stats.data(), p); }, timed(op));
    run_.rows.push_back(r);
  }

  // --precision bf16's conversions exist on CUDA only: the CPU backend rounds inside its
  // convolution (src/cpu/conv.cpp) and converts nothing.
  void bf16(const LayerShape&, int64_t) {}

  struct Variant {  // of a tail or stem case
    const char* name;
    bool baseline;
    std::function<void()> forward, backward;
  };

  // One block's tail: the fused op against the unfused chain of CPU backend ops, forward and
  // backward; the chain's outputs are the reference.
  void tail(size_t block, int64_t batch) {
    TailCase t(block, batch, Device::Cpu);
    t.chain_forward(*backend_);
    t.chain_backward(*backend_);
    const std::vector<float> y = t.y();
    const TailCase::Gradients gradients = t.gradients(/*stem=*/false);
    auto tail_row = [&](const char* op, const std::string& variant, bool baseline, double bytes) {
      BenchRow r = row(op, t.layer(), t.shape_label(), batch, variant, baseline);
      r.reference = kTailReference;
      r.bytes = bytes;
      return r;
    };
    auto check_y = [&] { return compare_outputs(t.y().data(), y.data(), t.y_shape(), kTailRtol); };
    auto check_gradients = [&] { return t.check_gradients(gradients); };
    const Variant variants[] = {
        {"cpu backend: unfused chain", true, [&] { t.chain_forward(*backend_); },
         [&] { t.chain_backward(*backend_); }},
        {"cpu backend: fused block tail", false, [&] { t.fused_forward(*backend_); },
         [&] { t.fused_backward(*backend_); }}};
    for (const Variant& v : variants) {
      BenchRow r = tail_row("block_tail_forward", v.name, v.baseline, t.forward_bytes());
      measure(r, [&] { t.poison_y(); v.forward(); }, check_y, timed(v.forward));
      run_.rows.push_back(r);
    }
    for (const Variant& v : variants) {
      BenchRow r = tail_row("block_tail_backward", v.name, v.baseline, t.backward_bytes());
      // Its own forward first (the chain's backward reads the chain's intermediates).
      v.forward();
      measure(r, [&] { t.poison_gradients(); v.backward(); }, check_gradients, timed(v.backward));
      run_.rows.push_back(r);
    }
    if (t.has_stem()) stem(t, batch);
  }

  // Block 1 whole: convolution + the unfused chain, convolution + the fused tail, the fused stem.
  void stem(TailCase& t, int64_t batch) {
    Backend& b = *backend_;
    t.conv_forward(b);
    t.chain_forward(b);
    t.chain_backward(b);
    t.conv_backward(b);
    const std::vector<float> y = t.y();
    const TailCase::Gradients gradients = t.gradients(/*stem=*/true);
    const Variant variants[] = {
        {"cpu backend: convolution + unfused chain", true,
         [&] { t.conv_forward(b); t.chain_forward(b); },
         [&] { t.chain_backward(b); t.conv_backward(b); }},
        {"cpu backend: convolution + fused tail", false,
         [&] { t.conv_forward(b); t.fused_forward(b); },
         [&] { t.fused_backward(b); t.conv_backward(b); }},
        {"cpu backend: fused stem (convolution recomputed)", false, [&] { t.stem_forward(b); },
         [&] { t.stem_backward(b); }}};
    const std::string layer = "block1", shape = "1x150x150 -> " + t.shape_label();
    for (const Variant& v : variants) {
      BenchRow r = row("stem_forward", layer, shape, batch, v.name, v.baseline);
      r.reference = kTailReference;
      r.bytes = t.stem_forward_bytes();
      measure(r, [&] { t.poison_y(); v.forward(); },
              [&] { return compare_outputs(t.y().data(), y.data(), t.y_shape(), kTailRtol); },
              timed(v.forward));
      run_.rows.push_back(r);
    }
    for (const Variant& v : variants) {
      BenchRow r = row("stem_backward", layer, shape, batch, v.name, v.baseline);
      r.reference = kTailReference;
      r.bytes = t.stem_backward_bytes();
      v.forward();
      measure(r, [&] { t.poison_gradients(); v.backward(); },
              [&] { return t.check_gradients(gradients); },
              timed(v.backward));
      run_.rows.push_back(r);
    }
  }

  void augment(int64_t batch) {
    const AugmentProblem p = make_augment_problem(batch, kSeed);
    const int size = p.size;
    const Shape out_shape{batch, 1, size, size};
    std::vector<float> out(static_cast<size_t>(out_shape.numel()));
    for (bool enabled : {true, false}) {
      AugmentSettings settings = p.settings;
      settings.enabled = enabled;
      const std::vector<float> expected = reference_augment(p, enabled);
      BenchRow r = row("gather_augment", "input", augment_shape_label(size), batch,
                       enabled ? "cpu backend: gather + augment" : "cpu backend: gather only",
                       false);
      r.reference = "augment_batch_cpu (the CPU backend's own function: a self-check)";
      r.bytes = p.bytes();
      auto op = [&] {
        backend_->gather_augment(p.images.data(), p.image_count, size, p.indices.data(), settings,
                                 p.key, {out.data(), out_shape, Device::Cpu});
      };
      measure(
          r, [&] { std::fill(out.begin(), out.end(), kPoison); op(); },
          [&] { return compare_outputs(out.data(), expected.data(), out_shape, 0.0); }, timed(op));
      run_.rows.push_back(r);
    }
    // The same number of output bytes copied with memcpy: the bandwidth the op is compared with.
    const std::vector<float> source = reference_augment(p, true);
    BenchRow r = row("gather_augment", "input", augment_shape_label(size), batch,
                     "memcpy of the output bytes", true);
    r.reference = "the copied buffer";
    r.bytes = 2.0 * p.output_bytes();
    auto op = [&] { std::memcpy(out.data(), source.data(), out.size() * sizeof(float)); };
    measure(
        r, [&] { std::fill(out.begin(), out.end(), kPoison); op(); },
        [&] { return compare_outputs(out.data(), source.data(), out_shape, 0.0); }, timed(op));
    run_.rows.push_back(r);
  }

  // A dense layer, forward and backward, with the float32 backend and with the backend emulating
  // --precision bf16 (each against the double sums of the operands as it reads them).
  void dense(int layer, int64_t batch) {
    if (!bf16_backend_) bf16_backend_ = make_cpu_backend(config_.threads, /*bf16=*/true);
    DenseCase d(layer, batch, Device::Cpu);
    const struct {
      const char* name;
      bool baseline, bf16;
      Backend* on;
    } variants[] = {{"cpu backend: fp32 GEMMs", true, false, backend_.get()},
                    {"cpu backend: bf16 emulated (operands rounded)", false, true,
                     bf16_backend_.get()}};
    for (const bool backward : {false, true}) {
      for (const auto& v : variants) {
        BenchRow r = d.row("CPU", backward, batch, v.name, v.baseline);
        const std::function<void()> op = [&] { d.run(*v.on, backward); };
        measure(r, [&] { d.poison_outputs(); op(); }, [&] { return d.check(backward, v.bf16); },
                timed(op));
        run_.rows.push_back(r);
      }
    }
  }

  const KernelBenchConfig& config_;
  BenchRun& run_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Backend> bf16_backend_;  // made on the first dense case
  HostTimer timer_;
};

}  // namespace

void run_cpu_suite(const KernelBenchConfig& config, BenchRun& run) { CpuSuite(config, run).run(); }

}  // namespace pneumo::bench
