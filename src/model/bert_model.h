// A BERT model as loaded from a Hugging Face directory: its config, which task head it carries, and
// every parameter in one ParameterTable under Hugging Face's names (without the "bert." prefix).
// The same object serves inference (packed into kernel layouts by InferenceWeights) and training.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/config.h"
#include "model/parameters.h"

namespace scalebert {

class WeightStore;

enum class TaskHead {
  kNone,                    // BertModel: last_hidden_state and pooler_output
  kSequenceClassification,  // BertForSequenceClassification: classifier on the pooled [CLS]
  kTokenClassification,     // BertForTokenClassification: classifier on every token
  kQuestionAnswering,       // BertForQuestionAnswering: start/end logits on every token
  kMaskedLM,                // BertForMaskedLM: transform + decoder tied to the word embeddings
};

std::string_view task_head_name(TaskHead head);
// "none", "sequence-classification" (alias "classification"), "token-classification" (alias "ner"),
// "question-answering" (alias "qa"), "masked-lm" (alias "mlm"); InvalidArgument otherwise.
TaskHead task_head_from_name(std::string_view name);

struct BertModel {
  BertConfig config;
  TaskHead head = TaskHead::kNone;
  bool has_pooler = false;
  int64_t num_labels = 0;  // classifier outputs (2 for QA: start and end)
  ParameterTable parameters;
  std::filesystem::path directory;
  // Stored tensors the model did not use (e.g. BertForPreTraining's next-sentence head).
  std::vector<std::string> unused_tensors;

  // Loads config.json and the weights of `directory`. The head is taken from `head_override`, else
  // from config.json's "architectures", else from the tensors present (qa_outputs, classifier,
  // cls.predictions). Every tensor's shape is checked against the config; errors name the tensor.
  static BertModel load(const std::filesystem::path& directory,
                        std::optional<TaskHead> head_override = std::nullopt);

  // A model with freshly registered (zeroed) parameters for `config` and `head`.
  static BertModel create(const BertConfig& config, TaskHead head, bool with_pooler, int64_t num_labels);

  // Label names of a classification head ("LABEL_i" when the config has no id2label).
  std::vector<std::string> labels() const;
};

// Registers BERT's parameters for `config` (and the head) in Hugging Face order.
void register_bert_parameters(ParameterTable& table, const BertConfig& config, TaskHead head,
                              bool with_pooler, int64_t num_labels);

// Hugging Face name of layer `layer`'s parameter `suffix`, e.g. layer_parameter(3, "output.dense.weight").
std::string layer_parameter(int64_t layer, std::string_view suffix);

}  // namespace scalebert
