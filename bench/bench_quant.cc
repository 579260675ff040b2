// f32 vs bf16 vs int8 inference of a BERT-base-shaped encoder (random weights) in one run: batch 32
// x seq 128 and batch 1 x seq 32, sequences per second, speedups over f32, the int8 GEMM-only limit
// (the 72 encoder products alone, s8 x s8 -> s32, no quantization or epilogue), weight packing time
// and the model file sizes each precision writes. Also checks that every variant's output stays close
// to f32 (a fast wrong kernel must not look good).
//   bench_quant [--threads N] [--runs N] [--layers L]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/threads.h"
#include "kernels/cpu/low_precision_matmul.h"
#include "model/inference_session.h"
#include "quant/recipe.h"

using namespace scalebert;
using kernels::Precision;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

void randomize(ParameterTable& table, uint64_t seed) {
  std::mt19937 generator(static_cast<uint32_t>(seed));
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (const ParameterEntry& entry : table.entries()) {
    Tensor values = table.get(entry.name);
    float* data = values.data<float>();
    const bool norm_weight = entry.name.find("LayerNorm.weight") != std::string::npos;
    for (int64_t i = 0; i < values.numel(); ++i) data[i] = norm_weight ? 1.0f : (entry.weight_decay ? normal(generator) : 0.0f);
  }
}

PackedBatch make_batch(int64_t sequences, int64_t length, int64_t vocab) {
  std::mt19937 generator(7);
  PackedBatch batch;
  for (int64_t s = 0; s < sequences; ++s) {
    std::vector<int32_t> ids(length);
    for (int32_t& id : ids) id = 1000 + static_cast<int32_t>(generator() % static_cast<uint32_t>(vocab - 1000));
    ids.front() = 101;
    ids.back() = 102;
    batch.add_sequence(ids);
  }
  return batch;
}

PrecisionPlan plan_for(const BertModel& model, Precision precision) {
  PrecisionPlan plan;
  if (precision == Precision::kF32) return plan;
  for (const std::string& linear : quant::linear_names(model)) plan.layers[quant::plan_key(linear)] = {precision, 0.0f};
  return plan;
}

struct Timing {
  double median = 0.0, best = 0.0;
};

template <typename Body>
Timing time_runs(int runs, Body&& body) {
  body();  // warm-up: builds the shape class's steps
  std::vector<double> samples;
  for (int i = 0; i < runs; ++i) {
    const auto start = Clock::now();
    body();
    samples.push_back(seconds_since(start));
  }
  std::sort(samples.begin(), samples.end());
  return Timing{samples[samples.size() / 2], samples.front()};
}

