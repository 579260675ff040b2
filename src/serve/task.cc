// Tasks of a served model: loading with the task's settings, request -> sequences, and encoder
// results -> output tensors, with the same post-processing as pipeline::TextPipeline (pooling,
// softmax, Hugging Face "simple" entity merging, best p_start * p_end answer span).
#include "serve/task.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/file_util.h"
#include "kernels/cpu/pooling.h"
#include "kernels/cpu/softmax.h"
#include "text/utf8.h"

namespace scalebert::serve {

namespace {

constexpr const char* kTextInputs[] = {"text", "text_pair", "question", "context"};
constexpr const char* kTokenInputs[] = {"input_ids", "attention_mask", "token_type_ids"};

enum class Mode { kAny, kText, kTokens };
struct OutputSpec {
  Task task;
  const char* name;
  DataType type;
  size_t rank;  // after the batch dimension
  Mode mode;
};
constexpr OutputSpec kOutputs[] = {
    {Task::kEmbeddings, "embeddings", DataType::kFp32, 1, Mode::kAny},
    {Task::kEmbeddings, "last_hidden_state", DataType::kFp32, 2, Mode::kAny},
    {Task::kEmbeddings, "pooler_output", DataType::kFp32, 1, Mode::kAny},
    {Task::kClassification, "logits", DataType::kFp32, 1, Mode::kAny},
    {Task::kClassification, "probabilities", DataType::kFp32, 1, Mode::kAny},
    {Task::kClassification, "label", DataType::kBytes, 1, Mode::kAny},
    {Task::kClassification, "label_id", DataType::kInt64, 1, Mode::kAny},
    {Task::kTokenClassification, "logits", DataType::kFp32, 2, Mode::kAny},
    {Task::kTokenClassification, "label_ids", DataType::kInt64, 1, Mode::kAny},
    {Task::kTokenClassification, "entities", DataType::kBytes, 1, Mode::kText},
    {Task::kQuestionAnswering, "start_logits", DataType::kFp32, 1, Mode::kTokens},
    {Task::kQuestionAnswering, "end_logits", DataType::kFp32, 1, Mode::kTokens},
    {Task::kQuestionAnswering, "answer", DataType::kBytes, 1, Mode::kText},
    {Task::kQuestionAnswering, "answer_start", DataType::kInt64, 1, Mode::kText},
    {Task::kQuestionAnswering, "answer_end", DataType::kInt64, 1, Mode::kText},
    {Task::kQuestionAnswering, "score", DataType::kFp32, 1, Mode::kText},
};

const OutputSpec* find_output_spec(Task task, std::string_view name) {
  for (const OutputSpec& spec : kOutputs) {
    if (spec.task == task && spec.name == name) return &spec;
  }
  return nullptr;
}

TaskHead head_of(Task task) {
  switch (task) {
    case Task::kEmbeddings: return TaskHead::kNone;
    case Task::kClassification: return TaskHead::kSequenceClassification;
    case Task::kTokenClassification: return TaskHead::kTokenClassification;
    case Task::kQuestionAnswering: return TaskHead::kQuestionAnswering;
  }
  return TaskHead::kNone;
}

bool parse_bool(const std::string& value, const std::string& key) {
  if (value == "true" || value == "1") return true;
  if (value == "false" || value == "0") return false;
  throw FormatError(str_cat("parameter ", key, " must be true or false, got \"", value, "\""));
}

int64_t parse_int(const std::string& value, const std::string& key, int64_t minimum) {
  try {
    size_t end = 0;
    const int64_t parsed = std::stoll(value, &end);
    if (end == value.size() && parsed >= minimum) return parsed;
  } catch (const std::exception&) {
  }
  throw FormatError(str_cat("parameter ", key, " must be an integer >= ", minimum, ", got \"", value, "\""));
}

nlohmann::json read_json_file(const std::filesystem::path& path) {
  try {
    return nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& error) {
    throw FormatError(str_cat(path.string(), ": not valid JSON: ", error.what()));
  }
}

int64_t argmax(const float* values, int64_t count) {
  return static_cast<int64_t>(std::max_element(values, values + count) - values);
}

// Rows of a [B, ...] input: checks the shape against the config (batch dimension first, -1 any).
int64_t check_input_shape(const WireTensor& tensor, const TensorConfig& declared, int64_t max_batch_size) {
  check(tensor.shape.size() == declared.dims.size() + 1, "input '", tensor.name, "': shape has ",
        tensor.shape.size(), " dimensions, the model takes ", declared.dims.size() + 1,
        " (batch first)");
  const int64_t rows = tensor.shape[0];
  check(rows >= 1 && rows <= max_batch_size, "input '", tensor.name, "': batch of ", rows,
        " outside 1..", max_batch_size, " (max_batch_size)");
  for (size_t d = 0; d < declared.dims.size(); ++d) {
    check(declared.dims[d] == -1 || declared.dims[d] == tensor.shape[d + 1], "input '", tensor.name,
          "': dimension ", d + 1, " is ", tensor.shape[d + 1], ", the model takes ", declared.dims[d]);
  }
  if (tensor.datatype == DataType::kBytes) {
    check(tensor.numel() == rows, "input '", tensor.name, "': one text per batch row expected, got ",
          tensor.numel(), " for ", rows, " rows");
  }
  return rows;
}

void append_sequence(InferJob& job, int64_t item, const text::Encoding& encoding) {
  JobSequence& sequence = job.sequences.emplace_back();
  sequence.item = item;
  sequence.ids = encoding.ids;
  sequence.type_ids = encoding.type_ids;
  sequence.positions.resize(encoding.ids.size());
  for (size_t t = 0; t < encoding.ids.size(); ++t) sequence.positions[t] = static_cast<int32_t>(t);
}

// Tokenizes with max_length (or rejects what is longer, when not truncating).
text::Encoding encode_checked(const TaskModel& model, std::string_view first, const std::string* second,
                              int64_t item) {
  const size_t limit = static_cast<size_t>(model.max_length);
  // One token over the limit is enough to know a text is too long: no full tokenization of a huge text.
  const text::Truncation probe{limit + 1};
  text::Encoding encoding =
      second ? model.tokenizer->encode_pair(first, *second, probe) : model.tokenizer->encode(first, probe);
  if (encoding.size() > limit) {
    check(model.truncate, "row ", item, ": text is longer than max_sequence_length ", model.max_length,
          " tokens (the model is configured not to truncate)");
    encoding = second ? model.tokenizer->encode_pair(first, *second, {limit}) : model.tokenizer->encode(first, {limit});
  }
  return encoding;
}

void prepare_text(const TaskModel& model, const InferRequest& request, InferJob& job) {
  const bool qa = model.task == Task::kQuestionAnswering;
  const WireTensor* first = request.find_input(qa ? "question" : "text");
  const WireTensor* second = request.find_input(qa ? "context" : "text_pair");
  check(first != nullptr, "missing input '", qa ? "question" : "text", "'");
  check(!qa || second != nullptr, "missing input 'context'");
  check(second == nullptr || second->strings.size() == first->strings.size(), "input '", second ? second->name : "",
        "' has ", second ? second->strings.size() : 0, " rows but '", first->name, "' has ", first->strings.size());
  job.text_mode = true;
  job.items = static_cast<int64_t>(first->strings.size());
  job.texts = first->strings;
  if (second != nullptr) job.pairs = second->strings;
  for (int64_t item = 0; item < job.items; ++item) {
    for (const std::string* text : {&job.texts[item], second ? &job.pairs[item] : nullptr}) {
      if (text == nullptr) continue;
      try {
        text::validate_utf8(*text);
      } catch (const FormatError& error) {
        throw InvalidArgument(str_cat("row ", item, ": text is not valid UTF-8 (", error.what(), ")"));
      }
    }
    if (qa) {
      check(!job.pairs[item].empty(), "row ", item, ": empty context");
      std::vector<text::Encoding> windows;
      try {
        windows = model.tokenizer->encode_qa_windows(job.texts[item], job.pairs[item],
                                                     static_cast<size_t>(model.max_length),
                                                     static_cast<size_t>(model.doc_stride));
      } catch (const InvalidArgument& error) {
        throw InvalidArgument(str_cat("row ", item, ": ", error.what()));
      }
      for (size_t w = 0; w < windows.size(); ++w) {
        append_sequence(job, item, windows[w]);
        job.window.push_back(static_cast<int64_t>(w));
        job.encodings.push_back(std::move(windows[w]));
      }
    } else {
      text::Encoding encoding = encode_checked(model, job.texts[item], second ? &job.pairs[item] : nullptr, item);
      append_sequence(job, item, encoding);
      job.window.push_back(0);
      job.encodings.push_back(std::move(encoding));
    }
  }
  for (const JobSequence& sequence : job.sequences) {
    job.padded_length = std::max<int64_t>(job.padded_length, static_cast<int64_t>(sequence.ids.size()));
  }
}

void prepare_tokens(const TaskModel& model, const InferRequest& request, InferJob& job) {
  const WireTensor* ids = request.find_input("input_ids");
  check(ids != nullptr, "missing input 'input_ids'");
  check(ids->shape.size() == 2, "input 'input_ids' must be [B, T]");
  const WireTensor* mask = request.find_input("attention_mask");
  const WireTensor* types = request.find_input("token_type_ids");
  for (const WireTensor* other : {mask, types}) {
    check(other == nullptr || other->shape == ids->shape, "input '", other ? other->name : "", "' must have the shape of input_ids");
  }
  const BertConfig& config = model.model->config;
  const int64_t B = ids->shape[0], T = ids->shape[1];
  check(T >= 1, "input 'input_ids' has no tokens");
  check(T <= config.max_position_embeddings, "input 'input_ids' has ", T, " columns, the model has ",
        config.max_position_embeddings, " positions");
  job.items = B;
  job.padded_length = T;
  for (int64_t b = 0; b < B; ++b) {
    JobSequence& sequence = job.sequences.emplace_back();
    sequence.item = b;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t index = b * T + t;
      if (mask != nullptr && mask->ints[index] == 0) continue;
      const int64_t id = ids->ints[index];
      const int64_t type = types ? types->ints[index] : 0;
      check(id >= 0 && id < config.vocab_size, "input_ids[", b, "][", t, "] = ", id, " outside the vocabulary of ",
            config.vocab_size);
      check(type >= 0 && type < config.type_vocab_size, "token_type_ids[", b, "][", t, "] = ", type,
            " outside 0..", config.type_vocab_size - 1);
      if (static_cast<int64_t>(sequence.ids.size()) == model.max_length) {
        check(model.truncate, "row ", b, " has more than max_sequence_length ", model.max_length,
              " tokens (the model is configured not to truncate)");
        break;
      }
      sequence.ids.push_back(static_cast<int32_t>(id));
      sequence.type_ids.push_back(static_cast<int32_t>(type));
      sequence.positions.push_back(static_cast<int32_t>(t));
    }
    check(!sequence.ids.empty(), "row ", b, " of attention_mask keeps no token");
  }
}

// Output tensor [B, dims...] of `spec`'s type.
WireTensor make_output(const std::string& name, DataType type, std::vector<int64_t> shape, bool binary) {
  WireTensor tensor;
  tensor.name = name;
  tensor.datatype = type;
  tensor.shape = std::move(shape);
  tensor.binary = binary;
  const int64_t count = tensor.numel();
  if (type == DataType::kFp32) tensor.floats.assign(static_cast<size_t>(count), 0.0f);
  if (type == DataType::kInt64) tensor.ints.assign(static_cast<size_t>(count), 0);
  if (type == DataType::kBytes) tensor.strings.assign(static_cast<size_t>(count), "");
  return tensor;
}

std::string entities_json(const std::vector<pipeline::Entity>& entities) {
  nlohmann::json list = nlohmann::json::array();
  for (const pipeline::Entity& entity : entities) {
    list.push_back({{"type", entity.type}, {"text", entity.text}, {"start", entity.chars.begin},
                    {"end", entity.chars.end}, {"score", entity.score}});
  }
  return list.dump();
}

struct AnswerSpan {
  bool found = false;
  float score = 0.0f;
  int64_t window = 0;
  text::Span bytes;
};

// transformers' QuestionAnsweringPipeline over one window: softmax over the context tokens and
// [CLS], then the best span of at most max_answer_tokens context tokens; ties go to the earlier window.
void best_span(const TaskModel& model, const text::Encoding& window, const float* logits, int64_t window_number,
               AnswerSpan& best) {
  const int64_t T = static_cast<int64_t>(window.size());
  constexpr float kExcluded = -10000.0f;
  std::vector<float> start_p(static_cast<size_t>(T)), end_p(static_cast<size_t>(T));  // (T)
  for (int64_t t = 0; t < T; ++t) {
    const bool kept = window.sequence_ids[t] == 1 || t == 0;
    start_p[t] = kept ? logits[2 * t] : kExcluded;
    end_p[t] = kept ? logits[2 * t + 1] : kExcluded;
  }
  kernels::softmax_rows(start_p.data(), 1, T);
  kernels::softmax_rows(end_p.data(), 1, T);
  for (int64_t s = 0; s < T; ++s) {
    if (window.sequence_ids[s] != 1) continue;
    for (int64_t e = s; e < std::min(T, s + model.max_answer_tokens); ++e) {
      if (window.sequence_ids[e] != 1) break;
      const float score = start_p[s] * end_p[e];
      if (best.found && !(score > best.score || (score == best.score && window_number < best.window))) continue;
      best = {true, score, window_number, {window.offsets[s].begin, window.offsets[e].end}};
    }
  }
}

}  // namespace

