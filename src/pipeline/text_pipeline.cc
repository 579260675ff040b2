// TextPipeline: loading (a model folder or a checkpoint-store locator, packed weights only),
// tokenization with truncation, length-ordered batching over one InferenceSession, and the
// post-processing of each task (pooling, softmax, entity merging, answer span search).
#include "pipeline/text_pipeline.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <optional>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/file_util.h"
#include "io/store/locator.h"
#include "kernels/cpu/pooling.h"
#include "kernels/cpu/softmax.h"
#include "model/inference_weights.h"
#include "model/packed_batch.h"

namespace scalebert::pipeline {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Reads a JSON file of a sentence-transformers folder; FormatError naming the file when malformed.
nlohmann::json read_json(const std::filesystem::path& path) {
  try {
    return nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& error) {
    throw FormatError(str_cat(path.string(), ": not valid JSON: ", error.what()));
  }
}

int64_t argmax(const float* values, int64_t count) {
  return static_cast<int64_t>(std::max_element(values, values + count) - values);
}

// B-/I- prefix and entity type of a label, as transformers' TokenClassificationPipeline.get_tag:
// a label without a prefix counts as an inside tag of its own name ("O" included).
std::pair<char, std::string_view> split_tag(std::string_view label) {
  if (label.size() >= 2 && (label[0] == 'B' || label[0] == 'I') && label[1] == '-') {
    return {label[0], label.substr(2)};
  }
  return {'I', label};
}

}  // namespace

TextPipeline::SequenceOutputsOnly::SequenceOutputsOnly(TextPipeline& pipeline) : session_(*pipeline.session_) {
  session_.set_sequence_outputs_only(true);
}

TextPipeline::SequenceOutputsOnly::~SequenceOutputsOnly() { session_.set_sequence_outputs_only(false); }

std::string_view pooling_name(Pooling pooling) { return pooling == Pooling::kCls ? "cls" : "mean"; }

Pooling pooling_from_name(std::string_view name) {
  if (name == "cls") return Pooling::kCls;
  if (name == "mean") return Pooling::kMean;
  throw InvalidArgument(str_cat("unknown pooling \"", name, "\" (expected cls or mean)"));
}

std::vector<std::vector<int64_t>> plan_batches(std::span<const int64_t> lengths, int64_t batch_size,
                                               int64_t token_budget) {
  check(batch_size > 0, "batch size must be positive, got ", batch_size);
  check(token_budget >= 0, "token budget must be non-negative, got ", token_budget);
  std::vector<int64_t> order(lengths.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return lengths[a] < lengths[b]; });
  std::vector<std::vector<int64_t>> batches;
  int64_t batch_tokens = 0;
  for (int64_t index : order) {
    const bool full = !batches.empty() &&
                      (static_cast<int64_t>(batches.back().size()) >= batch_size ||
                       (token_budget > 0 && batch_tokens + lengths[index] > token_budget));
    if (batches.empty() || full) {
      batches.emplace_back();
      batch_tokens = 0;
    }
    batches.back().push_back(index);
    batch_tokens += lengths[index];
  }
  return batches;
}

std::vector<Entity> merge_entities(std::span<const TokenLabel> tokens, std::span<const std::string> labels,
                                   std::string_view text) {
  std::vector<Entity> entities;
  std::string_view open_type;  // type of the group being built; "" when none
  float score_sum = 0.0f;
  int64_t count = 0;
  bool open = false;
  auto flush = [&]() {
    if (open && open_type != "O") {
      Entity& entity = entities.back();
      entity.score = score_sum / static_cast<float>(count);
      entity.text = std::string(text.substr(entity.bytes.begin, entity.bytes.end - entity.bytes.begin));
    } else if (open) {
      entities.pop_back();  // a group of O tokens is not an entity
    }
    open = false;
  };
  for (const TokenLabel& token : tokens) {
    check(token.label >= 0 && token.label < static_cast<int64_t>(labels.size()), "token label ", token.label,
          " outside the ", labels.size(), " labels");
    const auto [prefix, type] = split_tag(labels[token.label]);
    if (open && type == open_type && prefix != 'B') {
      Entity& entity = entities.back();
      entity.bytes.end = token.bytes.end;
      entity.chars.end = token.chars.end;
      score_sum += token.score;
      ++count;
      continue;
    }
    flush();
    Entity& entity = entities.emplace_back();
    entity.type = std::string(type);
    entity.bytes = token.bytes;
    entity.chars = token.chars;
    open_type = type;
    score_sum = token.score;
    count = 1;
    open = true;
  }
  flush();
  return entities;
}

