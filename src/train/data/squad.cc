// SQuAD JSON reading, run_qa-style window labelling, and n-best answer decoding.
#include "train/data/squad.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <numeric>

#include "core/error.h"
#include "io/file_util.h"

namespace scalebert::train::data {

namespace {

using nlohmann::json;

const json& field(const json& object, const char* name, json::value_t type, const std::string& where) {
  check<FormatError>(object.is_object(), where, ": expected an object, got ", object.type_name());
  const auto it = object.find(name);
  check<FormatError>(it != object.end(), where, ": missing field '", name, "'");
  const bool ok = type == json::value_t::number_integer
                      ? it->is_number_integer()
                      : (it->type() == type);
  check<FormatError>(ok, where, ": field '", name, "' has type ", it->type_name(), ", expected ",
                     json(type).type_name());
  return *it;
}

bool is_continuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

}  // namespace

int64_t codepoint_index(std::string_view text, size_t byte_offset) {
  int64_t count = 0;
  for (size_t i = 0; i < byte_offset && i < text.size(); ++i) count += is_continuation(text[i]) ? 0 : 1;
  return count;
}

size_t byte_offset_of(std::string_view text, int64_t codepoint) {
  int64_t seen = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (is_continuation(text[i])) continue;
    if (seen == codepoint) return i;
    ++seen;
  }
  return seen == codepoint ? text.size() : text.size() + 1;
}

QaDataset parse_squad(std::string_view json_text, const std::string& source) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& error) {
    throw FormatError(str_cat(source, ": invalid JSON: ", error.what()));
  }
  QaDataset dataset;
  dataset.source = source;
  const json& data = field(root, "data", json::value_t::array, source);
  for (size_t d = 0; d < data.size(); ++d) {
    const std::string article_where = str_cat(source, ": data[", d, "]");
    std::string title;
    if (data[d].is_object() && data[d].contains("title") && data[d]["title"].is_string()) title = data[d]["title"];
    const json& paragraphs = field(data[d], "paragraphs", json::value_t::array, article_where);
    for (size_t p = 0; p < paragraphs.size(); ++p) {
      const std::string paragraph_where = str_cat(article_where, ".paragraphs[", p, "]");
      const std::string context = field(paragraphs[p], "context", json::value_t::string, paragraph_where);
      const int64_t context_chars = codepoint_index(context, context.size());
      const json& qas = field(paragraphs[p], "qas", json::value_t::array, paragraph_where);
      for (size_t q = 0; q < qas.size(); ++q) {
        std::string where = str_cat(paragraph_where, ".qas[", q, "]");
        QaExample example;
        example.title = title;
        example.context = context;
        check<FormatError>(qas[q].is_object() && qas[q].contains("id"), where, ": missing field 'id'");
        const json& id = qas[q]["id"];
        check<FormatError>(id.is_string() || id.is_number_integer(), where, ": field 'id' must be a string");
        example.id = id.is_string() ? id.get<std::string>() : std::to_string(id.get<int64_t>());
        where = str_cat(source, ": qa '", example.id, "' (", where.substr(source.size() + 2), ")");
        example.question = field(qas[q], "question", json::value_t::string, where);
        if (qas[q].contains("is_impossible")) {
          check<FormatError>(qas[q]["is_impossible"].is_boolean(), where, ": 'is_impossible' must be true or false");
          example.is_impossible = qas[q]["is_impossible"].get<bool>();
        }
        const json& answers = field(qas[q], "answers", json::value_t::array, where);
        for (size_t a = 0; a < answers.size(); ++a) {
          const std::string answer_where = str_cat(where, ".answers[", a, "]");
          QaAnswer answer;
          answer.text = field(answers[a], "text", json::value_t::string, answer_where);
          answer.answer_start = field(answers[a], "answer_start", json::value_t::number_integer, answer_where);
          const int64_t length = codepoint_index(answer.text, answer.text.size());
          check<FormatError>(!answer.text.empty(), answer_where, ": empty answer text");
          check<FormatError>(answer.answer_start >= 0 && answer.answer_start + length <= context_chars, answer_where,
                             ": answer '", answer.text, "' at characters [", answer.answer_start, ", ",
                             answer.answer_start + length, ") lies outside its context of ", context_chars,
                             " characters");
          const size_t begin = byte_offset_of(context, answer.answer_start);
          const bool matches = context.compare(begin, answer.text.size(), answer.text) == 0;
          check<FormatError>(matches, answer_where, ": answer text '", answer.text,
                             "' differs from the context at answer_start ", answer.answer_start, " ('",
                             context.substr(begin, std::min<size_t>(answer.text.size(), 60)), "')");
          answer.byte_begin = static_cast<uint32_t>(begin);
          answer.byte_end = static_cast<uint32_t>(begin + answer.text.size());
          example.answers.push_back(std::move(answer));
        }
        // SQuAD v2 keeps "plausible_answers" beside an empty "answers" for impossible questions.
        if (example.is_impossible) example.answers.clear();
        check<FormatError>(example.is_impossible || !example.answers.empty(), where,
                           ": no answers and not marked is_impossible");
        dataset.examples.push_back(std::move(example));
      }
    }
  }
  check<FormatError>(!dataset.examples.empty(), source, ": no questions");
  return dataset;
}

