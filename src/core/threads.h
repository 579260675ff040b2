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

}  // namespace scalebert
