#pragma once
// The BLAS behind LibTorch's CPU GEMMs keeps its own thread pool (internal to the trainer).
#include <string>

namespace moesweep::trainer {

// Sets the thread count of the BLAS library LibTorch calls. Debian's LibTorch calls whatever
// libblas.so.3 resolves to (OpenBLAS after setup.sh), and OpenBLAS sizes its pool from
// OPENBLAS_NUM_THREADS or the core count, whatever torch::set_num_threads says: results then depend on
// the machine's core count (OpenBLAS splits a GEMM differently per thread count) and K workers on K
// cores oversubscribe them. Looked up at run time (dlsym), so any BLAS links. Returns the library whose
// count was set ("openblas", "blis"), or "" when the BLAS in use has no such call (a generic reference
// BLAS is single-threaded anyway).
std::string set_blas_threads(int threads);

}  // namespace moesweep::trainer