QaDataset read_squad(const std::filesystem::path& path) { return parse_squad(read_file(path), path.string()); }

std::vector<QaFeature> featurize_squad(const QaDataset& dataset, const text::BertTokenizer& tokenizer,
                                       size_t max_length, size_t doc_stride) {
  std::vector<QaFeature> features;
  for (size_t e = 0; e < dataset.examples.size(); ++e) {
    const QaExample& example = dataset.examples[e];
    std::vector<text::Encoding> windows;
    try {
      windows = tokenizer.encode_qa_windows(example.question, example.context, max_length, doc_stride);
    } catch (const InvalidArgument& error) {
      throw InvalidArgument(str_cat(dataset.source, ": qa '", example.id, "': ", error.what()));
    }
    for (text::Encoding& window : windows) {
      QaFeature feature;
      feature.example_index = static_cast<int32_t>(e);
      const size_t size = window.size();
      feature.offsets.assign(size, text::Span{});
      feature.is_context.assign(size, 0);
      int64_t first_context = -1, last_context = -1;
      for (size_t t = 0; t < size; ++t) {
        if (window.sequence_ids[t] != 1) continue;
        feature.is_context[t] = 1;
        feature.offsets[t] = window.offsets[t];
        if (first_context < 0) first_context = static_cast<int64_t>(t);
        last_context = static_cast<int64_t>(t);
      }
      if (!example.answers.empty() && first_context >= 0) {
        const uint32_t start_byte = example.answers.front().byte_begin;
        const uint32_t end_byte = example.answers.front().byte_end;
        // run_qa compares character offsets; bytes of UTF-8 order the same way. Its scans are kept
        // to context tokens here: the plain scan walks on through [SEP]'s (0,0) offset when the
        // answer starts at the window's last token.
        if (feature.offsets[first_context].begin <= start_byte && feature.offsets[last_context].end >= end_byte) {
          int64_t start = first_context;
          while (start <= last_context && feature.offsets[start].begin <= start_byte) ++start;
          int64_t end = last_context;
          while (end >= first_context && feature.offsets[end].end >= end_byte) --end;
          feature.start_position = static_cast<int32_t>(start - 1);
          feature.end_position = static_cast<int32_t>(end + 1);
        }
      }
      feature.input_ids = std::move(window.ids);
      feature.token_type_ids = std::move(window.type_ids);
      features.push_back(std::move(feature));
    }
  }
  return features;
}

