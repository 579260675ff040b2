// Triton's config.pbtxt: a small protobuf text format reader (messages, scalars, repeated fields in
// [ ] lists, '#' comments) into a generic tree, then the tree mapped onto ModelConfig with every
// field checked.
#include "serve/model_config.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <memory>

#include "core/error.h"

namespace scalebert::serve {

namespace {

struct DataTypeNames {
  DataType type;
  std::string_view v2, config;
  size_t size;
};
constexpr DataTypeNames kDataTypes[] = {
    {DataType::kBool, "BOOL", "TYPE_BOOL", 1},       {DataType::kUint8, "UINT8", "TYPE_UINT8", 1},
    {DataType::kInt8, "INT8", "TYPE_INT8", 1},       {DataType::kInt16, "INT16", "TYPE_INT16", 2},
    {DataType::kInt32, "INT32", "TYPE_INT32", 4},    {DataType::kInt64, "INT64", "TYPE_INT64", 8},
    {DataType::kFp16, "FP16", "TYPE_FP16", 2},       {DataType::kBf16, "BF16", "TYPE_BF16", 2},
    {DataType::kFp32, "FP32", "TYPE_FP32", 4},       {DataType::kFp64, "FP64", "TYPE_FP64", 8},
    {DataType::kBytes, "BYTES", "TYPE_STRING", 0},
};

const DataTypeNames& names_of(DataType type) {
  for (const DataTypeNames& names : kDataTypes) {
    if (names.type == type) return names;
  }
  throw Error("unknown DataType value");
}

// ---- The text format tree ----

struct TextMessage;
struct TextField {
  std::string name;
  int line = 0;
  std::string scalar;  // identifier, number or unquoted string contents
  bool quoted = false;
  std::shared_ptr<TextMessage> message;  // set for message values
};
struct TextMessage {
  std::vector<TextField> fields;
};

class TextParser {
 public:
  TextParser(std::string_view text, const std::string& source) : text_(text), source_(source) {}

  TextMessage parse_document() {
    TextMessage message = parse_fields('\0');
    skip_space();
    if (pos_ < text_.size()) fail("unexpected '", text_[pos_], "'");
    return message;
  }

 private:
  template <typename... Parts>
  [[noreturn]] void fail(Parts&&... parts) const {
    throw FormatError(str_cat(source_, ":", line_, ": ", std::forward<Parts>(parts)...));
  }

  void skip_space() {
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c == '\n') {
        ++line_;
        ++pos_;
      } else if (std::isspace(static_cast<unsigned char>(c))) {
        ++pos_;
      } else if (c == '#') {
        while (pos_ < text_.size() && text_[pos_] != '\n') ++pos_;
      } else {
        return;
      }
    }
  }

