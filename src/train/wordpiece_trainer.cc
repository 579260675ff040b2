// WordPiece vocabulary training by frequency-weighted pair merges, with incremental pair counts
// and a lazily updated max-heap (only the words that contain a merged pair are revisited).
#include "train/wordpiece_trainer.h"

#include <algorithm>
#include <map>
#include <queue>
#include <set>

#include "core/error.h"
#include "io/file_util.h"
#include "text/basic_tokenizer.h"
#include "text/utf8.h"

namespace scalebert::train {

WordPieceTrainer::WordPieceTrainer(WordPieceTrainerOptions options) : options_(std::move(options)) {
  check(!options_.continuing_prefix.empty(), "wordpiece trainer: empty continuation prefix");
}

void WordPieceTrainer::add_text(std::string_view text, const std::string& source) {
  text::BasicTokenizer basic({options_.lowercase, options_.strip_accents, options_.tokenize_chinese_chars}, {});
  text::NormalizedWords words;
  size_t pos = 0;
  int64_t line = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    ++line;
    try {
      basic.split(text.substr(pos, end - pos), words);
    } catch (const FormatError& error) {
      throw FormatError(str_cat(source, ":", line, ": ", error.what()));
    }
    pos = end + 1;
    ++stats_.lines;
    for (const text::NormalizedWords::Word& word : words.words) {
      if (word.end_char - word.first_char > options_.max_word_chars || word.end_char == word.first_char) continue;
      ++word_counts_[std::string(words.word_text(word))];
      ++stats_.words;
    }
  }
}

void WordPieceTrainer::add_file(const std::filesystem::path& path) { add_text(read_file(path), path.string()); }

