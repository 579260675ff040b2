// Text in, answers out: a tokenizer, a loaded model, its packed inference weights and one inference
// session behind task-level calls (sentence embeddings, sequence classification, token
// classification with entity spans, extractive question answering).
//
// Batching: inputs are tokenized (truncated to max_length), ordered by token count so that a batch
// holds sequences of similar length (the attention cost of a packed batch grows with the square of
// its longest sequence, and similar lengths keep shape classes few), cut into batches of at most
// batch_size sequences and, when set, token_budget tokens, run, and every result is written back at
// its input's index: callers always get results in input order.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "model/bert_model.h"
#include "model/inference_session.h"
#include "model/inference_weights.h"
#include "text/bert_tokenizer.h"

namespace scalebert::store {
class MaterializedModel;
}

namespace scalebert::pipeline {

enum class Pooling {
  kCls,   // hidden state of [CLS] (the first token)
  kMean,  // mean of every token's hidden state, [CLS] and [SEP] included (sentence-transformers)
};
std::string_view pooling_name(Pooling pooling);
// "cls" or "mean"; InvalidArgument naming the value otherwise.
Pooling pooling_from_name(std::string_view name);

// Called after every batch with the inputs and tokens finished so far (for progress bars).
using ProgressCallback = std::function<void(int64_t sequences_done, int64_t tokens_done)>;

struct PipelineOptions {
  // Tokens per sequence including [CLS]/[SEP]; 0 = the model's default (see TextPipeline::max_length).
  int64_t max_length = 0;
  int64_t batch_size = 32;    // sequences per forward pass
  int64_t token_budget = 0;   // packed tokens per forward pass; 0 = no limit beyond batch_size
  std::optional<TaskHead> head;  // overrides the head detected from the checkpoint
  ProgressCallback progress;
  // Store locators: called with each replica that failed verification and was failed over while
  // the version was read; unset: written to standard error as "checkpoint store: ...".
  std::function<void(const std::string&)> on_store_warning;
};

// What the last call did (for throughput figures).
struct RunStats {
  int64_t sequences = 0;  // forward-pass sequences (QA windows count one each)
  int64_t tokens = 0;     // real tokens run through the encoder
  int64_t batches = 0;
  double seconds = 0.0;   // tokenization + forward passes + post-processing
};

struct Classification {
  int64_t label = 0;                // argmax of probabilities
  std::vector<float> probabilities;  // (L) softmax of the logits
};

// One token of a token classification (the special tokens are left out).
struct TokenLabel {
  std::string token;   // vocabulary piece, e.g. "##ing"
  text::Span bytes;    // byte span in the text
  text::Span chars;    // code point span (Python string indices)
  int64_t label = 0;   // argmax label index
  float score = 0.0f;  // its probability
};

// Consecutive tokens merged by their B-/I- tags (Hugging Face's "simple" aggregation): an entity
// starts at a B-X tag, or at an I-X tag that does not continue an X entity; O tags end it.
struct Entity {
  std::string type;    // label without its B-/I- prefix, e.g. "ORG"
  std::string text;    // the text between the first token's begin and the last token's end
  text::Span bytes;
  text::Span chars;
  float score = 0.0f;  // mean probability of its tokens
};

struct TokenClassification {
  std::vector<TokenLabel> tokens;
  std::vector<Entity> entities;
};

struct Answer {
  std::string text;    // context[bytes.begin, bytes.end)
  text::Span bytes;    // byte span in the context
  text::Span chars;    // code point span in the context
  float score = 0.0f;  // p_start * p_end, softmax over the context tokens of the best window
  int64_t window = 0;  // index of the doc-stride window the answer was found in
};

class TextPipeline {
 public:
  // Loads the tokenizer (vocab.txt, tokenizer_config.json) and the model of `model`, a folder (f32,
  // bf16 or int8 as `scalebert quantize` writes it) or a checkpoint-store locator
  // "store:ROOT[,ROOT...][@VERSION]" (docs/checkpoint_store.md), and packs its weights through
  // InferenceWeights::load: only the packed weights stay in memory, not the F32 parameter table.
  // A stored version is verified, failed over (options.on_store_warning) and materialized into a
  // temporary folder that lives as long as the pipeline. The default max_length is
  // sentence_bert_config.json's max_seq_length when the folder is a sentence-transformers model,
  // else max_position_embeddings, capped at 512. IoError for a missing folder or an unreadable
  // store version, FormatError/InvalidArgument from the loaders.
  static std::unique_ptr<TextPipeline> load(const std::filesystem::path& model, PipelineOptions options = {});
  ~TextPipeline();
  TextPipeline(const TextPipeline&) = delete;
  TextPipeline& operator=(const TextPipeline&) = delete;

