// Loading a Hugging Face BERT directory into a parameter table, and head detection.
#include "model/bert_model.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "io/model_files.h"

namespace scalebert {

std::string_view task_head_name(TaskHead head) {
  switch (head) {
    case TaskHead::kNone: return "none";
    case TaskHead::kSequenceClassification: return "sequence-classification";
    case TaskHead::kTokenClassification: return "token-classification";
    case TaskHead::kQuestionAnswering: return "question-answering";
    case TaskHead::kMaskedLM: return "masked-lm";
  }
  return "?";
}

TaskHead task_head_from_name(std::string_view name) {
  if (name == "none" || name == "embeddings" || name == "encoder") return TaskHead::kNone;
  if (name == "sequence-classification" || name == "classification") return TaskHead::kSequenceClassification;
  if (name == "token-classification" || name == "ner") return TaskHead::kTokenClassification;
  if (name == "question-answering" || name == "qa") return TaskHead::kQuestionAnswering;
  if (name == "masked-lm" || name == "mlm") return TaskHead::kMaskedLM;
  throw InvalidArgument(str_cat("unknown task head \"", name,
                                "\" (expected none, classification, ner, qa or mlm)"));
}

std::string layer_parameter(int64_t layer, std::string_view suffix) {
  return str_cat("encoder.layer.", layer, ".", suffix);
}

void register_bert_parameters(ParameterTable& table, const BertConfig& config, TaskHead head,
                              bool with_pooler, int64_t num_labels) {
  const int64_t C = config.hidden_size;
  const int64_t I = config.intermediate_size;
  auto add_linear = [&](const std::string& prefix, int64_t out, int64_t in) {
    table.add(prefix + ".weight", {out, in}, true);
    table.add(prefix + ".bias", {out}, false);
  };
  auto add_layernorm = [&](const std::string& prefix) {
    table.add(prefix + ".weight", {C}, false);
    table.add(prefix + ".bias", {C}, false);
  };
  table.add("embeddings.word_embeddings.weight", {config.vocab_size, C}, true);
  table.add("embeddings.position_embeddings.weight", {config.max_position_embeddings, C}, true);
  table.add("embeddings.token_type_embeddings.weight", {config.type_vocab_size, C}, true);
  add_layernorm("embeddings.LayerNorm");
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    // Query, key and value weights back to back, then their biases: with C a multiple of 16 they
    // form one contiguous (3C, C) weight and (3C) bias, which training multiplies in one product.
    for (const char* part : {"query", "key", "value"}) {
      table.add(layer_parameter(layer, str_cat("attention.self.", part, ".weight")), {C, C}, true);
    }
    for (const char* part : {"query", "key", "value"}) {
      table.add(layer_parameter(layer, str_cat("attention.self.", part, ".bias")), {C}, false);
    }
    add_linear(layer_parameter(layer, "attention.output.dense"), C, C);
    add_layernorm(layer_parameter(layer, "attention.output.LayerNorm"));
    add_linear(layer_parameter(layer, "intermediate.dense"), I, C);
    add_linear(layer_parameter(layer, "output.dense"), C, I);
    add_layernorm(layer_parameter(layer, "output.LayerNorm"));
  }
  if (with_pooler) add_linear("pooler.dense", C, C);
  switch (head) {
    case TaskHead::kNone: break;
    case TaskHead::kSequenceClassification:
    case TaskHead::kTokenClassification: add_linear("classifier", num_labels, C); break;
    case TaskHead::kQuestionAnswering: add_linear("qa_outputs", 2, C); break;
    case TaskHead::kMaskedLM:
      // The decoder weight is tied to the word embeddings (not a parameter of its own).
      add_linear("cls.predictions.transform.dense", C, C);
      table.add("cls.predictions.transform.LayerNorm.weight", {C}, false);
      table.add("cls.predictions.transform.LayerNorm.bias", {C}, false);
      table.add("cls.predictions.bias", {config.vocab_size}, false);
      break;
  }
}

