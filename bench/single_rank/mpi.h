#pragma once
// Single-rank stand-in for <mpi.h>, on the include path only in the benchmark-only build
// (cmake -DMOESWEEP_BENCH_ONLY=ON, used by bench/gpu-check.sh on GPU machines that have no MPI).
// It declares just what the trainer's headers name: the communicator type and its null value, which
// is the only communicator there is. trainer/src/gradient_allreduce.cpp, compiled with
// MOESWEEP_NO_MPI, then trains on one rank and never calls MPI.
using MPI_Comm = struct moesweep_single_rank_communicator*;
#define MPI_COMM_NULL nullptr
