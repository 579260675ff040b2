// Intra-op threading. ScaleBERT's kernels and oneDNN share one OpenMP runtime (Debian's oneDNN is
// built with GNU OpenMP), so one setting governs both.
#pragma once

namespace scalebert {

// Sets the number of threads for all following kernels on the calling thread (OpenMP's thread
// count is a per-thread setting); 0 means "all cores".
void set_num_threads(int threads);
int num_threads();

// Sets the calling thread's kernel thread count for one scope and restores it on exit.
class ScopedNumThreads {
 public:
  explicit ScopedNumThreads(int threads);
  ~ScopedNumThreads();
  ScopedNumThreads(const ScopedNumThreads&) = delete;
  ScopedNumThreads& operator=(const ScopedNumThreads&) = delete;

 private:
  int saved_;
};

// Ends the OpenMP worker pool the calling thread started, if any (its workers exit; a later
// parallel region on this thread starts a new pool). Why it matters: GNU OpenMP counts the workers
// of every thread's pool, and once they outnumber the cores, every team's barriers stop spinning
// and sleep in the kernel instead, at each of the ~100 parallel regions of a forward pass. One idle
// pool left behind by a loading thread made a served MiniLM int8 tweet 0.80 -> 2.6 ms on 2 cores.
// Threads that run kernels only now and then (model loading, request threads) call this so that
// the long-lived engine threads keep the cores' spinning teams to themselves. No-op inside a
// parallel region.
void release_thread_pool();

// GNU OpenMP reads its wait settings once, as the process starts. By default a worker spins for
// 300,000 rounds (a few milliseconds) after each parallel region before it sleeps: right for a job
// that owns the cores, wrong for a server, where the spinning after each batch takes a core from
// the request threads collecting the next one (measured, MiniLM f32 at 32 clients on 2 cores:
// batches cut at ~27 instead of 32 requests, p99 121 instead of 91 ms). 20,000 rounds still span
// the gaps between the regions of a forward pass. Servers call this first thing in main: unless
// the environment sets GOMP_SPINCOUNT or OMP_WAIT_POLICY, it sets GOMP_SPINCOUNT to `spins` and
// executes the program again (same process id and arguments) for the runtime to read it. Returns
// when there is nothing to do, or when the re-execution fails (the runtime's defaults then stay).
inline constexpr long kServingSpinCount = 20000;
void restart_with_openmp_spin_count(char** argv, long spins);

}  // namespace scalebert