  // Config, head, labels and directory of the model, with its parameter table's layout (names,
  // shapes, counts) but no values: the weights live packed in weights().
  const BertModel& model() const { return *model_; }
  const InferenceWeights& weights() const { return *weights_; }
  // What load() was given: the folder or the store locator.
  const std::string& source() const { return source_; }
  // The store version read, when source() is a locator; nullopt for a folder.
  std::optional<uint64_t> store_version() const;
  // Replicas failed over while the store version was read (empty for a folder).
  std::vector<std::string> store_warnings() const;
  const text::BertTokenizer& tokenizer() const { return *tokenizer_; }
  const PipelineOptions& options() const { return options_; }
  int64_t max_length() const { return max_length_; }
  int64_t hidden_size() const { return model_->config.hidden_size; }
  // Pooling declared by a sentence-transformers folder (1_Pooling/config.json), if any.
  std::optional<Pooling> declared_pooling() const { return declared_pooling_; }
  // Whether a sentence-transformers folder's modules.json ends in a Normalize module.
  bool declared_normalize() const { return declared_normalize_; }
  // Label names of the model's head (classification heads only).
  const std::vector<std::string>& labels() const { return labels_; }
  const RunStats& last_stats() const { return stats_; }
  void set_progress(ProgressCallback progress) { options_.progress = std::move(progress); }

  // [CLS] text [SEP] (or the pair template) truncated to max_length.
  text::Encoding encode(std::string_view text) const;
  text::Encoding encode_pair(std::string_view first, std::string_view second) const;

  // (S, C) F32 sentence embeddings, row s for texts[s]; L2-normalized rows when `normalize`.
  Tensor embed(std::span<const std::string> texts, Pooling pooling, bool normalize);

  // What sequence_vectors() takes from each sequence: its [CLS] hidden row, the mean of its hidden
  // rows, or the pooler output (needs a model with a pooler).
  enum class SequenceVector { kCls, kMean, kPooler };
  // (S, C) F32, row s for encodings[s], in input order (embed() and the frozen-encoder features).
  // [CLS] rows and the pooler need one row per sequence, so the last layer then runs on the [CLS]
  // rows only (SequenceOutputsOnly).
  Tensor sequence_vectors(std::span<const text::Encoding> encodings, SequenceVector which);
  // Sequence classification of texts, or of (first, second) pairs. Needs a classification head.
  std::vector<Classification> classify(std::span<const std::string> texts);
  std::vector<Classification> classify_pairs(std::span<const std::pair<std::string, std::string>> pairs);
  // Token classification (NER). Needs a token classification head; texts longer than max_length
  // are truncated (their tail gets no labels).
  std::vector<TokenClassification> token_classify(std::span<const std::string> texts);
  // Extractive QA over doc-stride windows of the context (max_length tokens each, consecutive
  // windows sharing doc_stride tokens). Needs a question answering head. The answer is the span
  // of at most max_answer_tokens context tokens with the highest p_start * p_end.
  std::vector<Answer> answer(std::span<const std::pair<std::string, std::string>> question_context,
                             int64_t max_answer_tokens = 30, int64_t doc_stride = 128);

  // The batching core, public for tests and new tasks: runs every encoding (in batches ordered by
  // length as described above) and calls `consume(outputs, batch, index_in_batch_order)` after each
  // forward pass, where `indices[k]` is the input index of the batch's sequence k.
  using BatchConsumer =
      std::function<void(const InferenceOutputs& outputs, const PackedBatch& batch, std::span<const int64_t> indices)>;
  void run_batches(std::span<const text::Encoding> encodings, const BatchConsumer& consume);

  // Held by a run_batches caller that reads only per-sequence outputs (pooled, sequence logits,
  // cls_hidden): the last layer then runs past its attention on the [CLS] rows only
  // (InferenceSession::set_sequence_outputs_only), and is back to every row however the scope ends.
  class SequenceOutputsOnly {
   public:
    explicit SequenceOutputsOnly(TextPipeline& pipeline);
    ~SequenceOutputsOnly();
    SequenceOutputsOnly(const SequenceOutputsOnly&) = delete;
    SequenceOutputsOnly& operator=(const SequenceOutputsOnly&) = delete;

   private:
    InferenceSession& session_;
  };

 private:
  TextPipeline() = default;
  void require_head(TaskHead head, std::string_view task) const;
  std::vector<Classification> classify_encodings(std::span<const text::Encoding> encodings);

  PipelineOptions options_;
  std::string source_;
  std::unique_ptr<store::MaterializedModel> materialized_;  // store locators only; before the weights
  std::unique_ptr<text::BertTokenizer> tokenizer_;
  std::shared_ptr<const BertModel> model_;
  std::shared_ptr<const InferenceWeights> weights_;
  std::unique_ptr<InferenceSession> session_;
  int64_t max_length_ = 0;
  std::optional<Pooling> declared_pooling_;
  bool declared_normalize_ = false;
  std::vector<std::string> labels_;
  RunStats stats_;
};

// Orders `lengths` for batching: indices sorted by length (stable, so equal lengths keep input
// order), then cut into consecutive groups of at most `batch_size` items and, when token_budget > 0,
// at most `token_budget` summed length (a single longer item still forms its own group).
std::vector<std::vector<int64_t>> plan_batches(std::span<const int64_t> lengths, int64_t batch_size,
                                               int64_t token_budget);

// Hugging Face "simple" aggregation of per-token labels into entities (see Entity); `labels` are the
// head's label names. `text` is the text the tokens' spans index.
std::vector<Entity> merge_entities(std::span<const TokenLabel> tokens, std::span<const std::string> labels,
                                   std::string_view text);

}  // namespace scalebert::pipeline
