// The safetensors format (https://github.com/huggingface/safetensors): an 8-byte little-endian
// header length N, N bytes of JSON header {name: {dtype, shape, data_offsets: [begin, end]},
// "__metadata__": {string: string}}, then the raw little-endian tensor data; offsets are relative
// to the data start (byte 8 + N). Reading maps the file and validates every entry; writing lays
// the file out as the reference implementation does and replaces the target atomically.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace scalebert {

class MappedFile;

// The reference implementation refuses headers above 100 MB; so do we (a corrupt length field
// would otherwise make us parse gigabytes of tensor data as JSON).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// One header entry.
struct SafetensorsTensorInfo {
  std::string name;
  // The dtype as written ("F32", "BF16", "F64", ...). Every dtype of the safetensors format is
  // accepted when opening; only those ScaleBERT computes with have `dtype` set, and tensor()
  // throws Unsupported for the others (a checkpoint may carry a tensor we never use).
  std::string dtype_name;
  std::optional<DType> dtype;
  Shape shape;
  // Byte range relative to the data start, [begin, end).
  uint64_t begin = 0;
  uint64_t end = 0;

  uint64_t nbytes() const { return end - begin; }
};

class SafetensorsFile {
 public:
  // Maps and validates `path`. Throws IoError when the file cannot be opened or mapped, and
  // FormatError (naming the file, and the tensor where there is one) for: a file under 8 bytes,
  // a header length past the end of the file or above kMaxSafetensorsHeaderBytes, a header that
  // is not a JSON object, an entry without dtype/shape/data_offsets or with a non-string dtype,
  // an unknown dtype, a shape that is not a list of non-negative integers, data_offsets that are
  // not [begin, end] integers with begin <= end, end past the data region, a byte size different
  // from numel * dtype size, overlapping tensors, duplicate names, and __metadata__ values that
  // are not strings.
  static SafetensorsFile open(const std::filesystem::path& path);

  const std::filesystem::path& path() const;
  // Tensor names in header order (the reference writer emits them in data order).
  const std::vector<std::string>& names() const { return names_; }
  std::vector<std::string> sorted_names() const;
  size_t size() const { return names_.size(); }
  bool has(std::string_view name) const;
  // Throws InvalidArgument naming the file and tensor when absent.
  const SafetensorsTensorInfo& info(std::string_view name) const;

  // A view of the tensor's bytes inside the mapping; the tensor keeps the mapping alive.
  // Alignment: the format only makes offsets 8-byte aligned relative to the data start when the
  // writer sorted by dtype size (the reference writer does; others need not), so the pointer is
  // NOT 64-byte aligned in general. Callers that need aligned memory copy (see
  // WeightStore::load_f32). Writing through the view touches a private copy-on-write page, never
  // the file. Throws Unsupported for dtypes ScaleBERT does not compute with.
  Tensor tensor(std::string_view name) const;

  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Byte 8 + N: where offsets count from.
  uint64_t data_start() const { return data_start_; }

 private:
  SafetensorsFile() = default;  // only open() makes one: every object has a mapping

  std::shared_ptr<MappedFile> file_;
  uint64_t data_start_ = 0;
  std::vector<std::string> names_;
  std::unordered_map<std::string, SafetensorsTensorInfo> entries_;
  std::map<std::string, std::string> metadata_;
};

// Bytes per element of a safetensors dtype name ("F32" -> 4, "BOOL" -> 1); nullopt when the
// format does not define the name.
std::optional<size_t> safetensors_dtype_size(std::string_view dtype_name);

// Writes a safetensors file at `path` atomically (temporary file, fsync, rename, fsync dir).
// Layout follows the reference writer: tensors are stored in a stable sort by element size,
// largest first, so with the 8-byte-padded header every tensor starts at a multiple of its
// element size; within one element size the caller's order is kept, and the header lists
// "__metadata__" first, then the tensors in data order, padded with spaces to a multiple of 8
// bytes; there are no gaps between tensors. Throws InvalidArgument for an empty, duplicate or
// reserved ("__metadata__") name or an undefined tensor with elements, and IoError when writing
// fails.
void save_safetensors(const std::filesystem::path& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace scalebert
