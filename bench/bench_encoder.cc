// Inference benchmark of the ScaleBERT encoder (f32, random BERT-base weights): throughput, latency
// and a mixed-length tweet batch, each printed beside the GEMM-only limit of this machine.
//
// FLOPs of one forward pass over a sequence of T tokens (bench/README.md):
//   2 * P_lin * T + 4 * L * T^2 * C,  P_lin = L * (4 C^2 + 2 C I)
// (the linear layers, then Q K^T and P V; embeddings, layer norms, softmax and the pooler are left
// out). The GEMM-only limit is the time those FLOPs take at the f32 FMA peak: 117 GFLOP/s per
// thread on this machine's Zen 4 cores (../shared/BENCHMARKS.md), so "of limit" = achieved / peak.
//
// Usage: bench_encoder [--threads N] [--case NAME] [--layers L] [--hidden C] [--min-seconds S]
//                      [--min-runs N] [--max-runs N] [--json]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/threads.h"
#include "model/bert_model.h"
#include "model/inference_session.h"
#include "model/inference_weights.h"
#include "model/packed_batch.h"

using namespace scalebert;

namespace {

// Token lengths of a batch of 32 financial tweets: the 32 quantiles ((i + 0.5) / 32) of the
// bert-base-uncased token counts ([CLS] and [SEP] included) of the 2,388 tweets in
// shared/data/twitter_financial_news_sentiment/sent_valid.csv (mean 27.9, median 26, range 4..79).
// Fixed here so that the benchmark needs no data files; bench/peer_pytorch_encoder.py holds the same list.
constexpr int64_t kTweetLengths[32] = {8,  10, 11, 12, 13, 14, 15, 15, 16, 17, 18, 19, 20, 21, 22, 25,
                                       27, 29, 31, 33, 35, 36, 38, 39, 41, 42, 43, 45, 46, 48, 50, 54};

constexpr double kPeakF32PerThread = 117e9;  // FLOP/s, AVX-512 FMA on one Zen 4 core

struct Options {
  int threads = 2;
  std::string only_case;  // empty: every case
  int64_t layers = 12;
  int64_t hidden = 768;
  double min_seconds = 3.0;
  int min_runs = 3;
  int max_runs = 1000;
  bool json = false;
};

struct Case {
  std::string name;
  std::string kind;  // "throughput" (report seq/s) or "latency" (report ms)
  std::vector<int64_t> lengths;  // one entry per sequence
};

// splitmix64: a fast, seedable generator; quality is ample for random weights and token ids.
struct Random {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return (static_cast<double>(next() >> 11) + 0.5) * 0x1.0p-53; }  // (0, 1)
};

// Fills every parameter with normal(0, std) (Box-Muller) and LayerNorm weights with 1, biases with
// 0, as transformers' BertPreTrainedModel._init_weights does.
void randomize(ParameterTable& parameters, double std, uint64_t seed) {
  Random random{seed};
  for (const ParameterEntry& entry : parameters.entries()) {
    Tensor tensor = parameters.get(entry.name);
    float* values = tensor.data<float>();  // (numel)
    const int64_t count = tensor.numel();
    const bool is_bias = entry.name.ends_with(".bias");
    const bool is_norm_weight = entry.name.ends_with("LayerNorm.weight");
    if (is_bias || is_norm_weight) {
      std::fill(values, values + count, is_norm_weight ? 1.0f : 0.0f);
      continue;
    }
    for (int64_t i = 0; i < count; i += 2) {
      const double radius = std * std::sqrt(-2.0 * std::log(random.uniform()));
      const double angle = 2.0 * M_PI * random.uniform();
      values[i] = static_cast<float>(radius * std::cos(angle));
      if (i + 1 < count) values[i + 1] = static_cast<float>(radius * std::sin(angle));
    }
  }
}

// [CLS] w ... w [SEP] with word ids drawn from the ordinary vocabulary range (skipping the
// [unused]/special ids of bert-base-uncased when the vocabulary is that large).
PackedBatch make_batch(const std::vector<int64_t>& lengths, int64_t vocab_size, uint64_t seed) {
  Random random{seed};
  const int32_t first_word = vocab_size > 2000 ? 1000 : 3;
  PackedBatch batch;
  for (int64_t length : lengths) {
    std::vector<int32_t> ids(static_cast<size_t>(length));
    for (int32_t& id : ids) id = first_word + static_cast<int32_t>(random.next() % static_cast<uint64_t>(vocab_size - first_word));
    ids.front() = vocab_size > 102 ? 101 : 1;
    if (length > 1) ids.back() = vocab_size > 102 ? 102 : 2;
    batch.add_sequence(ids);
  }
  return batch;
}

