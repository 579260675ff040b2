// CoNLL reading, tag-scheme checks, and first-subword label alignment.
#include "train/data/conll.h"

#include <cctype>

#include "core/error.h"
#include "io/csv.h"
#include "io/file_util.h"

namespace scalebert::train::data {

const char* tag_scheme_name(TagScheme scheme) { return scheme == TagScheme::kIO ? "IO" : "BIO"; }

TagScheme parse_tag_scheme(std::string_view name) {
  std::string lower(name);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "io") return TagScheme::kIO;
  if (lower == "bio" || lower == "iob2") return TagScheme::kBIO;
  throw InvalidArgument(str_cat("unknown tag scheme '", name, "' (expected io or bio)"));
}

std::vector<std::string> ConllDataset::all_tags() const {
  std::vector<std::string> out;
  for (const ConllSentence& sentence : sentences) out.insert(out.end(), sentence.tags.begin(), sentence.tags.end());
  return out;
}

ConllDataset parse_conll(std::string_view text, const std::string& source) {
  io::check_utf8_lines(text, source);
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  ConllDataset dataset;
  dataset.source = source;
  ConllSentence current;
  int32_t document = 0;
  bool seen_docstart = false;
  auto flush = [&] {
    if (!current.tokens.empty()) {
      current.document = document;
      dataset.sentences.push_back(std::move(current));
    }
    current = ConllSentence();
  };
  int64_t line = 0;
  size_t pos = 0;
  std::vector<std::string_view> columns;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view record = text.substr(pos, end - pos);
    pos = end + 1;
    ++line;
    columns.clear();
    size_t start = 0;
    while (start < record.size()) {
      const size_t first = record.find_first_not_of(" \t\r", start);
      if (first == std::string_view::npos) break;
      const size_t last = record.find_first_of(" \t\r", first);
      columns.push_back(record.substr(first, last == std::string_view::npos ? std::string_view::npos : last - first));
      if (last == std::string_view::npos) break;
      start = last;
    }
    if (columns.empty()) {
      flush();
      continue;
    }
    if (columns[0] == "-DOCSTART-") {
      flush();
      // The first -DOCSTART- opens document 0; text before any -DOCSTART- is document 0 as well.
      if (seen_docstart || !dataset.sentences.empty()) ++document;
      seen_docstart = true;
      continue;
    }
    check<FormatError>(columns.size() >= 2, source, ":", line, ": expected 'token ... tag', got one column '",
                       columns[0], "'");
    current.tokens.emplace_back(columns.front());
    current.tags.emplace_back(columns.back());
    current.lines.push_back(line);
  }
  flush();
  check<FormatError>(!dataset.sentences.empty(), source, ": no tokens (empty CoNLL file)");
  dataset.documents = document + 1;
  return dataset;
}

ConllDataset read_conll(const std::filesystem::path& path) { return parse_conll(read_file(path), path.string()); }

void check_tag_scheme(const ConllDataset& dataset, TagScheme scheme) {
  for (const ConllSentence& sentence : dataset.sentences) {
    for (size_t i = 0; i < sentence.tags.size(); ++i) {
      const std::string& tag = sentence.tags[i];
      bool valid = tag == "O";
      if (!valid && tag.size() > 2 && tag[1] == '-') {
        valid = tag[0] == 'I' || (scheme == TagScheme::kBIO && tag[0] == 'B');
      }
      check<FormatError>(valid, dataset.source, ":", sentence.lines[i], ": tag '", tag, "' is not valid in the ",
                         tag_scheme_name(scheme), " scheme");
    }
  }
}

TagScheme detect_tag_scheme(const ConllDataset& dataset) {
  for (const ConllSentence& sentence : dataset.sentences) {
    for (const std::string& tag : sentence.tags) {
      if (tag.size() > 2 && tag[0] == 'B' && tag[1] == '-') return TagScheme::kBIO;
    }
  }
  return TagScheme::kIO;
}

std::string format_conll(const std::vector<const ConllSentence*>& sentences, bool documents) {
  std::string out;
  int32_t previous_document = -1;
  for (const ConllSentence* sentence : sentences) {
    if (documents && sentence->document != previous_document) {
      out += "-DOCSTART- O\n\n";
      previous_document = sentence->document;
    }
    for (size_t i = 0; i < sentence->tokens.size(); ++i) {
      out += sentence->tokens[i];
      out += ' ';
      out += sentence->tags[i];
      out += '\n';
    }
    out += '\n';
  }
  return out;
}

std::vector<TokenClassificationFeature> featurize_token_classification(const ConllDataset& dataset,
                                                                       const text::BertTokenizer& tokenizer,
                                                                       const LabelMap& labels, size_t max_length) {
  check(max_length == 0 || max_length >= 3, "token classification: max_length ", max_length,
        " leaves no room for a token between [CLS] and [SEP]");
  std::vector<TokenClassificationFeature> features;
  features.reserve(dataset.sentences.size());
  text::Encoding pieces;
  for (size_t s = 0; s < dataset.sentences.size(); ++s) {
    const ConllSentence& sentence = dataset.sentences[s];
    TokenClassificationFeature feature;
    feature.sentence_index = static_cast<int32_t>(s);
    feature.input_ids.push_back(tokenizer.cls_id());
    feature.labels.push_back(kIgnoreIndex);
    feature.word_ids.push_back(-1);
    const size_t budget = max_length == 0 ? SIZE_MAX : max_length - 1;  // room left for [SEP]
    for (size_t w = 0; w < sentence.tokens.size(); ++w) {
      const int32_t tag = labels.resolve(sentence.tags[w], str_cat(dataset.source, ":", sentence.lines[w]));
      pieces.clear();
      tokenizer.tokenize(sentence.tokens[w], pieces);
      for (size_t p = 0; p < pieces.ids.size() && feature.input_ids.size() < budget; ++p) {
        feature.input_ids.push_back(pieces.ids[p]);
        feature.labels.push_back(p == 0 ? tag : kIgnoreIndex);
        feature.word_ids.push_back(static_cast<int32_t>(w));
        if (p == 0) ++feature.words_kept;
      }
    }
    feature.input_ids.push_back(tokenizer.sep_id());
    feature.labels.push_back(kIgnoreIndex);
    feature.word_ids.push_back(-1);
    feature.token_type_ids.assign(feature.input_ids.size(), 0);
    features.push_back(std::move(feature));
  }
  return features;
}

}  // namespace scalebert::train::data