TextPipeline::~TextPipeline() = default;

std::unique_ptr<TextPipeline> TextPipeline::load(const std::filesystem::path& model_path, PipelineOptions options) {
  check(options.batch_size > 0, "batch size must be positive, got ", options.batch_size);
  check(options.token_budget >= 0, "token budget must be non-negative, got ", options.token_budget);
  check(options.max_length >= 0, "max length must be non-negative, got ", options.max_length);
  std::unique_ptr<TextPipeline> pipeline(new TextPipeline());
  pipeline->options_ = std::move(options);
  pipeline->source_ = model_path.string();

  // A store locator: the version is read with verification and failover and written out as a
  // temporary folder, which the pipeline keeps until it is destroyed (the tokenizer, the model and
  // callers such as `scalebert info` read files of model().directory).
  std::filesystem::path directory = model_path;
  if (const auto locator = store::parse_store_locator(pipeline->source_)) {
    auto on_warning = pipeline->options_.on_store_warning;
    if (!on_warning) {
      on_warning = [](const std::string& warning) { std::fprintf(stderr, "checkpoint store: %s\n", warning.c_str()); };
    }
    pipeline->materialized_ = std::make_unique<store::MaterializedModel>(
        store::materialize_version(locator->roots, locator->version, "pipeline", on_warning));
    directory = pipeline->materialized_->directory();
  }
  check<IoError>(std::filesystem::is_directory(directory), "model directory ", directory.string(),
                 " does not exist or is not a directory");
  pipeline->tokenizer_ = text::BertTokenizer::from_model_dir(directory);
  // The path every inference user shares (InferenceWeights::load over quant::load_model): f32,
  // bf16 and int8 folders, each Linear packed in its recipe's precision, and the F32 parameter
  // table released after packing, so the pipeline holds only packed weights (an int8 model about
  // its file size). model_ is that model's copy (config, head, labels, directory) with the
  // parameter layout registered but no values, so that names, shapes and counts stay answerable.
  pipeline->weights_ = InferenceWeights::load(directory, pipeline->options_.head);
  auto described = std::make_shared<BertModel>(*pipeline->weights_->model);
  if (described->parameters.entries().empty()) {
    register_bert_parameters(described->parameters, described->config, described->head, described->has_pooler,
                             described->num_labels);
  }
  pipeline->model_ = std::move(described);
  const BertConfig& config = pipeline->model_->config;
  check<FormatError>(pipeline->tokenizer_->vocab().size() <= config.vocab_size, directory.string(),
                     ": the tokenizer's vocabulary has ", pipeline->tokenizer_->vocab().size(),
                     " tokens but the model's embedding table only ", config.vocab_size);

  // sentence-transformers folders state how the model was trained to be used: the sequence length
  // (all-MiniLM-L6-v2: 256, not the 512 positions it has) and the pooling.
  int64_t default_length = std::min<int64_t>(config.max_position_embeddings, 512);
  const auto sentence_config = directory / "sentence_bert_config.json";
  if (std::filesystem::exists(sentence_config)) {
    const nlohmann::json json = read_json(sentence_config);
    if (json.contains("max_seq_length") && json["max_seq_length"].is_number_integer()) {
      default_length = std::min<int64_t>(default_length, json["max_seq_length"].get<int64_t>());
    }
  }
  const auto pooling_config = directory / "1_Pooling" / "config.json";
  if (std::filesystem::exists(pooling_config)) {
    const nlohmann::json json = read_json(pooling_config);
    if (json.value("pooling_mode_mean_tokens", false)) {
      pipeline->declared_pooling_ = Pooling::kMean;
    } else if (json.value("pooling_mode_cls_token", false)) {
      pipeline->declared_pooling_ = Pooling::kCls;
    }
  }
  const auto modules = directory / "modules.json";
  if (std::filesystem::exists(modules)) {
    const nlohmann::json json = read_json(modules);
    if (json.is_array()) {
      for (const nlohmann::json& module : json) {
        if (module.is_object() && module.value("type", std::string()) == "sentence_transformers.models.Normalize") {
          pipeline->declared_normalize_ = true;
        }
      }
    }
  }
  const int64_t requested = pipeline->options_.max_length;
  check(requested <= config.max_position_embeddings, "max length ", requested, " exceeds the model's ",
        config.max_position_embeddings, " position embeddings (", directory.string(), ")");
  check(requested == 0 || requested >= 3, "max length must be at least 3 ([CLS] x [SEP]), got ", requested);
  pipeline->max_length_ = requested > 0 ? requested : default_length;

  const TaskHead head = pipeline->model_->head;
  if (head == TaskHead::kSequenceClassification || head == TaskHead::kTokenClassification) {
    pipeline->labels_ = pipeline->model_->labels();
  }
  pipeline->session_ = std::make_unique<InferenceSession>(pipeline->weights_);
  return pipeline;
}

