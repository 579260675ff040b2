// Training throughput of a whole step (forward, loss, backward, clipping, AdamW) for
// sequence classification: BERT-base (batch 8 x 128 tokens) and a small BERT (4 layers, hidden
// 256, 4 heads, FFN 1024, batch 32 x 64 tokens). Reports the median step time over the timed
// steps, sequences/s, the fraction of the GEMM-only limit, and memory.
//
// GEMM-only limit: a forward pass of one sequence of T tokens costs
//   F = 2 * P_lin * T + 4 * L * T^2 * C
// FLOPs (P_lin: the encoder's Linear weights, L * (4 C^2 + 2 C I); the T^2 term is Q K^T and P V),
// and a training step about 3 F (backward = two products per forward product). At the machine's
// measured peak for the products' precision (f32 234 GFLOP/s, bf16 467 GFLOP/s on 2 threads, unless
// --peak-gflops says otherwise) the fastest possible step is 3 F B / peak; the fraction printed is
// that time over the measured median.
// --precision bf16 runs mixed precision (TrainingGraph's bf16 products; training_graph.cc's header).
// Memory: planned = TrainingGraph::planned_bytes() (activations, planned before the first step)
// plus parameters, gradients and the two AdamW moments (4 arenas); and the process's max RSS.
//
// --breakdown also prints (to stderr) the median wall time of each phase of the step.
//
// Usage: bench_train [--model base|small|both] [--precision f32|bf16] [--steps N] [--threads N]
//                    [--peak-gflops G] [--json] [--breakdown]
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/threads.h"
#include "model/bert_model.h"
#include "train/grad_utils.h"
#include "train/optimizer.h"
#include "train/training_graph.h"

using namespace scalebert;

