// The element walks of kernels/walks.hpp, run on the CPU for every thread of the grid the kernels
// launch: each element must be visited exactly once, a four-value visit must stay inside its plane
// (or its chunk's plane), and the plane a visitor is told must be the element's. These are the
// walks behind batch-norm, ReLU, the bias and the per-channel reductions on the GPU, so a gap or a
// double visit here would be a wrong gradient there.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "walks.hpp"

namespace pneumo::kernels {
namespace {

struct PlaneCase {
  int64_t planes, spatial;
};

std::string describe(const PlaneCase& c) {
  return std::to_string(c.planes) + " planes of " + std::to_string(c.spatial);
}

// Visits of each element of (planes, spatial) by every thread of plane_grid_size's grid.
std::vector<int> plane_walk_visits(const PlaneCase& c, int64_t threads = kThreadsPerBlock) {
  const GridSize grid = plane_grid_size(c.planes, c.spatial);
  std::vector<int> visits(static_cast<size_t>(c.planes * c.spatial), 0);
  auto visit = [&](int64_t plane, int64_t i) {
    ASSERT_GE(i, 0);
    ASSERT_LT(i, c.planes * c.spatial);
    ASSERT_EQ(plane, i / c.spatial) << "element " << i << " told the wrong plane";
    ++visits[static_cast<size_t>(i)];
  };
  for (int64_t bx = 0; bx < grid.x; ++bx)
    for (int64_t by = 0; by < grid.y; ++by)
      for (int64_t t = 0; t < threads; ++t) {
        const GridPlace place{bx, by, grid.x, grid.y, t, threads};
        for_each_plane_by_four(
            place, c.planes, c.spatial,
            [&](int64_t plane, int64_t i, int64_t stride) {
              ASSERT_EQ(stride, threads);
              ASSERT_EQ((i + 3 * stride) / c.spatial, plane) << "a four-value visit left its plane";
              for (int k = 0; k < 4; ++k) visit(plane, i + k * stride);
            },
            visit);
      }
  return visits;
}

void expect_each_once(const std::vector<int>& visits, const std::string& what) {
  int64_t missed = 0, repeated = 0;
  for (int v : visits) {
    missed += v == 0;
    repeated += v > 1;
  }
  EXPECT_EQ(missed, 0) << what << ": elements never visited";
  EXPECT_EQ(repeated, 0) << what << ": elements visited more than once";
}

TEST(KernelWalks, PlaneWalkVisitsEveryElementOnce) {
  // The model's planes (150^2 .. 10^2 and the pooled ones), flat passes (one plane), sizes around
  // a span's 4 x 256 values, and fewer values than a block's threads.
  for (const PlaneCase c : {PlaneCase{2, 22500}, PlaneCase{3, 5625}, PlaneCase{2, 1444},
                            PlaneCase{5, 361}, PlaneCase{7, 100}, PlaneCase{1, 1024},
                            PlaneCase{1, 1023}, PlaneCase{1, 1025}, PlaneCase{2, 3 * 1024 + 255},
                            PlaneCase{4, 1}, PlaneCase{1, 3}, PlaneCase{1, 200003}}) {
    expect_each_once(plane_walk_visits(c), describe(c));
  }
}

TEST(KernelWalks, PlaneWalkStridesPastTheGridLimits) {
  // More planes than grid x holds (8192): blocks take several planes each.
  const PlaneCase many{kMaxBlocks + 5, 3};
  EXPECT_EQ(plane_grid_size(many.planes, many.spatial).x, kMaxBlocks);
  expect_each_once(plane_walk_visits(many), describe(many));
  // A plane longer than grid y's spans reach (65535 of 1024 values): checked with small blocks,
  // so that the grid stays small enough to walk here.
  const int64_t threads = 1;
  const PlaneCase long_plane{1, 4 * kMaxBlocksY * threads + 4 * 7 + 2};
  ASSERT_GT((long_plane.spatial + 3) / 4, kMaxBlocksY)
      << "the case must need more spans than blocks";
  std::vector<int> visits(static_cast<size_t>(long_plane.spatial), 0);
  for (int64_t by = 0; by < kMaxBlocksY; ++by) {
    const GridPlace place{0, by, 1, kMaxBlocksY, 0, threads};
    for_each_plane_by_four(
        place, long_plane.planes, long_plane.spatial,
        [&](int64_t, int64_t i, int64_t stride) {
          for (int k = 0; k < 4; ++k) ++visits[static_cast<size_t>(i + k * stride)];
        },
        [&](int64_t, int64_t i) { ++visits[static_cast<size_t>(i)]; });
  }
  expect_each_once(visits, "one plane strided over grid y");
}

// map_planes_summed's bookkeeping, run on the host: each thread's values between two end_plane
// calls are the plane's, every (plane, block row) slot of the partials is written by one block
// only, and the slots of a channel's planes add up to the channel's sum.
TEST(KernelWalks, PlaneSumsGiveEachSlotOnceAndEachChannelItsValues) {
  for (const auto& [batch, channels, spatial] :
       {std::array<int64_t, 3>{3, 4, 5625}, {2, 3, 100}, {1, 2, 1025}, {5, kMaxBlocks / 2 + 3, 9}}) {
    const int64_t planes = batch * channels;
    const GridSize grid = plane_grid_size(planes, spatial);
    std::vector<double> partial(static_cast<size_t>(planes * grid.y), 0.0);
    std::vector<int> writes(partial.size(), 0);
    auto value = [&](int64_t i) { return static_cast<double>(i % 7) - 2.5; };
    for (int64_t bx = 0; bx < grid.x; ++bx)
      for (int64_t by = 0; by < grid.y; ++by) {
        std::vector<double> block_sums;  // per plane the block walks, over its threads
        std::vector<int64_t> block_planes;
        for (int64_t t = 0; t < kThreadsPerBlock; ++t) {
          const GridPlace place{bx, by, grid.x, grid.y, t, kThreadsPerBlock};
          double sum = 0.0;
          size_t nth_plane = 0;
          for_each_plane_by_four(
              place, planes, spatial,
              [&](int64_t plane, int64_t i, int64_t stride) {
                for (int k = 0; k < 4; ++k) {
                  ASSERT_EQ((i + k * stride) / spatial, plane);
                  sum += value(i + k * stride);
                }
              },
              [&](int64_t plane, int64_t i) {
                ASSERT_EQ(i / spatial, plane);
                sum += value(i);
              },
              [&](int64_t plane) {
                if (t == 0) {
                  block_planes.push_back(plane);
                  block_sums.push_back(0.0);
                }
                ASSERT_LT(nth_plane, block_planes.size()) << "threads of a block disagree";
                ASSERT_EQ(block_planes[nth_plane], plane) << "threads of a block disagree";
                block_sums[nth_plane++] += sum;
                sum = 0.0;
              });
          ASSERT_EQ(sum, 0.0) << "values after the last end_plane";
          ASSERT_EQ(nth_plane, block_planes.size()) << "a thread skipped an end_plane";
        }
        for (size_t k = 0; k < block_planes.size(); ++k) {
          const size_t slot = static_cast<size_t>(block_planes[k] * grid.y + by);
          partial[slot] = block_sums[k];
          ++writes[slot];
        }
      }
    EXPECT_TRUE(std::all_of(writes.begin(), writes.end(), [](int w) { return w == 1; }))
        << batch << " x " << channels << " planes of " << spatial << ": a slot not written once";
    for (int64_t c = 0; c < channels; ++c) {
      double from_slots = 0.0, direct = 0.0;
      for (int64_t n = 0; n < batch; ++n) {
        for (int64_t y = 0; y < grid.y; ++y)
          from_slots += partial[static_cast<size_t>((n * channels + c) * grid.y + y)];
        for (int64_t s = 0; s < spatial; ++s) direct += value((n * channels + c) * spatial + s);
      }
      EXPECT_NEAR(from_slots, direct, 1e-9) << "channel " << c;
    }
  }
}

TEST(KernelWalks, PlaneGridIsNeverEmpty) {
  const GridSize g = plane_grid_size(0, 0);
  EXPECT_EQ(g.x, 1);
  EXPECT_EQ(g.y, 1);
}

// Visits of each element of an (N, C, spatial) tensor by the per-channel reduction's blocks:
// block (c, j) over channel c and chunk j of `images_per_chunk` images.
std::vector<int> chunk_walk_visits(int64_t batch, int64_t channels, int64_t spatial,
                                   int64_t images_per_chunk, int64_t threads) {
  std::vector<int> visits(static_cast<size_t>(batch * channels * spatial), 0);
  const int64_t chunks = (batch + images_per_chunk - 1) / images_per_chunk;
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t j = 0; j < chunks; ++j) {
      const int64_t first = j * images_per_chunk;
      const int64_t last = std::min(batch, first + images_per_chunk);
      auto visit = [&](int64_t i) {
        ASSERT_GE(i, 0);
        ASSERT_LT(i, batch * channels * spatial);
        ASSERT_EQ((i / spatial) % channels, c) << "element " << i << " is not channel " << c;
        const int64_t image = i / (channels * spatial);
        ASSERT_TRUE(image >= first && image < last) << "element " << i << " is not in chunk " << j;
        ++visits[static_cast<size_t>(i)];
      };
      for (int64_t t = 0; t < threads; ++t)
        for_each_in_chunk_by_four(
            t, threads, c, first, last, channels, spatial,
            [&](int64_t i, int64_t stride) {
              ASSERT_EQ(i / spatial, (i + 3 * stride) / spatial)
                  << "a four-value visit left its plane";
              for (int k = 0; k < 4; ++k) visit(i + k * stride);
            },
            visit);
    }
  return visits;
}

TEST(KernelWalks, ChunkWalkVisitsEveryValueOfItsChannelOnce) {
  struct Case {
    int64_t batch, channels, spatial, images_per_chunk;
  };
  for (const Case c : {Case{3, 2, 22500, 2}, Case{4, 3, 5625, 1}, Case{5, 2, 361, 3},
                       Case{2, 4, 100, 2}, Case{3, 2, 1024, 2}, Case{3, 2, 1023, 1},
                       Case{2, 2, 256, 1}, Case{2, 2, 257, 2}, Case{7, 5, 1, 3},
                       Case{6, 3, 9, 4}}) {
    expect_each_once(chunk_walk_visits(c.batch, c.channels, c.spatial, c.images_per_chunk,
                                       kThreadsPerBlock),
                     std::to_string(c.batch) + "x" + std::to_string(c.channels) + "x" +
                         std::to_string(c.spatial) + " in chunks of " +
                         std::to_string(c.images_per_chunk));
  }
}

}  // namespace
}  // namespace pneumo::kernels
