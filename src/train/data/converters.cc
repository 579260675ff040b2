// Shared-dataset converters: parse, filter, split with a seed, write atomically, count.
#include "train/data/converters.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/csv.h"
#include "io/file_util.h"
#include "train/data/conll.h"
#include "train/data/order.h"
#include "train/data/squad.h"
#include "train/metrics.h"

namespace scalebert::train::data {

namespace fs = std::filesystem;

int64_t ConversionReport::count(const std::string& name) const {
  for (const auto& [key, value] : counts) {
    if (key == name) return value;
  }
  return -1;
}

std::string ConversionReport::summary() const {
  std::string out;
  for (const auto& [key, value] : counts) out += str_cat(key, ": ", value, "\n");
  for (const fs::path& path : outputs) out += str_cat("wrote ", path.string(), "\n");
  return out;
}

std::vector<int64_t> held_out_indices(int64_t n, double fraction, uint64_t seed) {
  check(fraction >= 0.0 && fraction < 1.0, "held-out fraction ", fraction, " must lie in [0, 1)");
  int64_t count = static_cast<int64_t>(std::llround(static_cast<double>(n) * fraction));
  if (fraction > 0.0 && n >= 2) count = std::max<int64_t>(count, 1);
  count = std::min<int64_t>(count, std::max<int64_t>(n - 1, 0));
  std::vector<int64_t> permutation = epoch_permutation(n, seed, 0, true);
  permutation.resize(static_cast<size_t>(count));
  std::sort(permutation.begin(), permutation.end());
  return permutation;
}

std::string csv_field(std::string_view text) {
  if (text.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(text);
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

namespace {

bool is_held_out(const std::vector<int64_t>& held_out, int64_t index) {
  return std::binary_search(held_out.begin(), held_out.end(), index);
}

void write_output(ConversionReport& report, const fs::path& path, const std::string& text) {
  write_file_atomic(path, text);
  report.outputs.push_back(path);
}

}  // namespace

ConversionReport convert_tweets(const fs::path& train_csv, const fs::path& valid_csv, const fs::path& out_dir,
                                bool keep_integer_labels) {
  static const char* const kNames[] = {"Bearish", "Bullish", "Neutral"};  // the dataset card's labels
  fs::create_directories(out_dir);
  ConversionReport report;
  const std::pair<fs::path, const char*> splits[] = {{train_csv, "train"}, {valid_csv, "valid"}};
  for (const auto& [input, name] : splits) {
    const io::CsvTable table = io::read_csv(input);
    const int64_t text_column = table.column("text");
    const int64_t label_column = table.column("label");
    check<FormatError>(table.num_rows() > 0, input.string(), ": no rows after the header");
    std::string out = "text,label\n";
    int64_t per_label[3] = {0, 0, 0};
    for (size_t r = 0; r < table.num_rows(); ++r) {
      const std::string& label = table.rows[r][static_cast<size_t>(label_column)];
      check<FormatError>(label == "0" || label == "1" || label == "2", input.string(), ":", table.row_lines[r],
                         ": label '", label, "' is not 0 (Bearish), 1 (Bullish) or 2 (Neutral)");
      const int index = label[0] - '0';
      ++per_label[index];
      out += csv_field(table.rows[r][static_cast<size_t>(text_column)]);
      out += ',';
      out += keep_integer_labels ? label : std::string(kNames[index]);
      out += '\n';
    }
    write_output(report, out_dir / str_cat(name, ".csv"), out);
    report.counts.emplace_back(str_cat(name, ".rows"), static_cast<int64_t>(table.num_rows()));
    for (int i = 0; i < 3; ++i) report.counts.emplace_back(str_cat(name, ".", kNames[i]), per_label[i]);
  }
  return report;
}

ConversionReport convert_sec_ner(const fs::path& conll, const fs::path& out_dir, uint64_t seed, double dev_fraction) {
  const ConllDataset dataset = read_conll(conll);
  check_tag_scheme(dataset, TagScheme::kIO);
  const std::vector<int64_t> dev_documents = held_out_indices(dataset.documents, dev_fraction, seed);
  fs::create_directories(out_dir);
  ConversionReport report;
  report.counts.emplace_back("documents", dataset.documents);
  for (const bool dev : {false, true}) {
    std::vector<const ConllSentence*> chosen;
    int64_t tokens = 0, documents = 0, previous = -1;
    for (const ConllSentence& sentence : dataset.sentences) {
      if (is_held_out(dev_documents, sentence.document) != dev) continue;
      chosen.push_back(&sentence);
      tokens += static_cast<int64_t>(sentence.tokens.size());
      if (sentence.document != previous) ++documents;
      previous = sentence.document;
    }
    const std::string name = dev ? "dev" : "train";
    check<InvalidArgument>(!chosen.empty(), conll.string(), ": the ", name, " split has no sentences (", dataset.documents,
                           " documents)");
    write_output(report, out_dir / str_cat(name, ".conll"), format_conll(chosen, true));
    report.counts.emplace_back(name + ".documents", documents);
    report.counts.emplace_back(name + ".sentences", static_cast<int64_t>(chosen.size()));
    report.counts.emplace_back(name + ".tokens", tokens);
    std::vector<std::vector<std::string>> tags;
    for (const ConllSentence* sentence : chosen) tags.push_back(sentence->tags);
    std::map<std::string, int64_t> entities;
    for (const Entity& entity : get_entities(tags)) ++entities[entity.type];
    for (const auto& [type, count] : entities) report.counts.emplace_back(name + ".entities." + type, count);
  }
  return report;
}

ConversionReport convert_tatqa(const fs::path& tatqa_json, const fs::path& out_dir, uint64_t seed,
                               double dev_fraction) {
  using nlohmann::json;
  const std::string source = tatqa_json.string();
  json root;
  try {
    root = json::parse(read_file(tatqa_json));
  } catch (const json::exception& error) {
    throw FormatError(str_cat(source, ": invalid JSON: ", error.what()));
  }
  check<FormatError>(root.is_array(), source, ": expected a JSON array of contexts");
  struct Context {
    std::string uid, text;
    json qas = json::array();
  };
  std::vector<Context> contexts;
  int64_t questions = 0, not_span = 0, several_answers = 0, not_verbatim = 0;
  for (size_t c = 0; c < root.size(); ++c) {
    const json& item = root[c];
    const std::string where = str_cat(source, ": [", c, "]");
    check<FormatError>(item.is_object() && item.contains("paragraphs") && item["paragraphs"].is_array() &&
                           item.contains("questions") && item["questions"].is_array(),
                       where, ": expected an object with 'paragraphs' and 'questions' arrays");
    std::vector<std::pair<int64_t, std::string>> paragraphs;
    for (const json& paragraph : item["paragraphs"]) {
      check<FormatError>(paragraph.contains("text") && paragraph["text"].is_string() && paragraph.contains("order") &&
                             paragraph["order"].is_number_integer(),
                         where, ": a paragraph lacks a string 'text' or an integer 'order'");
      paragraphs.emplace_back(paragraph["order"].get<int64_t>(), paragraph["text"].get<std::string>());
    }
    std::stable_sort(paragraphs.begin(), paragraphs.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    Context context;
    if (item.contains("table") && item["table"].is_object() && item["table"].contains("uid")) {
      context.uid = item["table"]["uid"].get<std::string>();
    }
    for (size_t p = 0; p < paragraphs.size(); ++p) {
      if (p > 0) context.text += '\n';
      context.text += paragraphs[p].second;
    }
    for (const json& question : item["questions"]) {
      ++questions;
      check<FormatError>(question.contains("uid") && question.contains("question") && question.contains("answer") &&
                             question.contains("answer_type"),
                         where, ": a question lacks uid, question, answer or answer_type");
      if (question["answer_type"] != "span") {
        ++not_span;
        continue;
      }
      const json& answer = question["answer"];
      if (!answer.is_array() || answer.size() != 1 || !answer[0].is_string()) {
        ++several_answers;
        continue;
      }
      const std::string text = answer[0].get<std::string>();
      const size_t found = text.empty() ? std::string::npos : context.text.find(text);
      if (found == std::string::npos) {
        ++not_verbatim;
        continue;
      }
      json qa;
      qa["id"] = question["uid"];
      qa["question"] = question["question"];
      qa["answers"] = json::array({{{"text", text}, {"answer_start", codepoint_index(context.text, found)}}});
      context.qas.push_back(std::move(qa));
    }
    contexts.push_back(std::move(context));
  }
  const std::vector<int64_t> dev_contexts = held_out_indices(static_cast<int64_t>(contexts.size()), dev_fraction, seed);
  fs::create_directories(out_dir);
  ConversionReport report;
  report.counts.emplace_back("contexts", static_cast<int64_t>(contexts.size()));
  report.counts.emplace_back("questions", questions);
  report.counts.emplace_back("skipped.not_span", not_span);
  report.counts.emplace_back("skipped.not_one_answer", several_answers);
  report.counts.emplace_back("skipped.not_verbatim", not_verbatim);
  for (const bool dev : {false, true}) {
    json data = json::array();
    int64_t kept_contexts = 0, kept_questions = 0;
    for (size_t c = 0; c < contexts.size(); ++c) {
      if (is_held_out(dev_contexts, static_cast<int64_t>(c)) != dev || contexts[c].qas.empty()) continue;
      json paragraph = {{"context", contexts[c].text}, {"qas", contexts[c].qas}};
      data.push_back({{"title", contexts[c].uid}, {"paragraphs", json::array({paragraph})}});
      ++kept_contexts;
      kept_questions += static_cast<int64_t>(contexts[c].qas.size());
    }
    const std::string name = dev ? "dev" : "train";
    const json out = {{"version", "tatqa-span-1.0"}, {"data", data}};
    write_output(report, out_dir / str_cat(name, ".json"), out.dump() + "\n");
    report.counts.emplace_back(name + ".contexts", kept_contexts);
    report.counts.emplace_back(name + ".questions", kept_questions);
  }
  return report;
}

std::vector<std::string> earnings_paragraphs(std::string_view nlp_text, const std::string& source) {
  io::check_utf8_lines(nlp_text, source);
  std::vector<std::string> paragraphs;
  std::vector<std::string> header;
  int64_t token_column = -1, speaker_column = -1, punctuation_column = -1, prepunctuation_column = -1;
  std::string current, current_speaker;
  int64_t line = 0;
  size_t pos = 0;
  std::vector<std::string_view> fields;
  while (pos < nlp_text.size()) {
    size_t end = nlp_text.find('\n', pos);
    if (end == std::string_view::npos) end = nlp_text.size();
    std::string_view record = nlp_text.substr(pos, end - pos);
    pos = end + 1;
    ++line;
    if (!record.empty() && record.back() == '\r') record.remove_suffix(1);
    if (record.empty()) continue;
    fields.clear();
    size_t start = 0;
    while (true) {
      const size_t bar = record.find('|', start);
      fields.push_back(record.substr(start, bar == std::string_view::npos ? std::string_view::npos : bar - start));
      if (bar == std::string_view::npos) break;
      start = bar + 1;
    }
    if (header.empty()) {
      header.assign(fields.begin(), fields.end());
      auto find = [&](std::string_view name) -> int64_t {
        const auto it = std::find(header.begin(), header.end(), name);
        return it == header.end() ? -1 : it - header.begin();
      };
      token_column = find("token");
      speaker_column = find("speaker");
      punctuation_column = find("punctuation");
      prepunctuation_column = find("prepunctuation");  // earnings22 only
      check<FormatError>(token_column >= 0 && speaker_column >= 0, source, ":", line,
                         ": header lacks 'token' or 'speaker' columns");
      continue;
    }
    check<FormatError>(fields.size() == header.size(), source, ":", line, ": expected ", header.size(),
                       " '|'-separated fields as in the header, got ", fields.size());
    std::string word;
    if (prepunctuation_column >= 0) word += fields[static_cast<size_t>(prepunctuation_column)];
    word += fields[static_cast<size_t>(token_column)];
    if (punctuation_column >= 0) word += fields[static_cast<size_t>(punctuation_column)];
    const std::string_view speaker = fields[static_cast<size_t>(speaker_column)];
    if (speaker != current_speaker && !current.empty()) {
      paragraphs.push_back(std::move(current));
      current.clear();
    }
    current_speaker = speaker;
    if (word.empty()) continue;
    if (!current.empty()) current += ' ';
    current += word;
  }
  check<FormatError>(!header.empty(), source, ": empty file");
  if (!current.empty()) paragraphs.push_back(std::move(current));
  return paragraphs;
}

ConversionReport convert_earnings(const std::vector<fs::path>& inputs, const fs::path& out_dir, uint64_t seed,
                                  double eval_fraction) {
  std::vector<fs::path> files;
  for (const fs::path& input : inputs) {
    if (fs::is_directory(input)) {
      for (const auto& entry : fs::recursive_directory_iterator(input)) {
        if (entry.is_regular_file() && entry.path().extension() == ".nlp") files.push_back(entry.path());
      }
    } else {
      check<IoError>(fs::is_regular_file(input), input.string(), ": no such file or folder");
      files.push_back(input);
    }
  }
  check(!files.empty(), "earnings: no .nlp files under the given inputs");
  std::sort(files.begin(), files.end());
  const std::vector<int64_t> eval_calls = held_out_indices(static_cast<int64_t>(files.size()), eval_fraction, seed);
  fs::create_directories(out_dir);
  std::string outputs[2];
  int64_t calls[2] = {0, 0}, paragraphs[2] = {0, 0}, words[2] = {0, 0};
  for (size_t f = 0; f < files.size(); ++f) {
    const int split = is_held_out(eval_calls, static_cast<int64_t>(f)) ? 1 : 0;
    const std::vector<std::string> turns = earnings_paragraphs(read_file(files[f]), files[f].string());
    if (turns.empty()) continue;
    if (!outputs[split].empty()) outputs[split] += '\n';  // blank line: call (document) boundary
    for (const std::string& turn : turns) {
      outputs[split] += turn;
      outputs[split] += '\n';
      words[split] += 1 + static_cast<int64_t>(std::count(turn.begin(), turn.end(), ' '));
    }
    ++calls[split];
    paragraphs[split] += static_cast<int64_t>(turns.size());
  }
  ConversionReport report;
  const char* names[2] = {"train", "eval"};
  for (int split = 0; split < 2; ++split) {
    write_output(report, out_dir / str_cat(names[split], ".txt"), outputs[split]);
    report.counts.emplace_back(str_cat(names[split], ".calls"), calls[split]);
    report.counts.emplace_back(str_cat(names[split], ".paragraphs"), paragraphs[split]);
    report.counts.emplace_back(str_cat(names[split], ".words"), words[split]);
  }
  return report;
}

}  // namespace scalebert::train::data
