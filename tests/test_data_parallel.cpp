// The pieces of data-parallel training that one process can check: shards tile a batch; a rank's
// augmentation and dropout draws at its place in the global batch are the ones one process draws
// there (key.first); synchronised batch-norm's backward from sums over the whole batch equals the
// unsplit op's; the group of one leaves its data alone; gradient buckets start once their layers'
// backward has run. Two real ranks run in
// scripts/test_data_parallel.sh (ctest DataParallelMpi).
#include <gtest/gtest.h>

#include <cmath>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "pneumo/backend.hpp"
#include "pneumo/distributed.hpp"
#include "pneumo/error.hpp"
#include "pneumo/model.hpp"
#include "pneumo/random.hpp"
#include "pneumo/trainer.hpp"
#include "gradient_check.hpp"
#include "test_util.hpp"

namespace pneumo {
namespace {

using testing::all_close;
using testing::nan_tensor;
using testing::random_tensor;
using testing::random_values;
using testing::to_host;

TEST(Shard, TilesTheBatchInRankOrderWithSizesWithinOne) {
  for (int64_t count : {1, 7, 32, 33, 186})
    for (int ranks : {1, 2, 3, 8}) {
      if (count < ranks) continue;
      int64_t next = 0, smallest = count, largest = 0;
      for (int r = 0; r < ranks; ++r) {
        const Shard s = shard_of(count, r, ranks);
        EXPECT_EQ(s.begin, next) << count << " over " << ranks;
        next = s.end;
        smallest = std::min(smallest, s.size());
        largest = std::max(largest, s.size());
      }
      EXPECT_EQ(next, count);
      EXPECT_LE(largest - smallest, 1);
    }
}

TEST(SingleProcess, CollectivesLeaveTheirInput) {
  Communicator& one = single_process();
  EXPECT_EQ(one.rank(), 0);
  EXPECT_EQ(one.size(), 1);
  std::vector<float> values{1.5f, -2.0f};
  one.all_reduce_sum(values.data(), 2, Device::Cpu);
  EXPECT_EQ(values, (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(one.all_gather(std::vector<double>{3.0}), std::vector<double>{3.0});
  EXPECT_TRUE(one.any(true));
  EXPECT_FALSE(one.any(false));
}

// Synthetic uint8 images whose pixels differ from image to image.
std::vector<uint8_t> images(int count, int size) {
  std::vector<uint8_t> pixels(static_cast<size_t>(count * size * size));
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>((i * 131 + i / 97) % 251);
  return pixels;
}

// Two ranks' shards of a batch of 6, each augmented with key.first at its place, put together:
// the batch one process augments. Keyed at the shard's own slots instead, the second rank would
// draw the first rank's transforms (the test fails that way: tried).
TEST(DataParallelStreams, ShardedAugmentationEqualsTheWholeBatch) {
  auto backend = make_cpu_backend(1);
  const int size = 24, count = 6;
  const std::vector<uint8_t> pixels = images(count, size);
  const std::vector<int32_t> order{4, 1, 5, 0, 3, 2};
  AugmentSettings settings;  // the recipe plus every photometric option
  settings.aspect = 0.2f;
  settings.brightness = settings.contrast = 0.1f;
  settings.gamma = 0.2f;
  RngKey key = make_key(9, RngStream::kAugment, 2, 5);
  // Outputs start NaN (nan_tensor): an op that wrote nothing fails all_close, which refuses NaN.
  Tensor whole = nan_tensor({count, 1, size, size});
  backend->gather_augment(pixels.data(), count, size, order.data(), settings, key, whole);
  std::vector<float> joined;
  for (int rank = 0; rank < 2; ++rank) {
    const Shard shard = shard_of(count, rank, 2);
    Tensor part = nan_tensor({shard.size(), 1, size, size});
    key.first = static_cast<uint32_t>(shard.begin);
    backend->gather_augment(pixels.data(), count, size, order.data() + shard.begin, settings, key,
                            part);
    const std::vector<float> host = to_host(part);
    joined.insert(joined.end(), host.begin(), host.end());
  }
  EXPECT_TRUE(all_close(joined, to_host(whole), 0, 0, "two shards vs the batch"));
}

TEST(DataParallelStreams, ShardedDropoutEqualsTheWholeBatch) {
  auto backend = make_cpu_backend(1);
  const Shape shape{6, 3, 5, 4};  // 60 elements per image: a multiple of 4
  const int64_t per_image = shape.numel() / shape.n();
  Tensor x = random_tensor(shape, Device::Cpu, 71, 0.5f, 1.5f);
  RngKey key = make_key(9, RngStream::kDropout, 2, 5);
  Tensor whole = nan_tensor(shape);  // as above
  backend->dropout_forward(x, whole, 0.4f, key);
  const std::vector<float> x_host = to_host(x);
  std::vector<float> joined;
  for (int rank = 0; rank < 2; ++rank) {
    const Shard shard = shard_of(shape.n(), rank, 2);
    const Shape part_shape{shard.size(), 3, 5, 4};
    Tensor part_x = Tensor::from_host(part_shape, x_host.data() + shard.begin * per_image,
                                      Device::Cpu);
    Tensor part_y = nan_tensor(part_shape);
    key.first = static_cast<uint32_t>(shard.begin * per_image);
    backend->dropout_forward(part_x, part_y, 0.4f, key);
    const std::vector<float> host = to_host(part_y);
    joined.insert(joined.end(), host.begin(), host.end());
  }
  EXPECT_TRUE(all_close(joined, to_host(whole), 0, 0, "two shards vs the batch"));
  key.first = 6;  // not a multiple of 4: the groups of four would straddle ranks
  Tensor y = Tensor::zeros(shape, Device::Cpu);
  EXPECT_THROW(backend->dropout_forward(x, y, 0.4f, key), Error);
}

// Synchronised batch-norm's backward, one process playing two ranks: each half of the batch
// normalised with the whole batch's statistics, its dbeta and dgamma added up, and dx computed from
// those sums must give the whole batch's dx.
TEST(SyncBatchNorm, HalvesWithSummedStatisticsGiveTheWholeBatchGradient) {
  auto backend = make_cpu_backend(1);
  const Shape shape{4, 3, 5, 6}, half{2, 3, 5, 6}, channel{3};
  const int64_t half_numel = half.numel();
  const std::vector<float> x_host = random_values(shape.numel(), 81, -1.0f, 3.0f);
  const std::vector<float> dy_host = random_values(shape.numel(), 82);
  const std::vector<float> gamma_host{0.7f, 1.3f, 1.0f};
  Tensor x = Tensor::from_host(shape, x_host.data(), Device::Cpu);
  Tensor dy = Tensor::from_host(shape, dy_host.data(), Device::Cpu);
  Tensor gamma = Tensor::from_host(channel, gamma_host.data(), Device::Cpu);
  Tensor beta = Tensor::zeros(channel, Device::Cpu), y = Tensor::zeros(shape, Device::Cpu);
  Tensor running_mean = Tensor::zeros(channel, Device::Cpu);
  Tensor running_var = Tensor::zeros(channel, Device::Cpu);
  Tensor mean = Tensor::zeros(channel, Device::Cpu), inv_std = Tensor::zeros(channel, Device::Cpu);
  backend->batchnorm_forward_training(x, gamma, beta, running_mean, running_var, 0.1, 1e-3, y, mean,
                                      inv_std);
  Tensor dx = Tensor::zeros(shape, Device::Cpu), dgamma = Tensor::zeros(channel, Device::Cpu),
         dbeta = Tensor::zeros(channel, Device::Cpu);
  backend->batchnorm_backward(x, dy, gamma, mean, inv_std, 1e-3, dx, dgamma, dbeta);

  // The N, C, H, W layout keeps each image's planes together: the halves are contiguous.
  std::vector<float> sums(6, 0.0f);
  std::vector<Tensor> xs, dys;
  for (int rank = 0; rank < 2; ++rank) {
    xs.push_back(Tensor::from_host(half, x_host.data() + rank * half_numel, Device::Cpu));
    dys.push_back(Tensor::from_host(half, dy_host.data() + rank * half_numel, Device::Cpu));
    Tensor scratch = Tensor::zeros(half, Device::Cpu), g = Tensor::zeros(channel, Device::Cpu),
           b = Tensor::zeros(channel, Device::Cpu);
    backend->batchnorm_backward(xs.back(), dys.back(), gamma, mean, inv_std, 1e-3, scratch, g, b);
    const std::vector<float> gh = to_host(g), bh = to_host(b);
    for (int c = 0; c < 3; ++c) {
      sums[static_cast<size_t>(c)] += bh[static_cast<size_t>(c)];
      sums[static_cast<size_t>(3 + c)] += gh[static_cast<size_t>(c)];
    }
  }
  Tensor sum_tensor = Tensor::from_host({2, 3}, sums.data(), Device::Cpu);
  std::vector<float> joined;
  for (int rank = 0; rank < 2; ++rank) {
    Tensor part = Tensor::zeros(half, Device::Cpu);
    backend->batchnorm_backward_input(xs[static_cast<size_t>(rank)],
                                      dys[static_cast<size_t>(rank)], gamma, mean, inv_std,
                                      sum_tensor, static_cast<double>(4 * 5 * 6), part);
    const std::vector<float> host = to_host(part);
    joined.insert(joined.end(), host.begin(), host.end());
  }
  EXPECT_TRUE(all_close(joined, to_host(dx), 1e-5, 1e-4, "halves vs the whole batch"));
  // Each half's own count instead of the whole batch's gives another gradient (the test can fail).
  Tensor wrong = Tensor::zeros(half, Device::Cpu);
  backend->batchnorm_backward_input(xs[0], dys[0], gamma, mean, inv_std, sum_tensor, 2.0 * 5 * 6,
                                    wrong);
  const std::vector<float> whole = to_host(dx);
  EXPECT_FALSE(all_close(to_host(wrong), std::vector<float>(whole.begin(), whole.begin() + half_numel),
                         1e-5, 1e-4, "")) << "the half's count must change dx";
  // A count below the values x holds per channel is refused.
  EXPECT_THROW(backend->batchnorm_backward_input(xs[0], dys[0], gamma, mean, inv_std, sum_tensor,
                                                 59.0, wrong),
               Error);
}

}  // namespace
}  // namespace pneumo

namespace pneumo {
namespace {

// A group of one that records, for each gradient bucket started, its range and which layers had
// finished their backward pass by then.
class RecordingGroup final : public Communicator {
 public:
  struct Start {
    int64_t begin, count;
    std::set<size_t> done;  // layers whose backward had run
  };
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "recording"; }
  void all_reduce_sum(float*, int64_t, Device) override { ++blocking; }
  void start_all_reduce_sum(float* values, int64_t count, Device) override {
    starts.push_back({values - base, count, done});
  }
  void finish_all_reduces() override {  // the step's end: the next backward starts afresh
    ++finishes;
    done.clear();
  }
  void all_reduce_sum(double*, int) override {}
  std::vector<double> all_gather(const std::vector<double>& local) override { return local; }
  std::vector<float> all_gather(const std::vector<float>& local) override { return local; }
  void broadcast(float*, int64_t, Device) override {}
  void broadcast_bytes(void*, size_t) override {}
  [[noreturn]] void abort(int status) override { std::exit(status); }

