// kernels/bf16_convert.cu (--precision bf16) on the GPU against the host: every element of a
// float32 NCHW tensor lands, rounded by bf16_from_float, at its channels-last place; the way back
// puts each value at its NCHW place with the bias and ReLU applied. Awkward sizes (channels and
// planes not multiples of anything, so the tiled transposes have partial tiles on both axes), a
// weight-shaped tensor (spatial 9), and the layouts where the two orders coincide (spatial 1: a
// dense operand; channels 1), which take the per-element pass. Skips without a GPU.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bf16.hpp"
#include "kernels.hpp"
#include "pneumo/tensor.hpp"
#include "test_util.hpp"

namespace pneumo {
namespace {

using testing::random_values;

struct Layout {
  int64_t batch, channels, spatial;
  int64_t count() const { return batch * channels * spatial; }
  int64_t nchw(int64_t n, int64_t c, int64_t s) const { return (n * channels + c) * spatial + s; }
  int64_t nhwc(int64_t n, int64_t c, int64_t s) const { return (n * spatial + s) * channels + c; }
};

std::string layout_name(const ::testing::TestParamInfo<Layout>& info) {
  const Layout& l = info.param;
  return "n" + std::to_string(l.batch) + "_c" + std::to_string(l.channels) + "_s" +
         std::to_string(l.spatial);
}

template <class T>
std::vector<T> download(const Array<T>& a) {
  std::vector<T> host(static_cast<size_t>(a.size()));
  EXPECT_EQ(cudaMemcpy(host.data(), a.data(), a.bytes(), cudaMemcpyDeviceToHost), cudaSuccess);
  return host;
}

template <class T>
Array<T> upload(const std::vector<T>& host) {
  Array<T> a(static_cast<int64_t>(host.size()), Device::Cuda);
  EXPECT_EQ(cudaMemcpy(a.data(), host.data(), a.bytes(), cudaMemcpyHostToDevice), cudaSuccess);
  return a;
}

class Bf16Convert : public ::testing::TestWithParam<Layout> {
 protected:
  void SetUp() override { PNEUMO_REQUIRE_CUDA(); }
};

TEST_P(Bf16Convert, ToChannelsLastRoundsAndMovesEveryElement) {
  const Layout l = GetParam();
  const std::vector<float> src = random_values(l.count(), 17, -3.0f, 3.0f);
  Array<float> d_src = upload(src);
  Array<uint16_t> d_dst(l.count(), Device::Cuda);
  kernels::to_bf16_channels_last(d_src.data(), d_dst.data(), l.batch, l.channels, l.spatial,
                                 nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<uint16_t> dst = download(d_dst);
  for (int64_t n = 0; n < l.batch; ++n)
    for (int64_t c = 0; c < l.channels; ++c)
      for (int64_t s = 0; s < l.spatial; ++s)
        ASSERT_EQ(dst[l.nhwc(n, c, s)], bf16_from_float(src[l.nchw(n, c, s)]))
            << "n " << n << " c " << c << " s " << s;
}

TEST_P(Bf16Convert, FromChannelsLastAddsBiasAndRelu) {
  const Layout l = GetParam();
  std::vector<uint16_t> src(static_cast<size_t>(l.count()));
  const std::vector<float> values = random_values(l.count(), 23, -2.0f, 2.0f);
  for (size_t i = 0; i < src.size(); ++i) src[i] = bf16_from_float(values[i]);
  const std::vector<float> bias = random_values(l.channels, 29, -0.5f, 0.5f);
  Array<uint16_t> d_src = upload(src);
  Array<float> d_bias = upload(bias), d_dst(l.count(), Device::Cuda);
  for (bool relu : {false, true}) {
    for (bool with_bias : {false, true}) {
      kernels::from_bf16_channels_last(d_src.data(), d_dst.data(), l.batch, l.channels, l.spatial,
                                       with_bias ? d_bias.data() : nullptr, relu, nullptr);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      const std::vector<float> dst = download(d_dst);
      for (int64_t n = 0; n < l.batch; ++n)
        for (int64_t c = 0; c < l.channels; ++c)
          for (int64_t s = 0; s < l.spatial; ++s) {
            float want = float_from_bf16(src[l.nhwc(n, c, s)]) + (with_bias ? bias[c] : 0.0f);
            if (relu && want < 0.0f) want = 0.0f;
            ASSERT_EQ(dst[l.nchw(n, c, s)], want)
                << "relu " << relu << " bias " << with_bias << " n " << n << " c " << c << " s "
                << s;
          }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, Bf16Convert,
                         ::testing::Values(Layout{2, 5, 7}, Layout{3, 32, 75 * 75},
                                           Layout{64, 32, 9}, Layout{2, 70, 33},
                                           Layout{3, 200, 1}, Layout{4, 1, 37}, Layout{1, 1, 1},
                                           Layout{5, 33, 40}, Layout{9, 64, 19 * 19}),
                         layout_name);

}  // namespace
}  // namespace pneumo
