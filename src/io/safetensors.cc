// Safetensors reading (mmap + full header validation) and atomic writing.
#include "io/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "core/error.h"
#include "io/file_util.h"

namespace scalebert {

static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian data; a big-endian host would need byte swaps");

namespace {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

// Every dtype the format defines (safetensors 0.4), with its element size. The sub-byte float
// formats of later versions are not listed: their size is not a whole number of bytes.
struct DTypeEntry {
  std::string_view name;
  size_t size;
};
constexpr DTypeEntry kSafetensorsDTypes[] = {
    {"BOOL", 1}, {"U8", 1},       {"I8", 1},       {"F8_E5M2", 1}, {"F8_E4M3", 1},
    {"I16", 2},  {"U16", 2},      {"F16", 2},      {"BF16", 2},    {"I32", 4},
    {"U32", 4},  {"F32", 4},      {"F64", 8},      {"I64", 8},     {"U64", 8},
};

std::optional<DType> scalebert_dtype(std::string_view name) {
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kI8, DType::kI32, DType::kI64, DType::kF16,
                      DType::kU8}) {
    if (dtype_name(dtype) == name) return dtype;
  }
  return std::nullopt;
}

// Reads a non-negative JSON integer; `what` names it in the error.
uint64_t read_unsigned(const Json& value, const std::string& what) {
  if (!value.is_number_integer()) {
    throw FormatError(str_cat(what, " must be a non-negative integer, got ", value.dump()));
  }
  if (!value.is_number_unsigned()) {
    throw FormatError(str_cat(what, " must be non-negative, got ", value.dump()));
  }
  return value.get<uint64_t>();
}

}  // namespace

