// OpenMP thread count for kernels and oneDNN.
#include "core/threads.h"

#include <omp.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/error.h"

namespace scalebert {

void set_num_threads(int threads) {
  check(threads >= 0, "thread count must be >= 0, got ", threads);
  omp_set_num_threads(threads == 0 ? omp_get_num_procs() : threads);
}

int num_threads() { return omp_get_max_threads(); }

ScopedNumThreads::ScopedNumThreads(int threads) : saved_(omp_get_max_threads()) { set_num_threads(threads); }

ScopedNumThreads::~ScopedNumThreads() { omp_set_num_threads(saved_); }

void release_thread_pool() {
  if (omp_in_parallel()) return;
  // Soft pause: the runtime frees the calling thread's pool (libgomp: gomp_pause_host) and lowers
  // its count of managed threads; it returns nonzero only when it cannot, which changes nothing.
  (void)omp_pause_resource_all(omp_pause_soft);
}

void restart_with_openmp_spin_count(char** argv, long spins) {
  if (std::getenv("GOMP_SPINCOUNT") != nullptr || std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  if (setenv("GOMP_SPINCOUNT", std::to_string(spins).c_str(), 0) != 0) return;
  execv("/proc/self/exe", argv);
  // Still here: exec failed. Carry on with the runtime's defaults; the variable stays set so that
  // child processes do not try again.
  std::perror("note: could not restart with GOMP_SPINCOUNT set (running with OpenMP's default wait)");
}

}  // namespace scalebert
