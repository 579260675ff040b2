// Playground for the CPU kernels: times each fast kernel and its scalar reference on BERT-base
// shapes (N = 32 x 128 tokens, C = 768, NH = 12, HS = 64) and on tweet-like packed batches
// (lengths 10..60), checks the fast result against the reference, and prints GB/s (bytes read +
// written) or GFLOP/s beside this machine's memcpy bandwidth measured in the same run.
// Usage: bench_kernels [--quick]   (threads from OMP_NUM_THREADS)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/threads.h"
#include "kernels/cpu/activations.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/layernorm.h"
#include "kernels/cpu/pooling.h"
#include "kernels/cpu/reference.h"
#include "kernels/cpu/softmax.h"
#include "kernels/cpu/vector_math.h"

namespace {

using namespace scalebert;
using namespace scalebert::kernels;

using Clock = std::chrono::steady_clock;

// An aligned float buffer (kernels see 64-byte-aligned activations in the engine too).
struct Buffer {
  explicit Buffer(int64_t count) : n(count), block(allocate_aligned(static_cast<size_t>(count) * sizeof(float))) {}
  float* data() { return static_cast<float*>(block.get()); }
  int64_t n;
  std::shared_ptr<void> block;
};

void fill_random(float* x, int64_t n, std::mt19937& rng, float stddev = 1.0f) {
  std::normal_distribution<float> normal(0.0f, stddev);
  for (int64_t i = 0; i < n; ++i) x[i] = normal(rng);
}

// Best wall time of `reps` runs after one warm-up (reps = 0: the single run, for slow references),
// in seconds. `setup` (untimed) restores inputs of in-place kernels.
double best_time(int reps, const std::function<void()>& run, const std::function<void()>& setup = {}) {
  double best = std::numeric_limits<double>::infinity();
  for (int rep = 0; rep <= reps; ++rep) {
    if (setup) setup();
    const auto start = Clock::now();
    run();
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (rep > 0 || reps == 0) best = std::min(best, seconds);
  }
  return best;
}

float max_abs_difference(const float* a, const float* b, int64_t n) {
  float worst = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float d = std::fabs(a[i] - b[i]);
    if (!(d <= worst)) worst = d;  // NaN makes it NaN
  }
  return worst;
}

void print_header() {
  std::printf("%-36s %9s %8s %9s %10s %9s %10s\n", "kernel (shape)", "fast ms", "GB/s", "GFLOP/s", "ref ms",
              "speedup", "max|diff|");
}

// reference_s = 0: no reference run (too slow for the shape); printed as "-".
void print_row(const std::string& name, double fast_s, double bytes, double flops, double reference_s, float diff) {
  const std::string gflops = flops > 0 ? std::to_string(static_cast<int>(flops / fast_s / 1e9)) : "-";
  char reference[32] = "-", speedup[32] = "-", difference[32] = "-";
  if (reference_s > 0) {
    std::snprintf(reference, sizeof(reference), "%.2f", reference_s * 1e3);
    std::snprintf(speedup, sizeof(speedup), "%.1fx", reference_s / fast_s);
  }
  if (!std::isnan(diff)) std::snprintf(difference, sizeof(difference), "%.2e", diff);
  std::printf("%-36s %9.3f %8.1f %9s %10s %9s %10s\n", name.c_str(), fast_s * 1e3, bytes / fast_s / 1e9,
              gflops.c_str(), reference, speedup, difference);
}

double memcpy_bandwidth(int reps) {
  const int64_t n = int64_t{64} << 20 >> 2;  // 64 MiB of floats, far beyond the caches
  Buffer source(n), target(n);
  std::memset(source.data(), 1, static_cast<size_t>(n) * 4);
  std::memset(target.data(), 0, static_cast<size_t>(n) * 4);
  const double seconds = best_time(reps, [&] { std::memcpy(target.data(), source.data(), static_cast<size_t>(n) * 4); });
  return 2.0 * static_cast<double>(n) * 4 / seconds / 1e9;  // read + write
}