  const float* base = nullptr;  // the gradient buffer
  std::set<size_t> done;
  std::vector<Start> starts;
  int blocking = 0, finishes = 0;
};

// A small network on 32 x 32 inputs, and `count` generated images for it (labels 0, 1, 0, 1, 1,
// 0, 1, 0, ... repeating), as the trainer tests below need them.
ModelConfig small_model() {
  ModelConfig config;
  config.input_size = 32;
  config.channels = {8, 8, 16, 16, 32};
  config.hidden = 16;
  return config;
}
struct GeneratedImages {
  explicit GeneratedImages(int count)
      : pixels(static_cast<size_t>(count) * 32 * 32), labels(static_cast<size_t>(count)) {
    for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 7 % 251);
    const uint8_t pattern[] = {0, 1, 0, 1, 1, 0, 1, 0};
    for (size_t i = 0; i < labels.size(); ++i) labels[i] = pattern[i % 8];
    set = ImageSet::upload(Device::Cpu, pixels.data(), count, 32, labels.data());
  }
  std::vector<uint8_t> pixels, labels;
  ImageSet set;
};

// Every bucket starts only once the layers owning its gradients have run their backward, the
// buckets tile the buffer once, and with a small bucket several travel before the backward pass
// reaches the first layer (the overlap).
TEST(GradientBuckets, StartWhenTheirLayersAreDoneAndTileTheBuffer) {
  auto backend = make_cpu_backend(1);
  Model model(*backend, small_model(), 4);
  model.initialize(3);
  const int64_t numel = model.gradients().numel();
  const GeneratedImages images(8);
  const ImageSet& data = images.set;
  const std::vector<int32_t> order{0, 1, 2, 3, 4, 5, 6, 7};

  for (int64_t bucket : {int64_t{0}, int64_t{2000}}) {
    RecordingGroup group;
    group.base = model.gradients().data;
    Trainer trainer(*backend, model, 4, AugmentSettings{}, 5);
    trainer.set_group(group);
    trainer.set_all_reduce_bucket(bucket);
    model.set_layer_marker([&](size_t layer, bool backward) {
      if (backward) group.done.insert(layer);
    });
    trainer.train_epoch(data, order, 0);
    model.set_layer_marker({});
    const size_t per_step = trainer.all_reduce_buckets().size();
    ASSERT_EQ(group.starts.size(), 2 * per_step) << "two steps";
    EXPECT_EQ(group.finishes, 2);
    EXPECT_EQ(group.blocking, 0);
    for (size_t s = 0; s < 2; ++s) {
      std::vector<int> covered(static_cast<size_t>(numel), 0);
      size_t before_first_layer = 0;
      for (size_t k = s * per_step; k < (s + 1) * per_step; ++k) {
        const RecordingGroup::Start& start = group.starts[k];
        for (int64_t i = start.begin; i < start.begin + start.count; ++i)
          ++covered[static_cast<size_t>(i)];
        for (const ParameterInfo& info : model.parameter_infos()) {
          const bool inside = info.offset < start.begin + start.count &&
                              info.offset + info.shape.numel() > start.begin;
          const size_t layer = model.layer_index(info.name.substr(0, info.name.find('.')));
          if (inside) {
            EXPECT_TRUE(start.done.count(layer))
                << info.name << " sent before " << model.layer_name(layer) << "'s backward";
          }
        }
        if (!start.done.count(0)) ++before_first_layer;
      }
      EXPECT_EQ(std::count(covered.begin(), covered.end(), 1), numel) << "each element once";
      if (bucket == 0) {
        EXPECT_EQ(per_step, 1u);
      } else {
        EXPECT_GE(per_step, 3u);
        EXPECT_GE(before_first_layer, 2u) << "buckets travel during the backward pass";
      }
    }
  }
}

// Rank 0 of three, the other ranks' contributions left out (every collective keeps its input):
// what rank 0 alone computes.
class FirstOfThree final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 3; }
  std::string name() const override { return "rank 0 of 3, alone"; }
  void all_reduce_sum(float*, int64_t, Device) override {}
  void all_reduce_sum(double*, int) override {}
  std::vector<double> all_gather(const std::vector<double>& local) override { return local; }
  std::vector<float> all_gather(const std::vector<float>& local) override { return local; }
  void broadcast(float*, int64_t, Device) override {}
  void broadcast_bytes(void*, size_t) override {}
  [[noreturn]] void abort(int status) override { std::exit(status); }
};

