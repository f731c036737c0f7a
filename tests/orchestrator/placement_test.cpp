// Which GPU each rank trains on (issue 15, case 5: two workers must never share one GPU).
#include "moesweep/orchestrator/placement.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "moesweep/input_error.h"

namespace {

using moesweep::InputError;
using moesweep::orchestrator::gpu_of_each_rank;
using moesweep::orchestrator::kNoCoordinator;
using moesweep::orchestrator::RankLocation;

// Block placement, as `moesweep submit --ranks-per-node K` and mpirun's default make it: world ranks
// fill the first node, then the next. ranks_on_node[i] ranks on node "gpu0<i>".
std::vector<RankLocation> by_node(const std::vector<int>& ranks_on_node) {
  std::vector<RankLocation> layout;
  for (std::size_t node = 0; node < ranks_on_node.size(); ++node)
    for (int local = 0; local < ranks_on_node[node]; ++local)
      layout.push_back({"gpu0" + std::to_string(node), local});
  return layout;
}

// The message of the InputError that placing `layout` throws ("" if it throws none).
std::string refusal(const std::vector<RankLocation>& layout, int coordinator, int gpus) {
  try {
    gpu_of_each_rank(layout, coordinator, gpus);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

// Every node's training ranks hold GPUs 0..count−1, each exactly once; the coordinator holds none.
void expect_one_rank_per_gpu(const std::vector<RankLocation>& layout, const std::vector<int>& gpu,
                             int coordinator) {
  ASSERT_EQ(gpu.size(), layout.size());
  std::map<std::string, std::multiset<int>> gpus_of_node;
  for (std::size_t rank = 0; rank < layout.size(); ++rank) {
    if (static_cast<int>(rank) == coordinator) {
      EXPECT_EQ(gpu[rank], -1) << "the coordinator never trains";
      continue;
    }
    gpus_of_node[layout[rank].node].insert(gpu[rank]);
  }
  for (const auto& [node, gpus] : gpus_of_node) {
    std::multiset<int> expected;
    for (int k = 0; k < static_cast<int>(gpus.size()); ++k) expected.insert(k);
    EXPECT_EQ(gpus, expected) << "node " << node;
  }
}

TEST(Placement, ReadmeLayoutOfNineRanksPerNodeOnEightGpusIsRefusedNamingTheNode) {
  // `moesweep submit --nodes 2 --ranks-per-node 9 --gpus-per-node 8`: the second node has nine workers.
  const std::string message = refusal(by_node({9, 9}), 0, 8);
  EXPECT_EQ(message,
            "node gpu01 has 9 training ranks for 8 GPUs; give each node at most 8 training ranks "
            "(the coordinator's node 8 + the coordinator)");
  EXPECT_EQ(message.find('\n'), std::string::npos) << "one line";
}

TEST(Placement, OneNodeOfNineRanksGivesTheCoordinatorNoGpuAndEachWorkerItsOwn) {
  const auto layout = by_node({9});
  const auto gpu = gpu_of_each_rank(layout, 0, 8);
  EXPECT_EQ(gpu, (std::vector<int>{-1, 0, 1, 2, 3, 4, 5, 6, 7}));
  expect_one_rank_per_gpu(layout, gpu, 0);
}

TEST(Placement, CoordinatorsNodeTakesOneRankMoreThanTheOthers) {
  const auto layout = by_node({9, 8, 8});
  const auto gpu = gpu_of_each_rank(layout, 0, 8);
  expect_one_rank_per_gpu(layout, gpu, 0);
  for (std::size_t rank = 1; rank < layout.size(); ++rank) {
    EXPECT_GE(gpu[rank], 0);
    EXPECT_LT(gpu[rank], 8);
  }
  // Local ranks 0 and 8 would share cuda:0 under "local rank mod GPUs"; here local rank 0 of a worker
  // node takes GPU 0 and local rank 7 GPU 7.
  EXPECT_EQ(gpu[9], 0);
  EXPECT_EQ(gpu[16], 7);
}

TEST(Placement, TrainWithoutCoordinatorRefusesTwoRanksOnOneGpu) {
  EXPECT_EQ(refusal(by_node({2}), kNoCoordinator, 1),
            "node gpu00 has 2 training ranks for 1 GPU; give each node at most 1 training rank");
  EXPECT_EQ(gpu_of_each_rank(by_node({1, 1}), kNoCoordinator, 1), (std::vector<int>{0, 0}));
  EXPECT_EQ(gpu_of_each_rank(by_node({4}), kNoCoordinator, 4), (std::vector<int>{0, 1, 2, 3}));
}

TEST(Placement, SingleProcessRunTrainsOnGpuZero) {
  EXPECT_EQ(gpu_of_each_rank(by_node({1}), kNoCoordinator, 8), (std::vector<int>{0}));
}

TEST(Placement, RoundRobinRanksMapByTheirNodeNotTheirWorldRank) {
  // mpirun --map-by node: world rank r on node r mod 3, local rank r div 3. Coordinator 0 on node a.
  std::vector<RankLocation> layout;
  const std::vector<std::string> nodes = {"a", "b", "c"};
  for (int rank = 0; rank < 12; ++rank) layout.push_back({nodes[rank % 3], rank / 3});
  const auto gpu = gpu_of_each_rank(layout, 0, 4);
  expect_one_rank_per_gpu(layout, gpu, 0);
  EXPECT_EQ(gpu, (std::vector<int>{-1, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3}));
  // Node a holds ranks 0, 3, 6, 9 (three workers); b and c four each: 4 GPUs fit, 3 do not.
  EXPECT_EQ(refusal(layout, 0, 3),
            "node b has 4 training ranks for 3 GPUs; give each node at most 3 training ranks "
            "(the coordinator's node 3 + the coordinator)");
}

TEST(Placement, LocalRankOrderDecidesNotTheOrderNodesAreListedIn) {
  // World ranks listed node y first, then x, and within a node not in local-rank order.
  const std::vector<RankLocation> layout = {{"y", 1}, {"x", 2}, {"y", 0}, {"x", 0}, {"x", 1}, {"y", 2}};
  const auto gpu = gpu_of_each_rank(layout, kNoCoordinator, 3);
  EXPECT_EQ(gpu, (std::vector<int>{1, 2, 0, 0, 1, 2}));
  // With a coordinator among them, the others on its node close up: x's local ranks 1 and 2 take 0, 1.
  EXPECT_EQ(gpu_of_each_rank(layout, 3, 3), (std::vector<int>{1, 1, 0, -1, 0, 2}));
  // Refused naming y, the node of the first world rank, though x comes first alphabetically.
  EXPECT_EQ(refusal(layout, 3, 2),
            "node y has 3 training ranks for 2 GPUs; give each node at most 2 training ranks "
            "(the coordinator's node 2 + the coordinator)");
}

TEST(Placement, CallerMistakesAreNotInputErrors) {
  EXPECT_THROW(gpu_of_each_rank(by_node({2}), kNoCoordinator, 0), std::invalid_argument);
  EXPECT_THROW(gpu_of_each_rank(by_node({2}), 2, 1), std::invalid_argument);
}

}  // namespace