namespace {

bool has_architecture(const BertConfig& config, std::string_view name) {
  return std::find(config.architectures.begin(), config.architectures.end(), name) != config.architectures.end();
}

TaskHead detect_head(const BertConfig& config, const WeightStore& store) {
  if (has_architecture(config, "BertForSequenceClassification")) return TaskHead::kSequenceClassification;
  if (has_architecture(config, "BertForTokenClassification")) return TaskHead::kTokenClassification;
  if (has_architecture(config, "BertForQuestionAnswering")) return TaskHead::kQuestionAnswering;
  if (has_architecture(config, "BertForMaskedLM") || has_architecture(config, "BertForPreTraining")) {
    return TaskHead::kMaskedLM;
  }
  if (store.has("qa_outputs.weight")) return TaskHead::kQuestionAnswering;
  if (store.has("classifier.weight")) return TaskHead::kSequenceClassification;
  if (store.has("cls.predictions.bias")) return TaskHead::kMaskedLM;
  return TaskHead::kNone;
}

}  // namespace

BertModel BertModel::create(const BertConfig& config, TaskHead head, bool with_pooler, int64_t num_labels) {
  config.validate();
  BertModel model;
  model.config = config;
  model.head = head;
  model.has_pooler = with_pooler;
  model.num_labels = head == TaskHead::kQuestionAnswering ? 2 : num_labels;
  if (head == TaskHead::kSequenceClassification || head == TaskHead::kTokenClassification) {
    check(num_labels > 0, "a ", task_head_name(head), " head needs at least one label, got ", num_labels);
  }
  register_bert_parameters(model.parameters, config, head, with_pooler, model.num_labels);
  model.parameters.allocate();
  return model;
}

BertModel BertModel::load(const std::filesystem::path& directory, std::optional<TaskHead> head_override) {
  BertConfig config = BertConfig::from_file(directory);
  WeightStore store = WeightStore::open(directory);

  TaskHead head = head_override.value_or(detect_head(config, store));
  bool with_pooler = store.has("pooler.dense.weight");
  if (head == TaskHead::kSequenceClassification) {
    check<FormatError>(with_pooler, directory.string(),
                       ": a sequence-classification head needs pooler.dense.weight, which is absent");
  }
  int64_t num_labels = 0;
  if (head == TaskHead::kSequenceClassification || head == TaskHead::kTokenClassification) {
    check<FormatError>(store.has("classifier.weight"), directory.string(), ": task head ",
                       task_head_name(head), " needs classifier.weight, which is absent");
    const Shape& shape = store.info("classifier.weight").shape;
    check<FormatError>(shape.size() == 2, directory.string(), ": classifier.weight has shape ",
                       shape_string(shape), ", expected [labels, ", config.hidden_size, "]");
    num_labels = shape[0];
    check<FormatError>(config.id2label.empty() || config.num_labels() == num_labels, directory.string(),
                       ": config.json lists ", config.num_labels(), " labels but classifier.weight has ",
                       num_labels, " rows");
  }

  BertModel model = create(config, head, with_pooler, num_labels);
  model.directory = directory;
  for (const ParameterEntry& entry : model.parameters.entries()) {
    Tensor source = store.load_f32(entry.name, entry.shape);
    Tensor target = model.parameters.get(entry.name);
    std::memcpy(target.raw(), source.raw(), target.nbytes());
  }
  // Tied or derived tensors some checkpoints store: consumed on purpose.
  for (const char* tied : {"embeddings.position_ids", "cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}) {
    if (store.has(tied)) store.mark_used(tied);
  }
  model.unused_tensors = store.unused_names();
  return model;
}

std::vector<std::string> BertModel::labels() const {
  std::vector<std::string> names = config.id2label;
  if (static_cast<int64_t>(names.size()) != num_labels) {
    names.clear();
    for (int64_t i = 0; i < num_labels; ++i) names.push_back(str_cat("LABEL_", i));
  }
  return names;
}

}  // namespace scalebert