// Packed attention vs the padded Hugging Face reference for the given lengths.
void bench_attention(const std::string& label, const std::vector<int64_t>& lengths, int64_t NH, int64_t HS, int reps,
                     bool run_reference, std::mt19937& rng) {
  const int64_t S = static_cast<int64_t>(lengths.size()), C = NH * HS;
  std::vector<int64_t> offsets(static_cast<size_t>(S + 1), 0);
  double flops = 0.0;
  for (int64_t s = 0; s < S; ++s) {
    offsets[s + 1] = offsets[s] + lengths[s];
    flops += 4.0 * static_cast<double>(lengths[s]) * lengths[s] * HS * NH;  // QK^T and PV, 2 flops per MAC
  }
  const int64_t N = offsets[S], T = *std::max_element(lengths.begin(), lengths.end());
  Buffer qkv(N * 3 * C), out(N * C);
  fill_random(qkv.data(), qkv.n, rng);
  const int64_t scratch_floats = attention_scratch_floats(T, HS, num_threads());
  Buffer scratch(scratch_floats);
  const double fast = best_time(reps, [&] {
    attention_forward(out.data(), qkv.data(), offsets.data(), S, NH, HS, scratch.data(), scratch_floats);
  });
  double reference_time = 0.0;
  float diff = NAN;
  if (run_reference) {
    // The padded batch the reference (and an unpacked engine) would process: S x T with a mask.
    Buffer padded_qkv(S * T * 3 * C), padded_out(S * T * C), mask(S * T);
    std::fill(padded_qkv.data(), padded_qkv.data() + padded_qkv.n, 0.0f);
    for (int64_t s = 0; s < S; ++s) {
      for (int64_t t = 0; t < T; ++t) mask.data()[s * T + t] = t < lengths[s] ? 0.0f : std::numeric_limits<float>::lowest();
      std::memcpy(padded_qkv.data() + s * T * 3 * C, qkv.data() + offsets[s] * 3 * C,
                  static_cast<size_t>(lengths[s] * 3 * C) * 4);
    }
    reference_time = best_time(0, [&] {
      attention_forward_reference(padded_out.data(), padded_qkv.data(), mask.data(), S, T, NH, HS);
    });
    diff = 0.0f;
    for (int64_t s = 0; s < S; ++s) {
      diff = std::max(diff, max_abs_difference(out.data() + offsets[s] * C, padded_out.data() + s * T * C, lengths[s] * C));
    }
  }
  const double bytes = static_cast<double>(N) * 4 * C * 4;  // read q, k, v, write context
  print_row(label, fast, bytes, flops, reference_time, diff);
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  // Best of many: the machine is shared, and a descheduled OpenMP thread stalls a whole region.
  const int reps = quick ? 3 : 20;
  std::mt19937 rng(1234);

  std::printf("threads %d, memcpy bandwidth %.1f GB/s (read + write, 64 MiB)\n\n", num_threads(),
              memcpy_bandwidth(reps));
  print_header();

  const int64_t B = 32, T = 128, N = B * T, C = 768, NH = 12, HS = 64, FF = 4 * C;

  {  // layernorm and add + layernorm, (N, C)
    Buffer in(N * C), residual(N * C), out(N * C), reference(N * C), gamma(C), beta(C);
    fill_random(in.data(), in.n, rng);
    fill_random(residual.data(), residual.n, rng);
    fill_random(gamma.data(), C, rng);
    fill_random(beta.data(), C, rng);
    double fast = best_time(reps, [&] { layernorm_forward(out.data(), in.data(), gamma.data(), beta.data(), N, C, 1e-12f); });
    double ref = best_time(1, [&] {
      layernorm_forward_reference(reference.data(), in.data(), gamma.data(), beta.data(), N, C, 1e-12f);
    });
    print_row("layernorm (4096, 768)", fast, 2.0 * N * C * 4, 0, ref, max_abs_difference(out.data(), reference.data(), N * C));
    fast = best_time(reps, [&] {
      add_layernorm_forward(out.data(), in.data(), residual.data(), gamma.data(), beta.data(), N, C, 1e-12f);
    });
    ref = best_time(1, [&] {
      add_layernorm_forward_reference(reference.data(), in.data(), residual.data(), gamma.data(), beta.data(), N, C,
                                      1e-12f);
    });
    print_row("add_layernorm (4096, 768)", fast, 3.0 * N * C * 4, 0, ref,
              max_abs_difference(out.data(), reference.data(), N * C));
  }

  {  // activations in place over the FFN intermediate (N, 4C); inputs restored before every run
    const int64_t n = N * FF;
    Buffer source(n), x(n), reference(n), bias(FF);
    fill_random(source.data(), n, rng, 2.0f);
    fill_random(bias.data(), FF, rng);
    auto restore = [&] { std::memcpy(x.data(), source.data(), static_cast<size_t>(n) * 4); };
    auto restore_reference = [&] { std::memcpy(reference.data(), source.data(), static_cast<size_t>(n) * 4); };
    struct Case {
      const char* name;
      void (*fast)(float*, int64_t);
      void (*reference)(float*, int64_t);
    };
    const Case cases[] = {
        {"gelu_erf (4096, 3072)", gelu_erf_forward, gelu_erf_forward_reference},
        {"gelu_tanh (4096, 3072)", gelu_tanh_forward, gelu_tanh_forward_reference},
        {"relu (4096, 3072)", relu_forward, relu_forward_reference},
        {"tanh (4096, 3072)", tanh_forward, tanh_forward_reference},
    };
    for (const Case& c : cases) {
      const double fast = best_time(reps, [&] { c.fast(x.data(), n); }, restore);
      const double ref = best_time(0, [&] { c.reference(reference.data(), n); }, restore_reference);
      print_row(c.name, fast, 2.0 * n * 4, 0, ref, max_abs_difference(x.data(), reference.data(), n));
    }
    const double fast = best_time(reps, [&] { add_bias_rows(x.data(), bias.data(), N, FF); }, restore);
    const double ref = best_time(0, [&] { add_bias_rows_reference(reference.data(), bias.data(), N, FF); }, restore_reference);
    print_row("add_bias_rows (4096, 3072)", fast, 2.0 * n * 4, 0, ref, max_abs_difference(x.data(), reference.data(), n));
  }

  {  // softmax over attention-probability rows (B * NH * T, T) with a padding mask
    const int64_t rows = B * NH * T, n = rows * T;
    Buffer source(n), x(n), reference(n), mask(T);
    fill_random(source.data(), n, rng, 3.0f);
    for (int64_t t = 0; t < T; ++t) mask.data()[t] = t < 100 ? 0.0f : std::numeric_limits<float>::lowest();
    const double fast = best_time(reps, [&] { softmax_rows(x.data(), rows, T, mask.data()); },
                                  [&] { std::memcpy(x.data(), source.data(), static_cast<size_t>(n) * 4); });
    const double ref = best_time(0, [&] { softmax_rows_reference(reference.data(), rows, T, mask.data()); },
                                 [&] { std::memcpy(reference.data(), source.data(), static_cast<size_t>(n) * 4); });
    print_row("softmax_rows (49152, 128) masked", fast, 2.0 * n * 4, 0, ref,
              max_abs_difference(x.data(), reference.data(), n));
  }

  {  // embeddings: gather three rows per token, then layernorm
    const int64_t V = 30522, P = 512, TV = 2;
    Buffer word(V * C), position(P * C), type(TV * C), gamma(C), beta(C), out(N * C), reference(N * C);
    fill_random(word.data(), word.n, rng);
    fill_random(position.data(), position.n, rng);
    fill_random(type.data(), type.n, rng);
    fill_random(gamma.data(), C, rng);
    fill_random(beta.data(), C, rng);
    std::vector<int32_t> ids(N), positions(N), types(N, 0);
    std::uniform_int_distribution<int32_t> pick(0, V - 1);
    for (int64_t n = 0; n < N; ++n) {
      ids[n] = pick(rng);
      positions[n] = static_cast<int32_t>(n % T);
    }
    const double fast = best_time(reps, [&] {
      embedding_forward(out.data(), ids.data(), positions.data(), types.data(), word.data(), V, position.data(), P,
                        type.data(), TV, gamma.data(), beta.data(), N, C, 1e-12f);
    });
    const double ref = best_time(1, [&] {
      embedding_forward_reference(reference.data(), ids.data(), positions.data(), types.data(), word.data(),
                                  position.data(), type.data(), gamma.data(), beta.data(), N, C, 1e-12f);
    });
    print_row("embedding+LN (4096, 768)", fast, 4.0 * N * C * 4, 0, ref,
              max_abs_difference(out.data(), reference.data(), N * C));
  }

  {  // pooling over 32 sequences of 128 tokens
    Buffer hidden(N * C), out(B * C), reference(B * C);
    fill_random(hidden.data(), hidden.n, rng);
    std::vector<int64_t> offsets(B + 1);
    for (int64_t s = 0; s <= B; ++s) offsets[s] = s * T;
    double fast = best_time(reps, [&] { mean_pool(out.data(), hidden.data(), offsets.data(), B, C); });
    double ref = best_time(1, [&] { mean_pool_reference(reference.data(), hidden.data(), offsets.data(), B, C); });
    print_row("mean_pool (4096, 768) -> (32, 768)", fast, 1.0 * N * C * 4, 0, ref,
              max_abs_difference(out.data(), reference.data(), B * C));
    Buffer x(N * C), x_reference(N * C);
    auto restore = [&] { std::memcpy(x.data(), hidden.data(), static_cast<size_t>(N * C) * 4); };
    fast = best_time(reps, [&] { l2_normalize_rows(x.data(), N, C); }, restore);
    ref = best_time(0, [&] { l2_normalize_rows_reference(x_reference.data(), N, C, 1e-12f); },
                    [&] { std::memcpy(x_reference.data(), hidden.data(), static_cast<size_t>(N * C) * 4); });
    print_row("l2_normalize_rows (4096, 768)", fast, 2.0 * N * C * 4, 0, ref,
              max_abs_difference(x.data(), x_reference.data(), N * C));
  }

  {  // vector math, out of place over (N, C)
    const int64_t n = N * C;
    Buffer in(n), out(n);
    fill_random(in.data(), n, rng, 3.0f);
    const double fast = best_time(reps, [&] { exp_forward(out.data(), in.data(), n); });
    const double ref = best_time(0, [&] {
      for (int64_t i = 0; i < n; ++i) out.data()[i] = std::exp(in.data()[i]);
    });
    print_row("exp vs std::exp loop (3.1M)", fast, 2.0 * n * 4, 0, ref, NAN);
  }

  std::printf("\nattention (packed; reference = padded HF formulation, scalar)\n");
  print_header();
  bench_attention("attention BERT 32 x 128, 12 x 64", std::vector<int64_t>(B, T), NH, HS, reps, !quick, rng);
  std::vector<int64_t> tweets(128);
  std::uniform_int_distribution<int64_t> tweet_length(10, 60);
  for (int64_t& length : tweets) length = tweet_length(rng);
  bench_attention("attention tweets 128 x 10..60", tweets, NH, HS, reps, true, rng);
  bench_attention("attention MiniLM 32 x 128, 12 x 32", std::vector<int64_t>(B, T), NH, 32, reps, false, rng);
  return 0;
}