std::optional<uint64_t> TextPipeline::store_version() const {
  if (!materialized_) return std::nullopt;
  return materialized_->version();
}

std::vector<std::string> TextPipeline::store_warnings() const {
  return materialized_ ? materialized_->warnings() : std::vector<std::string>();
}

text::Encoding TextPipeline::encode(std::string_view text) const {
  return tokenizer_->encode(text, {static_cast<size_t>(max_length_)});
}

text::Encoding TextPipeline::encode_pair(std::string_view first, std::string_view second) const {
  return tokenizer_->encode_pair(first, second, {static_cast<size_t>(max_length_)});
}

void TextPipeline::require_head(TaskHead head, std::string_view task) const {
  check(model_->head == head, task, " needs a model with a ", task_head_name(head), " head, but ",
        model_->directory.string(), " has head ", task_head_name(model_->head));
}

void TextPipeline::run_batches(std::span<const text::Encoding> encodings, const BatchConsumer& consume) {
  std::vector<int64_t> lengths(encodings.size());
  for (size_t i = 0; i < encodings.size(); ++i) lengths[i] = static_cast<int64_t>(encodings[i].size());
  const auto batches = plan_batches(lengths, options_.batch_size, options_.token_budget);

  // Size the session once for the largest batch, so no forward pass grows its buffers.
  int64_t most_tokens = 0, most_sequences = 0, longest = 0;
  for (const auto& indices : batches) {
    int64_t tokens = 0;
    for (int64_t index : indices) tokens += lengths[index], longest = std::max(longest, lengths[index]);
    most_tokens = std::max(most_tokens, tokens);
    most_sequences = std::max<int64_t>(most_sequences, static_cast<int64_t>(indices.size()));
  }
  if (most_tokens > 0) session_->reserve(most_tokens, most_sequences, longest);

  PackedBatch batch;
  int64_t done = 0, tokens_done = 0;
  for (const auto& indices : batches) {
    batch.clear();
    for (int64_t index : indices) batch.add_sequence(encodings[index].ids, encodings[index].type_ids);
    const InferenceOutputs& outputs = session_->run(batch);
    consume(outputs, batch, indices);
    done += batch.sequences();
    tokens_done += batch.tokens();
    stats_.batches += 1;
    stats_.sequences += batch.sequences();
    stats_.tokens += batch.tokens();
    if (options_.progress) options_.progress(done, tokens_done);
  }
}

Tensor TextPipeline::embed(std::span<const std::string> texts, Pooling pooling, bool normalize) {
  check(!texts.empty(), "embed: no texts");
  const auto start = Clock::now();
  stats_ = {};
  std::vector<text::Encoding> encodings;
  encodings.reserve(texts.size());
  for (const std::string& text : texts) encodings.push_back(encode(text));
  Tensor embeddings =
      sequence_vectors(encodings, pooling == Pooling::kCls ? SequenceVector::kCls : SequenceVector::kMean);
  if (normalize) kernels::l2_normalize_rows(embeddings.data<float>(), embeddings.dim(0), embeddings.dim(1));
  stats_.seconds = seconds_since(start);
  return embeddings;
}