// The running loss and accuracy a rank reports during an epoch are means over the images of its
// own shards: with a batch of 5 on 3 ranks rank 0 holds 1 image a step, so 2 after two steps
// (dividing by its share of the 10 images so far, 3, read accuracy a third low).
TEST(DataParallelProgress, RunningMeansCountTheRanksOwnImages) {
  auto backend = make_cpu_backend(1);
  Model model(*backend, small_model(), 5);
  model.initialize(3);
  const GeneratedImages images(10);
  FirstOfThree group;
  Trainer trainer(*backend, model, 5, AugmentSettings{}, 5);
  trainer.set_group(group);
  std::vector<EpochStats> reports;
  trainer.train_epoch(images.set, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 0,
                      [&](int64_t, int64_t, const EpochStats& running) {
                        reports.push_back(running);
                      });
  ASSERT_FALSE(reports.empty());
  const EpochStats& last = reports.back();
  EXPECT_EQ(last.images, 2);
  EXPECT_EQ(last.correct, std::round(last.correct));
  EXPECT_DOUBLE_EQ(last.accuracy, last.correct / 2.0);
  EXPECT_DOUBLE_EQ(last.loss, last.loss_sum / 2.0);
}

// A rank's gradient is of the whole batch's mean loss: its shard's loss gradient is divided by the
// global batch, so that the ranks' gradients add up to one process's. Rank 0 of three with a
// batch of 6 holds images 0-1, and (without synchronised batch-norm) computes what one process
// computes on those two images alone, scaled by 2/6: the weights alone cannot show a scale, since
// RMSprop's step hardly depends on the gradient's size.
TEST(DataParallelGradients, ARanksGradientIsItsShardsOverTheGlobalBatch) {
  auto backend = make_cpu_backend(1);
  const GeneratedImages images(6);
  auto gradients_after_one_step = [&](int batch, const std::vector<int32_t>& order,
                                      Communicator* group) {
    Model model(*backend, small_model(), batch);
    model.initialize(3);
    Trainer trainer(*backend, model, batch, AugmentSettings{}, 5);
    if (group) trainer.set_group(*group);
    trainer.train_epoch(images.set, order, 0);
    const std::vector<float> g = to_host(model.gradients());
    return g;
  };
  FirstOfThree group;
  const std::vector<float> rank0 = gradients_after_one_step(6, {0, 1, 2, 3, 4, 5}, &group);
  const std::vector<float> alone = gradients_after_one_step(2, {0, 1}, nullptr);
  ASSERT_EQ(rank0.size(), alone.size());
  std::vector<float> scaled(alone.size());
  for (size_t i = 0; i < alone.size(); ++i) scaled[i] = alone[i] * (2.0f / 6.0f);
  float peak = 0.0f;
  for (float v : scaled) peak = std::max(peak, std::fabs(v));
  ASSERT_GT(peak, 0.0f) << "the step produced gradients";
  // The loss gradient divided by 6, or by 2 and then scaled by 1/3, rounds apart in its last bit,
  // and batch-norm's backward (a difference of means) carries that to the small gradients: with
  // the built-in GEMM (no OpenBLAS, as on the GPU hosts) 2 of 9,793 elements near 1e-3 differed
  // by 1.5e-7. A shard divided by itself instead of the global batch is off by 3x everywhere.
  EXPECT_TRUE(all_close(rank0, scaled, 1e-6 * peak, 1e-4, "rank 0 of 3 vs its shard alone x 2/6"));
}

