// Playground timings for the backward kernels at BERT-base training shapes (batch 8 x 128 tokens,
// hidden 768, 12 heads, FFN 3072): best of several runs, GFLOP/s for the matrix work, GB/s or
// elements/s for the streaming kernels. Not a test; correctness lives in tests/test_backward.cc.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "core/threads.h"
#include "kernels/cpu/activations_backward.h"
#include "kernels/cpu/attention_backward.h"
#include "kernels/cpu/dropout.h"
#include "kernels/cpu/layernorm.h"
#include "kernels/cpu/layernorm_backward.h"
#include "kernels/cpu/linear_backward.h"
#include "kernels/cpu/loss.h"
#include "kernels/cpu/matmul.h"

using namespace scalebert;
using namespace scalebert::kernels;

namespace {

template <typename Body>
double best_seconds(int runs, Body&& body) {
  double best = 1e30;
  for (int run = 0; run < runs; ++run) {
    const auto start = std::chrono::steady_clock::now();
    body();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

std::vector<float> random_floats(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> values(static_cast<size_t>(n));
  for (float& v : values) v = normal(rng);
  return values;
}

}  // namespace

int main() {
  std::mt19937 rng(1);
  const int64_t B = 8, T = 128, N = B * T, C = 768, NH = 12, HS = 64, I = 3072, V = 30522;
  std::printf("threads %d, batch %lld x %lld tokens, C=%lld, NH=%lld, FFN=%lld\n", num_threads(),
              static_cast<long long>(B), static_cast<long long>(T), static_cast<long long>(C),
              static_cast<long long>(NH), static_cast<long long>(I));

  // Linear backward, intermediate dense shape: x (N, C), W (I, C), dy (N, I).
  {
    const std::vector<float> x = random_floats(N * C, rng), w = random_floats(I * C, rng), dy = random_floats(N * I, rng);
    std::vector<float> dx(N * C), dw(I * C), db(I);
    LinearBackwardStep step(x.data(), C, w.data(), dy.data(), I, dx.data(), C, dw.data(), db.data(), N, C, I, false);
    std::vector<char> scratchpad(step.scratchpad_bytes() + 64);
    step.bind_scratchpad(scratchpad.data());
    dnnl::stream stream(cpu_engine());
    const double seconds = best_seconds(5, [&] { step.run(stream); });
    std::printf("linear_backward (%lld x %lld -> %lld): %.2f ms, %.1f GFLOP/s  [dx %s, dW %s]\n",
                static_cast<long long>(N), static_cast<long long>(C), static_cast<long long>(I), seconds * 1e3,
                4.0 * N * C * I / seconds * 1e-9, step.dx_implementation(), step.dweight_implementation());
    const double bias = best_seconds(5, [&] { bias_backward(db.data(), dy.data(), N, I, I); });
    std::printf("  of which bias_backward: %.3f ms, %.1f GB/s\n", bias * 1e3, N * I * 4.0 / bias * 1e-9);
  }
  // Attention forward_train + backward, dropout 0.1.
  {
    std::vector<int64_t> offsets(B + 1);
    for (int64_t s = 0; s <= B; ++s) offsets[s] = s * T;
    const std::vector<float> qkv = random_floats(N * 3 * C, rng), dout = random_floats(N * C, rng);
    std::vector<float> out(N * C), dqkv(N * 3 * C), probs(attention_probs_floats(offsets.data(), B, NH));
    std::vector<float> scratch(attention_train_scratch_floats(T, HS, num_threads()));
    const int64_t sf = static_cast<int64_t>(scratch.size());
    for (float p : {0.0f, 0.1f}) {
      const double forward = best_seconds(5, [&] {
        attention_forward_train(out.data(), probs.data(), qkv.data(), offsets.data(), B, NH, HS, p, 7, 0,
                                scratch.data(), sf);
      });
      const double backward = best_seconds(5, [&] {
        attention_backward(dqkv.data(), dout.data(), qkv.data(), probs.data(), offsets.data(), B, NH, HS, p, 7, 0,
                           scratch.data(), sf);
      });
      const double pair_flops = 2.0 * T * T * HS * B * NH;  // one (L, L, HS) product over all pairs
      std::printf("attention p=%.1f: forward_train %.2f ms (%.1f GFLOP/s), backward %.2f ms (%.1f GFLOP/s)\n", p,
                  forward * 1e3, 2 * pair_flops / forward * 1e-9, backward * 1e3, 4 * pair_flops / backward * 1e-9);
    }
  }
  // Layer norm backward, GELU backward, dropout: streaming.
  {
    const std::vector<float> x = random_floats(N * C, rng), dout = random_floats(N * C, rng), gamma = random_floats(C, rng);
    std::vector<float> y(N * C), mean(N), rstd(N), dx(N * C), dgamma(C), dbeta(C);
    layernorm_forward(y.data(), x.data(), gamma.data(), gamma.data(), N, C, 1e-12f, mean.data(), rstd.data());
    const double ln = best_seconds(10, [&] {
      layernorm_backward(dx.data(), dgamma.data(), dbeta.data(), dout.data(), x.data(), gamma.data(), mean.data(),
                         rstd.data(), N, C);
    });
    std::printf("layernorm_backward (%lld x %lld): %.3f ms, %.1f GB/s (5 arrays of N x C touched)\n",
                static_cast<long long>(N), static_cast<long long>(C), ln * 1e3, 5.0 * N * C * 4 / ln * 1e-9);
    const std::vector<float> h = random_floats(N * I, rng), dh = random_floats(N * I, rng);
    std::vector<float> dpre(N * I);
    const double gelu = best_seconds(10, [&] { gelu_erf_backward(dpre.data(), h.data(), dh.data(), N * I); });
    std::printf("gelu_erf_backward (%lld): %.3f ms, %.2f Gelem/s\n", static_cast<long long>(N * I), gelu * 1e3,
                N * I / gelu * 1e-9);
    const double drop = best_seconds(10, [&] { dropout_forward(dx.data(), x.data(), N * C, 0.1f, 3, 0); });
    std::printf("dropout_forward (%lld): %.3f ms, %.2f Gelem/s\n", static_cast<long long>(N * C), drop * 1e3,
                N * C / drop * 1e-9);
  }
  // Masked-LM loss: 15% of tokens, V = 30522, in place.
  {
    const int64_t rows = N * 15 / 100;
    std::vector<float> logits = random_floats(rows * V, rng), row_losses(rows);
    std::vector<int32_t> targets(rows);
    for (int64_t r = 0; r < rows; ++r) targets[r] = static_cast<int32_t>(rng() % V);
    const std::vector<float> saved = logits;
    const double ce = best_seconds(5, [&] {
      std::copy(saved.begin(), saved.end(), logits.begin());
      cross_entropy_forward_backward(logits.data(), row_losses.data(), logits.data(), targets.data(), rows, V, 1.0f);
    });
    std::printf("cross_entropy (%lld x %lld, in place, incl. copy): %.2f ms, %.1f GB/s\n", static_cast<long long>(rows),
                static_cast<long long>(V), ce * 1e3, 3.0 * rows * V * 4 / ce * 1e-9);
  }
  return 0;
}