Tensor TextPipeline::sequence_vectors(std::span<const text::Encoding> encodings, SequenceVector which) {
  check(which != SequenceVector::kPooler || model_->has_pooler, "pooler outputs need a model with a pooler, and ",
        model_->directory.string(), " has none");
  const int64_t S = static_cast<int64_t>(encodings.size()), C = hidden_size();
  Tensor vectors = Tensor::empty({S, C}, DType::kF32);  // (S, C)
  float* out = vectors.data<float>();
  std::vector<float> pooled;  // (batch S, C)
  // A token head keeps every row (the mode does not apply), and the [CLS] rows come from hidden.
  std::optional<SequenceOutputsOnly> sequence_outputs;
  if (which != SequenceVector::kMean) sequence_outputs.emplace(*this);
  run_batches(encodings, [&](const InferenceOutputs& outputs, const PackedBatch& batch,
                             std::span<const int64_t> indices) {
    const int64_t rows = batch.sequences();
    const float* source = nullptr;  // (rows, C)
    if (which == SequenceVector::kPooler) {
      source = outputs.pooled.data<float>();
    } else if (which == SequenceVector::kCls && outputs.cls_hidden.defined()) {
      source = outputs.cls_hidden.data<float>();
    } else {
      pooled.resize(static_cast<size_t>(rows * C));
      if (which == SequenceVector::kCls) {
        kernels::cls_pool(pooled.data(), outputs.hidden.data<float>(), batch.sequence_offsets.data(), rows, C);
      } else {
        kernels::mean_pool(pooled.data(), outputs.hidden.data<float>(), batch.sequence_offsets.data(), rows, C);
      }
      source = pooled.data();
    }
    for (int64_t k = 0; k < rows; ++k) std::copy_n(source + k * C, C, out + indices[k] * C);
  });
  return vectors;
}

std::vector<Classification> TextPipeline::classify_encodings(std::span<const text::Encoding> encodings) {
  const int64_t L = model_->num_labels;
  std::vector<Classification> results(encodings.size());
  const SequenceOutputsOnly sequence_outputs(*this);  // only the (S, L) logits are read
  run_batches(encodings, [&](const InferenceOutputs& outputs, const PackedBatch& batch,
                             std::span<const int64_t> indices) {
    const float* logits = outputs.logits.data<float>();  // (S, L)
    for (int64_t k = 0; k < batch.sequences(); ++k) {
      Classification& result = results[indices[k]];
      result.probabilities.assign(logits + k * L, logits + (k + 1) * L);
      kernels::softmax_rows(result.probabilities.data(), 1, L);
      result.label = argmax(result.probabilities.data(), L);
    }
  });
  return results;
}

std::vector<Classification> TextPipeline::classify(std::span<const std::string> texts) {
  require_head(TaskHead::kSequenceClassification, "classification");
  const auto start = Clock::now();
  stats_ = {};
  std::vector<text::Encoding> encodings;
  encodings.reserve(texts.size());
  for (const std::string& text : texts) encodings.push_back(encode(text));
  auto results = classify_encodings(encodings);
  stats_.seconds = seconds_since(start);
  return results;
}

std::vector<Classification> TextPipeline::classify_pairs(std::span<const std::pair<std::string, std::string>> pairs) {
  require_head(TaskHead::kSequenceClassification, "classification");
  const auto start = Clock::now();
  stats_ = {};
  std::vector<text::Encoding> encodings;
  encodings.reserve(pairs.size());
  for (const auto& [first, second] : pairs) encodings.push_back(encode_pair(first, second));
  auto results = classify_encodings(encodings);
  stats_.seconds = seconds_since(start);
  return results;
}

std::vector<TokenClassification> TextPipeline::token_classify(std::span<const std::string> texts) {
  require_head(TaskHead::kTokenClassification, "token classification");
  const auto start = Clock::now();
  stats_ = {};
  std::vector<text::Encoding> encodings;
  encodings.reserve(texts.size());
  for (const std::string& text : texts) encodings.push_back(encode(text));

  const int64_t L = model_->num_labels;
  std::vector<TokenClassification> results(texts.size());
  std::vector<float> probabilities;  // (L)
  run_batches(encodings, [&](const InferenceOutputs& outputs, const PackedBatch& batch,
                             std::span<const int64_t> indices) {
    const float* logits = outputs.logits.data<float>();  // (N, L)
    for (int64_t k = 0; k < batch.sequences(); ++k) {
      const int64_t index = indices[k];
      const text::Encoding& encoding = encodings[index];
      const auto chars = text::codepoint_offsets(encoding, texts[index]);
      TokenClassification& result = results[index];
      for (size_t t = 0; t < encoding.size(); ++t) {
        if (encoding.special_tokens_mask[t]) continue;
        const float* row = logits + (batch.sequence_offsets[k] + static_cast<int64_t>(t)) * L;
        probabilities.assign(row, row + L);
        kernels::softmax_rows(probabilities.data(), 1, L);
        TokenLabel& token = result.tokens.emplace_back();
        token.token = std::string(tokenizer_->vocab().token(encoding.ids[t]));
        token.bytes = encoding.offsets[t];
        token.chars = chars[t];
        token.label = argmax(probabilities.data(), L);
        token.score = probabilities[token.label];
      }
      result.entities = merge_entities(result.tokens, labels_, texts[index]);
    }
  });
  stats_.seconds = seconds_since(start);
  return results;
}