// A transport that cannot be had leaves the run its group, so that the error names the rank and
// every rank is stopped through it (before, the group was moved into the call and gone on a throw).
TEST(Transport, ARefusedTransportLeavesTheGroup) {
  std::unique_ptr<Communicator> group = std::make_unique<RecordingGroup>();
  Communicator* const before = group.get();
  const std::unique_ptr<Backend> cpu = make_cpu_backend(1);
  try {
    add_transport(group, *cpu, AllReduceTransport::Nccl);
    FAIL() << "NCCL on the CPU backend was not refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs the CUDA backend"), std::string::npos) << e.what();
  }
  EXPECT_EQ(group.get(), before);
  for (AllReduceTransport t : {AllReduceTransport::Auto, AllReduceTransport::Mpi}) {
    add_transport(group, *cpu, t);
    EXPECT_EQ(group.get(), before) << "one CPU process needs no other transport";
  }
  // The same refusal before any backend exists (train checks it before making its run folder).
  EXPECT_THROW(check_transport(AllReduceTransport::Nccl, Device::Cpu), Error);
  for (AllReduceTransport t : {AllReduceTransport::Auto, AllReduceTransport::Mpi})
    for (Device d : {Device::Cpu, Device::Cuda}) EXPECT_NO_THROW(check_transport(t, d));
  if (built_with_nccl()) {
    EXPECT_NO_THROW(check_transport(AllReduceTransport::Nccl, Device::Cuda));
  } else {
    EXPECT_THROW(check_transport(AllReduceTransport::Nccl, Device::Cuda), Error);
  }
}

