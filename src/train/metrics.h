// Evaluation metrics of the training tasks, each computed as its reference tool does:
// classification accuracy / per-class P R F1 / macro-F1 / confusion matrix (scikit-learn's
// definitions), entity-level P R F1 exactly as seqeval's default (conlleval) mode reads IO and
// BIO tags, SQuAD exact match and F1 with the official answer normalization, and perplexity.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace scalebert::train {

struct ClassScores {
  double precision = 0.0;
  double recall = 0.0;
  double f1 = 0.0;
  int64_t support = 0;    // true examples of the class
  int64_t predicted = 0;  // examples predicted as the class
};

struct ClassificationReport {
  int64_t examples = 0;
  double accuracy = 0.0;
  // Unweighted means over the classes that occur in the labels or the predictions (scikit-learn's
  // average="macro" with its default label set); 0/0 counts as 0 (its zero_division default).
  double macro_precision = 0.0;
  double macro_recall = 0.0;
  double macro_f1 = 0.0;
  std::vector<ClassScores> per_class;           // (K) every class 0..K-1, present or not
  std::vector<std::vector<int64_t>> confusion;  // (K, K) [true][predicted]
};

// `labels` and `predictions` are class ids in [0, num_classes). InvalidArgument for different
// sizes, no examples, or an id out of range (naming its position).
ClassificationReport classification_report(std::span<const int32_t> labels, std::span<const int32_t> predictions,
                                           int32_t num_classes);

// The report as text, the way scikit-learn's classification_report lays it out (one row per class:
// precision, recall, F1, support; then accuracy and the macro average), followed by the confusion
// matrix with true classes as rows and predicted classes as columns. `names` are the K class names.
std::string format_classification_report(const ClassificationReport& report, std::span<const std::string> names);

// One entity as seqeval's get_entities returns it: type and inclusive token range over the
// concatenation of all sentences (each followed by one "O").
struct Entity {
  std::string type;
  int64_t begin = 0;
  int64_t end = 0;  // inclusive
  friend bool operator==(const Entity&, const Entity&) = default;
};

// seqeval.metrics.sequence_labeling.get_entities (prefix tags, default mode): a tag is "O", a
// bare prefix, or PREFIX-TYPE with PREFIX in B I E S; the conlleval chunk start/end rules decide
// the spans, so I- after O or after another type starts an entity and a type change ends one.
std::vector<Entity> get_entities(std::span<const std::vector<std::string>> sentences);

struct EntityScores {
  double precision = 0.0;
  double recall = 0.0;
  double f1 = 0.0;
  int64_t support = 0;    // true entities
  int64_t predicted = 0;  // predicted entities
  int64_t correct = 0;    // predicted entities with the same type and span as a true one
};

struct EntityReport {
  EntityScores micro;                         // seqeval's f1_score / precision_score / recall_score
  double macro_f1 = 0.0;                      // mean over types
  std::map<std::string, EntityScores> per_type;  // sorted by type, as classification_report
};

// Entity-level scores of predicted tag sequences against true ones (seqeval default mode).
// InvalidArgument when the sentence counts or a sentence's lengths differ (naming it).
EntityReport entity_report(std::span<const std::vector<std::string>> true_tags,
                           std::span<const std::vector<std::string>> predicted_tags);

// SQuAD v1.1 evaluate.py normalize_answer: lowercase, drop ASCII punctuation (string.punctuation),
// drop the words a/an/the, collapse whitespace. Lowercasing is Unicode-aware (the tokenizer's
// tables); a "word" for the article rule is a maximal run of non-space, non-punctuation code points,
// as Python's \b sees letters and digits.
std::string normalize_answer(std::string_view text);
// 1 when the normalized texts are equal.
double squad_exact_match(std::string_view prediction, std::string_view truth);
// Token-overlap F1 of the normalized texts (both empty: 1; one empty: 0).
double squad_f1(std::string_view prediction, std::string_view truth);

struct SquadScores {
  double exact_match = 0.0;  // percent, as the official script reports
  double f1 = 0.0;           // percent
  int64_t questions = 0;
};
// Each prediction scored against the best of its example's answers (an empty answer list counts
// as [""], as SQuAD v2 does for unanswerable questions). InvalidArgument for mismatched sizes.
SquadScores squad_scores(std::span<const std::string> predictions, std::span<const std::vector<std::string>> answers);

// exp(mean cross-entropy in nats). InvalidArgument for a negative or non-finite loss.
double perplexity(double mean_loss);

}  // namespace scalebert::train