std::string_view task_name(Task task) {
  switch (task) {
    case Task::kEmbeddings: return "embeddings";
    case Task::kClassification: return "classification";
    case Task::kTokenClassification: return "ner";
    case Task::kQuestionAnswering: return "qa";
  }
  return "?";
}

Task task_from_name(std::string_view name) {
  for (Task task : {Task::kEmbeddings, Task::kClassification, Task::kTokenClassification, Task::kQuestionAnswering}) {
    if (task_name(task) == name) return task;
  }
  throw InvalidArgument(str_cat("unknown task \"", name, "\" (expected embeddings, classification, ner or qa)"));
}

std::unique_ptr<TaskModel> TaskModel::load(const ModelConfig& config, const std::filesystem::path& directory) {
  auto loaded = std::make_unique<TaskModel>();
  TaskModel& model = *loaded;
  model.task = task_from_name(config.parameter("task", "embeddings"));
  model.tokenizer = text::BertTokenizer::from_model_dir(directory);
  // The CLI's load path (InferenceWeights::load over quant::load_model): f32, bf16 and int8 folders
  // alike, each Linear packed in the precision its recipe names, and the F32 parameter table
  // released once packed, so a served int8 model holds about its file size. `model` keeps the
  // config, head and labels (no parameters).
  model.weights = InferenceWeights::load(directory, head_of(model.task));
  model.model = model.weights->model;
  const BertConfig& bert = model.model->config;
  check<FormatError>(model.tokenizer->vocab().size() <= bert.vocab_size, directory.string(),
                     ": the tokenizer's vocabulary is larger than the model's embedding table");

  // Defaults as TextPipeline: a sentence-transformers folder's length, pooling and normalization.
  int64_t default_length = std::min<int64_t>(bert.max_position_embeddings, 512);
  std::optional<pipeline::Pooling> declared_pooling;
  bool declared_normalize = false;
  if (std::filesystem::exists(directory / "sentence_bert_config.json")) {
    const auto json = read_json_file(directory / "sentence_bert_config.json");
    if (json.contains("max_seq_length") && json["max_seq_length"].is_number_integer()) {
      default_length = std::min<int64_t>(default_length, json["max_seq_length"].get<int64_t>());
    }
  }
  if (std::filesystem::exists(directory / "1_Pooling" / "config.json")) {
    const auto json = read_json_file(directory / "1_Pooling" / "config.json");
    if (json.value("pooling_mode_mean_tokens", false)) declared_pooling = pipeline::Pooling::kMean;
    else if (json.value("pooling_mode_cls_token", false)) declared_pooling = pipeline::Pooling::kCls;
  }
  if (std::filesystem::exists(directory / "modules.json")) {
    const auto json = read_json_file(directory / "modules.json");
    if (json.is_array()) {
      for (const auto& module : json) {
        if (module.is_object() && module.value("type", std::string()) == "sentence_transformers.models.Normalize") {
          declared_normalize = true;
        }
      }
    }
  }
  model.max_length = parse_int(config.parameter("max_sequence_length", std::to_string(default_length)),
                               "max_sequence_length", 3);
  check<FormatError>(model.max_length <= bert.max_position_embeddings, "max_sequence_length ", model.max_length,
                     " exceeds the model's ", bert.max_position_embeddings, " positions");
  model.truncate = parse_bool(config.parameter("truncation", "true"), "truncation");
  model.pooling = pipeline::pooling_from_name(
      config.parameter("pooling", std::string(pipeline::pooling_name(declared_pooling.value_or(pipeline::Pooling::kMean)))));
  model.normalize = parse_bool(config.parameter("normalize", declared_normalize ? "true" : "false"), "normalize");
  model.doc_stride = parse_int(config.parameter("doc_stride", "128"), "doc_stride", 0);
  model.max_answer_tokens = parse_int(config.parameter("max_answer_length", "30"), "max_answer_length", 1);
  if (model.task == Task::kClassification || model.task == Task::kTokenClassification) {
    model.labels = model.model->labels();
  }

  // Every declared tensor must be one this task reads or writes, with the right type and rank.
  for (const TensorConfig& input : config.inputs) {
    const bool text = std::find_if(std::begin(kTextInputs), std::end(kTextInputs),
                                   [&](const char* name) { return input.name == name; }) != std::end(kTextInputs);
    const bool tokens = std::find_if(std::begin(kTokenInputs), std::end(kTokenInputs),
                                     [&](const char* name) { return input.name == name; }) != std::end(kTokenInputs);
    check<FormatError>(text || tokens, "input '", input.name, "' is not one ScaleBERT reads (text, text_pair, "
                       "question, context, input_ids, attention_mask, token_type_ids)");
    const bool qa_input = input.name == "question" || input.name == "context";
    check<FormatError>(!text || qa_input == (model.task == Task::kQuestionAnswering), "input '", input.name,
                       "' does not belong to task ", task_name(model.task));
    if (text) {
      check<FormatError>(input.data_type == DataType::kBytes, "input '", input.name, "' must be TYPE_STRING");
      check<FormatError>(input.dims == std::vector<int64_t>{1}, "input '", input.name, "' must have dims [ 1 ]");
    } else {
      check<FormatError>(input.data_type == DataType::kInt64 || input.data_type == DataType::kInt32, "input '",
                         input.name, "' must be TYPE_INT64 or TYPE_INT32");
      check<FormatError>(input.dims.size() == 1, "input '", input.name, "' must have dims [ -1 ] (tokens)");
    }
  }
  for (const TensorConfig& output : config.outputs) {
    const OutputSpec* spec = find_output_spec(model.task, output.name);
    check<FormatError>(spec != nullptr, "output '", output.name, "' is not an output of task ", task_name(model.task));
    check<FormatError>(output.data_type == spec->type, "output '", output.name, "' must be ",
                       config_name(spec->type));
    check<FormatError>(output.dims.size() == spec->rank, "output '", output.name, "' must have ", spec->rank,
                       " dims after the batch dimension");
    if (output.name == "pooler_output") {
      check<FormatError>(model.model->has_pooler, "output 'pooler_output': the model has no pooler");
    }
  }
  return loaded;
}

