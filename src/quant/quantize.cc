// Writing quantized model folders.
#include "quant/quantize.h"

#include <chrono>
#include <cstring>

#include "core/error.h"
#include "io/model_files.h"
#include "io/safetensors.h"
#include "io/store/model_checkpoint.h"
#include "kernels/cpu/quantize_rows.h"
#include "quant/calibration.h"
#include "quant/quantized_model.h"
#include "text/bert_tokenizer.h"

namespace scalebert::quant {

namespace fs = std::filesystem;

namespace {

// Weight files of a checkpoint folder: not copied (the quantized model.safetensors replaces them).
bool is_weight_file(const fs::path& path) {
  const std::string name = path.filename().string();
  for (const char* suffix : {".safetensors", ".bin", ".h5", ".msgpack", ".ckpt", ".onnx", ".ot", ".pt", ".pth"}) {
    const std::string text(suffix);
    if (name.size() >= text.size() && name.compare(name.size() - text.size(), text.size(), text) == 0) return true;
  }
  return name == "model.safetensors.index.json" || name == "pytorch_model.bin.index.json";
}

// Config, tokenizer and sentence-transformers module folders ("1_Pooling", ...): what a pipeline
// needs besides the weights.
void copy_model_files(const fs::path& from, const fs::path& to) {
  for (const fs::directory_entry& entry : fs::directory_iterator(from)) {
    const fs::path target = to / entry.path().filename();
    if (entry.is_regular_file() && !is_weight_file(entry.path())) {
      fs::copy_file(entry.path(), target, fs::copy_options::overwrite_existing);
    } else if (entry.is_directory() && !entry.path().filename().empty() &&
               std::isdigit(static_cast<unsigned char>(entry.path().filename().string()[0]))) {
      fs::create_directories(target);
      fs::copy(entry.path(), target, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    }
  }
}

uint64_t weight_bytes(const fs::path& model_dir) {
  uint64_t total = 0;
  for (const fs::directory_entry& entry : fs::directory_iterator(model_dir)) {
    if (entry.is_regular_file() && entry.path().extension() == ".safetensors") total += entry.file_size();
  }
  return total;
}

// (rows, columns) F32 -> I8 tensor and F32 scales (rows), symmetric per row.
std::pair<Tensor, Tensor> quantize_per_row(const Tensor& values) {
  const int64_t rows = values.dim(0), columns = values.dim(1);
  Tensor quantized = Tensor::empty({rows, columns}, DType::kI8);
  Tensor scales = Tensor::empty({rows}, DType::kF32);
  kernels::quantize_weight_rows(values.data<float>(), rows, columns, quantized.data<int8_t>(), scales.data<float>());
  return {quantized, scales};
}

Tensor to_bf16(const Tensor& values) {
  Tensor result = Tensor::empty(values.shape(), DType::kBF16);
  const float* source = values.data<float>();
  BFloat16* target = result.data<BFloat16>();
  for (int64_t i = 0; i < values.numel(); ++i) target[i] = float_to_bf16(source[i]);
  return result;
}

}  // namespace

bool matches_keep(const std::string& linear, const std::vector<std::string>& keep_f32) {
  for (const std::string& keep : keep_f32) {
    if (linear == keep) return true;
    if (linear.size() > keep.size() && linear.compare(0, keep.size(), keep) == 0 && linear[keep.size()] == '.') {
      return true;
    }
  }
  return false;
}

QuantizeSummary quantize_model(const fs::path& model_dir, const fs::path& out_dir, const QuantizeOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  check(options.dtype != kernels::Precision::kF32, "quantize needs --dtype int8 or bf16 (f32 is the source)");
  if (std::optional<QuantizationRecipe> existing = read_recipe(model_dir)) {
    throw InvalidArgument(str_cat(model_dir.string(), " is already quantized (", kernels::precision_name(existing->dtype),
                                  ", ", existing->static_activations ? "static" : "dynamic",
                                  " activations); quantize the original f32 model instead"));
  }
  check(!fs::exists(out_dir) || !fs::equivalent(model_dir, out_dir), "output folder ", out_dir.string(),
        " is the model folder; choose another");
  const bool calibrate = !options.calibration_file.empty();
  check(!calibrate || options.dtype == kernels::Precision::kInt8,
        "calibration (static activation scales) applies to int8 only, not ", kernels::precision_name(options.dtype));
  if (calibrate) {
    check<IoError>(fs::is_regular_file(options.calibration_file), "calibration file ",
                   options.calibration_file.string(), " does not exist");
  }

  auto model = std::make_shared<const BertModel>(BertModel::load(model_dir));
  const std::vector<std::string> linears = linear_names(*model);
  for (const std::string& keep : options.keep_f32) {
    bool matched = false;
    for (const std::string& linear : linears) matched = matched || matches_keep(linear, {keep});
    if (!matched) {
      std::string known;
      for (const std::string& linear : linears) known += (known.empty() ? "" : ", ") + linear;
      throw InvalidArgument(str_cat("--keep-f32 ", keep, " matches no Linear layer of ", model_dir.string(),
                                    "; layers: ", known));
    }
  }

  QuantizeSummary summary;
  QuantizationRecipe& recipe = summary.recipe;
  recipe.dtype = options.dtype;
  recipe.static_activations = calibrate;
  recipe.int8_embeddings = options.dtype == kernels::Precision::kInt8 && options.int8_embeddings;
  recipe.head = std::string(task_head_name(model->head));
  recipe.num_labels = model->num_labels;
  recipe.pooler = model->has_pooler;

  std::map<std::string, float> ranges;
  if (calibrate) {
    const std::vector<std::string> texts =
        read_sample_texts(options.calibration_file, options.calibration_samples, options.text_column);
    auto tokenizer = text::BertTokenizer::from_model_dir(model_dir);
    const int64_t max_length = std::min(options.max_length, model->config.max_position_embeddings);
    ranges = calibrate_input_ranges(model, encode_samples(*tokenizer, texts, max_length));
    recipe.calibration = str_cat(options.calibration_file.filename().string(), ", ", texts.size(), " samples, max |x|");
  }
  for (const std::string& linear : linears) {
    LayerRecipe layer;
    if (!matches_keep(linear, options.keep_f32)) {
      layer.precision = options.dtype;
      if (calibrate) {
        const float range = ranges.count(plan_key(linear)) ? ranges.at(plan_key(linear)) : 0.0f;
        // An input that was zero on every sample still needs a positive scale.
        layer.input_scale = range > 0.0f ? range / kernels::kInt8Max : 1.0f;
      }
      ++summary.layers_low_precision;
    } else {
      ++summary.layers_f32;
    }
    recipe.layers[linear] = layer;
  }

  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const ParameterEntry& entry : model->parameters.entries()) {
    const Tensor values = model->parameters.get(entry.name);
    const std::string suffix = ".weight";
    const bool is_weight = entry.name.size() > suffix.size() &&
                           entry.name.compare(entry.name.size() - suffix.size(), suffix.size(), suffix) == 0;
    const std::string linear = is_weight ? entry.name.substr(0, entry.name.size() - suffix.size()) : "";
    auto found = is_weight ? recipe.layers.find(linear) : recipe.layers.end();
    const bool int8_tensor =
        (found != recipe.layers.end() && found->second.precision == kernels::Precision::kInt8) ||
        (recipe.int8_embeddings && entry.name == "embeddings.word_embeddings.weight");
    if (int8_tensor) {
      auto [quantized, scales] = quantize_per_row(values);
      tensors.emplace_back(entry.name, quantized);
      tensors.emplace_back(entry.name + kScaleSuffix, scales);
    } else if (found != recipe.layers.end() && found->second.precision == kernels::Precision::kBF16) {
      tensors.emplace_back(entry.name, to_bf16(values));
    } else {
      tensors.emplace_back(entry.name, values);
    }
  }
  fs::create_directories(out_dir);
  copy_model_files(model_dir, out_dir);
  const fs::path weights_path = out_dir / "model.safetensors";
  save_safetensors(weights_path, tensors, {{"format", "pt"}, {kRecipeMetadataKey, recipe.to_json()}});
  summary.input_bytes = weight_bytes(model_dir);
  summary.output_bytes = fs::file_size(weights_path);
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

store::SaveResult save_quantized_model(store::CheckpointStore& store, const fs::path& directory,
                                       const store::SaveOptions& options, const nlohmann::json& extra) {
  const std::optional<QuantizationRecipe> recipe = read_recipe(directory);
  check(recipe.has_value(), directory.string(), " is not a quantized model (its model.safetensors carries no \"",
        kRecipeMetadataKey, "\" recipe)");
  load_model(directory);  // every tensor's name, dtype, shape and scale checked
  nlohmann::json tagged = extra.is_object() ? extra : nlohmann::json::object();
  tagged["producer"] = "scalebert quantize";
  tagged["quantization"] = nlohmann::json::parse(recipe->to_json());
  return store::save_model_files(store, directory, recipe->head, options, tagged);
}

}  // namespace scalebert::quant
