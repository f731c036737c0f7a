#pragma once
// Puts each rank of an MPI job on a GPU of its own: gathers which node every rank is on and applies
// gpu_of_each_rank (moesweep/orchestrator/placement.h) to that layout.
#include <mpi.h>

#include <string>

#include "moesweep/orchestrator/placement.h"

namespace moesweep::orchestrator {

// This machine's host name (gethostname), "localhost" if it has none: the coordinator's claims and
// attempts, the command backend's rendezvous address and temporary-file names.
std::string host_name();

// This rank's device for `device` ("cpu", "cuda", "cuda:N", ...): "cuda" becomes "cuda:K", K the rank's
// index among the training ranks of its node (nodes as MPI_COMM_TYPE_SHARED sees them), and the
// coordinator keeps "cuda" (it never trains); any other device comes back unchanged. Collective over
// `comm` whenever device is "cuda" (every rank passes the same arguments); MPI_COMM_NULL means this
// process alone. `coordinator` is the rank in `comm` that never trains, or kNoCoordinator.
// `gpus_per_node` > 0 is taken as given; 0 means the GPUs CUDA shows this process
// (torch::cuda::device_count()), the fewest over all ranks, so that every rank decides alike.
//
// Throws moesweep::InputError, on every rank with the same one-line message (so that nothing starts),
// when a node has more training ranks than GPUs, or when no count was given and CUDA shows no GPU.
std::string place_on_gpu(const std::string& device, MPI_Comm comm, int coordinator, int gpus_per_node);

}  // namespace moesweep::orchestrator
