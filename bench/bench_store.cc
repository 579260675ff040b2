// Checkpoint store throughput: save and load GB/s of a BERT-base-sized set of F32 tensors
// (~440 MB of random bits) through the store at R=1 (one root) and R=2 (two roots), next to a
// plain save_safetensors / SafetensorsFile of the same tensors, plus the warm mmap load time and
// the machine's XXH64 and memcpy rates for context.
//
// Saves include every fsync (the store's and save_safetensors' are the same: temp, fsync,
// rename, directory fsync). Loads run with a warm page cache (the file was just written or read;
// the machine is shared, so dropping caches is not ours to do): "load" is open + verify or touch
// every byte, so plain and store loads both read all 440 MB once.
//
// usage: bench_store [--dir DIR] [--repeats N] [--shard-mb M] [--small]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"
#include "io/store/checksum.h"
#include "io/store/store.h"
#include "model/bert_model.h"

namespace {

namespace fs = std::filesystem;
using namespace scalebert;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Sums every 8-byte word: forces each page of a mapping to be read.
uint64_t touch(const Tensor& tensor) {
  const auto* bytes = static_cast<const uint8_t*>(tensor.raw());
  uint64_t sum = 0;
  size_t words = tensor.nbytes() / 8;
  for (size_t i = 0; i < words; ++i) {
    uint64_t word;
    std::memcpy(&word, bytes + 8 * i, 8);
    sum += word;
  }
  return sum;
}

struct Timing {
  std::vector<double> runs;
  double best() const { return *std::min_element(runs.begin(), runs.end()); }
  double median() const {
    std::vector<double> sorted = runs;
    std::sort(sorted.begin(), sorted.end());
    return sorted[sorted.size() / 2];
  }
};

void print_row(const char* what, const Timing& timing, double bytes, double baseline_median = 0) {
  double gbps = bytes / timing.median() / 1e9;
  std::printf("%-44s %8.3f s  %8.3f s  %7.2f GB/s", what, timing.median(), timing.best(), gbps);
  if (baseline_median > 0) std::printf("   %5.0f%% of plain", 100.0 * baseline_median / timing.median());
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  fs::path directory = fs::temp_directory_path() / "scalebert_bench_store";
  int repeats = 3;
  uint64_t shard_megabytes = 128;
  bool small = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--dir" && i + 1 < argc) directory = argv[++i];
    else if (arg == "--repeats" && i + 1 < argc) repeats = std::max(1, std::atoi(argv[++i]));
    else if (arg == "--shard-mb" && i + 1 < argc) shard_megabytes = std::max(1, std::atoi(argv[++i]));
    else if (arg == "--small") small = true;
    else {
      std::fprintf(stderr, "usage: bench_store [--dir DIR] [--repeats N] [--shard-mb M] [--small]\n");
      return 2;
    }
  }
  try {
    // BERT-base: vocab 30522, hidden 768, 12 layers, 12 heads, FFN 3072, 512 positions (110M
    // parameters, 438 MB in F32). --small: a 4-layer, hidden-256 model for a quick check.
    BertConfig config;
    config.vocab_size = small ? 8000 : 30522;
    config.hidden_size = small ? 256 : 768;
    config.num_hidden_layers = small ? 4 : 12;
    config.num_attention_heads = small ? 4 : 12;
    config.intermediate_size = small ? 1024 : 3072;
    config.max_position_embeddings = 512;
    ParameterTable table;
    register_bert_parameters(table, config, TaskHead::kNone, true, 0);
    std::vector<std::pair<std::string, Tensor>> tensors;
    uint64_t state = 0x9E3779B97F4A7C15ull;  // xorshift64: random bits, incompressible
    double bytes = 0;
    for (const ParameterEntry& entry : table.entries()) {
      Tensor tensor = Tensor::empty(entry.shape, DType::kF32);
      auto* words = static_cast<uint32_t*>(tensor.raw());
      for (int64_t i = 0; i < tensor.numel(); ++i) {
        state ^= state << 13, state ^= state >> 7, state ^= state << 17;
        words[i] = static_cast<uint32_t>(state >> 32) & 0x7F7FFFFFu;  // finite floats
      }
      bytes += static_cast<double>(tensor.nbytes());
      tensors.emplace_back(entry.name, tensor);
    }
    fs::remove_all(directory);
    fs::create_directories(directory);
    std::printf("bench_store: %zu tensors, %.1f MB, shards of %llu MiB, %d repeats, files in %s\n", tensors.size(),
                bytes / 1e6, static_cast<unsigned long long>(shard_megabytes), repeats, directory.c_str());

    // Context: in-memory rates.
    {
      std::vector<uint8_t> buffer(256 << 20, 1), copy(256 << 20);
      auto start = Clock::now();
      uint64_t hash = store::xxh64(buffer.data(), buffer.size());
      double hash_seconds = seconds_since(start);
      start = Clock::now();
      std::memcpy(copy.data(), buffer.data(), buffer.size());
      double copy_seconds = seconds_since(start);
      std::printf("xxh64 %.2f GB/s, memcpy %.2f GB/s (256 MiB, one thread; hash %016llx)\n",
                  static_cast<double>(buffer.size()) / hash_seconds / 1e9,
                  static_cast<double>(buffer.size()) / copy_seconds / 1e9, static_cast<unsigned long long>(hash + copy[7]));
    }

    std::printf("\n%-44s %10s  %10s  %10s\n", "operation", "median", "best", "rate");
    fs::path plain_path = directory / "plain" / "model.safetensors";
    fs::create_directories(plain_path.parent_path());
    Timing plain_save, plain_load;
    uint64_t checksum = 0;
    for (int r = 0; r < repeats; ++r) {
      auto start = Clock::now();
      save_safetensors(plain_path, tensors);
      plain_save.runs.push_back(seconds_since(start));
      start = Clock::now();
      SafetensorsFile file = SafetensorsFile::open(plain_path);
      for (const std::string& name : file.names()) checksum += touch(file.tensor(name));
      plain_load.runs.push_back(seconds_since(start));
    }
    print_row("plain save_safetensors (1 file)", plain_save, bytes);
    print_row("plain SafetensorsFile open + read all", plain_load, bytes);
    fs::remove_all(directory / "plain");

    for (size_t replication : {size_t{1}, size_t{2}}) {
      std::vector<fs::path> roots;
      for (size_t i = 0; i < replication; ++i) roots.push_back(directory / ("root" + std::to_string(i)));
      store::CheckpointStore checkpoint_store(roots);
      store::SaveOptions options{replication, shard_megabytes << 20};
      Timing save, load_eager, load_none, load_lazy_touch, warm_open_eager, warm_open_none;
      for (int r = 0; r < repeats; ++r) {
        auto start = Clock::now();
        checkpoint_store.save(tensors, {{"bench", true}}, options);
        save.runs.push_back(seconds_since(start));
        checkpoint_store.gc(1);

        start = Clock::now();
        {
          store::Checkpoint checkpoint = checkpoint_store.load({0, store::VerifyMode::kEager});
          for (const auto& [name, tensor] : checkpoint.tensors()) checksum += touch(tensor);
        }
        load_eager.runs.push_back(seconds_since(start));
        start = Clock::now();
        {
          store::Checkpoint checkpoint = checkpoint_store.load({0, store::VerifyMode::kNone});
          for (const auto& [name, tensor] : checkpoint.tensors()) checksum += touch(tensor);
        }
        load_none.runs.push_back(seconds_since(start));
        start = Clock::now();
        {
          store::Checkpoint checkpoint = checkpoint_store.load({0, store::VerifyMode::kLazy});
          for (const auto& [name, tensor] : checkpoint.tensors()) checksum += touch(tensor);
        }
        load_lazy_touch.runs.push_back(seconds_since(start));
        // Warm mmap load: what a server restart on a warm machine pays before the first request
        // (tensors handed out as views; eager = every shard checksummed).
        start = Clock::now();
        checksum += store::Checkpoint(checkpoint_store.load({0, store::VerifyMode::kEager})).tensors().size();
        warm_open_eager.runs.push_back(seconds_since(start));
        start = Clock::now();
        checksum += store::Checkpoint(checkpoint_store.load({0, store::VerifyMode::kNone})).tensors().size();
        warm_open_none.runs.push_back(seconds_since(start));
      }
      std::string prefix = "store R=" + std::to_string(replication) + " (K=" + std::to_string(replication) + ") ";
      print_row((prefix + "save").c_str(), save, bytes, plain_save.median());
      print_row((prefix + "load eager verify + read all").c_str(), load_eager, bytes, plain_load.median());
      print_row((prefix + "load lazy verify + read all").c_str(), load_lazy_touch, bytes, plain_load.median());
      print_row((prefix + "load no verify + read all").c_str(), load_none, bytes, plain_load.median());
      print_row((prefix + "warm mmap load, eager verify").c_str(), warm_open_eager, bytes);
      print_row((prefix + "warm mmap load, no verify").c_str(), warm_open_none, bytes);
      for (const fs::path& root : roots) fs::remove_all(root);
    }
    std::printf("\n(R=2 writes twice the bytes; its GB/s counts the model's bytes once. checksum %llx)\n",
                static_cast<unsigned long long>(checksum));
    fs::remove_all(directory);
  } catch (const scalebert::Error& error) {
    std::fprintf(stderr, "bench_store: %s\n", error.what());
    return 1;
  }
  return 0;
}
