// Task metrics: scikit-learn-style classification scores, seqeval entity scores, SQuAD EM/F1.
#include "train/metrics.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <set>

#include "core/error.h"
#include "text/unicode_tables.h"
#include "text/utf8.h"

namespace scalebert::train {

namespace {

// p, r, f1 from counts; 0/0 -> 0 as scikit-learn's and seqeval's zero_division default.
void fill_scores(int64_t correct, int64_t predicted, int64_t support, double& precision, double& recall, double& f1) {
  precision = predicted > 0 ? static_cast<double>(correct) / static_cast<double>(predicted) : 0.0;
  recall = support > 0 ? static_cast<double>(correct) / static_cast<double>(support) : 0.0;
  f1 = precision + recall > 0.0 ? 2.0 * precision * recall / (precision + recall) : 0.0;
}

}  // namespace

ClassificationReport classification_report(std::span<const int32_t> labels, std::span<const int32_t> predictions,
                                           int32_t num_classes) {
  check(labels.size() == predictions.size(), "classification_report: ", labels.size(), " labels but ",
        predictions.size(), " predictions");
  check(!labels.empty(), "classification_report: no examples");
  check(num_classes > 0, "classification_report: num_classes ", num_classes, " must be positive");
  const auto k = static_cast<size_t>(num_classes);
  ClassificationReport report;
  report.examples = static_cast<int64_t>(labels.size());
  report.confusion.assign(k, std::vector<int64_t>(k, 0));
  int64_t correct = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    check(labels[i] >= 0 && labels[i] < num_classes, "classification_report: label ", labels[i], " at position ", i,
          " is outside [0, ", num_classes, ")");
    check(predictions[i] >= 0 && predictions[i] < num_classes, "classification_report: prediction ", predictions[i],
          " at position ", i, " is outside [0, ", num_classes, ")");
    ++report.confusion[static_cast<size_t>(labels[i])][static_cast<size_t>(predictions[i])];
    correct += labels[i] == predictions[i] ? 1 : 0;
  }
  report.accuracy = static_cast<double>(correct) / static_cast<double>(labels.size());
  report.per_class.resize(k);
  int64_t present = 0;
  for (size_t c = 0; c < k; ++c) {
    ClassScores& scores = report.per_class[c];
    for (size_t other = 0; other < k; ++other) {
      scores.support += report.confusion[c][other];
      scores.predicted += report.confusion[other][c];
    }
    fill_scores(report.confusion[c][c], scores.predicted, scores.support, scores.precision, scores.recall, scores.f1);
    if (scores.support > 0 || scores.predicted > 0) {
      ++present;
      report.macro_precision += scores.precision;
      report.macro_recall += scores.recall;
      report.macro_f1 += scores.f1;
    }
  }
  report.macro_precision /= static_cast<double>(present);
  report.macro_recall /= static_cast<double>(present);
  report.macro_f1 /= static_cast<double>(present);
  return report;
}

std::string format_classification_report(const ClassificationReport& report, std::span<const std::string> names) {
  check(names.size() == report.per_class.size(), "format_classification_report: ", names.size(), " names for ",
        report.per_class.size(), " classes");
  size_t width = std::string_view("macro avg").size();
  for (const std::string& name : names) width = std::max(width, name.size());
  const int w = static_cast<int>(width);
  std::string text;
  char line[256];
  auto append = [&](const char* format, auto... values) {
    std::snprintf(line, sizeof line, format, values...);
    text += line;
  };
  append("%*s %10s %10s %10s %10s\n", w, "", "precision", "recall", "f1-score", "support");
  for (size_t c = 0; c < names.size(); ++c) {
    const ClassScores& scores = report.per_class[c];
    append("%*s %10.4f %10.4f %10.4f %10lld\n", w, names[c].c_str(), scores.precision, scores.recall, scores.f1,
           static_cast<long long>(scores.support));
  }
  append("%*s %10s %10s %10.4f %10lld\n", w, "accuracy", "", "", report.accuracy,
         static_cast<long long>(report.examples));
  append("%*s %10.4f %10.4f %10.4f %10lld\n", w, "macro avg", report.macro_precision, report.macro_recall,
         report.macro_f1, static_cast<long long>(report.examples));
  // Confusion matrix: columns as wide as the longest class name (at least the widest count).
  size_t column = 6;
  for (const std::string& name : names) column = std::max(column, name.size());
  const int cw = static_cast<int>(column);
  text += "\nconfusion matrix (rows: true class, columns: predicted class)\n";
  append("%*s", w, "");
  for (const std::string& name : names) append(" %*s", cw, name.c_str());
  text += "\n";
  for (size_t c = 0; c < names.size(); ++c) {
    append("%*s", w, names[c].c_str());
    for (int64_t count : report.confusion[c]) append(" %*lld", cw, static_cast<long long>(count));
    text += "\n";
  }
  return text;
}

