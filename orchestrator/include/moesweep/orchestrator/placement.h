#pragma once
// Which GPU each rank of a job trains on: a pure function of the job's layout, so that the rule can be
// tested without MPI or GPUs (orchestrator/src/rank_placement.h gathers the layout over MPI and applies it).
//
// The rule: the training ranks of a node take its GPUs 0, 1, 2, ... in the order of their node-local
// rank; the coordinator (`moesweep run`'s rank 0, which never trains) takes none. "Local rank modulo
// GPUs" is not enough: with the README's `--ranks-per-node 9 --gpus-per-node 8`, every node but the
// coordinator's has nine training ranks, and local ranks 0 and 8 would share cuda:0.
#include <string>
#include <vector>

namespace moesweep::orchestrator {

inline constexpr int kNoCoordinator = -1;  // `moesweep train`: every rank trains

// Where one world rank runs.
struct RankLocation {
  std::string node;    // the node's name (its host name); ranks with the same name share its GPUs
  int local_rank = 0;  // the rank's index among its node's ranks (the launcher's node-local rank)
};

// GPU index of each world rank: `ranks[r]` is world rank r's location, `coordinator` the world rank
// that never trains (or kNoCoordinator), `gpus_per_node` the GPUs each node has (> 0). Returns one
// entry per world rank: the rank's index among the training ranks of its node, ordered by local rank
// (ties by world rank), in 0..gpus_per_node−1; −1 for the coordinator.
//
// Throws moesweep::InputError, one line naming the first node in world-rank order that has more
// training ranks than GPUs, its counts, and the most training ranks per node that fit (e.g. "node
// gpu07 has 9 training ranks for 8 GPUs; give each node at most 8 training ranks (the coordinator's
// node 8 + the coordinator)"): two ranks on one GPU would share its memory and its compute, and the
// run's throughput and memory estimates would be wrong. Throws std::invalid_argument when
// gpus_per_node < 1 or coordinator is not a world rank (a caller's mistake, not the user's).
std::vector<int> gpu_of_each_rank(const std::vector<RankLocation>& ranks, int coordinator, int gpus_per_node);

}  // namespace moesweep::orchestrator
