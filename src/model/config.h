// BERT hyper-parameters as Hugging Face's config.json states them: parsed with every field
// checked (file, key and value named in each error) and written back so that transformers can
// load what ScaleBERT saves.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/cpu/activations.h"

namespace scalebert {

// The feed-forward activation is the kernels' enum (one definition for the model, the inference
// plan and the training graph); kernels::activation_name gives the name written back to
// config.json ("gelu", "gelu_new" or "relu").
using kernels::Activation;

// Maps a config.json hidden_act to the activations the encoder runs (gelu, gelu_new,
// gelu_pytorch_tanh, gelu_fast, relu); throws FormatError naming the value and `source` otherwise.
Activation hidden_act_from_name(std::string_view name, std::string_view source = "config");

struct BertConfig {
  // Required keys (no default: a config without them does not describe a model).
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t intermediate_size = 0;
  int64_t max_position_embeddings = 0;
  // Optional keys, with transformers' BertConfig defaults.
  Activation hidden_act = Activation::kGeluErf;
  int64_t type_vocab_size = 2;
  double layer_norm_eps = 1e-12;
  int64_t pad_token_id = 0;
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  double initializer_range = 0.02;
  // Only "bert" is accepted: the BERT-like types (roberta, xlm-roberta, camembert offset position
  // ids by pad+1; distilbert, electra, albert, megatron-bert name or arrange weights differently)
  // would load without error and then compute the wrong thing, so they are refused (Unsupported)
  // rather than accepted with a warning. A config without model_type (Google's original
  // bert_config.json) is taken as "bert".
  std::string model_type = "bert";
  std::vector<std::string> architectures;  // e.g. {"BertForSequenceClassification"}
  // Labels of a classification head: id2label[i] is label i. Empty when the config has none
  // (a base model); then the head's weight shape decides the count.
  std::vector<std::string> id2label;
  // Every other key of the file, kept so that to_json() writes it back unchanged
  // (torch_dtype, transformers_version, classifier_dropout, ...).
  nlohmann::json extra = nlohmann::json::object();

  int64_t head_size() const { return hidden_size / num_attention_heads; }
  int64_t num_labels() const { return static_cast<int64_t>(id2label.size()); }
  // Index of `label`; throws InvalidArgument naming it when absent.
  int64_t label_id(std::string_view label) const;

  // Parses and validates a config.json object; `source` (normally the file name) appears in every
  // error. Throws FormatError for a missing required key, a value of the wrong JSON type, a
  // non-positive size, hidden_size not divisible by num_attention_heads, an unknown hidden_act,
  // id2label keys that are not 0..n-1, or label2id disagreeing with id2label; Unsupported for a
  // model_type other than "bert", position_embedding_type other than "absolute", or is_decoder.
  static BertConfig from_json(const nlohmann::json& json, const std::string& source = "config");
  // Reads `path` (a config.json, or a model directory containing one). IoError when unreadable.
  static BertConfig from_file(const std::filesystem::path& path);

  // Checks the invariants above on a config built in code; FormatError naming `source`.
  void validate(const std::string& source = "config") const;

  // config.json content: the extra keys, then every field above, id2label and label2id (string
  // keys, as transformers writes them), position_embedding_type "absolute".
  nlohmann::json to_json() const;
  // Writes to_json() (indented) atomically to `path`.
  void save(const std::filesystem::path& path) const;
};

}  // namespace scalebert
