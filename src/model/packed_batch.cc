// Packing padded batches and scattering packed results back.
#include "model/packed_batch.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace scalebert {

int64_t PackedBatch::max_length() const {
  int64_t longest = 0;
  for (int64_t s = 0; s < sequences(); ++s) longest = std::max(longest, length(s));
  return longest;
}

void PackedBatch::add_sequence(std::span<const int32_t> ids, std::span<const int32_t> type_ids) {
  check(!ids.empty(), "sequence ", sequences(), " is empty");
  check(type_ids.empty() || type_ids.size() == ids.size(), "sequence ", sequences(), " has ", ids.size(),
        " ids but ", type_ids.size(), " token type ids");
  input_ids.insert(input_ids.end(), ids.begin(), ids.end());
  if (type_ids.empty()) {
    token_type_ids.insert(token_type_ids.end(), ids.size(), 0);
  } else {
    token_type_ids.insert(token_type_ids.end(), type_ids.begin(), type_ids.end());
  }
  for (size_t position = 0; position < ids.size(); ++position) position_ids.push_back(static_cast<int32_t>(position));
  sequence_offsets.push_back(tokens());
}

void PackedBatch::clear() {
  input_ids.clear();
  token_type_ids.clear();
  position_ids.clear();
  sequence_offsets.assign(1, 0);
}

namespace {

// Reads element i of an integer tensor (I64 or I32).
int64_t integer_at(const Tensor& tensor, int64_t index) {
  if (tensor.dtype() == DType::kI64) return tensor.data<int64_t>()[index];
  return tensor.data<int32_t>()[index];
}

void expect_integer_matrix(const Tensor& tensor, const Shape& shape, const char* what) {
  check(tensor.dtype() == DType::kI64 || tensor.dtype() == DType::kI32, what, " must be INT64 or INT32, got ",
        dtype_name(tensor.dtype()));
  check(tensor.shape() == shape, what, " has shape ", shape_string(tensor.shape()), ", expected ",
        shape_string(shape));
}

}  // namespace

PackedBatch PackedBatch::from_padded(const Tensor& input_ids, const Tensor& attention_mask,
                                     const Tensor& token_type_ids) {
  check(input_ids.rank() == 2, "input_ids must be (batch, sequence), got shape ", shape_string(input_ids.shape()));
  const int64_t B = input_ids.dim(0);
  const int64_t T = input_ids.dim(1);
  expect_integer_matrix(input_ids, {B, T}, "input_ids");
  if (attention_mask.defined()) expect_integer_matrix(attention_mask, {B, T}, "attention_mask");
  if (token_type_ids.defined()) expect_integer_matrix(token_type_ids, {B, T}, "token_type_ids");

  PackedBatch batch;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      const int64_t index = b * T + t;
      if (attention_mask.defined()) {
        int64_t keep = integer_at(attention_mask, index);
        check(keep == 0 || keep == 1, "attention_mask[", b, "][", t, "] is ", keep, ", expected 0 or 1");
        if (keep == 0) continue;
      }
      int64_t id = integer_at(input_ids, index);
      check(id >= 0 && id <= INT32_MAX, "input_ids[", b, "][", t, "] = ", id, " is not a valid token id");
      int64_t type = token_type_ids.defined() ? integer_at(token_type_ids, index) : 0;
      check(type >= 0 && type <= INT32_MAX, "token_type_ids[", b, "][", t, "] = ", type, " is negative");
      batch.input_ids.push_back(static_cast<int32_t>(id));
      batch.token_type_ids.push_back(static_cast<int32_t>(type));
      batch.position_ids.push_back(static_cast<int32_t>(t));
    }
    check(batch.tokens() > batch.sequence_offsets.back(), "row ", b, " of the batch has no token with attention_mask 1");
    batch.sequence_offsets.push_back(batch.tokens());
  }
  return batch;
}

Tensor unpack_rows(const PackedBatch& batch, const Tensor& packed, int64_t padded_length) {
  check(packed.rank() == 2 && packed.dim(0) == batch.tokens() && packed.dtype() == DType::kF32,
        "unpack_rows: packed rows have shape ", shape_string(packed.shape()), ", expected (", batch.tokens(),
        ", width) F32");
  const int64_t width = packed.dim(1);
  Tensor padded = Tensor::zeros({batch.sequences(), padded_length, width}, DType::kF32);
  for (int64_t s = 0; s < batch.sequences(); ++s) {
    for (int64_t n = batch.sequence_offsets[s]; n < batch.sequence_offsets[s + 1]; ++n) {
      const int64_t position = batch.position_ids[n];
      check(position < padded_length, "unpack_rows: position ", position, " beyond padded length ", padded_length);
      std::memcpy(padded.data<float>() + (s * padded_length + position) * width, packed.data<float>() + n * width,
                  width * sizeof(float));
    }
  }
  return padded;
}

}  // namespace scalebert