std::optional<size_t> safetensors_dtype_size(std::string_view dtype_name) {
  for (const DTypeEntry& entry : kSafetensorsDTypes) {
    if (entry.name == dtype_name) return entry.size;
  }
  return std::nullopt;
}

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path) {
  SafetensorsFile result;
  result.file_ = MappedFile::open(path);
  const uint8_t* bytes = result.file_->data();
  const uint64_t file_size = result.file_->size();
  const std::string where = str_cat("safetensors file ", path);

  if (file_size < 8) {
    throw FormatError(str_cat(where, " is ", file_size,
                              " bytes, shorter than the 8-byte header length field"));
  }
  uint64_t header_size = 0;
  std::memcpy(&header_size, bytes, 8);  // little-endian host (static_assert above)
  if (header_size > kMaxSafetensorsHeaderBytes) {
    throw FormatError(str_cat(where, ": header length ", header_size, " exceeds the ",
                              kMaxSafetensorsHeaderBytes, "-byte limit (corrupt or not safetensors)"));
  }
  if (header_size > file_size - 8) {
    throw FormatError(str_cat(where, ": header length ", header_size, " runs past the end of the ",
                              file_size, "-byte file (truncated or not safetensors)"));
  }
  result.data_start_ = 8 + header_size;
  const uint64_t data_size = file_size - result.data_start_;

  // Parse with a callback that sees each top-level key once, in file order: nlohmann's object
  // is a sorted map that silently drops duplicates, and both the order and duplicates matter.
  std::vector<std::string> top_level_keys;
  std::unordered_set<std::string> seen;
  std::string duplicate;
  auto on_event = [&](int depth, Json::parse_event_t event, Json& parsed) {
    if (event == Json::parse_event_t::key && depth == 1) {
      std::string key = parsed.get<std::string>();
      if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
      top_level_keys.push_back(std::move(key));
    }
    return true;
  };
  const char* header_begin = reinterpret_cast<const char*>(bytes + 8);
  Json header;
  try {
    header = Json::parse(header_begin, header_begin + header_size, on_event);
  } catch (const Json::exception& error) {
    throw FormatError(str_cat(where, ": header is not valid JSON: ", error.what()));
  }
  if (!header.is_object()) {
    throw FormatError(str_cat(where, ": header must be a JSON object, got ", header.type_name()));
  }
  if (!duplicate.empty()) {
    throw FormatError(str_cat(where, ": duplicate tensor name \"", duplicate, "\" in header"));
  }

  for (const std::string& name : top_level_keys) {
    const Json& entry = header.at(name);
    if (name == "__metadata__") {
      if (!entry.is_object()) {
        throw FormatError(str_cat(where, ": __metadata__ must be an object of strings, got ",
                                  entry.type_name()));
      }
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          throw FormatError(str_cat(where, ": __metadata__ value for \"", key,
                                    "\" must be a string, got ", value.dump()));
        }
        result.metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string tensor_where = str_cat(where, ", tensor \"", name, "\"");
    if (!entry.is_object()) {
      throw FormatError(str_cat(tensor_where, ": entry must be an object, got ", entry.dump()));
    }
    for (const char* key : {"dtype", "shape", "data_offsets"}) {
      if (!entry.contains(key)) throw FormatError(str_cat(tensor_where, ": missing \"", key, "\""));
    }
    SafetensorsTensorInfo info;
    info.name = name;

    const Json& dtype_value = entry.at("dtype");
    if (!dtype_value.is_string()) {
      throw FormatError(str_cat(tensor_where, ": dtype must be a string, got ", dtype_value.dump()));
    }
    info.dtype_name = dtype_value.get<std::string>();
    std::optional<size_t> element_size = safetensors_dtype_size(info.dtype_name);
    if (!element_size) {
      throw FormatError(str_cat(tensor_where, ": unknown dtype \"", info.dtype_name, "\""));
    }
    info.dtype = scalebert_dtype(info.dtype_name);

    const Json& shape_value = entry.at("shape");
    if (!shape_value.is_array()) {
      throw FormatError(str_cat(tensor_where, ": shape must be a list, got ", shape_value.dump()));
    }
    uint64_t numel = 1;
    bool overflow = false;
    for (const Json& extent : shape_value) {
      uint64_t dimension = read_unsigned(extent, str_cat(tensor_where, ": shape ",
                                                         shape_value.dump(), " entry"));
      if (dimension > static_cast<uint64_t>(INT64_MAX)) overflow = true;
      overflow = overflow || __builtin_mul_overflow(numel, dimension, &numel);
      info.shape.push_back(static_cast<int64_t>(dimension));
    }
    uint64_t expected_bytes = 0;
    overflow = overflow || __builtin_mul_overflow(numel, *element_size, &expected_bytes);
    if (overflow) {
      throw FormatError(str_cat(tensor_where, ": shape ", shape_value.dump(),
                                " has more bytes than any file can hold"));
    }

    const Json& offsets = entry.at("data_offsets");
    if (!offsets.is_array() || offsets.size() != 2) {
      throw FormatError(str_cat(tensor_where, ": data_offsets must be [begin, end], got ",
                                offsets.dump()));
    }
    info.begin = read_unsigned(offsets[0], str_cat(tensor_where, ": data_offsets begin"));
    info.end = read_unsigned(offsets[1], str_cat(tensor_where, ": data_offsets end"));
    if (info.begin > info.end) {
      throw FormatError(str_cat(tensor_where, ": data_offsets [", info.begin, ", ", info.end,
                                "] has begin > end"));
    }
    if (info.end > data_size) {
      throw FormatError(str_cat(tensor_where, ": data_offsets [", info.begin, ", ", info.end,
                                "] run past the ", data_size, "-byte data region"));
    }
    if (info.nbytes() != expected_bytes) {
      throw FormatError(str_cat(tensor_where, ": data_offsets [", info.begin, ", ", info.end,
                                "] hold ", info.nbytes(), " bytes but shape ",
                                shape_string(info.shape), " of ", info.dtype_name, " needs ",
                                expected_bytes));
    }
    result.names_.push_back(name);
    result.entries_.emplace(name, std::move(info));
  }

  // Overlap: sorted by begin, each non-empty tensor must start at or after the previous end.
  // (Gaps are tolerated; the reference reader refuses them, but they are harmless to us.)
  std::vector<const SafetensorsTensorInfo*> by_offset;
  for (const auto& [name, info] : result.entries_) {
    if (info.nbytes() > 0) by_offset.push_back(&info);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](const auto* a, const auto* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->name < b->name;
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const SafetensorsTensorInfo& previous = *by_offset[i - 1];
    const SafetensorsTensorInfo& current = *by_offset[i];
    if (current.begin < previous.end) {
      throw FormatError(str_cat(where, ": tensors \"", previous.name, "\" [", previous.begin, ", ",
                                previous.end, ") and \"", current.name, "\" [", current.begin,
                                ", ", current.end, ") overlap"));
    }
  }
  return result;
}

