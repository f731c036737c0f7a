#include "rank_placement.h"

#include <torch/cuda.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <set>

#include "moesweep/input_error.h"

namespace moesweep::orchestrator {
std::string host_name() {
  std::array<char, 256> name{};
  if (gethostname(name.data(), name.size() - 1) != 0) return "localhost";
  return name.data();
}

namespace {

// What each rank tells the others about where it runs.
struct Announcement {
  int node_leader;  // world rank of the node's local rank 0: the node's identity
  int local_rank;
  std::array<char, 256> host;
};

// Every rank's location in `comm`. A node is what MPI_COMM_TYPE_SHARED groups (the ranks that share
// memory, hence the GPUs), named by its host name; were two nodes to report the same host name, the
// names get their first rank appended so that they stay two nodes.
std::vector<RankLocation> gather_layout(MPI_Comm comm) {
  int rank = 0;
  int size = 0;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  MPI_Comm node = MPI_COMM_NULL;
  MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
  Announcement mine{};
  mine.node_leader = rank;
  MPI_Comm_rank(node, &mine.local_rank);
  MPI_Bcast(&mine.node_leader, 1, MPI_INT, 0, node);
  MPI_Comm_free(&node);
  const std::string host = host_name();
  std::strncpy(mine.host.data(), host.c_str(), mine.host.size() - 1);

  std::vector<Announcement> all(static_cast<std::size_t>(size));
  MPI_Allgather(&mine, sizeof mine, MPI_BYTE, all.data(), sizeof mine, MPI_BYTE, comm);

  std::map<std::string, std::set<int>> leaders_of_host;
  for (const auto& a : all) leaders_of_host[a.host.data()].insert(a.node_leader);
  std::vector<RankLocation> layout;
  layout.reserve(all.size());
  for (const auto& a : all) {
    std::string name = a.host.data();
    if (leaders_of_host[name].size() > 1) name += " (ranks from " + std::to_string(a.node_leader) + ")";
    layout.push_back({name, a.local_rank});
  }
  return layout;
}

}  // namespace

std::string place_on_gpu(const std::string& device, MPI_Comm comm, int coordinator, int gpus_per_node) {
  if (device != "cuda") return device;  // "cpu", or a GPU the user chose ("cuda:1")
  int visible = static_cast<int>(torch::cuda::device_count());
  if (comm != MPI_COMM_NULL) MPI_Allreduce(MPI_IN_PLACE, &visible, 1, MPI_INT, MPI_MIN, comm);
  const int gpus = gpus_per_node > 0 ? gpus_per_node : visible;
  const char* no_gpu =
      "--device cuda: CUDA shows no GPU to this process (a CPU build of LibTorch, no driver, or an empty "
      "CUDA_VISIBLE_DEVICES)";
  if (gpus == 0) throw InputError(no_gpu);
  const auto layout =
      comm != MPI_COMM_NULL ? gather_layout(comm) : std::vector<RankLocation>{{host_name(), 0}};
  int rank = 0;
  if (comm != MPI_COMM_NULL) MPI_Comm_rank(comm, &rank);
  const int gpu = gpu_of_each_rank(layout, coordinator, gpus)[static_cast<std::size_t>(rank)];
  // A stated --gpus-per-node still needs GPUs to be there: otherwise every run would fail in LibTorch.
  if (visible == 0) throw InputError(no_gpu);
  return gpu < 0 ? device : "cuda:" + std::to_string(gpu);
}

}  // namespace moesweep::orchestrator
