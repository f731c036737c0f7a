#include "moesweep/orchestrator/placement.h"

#include <algorithm>
#include <map>
#include <stdexcept>

#include "moesweep/input_error.h"

namespace moesweep::orchestrator {
namespace {

std::string count_of(long n, const std::string& noun) {
  return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
}

}  // namespace

std::vector<int> gpu_of_each_rank(const std::vector<RankLocation>& ranks, int coordinator,
                                  int gpus_per_node) {
  if (gpus_per_node < 1)
    throw std::invalid_argument("gpu_of_each_rank: gpus_per_node must be positive, got " +
                                std::to_string(gpus_per_node));
  const int world = static_cast<int>(ranks.size());
  if (coordinator != kNoCoordinator && (coordinator < 0 || coordinator >= world))
    throw std::invalid_argument("gpu_of_each_rank: coordinator " + std::to_string(coordinator) +
                                " is not one of the " + std::to_string(world) + " ranks");

  // Nodes in the order of their first world rank, so that the same layout is always refused naming the
  // same node, whatever order the launcher placed ranks in.
  std::vector<std::string> nodes;
  std::map<std::string, std::vector<int>> training_ranks;  // node → its training ranks (world ranks)
  for (int rank = 0; rank < world; ++rank) {
    auto [entry, inserted] = training_ranks.try_emplace(ranks[rank].node);
    if (inserted) nodes.push_back(ranks[rank].node);
    if (rank != coordinator) entry->second.push_back(rank);
  }

  std::vector<int> gpu(ranks.size(), -1);
  for (const auto& node : nodes) {
    auto& members = training_ranks[node];
    const long count = static_cast<long>(members.size());
    if (count > gpus_per_node) {
      std::string fits = "give each node at most " + count_of(gpus_per_node, "training rank");
      if (coordinator != kNoCoordinator)
        fits += " (the coordinator's node " + std::to_string(gpus_per_node) + " + the coordinator)";
      throw InputError("node " + node + " has " + count_of(count, "training rank") + " for " +
                       count_of(gpus_per_node, "GPU") + "; " + fits);
    }
    // World ranks went in ascending, so a stable sort leaves ties in world-rank order.
    std::stable_sort(members.begin(), members.end(),
                     [&](int a, int b) { return ranks[a].local_rank < ranks[b].local_rank; });
    for (int index = 0; index < static_cast<int>(members.size()); ++index) gpu[members[index]] = index;
  }
  return gpu;
}

}  // namespace moesweep::orchestrator
