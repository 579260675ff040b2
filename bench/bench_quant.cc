// f32 vs bf16 vs int8 inference of a BERT-base-shaped encoder (random weights) in one run, beside
// PyTorch 1.13's torch.quantization.quantize_dynamic (bench/peer_pytorch_quant.py, started from here):
// batch 32 x seq 128 (throughput) and batch 1 x seq 32 (latency). Reported per case and dtype:
// sequences per second, speedup over our f32, the share of the int8 GEMM-only limit, error against
// f32 (a fast wrong kernel must not look good); per dtype: model file size, load time (file to
// packed weights) and resident memory after loading.
//
// The model goes through the real files: an f32 folder is written, `scalebert quantize` turns it into
// int8 and bf16 folders (quant::quantize_model), and each is loaded with InferenceWeights::load, in a
// child process for the memory figures (VmRSS / VmHWM of /proc/self/status) and again here for timing.
//
// The int8 GEMM-only limit, two ways:
//   measured: the 4 encoder products per layer as bare oneDNN s8 x s8 -> s32 primitives on the
//             packed weights (no quantization, no epilogue, no attention, no layer norm);
//   peak:     2 * P_lin * T int8 operations per sequence at 932 GOP/s (VPDPBUSD, 2 Zen 4 cores,
//             ../shared/BENCHMARKS.md: BERT-base batch 32 x 128 <= 35.6 seq/s), scaled by threads / 2.
//
//   bench_quant [--threads N] [--runs N] [--layers L] [--case b32|b1] [--no-peer] [--python PATH]
//               [--profile] [--unfused] [--workdir DIR] [--keep-files]
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/threads.h"
#include "io/safetensors.h"
#include "kernels/cpu/low_precision_matmul.h"
#include "model/inference_session.h"
#include "quant/quantize.h"
#include "quant/quantized_model.h"
#include "quant/recipe.h"

using namespace scalebert;
using kernels::Precision;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

