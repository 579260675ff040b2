// A batch of sequences with the padding removed: the real tokens of every sequence back to back,
// with prefix offsets. Packing is what makes short tweets cheap: no matrix product, softmax or
// layer norm ever touches a pad token.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/tensor.h"

namespace scalebert {

struct PackedBatch {
  std::vector<int32_t> input_ids;            // (N) token ids
  std::vector<int32_t> token_type_ids;       // (N) segment ids (0 for the first text, 1 for the second)
  std::vector<int32_t> position_ids;         // (N) position of each token in its original row
  std::vector<int64_t> sequence_offsets{0};  // (S + 1) sequence s is tokens [offsets[s], offsets[s+1])

  int64_t tokens() const { return static_cast<int64_t>(input_ids.size()); }
  int64_t sequences() const { return static_cast<int64_t>(sequence_offsets.size()) - 1; }
  int64_t length(int64_t sequence) const { return sequence_offsets[sequence + 1] - sequence_offsets[sequence]; }
  int64_t max_length() const;

  // Appends one sequence at positions 0..L-1; `type_ids` empty means all zero. Throws
  // InvalidArgument for an empty sequence or mismatched lengths.
  void add_sequence(std::span<const int32_t> ids, std::span<const int32_t> type_ids = {});
  void clear();

  // Packs padded tensors as Hugging Face takes them: input_ids (B, T) I64 or I32, attention_mask
  // (B, T) (1 keeps a token, 0 drops it; undefined keeps all), token_type_ids (B, T) or undefined.
  // A kept token keeps its column as position id, exactly as BertModel computes it, so left- or
  // right-padded rows give the same hidden states as Hugging Face. A row with no kept token is an
  // InvalidArgument naming the row.
  static PackedBatch from_padded(const Tensor& input_ids, const Tensor& attention_mask = Tensor(),
                                 const Tensor& token_type_ids = Tensor());
};

// Scatters packed rows (N, W) back to a padded (B, T, W) tensor (zeros at dropped positions) using
// the batch's sequences and position ids. `padded_length` T must exceed every position id.
Tensor unpack_rows(const PackedBatch& batch, const Tensor& packed, int64_t padded_length);

}  // namespace scalebert
