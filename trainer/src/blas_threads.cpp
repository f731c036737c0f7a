#include "blas_threads.h"

#include <dlfcn.h>

namespace moesweep::trainer {

std::string set_blas_threads(int threads) {
  // OpenBLAS: openblas_set_num_threads(int). BLIS: bli_thread_set_num_threads(dim_t = int64).
  if (auto* openblas = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    openblas(threads);
    return "openblas";
  }
  if (auto* blis = reinterpret_cast<void (*)(long)>(dlsym(RTLD_DEFAULT, "bli_thread_set_num_threads"))) {
    blis(threads);
    return "blis";
  }
  return "";
}

}  // namespace moesweep::trainer
