// What a served model computes: its task (embeddings, classification, NER, QA) over a loaded BERT
// model, how a KServe v2 request becomes packed sequences (token tensors or text tokenized here),
// and how the encoder's outputs become the task's output tensors.
//
// Inputs (by name; config.pbtxt declares which a model takes):
//   text, text_pair (BYTES [B, 1])      embeddings, classification, ner (text_pair: pairs)
//   question, context (BYTES [B, 1])    qa (doc-stride windows over the context)
//   input_ids, attention_mask, token_type_ids (INT64 or INT32 [B, T])   every task
// Outputs (per task; shape after the batch dimension):
//   embeddings:     embeddings [C], last_hidden_state [T, C], pooler_output [C]
//   classification: logits [L], probabilities [L], label [1] BYTES, label_id [1] INT64
//   ner:            logits [T, L], label_ids [T] INT64 (-1 at dropped positions),
//                   entities [1] BYTES (JSON list of {type, text, start, end, score}; text inputs)
//   qa:             start_logits [T], end_logits [T] (token inputs), answer [1] BYTES,
//                   answer_start [1], answer_end [1] INT64 (code points), score [1] FP32 (text inputs)
// T is the request's T for token inputs, the longest sequence of the request for text.
#pragma once

#include <cstdint>
#include <filesystem>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "model/bert_model.h"
#include "model/inference_session.h"
#include "model/inference_weights.h"
#include "pipeline/text_pipeline.h"
#include "serve/batcher.h"
#include "serve/model_config.h"
#include "serve/protocol.h"
#include "text/bert_tokenizer.h"

namespace scalebert::serve {

enum class Task { kEmbeddings, kClassification, kTokenClassification, kQuestionAnswering };
std::string_view task_name(Task task);
// "embeddings", "classification", "ner", "qa"; InvalidArgument otherwise.
Task task_from_name(std::string_view name);

// A model version loaded for serving: tokenizer, weights packed once (shared by every instance),
// and the task settings from config.pbtxt's parameters.
struct TaskModel {
  Task task = Task::kEmbeddings;
  std::unique_ptr<text::BertTokenizer> tokenizer;
  // Config, head, labels and directory only: the parameter table is released after packing
  // (weights->model; see InferenceWeights::load).
  std::shared_ptr<const BertModel> model;
  // Packed in each Linear's precision (f32, bf16 or int8, from the folder's quantization recipe).
  std::shared_ptr<const InferenceWeights> weights;
  int64_t max_length = 0;  // tokens per sequence, [CLS]/[SEP] included
  bool truncate = true;    // longer sequences: truncate (true) or 400 (false)
  pipeline::Pooling pooling = pipeline::Pooling::kMean;
  bool normalize = false;
  int64_t doc_stride = 128;
  int64_t max_answer_tokens = 30;
  std::vector<std::string> labels;

  // Loads the model folder `directory` (f32, bf16 or int8, as `scalebert quantize` writes them)
  // for `config` through InferenceWeights::load, the path the CLI uses; checks that every declared
  // input and output is one the task has, with its data type and rank. FormatError/InvalidArgument
  // naming the field.
  static std::unique_ptr<TaskModel> load(const ModelConfig& config, const std::filesystem::path& directory);
};

// One sequence of a request, ready to pack.
struct JobSequence {
  int64_t item = 0;                // the request row it answers
  std::vector<int32_t> ids;        // (L)
  std::vector<int32_t> type_ids;   // (L)
  std::vector<int32_t> positions;  // (L) position ids (the padded column for token inputs)
};

// A request in flight: its sequences, then the encoder's results per sequence, written by the
// instance that ran it, and the promise the HTTP thread waits on.
class InferJob : public BatchJob {
 public:
  int64_t batch_size() const override { return static_cast<int64_t>(sequences.size()); }

  // Set by prepare_job.
  int64_t items = 0;             // B
  int64_t padded_length = 0;     // T of the outputs
  bool text_mode = false;
  std::vector<std::string> texts, pairs;  // (B) text/text_pair or question/context
  std::vector<text::Encoding> encodings;  // (sequences) text mode only
  std::vector<int64_t> window;            // (sequences) QA window number within its item
  std::vector<JobSequence> sequences;
  std::vector<std::string> outputs;       // names to produce
  std::vector<bool> binary;               // (outputs) binary data

  // Set by the instance (run_batch).
  // (sequences) (L, C) when the task needs token states; (1, C), the [CLS] row alone, when the
  // batch ran in [CLS]-row mode (cls-pooled embeddings with no last_hidden_state asked for).
  std::vector<std::vector<float>> hidden;
  std::vector<std::vector<float>> pooled;  // (sequences) (C) pooler output, when present
  std::vector<std::vector<float>> logits;  // (sequences) (L, labels) or (labels)
  Clock::time_point started{}, computed{};
  int64_t compute_input_ns = 0, compute_infer_ns = 0, compute_output_ns = 0;

  // Completion: ok, or an HTTP status and message.
  void complete() { done_.set_value(); }
  void fail(int status, std::string message) {
    error_status = status;
    error_message = std::move(message);
    done_.set_value();
  }
  std::future<void> future() { return done_.get_future(); }
  int error_status = 0;
  std::string error_message;

 private:
  std::promise<void> done_;
};

// Validates `request` against the config and the task and turns it into sequences (tokenizing
// text). InvalidArgument (400) naming the input for anything wrong.
std::shared_ptr<InferJob> prepare_job(const TaskModel& model, const ModelConfig& config, const InferRequest& request);

// Packs the jobs' sequences into one batch, runs `session`, and copies each sequence's results
// into its job. `batch` is reused scratch. Throws what the session throws.
void run_batch(const TaskModel& model, InferenceSession& session, std::span<InferJob* const> jobs,
               PackedBatch& batch);

// The output tensors of a finished job.
std::vector<WireTensor> finish_job(const TaskModel& model, const InferJob& job);

}  // namespace scalebert::serve
