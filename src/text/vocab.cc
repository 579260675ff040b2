// Loads vocab.txt and builds the hash tables that WordPiece queries.
#include "text/vocab.h"

#include <bit>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "text/unicode_tables.h"
#include "text/utf8.h"

namespace scalebert::text {

uint64_t hash_bytes(const char* data, size_t length) {
  // 8 bytes at a time with a multiply-xorshift mix (splitmix64 constants); tokens are short, so
  // this is one or two rounds for almost every lookup.
  uint64_t hash = 0x9E3779B97F4A7C15ULL ^ (length * 0xFF51AFD7ED558CCDULL);
  while (length >= 8) {
    uint64_t word;
    std::memcpy(&word, data, 8);
    hash = (hash ^ word) * 0xBF58476D1CE4E5B9ULL;
    hash ^= hash >> 31;
    data += 8;
    length -= 8;
  }
  if (length > 0) {
    uint64_t word = 0;
    std::memcpy(&word, data, length);
    hash = (hash ^ word) * 0x94D049BB133111EBULL;
    hash ^= hash >> 29;
  }
  hash *= 0xBF58476D1CE4E5B9ULL;
  return hash ^ (hash >> 32);
}

void Vocab::Table::build(const std::string& buffer, const std::vector<std::pair<uint32_t, uint32_t>>& keys,
                         const std::vector<int32_t>& ids) {
  const uint64_t capacity = std::bit_ceil(std::max<uint64_t>(16, 2 * keys.size()));
  slots_.assign(capacity, Slot{});
  mask_ = capacity - 1;
  for (size_t i = 0; i < keys.size(); ++i) {
    const auto [offset, length] = keys[i];
    const uint64_t hash = hash_bytes(buffer.data() + offset, length);
    const auto tag = static_cast<uint32_t>(hash >> 32);
    for (uint64_t slot = hash & mask_;; slot = (slot + 1) & mask_) {
      Slot& entry = slots_[slot];
      if (entry.id < 0) {
        entry = Slot{offset, length, tag, ids[i]};
        break;
      }
      // A duplicate token keeps its last id, as the `tokenizers` package (a HashMap insert) does.
      if (entry.tag == tag && entry.length == length &&
          std::memcmp(buffer.data() + entry.offset, buffer.data() + offset, length) == 0) {
        entry.id = ids[i];
        break;
      }
    }
  }
}

int32_t Vocab::Table::find(const std::string& buffer, std::string_view key) const {
  const uint64_t hash = hash_bytes(key.data(), key.size());
  const auto tag = static_cast<uint32_t>(hash >> 32);
  for (uint64_t slot = hash & mask_;; slot = (slot + 1) & mask_) {
    const Slot& entry = slots_[slot];
    if (entry.id < 0) return -1;
    if (entry.tag == tag && entry.length == key.size() &&
        std::memcmp(buffer.data() + entry.offset, key.data(), key.size()) == 0) {
      return entry.id;
    }
  }
}

Vocab Vocab::load(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw IoError(str_cat("cannot open vocabulary file ", path.string()));
  std::ostringstream contents;
  contents << file.rdbuf();
  if (file.bad()) throw IoError(str_cat("cannot read vocabulary file ", path.string()));
  const std::string text = contents.str();

  Vocab vocab;
  vocab.buffer_.reserve(text.size());
  size_t line_start = 0;
  size_t line_number = 1;
  while (line_start < text.size()) {
    size_t line_end = text.find('\n', line_start);
    const size_t next = line_end == std::string::npos ? text.size() : line_end + 1;
    if (line_end == std::string::npos) line_end = text.size();
    std::string_view line(text.data() + line_start, line_end - line_start);
    try {
      validate_utf8(line);
    } catch (const FormatError& error) {
      throw FormatError(str_cat("vocabulary ", path.string(), " line ", line_number, ": ", error.what()));
    }
    // Rust's str::trim_end: drop trailing White_Space code points (this also removes the '\r' of
    // CRLF files; `tokenizers` sees "\r" as whitespace too).
    while (!line.empty()) {
      size_t back = line.size() - 1;
      while (back > 0 && (static_cast<unsigned char>(line[back]) & 0xC0) == 0x80) --back;
      size_t pos = back;
      const char32_t code = decode_utf8(line, pos);
      if (!(unicode::flags(code) & unicode::kWhite)) break;
      line.remove_suffix(line.size() - back);
    }
    vocab.token_begin_.push_back(static_cast<uint32_t>(vocab.buffer_.size()));
    vocab.buffer_.append(line);
    line_start = next;
    ++line_number;
  }
  if (vocab.token_begin_.empty()) throw FormatError(str_cat("vocabulary ", path.string(), " is empty"));
  vocab.token_begin_.push_back(static_cast<uint32_t>(vocab.buffer_.size()));
  vocab.build(path.string());
  return vocab;
}

Vocab Vocab::from_tokens(const std::vector<std::string>& tokens, std::string_view origin) {
  Vocab vocab;
  for (size_t i = 0; i < tokens.size(); ++i) {
    try {
      validate_utf8(tokens[i]);
    } catch (const FormatError& error) {
      throw FormatError(str_cat("vocabulary ", origin, " token ", i, ": ", error.what()));
    }
    vocab.token_begin_.push_back(static_cast<uint32_t>(vocab.buffer_.size()));
    vocab.buffer_.append(tokens[i]);
  }
  if (vocab.token_begin_.empty()) throw FormatError(str_cat("vocabulary ", origin, " is empty"));
  vocab.token_begin_.push_back(static_cast<uint32_t>(vocab.buffer_.size()));
  vocab.build(origin);
  return vocab;
}

void Vocab::build(std::string_view origin) {
  origin_ = std::string(origin);
  // token_begin_ holds V+1 entries: the last is the end of the final token.
  const size_t count = token_begin_.size() - 1;
  std::vector<std::pair<uint32_t, uint32_t>> initial_keys, continuation_keys;
  std::vector<int32_t> initial_ids, continuation_ids;
  initial_keys.reserve(count);
  initial_ids.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    const uint32_t begin = token_begin_[i];
    const uint32_t length = token_begin_[i + 1] - begin;
    initial_keys.emplace_back(begin, length);
    initial_ids.push_back(static_cast<int32_t>(i));
    max_token_bytes_ = std::max<size_t>(max_token_bytes_, length);
    if (length >= 2 && buffer_[begin] == '#' && buffer_[begin + 1] == '#') {
      continuation_keys.emplace_back(begin + 2, length - 2);
      continuation_ids.push_back(static_cast<int32_t>(i));
    }
  }
  initial_.build(buffer_, initial_keys, initial_ids);
  continuation_.build(buffer_, continuation_keys, continuation_ids);
  unk_id_ = find("[UNK]");
  if (unk_id_ < 0) throw FormatError(str_cat("vocabulary ", origin, " has no [UNK] token"));
}

std::string_view Vocab::token(int32_t id) const {
  check(id >= 0 && id < size(), "token id ", id, " outside vocabulary ", origin_, " of ", size(), " tokens");
  return std::string_view(buffer_).substr(token_begin_[id], token_begin_[id + 1] - token_begin_[id]);
}

}  // namespace scalebert::text