std::vector<std::string> WordPieceTrainer::train() {
  check(!word_counts_.empty(), "wordpiece trainer: no words were counted (empty corpus)");
  check(options_.vocab_size > options_.special_tokens.size(), "wordpiece trainer: vocab_size ", options_.vocab_size,
        " cannot hold the ", options_.special_tokens.size(), " special tokens and an alphabet");
  // Words in a fixed order (sorted), so every later step is deterministic.
  std::vector<std::pair<std::string, int64_t>> words(word_counts_.begin(), word_counts_.end());
  std::sort(words.begin(), words.end());
  stats_.unique_words = static_cast<int64_t>(words.size());

  // Alphabet: characters weighted by word frequency; limit_alphabet keeps the most frequent.
  std::map<char32_t, int64_t> char_counts;
  for (const auto& [word, count] : words) {
    size_t pos = 0;
    while (pos < word.size()) char_counts[text::decode_utf8(word, pos)] += count;
  }
  std::vector<std::pair<char32_t, int64_t>> alphabet(char_counts.begin(), char_counts.end());
  if (options_.limit_alphabet > 0 && alphabet.size() > options_.limit_alphabet) {
    std::stable_sort(alphabet.begin(), alphabet.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
    alphabet.resize(options_.limit_alphabet);
    std::sort(alphabet.begin(), alphabet.end());
  }

  std::vector<std::string> tokens;
  std::unordered_map<std::string, int32_t> ids;
  auto add_token = [&](const std::string& token) -> int32_t {
    const auto [it, inserted] = ids.emplace(token, static_cast<int32_t>(tokens.size()));
    if (inserted) tokens.push_back(token);
    return it->second;
  };
  for (const std::string& special : options_.special_tokens) add_token(special);
  std::unordered_map<char32_t, std::pair<int32_t, int32_t>> char_ids;  // (initial id, continuation id)
  for (const auto& [code, count] : alphabet) {
    std::string piece;
    text::append_utf8(code, piece);
    char_ids[code].first = add_token(piece);
  }
  // "##c" only for characters that occur inside a word (punctuation, always a word of its own,
  // gets none), as the package adds them while splitting words.
  std::set<char32_t> continuations;
  for (const auto& [word, count] : words) {
    size_t pos = 0;
    text::decode_utf8(word, pos);
    while (pos < word.size()) {
      const char32_t code = text::decode_utf8(word, pos);
      if (char_ids.count(code)) continuations.insert(code);
    }
  }
  for (const char32_t code : continuations) {
    std::string piece;
    text::append_utf8(code, piece);
    char_ids[code].second = add_token(options_.continuing_prefix + piece);
  }
  stats_.alphabet = static_cast<int64_t>(tokens.size() - options_.special_tokens.size());

  // Words as symbol ids; characters outside the alphabet are skipped, as the package does.
  std::vector<std::vector<int32_t>> symbols(words.size());
  for (size_t w = 0; w < words.size(); ++w) {
    size_t pos = 0;
    while (pos < words[w].first.size()) {
      const bool first = pos == 0;  // by position in the word, as the package decides the "##" form
      const auto it = char_ids.find(text::decode_utf8(words[w].first, pos));
      if (it == char_ids.end()) continue;
      symbols[w].push_back(first ? it->second.first : it->second.second);
    }
  }

  auto key = [](int32_t a, int32_t b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); };
  std::unordered_map<uint64_t, int64_t> pair_counts;
  std::unordered_map<uint64_t, std::vector<int32_t>> pair_words;  // may hold stale or repeated words
  for (size_t w = 0; w < words.size(); ++w) {
    for (size_t i = 0; i + 1 < symbols[w].size(); ++i) {
      const uint64_t pair = key(symbols[w][i], symbols[w][i + 1]);
      pair_counts[pair] += words[w].second;
      pair_words[pair].push_back(static_cast<int32_t>(w));
    }
  }
  struct Entry {
    int64_t count;
    uint64_t pair;
  };
  // Highest count first; among equal counts the smaller (left id, right id).
  auto lower_priority = [](const Entry& a, const Entry& b) {
    return a.count < b.count || (a.count == b.count && a.pair > b.pair);
  };
  std::priority_queue<Entry, std::vector<Entry>, decltype(lower_priority)> heap(lower_priority);
  for (const auto& [pair, count] : pair_counts) heap.push({count, pair});

  std::vector<int64_t> visited(words.size(), -1);  // merge number that last rewrote each word
  std::vector<uint64_t> grown;                     // pairs whose count rose in this merge
  while (tokens.size() < options_.vocab_size && !heap.empty()) {
    const Entry top = heap.top();
    heap.pop();
    const int64_t current = pair_counts[top.pair];
    if (current != top.count) {
      if (current > 0) heap.push({current, top.pair});
      continue;
    }
    if (current < options_.min_frequency || current <= 0) break;
    const auto left = static_cast<int32_t>(top.pair >> 32);
    const auto right = static_cast<int32_t>(top.pair & 0xFFFFFFFFu);
    std::string_view right_text = tokens[static_cast<size_t>(right)];
    if (right_text.substr(0, options_.continuing_prefix.size()) == options_.continuing_prefix) {
      right_text.remove_prefix(options_.continuing_prefix.size());
    }
    const int32_t merged = add_token(tokens[static_cast<size_t>(left)] + std::string(right_text));
    ++stats_.merges;
    grown.clear();
    auto change = [&](int32_t a, int32_t b, int64_t delta, int32_t word) {
      const uint64_t pair = key(a, b);
      pair_counts[pair] += delta;
      if (delta > 0) {
        pair_words[pair].push_back(word);
        grown.push_back(pair);
      }
    };
    const std::vector<int32_t> candidates = std::move(pair_words[top.pair]);
    pair_words.erase(top.pair);
    for (int32_t w : candidates) {
      if (visited[static_cast<size_t>(w)] == stats_.merges) continue;
      visited[static_cast<size_t>(w)] = stats_.merges;
      std::vector<int32_t>& word = symbols[static_cast<size_t>(w)];
      const int64_t count = words[static_cast<size_t>(w)].second;
      for (size_t i = 0; i + 1 < word.size();) {
        if (word[i] != left || word[i + 1] != right) {
          ++i;
          continue;
        }
        change(left, right, -count, w);
        if (i > 0) {
          change(word[i - 1], left, -count, w);
          change(word[i - 1], merged, count, w);
        }
        if (i + 2 < word.size()) {
          change(right, word[i + 2], -count, w);
          change(merged, word[i + 2], count, w);
        }
        word[i] = merged;
        word.erase(word.begin() + static_cast<std::ptrdiff_t>(i + 1));
        ++i;
      }
    }
    std::sort(grown.begin(), grown.end());
    grown.erase(std::unique(grown.begin(), grown.end()), grown.end());
    for (uint64_t pair : grown) heap.push({pair_counts[pair], pair});
  }
  return tokens;
}

void write_vocab(const std::filesystem::path& path, const std::vector<std::string>& tokens) {
  std::string text;
  for (const std::string& token : tokens) {
    check(token.find('\n') == std::string::npos && !token.empty(), "write_vocab: token '", token,
          "' is empty or contains a line break");
    text += token;
    text += '\n';
  }
  write_file_atomic(path, text);
}

}  // namespace scalebert::train
