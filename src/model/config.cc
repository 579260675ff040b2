// Parsing, validation and writing of BERT's config.json.
#include "model/config.h"

#include <charconv>
#include <cmath>
#include <set>

#include "core/error.h"
#include "io/file_util.h"

namespace scalebert {

namespace {

using Json = nlohmann::json;

// Keys this struct owns: removed from `extra` on parse and written from the fields.
const std::set<std::string> kOwnedKeys = {
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "max_position_embeddings", "hidden_act", "type_vocab_size", "layer_norm_eps", "pad_token_id",
    "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "model_type",
    "architectures", "id2label", "label2id", "num_labels", "position_embedding_type"};

[[noreturn]] void fail(const std::string& source, std::string_view key, const std::string& what) {
  throw FormatError(str_cat(source, ": \"", key, "\" ", what));
}

// Integer key; `required` keys without a value are an error, others keep `fallback`.
int64_t read_int(const Json& json, const std::string& source, const char* key, bool required,
                 int64_t fallback) {
  if (!json.contains(key)) {
    if (required) fail(source, key, "is required but missing");
    return fallback;
  }
  const Json& value = json.at(key);
  if (!value.is_number_integer()) fail(source, key, str_cat("must be an integer, got ", value.dump()));
  if (value.is_number_unsigned() && value.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    fail(source, key, str_cat("is out of range: ", value.dump()));
  }
  return value.get<int64_t>();
}

double read_number(const Json& json, const std::string& source, const char* key, double fallback) {
  if (!json.contains(key)) return fallback;
  const Json& value = json.at(key);
  if (!value.is_number()) fail(source, key, str_cat("must be a number, got ", value.dump()));
  return value.get<double>();
}

std::string read_string(const Json& json, const std::string& source, const char* key,
                        const std::string& fallback) {
  if (!json.contains(key)) return fallback;
  const Json& value = json.at(key);
  if (!value.is_string()) fail(source, key, str_cat("must be a string, got ", value.dump()));
  return value.get<std::string>();
}

// id2label keys are decimal strings ("0", "1", ...) in JSON.
int64_t parse_label_index(const std::string& text, const std::string& source) {
  int64_t index = -1;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), index);
  if (error != std::errc() || end != text.data() + text.size() || text.empty()) {
    fail(source, "id2label", str_cat("key \"", text, "\" is not a label index"));
  }
  return index;
}

}  // namespace

Activation hidden_act_from_name(std::string_view name, std::string_view source) {
  if (name == "gelu") return Activation::kGeluErf;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") {
    return Activation::kGeluTanh;  // gelu_fast is the same tanh formula with the constant folded
  }
  if (name == "relu") return Activation::kRelu;
  throw FormatError(str_cat(source, ": \"hidden_act\" \"", name,
                            "\" is not supported (gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu)"));
}

int64_t BertConfig::label_id(std::string_view label) const {
  for (size_t i = 0; i < id2label.size(); ++i) {
    if (id2label[i] == label) return static_cast<int64_t>(i);
  }
  throw InvalidArgument(str_cat("unknown label \"", label, "\" (", id2label.size(), " labels)"));
}