std::vector<Entity> get_entities(std::span<const std::vector<std::string>> sentences) {
  // Flattened as seqeval does: every sentence followed by "O", then one more "O" at the very end.
  std::vector<Entity> chunks;
  char previous_tag = 'O';
  std::string previous_type = "_";
  int64_t begin = 0;
  int64_t index = 0;
  auto step = [&](std::string_view chunk) {
    check(!chunk.empty(), "get_entities: empty tag at token ", index);
    const char tag = chunk[0];
    // type_ = chunk[1:].split('-', maxsplit=1)[-1] or '_'
    std::string_view rest = chunk.substr(1);
    const size_t dash = rest.find('-');
    const std::string_view type_text = dash == std::string_view::npos ? rest : rest.substr(dash + 1);
    std::string type = type_text.empty() ? std::string(1, '_') : std::string(type_text);
    // end_of_chunk(prev_tag, tag, prev_type, type_)
    bool chunk_end = previous_tag == 'E' || previous_tag == 'S' ||
                     ((previous_tag == 'B' || previous_tag == 'I') && (tag == 'B' || tag == 'S' || tag == 'O'));
    if (previous_tag != 'O' && previous_tag != '.' && previous_type != type) chunk_end = true;
    // start_of_chunk(prev_tag, tag, prev_type, type_)
    bool chunk_start = tag == 'B' || tag == 'S' ||
                       ((previous_tag == 'E' || previous_tag == 'S' || previous_tag == 'O') &&
                        (tag == 'E' || tag == 'I'));
    if (tag != 'O' && tag != '.' && previous_type != type) chunk_start = true;
    if (chunk_end) chunks.push_back({previous_type, begin, index - 1});
    if (chunk_start) begin = index;
    previous_tag = tag;
    previous_type = std::move(type);
    ++index;
  };
  for (const std::vector<std::string>& sentence : sentences) {
    for (const std::string& tag : sentence) step(tag);
    step("O");
  }
  step("O");
  return chunks;
}

EntityReport entity_report(std::span<const std::vector<std::string>> true_tags,
                           std::span<const std::vector<std::string>> predicted_tags) {
  check(true_tags.size() == predicted_tags.size(), "entity_report: ", true_tags.size(), " true sentences but ",
        predicted_tags.size(), " predicted");
  for (size_t s = 0; s < true_tags.size(); ++s) {
    check(true_tags[s].size() == predicted_tags[s].size(), "entity_report: sentence ", s, " has ",
          true_tags[s].size(), " true tags but ", predicted_tags[s].size(), " predicted");
  }
  std::map<std::string, std::set<std::pair<int64_t, int64_t>>> truth, predicted;
  for (const Entity& entity : get_entities(true_tags)) truth[entity.type].insert({entity.begin, entity.end});
  for (const Entity& entity : get_entities(predicted_tags)) predicted[entity.type].insert({entity.begin, entity.end});
  std::set<std::string> types;
  for (const auto& [type, spans] : truth) types.insert(type);
  for (const auto& [type, spans] : predicted) types.insert(type);
  EntityReport report;
  for (const std::string& type : types) {
    EntityScores scores;
    const auto& true_spans = truth[type];
    const auto& predicted_spans = predicted[type];
    scores.support = static_cast<int64_t>(true_spans.size());
    scores.predicted = static_cast<int64_t>(predicted_spans.size());
    for (const auto& span : predicted_spans) scores.correct += true_spans.count(span) ? 1 : 0;
    fill_scores(scores.correct, scores.predicted, scores.support, scores.precision, scores.recall, scores.f1);
    report.micro.support += scores.support;
    report.micro.predicted += scores.predicted;
    report.micro.correct += scores.correct;
    report.macro_f1 += scores.f1;
    report.per_type[type] = scores;
  }
  if (!types.empty()) report.macro_f1 /= static_cast<double>(types.size());
  fill_scores(report.micro.correct, report.micro.predicted, report.micro.support, report.micro.precision,
              report.micro.recall, report.micro.f1);
  return report;
}