std::shared_ptr<InferJob> prepare_job(const TaskModel& model, const ModelConfig& config, const InferRequest& request) {
  auto job = std::make_shared<InferJob>();
  int64_t rows = -1;
  bool text = false, tokens = false;
  for (const WireTensor& input : request.inputs) {
    const TensorConfig* declared = config.find_input(input.name);
    check(declared != nullptr, "unexpected input '", input.name, "' (model '", config.name, "' takes ",
                         [&] {
                           std::string names;
                           for (const TensorConfig& each : config.inputs) names += (names.empty() ? "" : ", ") + each.name;
                           return names;
                         }(),
                         ")");
    check(input.datatype == declared->data_type, "input '", input.name, "': datatype ", v2_name(input.datatype),
          ", the model takes ", v2_name(declared->data_type));
    const int64_t input_rows = check_input_shape(input, *declared, config.max_batch_size);
    check(rows < 0 || rows == input_rows, "input '", input.name, "' has ", input_rows, " rows, another input ", rows);
    rows = input_rows;
    (input.datatype == DataType::kBytes ? text : tokens) = true;
  }
  check(!(text && tokens), "give either text inputs or token tensors, not both");
  if (text) {
    prepare_text(model, request, *job);
  } else {
    prepare_tokens(model, request, *job);
  }

  // Outputs: the requested ones, or every declared output this kind of input can produce.
  const Mode mode = text ? Mode::kText : Mode::kTokens;
  if (request.outputs.empty()) {
    for (const TensorConfig& output : config.outputs) {
      const OutputSpec* spec = find_output_spec(model.task, output.name);
      if (spec->mode == Mode::kAny || spec->mode == mode) {
        job->outputs.push_back(output.name);
        job->binary.push_back(request.binary_output_default);
      }
    }
  } else {
    for (const RequestedOutput& output : request.outputs) {
      check(config.find_output(output.name) != nullptr, "unknown output '", output.name, "' of model '", config.name,
            "'");
      const OutputSpec* spec = find_output_spec(model.task, output.name);
      check(spec->mode == Mode::kAny || spec->mode == mode, "output '", output.name, "' needs ",
            spec->mode == Mode::kText ? "text" : "token tensor", " inputs");
      job->outputs.push_back(output.name);
      job->binary.push_back(output.binary);
    }
  }
  return job;
}