double forward_flops(const BertConfig& config, const std::vector<int64_t>& lengths) {
  const double L = static_cast<double>(config.num_hidden_layers);
  const double C = static_cast<double>(config.hidden_size);
  const double I = static_cast<double>(config.intermediate_size);
  const double linear_parameters = L * (4.0 * C * C + 2.0 * C * I);  // P_lin
  double flops = 0.0;
  for (int64_t length : lengths) {
    const double T = static_cast<double>(length);
    flops += 2.0 * linear_parameters * T + 4.0 * L * T * T * C;
  }
  return flops;
}

std::vector<Case> all_cases() {
  return {
      {"batch32_seq128", "throughput", std::vector<int64_t>(32, 128)},
      {"batch1_seq32", "latency", {32}},
      {"batch1_seq128", "latency", {128}},
      {"tweets32", "throughput", std::vector<int64_t>(std::begin(kTweetLengths), std::end(kTweetLengths))},
  };
}

// CPU time of the whole process (every thread), the same clock as Python's time.process_time().
// Under OMP_WAIT_POLICY=passive it counts the work done and not the waiting, so on a machine shared
// with other jobs cpu time / threads estimates what the wall time would be on a quiet one.
double process_cpu_seconds() {
  timespec now{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + 1e-9 * static_cast<double>(now.tv_nsec);
}

double median_of(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

[[noreturn]] void usage(int code) {
  std::fprintf(code == 0 ? stdout : stderr,
               "usage: bench_encoder [--threads N] [--case NAME] [--layers L] [--hidden C]\n"
               "                     [--min-seconds S] [--min-runs N] [--max-runs N] [--json]\n"
               "  --threads N      OpenMP threads (default 2)\n"
               "  --case NAME      one of batch32_seq128, batch1_seq32, batch1_seq128, tweets32 (default: all)\n"
               "  --layers L       encoder layers (default 12)\n"
               "  --hidden C       hidden size; heads = C/64, intermediate = 4C (default 768)\n"
               "  --min-seconds S  time each case for at least S seconds (default 3)\n"
               "  --min-runs N     and at least N timed runs (default 3)\n"
               "  --max-runs N     but at most N timed runs (default 1000)\n"
               "  --json           print one JSON line per case on stdout (the table goes to stderr)\n");
  std::exit(code);
}

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_encoder: %s needs a value\n", argv[i]);
        usage(2);
      }
      return argv[++i];
    };
    try {
      if (arg == "--threads") options.threads = std::stoi(value());
      else if (arg == "--case") options.only_case = value();
      else if (arg == "--layers") options.layers = std::stoll(value());
      else if (arg == "--hidden") options.hidden = std::stoll(value());
      else if (arg == "--min-seconds") options.min_seconds = std::stod(value());
      else if (arg == "--min-runs") options.min_runs = std::stoi(value());
      else if (arg == "--max-runs") options.max_runs = std::stoi(value());
      else if (arg == "--json") options.json = true;
      else if (arg == "--help" || arg == "-h") usage(0);
      else {
        std::fprintf(stderr, "bench_encoder: unknown argument '%s'\n", argv[i]);
        usage(2);
      }
    } catch (const std::logic_error&) {  // std::stoi and friends on a non-number
      std::fprintf(stderr, "bench_encoder: bad value for %s\n", argv[i - 1]);
      usage(2);
    }
  }
  if (options.threads < 1 || options.layers < 1 || options.hidden < 64 || options.hidden % 64 != 0 ||
      options.min_runs < 1 || options.max_runs < options.min_runs || options.min_seconds < 0) {
    std::fprintf(stderr,
                 "bench_encoder: need threads >= 1, layers >= 1, hidden a multiple of 64, "
                 "1 <= min-runs <= max-runs, min-seconds >= 0\n");
    usage(2);
  }
  return options;
}

