// Task metrics against hand-derived values, seqeval's documented example and corner cases, and
// SQuAD values printed by transformers' copy of the official script (reference/metrics_reference.py).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"
#include "train/metrics.h"

namespace scalebert::train {
namespace {

using Tags = std::vector<std::vector<std::string>>;

TEST(ClassificationReport, HandCheckedThreeClasses) {
  const std::vector<int32_t> labels{0, 0, 1, 1, 2, 2};
  const std::vector<int32_t> predictions{0, 1, 1, 1, 0, 2};
  const ClassificationReport report = classification_report(labels, predictions, 3);
  EXPECT_DOUBLE_EQ(report.accuracy, 4.0 / 6.0);
  EXPECT_DOUBLE_EQ(report.per_class[0].precision, 0.5);
  EXPECT_DOUBLE_EQ(report.per_class[0].recall, 0.5);
  EXPECT_DOUBLE_EQ(report.per_class[1].precision, 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(report.per_class[1].recall, 1.0);
  EXPECT_DOUBLE_EQ(report.per_class[1].f1, 0.8);
  EXPECT_DOUBLE_EQ(report.per_class[2].f1, 2.0 / 3.0);
  EXPECT_EQ(report.per_class[2].support, 2);
  EXPECT_EQ(report.per_class[1].predicted, 3);
  EXPECT_NEAR(report.macro_f1, (0.5 + 0.8 + 2.0 / 3.0) / 3.0, 1e-12);
  EXPECT_NEAR(report.macro_precision, (0.5 + 2.0 / 3.0 + 1.0) / 3.0, 1e-12);
  const std::vector<std::vector<int64_t>> confusion{{1, 1, 0}, {0, 2, 0}, {1, 0, 1}};
  EXPECT_EQ(report.confusion, confusion);
}

TEST(ClassificationReport, MacroSkipsClassesAbsentFromLabelsAndPredictions) {
  // scikit-learn's default label set is the union of labels and predictions: class 3 never occurs.
  const std::vector<int32_t> labels{0, 1, 1};
  const std::vector<int32_t> predictions{0, 1, 2};
  const ClassificationReport report = classification_report(labels, predictions, 4);
  // class 0: f1 1; class 1: p 1, r 0.5, f1 2/3; class 2: predicted once, never true: f1 0.
  EXPECT_NEAR(report.macro_f1, (1.0 + 2.0 / 3.0 + 0.0) / 3.0, 1e-12);
  EXPECT_EQ(report.per_class[3].support, 0);
  EXPECT_DOUBLE_EQ(report.per_class[3].f1, 0.0);
}

TEST(ClassificationReport, FormatsTableAndConfusionMatrix) {
  const std::vector<int32_t> labels{0, 0, 1, 1, 2, 2};
  const std::vector<int32_t> predictions{0, 1, 1, 1, 0, 2};
  const std::vector<std::string> names{"Bearish", "Bullish", "Neutral"};
  const std::string text = format_classification_report(classification_report(labels, predictions, 3), names);
  // The rows scikit-learn prints for the same inputs (classification_report(digits=4)).
  EXPECT_NE(text.find("  Bullish     0.6667     1.0000     0.8000          2\n"), std::string::npos) << text;
  EXPECT_NE(text.find(" accuracy                           0.6667          6\n"), std::string::npos) << text;
  EXPECT_NE(text.find("macro avg     0.7222     0.6667     0.6556          6\n"), std::string::npos) << text;
  // Confusion rows: true class, then counts per predicted class.
  EXPECT_NE(text.find("  Neutral       1       0       1\n"), std::string::npos) << text;
  const std::vector<std::string> two_names{"a", "b"};
  EXPECT_THROW(format_classification_report(classification_report(labels, predictions, 3), two_names), InvalidArgument);
}

TEST(ClassificationReport, RejectsBadInput) {
  const std::vector<int32_t> two{0, 1}, one{0}, out_of_range{0, 5};
  EXPECT_THROW(classification_report(two, one, 2), InvalidArgument);
  EXPECT_THROW(classification_report({}, {}, 2), InvalidArgument);
  try {
    classification_report(two, out_of_range, 2);
    FAIL();
  } catch (const InvalidArgument& error) {
    EXPECT_NE(std::string(error.what()).find("prediction 5 at position 1"), std::string::npos) << error.what();
  }
}

TEST(Seqeval, ReadmeExample) {
  // seqeval's README: f1_score(y_true, y_pred) == 0.50.
  const Tags truth{{"O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"}, {"B-PER", "I-PER", "O"}};
  const Tags predicted{{"O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"}, {"B-PER", "I-PER", "O"}};
  const EntityReport report = entity_report(truth, predicted);
  EXPECT_DOUBLE_EQ(report.micro.f1, 0.5);
  EXPECT_DOUBLE_EQ(report.micro.precision, 0.5);
  EXPECT_DOUBLE_EQ(report.micro.recall, 0.5);
  EXPECT_DOUBLE_EQ(report.per_type.at("PER").f1, 1.0);
  EXPECT_DOUBLE_EQ(report.per_type.at("MISC").f1, 0.0);
  // Offsets run over the flattened sequence with one "O" after each sentence.
  const std::vector<Entity> entities = get_entities(truth);
  ASSERT_EQ(entities.size(), 2u);
  EXPECT_EQ(entities[0], (Entity{"MISC", 3, 5}));
  EXPECT_EQ(entities[1], (Entity{"PER", 8, 9}));
}

TEST(Seqeval, ChunkRules) {
  // I- after O starts an entity; a type change ends one and starts another; B after B splits.
  const Tags tags{{"O", "I-PER", "I-PER", "O", "B-PER", "I-ORG", "B-LOC", "B-LOC"}};
  const std::vector<Entity> expected{{"PER", 1, 2}, {"PER", 4, 4}, {"ORG", 5, 5}, {"LOC", 6, 6}, {"LOC", 7, 7}};
  EXPECT_EQ(get_entities(tags), expected);
  // Entities never run across sentences.
  const Tags across{{"I-PER"}, {"I-PER"}};
  const std::vector<Entity> separate{{"PER", 0, 0}, {"PER", 2, 2}};
  EXPECT_EQ(get_entities(across), separate);
  // Bare prefixes get the type "_", as seqeval.
  const Tags bare{{"B", "I", "O"}};
  EXPECT_EQ(get_entities(bare), (std::vector<Entity>{{"_", 0, 1}}));
}

TEST(Seqeval, BioCornerScores) {
  const Tags truth{{"O", "I-PER", "I-PER", "O", "B-PER", "I-ORG", "B-LOC", "B-LOC"}};
  const Tags predicted{{"B-PER", "I-PER", "I-PER", "O", "B-PER", "I-ORG", "B-LOC", "I-LOC"}};
  const EntityReport report = entity_report(truth, predicted);
  // true: PER(1,2) PER(4,4) ORG(5,5) LOC(6,6) LOC(7,7); predicted: PER(0,2) PER(4,4) ORG(5,5) LOC(6,7).
  EXPECT_EQ(report.micro.correct, 2);
  EXPECT_EQ(report.micro.predicted, 4);
  EXPECT_EQ(report.micro.support, 5);
  EXPECT_DOUBLE_EQ(report.micro.precision, 0.5);
  EXPECT_DOUBLE_EQ(report.micro.recall, 0.4);
  EXPECT_NEAR(report.micro.f1, 4.0 / 9.0, 1e-12);
  EXPECT_DOUBLE_EQ(report.per_type.at("PER").f1, 0.5);
  EXPECT_DOUBLE_EQ(report.per_type.at("LOC").f1, 0.0);
  EXPECT_NEAR(report.macro_f1, 0.5, 1e-12);
}

TEST(Seqeval, IoScheme) {
  // IO: a run of I-X is one entity; adjacent entities of one type merge; a type change splits.
  const Tags truth{{"I-PER", "I-PER", "O", "I-LOC", "I-ORG"}};
  const Tags predicted{{"I-PER", "O", "O", "I-LOC", "I-ORG"}};
  const EntityReport report = entity_report(truth, predicted);
  EXPECT_NEAR(report.micro.f1, 2.0 / 3.0, 1e-12);
  EXPECT_DOUBLE_EQ(report.per_type.at("PER").f1, 0.0);
  EXPECT_DOUBLE_EQ(report.per_type.at("ORG").f1, 1.0);
  EXPECT_EQ(get_entities(truth), (std::vector<Entity>{{"PER", 0, 1}, {"LOC", 3, 3}, {"ORG", 4, 4}}));
}

TEST(Seqeval, NoEntitiesAndMismatchedLengths) {
  const Tags empty{{"O", "O"}};
  const EntityReport report = entity_report(empty, empty);
  EXPECT_DOUBLE_EQ(report.micro.f1, 0.0);
  EXPECT_TRUE(report.per_type.empty());
  const Tags shorter{{"O"}};
  try {
    entity_report(empty, shorter);
    FAIL();
  } catch (const InvalidArgument& error) {
    EXPECT_NE(std::string(error.what()).find("sentence 0 has 2 true tags but 1 predicted"), std::string::npos);
  }
}

struct SquadCase {
  const char* prediction;
  const char* truth;
  const char* normalized;
  double exact;
  double f1;
};

TEST(Squad, MatchesOfficialScript) {
  // Printed by reference/metrics_reference.py (transformers.data.metrics.squad_metrics).
  const SquadCase cases[] = {
      {"The  Cat's  hat!", "cats hat", "cats hat", 1, 1.0},
      {"the cat sat", "a cat sat down", "cat sat", 0, 0.8},
      {"Ünïcode  THE Ärger", "ünïcode ärger", "ünïcode ärger", 1, 1.0},
      {"$1,496.5 million", "1496.5 million", "14965 million", 1, 1.0},
      {"an apple", "apple", "apple", 1, 1.0},
      {"theater", "theater", "theater", 1, 1.0},
      {"the’s   A-team, an—the end", "’s ateam — end", "’s ateam — end", 1, 1.0},
      {"", "", "", 1, 1.0},
      {"a", "", "", 1, 1.0},
      {"revenue grew", "net revenue", "revenue grew", 0, 0.5},
  };
  for (const SquadCase& c : cases) {
    EXPECT_EQ(normalize_answer(c.prediction), c.normalized) << c.prediction;
    EXPECT_DOUBLE_EQ(squad_exact_match(c.prediction, c.truth), c.exact) << c.prediction;
    EXPECT_DOUBLE_EQ(squad_f1(c.prediction, c.truth), c.f1) << c.prediction;
  }
}

TEST(Squad, BestOfSeveralAnswersInPercent) {
  const std::vector<std::string> predictions{"the cat sat", "Denver Broncos", ""};
  const std::vector<std::vector<std::string>> answers{
      {"a dog", "a cat sat down"}, {"Denver Broncos", "Broncos"}, {}};  // last: unanswerable
  const SquadScores scores = squad_scores(predictions, answers);
  EXPECT_NEAR(scores.exact_match, 100.0 * 2.0 / 3.0, 1e-9);
  EXPECT_NEAR(scores.f1, 100.0 * (0.8 + 1.0 + 1.0) / 3.0, 1e-9);
  EXPECT_THROW(squad_scores(predictions, std::vector<std::vector<std::string>>(2)), InvalidArgument);
}

TEST(Perplexity, FromMeanLoss) {
  EXPECT_NEAR(perplexity(std::log(20.0)), 20.0, 1e-9);
  EXPECT_DOUBLE_EQ(perplexity(0.0), 1.0);
  EXPECT_THROW(perplexity(std::nan("")), InvalidArgument);
  EXPECT_THROW(perplexity(-1.0), InvalidArgument);
}

}  // namespace
}  // namespace scalebert::train