void run_batch(const TaskModel& model, InferenceSession& session, std::span<InferJob* const> jobs, PackedBatch& batch) {
  using std::chrono::duration_cast;
  using std::chrono::nanoseconds;
  const auto start = Clock::now();
  batch.clear();
  for (InferJob* job : jobs) {
    job->started = start;
    for (const JobSequence& sequence : job->sequences) {
      batch.input_ids.insert(batch.input_ids.end(), sequence.ids.begin(), sequence.ids.end());
      batch.token_type_ids.insert(batch.token_type_ids.end(), sequence.type_ids.begin(), sequence.type_ids.end());
      batch.position_ids.insert(batch.position_ids.end(), sequence.positions.begin(), sequence.positions.end());
      batch.sequence_offsets.push_back(batch.tokens());
    }
  }
  const auto packed = Clock::now();
  // Classification reads only the (S, L) logits, and cls-pooled embeddings only the [CLS] rows
  // (and pooler_output) unless a job of the batch asks for last_hidden_state: the last layer then
  // runs on the [CLS] rows alone. Mean pooling and last_hidden_state need every row.
  const auto wants_token_states = [](const InferJob* job) {
    return std::find(job->outputs.begin(), job->outputs.end(), "last_hidden_state") != job->outputs.end();
  };
  const bool cls_rows = model.task == Task::kClassification ||
                        (model.task == Task::kEmbeddings && model.pooling == pipeline::Pooling::kCls &&
                         std::none_of(jobs.begin(), jobs.end(), wants_token_states));
  session.set_sequence_outputs_only(cls_rows);
  const InferenceOutputs& outputs = session.run(batch);
  const auto ran = Clock::now();

  const int64_t C = model.model->config.hidden_size;
  const int64_t L = model.model->num_labels;
  const bool keep_hidden = model.task == Task::kEmbeddings;
  const bool token_logits = model.task == Task::kTokenClassification || model.task == Task::kQuestionAnswering;
  int64_t s = 0;  // sequence index in the batch
  for (InferJob* job : jobs) {
    const size_t count = job->sequences.size();
    job->hidden.resize(keep_hidden ? count : 0);
    job->pooled.resize(outputs.pooled.defined() && keep_hidden ? count : 0);
    job->logits.resize(outputs.logits.defined() ? count : 0);
    for (size_t k = 0; k < count; ++k, ++s) {
      const int64_t begin = batch.sequence_offsets[s], end = batch.sequence_offsets[s + 1];
      if (keep_hidden) {
        if (cls_rows) {
          const float* cls_hidden = outputs.cls_hidden.data<float>();  // (S, C)
          job->hidden[k].assign(cls_hidden + s * C, cls_hidden + (s + 1) * C);
        } else {
          const float* hidden = outputs.hidden.data<float>();  // (N, C)
          job->hidden[k].assign(hidden + begin * C, hidden + end * C);
        }
        if (outputs.pooled.defined()) {
          const float* pooled = outputs.pooled.data<float>();  // (S, C)
          job->pooled[k].assign(pooled + s * C, pooled + (s + 1) * C);
        }
      }
      if (outputs.logits.defined()) {
        const float* logits = outputs.logits.data<float>();  // (N, L) per token or (S, L) per sequence
        if (token_logits) {
          job->logits[k].assign(logits + begin * L, logits + end * L);
        } else {
          job->logits[k].assign(logits + s * L, logits + (s + 1) * L);
        }
      }
    }
  }
  const auto copied = Clock::now();
  for (InferJob* job : jobs) {
    job->computed = copied;
    job->compute_input_ns = duration_cast<nanoseconds>(packed - start).count();
    job->compute_infer_ns = duration_cast<nanoseconds>(ran - packed).count();
    job->compute_output_ns = duration_cast<nanoseconds>(copied - ran).count();
  }
}

