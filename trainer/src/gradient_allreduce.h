#pragma once
// Summing gradients over the ranks of a data-parallel group (internal to the trainer): MPI for CPU
// tensors; NCCL for CUDA tensors when built with MOESWEEP_WITH_NCCL (its communicator is bootstrapped
// by broadcasting the NCCL id over the MPI communicator). A build without MPI (MOESWEEP_NO_MPI, the
// benchmark-only build) takes <mpi.h> from bench/single_rank/ and has one rank only.
#include <mpi.h>
#include <torch/torch.h>

namespace moesweep::trainer {

class GradientAllReduce {
 public:
  explicit GradientAllReduce(MPI_Comm communicator);  // MPI_COMM_NULL: one rank, sums are identities
  ~GradientAllReduce();
  GradientAllReduce(const GradientAllReduce&) = delete;
  GradientAllReduce& operator=(const GradientAllReduce&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  // In-place sum over ranks of a contiguous float32 tensor (same shape on every rank).
  void sum(torch::Tensor& buffer);
  double sum(double value);
  void barrier();

 private:
  MPI_Comm communicator_;
  int rank_ = 0;
  int size_ = 1;
  void* nccl_ = nullptr;  // ncclComm_t, created on the first CUDA sum
};

}  // namespace moesweep::trainer