int run(const Options& options) {
  set_num_threads(options.threads);

  BertConfig config;
  config.vocab_size = 30522;
  config.hidden_size = options.hidden;
  config.num_hidden_layers = options.layers;
  config.num_attention_heads = options.hidden / 64;
  config.intermediate_size = 4 * options.hidden;
  config.max_position_embeddings = 512;
  config.architectures = {"BertModel"};

  std::vector<Case> cases = all_cases();
  if (!options.only_case.empty()) {
    std::erase_if(cases, [&](const Case& c) { return c.name != options.only_case; });
    if (cases.empty()) {
      std::fprintf(stderr, "bench_encoder: unknown case '%s'\n", options.only_case.c_str());
      usage(2);
    }
  }

  auto setup_start = std::chrono::steady_clock::now();
  auto model = std::make_shared<BertModel>(BertModel::create(config, TaskHead::kNone, /*with_pooler=*/true, 0));
  randomize(model->parameters, config.initializer_range, /*seed=*/20240501);
  std::shared_ptr<const InferenceWeights> weights = InferenceWeights::build(model);
  const double setup_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - setup_start).count();

  const double peak = kPeakF32PerThread * options.threads;
  FILE* table = options.json ? stderr : stdout;  // stdout carries only JSON lines under --json
  std::fprintf(table,
               "ScaleBERT encoder, f32, L=%ld C=%ld NH=%ld I=%ld, %d thread(s), peak %.0f GFLOP/s; "
               "setup (random init + packing) %.1f s\n",
               static_cast<long>(config.num_hidden_layers), static_cast<long>(config.hidden_size),
               static_cast<long>(config.num_attention_heads), static_cast<long>(config.intermediate_size),
               options.threads, peak / 1e9, setup_seconds);
  std::fprintf(table, "%-15s %5s %7s %5s %10s %10s %9s %9s %9s %9s %10s\n", "case", "batch", "tokens", "runs",
               "median ms", "min ms", "seq/s", "GFLOP/s", "limit ms", "of limit", "cpu ms");

  for (const Case& c : cases) {
    const PackedBatch batch = make_batch(c.lengths, config.vocab_size, /*seed=*/7);
    InferenceSession session(weights);
    session.reserve(batch.tokens(), batch.sequences(), batch.max_length());

    // Warm-up, never timed: the first run builds the shape class's oneDNN steps and touches every
    // buffer; a second one (skipped when a run takes over a second) settles caches and the OpenMP team.
    for (int i = 0; i < 2; ++i) {
      auto start = std::chrono::steady_clock::now();
      const InferenceOutputs& outputs = session.run(batch);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const float* hidden = outputs.hidden.data<float>();  // (N, C)
      for (int64_t j = 0; j < outputs.hidden.numel(); ++j) {
        check(std::isfinite(hidden[j]), "case ", c.name, ": hidden state ", j, " is ", hidden[j]);
      }
      if (seconds > 1.0) break;
    }

    std::vector<double> times, cpu_times;
    double total = 0.0;
    while (static_cast<int>(times.size()) < options.max_runs &&
           (static_cast<int>(times.size()) < options.min_runs || total < options.min_seconds)) {
      const double cpu_start = process_cpu_seconds();
      auto start = std::chrono::steady_clock::now();
      session.run(batch);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      cpu_times.push_back(process_cpu_seconds() - cpu_start);
      times.push_back(seconds);
      total += seconds;
    }
    const size_t n = times.size();
    const double median = median_of(times);
    const double fastest = *std::min_element(times.begin(), times.end());
    const double cpu_median = median_of(cpu_times);
    const double flops = forward_flops(config, c.lengths);
    const double sequences = static_cast<double>(batch.sequences());
    const double gflops = flops / median / 1e9;
    const double limit = flops / peak;
    const double fraction = limit / median;

    std::fprintf(table, "%-15s %5ld %7ld %5zu %10.2f %10.2f %9.2f %9.1f %9.2f %8.1f%% %10.2f\n", c.name.c_str(),
                 static_cast<long>(batch.sequences()), static_cast<long>(batch.tokens()), n, median * 1e3,
                 fastest * 1e3, sequences / median, gflops, limit * 1e3, 100.0 * fraction, cpu_median * 1e3);
    if (options.json) {
      const char* policy = std::getenv("OMP_WAIT_POLICY");
      const nlohmann::json record = {
          {"engine", "scalebert"}, {"case", c.name}, {"kind", c.kind}, {"dtype", "f32"},
          {"threads", options.threads}, {"omp_wait_policy", policy && *policy ? policy : "default"},
          {"layers", config.num_hidden_layers}, {"hidden", config.hidden_size},
          {"batch", batch.sequences()}, {"tokens", batch.tokens()},
          {"computed_tokens", InferenceSession::bucket_rows(batch.tokens())},  // rows the products run over
          {"runs", n}, {"median_ms", median * 1e3}, {"min_ms", fastest * 1e3},
          {"seq_per_s", sequences / median}, {"gflop", flops / 1e9}, {"gflops", gflops},
          {"peak_gflops", peak / 1e9}, {"limit_ms", limit * 1e3}, {"fraction_of_limit", fraction},
          {"cpu_ms", cpu_median * 1e3}};
      std::printf("%s\n", record.dump().c_str());
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);
  try {
    return run(options);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "bench_encoder: %s\n", error.what());
    return 1;
  }
}
