// Compares the BERT tokenizer with ground truth from the `tokenizers` package on every record of
// <fixtures>/tokenizer/tokenizer_ground_truth.jsonl (reference/tokenizer_ground_truth.py): ids,
// type ids, word ids and code point offsets of every window, and the refusals.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "testing.h"
#include "text/bert_tokenizer.h"

namespace scalebert::text {
namespace {

using nlohmann::json;

std::string describe_window(const Encoding& encoding, const std::vector<Span>& offsets) {
  std::ostringstream out;
  out << "ids [";
  for (size_t i = 0; i < encoding.size(); ++i) out << (i ? " " : "") << encoding.ids[i];
  out << "] type [";
  for (size_t i = 0; i < encoding.size(); ++i) out << (i ? " " : "") << encoding.type_ids[i];
  out << "] words [";
  for (size_t i = 0; i < encoding.size(); ++i) out << (i ? " " : "") << encoding.word_ids[i];
  out << "] offsets [";
  for (size_t i = 0; i < offsets.size(); ++i) out << (i ? " " : "") << offsets[i].begin << "-" << offsets[i].end;
  out << "]";
  return out.str();
}

std::string describe_expected(const json& window) {
  std::ostringstream out;
  out << "ids " << window["ids"].dump() << " type " << window["type_ids"].dump() << " words "
      << window["word_ids"].dump() << " offsets " << window["offsets"].dump();
  return out.str();
}

bool window_matches(const json& expected, const Encoding& got, const std::vector<Span>& offsets) {
  const auto ids = expected["ids"].get<std::vector<int32_t>>();
  const auto type_ids = expected["type_ids"].get<std::vector<int32_t>>();
  const auto word_ids = expected["word_ids"].get<std::vector<int32_t>>();
  const auto& expected_offsets = expected["offsets"];
  if (ids != got.ids || type_ids != got.type_ids || word_ids != got.word_ids) return false;
  if (expected_offsets.size() != offsets.size()) return false;
  for (size_t i = 0; i < offsets.size(); ++i) {
    if (expected_offsets[i][0].get<uint32_t>() != offsets[i].begin ||
        expected_offsets[i][1].get<uint32_t>() != offsets[i].end) {
      return false;
    }
  }
  return true;
}

TruncationStrategy strategy_of(const std::string& name) {
  if (name == "longest_first") return TruncationStrategy::kLongestFirst;
  if (name == "only_first") return TruncationStrategy::kOnlyFirst;
  if (name == "only_second") return TruncationStrategy::kOnlySecond;
  throw InvalidArgument(str_cat("unknown truncation strategy '", name, "' in ground truth"));
}

TEST(TokenizerGroundTruth, MatchesTokenizersPackageOnEveryRecord) {
  const std::filesystem::path folder = testing::fixture_path("tokenizer");
  const std::filesystem::path records_path = folder / "tokenizer_ground_truth.jsonl";
  SCALEBERT_REQUIRE_PATH(records_path);
  const Vocab vocab = Vocab::load(folder / "vocab.txt");
  std::map<std::pair<bool, bool>, std::unique_ptr<BertTokenizer>> tokenizers;
  auto tokenizer_for = [&](bool lowercase, bool strip_accents) -> const BertTokenizer& {
    auto& slot = tokenizers[{lowercase, strip_accents}];
    if (!slot) {
      BertTokenizerOptions options;
      options.lowercase = lowercase;
      options.strip_accents = strip_accents;
      slot = BertTokenizer::from_vocab_file(folder / "vocab.txt", options);
    }
    return *slot;
  };

  std::ifstream file(records_path);
  std::string line;
  size_t line_number = 0, mismatches = 0;
  std::map<std::string, size_t> kinds;
  std::vector<std::string> reports;
  while (std::getline(file, line)) {
    ++line_number;
    const json record = json::parse(line);
    const std::string kind = record["kind"];
    ++kinds[kind];
    const BertTokenizer& tokenizer = tokenizer_for(record["lowercase"], record["strip_accents"]);
    const std::string text = record["text"];
    const std::optional<std::string> text_b =
        record.contains("text_b") ? std::optional<std::string>(record["text_b"].get<std::string>()) : std::nullopt;

    std::vector<Encoding> got;
    std::string error;
    try {
      if (kind == "single") {
        got.push_back(tokenizer.encode(text));
      } else if (kind == "pair") {
        got.push_back(tokenizer.encode_pair(text, *text_b));
      } else if (kind == "qa") {
        got = tokenizer.encode_qa_windows(text, *text_b, record["max_length"], record["stride"]);
      } else {
        Truncation truncation{record["max_length"], strategy_of(record["strategy"]), record["stride"]};
        got = tokenizer.encode_with_overflow(text, text_b ? std::optional<std::string_view>(*text_b) : std::nullopt,
                                             truncation);
      }
    } catch (const InvalidArgument& refused) {
      error = refused.what();
    }

    std::ostringstream report;
    const std::string where = str_cat("line ", line_number, " (", kind, ", ", record["source"].get<std::string>(),
                                      ", lowercase=", record["lowercase"], ", strip_accents=", record["strip_accents"],
                                      ") text=", json(text).dump(), text_b ? " text_b=" + json(*text_b).dump() : "");
    bool ok = true;
    if (record.contains("error")) {
      if (error.empty()) {
        ok = false;
        report << where << ": the package refused (" << record["error"].get<std::string>()
               << ") but we produced " << got.size() << " windows";
      }
    } else if (!error.empty()) {
      ok = false;
      report << where << ": we refused (" << error << ") but the package did not";
    } else if (got.size() != record["windows"].size()) {
      ok = false;
      report << where << ": " << got.size() << " windows, expected " << record["windows"].size();
    } else {
      for (size_t w = 0; w < got.size() && ok; ++w) {
        const std::vector<Span> offsets = codepoint_offsets(got[w], text, text_b.value_or(""));
        if (!window_matches(record["windows"][w], got[w], offsets)) {
          ok = false;
          report << where << " window " << w << ":\n  expected " << describe_expected(record["windows"][w])
                 << "\n  got      " << describe_window(got[w], offsets);
        }
      }
    }
    if (!ok) {
      ++mismatches;
      if (reports.size() < 5) reports.push_back(report.str());
    }
  }
  for (const std::string& report : reports) ADD_FAILURE() << report;
  EXPECT_EQ(mismatches, 0u) << "of " << line_number << " records";
  // The file must hold every kind of record; an empty or truncated fixture is a failure.
  EXPECT_GT(kinds["single"], 0u);
  EXPECT_GT(kinds["pair"], 0u);
  EXPECT_GT(kinds["truncate"], 0u);
  EXPECT_GT(kinds["qa"], 0u);
  std::cout << "compared " << line_number << " records: " << kinds["single"] << " single, " << kinds["pair"]
            << " pair, " << kinds["truncate"] << " truncate, " << kinds["qa"] << " qa\n";
}

}  // namespace
}  // namespace scalebert::text
