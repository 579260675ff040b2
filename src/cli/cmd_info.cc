// `scalebert info MODEL_DIR`: what a model folder holds, in words or as JSON.
#include <cinttypes>
#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "io/model_files.h"
#include "io/safetensors.h"

namespace scalebert::cli {

namespace {

std::string megabytes(uint64_t bytes) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.1f MB", static_cast<double>(bytes) / 1e6);
  return buffer;
}

std::string thousands(int64_t value) {
  std::string digits = std::to_string(value);
  for (int i = static_cast<int>(digits.size()) - 3; i > 0; i -= 3) digits.insert(static_cast<size_t>(i), 1, ',');
  return digits;
}

}  // namespace

int run_info(std::span<char* const> arguments) {
  ArgParser args("info", "Summarize a Hugging Face BERT model folder: config, task head, labels, parameter count, "
                         "weight files and tokenizer.");
  args.positional("MODEL_DIR", "folder with config.json, model.safetensors (or shards) and vocab.txt, or a "
                                "checkpoint store locator store:ROOT[,ROOT...][@VERSION]")
      .flag("json", "print one JSON object instead of text")
      .common_options();
  if (!args.parse(arguments)) return 0;
  auto pipeline = pipeline::TextPipeline::load(args.positional_value("MODEL_DIR"), pipeline_options(args));
  const BertModel& model = pipeline->model();
  const BertConfig& config = model.config;

  // Stored tensors, their dtypes and the files they are in.
  WeightStore store = WeightStore::open(model.directory);
  std::map<std::string, int64_t> stored_dtypes;  // dtype name -> tensor count
  for (const std::string& name : store.names()) stored_dtypes[store.info(name).dtype_name] += 1;
  uint64_t file_bytes = 0;
  nlohmann::json files = nlohmann::json::array();
  for (const auto& file : store.files()) {
    const uint64_t size = std::filesystem::file_size(file);
    file_bytes += size;
    files.push_back({{"file", file.filename().string()}, {"bytes", size}});
  }
  const int64_t parameters = model.parameters.parameter_count();
  const auto tensors = static_cast<int64_t>(model.parameters.entries().size());
  const auto& tokenizer = pipeline->tokenizer();
  std::string pooling = pipeline->declared_pooling() ? std::string(pipeline::pooling_name(*pipeline->declared_pooling()))
                                                     : std::string();

  Output out("-");
  if (args.flag_set("json")) {
    nlohmann::json json = {
        {"directory", model.directory.string()},
        {"source", pipeline->source()},
        {"store_version", pipeline->store_version() ? nlohmann::json(*pipeline->store_version()) : nlohmann::json()},
        {"model_type", config.model_type},
        {"architectures", config.architectures},
        {"head", task_head_name(model.head)},
        {"labels", pipeline->labels()},
        {"num_labels", model.num_labels},
        {"has_pooler", model.has_pooler},
        {"num_hidden_layers", config.num_hidden_layers},
        {"hidden_size", config.hidden_size},
        {"num_attention_heads", config.num_attention_heads},
        {"intermediate_size", config.intermediate_size},
        {"hidden_act", activation_name(config.hidden_act)},
        {"max_position_embeddings", config.max_position_embeddings},
        {"type_vocab_size", config.type_vocab_size},
        {"vocab_size", config.vocab_size},
        {"tokenizer_vocab_size", tokenizer.vocab().size()},
        {"lowercase", tokenizer.options().lowercase},
        {"parameters", parameters},
        {"tensors", tensors},
        {"parameter_bytes_f32", parameters * 4},
        {"stored_tensors", store.names().size()},
        {"stored_dtypes", stored_dtypes},
        {"files", files},
        {"file_bytes", file_bytes},
        {"unused_tensors", model.unused_tensors},
        {"default_max_length", pipeline->max_length()},
        {"pooling", pooling.empty() ? nlohmann::json() : nlohmann::json(pooling)},
        {"normalize", pipeline->declared_normalize()},
    };
    out.write(json.dump(2) + "\n");
    out.close();
    return 0;
  }

  std::string labels;
  for (const std::string& label : pipeline->labels()) labels += (labels.empty() ? "" : ", ") + label;
  std::string dtypes;
  for (const auto& [dtype, count] : stored_dtypes) dtypes += str_cat(dtypes.empty() ? "" : ", ", count, " ", dtype);
  std::string file_list;
  for (const auto& file : files) {
    file_list += str_cat(file_list.empty() ? "" : ", ", file["file"].get<std::string>(), " (",
                         megabytes(file["bytes"].get<uint64_t>()), ")");
  }
  std::string architectures;
  for (const std::string& name : config.architectures) architectures += (architectures.empty() ? "" : ", ") + name;

  std::string text;
  // A store locator is read through a temporary folder: name the locator and version, not the folder.
  if (pipeline->store_version()) {
    text += str_cat("model        ", pipeline->source(), " (store version ", *pipeline->store_version(), ")\n");
  } else {
    text += str_cat("model        ", model.directory.string(), "\n");
  }
  text += str_cat("type         ", config.model_type, architectures.empty() ? "" : " (" + architectures + ")", "\n");
  text += str_cat("head         ", task_head_name(model.head), model.has_pooler ? ", with pooler" : ", no pooler", "\n");
  if (!labels.empty()) text += str_cat("labels       ", labels, "\n");
  text += str_cat("encoder      ", config.num_hidden_layers, " layers, hidden ", config.hidden_size, ", ",
                  config.num_attention_heads, " heads of ", config.head_size(), ", intermediate ",
                  config.intermediate_size, ", ", activation_name(config.hidden_act), "\n");
  text += str_cat("positions    ", config.max_position_embeddings, ", token types ", config.type_vocab_size, "\n");
  text += str_cat("vocabulary   ", config.vocab_size, " (tokenizer: ", tokenizer.vocab().size(), " tokens, ",
                  tokenizer.options().lowercase ? "uncased" : "cased", ")\n");
  text += str_cat("parameters   ", thousands(parameters), " in ", tensors, " tensors (", megabytes(parameters * 4),
                  " as F32)\n");
  text += str_cat("weights      ", file_list, "; ", store.names().size(), " stored tensors (", dtypes, ")\n");
  if (!model.unused_tensors.empty()) {
    text += str_cat("unused       ", model.unused_tensors.size(), " stored tensors not used (e.g. ",
                    model.unused_tensors.front(), ")\n");
  }
  text += str_cat("max length   ", pipeline->max_length(), " tokens by default\n");
  if (!pooling.empty()) {
    text += str_cat("sentence     ", pooling, " pooling", pipeline->declared_normalize() ? ", normalized" : "",
                    " (sentence-transformers folder)\n");
  }
  out.write(text);
  out.close();
  return 0;
}

}  // namespace scalebert::cli