const std::filesystem::path& SafetensorsFile::path() const { return file_->path(); }

std::vector<std::string> SafetensorsFile::sorted_names() const {
  std::vector<std::string> sorted = names_;
  std::sort(sorted.begin(), sorted.end());
  return sorted;
}

bool SafetensorsFile::has(std::string_view name) const {
  return entries_.find(std::string(name)) != entries_.end();
}

const SafetensorsTensorInfo& SafetensorsFile::info(std::string_view name) const {
  auto found = entries_.find(std::string(name));
  if (found == entries_.end()) {
    throw InvalidArgument(str_cat("no tensor \"", name, "\" in ", path()));
  }
  return found->second;
}

Tensor SafetensorsFile::tensor(std::string_view name) const {
  const SafetensorsTensorInfo& entry = info(name);
  if (!entry.dtype) {
    throw Unsupported(str_cat("tensor \"", name, "\" in ", path(), " has dtype ", entry.dtype_name,
                              ", which ScaleBERT does not compute with"));
  }
  // An empty file region still gets a non-null pointer so the view counts as defined.
  uint8_t* base = file_->data() + data_start_ + entry.begin;
  return Tensor::view(base, entry.shape, *entry.dtype, file_);
}

void save_safetensors(const std::filesystem::path& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::unordered_set<std::string> names;
  for (const auto& [name, tensor] : tensors) {
    check(!name.empty(), "save_safetensors ", path, ": empty tensor name");
    check(name != "__metadata__", "save_safetensors ", path,
          ": \"__metadata__\" is reserved and cannot name a tensor");
    check(names.insert(name).second, "save_safetensors ", path, ": duplicate tensor name \"",
          name, "\"");
    check(tensor.defined() || tensor.numel() == 0, "save_safetensors ", path, ": tensor \"", name,
          "\" is undefined");
  }

  // Largest element size first, caller's order within a size: keeps every tensor aligned to its
  // element size without padding between tensors (the reference reader refuses gaps).
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return dtype_size(tensors[a].second.dtype()) > dtype_size(tensors[b].second.dtype());
  });

  OrderedJson header = OrderedJson::object();
  if (!metadata.empty()) {
    OrderedJson metadata_json = OrderedJson::object();
    for (const auto& [key, value] : metadata) metadata_json[key] = value;
    header["__metadata__"] = std::move(metadata_json);
  }
  uint64_t offset = 0;
  for (size_t index : order) {
    const auto& [name, tensor] = tensors[index];
    uint64_t bytes = tensor.nbytes();
    header[name] = OrderedJson{{"dtype", std::string(dtype_name(tensor.dtype()))},
                               {"shape", tensor.shape()},
                               {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  uint64_t header_size = header_text.size();

  AtomicFileWriter writer(path);
  writer.write(&header_size, 8);  // little-endian host
  writer.write(header_text);
  for (size_t index : order) {
    const Tensor& tensor = tensors[index].second;
    if (tensor.nbytes() > 0) writer.write(tensor.raw(), tensor.nbytes());
  }
  writer.commit();
}

}  // namespace scalebert
