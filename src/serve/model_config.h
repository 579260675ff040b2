// A served model's configuration: the subset of Triton's ModelConfig (config.pbtxt, protobuf text
// format) that ScaleBERT uses, its parser, and its JSON form for /v2/models/{m}/config.
//
// Accepted fields: name, platform, backend, max_batch_size, input/output {name, data_type, dims},
// dynamic_batching {preferred_batch_size, max_queue_delay_microseconds, default_queue_policy
// {max_queue_size, default_timeout_microseconds}}, instance_group {count, kind KIND_CPU|KIND_AUTO},
// version_policy {latest {num_versions} | all {} | specific {versions}}, parameters {key, value
// {string_value}}. Any other field is a FormatError naming it and its line, so that a typo does
// not silently change how a model is served.
//
// Versions from a checkpoint store (docs/checkpoint_store.md) instead of numeric folders:
//   parameters { key: "store_roots" value: { string_value: "/d0/ckpt,/d1/ckpt,/d2/ckpt" } }
//   parameters { key: "store_poll_interval_ms" value: { string_value: "2000" } }    optional
// The model's versions are the store's committed versions up to `latest` (version_policy picks
// among them as among folders: the default latest {num_versions: 1} serves `latest`); relative
// roots are relative to the model folder. With a poll interval > 0 the repository watches
// `latest` and reloads the model when it moves.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace scalebert::serve {

// Tensor element types, named as the KServe v2 protocol names them ("INT64", "BYTES", ...).
enum class DataType { kBool, kUint8, kInt8, kInt16, kInt32, kInt64, kFp16, kBf16, kFp32, kFp64, kBytes };

std::string_view v2_name(DataType type);           // "INT64"
std::string_view config_name(DataType type);       // "TYPE_INT64" ("TYPE_STRING" for BYTES)
// InvalidArgument naming the value when unknown.
DataType data_type_from_v2(std::string_view name);
DataType data_type_from_config(std::string_view name);
// Bytes per element; 0 for BYTES (variable length).
size_t element_size(DataType type);

struct TensorConfig {
  std::string name;
  DataType data_type = DataType::kFp32;
  std::vector<int64_t> dims;  // without the batch dimension; -1 = any size
};

struct DynamicBatchingConfig {
  std::vector<int64_t> preferred_batch_size;
  int64_t max_queue_delay_microseconds = 0;
  int64_t max_queue_size = 0;                // 0 = the server's default bound
  int64_t default_timeout_microseconds = 0;  // 0 = no timeout
};

struct VersionPolicy {
  enum class Kind { kLatest, kAll, kSpecific };
  Kind kind = Kind::kLatest;
  int64_t num_versions = 1;       // kLatest
  std::vector<int64_t> versions;  // kSpecific

  // The versions to serve out of those present (sorted ascending).
  std::vector<int64_t> select(std::vector<int64_t> available) const;
};

struct ModelConfig {
  std::string name;
  std::string platform;
  std::string backend = "scalebert";
  int64_t max_batch_size = 0;
  std::vector<TensorConfig> inputs;
  std::vector<TensorConfig> outputs;
  std::optional<DynamicBatchingConfig> dynamic_batching;
  int64_t instance_count = 1;
  std::string instance_kind = "KIND_CPU";
  VersionPolicy version_policy;
  std::map<std::string, std::string> parameters;

  // A parameter's string value, or `fallback` when absent.
  std::string parameter(const std::string& key, const std::string& fallback = "") const;
  const TensorConfig* find_input(std::string_view name) const;
  const TensorConfig* find_output(std::string_view name) const;

  // Triton's JSON form (protobuf JSON mapping: 64-bit integers as strings).
  nlohmann::json to_json() const;
};

inline constexpr const char* kStoreRootsParameter = "store_roots";
inline constexpr const char* kStorePollParameter = "store_poll_interval_ms";

struct StoreSource {
  std::vector<std::filesystem::path> roots;     // in the store's order; relative ones resolved
  std::chrono::milliseconds poll_interval{0};   // 0: load once, do not watch
};

// The model's store, when its config sets store_roots; nullopt otherwise. FormatError naming the
// parameter and `source` for an empty root list or a poll interval that is not an integer >= 0.
std::optional<StoreSource> store_source(const ModelConfig& config, const std::filesystem::path& model_folder,
                                        const std::string& source = "config.pbtxt");

// Parses config.pbtxt text; `source` (the file name) prefixes every FormatError with the line.
ModelConfig parse_model_config(std::string_view text, const std::string& source = "config.pbtxt");

}  // namespace scalebert::serve
