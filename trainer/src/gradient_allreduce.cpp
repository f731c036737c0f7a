#include "gradient_allreduce.h"

#include <stdexcept>
#include <string>

#ifdef MOESWEEP_WITH_NCCL
#ifdef MOESWEEP_NO_MPI
#error "the NCCL path bootstraps over MPI: MOESWEEP_WITH_NCCL needs a build with MPI"
#endif
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

namespace moesweep::trainer {

#ifdef MOESWEEP_NO_MPI

// Built without MPI (the benchmark-only build, -DMOESWEEP_BENCH_ONLY=ON): <mpi.h> is the single-rank
// stand-in in bench/single_rank/, whose only communicator is MPI_COMM_NULL, so every run is one rank
// and the sums are identities.
GradientAllReduce::GradientAllReduce(MPI_Comm communicator) : communicator_(communicator) {
  if (communicator_ != MPI_COMM_NULL)
    throw std::logic_error("this build has no MPI (MOESWEEP_NO_MPI): only single-rank training");
}

GradientAllReduce::~GradientAllReduce() = default;

void GradientAllReduce::sum(torch::Tensor& buffer) {}

double GradientAllReduce::sum(double value) { return value; }

void GradientAllReduce::barrier() {}

#else

namespace {

void check_mpi(int rc, const char* what) {
  if (rc != MPI_SUCCESS) throw std::runtime_error(std::string("MPI ") + what + " failed");
}

#ifdef MOESWEEP_WITH_NCCL
void check_nccl(ncclResult_t rc, const char* what) {
  if (rc != ncclSuccess)
    throw std::runtime_error(std::string("NCCL ") + what + ": " + ncclGetErrorString(rc));
}
void check_cuda(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess)
    throw std::runtime_error(std::string("CUDA ") + what + ": " + cudaGetErrorString(rc));
}
#endif

}  // namespace

GradientAllReduce::GradientAllReduce(MPI_Comm communicator) : communicator_(communicator) {
  if (communicator_ == MPI_COMM_NULL) return;
  check_mpi(MPI_Comm_rank(communicator_, &rank_), "Comm_rank");
  check_mpi(MPI_Comm_size(communicator_, &size_), "Comm_size");
}

GradientAllReduce::~GradientAllReduce() {
#ifdef MOESWEEP_WITH_NCCL
  if (nccl_ != nullptr) ncclCommDestroy(static_cast<ncclComm_t>(nccl_));
#endif
}

void GradientAllReduce::sum(torch::Tensor& buffer) {
  if (size_ == 1) return;
  if (buffer.scalar_type() != torch::kFloat || !buffer.is_contiguous()) {
    throw std::logic_error("GradientAllReduce::sum needs a contiguous float32 tensor");
  }
  if (buffer.is_cuda()) {
#ifdef MOESWEEP_WITH_NCCL
    if (nccl_ == nullptr) {
      check_cuda(cudaSetDevice(buffer.get_device()), "set device");
      ncclUniqueId id;
      if (rank_ == 0) check_nccl(ncclGetUniqueId(&id), "get unique id");
      check_mpi(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, communicator_), "Bcast of the NCCL id");
      ncclComm_t comm = nullptr;
      check_nccl(ncclCommInitRank(&comm, size_, id, rank_), "init");
      nccl_ = comm;
    }
    // LibTorch's kernels run on the default stream unless told otherwise, so NCCL queues behind them.
    check_nccl(ncclAllReduce(buffer.data_ptr<float>(), buffer.data_ptr<float>(),
                             static_cast<std::size_t>(buffer.numel()), ncclFloat, ncclSum,
                             static_cast<ncclComm_t>(nccl_), nullptr),
               "all-reduce");
    check_cuda(cudaStreamSynchronize(nullptr), "synchronize");
    return;
#else
    throw std::runtime_error("multi-rank CUDA training needs a build with NCCL (MOESWEEP_WITH_NCCL)");
#endif
  }
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, buffer.data_ptr<float>(), static_cast<int>(buffer.numel()), MPI_FLOAT,
                          MPI_SUM, communicator_),
            "Allreduce");
}

double GradientAllReduce::sum(double value) {
  if (size_ == 1) return value;
  double total = 0.0;
  check_mpi(MPI_Allreduce(&value, &total, 1, MPI_DOUBLE, MPI_SUM, communicator_), "Allreduce");
  return total;
}

void GradientAllReduce::barrier() {
  if (size_ > 1) check_mpi(MPI_Barrier(communicator_), "Barrier");
}

#endif  // MOESWEEP_NO_MPI

}  // namespace moesweep::trainer