std::vector<WireTensor> finish_job(const TaskModel& model, const InferJob& job) {
  const int64_t B = job.items, T = job.padded_length;
  const int64_t C = model.model->config.hidden_size;
  const int64_t L = model.model->num_labels;
  const size_t S = job.sequences.size();
  std::vector<WireTensor> tensors;

  // Per-item results computed once, whichever outputs use them.
  std::vector<float> embeddings;  // (B, C)
  std::vector<float> probabilities;  // (B, L) classification
  std::vector<AnswerSpan> answers;
  std::vector<std::vector<pipeline::TokenLabel>> token_labels;  // (B) ner, text mode
  for (size_t o = 0; o < job.outputs.size(); ++o) {
    const std::string& name = job.outputs[o];
    const bool binary = job.binary[o];
    if (name == "embeddings") {
      if (embeddings.empty()) {
        embeddings.resize(static_cast<size_t>(B * C));
        for (size_t k = 0; k < S; ++k) {
          // Every token row, or the [CLS] row alone (run_batch's [CLS]-row mode).
          const int64_t offsets[2] = {0, static_cast<int64_t>(job.hidden[k].size()) / C};
          float* out = embeddings.data() + job.sequences[k].item * C;
          if (model.pooling == pipeline::Pooling::kCls) {
            kernels::cls_pool(out, job.hidden[k].data(), offsets, 1, C);
          } else {
            kernels::mean_pool(out, job.hidden[k].data(), offsets, 1, C);
          }
        }
        if (model.normalize) kernels::l2_normalize_rows(embeddings.data(), B, C);
      }
      WireTensor& tensor = tensors.emplace_back(make_output(name, DataType::kFp32, {B, C}, binary));
      tensor.floats = embeddings;
    } else if (name == "last_hidden_state") {
      WireTensor& tensor = tensors.emplace_back(make_output(name, DataType::kFp32, {B, T, C}, binary));
      for (size_t k = 0; k < S; ++k) {
        const JobSequence& sequence = job.sequences[k];
        for (size_t t = 0; t < sequence.ids.size(); ++t) {
          std::copy_n(job.hidden[k].data() + t * C, C,
                      tensor.floats.data() + (sequence.item * T + sequence.positions[t]) * C);
        }
      }
    } else if (name == "pooler_output") {
      WireTensor& tensor = tensors.emplace_back(make_output(name, DataType::kFp32, {B, C}, binary));
      for (size_t k = 0; k < S; ++k) std::copy_n(job.pooled[k].data(), C, tensor.floats.data() + job.sequences[k].item * C);
    } else if (model.task == Task::kClassification) {
      if (probabilities.empty()) {
        probabilities.resize(static_cast<size_t>(B * L));
        for (size_t k = 0; k < S; ++k) std::copy_n(job.logits[k].data(), L, probabilities.data() + job.sequences[k].item * L);
        kernels::softmax_rows(probabilities.data(), B, L);
      }
      if (name == "logits") {
        WireTensor& tensor = tensors.emplace_back(make_output(name, DataType::kFp32, {B, L}, binary));
        for (size_t k = 0; k < S; ++k) std::copy_n(job.logits[k].data(), L, tensor.floats.data() + job.sequences[k].item * L);
      } else if (name == "probabilities") {
        tensors.emplace_back(make_output(name, DataType::kFp32, {B, L}, binary)).floats = probabilities;
      } else if (name == "label") {
        WireTensor& tensor = tensors.emplace_back(make_output(name, DataType::kBytes, {B, 1}, binary));
        for (int64_t b = 0; b < B; ++b) tensor.strings[b] = model.labels[argmax(probabilities.data() + b * L, L)];
      } else if (name == "label_id") {
        WireTensor& tensor = tensors.emplace_back(make_output(name, DataType::kInt64, {B, 1}, binary));
        for (int64_t b = 0; b < B; ++b) tensor.ints[b] = argmax(probabilities.data() + b * L, L);
      }
    } else if (model.task == Task::kTokenClassification) {
      if (name == "logits") {
        WireTensor& tensor = tensors.emplace_back(make_output(name, DataType::kFp32, {B, T, L}, binary));
        for (size_t k = 0; k < S; ++k) {
          const JobSequence& sequence = job.sequences[k];
          for (size_t t = 0; t < sequence.ids.size(); ++t) {
            std::copy_n(job.logits[k].data() + t * L, L,
                        tensor.floats.data() + (sequence.item * T + sequence.positions[t]) * L);
          }
        }
      } else if (name == "label_ids") {
        WireTensor& tensor = tensors.emplace_back(make_output(name, DataType::kInt64, {B, T}, binary));
        std::fill(tensor.ints.begin(), tensor.ints.end(), -1);
        for (size_t k = 0; k < S; ++k) {
          const JobSequence& sequence = job.sequences[k];
          for (size_t t = 0; t < sequence.ids.size(); ++t) {
            tensor.ints[sequence.item * T + sequence.positions[t]] = argmax(job.logits[k].data() + t * L, L);
          }
        }
      } else if (name == "entities") {
        WireTensor& tensor = tensors.emplace_back(make_output(name, DataType::kBytes, {B, 1}, binary));
        std::vector<float> row;  // (L)
        for (size_t k = 0; k < S; ++k) {
          const text::Encoding& encoding = job.encodings[k];
          const std::string& text = job.texts[job.sequences[k].item];
          const auto chars = text::codepoint_offsets(encoding, text);
          std::vector<pipeline::TokenLabel> labels;
          for (size_t t = 0; t < encoding.size(); ++t) {
            if (encoding.special_tokens_mask[t]) continue;
            row.assign(job.logits[k].data() + t * L, job.logits[k].data() + (t + 1) * L);
            kernels::softmax_rows(row.data(), 1, L);
            pipeline::TokenLabel& label = labels.emplace_back();
            label.bytes = encoding.offsets[t];
            label.chars = chars[t];
            label.label = argmax(row.data(), L);
            label.score = row[label.label];
          }
          tensor.strings[job.sequences[k].item] = entities_json(pipeline::merge_entities(labels, model.labels, text));
        }
      }
    } else if (model.task == Task::kQuestionAnswering) {
      if (name == "start_logits" || name == "end_logits") {
        const int64_t column = name == "start_logits" ? 0 : 1;
        WireTensor& tensor = tensors.emplace_back(make_output(name, DataType::kFp32, {B, T}, binary));
        for (size_t k = 0; k < S; ++k) {
          const JobSequence& sequence = job.sequences[k];
          for (size_t t = 0; t < sequence.ids.size(); ++t) {
            tensor.floats[sequence.item * T + sequence.positions[t]] = job.logits[k][t * 2 + column];
          }
        }
        continue;
      }
      if (answers.empty()) {
        answers.resize(static_cast<size_t>(B));
        for (size_t k = 0; k < S; ++k) {
          best_span(model, job.encodings[k], job.logits[k].data(), job.window[k], answers[job.sequences[k].item]);
        }
      }
      WireTensor& tensor = tensors.emplace_back(make_output(
          name, name == "answer" ? DataType::kBytes : name == "score" ? DataType::kFp32 : DataType::kInt64, {B, 1}, binary));
      for (int64_t b = 0; b < B; ++b) {
        const std::string& context = job.pairs[b];
        const AnswerSpan& answer = answers[b];
        if (name == "score") {
          tensor.floats[b] = answer.found ? answer.score : 0.0f;
          continue;
        }
        if (!answer.found) continue;  // "" and [0, 0): no context token to answer from
        const text::Span bytes[] = {answer.bytes};
        const text::Span chars = text::byte_to_codepoint_offsets(context, bytes)[0];
        if (name == "answer") tensor.strings[b] = context.substr(answer.bytes.begin, answer.bytes.end - answer.bytes.begin);
        if (name == "answer_start") tensor.ints[b] = chars.begin;
        if (name == "answer_end") tensor.ints[b] = chars.end;
      }
    }
  }
  return tensors;
}

}  // namespace scalebert::serve
