// Internal helper for the CPU kernels: split [0, n) into fixed-size chunks and run them on the
// OpenMP team (the runtime oneDNN uses too), staying serial when the work is too small to pay for
// waking the team, and on threads set to one kernel thread (no team, no worker pool started).
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace scalebert::kernels {

// Calls body(begin, end) for consecutive chunks of at most `grain` items covering [0, n).
// Chunks are disjoint, so bodies writing only their own range need no synchronization.
template <typename Body>
void parallel_chunks(int64_t n, int64_t grain, Body&& body) {
  if (n <= 0) return;
  const int64_t chunks = (n + grain - 1) / grain;
  if (chunks == 1 || omp_in_parallel() || omp_get_max_threads() == 1) {
    body(int64_t{0}, n);
    return;
  }
  // Dynamic: a thread that the OS deschedules (other engines, oneDNN, other processes share the
  // cores) leaves its chunks to the others instead of stalling the region; chunks are large enough
  // that the shared counter costs nothing measurable.
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t begin = chunk * grain;
    body(begin, std::min(n, begin + grain));
  }
}

}  // namespace scalebert::kernels