QaPrediction decode_answer(const QaExample& example, std::span<const QaFeature* const> features,
                           std::span<const std::span<const float>> start_logits,
                           std::span<const std::span<const float>> end_logits, const QaDecodeOptions& options) {
  check(!features.empty(), "decode_answer: qa '", example.id, "' has no features");
  check(start_logits.size() == features.size() && end_logits.size() == features.size(), "decode_answer: qa '",
        example.id, "': ", features.size(), " features but ", start_logits.size(), " start and ", end_logits.size(),
        " end logit rows");
  struct Raw {
    uint32_t begin, end;
    float score;
    int32_t feature;
    bool null;
  };
  std::vector<Raw> raw;
  float null_score = 0.0f;
  bool have_null = false;
  std::vector<int32_t> order;
  auto top_indices = [&](std::span<const float> logits) {
    order.resize(logits.size());
    std::iota(order.begin(), order.end(), 0);
    // numpy argsort reversed: highest first; among equal logits the later index first.
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a > b);
    });
    order.resize(std::min(order.size(), options.n_best));
    return order;
  };
  for (size_t f = 0; f < features.size(); ++f) {
    const QaFeature& feature = *features[f];
    const size_t size = feature.input_ids.size();
    check(start_logits[f].size() == size && end_logits[f].size() == size, "decode_answer: qa '", example.id,
          "' feature ", f, " has ", size, " tokens but ", start_logits[f].size(), " start and ", end_logits[f].size(),
          " end logits");
    const float feature_null = start_logits[f][0] + end_logits[f][0];
    if (!have_null || feature_null < null_score) null_score = feature_null;  // the minimum, as run_qa
    have_null = true;
    const std::vector<int32_t> starts = top_indices(start_logits[f]);
    const std::vector<int32_t> ends = top_indices(end_logits[f]);
    for (int32_t start : starts) {
      for (int32_t end : ends) {
        if (!feature.is_context[start] || !feature.is_context[end]) continue;
        if (end < start || static_cast<size_t>(end - start + 1) > options.max_answer_length) continue;
        raw.push_back({feature.offsets[start].begin, feature.offsets[end].end,
                       start_logits[f][start] + end_logits[f][end], static_cast<int32_t>(f), false});
      }
    }
  }
  if (options.allow_null) raw.push_back({0, 0, null_score, -1, true});
  std::stable_sort(raw.begin(), raw.end(), [](const Raw& a, const Raw& b) { return a.score > b.score; });
  if (raw.size() > options.n_best) raw.resize(options.n_best);
  if (options.allow_null && std::none_of(raw.begin(), raw.end(), [](const Raw& r) { return r.null; })) {
    raw.push_back({0, 0, null_score, -1, true});
  }
  QaPrediction prediction;
  if (raw.empty()) return prediction;
  float max_score = raw.front().score;
  double total = 0.0;
  for (const Raw& r : raw) total += std::exp(static_cast<double>(r.score - max_score));
  for (const Raw& r : raw) {
    QaCandidate candidate;
    if (!r.null) {
      candidate.text = example.context.substr(r.begin, r.end - r.begin);
      candidate.char_begin = codepoint_index(example.context, r.begin);
      candidate.char_end = codepoint_index(example.context, r.end);
    }
    candidate.score = r.score;
    candidate.probability = static_cast<float>(std::exp(static_cast<double>(r.score - max_score)) / total);
    candidate.feature = r.feature;
    prediction.n_best.push_back(std::move(candidate));
  }
  // The best non-null span; with allow_null it must beat the null score by the threshold.
  const auto best = std::find_if(prediction.n_best.begin(), prediction.n_best.end(),
                                 [](const QaCandidate& c) { return c.feature >= 0; });
  if (best == prediction.n_best.end()) {
    prediction.score = null_score;
    return prediction;
  }
  if (options.allow_null && null_score - best->score > options.null_threshold) {
    prediction.score = null_score;
    return prediction;
  }
  prediction.text = best->text;
  prediction.char_begin = best->char_begin;
  prediction.char_end = best->char_end;
  prediction.score = best->score;
  return prediction;
}

}  // namespace scalebert::train::data