std::vector<Answer> TextPipeline::answer(std::span<const std::pair<std::string, std::string>> question_context,
                                         int64_t max_answer_tokens, int64_t doc_stride) {
  require_head(TaskHead::kQuestionAnswering, "question answering");
  check(max_answer_tokens > 0, "max answer length must be positive, got ", max_answer_tokens);
  check(doc_stride >= 0, "doc stride must be non-negative, got ", doc_stride);
  const auto start = Clock::now();
  stats_ = {};
  // Every window of every question, with the question it belongs to.
  std::vector<text::Encoding> windows;
  std::vector<int64_t> owner;          // (windows) question index
  std::vector<int64_t> window_number;  // (windows) index among its question's windows
  for (size_t q = 0; q < question_context.size(); ++q) {
    const auto& [question, context] = question_context[q];
    auto encodings = tokenizer_->encode_qa_windows(question, context, static_cast<size_t>(max_length_),
                                                   static_cast<size_t>(doc_stride));
    for (size_t w = 0; w < encodings.size(); ++w) {
      windows.push_back(std::move(encodings[w]));
      owner.push_back(static_cast<int64_t>(q));
      window_number.push_back(static_cast<int64_t>(w));
    }
  }

  std::vector<Answer> results(question_context.size());
  std::vector<bool> found(question_context.size(), false);
  std::vector<float> start_p, end_p;  // (T) per window
  run_batches(windows, [&](const InferenceOutputs& outputs, const PackedBatch& batch,
                           std::span<const int64_t> indices) {
    const float* logits = outputs.logits.data<float>();  // (N, 2): [start, end]
    for (int64_t k = 0; k < batch.sequences(); ++k) {
      const text::Encoding& window = windows[indices[k]];
      const int64_t T = static_cast<int64_t>(window.size());
      const float* rows = logits + batch.sequence_offsets[k] * 2;
      // As transformers' QuestionAnsweringPipeline: softmax over the context tokens and [CLS]
      // (kept for models that point at it for "no answer"), then spans of context tokens only.
      constexpr float kExcluded = -10000.0f;
      start_p.resize(static_cast<size_t>(T));
      end_p.resize(static_cast<size_t>(T));
      for (int64_t t = 0; t < T; ++t) {
        const bool kept = window.sequence_ids[t] == 1 || t == 0;
        start_p[t] = kept ? rows[2 * t] : kExcluded;
        end_p[t] = kept ? rows[2 * t + 1] : kExcluded;
      }
      kernels::softmax_rows(start_p.data(), 1, T);
      kernels::softmax_rows(end_p.data(), 1, T);
      const int64_t question = owner[indices[k]];
      Answer& best = results[question];
      for (int64_t s = 0; s < T; ++s) {
        if (window.sequence_ids[s] != 1) continue;
        for (int64_t e = s; e < std::min(T, s + max_answer_tokens); ++e) {
          if (window.sequence_ids[e] != 1) break;
          const float score = start_p[s] * end_p[e];
          // Windows may arrive in any order (batches are sorted by length): ties go to the
          // earlier window and the earlier span, as a scan in window order would choose.
          const bool better = !found[question] || score > best.score ||
                              (score == best.score && window_number[indices[k]] < best.window);
          if (!better) continue;
          found[question] = true;
          best.score = score;
          best.window = window_number[indices[k]];
          best.bytes = {window.offsets[s].begin, window.offsets[e].end};
        }
      }
    }
  });
  // The winning byte spans as text and code point spans (once per question).
  for (size_t q = 0; q < question_context.size(); ++q) {
    const auto& [question, context] = question_context[q];
    Answer& best = results[q];
    check(found[q], "question ", q, " has no context tokens to answer from");
    best.text = context.substr(best.bytes.begin, best.bytes.end - best.bytes.begin);
    const text::Span bytes[] = {best.bytes};
    best.chars = text::byte_to_codepoint_offsets(context, bytes)[0];
  }
  stats_.seconds = seconds_since(start);
  return results;
}

}  // namespace scalebert::pipeline