// --bucket-mb in floats: 0 is one buffer after the backward pass; any positive size is at least
// one float (a bucket per layer), where 1e-9 MiB rounded to 0 and meant the one buffer.
TEST(GradientBuckets, MebibytesToFloats) {
  EXPECT_EQ(bucket_elements(0.0), 0);
  EXPECT_EQ(bucket_elements(1.0), 262144);
  EXPECT_EQ(bucket_elements(0.5), 131072);
  EXPECT_EQ(bucket_elements(1e-9), 1);
  EXPECT_EQ(bucket_elements(3.0 / (1 << 20)), 1);  // 3 bytes
  EXPECT_EQ(bucket_elements(8.0 / (1 << 20)), 2);
}

// The launcher's size, read from its environment: a step of one process (srun inside a batch job)
// runs as one process even in a build without MPI, instead of stopping every training.
TEST(Launcher, SizeFromTheLaunchersEnvironment) {
  const char* names[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS", "SLURM_PROCID",
                         "SLURM_STEP_ID", "PMIX_RANK"};
  for (const char* name : names) ::unsetenv(name);
  EXPECT_FALSE(launched_by_mpi());
  EXPECT_EQ(launcher_size(), 0);
  ::setenv("SLURM_NTASKS", "1", 1);
  ::setenv("SLURM_PROCID", "0", 1);
  ::setenv("SLURM_STEP_ID", "0", 1);
  EXPECT_TRUE(launched_by_mpi());
  EXPECT_EQ(launcher_size(), 1);
  if (!built_with_mpi()) {
    EXPECT_EQ(make_communicator()->size(), 1);
  }
  ::setenv("SLURM_NTASKS", "4x", 1);  // not a number: unknown
  EXPECT_EQ(launcher_size(), 0);
  ::setenv("OMPI_COMM_WORLD_SIZE", "3", 1);  // Open MPI's own says first
  EXPECT_EQ(launcher_size(), 3);
  for (const char* name : names) ::unsetenv(name);
}

