// A Hugging Face model directory's weights: one model.safetensors or a sharded checkpoint
// (model.safetensors.index.json + shards), looked up by name with the aliases BERT checkpoints
// use in the wild (optional "bert." prefix, old LayerNorm gamma/beta), converted to F32 on request,
// and with a record of which tensors a loader consumed so it can warn about the rest.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"
#include "io/safetensors.h"

namespace scalebert {

// Not thread-safe: lookups record usage. Load from one thread (loading is not a hot path).
class WeightStore {
 public:
  // `path` is a model directory or a single .safetensors file. In a directory, model.safetensors
  // wins over model.safetensors.index.json (as in transformers). Errors:
  //  - IoError: the path does not exist; the directory holds no weights at all; a shard is missing.
  //  - Unsupported: the directory only has PyTorch/TF/Flax weights (pytorch_model.bin, ...): the
  //    message names the file and says to convert it to safetensors.
  //  - FormatError: a bad index (not JSON, no "weight_map", a non-string shard, a shard path that
  //    leaves the directory) or a tensor the index maps to a shard that lacks it; the message
  //    names the index file, the tensor and the shard. Safetensors errors as in SafetensorsFile.
  static WeightStore open(const std::filesystem::path& path);

  // The directory (or the file, for a single-file store).
  const std::filesystem::path& path() const { return path_; }
  // The files actually read (one, or each shard once).
  std::vector<std::filesystem::path> files() const;

  // Stored names, sorted.
  std::vector<std::string> names() const;
  // The stored name that `name` refers to, trying in order: the name itself; with "bert." added
  // or removed; and each of those with LayerNorm.weight/bias <-> LayerNorm.gamma/beta swapped.
  // nullopt when none is stored.
  std::optional<std::string> resolve(std::string_view name) const;
  bool has(std::string_view name) const { return resolve(name).has_value(); }
  // Header entry of the resolved tensor; throws InvalidArgument naming `name` when absent.
  const SafetensorsTensorInfo& info(std::string_view name) const;

  // The tensor as stored (a view into the mapping, any dtype), marked as used.
  // Throws InvalidArgument naming the tensor and the store when absent.
  Tensor tensor(std::string_view name);

  // The tensor as F32 with exactly `expected_shape`, marked as used. Contract: the result is
  // always 64-byte aligned and safe to write (private). F32 data whose mapped address happens to
  // be 64-byte aligned is returned as a view of the mapping (writes go to copy-on-write pages);
  // otherwise, and for F16/BF16 (converted exactly: both widen losslessly to F32), it is an
  // owned aligned copy. Consumers reorder weights into kernel layouts anyway, so one extra copy
  // at load costs little and spares every kernel an alignment special case.
  // Throws InvalidArgument naming the tensor, the expected and the actual shape on a shape
  // mismatch, and FormatError naming the tensor and its dtype for non-float dtypes.
  Tensor load_f32(std::string_view name, const Shape& expected_shape);

  // Records a stored tensor as consumed without reading it (e.g. a buffer a loader deliberately
  // ignores, such as embeddings.position_ids, which older transformers versions saved). Returns
  // whether the name (after aliasing) is stored; an absent name is not an error.
  bool mark_used(std::string_view name);
  // Stored names never handed out, sorted: what a loader should warn about.
  std::vector<std::string> unused_names() const;

 private:
  struct Location {
    size_t file_index;
  };
  std::string resolve_or_throw(std::string_view name) const;

  std::filesystem::path path_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, Location> locations_;  // stored name -> file holding it
  std::set<std::string> used_;
};

}  // namespace scalebert
