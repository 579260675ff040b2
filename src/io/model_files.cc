// Locating, opening and name-resolving a model directory's safetensors weights.
#include "io/model_files.h"

#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/arena.h"
#include "core/error.h"
#include "io/file_util.h"

namespace scalebert {

namespace fs = std::filesystem;

namespace {

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";
// Weight files of other frameworks that we recognise to give a useful error.
constexpr const char* kForeignFiles[] = {"pytorch_model.bin", "pytorch_model.bin.index.json",
                                         "tf_model.h5", "flax_model.msgpack", "model.ckpt.index"};

// A shard path from an index must stay inside the model directory.
bool is_plain_relative(const fs::path& shard) {
  if (shard.empty() || shard.is_absolute()) return false;
  for (const fs::path& part : shard) {
    if (part == "..") return false;
  }
  return true;
}

bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

}  // namespace

WeightStore WeightStore::open(const fs::path& path) {
  WeightStore store;
  store.path_ = path;
  std::error_code error;
  if (!fs::exists(path, error)) throw IoError(str_cat("model path ", path, " does not exist"));

  auto add_file = [&store](const fs::path& file) -> size_t {
    store.files_.push_back(std::make_shared<SafetensorsFile>(SafetensorsFile::open(file)));
    return store.files_.size() - 1;
  };

  if (!fs::is_directory(path, error)) {
    size_t index = add_file(path);
    for (const std::string& name : store.files_[index]->names()) store.locations_[name] = {index};
    return store;
  }

  if (fs::exists(path / kSingleFile, error)) {
    size_t index = add_file(path / kSingleFile);
    for (const std::string& name : store.files_[index]->names()) store.locations_[name] = {index};
    return store;
  }

  const fs::path index_path = path / kIndexFile;
  if (fs::exists(index_path, error)) {
    nlohmann::json index;
    try {
      index = nlohmann::json::parse(read_file(index_path));
    } catch (const nlohmann::json::exception& parse_error) {
      throw FormatError(str_cat("sharded index ", index_path, " is not valid JSON: ",
                                parse_error.what()));
    }
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
      throw FormatError(str_cat("sharded index ", index_path,
                                " has no \"weight_map\" object mapping tensor names to shard files"));
    }
    std::map<std::string, size_t> shard_indices;  // each shard opened once
    for (const auto& [name, shard_value] : index["weight_map"].items()) {
      if (!shard_value.is_string()) {
        throw FormatError(str_cat("sharded index ", index_path, ": tensor \"", name,
                                  "\" maps to ", shard_value.dump(), ", not a file name"));
      }
      const std::string shard = shard_value.get<std::string>();
      if (!is_plain_relative(shard)) {
        throw FormatError(str_cat("sharded index ", index_path, ": tensor \"", name,
                                  "\" maps to shard \"", shard,
                                  "\", which is not a path inside the model directory"));
      }
      auto found = shard_indices.find(shard);
      if (found == shard_indices.end()) {
        if (!fs::exists(path / shard, error)) {
          throw IoError(str_cat("sharded index ", index_path, ": tensor \"", name,
                                "\" maps to shard ", path / shard, ", which does not exist"));
        }
        found = shard_indices.emplace(shard, add_file(path / shard)).first;
      }
      if (!store.files_[found->second]->has(name)) {
        throw FormatError(str_cat("sharded index ", index_path, ": tensor \"", name,
                                  "\" is mapped to shard \"", shard, "\", which does not contain it"));
      }
      store.locations_[name] = {found->second};
    }
    return store;
  }

  for (const char* foreign : kForeignFiles) {
    if (fs::exists(path / foreign, error)) {
      throw Unsupported(str_cat(
          "model directory ", path, " only has ", path / foreign,
          "; ScaleBERT reads safetensors weights: convert it to safetensors, e.g. with "
          "transformers: AutoModel.from_pretrained(dir).save_pretrained(dir, "
          "safe_serialization=True)"));
    }
  }
  throw IoError(str_cat("model directory ", path, " has neither ", kSingleFile, " nor ", kIndexFile));
}

std::vector<fs::path> WeightStore::files() const {
  std::vector<fs::path> paths;
  for (const auto& file : files_) paths.push_back(file->path());
  return paths;
}

std::vector<std::string> WeightStore::names() const {
  std::vector<std::string> sorted;
  for (const auto& [name, location] : locations_) sorted.push_back(name);
  return sorted;  // std::map iterates in order
}