namespace {

bool is_ascii_punctuation(char32_t code) {
  // Python's string.punctuation: !"#$%&'()*+,-./:;<=>?@[\]^_`{|}~
  return (code >= 33 && code <= 47) || (code >= 58 && code <= 64) || (code >= 91 && code <= 96) ||
         (code >= 123 && code <= 126);
}

// str.isspace: the tokenizer's whitespace (space, tab, line breaks, Zs) plus the separators
// Python also counts (VT, FF, FS..US, NEL, LS, PS).
bool is_python_space(char32_t code) {
  if (code == 0x0B || code == 0x0C || (code >= 0x1C && code <= 0x1F) || code == 0x85 || code == 0x2028 ||
      code == 0x2029) {
    return true;
  }
  return (text::unicode::flags(code) & text::unicode::kWhite) != 0;
}

// \w for the article rule: ASCII letters, digits and underscore; other code points unless the
// tokenizer's tables call them punctuation or whitespace.
bool is_word_char(char32_t code) {
  if (code < 0x80) return std::isalnum(static_cast<int>(code)) != 0 || code == '_';
  return (text::unicode::flags(code) & (text::unicode::kPunct | text::unicode::kWhite)) == 0;
}

std::vector<std::string> answer_tokens(std::string_view text) {
  const std::string normalized = normalize_answer(text);
  std::vector<std::string> tokens;
  size_t start = 0;
  while (start < normalized.size()) {
    size_t end = normalized.find(' ', start);
    if (end == std::string::npos) end = normalized.size();
    if (end > start) tokens.push_back(normalized.substr(start, end - start));
    start = end + 1;
  }
  return tokens;
}

}  // namespace

std::string normalize_answer(std::string_view input) {
  // lower(), then remove_punc()
  std::u32string codes;
  size_t pos = 0;
  while (pos < input.size()) {
    const char32_t code = text::decode_utf8(input, pos);
    if (text::unicode::flags(code) & text::unicode::kLower) {
      for (char32_t lower : text::unicode::lowercase(code)) {
        if (!is_ascii_punctuation(lower)) codes.push_back(lower);
      }
    } else if (!is_ascii_punctuation(code)) {
      codes.push_back(code);
    }
  }
  // remove_articles(): re.sub(r"\b(a|an|the)\b", " ", text) replaces whole words a/an/the.
  std::u32string without_articles;
  size_t i = 0;
  while (i < codes.size()) {
    if (!is_word_char(codes[i])) {
      without_articles.push_back(codes[i++]);
      continue;
    }
    size_t end = i;
    while (end < codes.size() && is_word_char(codes[end])) ++end;
    const std::u32string_view word(codes.data() + i, end - i);
    if (word == U"a" || word == U"an" || word == U"the") {
      without_articles.push_back(U' ');
    } else {
      without_articles.append(word);
    }
    i = end;
  }
  // white_space_fix(): " ".join(text.split())
  std::string out;
  bool pending_space = false;
  for (char32_t code : without_articles) {
    if (is_python_space(code)) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    text::append_utf8(code, out);
  }
  return out;
}

double squad_exact_match(std::string_view prediction, std::string_view truth) {
  return normalize_answer(prediction) == normalize_answer(truth) ? 1.0 : 0.0;
}

double squad_f1(std::string_view prediction, std::string_view truth) {
  const std::vector<std::string> predicted = answer_tokens(prediction);
  const std::vector<std::string> gold = answer_tokens(truth);
  // As the SQuAD v2 script: if either is empty, F1 is 1 when both are, else 0.
  if (predicted.empty() || gold.empty()) return predicted.empty() && gold.empty() ? 1.0 : 0.0;
  std::map<std::string, int64_t> counts;
  for (const std::string& token : gold) ++counts[token];
  int64_t same = 0;
  for (const std::string& token : predicted) {
    auto it = counts.find(token);
    if (it != counts.end() && it->second > 0) {
      --it->second;
      ++same;
    }
  }
  if (same == 0) return 0.0;
  const double precision = static_cast<double>(same) / static_cast<double>(predicted.size());
  const double recall = static_cast<double>(same) / static_cast<double>(gold.size());
  return 2.0 * precision * recall / (precision + recall);
}

SquadScores squad_scores(std::span<const std::string> predictions, std::span<const std::vector<std::string>> answers) {
  check(predictions.size() == answers.size(), "squad_scores: ", predictions.size(), " predictions but ",
        answers.size(), " answer lists");
  SquadScores scores;
  scores.questions = static_cast<int64_t>(predictions.size());
  if (predictions.empty()) return scores;
  for (size_t i = 0; i < predictions.size(); ++i) {
    const std::vector<std::string> empty_answer{""};
    const std::vector<std::string>& gold = answers[i].empty() ? empty_answer : answers[i];
    double exact = 0.0, f1 = 0.0;
    for (const std::string& truth : gold) {
      exact = std::max(exact, squad_exact_match(predictions[i], truth));
      f1 = std::max(f1, squad_f1(predictions[i], truth));
    }
    scores.exact_match += exact;
    scores.f1 += f1;
  }
  scores.exact_match = 100.0 * scores.exact_match / static_cast<double>(predictions.size());
  scores.f1 = 100.0 * scores.f1 / static_cast<double>(predictions.size());
  return scores;
}

double perplexity(double mean_loss) {
  check(std::isfinite(mean_loss) && mean_loss >= 0.0, "perplexity: mean loss ", mean_loss,
        " must be finite and non-negative");
  return std::exp(mean_loss);
}

}  // namespace scalebert::train