namespace {

constexpr double kInt8PeakPerThread = 466e9;  // int8 OP/s of one Zen 4 core (VPDPBUSD), BENCHMARKS.md

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

double process_cpu_seconds() {
  timespec now{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + 1e-9 * static_cast<double>(now.tv_nsec);
}

std::string load_average() {
  std::ifstream file("/proc/loadavg");
  std::string one, five, fifteen;
  file >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

// VmRSS or VmHWM of this process in MB.
double status_mb(const char* field) {
  std::ifstream file("/proc/self/status");
  std::string line;
  while (std::getline(file, line)) {
    if (line.rfind(field, 0) == 0) return std::atof(line.c_str() + std::strlen(field) + 1) / 1024.0;
  }
  return 0.0;
}

BertConfig bert_base(int64_t layers) {
  BertConfig config;
  config.vocab_size = 30522;
  config.hidden_size = 768;
  config.num_hidden_layers = layers;
  config.num_attention_heads = 12;
  config.intermediate_size = 3072;
  config.max_position_embeddings = 512;
  return config;
}

// transformers' init: normal(0, 0.02) weights, LayerNorm weight 1, biases 0.
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

struct Timing {
  double median = 0.0, best = 0.0, cpu = 0.0;  // seconds per run; cpu: median process CPU time
};

template <typename Body>
Timing time_runs(int runs, Body&& body) {
  body();  // warm-up: builds the shape class's steps
  std::vector<double> samples, cpu;
  for (int i = 0; i < runs; ++i) {
    const double cpu_start = process_cpu_seconds();
    const auto start = Clock::now();
    body();
    samples.push_back(seconds_since(start));
    cpu.push_back(process_cpu_seconds() - cpu_start);
  }
  std::sort(samples.begin(), samples.end());
  std::sort(cpu.begin(), cpu.end());
  return Timing{samples[samples.size() / 2], samples.front(), cpu[cpu.size() / 2]};
}

// The encoder's 4 products per layer as bare single oneDNN s8 x s8 -> s32 primitives (each using
// every thread) on the packed weights of `weights`: the GEMM-only limit, measured.
double int8_gemm_only_seconds(const InferenceWeights& weights, int64_t tokens, int runs) {
  const EncoderLayerWeights& first = weights.layers.at(0);
  const int64_t widest = std::max(first.intermediate.in_features(), first.intermediate.out_features());
  Tensor activations = Tensor::zeros({tokens * widest}, DType::kI8);   // (M, K) s8 rows
  Tensor accumulators = Tensor::zeros({tokens * 3 * widest}, DType::kI32);  // (M, N) s32
  using dnnl::memory;
  dnnl::stream stream(kernels::cpu_engine());
  std::vector<dnnl::matmul> primitives;
  std::vector<std::unordered_map<int, memory>> arguments;
  for (const EncoderLayerWeights& layer : weights.layers) {
    for (const kernels::PrecisionLinear* linear : {&layer.qkv, &layer.attention_out, &layer.intermediate, &layer.output}) {
      const kernels::PackedLinearInt8& packed = *linear->int8();
      memory::desc source({tokens, packed.in_features()}, memory::data_type::s8, memory::format_tag::ab);
      memory::desc destination({tokens, packed.out_features()}, memory::data_type::s32, memory::format_tag::ab);
      dnnl::matmul::primitive_desc desc(dnnl::matmul::desc(source, packed.weights().get_desc(), destination),
                                        kernels::cpu_engine());
      primitives.emplace_back(desc);
      arguments.push_back({{DNNL_ARG_SRC, memory(source, kernels::cpu_engine(), activations.raw())},
                           {DNNL_ARG_WEIGHTS, packed.weights()},
                           {DNNL_ARG_DST, memory(destination, kernels::cpu_engine(), accumulators.raw())}});
    }
  }
  return time_runs(runs, [&] {
           for (size_t i = 0; i < primitives.size(); ++i) primitives[i].execute(stream, arguments[i]);
           stream.wait();
         }).median;
}

// Child mode: load one folder, report seconds and memory as one JSON line, exit.
int load_child(const fs::path& directory, bool keep_model) {
  const double rss_before = status_mb("VmRSS:");
  const auto start = Clock::now();
  std::shared_ptr<const BertModel> model;
  std::shared_ptr<const InferenceWeights> weights;
  if (keep_model) {
    // What a caller that keeps its BertModel holds (the pipeline and server today).
    model = std::make_shared<const BertModel>(quant::load_model(directory));
    weights = InferenceWeights::build(model);
  } else {
    weights = InferenceWeights::load(directory);
  }
  const double seconds = seconds_since(start);
  const double rss_loaded = status_mb("VmRSS:");
  InferenceSession session(weights);
  session.run(make_batch(1, 32, weights->model->config.vocab_size));
  nlohmann::json line = {{"load_s", seconds},         {"rss_before_mb", rss_before},
                         {"rss_loaded_mb", rss_loaded}, {"rss_after_run_mb", status_mb("VmRSS:")},
                         {"peak_mb", status_mb("VmHWM:")}, {"owned_mb", weights->owned_bytes() / 1e6}};
  std::printf("%s\n", line.dump().c_str());
  return 0;
}

nlohmann::json run_json_lines(const std::string& command, std::vector<nlohmann::json>* lines) {
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return nullptr;
  char buffer[8192];
  nlohmann::json last;
  while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) {
    const std::string text(buffer);
    if (text.empty() || text[0] != '{') continue;
    try {
      last = nlohmann::json::parse(text);
      if (lines != nullptr) lines->push_back(last);
    } catch (const std::exception&) {
    }
  }
  const int status = pclose(pipe);
  if (status != 0) std::fprintf(stderr, "bench_quant: `%s` exited with status %d\n", command.c_str(), status);
  return last;
}

std::string shell_quoted(const std::string& text) { return "'" + text + "'"; }

struct Options {
  int threads = 2;
  int runs = 3;
  int64_t layers = 12;
  std::string only_case;
  bool peer = true;
  std::string python;
  bool profile = false;
  bool unfused = false;
  std::string workdir;
  bool keep_files = false;
};

void usage() {
  std::fprintf(stderr,
               "usage: bench_quant [--threads N] [--runs N] [--layers L] [--case b32|b1] [--no-peer] [--python PATH]\n"
               "                   [--profile] [--unfused] [--workdir DIR] [--keep-files]\n"
               "  --runs N      timed runs of batch 32 x 128 (batch 1 x 32: 10 N), after one warm-up (default 3)\n"
               "  --no-peer     skip PyTorch (bench/peer_pytorch_quant.py, run with --python, default\n"
               "                <repo>/.venv/bin/python)\n"
               "  --profile     per-phase time of each dtype (InferenceSession profiling)\n"
               "  --unfused     also time int8 without fusions, without row blocks, and without either (the\n"
               "                execution plan before fusion)\n"
               "  --workdir     where the f32/int8/bf16 model folders are written (default /tmp/bench_quant.PID,\n"
               "                removed at the end unless --keep-files)\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 || argc == 4) {
    if (std::string(argv[1]) == "--load-child") return load_child(argv[2], argc == 4);
  }
  const fs::path repo = fs::path(__FILE__).parent_path().parent_path();
  Options options;
  options.python = (repo / ".venv" / "bin" / "python").string();
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        usage();
        std::exit(2);
      }
      return argv[++i];
    };
    if (flag == "--threads") options.threads = std::atoi(value().c_str());
    else if (flag == "--runs") options.runs = std::max(1, std::atoi(value().c_str()));
    else if (flag == "--layers") options.layers = std::max(1, std::atoi(value().c_str()));
    else if (flag == "--case") options.only_case = value();
    else if (flag == "--python") options.python = value();
    else if (flag == "--workdir") options.workdir = value();
    else if (flag == "--no-peer") options.peer = false;
    else if (flag == "--profile") options.profile = true;
    else if (flag == "--unfused") options.unfused = true;
    else if (flag == "--keep-files") options.keep_files = true;
    else {
      usage();
      return flag == "--help" || flag == "-h" ? 0 : 2;
    }
  }
  if (!options.only_case.empty() && options.only_case != "b32" && options.only_case != "b1") {
    usage();
    return 2;
  }
  set_num_threads(options.threads);
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  const std::time_t now = std::time(nullptr);
  char date[64];
  std::strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", std::localtime(&now));
  std::printf("bench_quant %s: BERT-base shapes (L=%ld C=768 I=3072 V=30522), random weights, %d thread(s), "
              "OMP_WAIT_POLICY=%s\n",
              date, static_cast<long>(options.layers), num_threads(), policy ? policy : "default");
  std::printf("load average at start: %s (2 cores: anything above ~0.5 means other work shares the cores and "
              "every figure below is rough)\n",
              load_average().c_str());
  std::printf("oneDNN ISA 0x%x, VNNI %s, BF16 %s\n", static_cast<unsigned>(dnnl::get_effective_cpu_isa()),
              kernels::cpu_has_int8_dot_product() ? "yes" : "no", kernels::cpu_has_bf16() ? "yes" : "no");

  // Model folders: f32 written here, int8 and bf16 by the quantize tool.
  const fs::path workdir = options.workdir.empty() ? fs::temp_directory_path() / ("bench_quant." + std::to_string(getpid()))
                                                   : fs::path(options.workdir);
  const BertConfig config = bert_base(options.layers);
  const Precision precisions[] = {Precision::kF32, Precision::kBF16, Precision::kInt8};
  std::map<Precision, fs::path> folders = {{Precision::kF32, workdir / "f32"},
                                           {Precision::kBF16, workdir / "bf16"},
                                           {Precision::kInt8, workdir / "int8"}};
  {
    auto model = std::make_shared<BertModel>(BertModel::create(config, TaskHead::kNone, true, 0));
    randomize(model->parameters, 20240501);
    fs::create_directories(folders[Precision::kF32]);
    config.save(folders[Precision::kF32] / "config.json");
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (const ParameterEntry& entry : model->parameters.entries()) {
      tensors.emplace_back(entry.name, model->parameters.get(entry.name));
    }
    save_safetensors(folders[Precision::kF32] / "model.safetensors", tensors);
  }
  std::map<Precision, double> quantize_seconds;
  for (Precision precision : {Precision::kInt8, Precision::kBF16}) {
    quant::QuantizeOptions quantize;
    quantize.dtype = precision;
    fs::remove_all(folders[precision]);
    quantize_seconds[precision] = quant::quantize_model(folders[Precision::kF32], folders[precision], quantize).seconds;
  }

  // Size, load time and memory, each dtype in a fresh process.
  std::printf("\nmodel files and loading (each in a fresh process: InferenceWeights::load = load + pack + release the "
              "f32 table)\n%-12s %10s %8s %10s %8s %14s %12s %12s\n",
              "dtype", "file MB", "of f32", "quantize s", "load s", "RSS loaded MB", "RSS run MB", "peak RSS MB");
  const double f32_file_mb = fs::file_size(folders[Precision::kF32] / "model.safetensors") / 1e6;
  struct LoadRow {
    std::string name;
    Precision precision;
    bool keep_model;
  };
  for (const LoadRow& row : {LoadRow{"f32", Precision::kF32, false}, LoadRow{"bf16", Precision::kBF16, false},
                             LoadRow{"int8", Precision::kInt8, false},
                             LoadRow{"int8 (kept)", Precision::kInt8, true}}) {
    const double file_mb = fs::file_size(folders[row.precision] / "model.safetensors") / 1e6;
    const std::string command = shell_quoted(fs::canonical("/proc/self/exe").string()) + " --load-child " +
                                shell_quoted(folders[row.precision].string()) + (row.keep_model ? " keep" : "");
    const nlohmann::json line = run_json_lines(command, nullptr);
    if (line.is_null()) continue;
    const std::string quantized = row.precision == Precision::kF32 ? "-" : [&] {
      char text[32];
      std::snprintf(text, sizeof(text), "%.1f", quantize_seconds[row.precision]);
      return std::string(text);
    }();
    std::printf("%-12s %10.1f %7.0f%% %10s %8.2f %14.0f %12.0f %12.0f\n", row.name.c_str(), file_mb,
                100 * file_mb / f32_file_mb, quantized.c_str(), line["load_s"].get<double>(),
                line["rss_loaded_mb"].get<double>(), line["rss_after_run_mb"].get<double>(),
                line["peak_mb"].get<double>());
  }
  std::printf("(\"int8 (kept)\": quant::load_model + InferenceWeights::build with the caller keeping its BertModel,\n"
              " as the pipeline and server do today: the dequantized f32 table stays resident.)\n");

  std::map<Precision, std::shared_ptr<const InferenceWeights>> weights;
  for (Precision precision : precisions) weights[precision] = InferenceWeights::load(folders[precision]);

  struct Case {
    const char* key;
    const char* name;
    int64_t batch, length;
  };
  std::vector<nlohmann::json> results;  // ours and the peer's, for the summary
  const double int8_peak = kInt8PeakPerThread * num_threads();
  for (const Case& c : {Case{"b32", "batch 32 x seq 128", 32, 128}, Case{"b1", "batch 1 x seq 32", 1, 32}}) {
    if (!options.only_case.empty() && options.only_case != c.key) continue;
    const PackedBatch batch = make_batch(c.batch, c.length, config.vocab_size);
    const int runs = c.batch > 1 ? options.runs : 10 * options.runs;
    const double int8_ops = 2.0 * options.layers * (4.0 * 768 * 768 + 2.0 * 768 * 3072) * batch.tokens();
    const double gemm = kernels::cpu_has_int8_dot_product()
                            ? int8_gemm_only_seconds(*weights[Precision::kInt8], batch.tokens(), runs)
                            : 0.0;
    std::printf("\n%s (%ld tokens), %d timed runs; int8 GEMM-only limit: measured %.1f ms = %.2f seq/s, peak %.1f ms "
                "= %.2f seq/s\n",
                c.name, static_cast<long>(batch.tokens()), runs, 1e3 * gemm, c.batch / gemm, 1e3 * int8_ops / int8_peak,
                c.batch * int8_peak / int8_ops);
    std::printf("%-15s %10s %9s %9s %9s %8s %11s %11s %11s  %s\n", "engine dtype", "median ms", "min ms", "cpu ms",
                "seq/s", "vs f32", "of measured", "of peak", "rel err f32", "ran as");
    std::vector<float> reference;
    double f32_seconds = 0.0;
    struct Variant {
      std::string name;
      Precision precision;
      bool unfused;
      bool one_product = false;
    };
    std::vector<Variant> variants = {{"f32", Precision::kF32, false}, {"bf16", Precision::kBF16, false},
                                     {"int8", Precision::kInt8, false}};
    if (options.unfused) {
      variants.push_back({"int8 unfused", Precision::kInt8, true});
      variants.push_back({"int8 1-product", Precision::kInt8, false, true});  // fused epilogues, no row blocks
      variants.push_back({"int8 as before", Precision::kInt8, true, true});   // neither: the previous plan
    }
    for (const Variant& variant : variants) {
      kernels::set_int8_row_blocks(!variant.one_product);
      InferenceSession session(weights[variant.precision]);
      // An observer turns every fusion off (it needs each Linear's f32 input); this one does nothing.
      if (variant.unfused) session.set_linear_observer([](const std::string&, const float*, int64_t, int64_t) {});
      const Timing timing = time_runs(runs, [&] { session.run(batch); });
      const InferenceOutputs& outputs = session.run(batch);
      std::vector<float> hidden(outputs.hidden.data<float>(), outputs.hidden.data<float>() + outputs.hidden.numel());
      double error = 0.0;
      if (variant.precision == Precision::kF32) {
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
      const bool int8 = variant.precision == Precision::kInt8;
      char measured[16] = "", peak[16] = "";
      if (int8 && gemm > 0) std::snprintf(measured, sizeof(measured), "%.0f%%", 100 * gemm / timing.median);
      if (int8) std::snprintf(peak, sizeof(peak), "%.0f%%", 100 * int8_ops / int8_peak / timing.median);
      std::printf("%-15s %10.1f %9.1f %9.1f %9.2f %7.2fx %11s %11s %11.2e  %s\n", variant.name.c_str(),
                  1e3 * timing.median, 1e3 * timing.best, 1e3 * timing.cpu, c.batch / timing.median,
                  f32_seconds / timing.median, measured, peak, error,
                  std::string(kernels::precision_name(weights[variant.precision]->layers[0].qkv.precision())).c_str());
      results.push_back({{"engine", "scalebert"}, {"case", c.key}, {"dtype", variant.name},
                         {"median_s", timing.median}, {"seq_per_s", c.batch / timing.median},
                         {"gemm_only_s", gemm}, {"peak_s", int8_ops / int8_peak}});
      if (options.profile) {
        session.set_profiling(true);
        for (int r = 0; r < runs; ++r) session.run(batch);
        std::printf("    phases, ms per run:");
        for (int phase = 0; phase < InferenceSession::kPhaseCount; ++phase) {
          std::printf(" %s %.1f", InferenceSession::phase_name(phase), 1e3 * session.phase_seconds()[phase] / runs);
        }
        std::printf("\n");
      }
    }
    kernels::set_int8_row_blocks(true);
  }

  if (options.peer) {
    const std::string script = (repo / "bench" / "peer_pytorch_quant.py").string();
    std::string command = shell_quoted(options.python) + " " + shell_quoted(script) + " --threads " + std::to_string(num_threads()) +
                          " --layers " + std::to_string(options.layers) + " --runs " + std::to_string(options.runs);
    if (!options.only_case.empty()) command += " --case " + options.only_case;
    std::printf("\nPyTorch peer, same run: %s\n", command.c_str());
    std::fflush(stdout);
    std::vector<nlohmann::json> lines;
    run_json_lines(command, &lines);
    if (!lines.empty()) {
      std::printf("%-22s %-6s %10s %9s %9s %9s %10s %8s\n", "engine dtype", "case", "median ms", "min ms", "seq/s",
                  "file MB", "quantize s", "load s");
      for (const nlohmann::json& line : lines) {
        if (!line.contains("case")) continue;
        std::printf("%-22s %-6s %10.1f %9.1f %9.2f %9.1f %10.2f %8.2f\n",
                    ("PyTorch " + line.value("dtype", std::string("?"))).c_str(), line.value("case", std::string()).c_str(),
                    1e3 * line.value("median_s", 0.0), 1e3 * line.value("min_s", 0.0), line.value("seq_per_s", 0.0),
                    line.value("file_mb", 0.0), line.value("quantize_s", 0.0), line.value("load_s", 0.0));
        results.push_back(line);
      }
    }
  }

  // Summary against the targets.
  std::printf("\nsummary (targets: int8 >= 3x our f32 and >= 80%% of the int8 GEMM-only limit; bf16 >= 1.8x our f32)\n");
  auto find = [&](const std::string& engine, const std::string& key, const std::string& dtype) -> const nlohmann::json* {
    for (const nlohmann::json& line : results) {
      if (line.value("engine", std::string()) == engine && line.value("case", std::string()) == key &&
          line.value("dtype", std::string()) == dtype) {
        return &line;
      }
    }
    return nullptr;
  };
  for (const char* key : {"b32", "b1"}) {
    const nlohmann::json* f32 = find("scalebert", key, "f32");
    const nlohmann::json* bf16 = find("scalebert", key, "bf16");
    const nlohmann::json* int8 = find("scalebert", key, "int8");
    if (f32 == nullptr || bf16 == nullptr || int8 == nullptr) continue;
    const double f32_s = (*f32)["median_s"], bf16_s = (*bf16)["median_s"], int8_s = (*int8)["median_s"];
    const double gemm = (*int8)["gemm_only_s"], peak = (*int8)["peak_s"];
    std::printf("  %-4s int8 %.2f seq/s = %.2fx f32 [%s], %.0f%% of measured limit [%s], %.0f%% of peak; bf16 %.2fx [%s]",
                key, (*int8)["seq_per_s"].get<double>(), f32_s / int8_s, f32_s / int8_s >= 3.0 ? "met" : "NOT met",
                100 * gemm / int8_s, gemm / int8_s >= 0.8 ? "met" : "NOT met", 100 * peak / int8_s, f32_s / bf16_s,
                f32_s / bf16_s >= 1.8 ? "met" : "NOT met");
    if (const nlohmann::json* torch_int8 = find("pytorch", key, "int8 dynamic")) {
      std::printf("; vs PyTorch quantize_dynamic %.2fx", (*torch_int8)["median_s"].get<double>() / int8_s);
    }
    if (const nlohmann::json* torch_f32 = find("pytorch", key, "f32")) {
      std::printf(", PyTorch f32 %.2fx", (*torch_f32)["median_s"].get<double>() / int8_s);
    }
    std::printf("\n");
  }
  std::printf("load average at end: %s\n", load_average().c_str());
  if (!options.keep_files) fs::remove_all(workdir);
  return 0;
}