  bool accept(char c) {
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  std::string identifier() {
    skip_space();
    const size_t start = pos_;
    while (pos_ < text_.size() && (std::isalnum(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '_')) {
      ++pos_;
    }
    if (start == pos_) {
      if (pos_ >= text_.size()) fail("unexpected end of text, expected a field name");
      fail("expected a field name, found '", text_[pos_], "'");
    }
    return std::string(text_.substr(start, pos_ - start));
  }

  // A scalar: quoted string (adjacent literals concatenate), number, or identifier (enums, true).
  void scalar(TextField& field) {
    skip_space();
    if (pos_ >= text_.size()) fail("unexpected end of text, expected a value for '", field.name, "'");
    const char c = text_[pos_];
    if (c == '"' || c == '\'') {
      field.quoted = true;
      while (pos_ < text_.size() && (text_[pos_] == '"' || text_[pos_] == '\'')) {
        const char quote = text_[pos_++];
        while (true) {
          if (pos_ >= text_.size() || text_[pos_] == '\n') fail("unterminated string for '", field.name, "'");
          char ch = text_[pos_++];
          if (ch == quote) break;
          if (ch == '\\') {
            if (pos_ >= text_.size()) fail("unterminated string for '", field.name, "'");
            const char escaped = text_[pos_++];
            switch (escaped) {
              case 'n': ch = '\n'; break;
              case 't': ch = '\t'; break;
              case '\\': case '"': case '\'': ch = escaped; break;
              default: fail("unsupported escape \\", escaped, " in '", field.name, "'");
            }
          }
          field.scalar.push_back(ch);
        }
        skip_space();
      }
      return;
    }
    const size_t start = pos_;
    while (pos_ < text_.size() && (std::isalnum(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '_' ||
                                   text_[pos_] == '-' || text_[pos_] == '+' || text_[pos_] == '.')) {
      ++pos_;
    }
    if (start == pos_) fail("expected a value for '", field.name, "', found '", c, "'");
    field.scalar = std::string(text_.substr(start, pos_ - start));
  }

  void value(TextField& field, TextMessage& into) {
    skip_space();
    if (pos_ < text_.size() && (text_[pos_] == '{' || text_[pos_] == '<')) {
      const char close = text_[pos_] == '{' ? '}' : '>';
      ++pos_;
      if (++depth_ > 32) fail("messages nested more than 32 deep");
      field.message = std::make_shared<TextMessage>(parse_fields(close));
      --depth_;
      if (!accept(close)) fail("expected '", close, "' to close '", field.name, "'");
    } else {
      scalar(field);
    }
    into.fields.push_back(std::move(field));
  }

  TextMessage parse_fields(char close) {
    TextMessage message;
    while (true) {
      skip_space();
      if (pos_ >= text_.size() || (close != '\0' && text_[pos_] == close)) return message;
      TextField field;
      field.name = identifier();
      field.line = line_;
      const bool colon = accept(':');
      skip_space();
      // Lists may follow the name with or without ':' (Triton's configs write `input [ {...} ]`).
      if (pos_ < text_.size() && text_[pos_] == '[') {
        ++pos_;
        if (accept(']')) continue;  // empty list
        do {
          TextField element;
          element.name = field.name;
          element.line = line_;
          value(element, message);
        } while (accept(','));
        if (!accept(']')) fail("expected ']' to close the list '", field.name, "'");
      } else {
        if (!colon && !(pos_ < text_.size() && (text_[pos_] == '{' || text_[pos_] == '<'))) {
          fail("expected ':' after '", field.name, "'");
        }
        value(field, message);
      }
      accept(',') || accept(';');
    }
  }

  std::string_view text_;
  const std::string& source_;
  size_t pos_ = 0;
  int line_ = 1;
  int depth_ = 0;
};

// ---- Mapping the tree onto ModelConfig ----

class Mapper {
 public:
  explicit Mapper(const std::string& source) : source_(source) {}

  template <typename... Parts>
  [[noreturn]] void fail(const TextField& field, Parts&&... parts) const {
    throw FormatError(str_cat(source_, ":", field.line, ": ", std::forward<Parts>(parts)...));
  }

  const TextMessage& message(const TextField& field) const {
    if (!field.message) fail(field, "'", field.name, "' must be a message { ... }");
    return *field.message;
  }
  std::string string(const TextField& field) const {
    if (field.message) fail(field, "'", field.name, "' must be a value, not a message");
    return field.scalar;
  }
  int64_t integer(const TextField& field, int64_t minimum) const {
    const std::string text = string(field);
    int64_t value = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error != std::errc() || end != text.data() + text.size() || field.quoted) {
      fail(field, "'", field.name, "' must be an integer, got \"", text, "\"");
    }
    if (value < minimum) fail(field, "'", field.name, "' must be >= ", minimum, ", got ", value);
    return value;
  }
  [[noreturn]] void unknown(const TextField& field, std::string_view where) const {
    fail(field, "unknown or unsupported field '", field.name, "' in ", where);
  }

  TensorConfig tensor(const TextField& field) const {
    TensorConfig tensor;
    bool has_type = false;
    for (const TextField& child : message(field).fields) {
      if (child.name == "name") {
        tensor.name = string(child);
      } else if (child.name == "data_type") {
        try {
          tensor.data_type = data_type_from_config(string(child));
        } catch (const InvalidArgument& error) {
          fail(child, error.what());
        }
        has_type = true;
      } else if (child.name == "dims") {
        tensor.dims.push_back(integer(child, -1));
      } else {
        unknown(child, field.name);
      }
    }
    if (tensor.name.empty()) fail(field, "an ", field.name, " without a name");
    if (!has_type) fail(field, field.name, " '", tensor.name, "' has no data_type");
    return tensor;
  }

  DynamicBatchingConfig dynamic_batching(const TextField& field) const {
    DynamicBatchingConfig config;
    for (const TextField& child : message(field).fields) {
      if (child.name == "preferred_batch_size") {
        config.preferred_batch_size.push_back(integer(child, 1));
      } else if (child.name == "max_queue_delay_microseconds") {
        config.max_queue_delay_microseconds = integer(child, 0);
      } else if (child.name == "default_queue_policy") {
        for (const TextField& policy : message(child).fields) {
          if (policy.name == "max_queue_size") {
            config.max_queue_size = integer(policy, 0);
          } else if (policy.name == "default_timeout_microseconds") {
            config.default_timeout_microseconds = integer(policy, 0);
          } else if (policy.name == "timeout_action" || policy.name == "allow_timeout_override") {
            // REJECT is the only action ScaleBERT takes; overrides are always allowed.
          } else {
            unknown(policy, "default_queue_policy");
          }
        }
      } else if (child.name == "preserve_ordering") {
        // Responses are per request; ordering across requests is the client's.
      } else {
        unknown(child, "dynamic_batching");
      }
    }
    return config;
  }

  VersionPolicy version_policy(const TextField& field) const {
    VersionPolicy policy;
    const TextMessage& body = message(field);
    if (body.fields.size() != 1) fail(field, "version_policy needs exactly one of latest, all, specific");
    const TextField& kind = body.fields[0];
    if (kind.name == "latest") {
      policy.kind = VersionPolicy::Kind::kLatest;
      for (const TextField& child : message(kind).fields) {
        if (child.name != "num_versions") unknown(child, "version_policy.latest");
        policy.num_versions = integer(child, 1);
      }
    } else if (kind.name == "all") {
      policy.kind = VersionPolicy::Kind::kAll;
      for (const TextField& child : message(kind).fields) unknown(child, "version_policy.all");
    } else if (kind.name == "specific") {
      policy.kind = VersionPolicy::Kind::kSpecific;
      for (const TextField& child : message(kind).fields) {
        if (child.name != "versions") unknown(child, "version_policy.specific");
        policy.versions.push_back(integer(child, 0));
      }
      if (policy.versions.empty()) fail(kind, "version_policy.specific lists no versions");
    } else {
      unknown(kind, "version_policy");
    }
    return policy;
  }

  void parameter(const TextField& field, ModelConfig& config) const {
    std::string key, value;
    bool has_value = false;
    for (const TextField& child : message(field).fields) {
      if (child.name == "key") {
        key = string(child);
      } else if (child.name == "value") {
        for (const TextField& inner : message(child).fields) {
          if (inner.name != "string_value") unknown(inner, "parameters.value");
          value = string(inner);
          has_value = true;
        }
      } else {
        unknown(child, "parameters");
      }
    }
    if (key.empty() || !has_value) fail(field, "a parameter needs key and value { string_value }");
    config.parameters[key] = value;
  }

  ModelConfig map(const TextMessage& document) const {
    ModelConfig config;
    bool instance_seen = false;
    for (const TextField& field : document.fields) {
      if (field.name == "name") {
        config.name = string(field);
      } else if (field.name == "platform") {
        config.platform = string(field);
      } else if (field.name == "backend") {
        config.backend = string(field);
        if (config.backend != "scalebert") {
          fail(field, "backend \"", config.backend, "\" is not served here (expected \"scalebert\")");
        }
      } else if (field.name == "max_batch_size") {
        config.max_batch_size = integer(field, 1);
      } else if (field.name == "input") {
        config.inputs.push_back(tensor(field));
      } else if (field.name == "output") {
        config.outputs.push_back(tensor(field));
      } else if (field.name == "dynamic_batching") {
        config.dynamic_batching = dynamic_batching(field);
      } else if (field.name == "instance_group") {
        if (instance_seen) fail(field, "only one instance_group is supported");
        instance_seen = true;
        for (const TextField& child : message(field).fields) {
          if (child.name == "count") {
            config.instance_count = integer(child, 1);
          } else if (child.name == "kind") {
            config.instance_kind = string(child);
            if (config.instance_kind != "KIND_CPU" && config.instance_kind != "KIND_AUTO") {
              fail(child, "instance kind ", config.instance_kind, " is not supported (KIND_CPU or KIND_AUTO)");
            }
          } else if (child.name == "name") {
          } else {
            unknown(child, "instance_group");
          }
        }
      } else if (field.name == "version_policy") {
        config.version_policy = version_policy(field);
      } else if (field.name == "parameters") {
        parameter(field, config);
      } else {
        unknown(field, "the model config");
      }
    }
    if (config.max_batch_size < 1) {
      throw FormatError(str_cat(source_, ": max_batch_size must be set and >= 1 (every ScaleBERT input has a batch "
                                "dimension)"));
    }
    if (config.inputs.empty()) throw FormatError(str_cat(source_, ": no input declared"));
    if (config.outputs.empty()) throw FormatError(str_cat(source_, ": no output declared"));
    if (config.dynamic_batching) {
      for (int64_t size : config.dynamic_batching->preferred_batch_size) {
        if (size > config.max_batch_size) {
          throw FormatError(str_cat(source_, ": preferred_batch_size ", size, " exceeds max_batch_size ",
                                    config.max_batch_size));
        }
      }
    }
    return config;
  }

 private:
  const std::string& source_;
};

nlohmann::json tensor_json(const TensorConfig& tensor) {
  nlohmann::json dims = nlohmann::json::array();
  for (int64_t dim : tensor.dims) dims.push_back(std::to_string(dim));
  return {{"name", tensor.name}, {"data_type", config_name(tensor.data_type)}, {"dims", dims}};
}

}  // namespace

std::string_view v2_name(DataType type) { return names_of(type).v2; }
std::string_view config_name(DataType type) { return names_of(type).config; }
size_t element_size(DataType type) { return names_of(type).size; }

DataType data_type_from_v2(std::string_view name) {
  for (const DataTypeNames& names : kDataTypes) {
    if (names.v2 == name) return names.type;
  }
  throw InvalidArgument(str_cat("unknown datatype \"", name, "\""));
}

DataType data_type_from_config(std::string_view name) {
  for (const DataTypeNames& names : kDataTypes) {
    if (names.config == name) return names.type;
  }
  throw InvalidArgument(str_cat("unknown data_type \"", name, "\""));
}

std::vector<int64_t> VersionPolicy::select(std::vector<int64_t> available) const {
  std::sort(available.begin(), available.end());
  switch (kind) {
    case Kind::kAll:
      return available;
    case Kind::kLatest: {
      const size_t keep = std::min(available.size(), static_cast<size_t>(num_versions));
      return std::vector<int64_t>(available.end() - static_cast<std::ptrdiff_t>(keep), available.end());
    }
    case Kind::kSpecific: {
      std::vector<int64_t> chosen;
      for (int64_t version : available) {
        if (std::find(versions.begin(), versions.end(), version) != versions.end()) chosen.push_back(version);
      }
      return chosen;
    }
  }
  return {};
}

std::string ModelConfig::parameter(const std::string& key, const std::string& fallback) const {
  const auto found = parameters.find(key);
  return found == parameters.end() ? fallback : found->second;
}

const TensorConfig* ModelConfig::find_input(std::string_view tensor_name) const {
  for (const TensorConfig& tensor : inputs) {
    if (tensor.name == tensor_name) return &tensor;
  }
  return nullptr;
}

const TensorConfig* ModelConfig::find_output(std::string_view tensor_name) const {
  for (const TensorConfig& tensor : outputs) {
    if (tensor.name == tensor_name) return &tensor;
  }
  return nullptr;
}

nlohmann::json ModelConfig::to_json() const {
  nlohmann::json json = {{"name", name}, {"platform", platform}, {"backend", backend},
                         {"max_batch_size", max_batch_size}};
  json["input"] = nlohmann::json::array();
  for (const TensorConfig& tensor : inputs) json["input"].push_back(tensor_json(tensor));
  json["output"] = nlohmann::json::array();
  for (const TensorConfig& tensor : outputs) json["output"].push_back(tensor_json(tensor));
  if (dynamic_batching) {
    json["dynamic_batching"] = {
        {"preferred_batch_size", dynamic_batching->preferred_batch_size},
        {"max_queue_delay_microseconds", std::to_string(dynamic_batching->max_queue_delay_microseconds)},
        {"default_queue_policy",
         {{"max_queue_size", dynamic_batching->max_queue_size},
          {"default_timeout_microseconds", std::to_string(dynamic_batching->default_timeout_microseconds)}}}};
  }
  json["instance_group"] = nlohmann::json::array({{{"count", instance_count}, {"kind", instance_kind}}});
  switch (version_policy.kind) {
    case VersionPolicy::Kind::kLatest:
      json["version_policy"] = {{"latest", {{"num_versions", version_policy.num_versions}}}};
      break;
    case VersionPolicy::Kind::kAll:
      json["version_policy"] = {{"all", nlohmann::json::object()}};
      break;
    case VersionPolicy::Kind::kSpecific: {
      nlohmann::json versions = nlohmann::json::array();
      for (int64_t version : version_policy.versions) versions.push_back(std::to_string(version));
      json["version_policy"] = {{"specific", {{"versions", versions}}}};
      break;
    }
  }
  nlohmann::json parameters_json = nlohmann::json::object();
  for (const auto& [key, value] : parameters) parameters_json[key] = {{"string_value", value}};
  json["parameters"] = parameters_json;
  return json;
}

ModelConfig parse_model_config(std::string_view text, const std::string& source) {
  return Mapper(source).map(TextParser(text, source).parse_document());
}

std::optional<StoreSource> store_source(const ModelConfig& config, const std::filesystem::path& model_folder,
                                        const std::string& source) {
  const auto roots = config.parameters.find(kStoreRootsParameter);
  if (roots == config.parameters.end()) {
    check<FormatError>(config.parameters.count(kStorePollParameter) == 0, source, ": parameter ",
                       kStorePollParameter, " needs ", kStoreRootsParameter);
    return std::nullopt;
  }
  StoreSource store;
  const std::string& text = roots->second;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    if (comma > start) {
      const std::filesystem::path root = text.substr(start, comma - start);
      store.roots.push_back((root.is_absolute() ? root : model_folder / root).lexically_normal());
    }
    start = comma + 1;
  }
  check<FormatError>(!store.roots.empty(), source, ": parameter ", kStoreRootsParameter, " \"", text,
                     "\" names no root (expected comma-separated folders)");
  const std::string poll = config.parameter(kStorePollParameter, "0");
  int64_t milliseconds = -1;
  auto [end, error] = std::from_chars(poll.data(), poll.data() + poll.size(), milliseconds);
  check<FormatError>(error == std::errc() && end == poll.data() + poll.size() && milliseconds >= 0, source,
                     ": parameter ", kStorePollParameter, " must be an integer >= 0 (milliseconds), got \"", poll,
                     "\"");
  store.poll_interval = std::chrono::milliseconds(milliseconds);
  return store;
}

}  // namespace scalebert::serve
