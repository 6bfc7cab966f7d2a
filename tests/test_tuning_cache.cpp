// The CUDA backend's tuning cache (src/cuda/tuning_cache.hpp): keys, reuse from a larger batch,
// the file (contexts kept apart, merged on save, a bad file replaced, an unwritable one a
// warning), the Chooser taking a remembered decision without timing (host-only: these run in CI),
// and on a GPU a second backend reusing the first one's decisions through the file.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands/flag_text.hpp"
#include "cuda/chooser.hpp"
#include "cuda/cuda_backend.hpp"
#include "cuda/tuning_cache.hpp"
#include "pneumo/backend.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"

namespace pneumo {
namespace {

using cuda::TuningCache;
using cuda::TuningKey;

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

TEST(TuningCache, KeysReadBackAndMalformedOnesAreRefused) {
  const TuningKey key{"conv2d_backward_data algorithm", {32, 64, 75, 75, 64}};
  EXPECT_EQ(TuningCache::key_text(key), "conv2d_backward_data algorithm 32,64,75,75,64");
  TuningKey back;
  ASSERT_TRUE(TuningCache::parse_key(TuningCache::key_text(key), back));
  EXPECT_EQ(back.op, key.op);
  EXPECT_EQ(back.shape, key.shape);
  for (const char* bad : {"", "conv", "conv ", " 1,2", "conv 1,,2", "conv 1,x", "conv 0,3",
                          "conv -1,3"})
    EXPECT_FALSE(TuningCache::parse_key(bad, back)) << "'" << bad << "'";
}

TEST(TuningCache, ASmallerBatchReusesTheNearestLargerOne) {
  TuningCache cache;  // in memory
  cache.store({"maxpool2d_forward", {32, 16, 150, 150}}, {{"kernel", true}});
  cache.store({"maxpool2d_forward", {256, 16, 150, 150}}, {{"kernel", false}});
  cache.store({"maxpool2d_forward", {26, 32, 150, 150}}, {{"kernel", true}});  // another layer

  TuningCache::Hit hit = cache.find({"maxpool2d_forward", {26, 16, 150, 150}});
  ASSERT_NE(hit.decision, nullptr);
  EXPECT_EQ(hit.batch, 32);
  EXPECT_FALSE(hit.exact());
  EXPECT_TRUE((*hit.decision)["kernel"].get<bool>());
  hit = cache.find({"maxpool2d_forward", {100, 16, 150, 150}});
  ASSERT_NE(hit.decision, nullptr);
  EXPECT_EQ(hit.batch, 256);
  hit = cache.find({"maxpool2d_forward", {256, 16, 150, 150}});
  EXPECT_TRUE(hit.exact());
  EXPECT_EQ(cache.find({"maxpool2d_forward", {300, 16, 150, 150}}).decision, nullptr)
      << "a larger batch than any seen is decided anew";
  EXPECT_EQ(cache.find({"maxpool2d_backward", {32, 16, 150, 150}}).decision, nullptr);
  EXPECT_EQ(cache.find({"maxpool2d_forward", {32, 16, 150, 151}}).decision, nullptr);

  const nlohmann::json report = cache.report();
  EXPECT_EQ(report["exact_hits"], 1);
  EXPECT_EQ(report["larger_batch_hits"], 2);
  EXPECT_EQ(report["misses"], 3);
  EXPECT_EQ(report["stored"], 3);
  EXPECT_TRUE(cache.save()) << "in memory: nothing to write, not a failure";
}

TEST(TuningCache, TheFileKeepsContextsApartAndMergesRuns) {
  testing::TempDir dir;
  const std::string path = dir.file("sub/tuning.json");  // the folder is made on save
  {
    TuningCache first(path, "GPU A, fp32");
    EXPECT_EQ(first.size(), 0u);
    first.store({"conv2d_forward algorithm", {32, 1, 150, 150, 32}}, {{"algo", 1}, {"math", 1}});
    ASSERT_TRUE(first.save());
  }
  {
    // Two runs open the file, each adds a shape; both shapes survive their saves.
    TuningCache second(path, "GPU A, fp32"), third(path, "GPU A, fp32");
    EXPECT_EQ(second.size(), 1u);
    second.store({"batchnorm_backward", {32, 32, 150, 150}}, {{"kernel", true}});
    third.store({"maxpool2d_backward", {32, 32, 150, 150}}, {{"kernel", false}});
    ASSERT_TRUE(second.save());
    ASSERT_TRUE(third.save());
    TuningCache other(path, "GPU B, fp32");
    EXPECT_EQ(other.size(), 0u) << "another GPU's decisions are not this one's";
    other.store({"maxpool2d_backward", {32, 32, 150, 150}}, {{"kernel", true}});
    ASSERT_TRUE(other.save());
  }
  TuningCache reread(path, "GPU A, fp32");
  EXPECT_EQ(reread.size(), 3u);
  const TuningCache::Hit hit = reread.find({"conv2d_forward algorithm", {32, 1, 150, 150, 32}});
  ASSERT_NE(hit.decision, nullptr);
  EXPECT_EQ((*hit.decision)["algo"], 1);
  EXPECT_FALSE(
      (*reread.find({"maxpool2d_backward", {32, 32, 150, 150}}).decision)["kernel"].get<bool>());
  const nlohmann::json file = read_json(path);
  EXPECT_EQ(file["format"], "pneumo-tuning-cache");
  EXPECT_EQ(file["contexts"].size(), 2u);
  EXPECT_TRUE(file["contexts"]["GPU B, fp32"]["maxpool2d_backward 32,32,150,150"]["kernel"]
                  .get<bool>());
}

// The state a recipe's clock is labelled with: cold while the file holds nothing for this
// context (another context's entries do not count), warm once every lookup is answered from it
// (a smaller batch from a larger one included), partly warm when a run still decides something.
TEST(TuningCache, SaysWhetherTheFileSparedTheRunItsDecisions) {
  EXPECT_EQ(TuningCache().state(), "in memory");
  testing::TempDir dir;
  const std::string path = dir.file("tuning.json");
  const TuningKey conv{"conv2d_forward algorithm", {32, 1, 150, 150, 32}};
  const TuningKey pool{"maxpool2d_forward", {32, 32, 150, 150}};
  {
    TuningCache other(path, "GPU B, fp32");
    other.store(conv, {{"algo", 0}, {"math", 1}});
    ASSERT_TRUE(other.save());
  }
  {
    TuningCache first(path, "GPU A, fp32");
    EXPECT_EQ(first.state(), "cold") << "GPU B's decision is not this context's";
    EXPECT_EQ(first.find(conv).decision, nullptr);
    first.store(conv, {{"algo", 1}, {"math", 1}});
    EXPECT_EQ(first.state(), "cold");
    EXPECT_EQ(first.report()["state"], "cold");
    // The line train and bench train print from a backend's report.
    EXPECT_EQ(describe_tuning_cache({{"tuning_cache", first.report()}}),
              "tuning cache cold (" + path + "): 0 decisions loaded for this GPU and precision, "
              "0 lookups answered from them, 1 decided in this run");
    EXPECT_EQ(describe_tuning_cache(nlohmann::json::object()), "") << "the CPU backend's report";
    ASSERT_TRUE(first.save());
  }
  {
    TuningCache second(path, "GPU A, fp32");
    EXPECT_EQ(second.state(), "warm") << "nothing asked yet, nothing decided";
    EXPECT_NE(second.find({conv.op, {26, 1, 150, 150, 32}}).decision, nullptr);
    EXPECT_EQ(second.state(), "warm") << "the last partial batch takes batch 32's pick";
    EXPECT_EQ(second.find(pool).decision, nullptr);
    EXPECT_EQ(second.state(), "partly warm") << "a lookup the file could not answer";
    second.store(pool, {{"kernel", true}});
    EXPECT_EQ(second.report()["state"], "partly warm");
    ASSERT_TRUE(second.save());
  }
  {
    // Decisions for this context, but for other shapes only: nothing was spared, a cold start.
    TuningCache elsewhere(path, "GPU A, fp32");
    EXPECT_EQ(elsewhere.find({conv.op, {32, 64, 75, 75, 64}}).decision, nullptr);
    EXPECT_EQ(elsewhere.state(), "cold") << "loaded decisions answered no lookup";
  }
  TuningCache third(path, "GPU A, fp32");
  EXPECT_NE(third.find(conv).decision, nullptr);
  EXPECT_NE(third.find(pool).decision, nullptr);
  EXPECT_EQ(third.state(), "warm");
  EXPECT_EQ(describe_tuning_cache({{"tuning_cache", third.report()}}),
            "tuning cache warm (" + path + "): 2 decisions loaded for this GPU and precision, "
            "2 lookups answered from them, 0 decided in this run");
  third.store(pool, {{"kernel", false}});  // a recalled pick that no longer applied, searched again
  EXPECT_EQ(third.state(), "partly warm");
}

// The ranks of a data-parallel run save the same file at the same moments: each save's read,
// merge and replace holds a lock, so no rank's entries are lost to another's replace.
TEST(TuningCache, SavesAtTheSameTimeLoseNoEntries) {
  testing::TempDir dir;
  const std::string path = dir.file("tuning.json");
  constexpr int kRanks = 6, kShapes = 15;
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < kRanks; ++rank)
    ranks.emplace_back([&path, rank] {
      TuningCache cache(path, "GPU A, fp32");
      for (int64_t shape = 0; shape < kShapes; ++shape) {
        cache.store({"batchnorm_backward", {32, rank, shape}}, {{"kernel", true}});
        EXPECT_TRUE(cache.save());
      }
    });
  for (std::thread& t : ranks) t.join();
  EXPECT_EQ(TuningCache(path, "GPU A, fp32").size(), static_cast<size_t>(kRanks * kShapes));
}

TEST(TuningCache, ABadFileIsReplacedAndAnUnwritableOneIsAWarning) {
  testing::TempDir dir;
  const std::string path = dir.file("tuning.json");
  std::ofstream(path) << "{\"format\": \"something else\"}";
  {
    TuningCache cache(path, "GPU A");
    EXPECT_EQ(cache.size(), 0u);
    cache.store({"maxpool2d_forward", {8, 1, 4, 4}}, {{"kernel", true}});
    ASSERT_TRUE(cache.save());
  }
  EXPECT_EQ(TuningCache(path, "GPU A").size(), 1u);

  std::ofstream(dir.file("blocker")) << "a file where a folder should be";
  TuningCache unwritable(dir.file("blocker/tuning.json"), "GPU A");
  unwritable.store({"maxpool2d_forward", {8, 1, 4, 4}}, {{"kernel", true}});
  EXPECT_FALSE(unwritable.save());  // no throw: training goes on without the file
}

// The Chooser takes a remembered decision without timing anything: no CUDA event is made, so
// this runs on a machine without a GPU (where timing would throw).
TEST(TuningCache, TheChooserRecallsADecisionWithoutTiming) {
  TuningCache cache;
  cache.store({"maxpool2d_forward", {32, 16, 150, 150}},
              {{"kernel", true}, {"cudnn_ms", 0.5}, {"kernel_ms", 0.25}, {"rejected", ""}});
  cuda::Chooser chooser(nullptr, &cache);
  std::vector<std::string> ran;
  cuda::Choice choice({"maxpool2d_forward", {26, 16, 150, 150}});  // the last partial batch
  chooser.run(choice, cuda::Implementation::Fastest, [&] { ran.push_back("cudnn"); },
              [&] { ran.push_back("kernel"); }, {});
  // A smaller batch than the one decided at: both run once to be compared (with no outputs
  // named here there is nothing to compare), then the kept one; nothing is timed.
  EXPECT_EQ(ran, (std::vector<std::string>{"cudnn", "kernel", "kernel"}));
  EXPECT_TRUE(choice.decided);
  EXPECT_TRUE(choice.kernel);
  EXPECT_EQ(choice.source, "cache (batch 32)");
  EXPECT_FLOAT_EQ(choice.kernel_ms, 0.25f);
  // ... and stored for that batch: the next run recalls it exactly and compares nothing.
  cuda::Choice again({"maxpool2d_forward", {26, 16, 150, 150}});
  ran.clear();
  chooser.run(again, cuda::Implementation::Fastest, [&] { ran.push_back("cudnn"); },
              [&] { ran.push_back("kernel"); }, {});
  EXPECT_EQ(ran, std::vector<std::string>{"kernel"}) << "only the kept candidate runs";
  EXPECT_EQ(again.source, "cache (timed at batch 32)");
  EXPECT_FLOAT_EQ(again.kernel_ms, 0.25f);
  EXPECT_EQ(cache.report()["exact_hits"], 1);
  // A recalled cuDNN needs no comparison.
  cache.store({"maxpool2d_backward", {32, 16, 150, 150}}, {{"kernel", false}});
  cuda::Choice backward({"maxpool2d_backward", {26, 16, 150, 150}});
  ran.clear();
  chooser.run(backward, cuda::Implementation::Fastest, [&] { ran.push_back("cudnn"); },
              [&] { ran.push_back("kernel"); }, {});
  EXPECT_EQ(ran, std::vector<std::string>{"cudnn"});

  // A forced choice never asks the cache.
  cuda::Choice forced({"maxpool2d_forward", {32, 16, 150, 150}});
  ran.clear();
  chooser.run(forced, cuda::Implementation::Cudnn, [&] { ran.push_back("cudnn"); },
              [&] { ran.push_back("kernel"); }, {});
  EXPECT_EQ(ran, std::vector<std::string>{"cudnn"});
  EXPECT_EQ(forced.source, "forced");
  EXPECT_EQ(cache.report()["exact_hits"], 1);
}

TEST(TuningCache, AHandEditedDecisionCostsASearchNotTheRun) {
  // Fields of the wrong kind (a string where a number was, null) read as unknown; the decision
  // itself (the boolean) still holds.
  TuningCache cache;
  cache.store({"maxpool2d_forward", {32, 16, 150, 150}},
              {{"kernel", false}, {"cudnn_ms", "fast"}, {"kernel_ms", nullptr}, {"rejected", 3}});
  cuda::Chooser chooser(nullptr, &cache);
  std::vector<std::string> ran;
  cuda::Choice odd({"maxpool2d_forward", {32, 16, 150, 150}});
  ASSERT_NO_THROW(chooser.run(odd, cuda::Implementation::Fastest, [&] { ran.push_back("cudnn"); },
                              [&] { ran.push_back("kernel"); }, {}));
  EXPECT_EQ(ran, std::vector<std::string>{"cudnn"});
  EXPECT_EQ(odd.source, "cache");
  EXPECT_FLOAT_EQ(odd.cudnn_ms, -1.0f);
  EXPECT_FLOAT_EQ(odd.kernel_ms, -1.0f);
  EXPECT_EQ(odd.rejected, "");

  EXPECT_FLOAT_EQ(cuda::number_field({{"ms", 0.5}}, "ms", 0.0f), 0.5f);
  EXPECT_FLOAT_EQ(cuda::number_field({{"ms", "0.5"}}, "ms", 7.0f), 7.0f);
  EXPECT_FLOAT_EQ(cuda::number_field(nlohmann::json::array(), "ms", 7.0f), 7.0f);
  EXPECT_EQ(cuda::text_field({{"why", "slower"}}, "why"), "slower");
  EXPECT_EQ(cuda::text_field({{"why", false}}, "why"), "");
}

TEST(TuningCache, TheFlagNamesAFileOrNone) {
  EXPECT_EQ(cli::tuning_cache_path("none"), "");
  EXPECT_EQ(cli::tuning_cache_path("/tmp/x.json"), "/tmp/x.json");
  EXPECT_THROW(cli::tuning_cache_path(""), Error);
  // The variables `auto` reads, put back as they were at the end.
  std::vector<std::pair<std::string, std::optional<std::string>>> saved;
  for (const char* name : {"PNEUMO_TUNING_CACHE", "XDG_CACHE_HOME", "HOME"}) {
    const char* value = std::getenv(name);
    saved.emplace_back(name, value ? std::optional<std::string>(value) : std::nullopt);
  }
  ::setenv("PNEUMO_TUNING_CACHE", "/tmp/from-env.json", 1);
  EXPECT_EQ(cli::tuning_cache_path("auto"), "/tmp/from-env.json");
  ::setenv("PNEUMO_TUNING_CACHE", "none", 1);
  EXPECT_EQ(cli::tuning_cache_path("auto"), "");
  // Without it: the XDG cache folder, else the home folder's .cache, else none.
  ::unsetenv("PNEUMO_TUNING_CACHE");
  ::setenv("XDG_CACHE_HOME", "/tmp/xdg", 1);
  ::setenv("HOME", "/tmp/home", 1);
  EXPECT_EQ(cli::tuning_cache_path("auto"), "/tmp/xdg/pneumo/tuning.json");
  ::unsetenv("XDG_CACHE_HOME");
  EXPECT_EQ(cli::tuning_cache_path("auto"), "/tmp/home/.cache/pneumo/tuning.json");
  ::unsetenv("HOME");
  EXPECT_EQ(cli::tuning_cache_path("auto"), "");
  for (const auto& [name, value] : saved) {
    if (value)
      ::setenv(name.c_str(), value->c_str(), 1);
    else
      ::unsetenv(name.c_str());
  }
}

// On a GPU: a backend writes its decisions; a second one on the same file searches nothing on
// those shapes (nor on a smaller batch of them) and gives the same bits.
TEST(TuningCacheCuda, ASecondBackendReusesTheFirstOnesDecisions) {
  PNEUMO_REQUIRE_CUDA();
  testing::TempDir dir;
  CudaBackendOptions options;
  options.tuning_cache = dir.file("tuning.json");
  const Shape x_shape{8, 4, 20, 20}, w_shape{6, 4, 3, 3};
  auto run = [&](CudaBackend& backend, int64_t batch) {
    const Shape xs{batch, 4, 20, 20};
    Tensor x = testing::random_tensor(xs, Device::Cuda, 1);
    Tensor w = testing::random_tensor(w_shape, Device::Cuda, 2);
    Tensor b = testing::random_tensor(Shape{6}, Device::Cuda, 3);
    Tensor y(Shape{batch, 6, 20, 20}, Device::Cuda);
    Tensor pooled(Shape{batch, 6, 10, 10}, Device::Cuda);
    backend.conv2d_forward(x, w, b, y, true);
    backend.maxpool2d_forward(y, pooled);
    backend.synchronize();
    std::vector<float> values(static_cast<size_t>(pooled.numel()));
    pooled.copy_to_host(values.data());
    return values;
  };
  std::vector<float> first;
  {
    CudaBackend backend(options);
    first = run(backend, x_shape.n());
    ASSERT_EQ(backend.conv_searches().size(), 1u);
    EXPECT_EQ(backend.conv_searches()[0].pick.source, "searched");
  }
  CudaBackend again(options);
  EXPECT_EQ(run(again, x_shape.n()), first) << "the same algorithms give the same bits";
  ASSERT_EQ(again.conv_searches().size(), 1u);
  EXPECT_EQ(again.conv_searches()[0].pick.source, "cache");
  EXPECT_TRUE(again.conv_searches()[0].pick.trials.empty()) << "nothing searched";
  const std::vector<ImplementationChoice> recalled = again.implementation_choices();
  EXPECT_TRUE(std::any_of(recalled.begin(), recalled.end(),
                          [](const ImplementationChoice& c) { return c.op == "maxpool2d_forward"; }))
      << "the pooling's choice is not among the recalled ones";
  for (const auto& choice : recalled) EXPECT_EQ(choice.source, "cache") << choice.op;
  run(again, 5);  // a smaller batch of the same layers
  int smaller = 0;
  for (const auto& search : again.conv_searches()) {
    if (search.shape[0] == 5) {
      ++smaller;
      EXPECT_EQ(search.pick.source, "cache (batch 8)");
    }
  }
  EXPECT_EQ(smaller, 1) << "the batch-5 layer's decision";
  EXPECT_GE(again.tuning_cache().report()["larger_batch_hits"].get<int>(), 2);
}

// A kernel kept at a larger batch that writes something else than cuDNN at a smaller one (here:
// "cuDNN" writes zeros, "ours" bytes of 0x3f) is caught by the one comparison on the new shape:
// cuDNN runs, and the rejection is stored for that shape.
TEST(TuningCacheCuda, AKernelRecalledForASmallerBatchIsComparedFirst) {
  PNEUMO_REQUIRE_CUDA();
  TuningCache cache;
  cache.store({"maxpool2d_forward", {32, 16, 150, 150}},
              {{"kernel", true}, {"cudnn_ms", 0.5}, {"kernel_ms", 0.25}, {"rejected", ""}});
  cuda::Chooser chooser(nullptr, &cache);
  Tensor out(Shape{26, 16, 75, 75}, Device::Cuda);
  const size_t bytes = static_cast<size_t>(out.numel()) * sizeof(float);
  std::vector<std::string> ran;
  auto cudnn = [&] {
    ran.push_back("cudnn");
    ASSERT_EQ(cudaMemsetAsync(out.data(), 0, bytes, nullptr), cudaSuccess);
  };
  auto ours = [&] {
    ran.push_back("kernel");
    ASSERT_EQ(cudaMemsetAsync(out.data(), 0x3f, bytes, nullptr), cudaSuccess);
  };
  cuda::Choice choice({"maxpool2d_forward", {26, 16, 150, 150}});
  chooser.run(choice, cuda::Implementation::Fastest, cudnn, ours,
              {{out.data(), out.numel(), "y"}});
  EXPECT_EQ(ran, (std::vector<std::string>{"cudnn", "kernel", "cudnn"}));
  EXPECT_FALSE(choice.kernel);
  EXPECT_NE(choice.rejected.find("y["), std::string::npos) << choice.rejected;
  std::vector<float> values(static_cast<size_t>(out.numel()));
  out.copy_to_host(values.data());
  EXPECT_EQ(values.front(), 0.0f) << "cuDNN's output is the one left";
  const TuningCache::Hit stored = cache.find(choice.key);
  ASSERT_TRUE(stored.exact());
  EXPECT_FALSE((*stored.decision)["kernel"].get<bool>());
  EXPECT_EQ((*stored.decision)["timed_at_batch"], 32);
}

}  // namespace
}  // namespace pneumo
