// Manifest serialization with a self-checksum, and strict validation when reading it back.
#include "io/store/manifest.h"

#include <cstdio>
#include <set>

#include "core/error.h"
#include "io/safetensors.h"
#include "io/store/checksum.h"

namespace scalebert::store {

namespace {

using Json = nlohmann::json;

const Json& field(const Json& object, const char* key, const std::string& where) {
  auto found = object.find(key);
  if (found == object.end()) throw FormatError(str_cat(where, ": missing \"", key, "\""));
  return *found;
}

uint64_t unsigned_field(const Json& object, const char* key, const std::string& where) {
  const Json& value = field(object, key, where);
  if (!value.is_number_unsigned()) {
    throw FormatError(str_cat(where, ": \"", key, "\" must be a non-negative integer, got ", value.dump()));
  }
  return value.get<uint64_t>();
}

std::string string_field(const Json& object, const char* key, const std::string& where) {
  const Json& value = field(object, key, where);
  if (!value.is_string()) {
    throw FormatError(str_cat(where, ": \"", key, "\" must be a string, got ", value.dump()));
  }
  return value.get<std::string>();
}

const Json& array_field(const Json& object, const char* key, const std::string& where) {
  const Json& value = field(object, key, where);
  if (!value.is_array()) {
    throw FormatError(str_cat(where, ": \"", key, "\" must be a list, got ", value.type_name()));
  }
  return value;
}

// A stored file name must stay inside the version directory: relative, no "..", no empty parts.
void check_relative_name(const std::string& name, const std::string& where) {
  bool bad = name.empty() || name.front() == '/' || name.back() == '/';
  size_t start = 0;
  while (!bad && start <= name.size()) {
    size_t end = name.find('/', start);
    if (end == std::string::npos) end = name.size();
    std::string_view part(name.data() + start, end - start);
    bad = part.empty() || part == "." || part == "..";
    start = end + 1;
  }
  if (bad) throw FormatError(str_cat(where, ": file name \"", name, "\" leaves the version directory"));
}

Json object_to_json(const ManifestObject& object) {
  return Json{{"file", object.file}, {"bytes", object.bytes}, {"xxh64", hex64(object.xxh64)},
              {"replicas", object.replicas}};
}

ManifestObject object_from_json(const Json& json, size_t root_count, const std::string& where) {
  if (!json.is_object()) throw FormatError(str_cat(where, ": must be an object, got ", json.dump()));
  ManifestObject object;
  object.file = string_field(json, "file", where);
  check_relative_name(object.file, where);
  object.bytes = unsigned_field(json, "bytes", where);
  object.xxh64 = parse_hex64(string_field(json, "xxh64", where), str_cat(where, " xxh64"));
  std::set<size_t> seen;
  for (const Json& root : array_field(json, "replicas", where)) {
    if (!root.is_number_unsigned() || root.get<uint64_t>() >= root_count) {
      throw FormatError(str_cat(where, ": replica root ", root.dump(), " is not a root index below ",
                                root_count));
    }
    size_t index = root.get<size_t>();
    if (!seen.insert(index).second) {
      throw FormatError(str_cat(where, ": replica root ", index, " listed twice"));
    }
    object.replicas.push_back(index);
  }
  if (object.replicas.empty()) throw FormatError(str_cat(where, ": no replicas"));
  return object;
}

}  // namespace

std::vector<const ManifestObject*> Manifest::objects() const {
  std::vector<const ManifestObject*> all;
  for (const ManifestObject& shard : shards) all.push_back(&shard);
  for (const ManifestObject& file : files) all.push_back(&file);
  return all;
}

std::vector<ManifestObject*> Manifest::objects() {
  std::vector<ManifestObject*> all;
  for (ManifestObject& shard : shards) all.push_back(&shard);
  for (ManifestObject& file : files) all.push_back(&file);
  return all;
}

uint64_t Manifest::total_bytes() const {
  uint64_t total = 0;
  for (const ManifestObject* object : objects()) total += object->bytes;
  return total;
}

const ManifestTensor* Manifest::find_tensor(std::string_view name) const {
  for (const ManifestTensor& tensor : tensors) {
    if (tensor.name == name) return &tensor;
  }
  return nullptr;
}

std::string Manifest::to_text() const {
  Json body = Json::object();
  body["version"] = version;
  body["created_unix_ms"] = created_unix_ms;
  body["replication"] = replication;
  body["shard_size_bytes"] = shard_size_bytes;
  body["root_count"] = root_count;
  body["checksum"] = "xxh64";
  Json tensor_list = Json::array();
  for (const ManifestTensor& tensor : tensors) {
    tensor_list.push_back(Json{{"name", tensor.name}, {"dtype", tensor.dtype}, {"shape", tensor.shape},
                               {"shard", tensor.shard}});
  }
  body["tensors"] = std::move(tensor_list);
  Json shard_list = Json::array();
  for (const ManifestObject& shard : shards) shard_list.push_back(object_to_json(shard));
  body["shards"] = std::move(shard_list);
  Json file_list = Json::array();
  for (const ManifestObject& file : files) file_list.push_back(object_to_json(file));
  body["files"] = std::move(file_list);
  body["metadata"] = metadata;

  Json document = Json::object();
  document["format"] = kManifestFormat;
  document["format_version"] = format_version;
  document["body_xxh64"] = hex64(xxh64(body.dump()));
  document["body"] = std::move(body);
  return document.dump(1) + "\n";
}

Manifest Manifest::parse(std::string_view text, const std::string& source) {
  Json document;
  try {
    document = Json::parse(text);
  } catch (const Json::exception& error) {
    throw FormatError(str_cat(source, ": manifest is not valid JSON: ", error.what()));
  }
  if (!document.is_object()) {
    throw FormatError(str_cat(source, ": manifest must be a JSON object, got ", document.type_name()));
  }
  std::string format = string_field(document, "format", source);
  if (format != kManifestFormat) {
    throw FormatError(str_cat(source, ": format is \"", format, "\", expected \"", kManifestFormat, "\""));
  }
  uint64_t format_version = unsigned_field(document, "format_version", source);
  if (format_version != static_cast<uint64_t>(kManifestFormatVersion)) {
    throw FormatError(str_cat(source, ": manifest format_version ", format_version,
                              " is not supported (this build reads ", kManifestFormatVersion, ")"));
  }
  const Json& body = field(document, "body", source);
  if (!body.is_object()) throw FormatError(str_cat(source, ": body must be an object"));
  uint64_t expected = parse_hex64(string_field(document, "body_xxh64", source), str_cat(source, " body_xxh64"));
  uint64_t actual = xxh64(body.dump());
  if (expected != actual) {
    throw FormatError(str_cat(source, ": manifest body checksum ", hex64(actual), " differs from the recorded ",
                              hex64(expected), " (corrupt manifest)"));
  }

  Manifest manifest;
  manifest.format_version = static_cast<int>(format_version);
  manifest.version = unsigned_field(body, "version", source);
  const Json& created = field(body, "created_unix_ms", source);
  if (!created.is_number_integer()) throw FormatError(str_cat(source, ": created_unix_ms must be an integer"));
  manifest.created_unix_ms = created.get<int64_t>();
  manifest.replication = unsigned_field(body, "replication", source);
  manifest.shard_size_bytes = unsigned_field(body, "shard_size_bytes", source);
  manifest.root_count = unsigned_field(body, "root_count", source);
  if (manifest.root_count == 0 || manifest.replication == 0 || manifest.replication > manifest.root_count) {
    throw FormatError(str_cat(source, ": replication ", manifest.replication, " with ", manifest.root_count,
                              " roots is impossible"));
  }
  std::string checksum = string_field(body, "checksum", source);
  if (checksum != "xxh64") throw FormatError(str_cat(source, ": unknown checksum \"", checksum, "\""));

  const Json& shard_list = array_field(body, "shards", source);
  for (size_t i = 0; i < shard_list.size(); ++i) {
    manifest.shards.push_back(object_from_json(shard_list[i], manifest.root_count, str_cat(source, " shards[", i, "]")));
  }
  const Json& file_list = array_field(body, "files", source);
  for (size_t i = 0; i < file_list.size(); ++i) {
    manifest.files.push_back(object_from_json(file_list[i], manifest.root_count, str_cat(source, " files[", i, "]")));
  }
  std::set<std::string> file_names;
  for (const ManifestObject* object : manifest.objects()) {
    if (object->file == kManifestFileName || !file_names.insert(object->file).second) {
      throw FormatError(str_cat(source, ": stored file \"", object->file, "\" listed twice or reserved"));
    }
  }

  const Json& tensor_list = array_field(body, "tensors", source);
  std::set<std::string> tensor_names;
  for (size_t i = 0; i < tensor_list.size(); ++i) {
    const std::string where = str_cat(source, " tensors[", i, "]");
    const Json& entry = tensor_list[i];
    if (!entry.is_object()) throw FormatError(str_cat(where, ": must be an object"));
    ManifestTensor tensor;
    tensor.name = string_field(entry, "name", where);
    if (!tensor_names.insert(tensor.name).second) {
      throw FormatError(str_cat(where, ": tensor \"", tensor.name, "\" listed twice"));
    }
    tensor.dtype = string_field(entry, "dtype", where);
    if (!safetensors_dtype_size(tensor.dtype)) {
      throw FormatError(str_cat(where, ": tensor \"", tensor.name, "\" has unknown dtype \"", tensor.dtype, "\""));
    }
    for (const Json& extent : array_field(entry, "shape", where)) {
      if (!extent.is_number_unsigned()) {
        throw FormatError(str_cat(where, ": tensor \"", tensor.name, "\" shape entry ", extent.dump(),
                                  " is not a non-negative integer"));
      }
      tensor.shape.push_back(extent.get<int64_t>());
    }
    tensor.shard = unsigned_field(entry, "shard", where);
    if (tensor.shard >= manifest.shards.size()) {
      throw FormatError(str_cat(where, ": tensor \"", tensor.name, "\" names shard ", tensor.shard, " of ",
                                manifest.shards.size()));
    }
    manifest.tensors.push_back(std::move(tensor));
  }
  manifest.metadata = field(body, "metadata", source);
  return manifest;
}

std::string version_directory_name(uint64_t version) {
  char name[32];
  std::snprintf(name, sizeof(name), "v%010llu", static_cast<unsigned long long>(version));
  return name;
}

std::optional<uint64_t> parse_version_directory_name(std::string_view name) {
  if (name.size() != 11 || name[0] != 'v') return std::nullopt;
  uint64_t value = 0;
  for (char digit : name.substr(1)) {
    if (digit < '0' || digit > '9') return std::nullopt;
    value = value * 10 + static_cast<uint64_t>(digit - '0');
  }
  return value;
}

std::string shard_file_name(size_t shard_index) {
  char name[48];
  std::snprintf(name, sizeof(name), "shard-%05zu.safetensors", shard_index);
  return name;
}

}  // namespace scalebert::store