namespace {

struct BenchShape {
  const char* name;
  int64_t layers, hidden, heads, intermediate, batch, tokens;
};

// Process CPU time (all threads): on a shared machine the wall time includes waiting for a core;
// CPU time per step over the threads used is what the step would take with the cores to itself.
double cpu_seconds() {
  timespec now{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + 1e-9 * static_cast<double>(now.tv_nsec);
}

double max_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // Linux: KiB
}

void run(const BenchShape& shape, kernels::Precision precision, int steps, double peak_gflops, bool json,
         bool breakdown) {
  BertConfig config;
  config.vocab_size = 30522;
  config.hidden_size = shape.hidden;
  config.num_hidden_layers = shape.layers;
  config.num_attention_heads = shape.heads;
  config.intermediate_size = shape.intermediate;
  config.max_position_embeddings = 512;
  config.id2label = {"negative", "neutral", "positive"};
  BertModel model = BertModel::create(config, TaskHead::kSequenceClassification, true, 3);
  // N(0, 0.02) weights, LayerNorm gamma 1 (BERT's init): realistic magnitudes, finite losses.
  std::mt19937 generator(7);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (const ParameterEntry& entry : model.parameters.entries()) {
    Tensor values = model.parameters.get(entry.name);
    const bool gamma = entry.name.find("LayerNorm.weight") != std::string::npos;
    const bool bias = !entry.weight_decay;
    for (int64_t i = 0; i < values.numel(); ++i) values.data<float>()[i] = gamma ? 1.0f : bias ? 0.0f : normal(generator);
  }
  Tensor gradients = model.parameters.make_arena();
  Tensor values = model.parameters.values();
  TrainingGraph graph(model, gradients, DropoutRates::from_config(config), precision);
  if (peak_gflops <= 0.0) peak_gflops = graph.products() == kernels::Precision::kBF16 ? 467.0 : 234.0;
  const std::string products(kernels::precision_name(graph.products()));
  train::OptimizerOptions options;
  train::AdamW optimizer(model.parameters, options);

  const int64_t B = shape.batch, T = shape.tokens;
  std::uniform_int_distribution<int32_t> token(1000, 29000);
  std::vector<TrainingBatch> batches(2);
  for (TrainingBatch& batch : batches) {
    for (int64_t s = 0; s < B; ++s) {
      std::vector<int32_t> ids(static_cast<size_t>(T));
      for (int32_t& id : ids) id = token(generator);
      ids.front() = 101;
      ids.back() = 102;
      batch.tokens.add_sequence(ids);
      batch.labels.push_back(static_cast<int32_t>(s % 3));
    }
  }

  std::vector<double> seconds, cpu;
  // Wall seconds of each phase of a step, for --breakdown: where the time outside the products goes.
  constexpr int kPhases = 4;
  const char* phase_names[kPhases] = {"zero gradients", "forward+backward", "clip (norm)", "AdamW (+clip scale)"};
  std::vector<double> phase_seconds[kPhases];
  double last_loss = 0.0;
  for (int step = 0; step < steps + 1; ++step) {  // step 0 plans buffers and builds oneDNN steps
    const auto start = std::chrono::steady_clock::now();
    const double cpu_start = cpu_seconds();
    auto mark = start;
    auto lap = [&](int phase) {
      const auto now = std::chrono::steady_clock::now();
      if (step > 0) phase_seconds[phase].push_back(std::chrono::duration<double>(now - mark).count());
      mark = now;
    };
    train::zero_arena(gradients);
    lap(0);
    last_loss = graph.forward_backward(batches[step % 2], 1.0f, static_cast<uint64_t>(step)).loss;
    lap(1);
    // As the trainer does it: the clipping coefficient is applied inside the AdamW pass.
    const train::ClipResult clip = train::clip_coefficient(model.parameters, gradients, 1.0);
    lap(2);
    optimizer.step(values, gradients, 1e-5, static_cast<float>(clip.scale));
    lap(3);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (step > 0) seconds.push_back(elapsed), cpu.push_back(cpu_seconds() - cpu_start);
  }
  if (breakdown) {
    for (int phase = 0; phase < kPhases; ++phase) {
      std::vector<double>& values_s = phase_seconds[phase];
      std::sort(values_s.begin(), values_s.end());
      std::fprintf(stderr, "%-6s %-18s median %8.1f ms\n", shape.name, phase_names[phase],
                   1e3 * values_s[values_s.size() / 2]);
    }
  }
  std::sort(seconds.begin(), seconds.end());
  std::sort(cpu.begin(), cpu.end());
  const double median = seconds[seconds.size() / 2];
  // CPU seconds per step spread over the threads: the step time on an idle machine (oneDNN and
  // OpenMP threads spin briefly, so this is an upper bound of the idle-machine time).
  const double cpu_median = cpu[cpu.size() / 2] / static_cast<double>(num_threads());
  const double C = static_cast<double>(shape.hidden), I = static_cast<double>(shape.intermediate);
  const double L = static_cast<double>(shape.layers), Td = static_cast<double>(T);
  const double linear_parameters = L * (4 * C * C + 2 * C * I);
  const double forward_flops = 2 * linear_parameters * Td + 4 * L * Td * Td * C;  // per sequence
  const double step_flops = 3 * forward_flops * static_cast<double>(B);
  const double limit_seconds = step_flops / (peak_gflops * 1e9);
  const double state_bytes = 4.0 * 4.0 * static_cast<double>(model.parameters.total_elements());
  const double planned_mib = (static_cast<double>(graph.planned_bytes()) + state_bytes) / (1024.0 * 1024.0);
  const double sequences_per_second = static_cast<double>(B) / median;
  if (json) {
    std::printf("{\"model\": \"%s\", \"precision\": \"%s\", \"batch\": %lld, \"tokens\": %lld, \"threads\": %d, \"steps\": %zu, "
                "\"median_step_s\": %.4f, \"min_step_s\": %.4f, \"seq_per_s\": %.2f, \"achieved_gflops\": %.1f, "
                "\"gemm_limit_fraction\": %.3f, \"planned_mib\": %.1f, \"activation_mib\": %.1f, "
                "\"max_rss_mib\": %.1f, \"loss\": %.4f, \"cpu_step_s\": %.4f, \"cpu_seq_per_s\": %.2f, "
                "\"cpu_gemm_limit_fraction\": %.3f}\n",
                shape.name, products.c_str(), static_cast<long long>(B), static_cast<long long>(T), num_threads(),
                seconds.size(), median, seconds.front(), sequences_per_second, step_flops / median / 1e9, limit_seconds / median,
                planned_mib, static_cast<double>(graph.planned_bytes()) / (1024.0 * 1024.0), max_rss_mib(), last_loss,
                cpu_median, static_cast<double>(B) / cpu_median, limit_seconds / cpu_median);
  } else {
    std::printf("%-6s %s batch %lld x %lld, %d threads: median step %.3f s (min %.3f, %zu steps) = %.2f seq/s, "
                "%.1f GFLOP/s = %.0f%% of the GEMM-only limit (%.0f GFLOP/s peak); memory planned %.0f MiB "
                "(activations %.0f + 4 parameter arenas %.0f), max RSS %.0f MiB; loss %.4f; by CPU time per thread "
                "%.3f s = %.2f seq/s = %.0f%% of the limit\n",
                shape.name, products.c_str(), static_cast<long long>(B), static_cast<long long>(T), num_threads(),
                median, seconds.front(), seconds.size(), sequences_per_second, step_flops / median / 1e9,
                100.0 * limit_seconds / median, peak_gflops, planned_mib,
                static_cast<double>(graph.planned_bytes()) / (1024.0 * 1024.0), state_bytes / (1024.0 * 1024.0),
                max_rss_mib(), last_loss, cpu_median, static_cast<double>(B) / cpu_median,
                100.0 * limit_seconds / cpu_median);
  }
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  std::string which = "both";
  int steps = 0;
  double peak_gflops = 0.0;  // the precision's measured peak
  std::string precision_text = "f32";
  bool json = false;
  bool breakdown = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_train: %s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--model") {
      which = value();
    } else if (arg == "--steps") {
      steps = std::stoi(value());
    } else if (arg == "--precision") {
      precision_text = value();
    } else if (arg == "--threads") {
      set_num_threads(std::stoi(value()));
    } else if (arg == "--peak-gflops") {
      peak_gflops = std::stod(value());
    } else if (arg == "--json") {
      json = true;
    } else if (arg == "--breakdown") {
      breakdown = true;
    } else {
      std::fprintf(stderr, "usage: bench_train [--model base|small|both] [--precision f32|bf16] [--steps N] "
                           "[--threads N] [--peak-gflops G] [--json] [--breakdown]\n");
      return 2;
    }
  }
  const BenchShape base{"base", 12, 768, 12, 3072, 8, 128};
  const BenchShape small{"small", 4, 256, 4, 1024, 32, 64};
  try {
    const kernels::Precision precision = kernels::precision_from_name(precision_text);
    if (which == "base" || which == "both") run(base, precision, steps > 0 ? steps : 5, peak_gflops, json, breakdown);
    if (which == "small" || which == "both") {
      run(small, precision, steps > 0 ? steps : 10, peak_gflops, json, breakdown);
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "bench_train: %s\n", error.what());
    return 1;
  }
  return 0;
}