// The encoder's 4 products per layer, int8, as bare oneDNN s8 x s8 -> s32 primitives on random data.
double int8_gemm_only_seconds(const BertConfig& config, int64_t tokens, int runs) {
  const int64_t C = config.hidden_size, I = config.intermediate_size;
  const int64_t shapes[4][2] = {{3 * C, C}, {C, C}, {I, C}, {C, I}};  // (N, K)
  std::vector<kernels::PrecisionLinear> linears;
  for (const auto& shape : shapes) {
    Tensor weight = Tensor::empty({shape[0], shape[1]}, DType::kF32);
    for (int64_t i = 0; i < weight.numel(); ++i) weight.data<float>()[i] = 0.01f * static_cast<float>((i * 7919) % 201 - 100);
    linears.emplace_back(weight, Tensor(), Precision::kInt8);
  }
  Tensor activations = Tensor::zeros({tokens * I}, DType::kI8);   // (M, K) s8 rows
  Tensor accumulators = Tensor::zeros({tokens * I}, DType::kI32);  // (M, N) s32
  // Bare primitives on the packed weights: no row quantization, no epilogue.
  dnnl::stream stream(kernels::cpu_engine());
  std::vector<dnnl::matmul> primitives;
  std::vector<std::unordered_map<int, dnnl::memory>> arguments;
  for (const auto& linear : linears) {
    const auto& packed = *linear.int8();
    using dnnl::memory;
    memory::desc source({tokens, packed.in_features()}, memory::data_type::s8, memory::format_tag::ab);
    memory::desc destination({tokens, packed.out_features()}, memory::data_type::s32, memory::format_tag::ab);
    dnnl::matmul::primitive_desc desc(dnnl::matmul::desc(source, packed.weights().get_desc(), destination),
                                      kernels::cpu_engine());
    primitives.emplace_back(desc);
    arguments.push_back({{DNNL_ARG_SRC, memory(source, kernels::cpu_engine(), activations.raw())},
                         {DNNL_ARG_WEIGHTS, packed.weights()},
                         {DNNL_ARG_DST, memory(destination, kernels::cpu_engine(), accumulators.raw())}});
  }
  const Timing timing = time_runs(runs, [&] {
    for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
      for (size_t i = 0; i < primitives.size(); ++i) primitives[i].execute(stream, arguments[i]);
    }
    stream.wait();
  });
  return timing.median;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 0, runs = 3;
  int64_t layers = 12;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--threads") threads = std::atoi(argv[i + 1]);
    else if (flag == "--runs") runs = std::max(1, std::atoi(argv[i + 1]));
    else if (flag == "--layers") layers = std::max(1, std::atoi(argv[i + 1]));
    else {
      std::fprintf(stderr, "usage: bench_quant [--threads N] [--runs N] [--layers L]\n");
      return 2;
    }
  }
  set_num_threads(threads);
  BertConfig config;
  config.vocab_size = 30522;
  config.hidden_size = 768;
  config.num_hidden_layers = layers;
  config.num_attention_heads = 12;
  config.intermediate_size = 3072;
  config.max_position_embeddings = 512;
  auto model = std::make_shared<BertModel>(BertModel::create(config, TaskHead::kNone, true, 0));
  randomize(model->parameters, 20240501);

  std::printf("bench_quant: BERT-base shapes (L=%ld C=768 I=3072), random weights, %d thread(s), oneDNN ISA 0x%x, "
              "VNNI %s, BF16 %s\n",
              static_cast<long>(layers), num_threads(), static_cast<unsigned>(dnnl::get_effective_cpu_isa()),
              kernels::cpu_has_int8_dot_product() ? "yes" : "no", kernels::cpu_has_bf16() ? "yes" : "no");
  // File sizes each precision writes (weights; int8 with int8 word embeddings), from parameter counts.
  int64_t linear_params = 0, other_params = 0, word_params = config.vocab_size * config.hidden_size;
  for (const ParameterEntry& entry : model->parameters.entries()) {
    const int64_t count = shape_numel(entry.shape);
    const bool linear_weight = entry.shape.size() == 2 && entry.name.rfind("encoder.", 0) == 0;
    if (linear_weight || entry.name == "pooler.dense.weight") linear_params += count;
    else if (entry.name != "embeddings.word_embeddings.weight") other_params += count;
  }
  const double f32_mb = 4.0 * (linear_params + other_params + word_params) / 1e6;
  const double bf16_mb = (2.0 * linear_params + 4.0 * (other_params + word_params)) / 1e6;
  const double int8_mb = (1.0 * linear_params + 1.0 * word_params + 4.0 * other_params) / 1e6;  // + scales (~0.2 MB)
  std::printf("weights file: f32 %.0f MB, bf16 %.0f MB (%.0f%%), int8 %.0f MB (%.0f%%)\n", f32_mb, bf16_mb,
              100 * bf16_mb / f32_mb, int8_mb, 100 * int8_mb / f32_mb);

  const Precision precisions[] = {Precision::kF32, Precision::kBF16, Precision::kInt8};
  std::vector<std::shared_ptr<const InferenceWeights>> weights;
  for (Precision precision : precisions) {
    const auto start = Clock::now();
    weights.push_back(InferenceWeights::build(model, plan_for(*model, precision)));
    std::printf("pack %-4s: %.2f s\n", std::string(kernels::precision_name(precision)).c_str(), seconds_since(start));
  }

  struct Case {
    const char* name;
    int64_t batch, length;
  };
  for (const Case& c : {Case{"b32 x s128", 32, 128}, Case{"b1 x s32", 1, 32}}) {
    const PackedBatch batch = make_batch(c.batch, c.length, config.vocab_size);
    std::printf("\n%s (%ld tokens)\n%-5s %10s %10s %9s %9s %12s  %s\n", c.name, static_cast<long>(batch.tokens()),
                "dtype", "median ms", "min ms", "seq/s", "vs f32", "rel err f32", "ran as");
    std::vector<float> reference;
    double f32_seconds = 0.0;
    for (size_t p = 0; p < weights.size(); ++p) {
      InferenceSession session(weights[p]);
      const Timing timing = time_runs(c.batch > 1 ? runs : 5 * runs, [&] { session.run(batch); });
      const InferenceOutputs& outputs = session.run(batch);
      std::vector<float> hidden(outputs.hidden.data<float>(), outputs.hidden.data<float>() + outputs.hidden.numel());
      double error = 0.0;
      if (p == 0) {
        reference = hidden;
        f32_seconds = timing.median;
      } else {
        double diff = 0.0, norm = 0.0;
        for (size_t i = 0; i < hidden.size(); ++i) {
          diff += (hidden[i] - reference[i]) * static_cast<double>(hidden[i] - reference[i]);
          norm += static_cast<double>(reference[i]) * reference[i];
        }
        error = std::sqrt(diff / norm);
      }
      std::printf("%-5s %10.1f %10.1f %9.2f %8.2fx %12.2e  %s\n",
                  std::string(kernels::precision_name(precisions[p])).c_str(), 1e3 * timing.median, 1e3 * timing.best,
                  c.batch / timing.median, f32_seconds / timing.median, error,
                  std::string(kernels::precision_name(weights[p]->layers[0].qkv.precision())).c_str());
    }
    if (kernels::cpu_has_int8_dot_product()) {
      const double gemm = int8_gemm_only_seconds(config, batch.tokens(), c.batch > 1 ? runs : 5 * runs);
      std::printf("int8 GEMM-only limit: %.1f ms = %.2f seq/s\n", 1e3 * gemm, c.batch / gemm);
    }
  }
  return 0;
}
