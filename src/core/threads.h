// Intra-op threading. ScaleBERT's kernels and oneDNN share one OpenMP runtime (Debian's oneDNN is
// built with GNU OpenMP), so one setting governs both.
#pragma once

namespace scalebert {

// Sets the number of threads for all following kernels; 0 means "all cores".
void set_num_threads(int threads);
int num_threads();

}  // namespace scalebert
