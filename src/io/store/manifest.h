// The manifest of one stored checkpoint version: which tensors exist, which shard file holds
// each, every stored file's size, XXH64 checksum and replica roots, and the caller's metadata
// (opaque JSON: model config, tokenizer, quantization recipe, training state). It is the commit
// record of a version: written to every root only after every shard replica is durable.
//
// On disk (manifest.json, format_version 1):
//   {"format": "scalebert-checkpoint-store", "format_version": 1,
//    "body": {"version": 7, "created_unix_ms": ..., "replication": 2, "shard_size_bytes": ...,
//             "root_count": 3, "checksum": "xxh64",
//             "tensors": [{"name": ..., "dtype": "F32", "shape": [..], "shard": 0}, ...],
//             "shards":  [{"file": "shard-00000.safetensors", "bytes": .., "xxh64": "<16 hex>",
//                          "replicas": [0, 1]}, ...],
//             "files":   [{"file": "files/vocab.txt", ...same fields...}],
//             "metadata": {...}},
//    "body_xxh64": "<16 hex>"}
// body_xxh64 is the XXH64 of body.dump() (nlohmann's canonical form: sorted keys, shortest
// round-trip numbers), so a flipped byte in a manifest is detected even where it still parses.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor.h"

namespace scalebert::store {

inline constexpr int kManifestFormatVersion = 1;
inline constexpr std::string_view kManifestFormat = "scalebert-checkpoint-store";
inline constexpr std::string_view kManifestFileName = "manifest.json";

struct ManifestTensor {
  std::string name;
  std::string dtype;  // safetensors dtype name
  Shape shape;
  size_t shard = 0;   // index into Manifest::shards
};

// One stored file (a shard or a small side file such as vocab.txt) and where its replicas live.
struct ManifestObject {
  std::string file;               // path relative to the version directory
  uint64_t bytes = 0;
  uint64_t xxh64 = 0;
  std::vector<size_t> replicas;   // root indices, in failover order
};

struct Manifest {
  int format_version = kManifestFormatVersion;
  uint64_t version = 0;
  int64_t created_unix_ms = 0;
  size_t replication = 0;
  uint64_t shard_size_bytes = 0;
  size_t root_count = 0;
  std::vector<ManifestTensor> tensors;   // in the order the caller saved them
  std::vector<ManifestObject> shards;
  std::vector<ManifestObject> files;
  nlohmann::json metadata = nlohmann::json::object();

  // Shards then files: everything a verifier or repairer walks over.
  std::vector<const ManifestObject*> objects() const;
  std::vector<ManifestObject*> objects();
  uint64_t total_bytes() const;  // sum over objects of one replica's bytes
  const ManifestTensor* find_tensor(std::string_view name) const;

  std::string to_text() const;
  // Parses and validates (format, format_version, body checksum, every field's type, shard
  // indices in range, replica roots < root_count and distinct, file names relative and inside
  // the version directory). Throws FormatError naming `source` and the offending field.
  static Manifest parse(std::string_view text, const std::string& source);
};

// "v0000000007": fixed width so that names sort like numbers.
std::string version_directory_name(uint64_t version);
// The inverse; nullopt for any other name.
std::optional<uint64_t> parse_version_directory_name(std::string_view name);

// "shard-00003.safetensors"
std::string shard_file_name(size_t shard_index);

}  // namespace scalebert::store