BertConfig BertConfig::from_json(const Json& json, const std::string& source) {
  if (!json.is_object()) {
    throw FormatError(str_cat(source, ": config must be a JSON object, got ", json.type_name()));
  }
  BertConfig config;
  config.model_type = read_string(json, source, "model_type", "bert");
  if (config.model_type != "bert") {
    throw Unsupported(str_cat(source, ": \"model_type\" \"", config.model_type,
                              "\" is not supported; ScaleBERT runs \"bert\" models"));
  }
  const std::string position_type = read_string(json, source, "position_embedding_type", "absolute");
  if (position_type != "absolute") {
    throw Unsupported(str_cat(source, ": \"position_embedding_type\" \"", position_type,
                              "\" is not supported; only \"absolute\" is"));
  }
  for (const char* flag : {"is_decoder", "add_cross_attention"}) {
    if (!json.contains(flag)) continue;
    const Json& value = json.at(flag);
    if (!value.is_boolean()) fail(source, flag, str_cat("must be true or false, got ", value.dump()));
    if (value.get<bool>()) {
      throw Unsupported(str_cat(source, ": \"", flag, "\" is true; ScaleBERT runs encoders only"));
    }
  }

  config.vocab_size = read_int(json, source, "vocab_size", true, 0);
  config.hidden_size = read_int(json, source, "hidden_size", true, 0);
  config.num_hidden_layers = read_int(json, source, "num_hidden_layers", true, 0);
  config.num_attention_heads = read_int(json, source, "num_attention_heads", true, 0);
  config.intermediate_size = read_int(json, source, "intermediate_size", true, 0);
  config.max_position_embeddings = read_int(json, source, "max_position_embeddings", true, 0);
  config.type_vocab_size = read_int(json, source, "type_vocab_size", false, 2);
  if (json.contains("pad_token_id") && json.at("pad_token_id").is_null()) {
    config.pad_token_id = -1;
  } else {
    config.pad_token_id = read_int(json, source, "pad_token_id", false, 0);
  }
  config.layer_norm_eps = read_number(json, source, "layer_norm_eps", 1e-12);
  config.hidden_dropout_prob = read_number(json, source, "hidden_dropout_prob", 0.1);
  config.attention_probs_dropout_prob = read_number(json, source, "attention_probs_dropout_prob", 0.1);
  config.initializer_range = read_number(json, source, "initializer_range", 0.02);
  config.hidden_act = hidden_act_from_name(read_string(json, source, "hidden_act", "gelu"), source);

  if (json.contains("architectures") && !json.at("architectures").is_null()) {
    const Json& list = json.at("architectures");
    if (!list.is_array()) fail(source, "architectures", str_cat("must be a list, got ", list.dump()));
    for (const Json& item : list) {
      if (!item.is_string()) {
        fail(source, "architectures", str_cat("must hold strings, got ", item.dump()));
      }
      config.architectures.push_back(item.get<std::string>());
    }
  }

  // Labels: id2label is authoritative (transformers reads num_labels from it); label2id is only
  // used when id2label is absent. Fine-tuned checkpoints in the wild often carry a stale default
  // label2id beside a real id2label, so content disagreements are tolerated, count ones are not.
  if (json.contains("id2label") && !json.at("id2label").is_null()) {
    const Json& map = json.at("id2label");
    if (!map.is_object()) fail(source, "id2label", str_cat("must be an object, got ", map.dump()));
    const int64_t count = static_cast<int64_t>(map.size());
    config.id2label.assign(static_cast<size_t>(count), std::string());
    for (const auto& [key, value] : map.items()) {
      int64_t index = parse_label_index(key, source);
      if (index < 0 || index >= count) {
        fail(source, "id2label", str_cat("key \"", key, "\" is outside 0..", count - 1,
                                         " (labels must be numbered densely from 0)"));
      }
      if (!value.is_string()) {
        fail(source, "id2label", str_cat("value for \"", key, "\" must be a string, got ", value.dump()));
      }
      config.id2label[static_cast<size_t>(index)] = value.get<std::string>();
    }
    if (json.contains("label2id") && json.at("label2id").is_object() &&
        static_cast<int64_t>(json.at("label2id").size()) != count) {
      fail(source, "label2id", str_cat("has ", json.at("label2id").size(), " labels but id2label has ",
                                       count));
    }
  } else if (json.contains("label2id") && !json.at("label2id").is_null()) {
    const Json& map = json.at("label2id");
    if (!map.is_object()) fail(source, "label2id", str_cat("must be an object, got ", map.dump()));
    const int64_t count = static_cast<int64_t>(map.size());
    config.id2label.assign(static_cast<size_t>(count), std::string());
    std::vector<bool> filled(static_cast<size_t>(count), false);
    for (const auto& [label, value] : map.items()) {
      if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<int64_t>() >= count ||
          filled[value.get<size_t>()]) {
        fail(source, "label2id", str_cat("value for \"", label, "\" must be a distinct index in 0..",
                                         count - 1, ", got ", value.dump()));
      }
      filled[value.get<size_t>()] = true;
      config.id2label[value.get<size_t>()] = label;
    }
  }
  if (json.contains("num_labels")) {
    int64_t stated = read_int(json, source, "num_labels", false, 0);
    if (config.id2label.empty()) {
      if (stated < 0) fail(source, "num_labels", str_cat("must be non-negative, got ", stated));
      for (int64_t i = 0; i < stated; ++i) config.id2label.push_back(str_cat("LABEL_", i));
    } else if (stated != config.num_labels()) {
      fail(source, "num_labels", str_cat(stated, " disagrees with the ", config.num_labels(),
                                         " labels of id2label"));
    }
  }

  for (const auto& [key, value] : json.items()) {
    if (!kOwnedKeys.count(key)) config.extra[key] = value;
  }
  config.validate(source);
  return config;
}

