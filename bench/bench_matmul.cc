// Playground for the oneDNN linear step: GFLOP/s on BERT-base shapes next to this machine's f32 peak
// (234 GFLOP/s on 2 Zen 4 cores, ../shared/BENCHMARKS.md), and the implementation oneDNN picked.
// Usage: bench_matmul [threads]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "core/arena.h"
#include "core/tensor.h"
#include "core/threads.h"
#include "kernels/cpu/matmul.h"

using namespace scalebert;
using namespace scalebert::kernels;

int main(int argc, char** argv) {
  int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  set_num_threads(threads);
  const double peak_gflops = 117.0 * threads;
  struct Shape3 { int64_t in, out; const char* name; };
  const Shape3 layers[] = {{768, 2304, "qkv"}, {768, 768, "attn-out"}, {768, 3072, "ffn-in+gelu"}, {3072, 768, "ffn-out+sum"}};
  std::printf("%-12s %6s %10s %10s %8s  %s\n", "layer", "rows", "ms", "GFLOP/s", "of peak", "impl");
  for (int64_t rows : {32, 128, 960, 4096}) {
    for (const Shape3& layer : layers) {
      Tensor weight = Tensor::zeros({layer.out, layer.in}, DType::kF32);
      for (int64_t i = 0; i < weight.numel(); ++i) weight.data<float>()[i] = 0.001f * static_cast<float>(i % 97);
      Tensor bias = Tensor::zeros({layer.out}, DType::kF32);
      PackedLinear linear(weight, bias);
      Tensor x = Tensor::zeros({rows, layer.in}, DType::kF32);
      Tensor y = Tensor::zeros({rows, layer.out}, DType::kF32);
      Epilogue epilogue = layer.out == 3072 ? Epilogue::kGeluErf : Epilogue::kNone;
      bool accumulate = layer.in == 3072;
      LinearStep step(linear, x.data<float>(), layer.in, y.data<float>(), layer.out, rows, epilogue, accumulate);
      std::shared_ptr<void> scratch = allocate_aligned(step.scratchpad_bytes());
      step.bind_scratchpad(scratch.get());
      dnnl::stream stream(cpu_engine());
      std::vector<double> times;
      const double flops = 2.0 * rows * layer.in * layer.out;
      const int repeats = std::max(3, static_cast<int>(2e10 / flops / 20));
      for (int i = 0; i < repeats + 2; ++i) {
        auto start = std::chrono::steady_clock::now();
        step.run(stream);
        stream.wait();
        times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      }
      std::sort(times.begin(), times.end());
      double median = times[times.size() / 2];
      double gflops = flops / median / 1e9;
      std::printf("%-12s %6ld %10.3f %10.1f %7.0f%%  %s\n", layer.name, static_cast<long>(rows), median * 1e3, gflops,
                  100.0 * gflops / peak_gflops, step.implementation());
    }
  }
  return 0;
}