// The rank, read from the launcher's environment before MPI starts (for the command line's errors,
// said by rank 0 alone): only under a launcher, Open MPI's own variable first.
TEST(Launcher, RankFromTheLaunchersEnvironment) {
  const char* names[] = {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMI_SIZE", "PMI_RANK",
                         "PMIX_RANK", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_STEP_ID"};
  for (const char* name : names) ::unsetenv(name);
  ::setenv("PMI_RANK", "1", 1);
  EXPECT_EQ(launcher_rank(), -1) << "not launched: no rank, whatever a stray variable says";
  ::setenv("PMI_SIZE", "2", 1);
  EXPECT_EQ(launcher_rank(), 1);
  ::setenv("PMI_RANK", "one", 1);
  EXPECT_EQ(launcher_rank(), -1) << "not a number: unknown";
  ::setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
  ::setenv("OMPI_COMM_WORLD_RANK", "0", 1);
  EXPECT_EQ(launcher_rank(), 0);
  ::setenv("OMPI_COMM_WORLD_RANK", "3", 1);
  EXPECT_EQ(launcher_rank(), 3);
  for (const char* name : names) ::unsetenv(name);
}

TEST(Launcher, CollectiveTimeoutFromTheEnvironment) {
  ::unsetenv("PNEUMO_COLLECTIVE_TIMEOUT");
  EXPECT_EQ(collective_timeout_seconds(), 600.0);  // PyTorch's NCCL watchdog's default
  ::setenv("PNEUMO_COLLECTIVE_TIMEOUT", "90.5", 1);
  EXPECT_EQ(collective_timeout_seconds(), 90.5);
  ::setenv("PNEUMO_COLLECTIVE_TIMEOUT", "0", 1);  // never
  EXPECT_EQ(collective_timeout_seconds(), 0.0);
  for (const char* bad : {"-1", "ten", "10s", "nan", "inf"}) {
    ::setenv("PNEUMO_COLLECTIVE_TIMEOUT", bad, 1);
    try {
      collective_timeout_seconds();
      ADD_FAILURE() << bad << " was taken";
    } catch (const UsageError& e) {  // bad usage, status 2
      EXPECT_NE(std::string(e.what()).find("PNEUMO_COLLECTIVE_TIMEOUT"), std::string::npos)
          << e.what();
    }
  }
  ::unsetenv("PNEUMO_COLLECTIVE_TIMEOUT");
}

}  // namespace
}  // namespace pneumo