void BertConfig::validate(const std::string& source) const {
  const std::pair<const char*, int64_t> positive[] = {
      {"vocab_size", vocab_size},
      {"hidden_size", hidden_size},
      {"num_hidden_layers", num_hidden_layers},
      {"num_attention_heads", num_attention_heads},
      {"intermediate_size", intermediate_size},
      {"max_position_embeddings", max_position_embeddings},
      {"type_vocab_size", type_vocab_size}};
  for (const auto& [key, value] : positive) {
    if (value <= 0) fail(source, key, str_cat("must be positive, got ", value));
  }
  if (hidden_size % num_attention_heads != 0) {
    fail(source, "hidden_size", str_cat(hidden_size, " is not divisible by num_attention_heads ",
                                        num_attention_heads));
  }
  if (!(layer_norm_eps > 0) || !std::isfinite(layer_norm_eps)) {
    fail(source, "layer_norm_eps", str_cat("must be a positive number, got ", layer_norm_eps));
  }
  if (pad_token_id >= vocab_size || pad_token_id < -1) {
    fail(source, "pad_token_id", str_cat(pad_token_id, " is outside the vocabulary of ", vocab_size));
  }
  const std::pair<const char*, double> probabilities[] = {
      {"hidden_dropout_prob", hidden_dropout_prob},
      {"attention_probs_dropout_prob", attention_probs_dropout_prob}};
  for (const auto& [key, value] : probabilities) {
    if (!(value >= 0 && value < 1)) fail(source, key, str_cat("must be in [0, 1), got ", value));
  }
  if (!(initializer_range >= 0) || !std::isfinite(initializer_range)) {
    fail(source, "initializer_range", str_cat("must be a non-negative number, got ", initializer_range));
  }
  if (model_type != "bert") {
    throw Unsupported(str_cat(source, ": \"model_type\" \"", model_type, "\" is not supported"));
  }
}

Json BertConfig::to_json() const {
  Json json = extra.is_object() ? extra : Json::object();
  json["model_type"] = model_type;
  if (!architectures.empty()) json["architectures"] = architectures;
  json["vocab_size"] = vocab_size;
  json["hidden_size"] = hidden_size;
  json["num_hidden_layers"] = num_hidden_layers;
  json["num_attention_heads"] = num_attention_heads;
  json["intermediate_size"] = intermediate_size;
  json["hidden_act"] = std::string(activation_name(hidden_act));
  json["max_position_embeddings"] = max_position_embeddings;
  json["type_vocab_size"] = type_vocab_size;
  json["layer_norm_eps"] = layer_norm_eps;
  json["pad_token_id"] = pad_token_id >= 0 ? Json(pad_token_id) : Json(nullptr);
  json["hidden_dropout_prob"] = hidden_dropout_prob;
  json["attention_probs_dropout_prob"] = attention_probs_dropout_prob;
  json["initializer_range"] = initializer_range;
  json["position_embedding_type"] = "absolute";
  if (!id2label.empty()) {
    Json id_to_label = Json::object();
    Json label_to_id = Json::object();
    for (size_t i = 0; i < id2label.size(); ++i) {
      id_to_label[std::to_string(i)] = id2label[i];
      label_to_id[id2label[i]] = static_cast<int64_t>(i);
    }
    json["id2label"] = std::move(id_to_label);
    json["label2id"] = std::move(label_to_id);
  }
  return json;
}

BertConfig BertConfig::from_file(const std::filesystem::path& path) {
  std::filesystem::path file = path;
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) file = path / "config.json";
  const std::string text = read_file(file);
  const std::string source = file.string();
  Json json;
  try {
    json = Json::parse(text);
  } catch (const Json::exception& parse_error) {
    throw FormatError(str_cat(source, ": not valid JSON: ", parse_error.what()));
  }
  return from_json(json, source);
}

void BertConfig::save(const std::filesystem::path& path) const {
  write_file_atomic(path, to_json().dump(2) + "\n");
}

}  // namespace scalebert
