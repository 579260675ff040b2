// WordPiece vocabulary: token <-> id, with the two lookups greedy WordPiece needs on its hot path
// (word-initial pieces, and "##" continuation pieces looked up without building "##" strings).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace scalebert::text {

class Vocab {
 public:
  // Reads vocab.txt: one token per line, id = line index (LF or CRLF; trailing whitespace trimmed,
  // as the `tokenizers` package does). A token that appears twice keeps the id of its LAST line,
  // as `tokenizers` does; both ids still decode to it. Throws IoError when the file cannot be read
  // and FormatError (naming file and line) for invalid UTF-8, an empty file, or no [UNK] line.
  static Vocab load(const std::filesystem::path& path);
  // Builds a vocabulary from tokens in id order; `origin` names it in error messages.
  static Vocab from_tokens(const std::vector<std::string>& tokens, std::string_view origin = "<tokens>");

  int32_t size() const { return token_begin_.empty() ? 0 : static_cast<int32_t>(token_begin_.size()) - 1; }
  // Id of an exact token, or -1.
  int32_t find(std::string_view token) const { return initial_.find(buffer_, token); }
  // Id of `piece` as a continuation, i.e. of the token "##" + piece, or -1.
  int32_t find_continuation(std::string_view piece) const { return continuation_.find(buffer_, piece); }
  // Throws InvalidArgument for an id outside [0, size).
  std::string_view token(int32_t id) const;
  // Longest token in bytes (continuation tokens counted without "##"): greedy matching never
  // needs to try a longer piece.
  size_t max_token_bytes() const { return max_token_bytes_; }
  int32_t unk_id() const { return unk_id_; }
  const std::string& origin() const { return origin_; }

 private:
  // Open-addressing hash table over string_views into buffer_; linear probing, load <= 0.5.
  class Table {
   public:
    void build(const std::string& buffer, const std::vector<std::pair<uint32_t, uint32_t>>& keys,
               const std::vector<int32_t>& ids);
    int32_t find(const std::string& buffer, std::string_view key) const;

   private:
    struct Slot {
      uint32_t offset = 0;  // key bytes in buffer
      uint32_t length = 0;
      uint32_t tag = 0;     // high hash bits, checked before comparing bytes
      int32_t id = -1;      // -1: empty slot
    };
    std::vector<Slot> slots_;
    uint64_t mask_ = 0;
  };

  void build(std::string_view origin);

  std::string buffer_;                 // every token's bytes, back to back
  std::vector<uint32_t> token_begin_;  // (V+1) byte offset of token i in buffer_, plus the end
  Table initial_;
  Table continuation_;
  size_t max_token_bytes_ = 0;
  int32_t unk_id_ = -1;
  std::string origin_;
};

// Hash of a short byte string; shared by the vocabulary tables.
uint64_t hash_bytes(const char* data, size_t length);

}  // namespace scalebert::text
