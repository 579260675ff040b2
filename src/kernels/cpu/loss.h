// Softmax cross-entropy losses, fused forward + backward, as torch.nn.CrossEntropyLoss (mean
// reduction, ignore_index) and the transformers heads use them: sequence classification
// (rows = sequences), token classification (rows = tokens, label -100 on ignored sub-words),
// masked LM (rows = tokens, V = vocabulary, -100 on unmasked tokens) and extractive QA (start/end
// over each sequence's tokens).
// Gradient convention: dlogits is OVERWRITTEN (ignored rows get zeros).
#pragma once

#include <cstdint>

namespace scalebert::kernels {

inline constexpr int32_t kIgnoreIndex = -100;  // PyTorch's default ignore_index

struct LossResult {
  double loss = 0.0;   // mean over counted rows; 0 when count == 0
  int64_t count = 0;   // rows whose target is not ignore_index
};

// Per row r with target t = targets[r] != ignore_index:
//   loss_r = logsumexp(logits[r]) - logits[r][t]
//   loss = sum_r loss_r / count
//   dlogits[r] = grad_scale / count * (softmax(logits[r]) - onehot(t))      (ignored rows: 0)
// grad_scale: a caller factor (1 normally; 1/k for k micro-batches of gradient accumulation).
// dlogits: (rows, V) OVERWRITTEN, or nullptr for the loss only; dlogits == logits is allowed (in place,
//          so a masked-LM step need not hold a second (rows, V) buffer).
// row_losses: (rows) caller scratch, receives loss_r (0 for ignored rows); the mean is summed from it
//          in row order in double, so the result is bitwise independent of the thread count.
// logits: (rows, V); targets: (rows), each in [0, V) or ignore_index (others throw InvalidArgument
//          naming the row, the target and V, before any output is written).
// Each row is read twice from memory (a blocked, max-subtracted log-sum-exp, then the gradient), so
// V in the tens of thousands streams; zero counted rows give loss 0 and zero gradient, not NaN.
LossResult cross_entropy_forward_backward(float* dlogits, float* row_losses, const float* logits,
                                          const int32_t* targets, int64_t rows, int64_t V, float grad_scale,
                                          int32_t ignore_index = kIgnoreIndex);

struct QaLossResult {
  double loss = 0.0;        // (start_loss + end_loss) / 2
  double start_loss = 0.0;  // mean over sequences whose start position is not ignored (0 when none)
  double end_loss = 0.0;
  int64_t start_count = 0;
  int64_t end_count = 0;
};

// Extractive QA span loss as BertForQuestionAnswering computes it, on the packed layout:
// for sequence s of length L (tokens seq_offsets[s] .. seq_offsets[s+1]-1), the start (end) logits
// are column 0 (1) of those rows of logits: (N, 2); positions are clamped to [0, L] and the clamped
// value L (transformers' ignored_index = sequence length) is ignored. loss = (start + end) / 2, each
// a mean cross-entropy over its non-ignored sequences.
// Packed-layout difference from transformers on a padded batch: there, L is the padded length, so a
// position inside the padding is a (meaningless) target; here every position >= L is ignored.
// dlogits: (N, 2) OVERWRITTEN (grad_scale * 0.5 / count * (softmax - onehot) per side), or nullptr.
// start_positions, end_positions: (S). seq_offsets: (S + 1) as attention takes them.
QaLossResult qa_span_loss_forward_backward(float* dlogits, const float* logits, const int64_t* seq_offsets, int64_t S,
                                           const int32_t* start_positions, const int32_t* end_positions,
                                           float grad_scale);

}  // namespace scalebert::kernels
