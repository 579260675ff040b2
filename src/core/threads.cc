// OpenMP thread count for kernels and oneDNN.
#include "core/threads.h"

#include <omp.h>

#include "core/error.h"

namespace scalebert {

void set_num_threads(int threads) {
  check(threads >= 0, "thread count must be >= 0, got ", threads);
  omp_set_num_threads(threads == 0 ? omp_get_num_procs() : threads);
}

int num_threads() { return omp_get_max_threads(); }

}  // namespace scalebert
