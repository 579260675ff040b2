// Recipe JSON, reading it from a model file, and mapping it to a PrecisionPlan.
#include "quant/recipe.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"

namespace scalebert::quant {

using nlohmann::json;

std::string QuantizationRecipe::to_json() const {
  json layer_entries = json::object();
  for (const auto& [name, layer] : layers) {
    json entry = {{"dtype", std::string(kernels::precision_name(layer.precision))}};
    if (layer.input_scale > 0.0f) entry["input_scale"] = layer.input_scale;
    layer_entries[name] = entry;
  }
  json result = {{"version", version},
                 {"dtype", std::string(kernels::precision_name(dtype))},
                 {"activations", static_activations ? "static" : "dynamic"},
                 {"embeddings", int8_embeddings ? "int8" : "f32"},
                 {"head", head},
                 {"num_labels", num_labels},
                 {"pooler", pooler},
                 {"calibration", calibration},
                 {"layers", layer_entries}};
  return result.dump();
}

QuantizationRecipe QuantizationRecipe::from_json(const std::string& text, const std::string& source) {
  json parsed = json::parse(text, nullptr, false);
  check<FormatError>(parsed.is_object(), source, ": quantization recipe is not a JSON object");
  auto field = [&](const char* name) -> const json& {
    check<FormatError>(parsed.contains(name), source, ": quantization recipe lacks \"", name, "\"");
    return parsed[name];
  };
  auto string_field = [&](const char* name) {
    const json& value = field(name);
    check<FormatError>(value.is_string(), source, ": quantization recipe field \"", name, "\" is not a string");
    return value.get<std::string>();
  };
  auto precision = [&](const std::string& name, const std::string& where) {
    try {
      return kernels::precision_from_name(name);
    } catch (const InvalidArgument&) {
      throw FormatError(str_cat(source, ": quantization recipe ", where, " has unknown dtype \"", name, "\""));
    }
  };
  QuantizationRecipe recipe;
  check<FormatError>(field("version").is_number_integer(), source, ": recipe version is not an integer");
  recipe.version = field("version").get<int>();
  check<FormatError>(recipe.version >= 1 && recipe.version <= kRecipeVersion, source, ": quantization recipe version ",
                     recipe.version, " is not supported (this build reads up to ", kRecipeVersion, ")");
  recipe.dtype = precision(string_field("dtype"), "dtype");
  const std::string activations = string_field("activations");
  check<FormatError>(activations == "dynamic" || activations == "static", source,
                     ": recipe activations must be dynamic or static, got \"", activations, "\"");
  recipe.static_activations = activations == "static";
  recipe.int8_embeddings = string_field("embeddings") == "int8";
  recipe.head = string_field("head");
  check<FormatError>(field("num_labels").is_number_integer(), source, ": recipe num_labels is not an integer");
  recipe.num_labels = field("num_labels").get<int64_t>();
  check<FormatError>(field("pooler").is_boolean(), source, ": recipe pooler is not a boolean");
  recipe.pooler = field("pooler").get<bool>();
  if (parsed.contains("calibration") && parsed["calibration"].is_string()) {
    recipe.calibration = parsed["calibration"].get<std::string>();
  }
  const json& layer_entries = field("layers");
  check<FormatError>(layer_entries.is_object(), source, ": recipe layers is not an object");
  for (const auto& [name, entry] : layer_entries.items()) {
    check<FormatError>(entry.is_object() && entry.contains("dtype") && entry["dtype"].is_string(), source,
                       ": recipe layer ", name, " lacks a dtype");
    LayerRecipe layer;
    layer.precision = precision(entry["dtype"].get<std::string>(), str_cat("layer ", name));
    if (entry.contains("input_scale")) {
      check<FormatError>(entry["input_scale"].is_number() && entry["input_scale"].get<double>() > 0.0, source,
                         ": recipe layer ", name, " has an input_scale that is not a positive number");
      layer.input_scale = entry["input_scale"].get<float>();
    }
    recipe.layers[name] = layer;
  }
  return recipe;
}

std::optional<QuantizationRecipe> read_recipe(const std::filesystem::path& directory) {
  const std::filesystem::path file =
      std::filesystem::is_directory(directory) ? directory / "model.safetensors" : directory;
  if (file.extension() != ".safetensors" || !std::filesystem::is_regular_file(file)) return std::nullopt;
  const SafetensorsFile weights = SafetensorsFile::open(file);
  auto found = weights.metadata().find(kRecipeMetadataKey);
  if (found == weights.metadata().end()) return std::nullopt;
  return QuantizationRecipe::from_json(found->second, file.string());
}

std::string plan_key(const std::string& linear) {
  for (const char* part : {".attention.self.query", ".attention.self.key", ".attention.self.value"}) {
    const std::string suffix(part);
    if (linear.size() > suffix.size() && linear.compare(linear.size() - suffix.size(), suffix.size(), suffix) == 0) {
      return linear.substr(0, linear.size() - suffix.size()) + ".attention.self";
    }
  }
  return linear;
}

PrecisionPlan precision_plan(const QuantizationRecipe& recipe) {
  PrecisionPlan plan;
  std::map<std::string, int> parts;  // how many of a plan key's Linears are low precision
  for (const auto& [name, layer] : recipe.layers) {
    const std::string key = plan_key(name);
    const bool fused = key != name;
    if (layer.precision == kernels::Precision::kF32) {
      if (fused) parts[key] = -100;  // one f32 part keeps the fused product f32
      continue;
    }
    LinearPrecision& entry = plan.layers[key];
    entry.precision = layer.precision;
    entry.input_scale = std::max(entry.input_scale, layer.input_scale);
    if (fused) ++parts[key];
  }
  for (const auto& [key, count] : parts) {
    if (count != 3) plan.layers.erase(key);
  }
  return plan;
}

std::vector<std::string> linear_names(const BertModel& model) {
  std::vector<std::string> names;
  for (int64_t layer = 0; layer < model.config.num_hidden_layers; ++layer) {
    for (const char* part : {"attention.self.query", "attention.self.key", "attention.self.value",
                             "attention.output.dense", "intermediate.dense", "output.dense"}) {
      names.push_back(layer_parameter(layer, part));
    }
  }
  if (model.has_pooler) names.push_back("pooler.dense");
  switch (model.head) {
    case TaskHead::kSequenceClassification:
    case TaskHead::kTokenClassification: names.push_back("classifier"); break;
    case TaskHead::kQuestionAnswering: names.push_back("qa_outputs"); break;
    case TaskHead::kMaskedLM: names.push_back("cls.predictions.transform.dense"); break;
    case TaskHead::kNone: break;
  }
  return names;
}

}  // namespace scalebert::quant