std::optional<std::string> WeightStore::resolve(std::string_view name) const {
  std::string requested(name);
  if (locations_.count(requested)) return requested;

  std::vector<std::string> candidates;
  constexpr std::string_view kPrefix = "bert.";
  if (requested.rfind(kPrefix, 0) == 0) {
    candidates.push_back(requested.substr(kPrefix.size()));
  } else {
    candidates.push_back(std::string(kPrefix) + requested);
  }
  // Old TensorFlow-converted checkpoints call LayerNorm's scale and shift gamma and beta.
  const std::pair<std::string_view, std::string_view> renames[] = {
      {"LayerNorm.weight", "LayerNorm.gamma"}, {"LayerNorm.bias", "LayerNorm.beta"},
      {"LayerNorm.gamma", "LayerNorm.weight"}, {"LayerNorm.beta", "LayerNorm.bias"}};
  for (const std::string& base : {requested, candidates[0]}) {
    for (const auto& [from, to] : renames) {
      if (ends_with(base, from)) {
        candidates.push_back(base.substr(0, base.size() - from.size()) + std::string(to));
      }
    }
  }
  for (const std::string& candidate : candidates) {
    if (locations_.count(candidate)) return candidate;
  }
  return std::nullopt;
}

std::string WeightStore::resolve_or_throw(std::string_view name) const {
  std::optional<std::string> stored = resolve(name);
  if (!stored) {
    throw InvalidArgument(str_cat("tensor \"", name, "\" not found in ", path_, " (", locations_.size(),
                                  " tensors; also tried the bert. prefix and LayerNorm gamma/beta)"));
  }
  return *stored;
}

const SafetensorsTensorInfo& WeightStore::info(std::string_view name) const {
  std::string stored = resolve_or_throw(name);
  return files_[locations_.at(stored).file_index]->info(stored);
}

Tensor WeightStore::tensor(std::string_view name) {
  std::string stored = resolve_or_throw(name);
  Tensor result = files_[locations_.at(stored).file_index]->tensor(stored);
  used_.insert(stored);
  return result;
}

Tensor WeightStore::load_f32(std::string_view name, const Shape& expected_shape) {
  std::string stored = resolve_or_throw(name);
  const SafetensorsFile& file = *files_[locations_.at(stored).file_index];
  const SafetensorsTensorInfo& entry = file.info(stored);
  const std::string described =
      stored == name ? str_cat("\"", name, "\"") : str_cat("\"", name, "\" (stored as \"", stored, "\")");
  if (entry.shape != expected_shape) {
    throw InvalidArgument(str_cat("tensor ", described, " in ", file.path(), ": expected shape ",
                                  shape_string(expected_shape), ", got ", shape_string(entry.shape)));
  }
  if (entry.dtype_name != "F32" && entry.dtype_name != "F16" && entry.dtype_name != "BF16") {
    throw FormatError(str_cat("tensor ", described, " in ", file.path(), " has dtype ",
                              entry.dtype_name, "; expected a float weight (F32, F16 or BF16)"));
  }
  Tensor stored_tensor = file.tensor(stored);
  used_.insert(stored);
  const int64_t count = stored_tensor.numel();

  if (stored_tensor.dtype() == DType::kF32) {
    if (reinterpret_cast<uintptr_t>(stored_tensor.raw()) % kAlignment == 0) return stored_tensor;
    Tensor copy = Tensor::empty(expected_shape, DType::kF32);
    std::memcpy(copy.raw(), stored_tensor.raw(), stored_tensor.nbytes());
    return copy;
  }
  Tensor converted = Tensor::empty(expected_shape, DType::kF32);
  float* output = converted.data<float>();  // (numel)
  // Element reads go through memcpy: the mapped data is only guaranteed 2-byte aligned here when
  // the writer sorted by dtype size, and not at all otherwise.
  const uint8_t* input = static_cast<const uint8_t*>(stored_tensor.raw());
  if (stored_tensor.dtype() == DType::kF16) {
    for (int64_t i = 0; i < count; ++i) {
      uint16_t bits;
      std::memcpy(&bits, input + 2 * i, 2);
      output[i] = f16_to_float(bits);
    }
  } else {
    for (int64_t i = 0; i < count; ++i) {
      BFloat16 value;
      std::memcpy(&value.bits, input + 2 * i, 2);
      output[i] = bf16_to_float(value);
    }
  }
  return converted;
}

bool WeightStore::mark_used(std::string_view name) {
  std::optional<std::string> stored = resolve(name);
  if (stored) used_.insert(*stored);
  return stored.has_value();
}

std::vector<std::string> WeightStore::unused_names() const {
  std::vector<std::string> unused;
  for (const auto& [name, location] : locations_) {
    if (!used_.count(name)) unused.push_back(name);
  }
  return unused;
}

}  // namespace scalebert
