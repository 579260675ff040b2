// The training loop: setup (tokenizer, data, labels, model and head, optimizer, schedule, resume),
// the step (accumulated micro-batches, finite check, clipping, optimizer, schedule), evaluation by
// task metrics, logging, checkpoints and stopping.
#include "train/trainer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <numeric>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/threads.h"
#include "dist/communicator.h"
#include "dist/gradient_all_reduce.h"
#include "io/file_util.h"
#include "io/store/checksum.h"
#include "io/store/store.h"
#include "kernels/cpu/loss.h"
#include "model/inference_session.h"
#include "model/inference_weights.h"
#include "text/bert_tokenizer.h"
#include "train/checkpoint.h"
#include "train/data/classification.h"
#include "train/data/conll.h"
#include "train/data/label_map.h"
#include "train/data/mlm.h"
#include "train/data/order.h"
#include "train/data/random.h"
#include "train/data/squad.h"
#include "train/grad_utils.h"
#include "train/metrics.h"
#include "train/optimizer.h"
#include "train/schedule.h"
#include "train/tensorboard.h"
#include "train/training_graph.h"

namespace scalebert::train {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// Stop requests

namespace {

std::atomic<bool> g_stop_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free, "the stop flag is set from a signal handler");

struct sigaction g_previous_int, g_previous_term;
int g_signal_guards = 0;

extern "C" void handle_stop_signal(int signal_number) {
  if (g_stop_requested.load()) {
    // Second signal: give the process its previous disposition back and re-raise, so a second
    // Ctrl-C stops a run that is stuck in a long step.
    sigaction(signal_number, signal_number == SIGINT ? &g_previous_int : &g_previous_term, nullptr);
    raise(signal_number);
    return;
  }
  g_stop_requested.store(true);
}

}  // namespace

void request_stop_from_signal() { g_stop_requested.store(true); }
void clear_stop_request() { g_stop_requested.store(false); }
bool stop_requested() { return g_stop_requested.load(); }

StopOnSignals::StopOnSignals() {
  if (g_signal_guards++ > 0) return;
  struct sigaction action {};
  action.sa_handler = handle_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, &g_previous_int);
  sigaction(SIGTERM, &action, &g_previous_term);
}

StopOnSignals::~StopOnSignals() {
  if (--g_signal_guards > 0) return;
  sigaction(SIGINT, &g_previous_int, nullptr);
  sigaction(SIGTERM, &g_previous_term, nullptr);
}

// ---------------------------------------------------------------------------------------------
// Task names and metrics

TaskHead task_from_name(const std::string& task) {
  const TaskHead head = task_head_from_name(task);
  check(head != TaskHead::kNone, "task \"", task, "\": expected classification, ner, qa or mlm");
  return head;
}

std::string default_best_metric(TaskHead head) {
  switch (head) {
    case TaskHead::kSequenceClassification: return "macro_f1";
    case TaskHead::kTokenClassification: return "f1";
    case TaskHead::kQuestionAnswering: return "f1";
    case TaskHead::kMaskedLM: return "perplexity";
    case TaskHead::kNone: break;
  }
  return "loss";
}

bool greater_is_better(const std::string& metric) { return metric != "loss" && metric != "perplexity"; }

namespace {

std::vector<std::string> metric_names(TaskHead head) {
  switch (head) {
    case TaskHead::kSequenceClassification: return {"loss", "accuracy", "macro_f1", "macro_precision", "macro_recall"};
    case TaskHead::kTokenClassification: return {"loss", "precision", "recall", "f1", "accuracy"};
    case TaskHead::kQuestionAnswering: return {"loss", "exact_match", "f1"};
    case TaskHead::kMaskedLM: return {"loss", "perplexity", "accuracy"};
    case TaskHead::kNone: break;
  }
  return {"loss"};
}

// One training or evaluation sequence with the targets of its task.
struct Example {
  std::vector<int32_t> input_ids;     // (T)
  std::vector<int32_t> type_ids;      // (T)
  std::vector<int32_t> token_labels;  // (T) ner: tag id on first pieces, -100 elsewhere
  int32_t label = -1;                 // classification
  int32_t start = 0, end = 0;         // qa
};

// Box-Muller normal draws from the data pipeline's counter-based generator.
class NormalSampler {
 public:
  explicit NormalSampler(uint64_t key) : rng_(key) {}
  double next() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double u1 = 1.0 - rng_.uniform_double();  // (0, 1]
    const double u2 = rng_.uniform_double();
    const double radius = std::sqrt(-2.0 * std::log(u1));
    spare_ = radius * std::sin(2.0 * M_PI * u2);
    has_spare_ = true;
    return radius * std::cos(2.0 * M_PI * u2);
  }

 private:
  data::Rng rng_;
  double spare_ = 0.0;
  bool has_spare_ = false;
};

bool ends_with(const std::string& text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// transformers' BertPreTrainedModel._init_weights: Linear and Embedding weights N(0, range^2),
// biases 0, LayerNorm weight 1 and bias 0, the padding row of the word embeddings 0.
void initialize_parameter(BertModel& model, const ParameterEntry& entry, uint64_t key) {
  Tensor tensor = model.parameters.get(entry.name);
  float* values = tensor.data<float>();
  const int64_t count = tensor.numel();
  if (ends_with(entry.name, "LayerNorm.weight")) {
    std::fill(values, values + count, 1.0f);
  } else if (ends_with(entry.name, ".bias") || entry.name == "cls.predictions.bias") {
    std::fill(values, values + count, 0.0f);
  } else {
    NormalSampler sampler(key);
    const double range = model.config.initializer_range;
    for (int64_t i = 0; i < count; ++i) values[i] = static_cast<float>(range * sampler.next());
    if (entry.name == "embeddings.word_embeddings.weight" && model.config.pad_token_id >= 0 &&
        model.config.pad_token_id < model.config.vocab_size) {
      std::fill(values + model.config.pad_token_id * model.config.hidden_size,
                values + (model.config.pad_token_id + 1) * model.config.hidden_size, 0.0f);
    }
  }
}

// The head config.json's "architectures" names (a from-scratch run has no weights to look at).
TaskHead head_of_architectures(const BertConfig& config) {
  for (const std::string& architecture : config.architectures) {
    if (architecture == "BertForSequenceClassification") return TaskHead::kSequenceClassification;
    if (architecture == "BertForTokenClassification") return TaskHead::kTokenClassification;
    if (architecture == "BertForQuestionAnswering") return TaskHead::kQuestionAnswering;
    if (architecture == "BertForMaskedLM" || architecture == "BertForPreTraining") return TaskHead::kMaskedLM;
  }
  return TaskHead::kNone;
}

int32_t argmax(const float* row, int64_t count) {
  return static_cast<int32_t>(std::max_element(row, row + count) - row);
}

std::string format_double(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.4g", value);
  return buffer;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The run

struct Trainer::Impl {
  const TrainConfig& config;
  TrainerCallbacks& callbacks;
  fs::path output_dir;

  std::unique_ptr<text::BertTokenizer> tokenizer;
  TaskHead head = TaskHead::kNone;
  std::vector<std::string> labels;  // classification / ner
  std::vector<Example> train_examples, eval_examples;
  data::QaDataset qa_eval;                     // qa evaluation: questions and contexts
  std::vector<data::QaFeature> qa_eval_features;  // qa evaluation: windows (same order as eval_examples)
  data::MaskingOptions masking;
  std::unique_ptr<BertModel> model;
  Tensor gradients;  // (total_elements) F32
  std::unique_ptr<TrainingGraph> graph;
  // Evaluation only (Trainer::evaluate_model): the inference engine instead of the graph.
  std::shared_ptr<const InferenceWeights> inference;
  std::unique_ptr<InferenceSession> session;
  std::vector<float> inference_logits;  // mlm: (R, V) logits of the R labelled tokens
  std::unique_ptr<Optimizer> optimizer;
  std::unique_ptr<LearningRateSchedule> schedule;
  std::unique_ptr<data::Batcher> batcher;
  std::string best_metric_name;

  int64_t accumulation = 1;
  int64_t total_steps = 0;
  // Micro-batches of the global stream (all ranks); -1: every step takes micro_batches_per_step()
  // (max_steps mode).
  int64_t total_micro_batches = -1;
  int64_t micro_batches_per_step() const { return accumulation * world.size(); }
  // Distributed optimizer (config.distributed_optimizer under mpirun): rank r owns elements
  // [shard_begin, shard_end) of the arenas; shard_counts holds every rank's element count.
  bool sharded_optimizer = false;
  std::vector<int64_t> shard_counts;
  int64_t shard_begin = 0, shard_end = 0;
  void plan_shards();
  // Under mpirun, before the run starts: throws InvalidArgument on every rank unless all ranks run
  // the same configuration (threads aside), read the same training examples, hold the same
  // initial parameters and take the same start (`start`: fresh, or what they resume from).
  void check_ranks_agree(const std::string& start) const;
  TrainerState state;

  std::unique_ptr<store::CheckpointStore> checkpoint_store;  // null without store_roots
  uint64_t last_store_version = 0, best_store_version = 0, resumed_store_version = 0;

  std::FILE* metrics_file = nullptr;
  std::unique_ptr<TensorBoardWriter> tensorboard;
  std::atomic<bool> stop{false};

  // Data parallelism (under mpirun): every rank holds the whole model and the optimizer state (with
  // the distributed optimizer, its slice of it) and runs the same global stream of micro-batches,
  // taking every world-th one; the gradients are summed over the ranks before each optimizer step,
  // so every rank ends the step with the same parameters. Rank 0 alone writes logs and checkpoints
  // and prints messages.
  const dist::Communicator& world;

  Impl(const TrainConfig& c, TrainerCallbacks& cb)
      : config(c), callbacks(cb), output_dir(c.output_dir), world(dist::Communicator::world()) {}
  ~Impl() {
    if (metrics_file != nullptr) std::fclose(metrics_file);
  }

  void message(const std::string& text) const {
    if (callbacks.on_message && world.primary()) callbacks.on_message(text);
  }

  // --- setup -----------------------------------------------------------------------------------

  void load_data_and_model();
  std::vector<Example> classification_examples(const std::string& path, bool training);
  std::vector<Example> ner_examples(const std::string& path, bool training);
  std::vector<Example> qa_examples(const std::string& path, bool training);
  std::vector<Example> mlm_examples(const std::string& path);
  void build_model(std::optional<BertModel> loaded);
  void plan_steps();
  TrainerState describe_run() const;
  void resume_from(const fs::path& checkpoint);
  void resume_from_store(uint64_t version);
  // The part of a resume common to folders and store versions: checks, parameters, optimizer,
  // data position, trainer state. `parameter` returns the stored tensor of a parameter (throwing
  // when absent); `load_optimizer` restores the optimizer.
  void restore(const std::string& source, const TrainerState& saved,
               const std::function<Tensor(const ParameterEntry&)>& parameter,
               const std::function<void()>& load_optimizer);
  void open_store();
  std::string store_name() const;
  void save_to_store(std::string_view role, bool with_optimizer);
  void open_logs(int64_t resumed_step);

  // --- loop ------------------------------------------------------------------------------------

  TrainingBatch make_batch(const std::vector<Example>& examples, std::span<const int64_t> indices, int64_t epoch,
                           bool evaluation) const;
  EvalResult evaluate(int64_t step);
  // Forward and loss of one evaluation batch through the inference session, with the logits laid
  // out as TrainingGraph::evaluate gives them.
  StepLoss infer(const TrainingBatch& batch, Tensor* logits);
  EvalResult evaluate_only();
  void save(const std::string& name, bool with_optimizer);
  [[noreturn]] void diverged(const std::string& what, int64_t step) const;
  void log_line(const Json& line);
  TrainResult run();
};

std::vector<Example> Trainer::Impl::classification_examples(const std::string& path, bool training) {
  data::ClassificationColumns columns;
  columns.text = config.text_column;
  columns.pair = config.pair_column;
  columns.label = config.label_column;
  data::ClassificationDataset dataset = data::read_classification(path, columns);
  if (training && labels.empty()) labels = data::LabelMap::build(dataset.labels()).names();
  data::assign_labels(dataset, data::LabelMap::from_names(labels));
  std::vector<Example> examples;
  for (data::ClassificationFeature& feature :
       data::featurize_classification(dataset, *tokenizer, static_cast<size_t>(config.max_length))) {
    Example example;
    example.input_ids = std::move(feature.input_ids);
    example.type_ids = std::move(feature.token_type_ids);
    example.label = feature.label;
    examples.push_back(std::move(example));
  }
  return examples;
}

std::vector<Example> Trainer::Impl::ner_examples(const std::string& path, bool training) {
  data::ConllDataset dataset = data::read_conll(path);
  data::TagScheme scheme =
      config.tag_scheme == "auto" ? data::detect_tag_scheme(dataset) : data::parse_tag_scheme(config.tag_scheme);
  data::check_tag_scheme(dataset, scheme);
  if (training && labels.empty()) labels = data::LabelMap::build(dataset.all_tags()).names();
  std::vector<Example> examples;
  for (data::TokenClassificationFeature& feature : data::featurize_token_classification(
           dataset, *tokenizer, data::LabelMap::from_names(labels), static_cast<size_t>(config.max_length))) {
    Example example;
    example.input_ids = std::move(feature.input_ids);
    example.type_ids = std::move(feature.token_type_ids);
    example.token_labels = std::move(feature.labels);
    examples.push_back(std::move(example));
  }
  return examples;
}

std::vector<Example> Trainer::Impl::qa_examples(const std::string& path, bool training) {
  data::QaDataset dataset = data::read_squad(path);
  std::vector<data::QaFeature> features = data::featurize_squad(
      dataset, *tokenizer, static_cast<size_t>(config.max_length), static_cast<size_t>(config.doc_stride));
  std::vector<Example> examples;
  for (const data::QaFeature& feature : features) {
    Example example;
    example.input_ids = feature.input_ids;
    example.type_ids = feature.token_type_ids;
    example.start = feature.start_position;
    example.end = feature.end_position;
    examples.push_back(std::move(example));
  }
  if (!training) {
    qa_eval = std::move(dataset);
    qa_eval_features = std::move(features);
  }
  return examples;
}

std::vector<Example> Trainer::Impl::mlm_examples(const std::string& path) {
  data::MlmPacker packer(*tokenizer, static_cast<size_t>(config.max_length));
  packer.add_file(path);
  std::vector<Example> examples;
  for (data::MlmSequence& sequence : packer.finish()) {
    Example example;
    example.input_ids = std::move(sequence.input_ids);
    examples.push_back(std::move(example));
  }
  check<FormatError>(!examples.empty(), path, ": no text to train on (the file has no non-blank line)");
  return examples;
}

void Trainer::Impl::load_data_and_model() {
  const fs::path model_dir = config.model;
  tokenizer = text::BertTokenizer::from_model_dir(model_dir);

  // The pretrained model (its head tells the task when none is given) or, from scratch, its config.
  std::optional<BertModel> loaded;
  BertConfig model_config;
  if (config.from_scratch) {
    model_config = BertConfig::from_file(model_dir);
  } else {
    loaded.emplace(BertModel::load(model_dir));
    model_config = loaded->config;
  }
  if (!config.task.empty()) {
    head = task_from_name(config.task);
  } else {
    head = loaded ? loaded->head : head_of_architectures(model_config);
    check(head != TaskHead::kNone, "the model at ", model_dir.string(),
          " has no task head: set \"task\" (--task classification|ner|qa|mlm)");
  }
  check(config.max_length <= model_config.max_position_embeddings, "max_length ", config.max_length,
        " exceeds the model's max_position_embeddings ", model_config.max_position_embeddings);

  // Labels: the config's, else the model's own head's, else those of the training file.
  labels = config.labels;
  const bool labelled = head == TaskHead::kSequenceClassification || head == TaskHead::kTokenClassification;
  if (!labelled) labels.clear();
  if (labelled && labels.empty() && loaded && loaded->head == head) labels = loaded->labels();

  message(str_cat("reading ", config.train_file));
  switch (head) {
    case TaskHead::kSequenceClassification:
      train_examples = classification_examples(config.train_file, true);
      if (!config.eval_file.empty()) eval_examples = classification_examples(config.eval_file, false);
      break;
    case TaskHead::kTokenClassification:
      train_examples = ner_examples(config.train_file, true);
      if (!config.eval_file.empty()) eval_examples = ner_examples(config.eval_file, false);
      break;
    case TaskHead::kQuestionAnswering:
      train_examples = qa_examples(config.train_file, true);
      if (!config.eval_file.empty()) eval_examples = qa_examples(config.eval_file, false);
      break;
    case TaskHead::kMaskedLM:
      masking = data::masking_options_for(*tokenizer);
      masking.mask_probability = config.mlm_probability;
      train_examples = mlm_examples(config.train_file);
      if (!config.eval_file.empty()) eval_examples = mlm_examples(config.eval_file);
      break;
    case TaskHead::kNone: break;
  }
  check<FormatError>(!train_examples.empty(), config.train_file, ": no training examples");
  if (!config.eval_file.empty()) {
    check<FormatError>(!eval_examples.empty(), config.eval_file, ": no evaluation examples");
  }
  for (const Example& example : train_examples) {
    for (int32_t id : example.input_ids) {
      check(id >= 0 && id < model_config.vocab_size, "token id ", id, " from ", config.train_file,
            " is outside the model's vocabulary of ", model_config.vocab_size,
            " (vocab.txt and config.json disagree)");
    }
  }
  build_model(std::move(loaded));
  message(str_cat(task_head_name(head), ": ", train_examples.size(), " training sequences",
                  eval_examples.empty() ? std::string() : str_cat(", ", eval_examples.size(), " evaluation sequences"),
                  labels.empty() ? std::string() : str_cat(", ", labels.size(), " labels")));
}

void Trainer::Impl::build_model(std::optional<BertModel> loaded) {
  const bool labelled = head == TaskHead::kSequenceClassification || head == TaskHead::kTokenClassification;
  if (loaded && loaded->head == head && (!labelled || loaded->labels() == labels)) {
    model = std::make_unique<BertModel>(std::move(*loaded));
  } else {
    const BertConfig& model_config = loaded ? loaded->config : BertConfig::from_file(config.model);
    // transformers' classes: only sequence classification has a pooler (BertForTokenClassification,
    // BertForQuestionAnswering and BertForMaskedLM are built with add_pooling_layer=False).
    const bool with_pooler = head == TaskHead::kSequenceClassification;
    const int64_t num_labels = labelled ? static_cast<int64_t>(labels.size()) : 0;
    model = std::make_unique<BertModel>(BertModel::create(model_config, head, with_pooler, num_labels));
    model->directory = config.model;
    const auto& entries = model->parameters.entries();
    std::vector<std::string> initialized;
    for (size_t i = 0; i < entries.size(); ++i) {
      const ParameterEntry& entry = entries[i];
      // The encoder (and pooler) carry over; a head is always new here, since a head of another
      // task or label set has rows that mean something else even where the shapes agree.
      const bool head_parameter = entry.name.rfind("classifier.", 0) == 0 || entry.name.rfind("qa_outputs.", 0) == 0 ||
                                  entry.name.rfind("cls.", 0) == 0;
      if (loaded && !head_parameter && loaded->parameters.contains(entry.name) &&
          loaded->parameters.entry(entry.name).shape == entry.shape) {
        Tensor source = loaded->parameters.get(entry.name);
        std::memcpy(model->parameters.get(entry.name).raw(), source.raw(), source.nbytes());
      } else {
        initialize_parameter(*model, entry, data::derive_key(config.seed, {0x1417EADull, i}));
        initialized.push_back(entry.name);
      }
    }
    if (loaded) {
      message(str_cat("new ", task_head_name(head), " head", labelled ? str_cat(" for ", labels.size(), " labels") : "",
                      ": initialized ", initialized.size(), " tensors (", initialized.front(),
                      initialized.size() > 1 ? ", ..." : "", ") with seed ", config.seed,
                      loaded->head != TaskHead::kNone && loaded->head != head
                          ? str_cat("; the model's ", task_head_name(loaded->head), " head is dropped")
                          : std::string()));
    } else {
      message(str_cat("model from scratch: ", model->parameters.parameter_count(), " parameters initialized with seed ",
                      config.seed));
    }
  }
  DropoutRates dropout = DropoutRates::from_config(model->config);
  if (config.hidden_dropout >= 0) dropout.hidden = static_cast<float>(config.hidden_dropout);
  if (config.attention_dropout >= 0) dropout.attention = static_cast<float>(config.attention_dropout);
  if (config.classifier_dropout >= 0) dropout.classifier = static_cast<float>(config.classifier_dropout);
  gradients = model->parameters.make_arena();
  graph = std::make_unique<TrainingGraph>(*model, gradients, dropout,
                                          kernels::precision_from_name(config.precision));
  if (graph->products() != kernels::precision_from_name(config.precision)) {
    message(str_cat("precision ", config.precision, " is not available on this CPU: training in ",
                    kernels::precision_name(graph->products())));
  } else if (graph->products() == kernels::Precision::kBF16) {
    message("mixed precision: the encoder's products in bf16 (f32 accumulation, f32 weights and optimizer)");
  }
}

void Trainer::Impl::plan_steps() {
  accumulation = config.gradient_accumulation_steps;
  std::vector<int64_t> lengths;
  lengths.reserve(train_examples.size());
  for (const Example& example : train_examples) lengths.push_back(static_cast<int64_t>(example.input_ids.size()));
  batcher = std::make_unique<data::Batcher>(lengths, data::BatchLimits{config.batch_size, config.max_tokens},
                                            data::DataOrderState{config.seed, 0, 0}, config.shuffle);
  if (config.max_steps > 0) {
    total_steps = config.max_steps;
    total_micro_batches = -1;
  } else {
    const auto whole = static_cast<int64_t>(std::floor(config.epochs));
    int64_t micro = 0;
    for (int64_t epoch = 0; epoch < whole; ++epoch) micro += batcher->batches_in_epoch(epoch);
    const double fraction = config.epochs - static_cast<double>(whole);
    if (fraction > 0) {
      micro += static_cast<int64_t>(std::ceil(fraction * static_cast<double>(batcher->batches_in_epoch(whole))));
    }
    total_micro_batches = micro;
    total_steps = (micro + micro_batches_per_step() - 1) / micro_batches_per_step();
  }
  check(total_steps > 0, "the run has no optimizer steps (epochs ", config.epochs, ", max_steps ", config.max_steps,
        ")");

  // Peak learning rate from the batch scaling rule; batches count sequences, or tokens with a budget only.
  const int64_t micro_batch = config.batch_size > 0 ? config.batch_size : config.max_tokens;
  const int64_t global_batch = micro_batch * micro_batches_per_step();
  const int64_t base_batch = config.base_batch_size > 0 ? config.base_batch_size : global_batch;
  const LrScaling rule = parse_lr_scaling(config.scale_lr);
  ScheduleOptions options;
  options.kind = parse_schedule_kind(config.schedule);
  options.total_steps = total_steps;
  options.warmup_steps = config.warmup_steps > 0
                             ? config.warmup_steps
                             : static_cast<int64_t>(std::ceil(config.warmup_ratio * static_cast<double>(total_steps)));
  options.warmup_steps = std::min(options.warmup_steps, total_steps);
  options.peak_learning_rate = scaled_learning_rate(config.learning_rate, base_batch, global_batch, rule);
  options.lr_end = config.lr_end;
  options.power = config.power;
  options.warmup_start = config.gradual_warmup ? gradual_warmup_start(base_batch, global_batch) : 0.0;
  schedule = std::make_unique<LearningRateSchedule>(options);

  OptimizerOptions optimizer_options;
  optimizer_options.beta1 = config.adam_beta1;
  optimizer_options.beta2 = config.adam_beta2;
  optimizer_options.eps = config.adam_epsilon;
  optimizer_options.weight_decay = config.weight_decay;
  optimizer = make_optimizer(parse_optimizer_kind(config.optimizer), model->parameters, optimizer_options);

  message(str_cat(total_steps, " optimizer steps of ", world.distributed() ? str_cat(world.size(), " ranks x ") : "",
                  accumulation, " x ",
                  config.batch_size > 0 ? str_cat(config.batch_size, " sequences") : "",
                  config.batch_size > 0 && config.max_tokens > 0 ? " / " : "",
                  config.max_tokens > 0 ? str_cat(config.max_tokens, " tokens") : "", "; ", config.optimizer,
                  " peak lr ", format_double(options.peak_learning_rate),
                  rule != LrScaling::kNone ? str_cat(" (", config.scale_lr, " scaling of ", config.learning_rate,
                                                     " from batch ", base_batch, " to ", global_batch, ")")
                                           : "",
                  ", ", config.schedule, " schedule, ", options.warmup_steps, " warmup steps"));
}

void Trainer::Impl::plan_shards() {
  sharded_optimizer = config.distributed_optimizer && world.distributed();
  const int64_t total = model->parameters.total_elements();
  shard_begin = 0;
  shard_end = total;
  if (!sharded_optimizer) return;
  // Equal slices, each a multiple of 16 elements (64 bytes) but the last.
  const int64_t ranks = world.size();
  const int64_t slice = ((total + ranks - 1) / ranks + 15) / 16 * 16;
  shard_counts.clear();
  for (int64_t r = 0; r < ranks; ++r) {
    const int64_t begin = std::min(total, r * slice), end = std::min(total, (r + 1) * slice);
    shard_counts.push_back(end - begin);
    if (r == world.rank()) {
      shard_begin = begin;
      shard_end = end;
    }
  }
  optimizer->release_moments_outside(shard_begin, shard_end);
  message(str_cat("distributed optimizer: each of ", ranks, " ranks keeps the optimizer state of ", slice,
                  " of ", total, " parameters"));
}

void Trainer::Impl::check_ranks_agree(const std::string& start) const {
  if (!world.distributed()) return;
  // One XXH64 per part; rank 0's go to everyone; each rank flags what differs; the flags are
  // combined so that every rank reports the same parts (whichever rank's abort ends the job).
  Json settings = config.to_json();
  settings.erase("threads");  // hosts may differ in cores
  const std::string text = settings.dump();
  store::Xxh64 data;
  for (const Example& example : train_examples) {
    for (const std::vector<int32_t>* ids : {&example.input_ids, &example.type_ids, &example.token_labels}) {
      const uint64_t size = ids->size();
      data.update(&size, sizeof size);
      data.update(ids->data(), ids->size() * sizeof(int32_t));
    }
    const int32_t scalars[3] = {example.label, example.start, example.end};
    data.update(scalars, sizeof scalars);
  }
  const Tensor values = model->parameters.values();
  constexpr int kParts = 4;
  uint64_t mine[kParts] = {store::xxh64(text.data(), text.size()), data.digest(),
                           store::xxh64(values.data<float>(), static_cast<size_t>(values.nbytes())),
                           store::xxh64(start.data(), start.size())};
  uint64_t first[kParts];
  std::copy(mine, mine + kParts, first);
  world.broadcast(first, sizeof first, 0);
  uint8_t differs[kParts];
  for (int part = 0; part < kParts; ++part) differs[part] = mine[part] != first[part] ? 1 : 0;
  world.all_reduce_max(differs, kParts);
  std::string parts;
  const char* names[kParts] = {"the configuration (flags and config file, threads aside)",
                               "the training examples (train_file and tokenizer)",
                               "the initial parameters (model folder, head seed)",
                               "where to start (a fresh run, or the checkpoint to resume: each rank looks in "
                               "its own output_dir and store)"};
  for (int part = 0; part < kParts; ++part) {
    if (differs[part]) parts += (parts.empty() ? "" : "; ") + std::string(names[part]);
  }
  check(parts.empty(), "the ", world.size(), " ranks do not agree on ", parts,
        ": every rank must run the same command on the same files");
}

TrainerState Trainer::Impl::describe_run() const {
  TrainerState current;
  current.seed = config.seed;
  current.task = std::string(task_head_name(head));
  current.labels = labels;
  current.model_shape = model_shape(*model);
  current.optimizer = config.optimizer;
  current.total_steps = total_steps;
  current.train_examples = static_cast<int64_t>(train_examples.size());
  current.best_metric_name = best_metric_name;
  current.data = data::DataOrderState{config.seed, 0, 0};
  return current;
}

void Trainer::Impl::resume_from(const fs::path& requested) {
  const fs::path checkpoint = resolve_checkpoint(requested);
  const TrainerState saved = read_trainer_state(checkpoint);
  // Parameters: the checkpoint's model folder, checked tensor by tensor by BertModel::load.
  std::optional<BertModel> stored;
  restore(
      checkpoint.string(), saved,
      [&](const ParameterEntry& entry) {
        if (!stored) stored.emplace(BertModel::load(checkpoint, head));
        check(stored->parameters.contains(entry.name), "cannot resume from ", checkpoint.string(),
              ": it lacks parameter ", entry.name);
        return stored->parameters.get(entry.name);
      },
      [&] { read_optimizer_state(checkpoint, *optimizer); });
}

void Trainer::Impl::resume_from_store(uint64_t version) {
  const std::string source = str_cat("version ", version, " of ", store_name());
  // Eager verification: every shard checksummed now, bad replicas skipped (on_warning says which).
  const store::Checkpoint checkpoint = checkpoint_store->load(store::LoadOptions{version, store::VerifyMode::kEager});
  const TrainerState saved = read_trainer_state(checkpoint, source);
  restore(
      source, saved,
      [&](const ParameterEntry& entry) {
        const std::string name = hf_state_dict_name(head, entry.name);
        check(checkpoint.has(name), "cannot resume from ", source, ": it lacks parameter ", name);
        Tensor tensor = checkpoint.tensor(name);
        check(tensor.dtype() == DType::kF32, "cannot resume from ", source, ": parameter ", name, " is ",
              dtype_name(tensor.dtype()), ", expected F32");
        return tensor;
      },
      [&] { read_optimizer_state(checkpoint, *optimizer, source); });
  resumed_store_version = version;
}

void Trainer::Impl::restore(const std::string& source, const TrainerState& saved,
                            const std::function<Tensor(const ParameterEntry&)>& parameter,
                            const std::function<void()>& load_optimizer) {
  check_resume_compatible(saved, describe_run(), source);
  check(saved.global_step <= total_steps, "cannot resume from ", source, ": it is at step ", saved.global_step,
        " but this run has only ", total_steps, " steps");

  for (const ParameterEntry& entry : model->parameters.entries()) {
    Tensor stored = parameter(entry);
    check(stored.shape() == entry.shape, "cannot resume from ", source, ": parameter ", entry.name, " has shape ",
          shape_string(stored.shape()), ", this run's model ", shape_string(entry.shape));
    std::memcpy(model->parameters.get(entry.name).raw(), stored.raw(), stored.nbytes());
  }
  load_optimizer();
  check(optimizer->step_count() == saved.global_step, "cannot resume from ", source,
        ": the optimizer state is at step ", optimizer->step_count(), " but trainer_state.json at step ",
        saved.global_step);

  std::vector<int64_t> lengths;
  for (const Example& example : train_examples) lengths.push_back(static_cast<int64_t>(example.input_ids.size()));
  batcher = std::make_unique<data::Batcher>(lengths, data::BatchLimits{config.batch_size, config.max_tokens},
                                            saved.data, config.shuffle);
  if (saved.total_steps != total_steps) {
    message(str_cat("note: the checkpoint's schedule had ", saved.total_steps, " steps, this run has ", total_steps,
                    "; the learning rate follows this run's"));
  }
  const std::string metric = best_metric_name;
  state = saved;
  state.total_steps = total_steps;
  if (saved.best_metric_name != metric) {  // another metric picks the best from now on
    state.best_metric_name = metric;
    state.best_metric = std::numeric_limits<double>::quiet_NaN();
    state.best_step = -1;
  }
  message(str_cat("resumed from ", source, " at step ", saved.global_step, " (epoch ", format_double(saved.epoch),
                  ")"));
}

void Trainer::Impl::open_store() {
  std::vector<fs::path> roots(config.store_roots.begin(), config.store_roots.end());
  store::StoreOptions options;
  options.on_warning = [this](const std::string& warning) { message("checkpoint store: " + warning); };
  checkpoint_store = std::make_unique<store::CheckpointStore>(std::move(roots), options);
}

std::string Trainer::Impl::store_name() const {
  std::string roots;
  for (const std::string& root : config.store_roots) {
    if (!roots.empty()) roots += ',';
    roots += root;
  }
  return str_cat("checkpoint store ", roots);
}

void Trainer::Impl::save_to_store(std::string_view role, bool with_optimizer) {
  store::SaveOptions options;
  options.replication = config.store_replication();
  options.shard_size_bytes = std::max<uint64_t>(1, static_cast<uint64_t>(config.store_shard_mb * 1048576.0));
  store::SaveResult saved;
  try {
    saved = save_training_version(*checkpoint_store, options, *model, labels, config.model, state,
                                  with_optimizer ? optimizer.get() : nullptr, config.to_json(), role);
  } catch (const IoError& error) {
    throw IoError(str_cat("step ", state.global_step, ": cannot save the ", role, " checkpoint to ", store_name(),
                          " (the checkpoint folder in ", output_dir.string(), " was saved): ", error.what()));
  }
  (role == kStoreRoleBest ? best_store_version : last_store_version) = saved.version;
  message(str_cat("step ", state.global_step, ": ", role, " checkpoint saved as version ", saved.version, " of ",
                  store_name(), " (", saved.shards, saved.shards == 1 ? " shard" : " shards", ", ",
                  options.replication, " replicas)"));
  if (config.store_keep > 0) {
    // The best checkpoint's version stays whatever its age: it is the one a user deploys.
    std::set<uint64_t> protect;
    if (best_store_version > 0) protect.insert(best_store_version);
    const store::GcReport report = checkpoint_store->gc(static_cast<size_t>(config.store_keep), protect);
    if (!report.removed.empty()) {
      message(str_cat("checkpoint store: removed ", report.removed.size(), " old versions (store_keep ",
                      config.store_keep, ")"));
    }
  }
}

void Trainer::Impl::open_logs(int64_t resumed_step) {
  const fs::path path = output_dir / "metrics.jsonl";
  if (resumed_step >= 0 && fs::exists(path)) {
    // Keep what the interrupted run logged up to its checkpoint; drop the lines after it, which
    // the resumed run writes again.
    std::istringstream lines(read_file(path));
    std::string kept, line;
    while (std::getline(lines, line)) {
      if (line.empty()) continue;
      try {
        const Json record = Json::parse(line);
        if (record.value("step", int64_t{0}) > resumed_step) continue;
      } catch (const Json::exception&) {
        continue;  // a line torn by the kill
      }
      kept += line + "\n";
    }
    write_file_atomic(path, kept);
  } else {
    write_file_atomic(path, "");
  }
  metrics_file = std::fopen(path.c_str(), "ab");
  check<IoError>(metrics_file != nullptr, "cannot open ", path.string(), ": ", std::strerror(errno));
  if (config.tensorboard) {
    tensorboard = std::make_unique<TensorBoardWriter>(output_dir / "tensorboard");
    if (resumed_step >= 0) tensorboard->add_session_start(resumed_step + 1);
    tensorboard->flush();
  }
}

void Trainer::Impl::log_line(const Json& line) {
  if (!world.primary()) return;  // rank 0 logs for the run
  const std::string text = line.dump() + "\n";
  check<IoError>(std::fwrite(text.data(), 1, text.size(), metrics_file) == text.size() &&
                     std::fflush(metrics_file) == 0,
                 "cannot write ", (output_dir / "metrics.jsonl").string(), ": ", std::strerror(errno));
}

TrainingBatch Trainer::Impl::make_batch(const std::vector<Example>& examples, std::span<const int64_t> indices,
                                        int64_t epoch, bool evaluation) const {
  TrainingBatch batch;
  for (int64_t index : indices) {
    const Example& example = examples[static_cast<size_t>(index)];
    switch (head) {
      case TaskHead::kMaskedLM: {
        // Evaluation masks with its own fixed key, so every evaluation scores the same positions.
        const uint64_t seed = evaluation ? data::derive_key(config.seed, {0xE7A1ull}) : config.seed;
        data::MaskedExample masked = data::mask_tokens(example.input_ids, masking, seed,
                                                       static_cast<uint64_t>(evaluation ? 0 : epoch),
                                                       static_cast<uint64_t>(index));
        batch.tokens.add_sequence(masked.input_ids);
        batch.labels.insert(batch.labels.end(), masked.labels.begin(), masked.labels.end());
        break;
      }
      case TaskHead::kSequenceClassification:
        batch.tokens.add_sequence(example.input_ids, example.type_ids);
        batch.labels.push_back(example.label);
        break;
      case TaskHead::kTokenClassification:
        batch.tokens.add_sequence(example.input_ids, example.type_ids);
        batch.labels.insert(batch.labels.end(), example.token_labels.begin(), example.token_labels.end());
        break;
      case TaskHead::kQuestionAnswering:
        batch.tokens.add_sequence(example.input_ids, example.type_ids);
        batch.start_positions.push_back(example.start);
        batch.end_positions.push_back(example.end);
        break;
      case TaskHead::kNone: break;
    }
  }
  return batch;
}

EvalResult Trainer::Impl::evaluate(int64_t step) {
  EvalResult result;
  result.step = step;
  const int64_t max_sequences =
      config.eval_batch_size > 0 ? config.eval_batch_size : (config.batch_size > 0 ? config.batch_size : 32);
  double loss_sum = 0.0;
  int64_t loss_count = 0;
  std::vector<int32_t> true_ids, predicted_ids;                        // classification
  std::vector<std::vector<std::string>> true_tags, predicted_tags;     // ner
  int64_t tokens_correct = 0, tokens_scored = 0;                      // ner tokens, mlm masked tokens
  std::vector<std::vector<float>> start_logits(eval_examples.size()), end_logits(eval_examples.size());  // qa
  const BertModel& scored = session ? *inference->model : *model;
  const int64_t L = scored.num_labels;

  const auto n = static_cast<int64_t>(eval_examples.size());
  std::vector<int64_t> indices;
  for (int64_t begin = 0; begin < n;) {
    indices.clear();
    int64_t tokens = 0;
    while (begin < n && static_cast<int64_t>(indices.size()) < max_sequences) {
      const auto length = static_cast<int64_t>(eval_examples[static_cast<size_t>(begin)].input_ids.size());
      if (config.max_tokens > 0 && !indices.empty() && tokens + length > config.max_tokens) break;
      indices.push_back(begin++);
      tokens += length;
    }
    const TrainingBatch batch = make_batch(eval_examples, indices, 0, true);
    Tensor logits;
    const StepLoss loss = session ? infer(batch, &logits) : graph->evaluate(batch, &logits);
    if (loss.count > 0) {
      loss_sum += loss.loss * static_cast<double>(loss.count);
      loss_count += loss.count;
    }
    const float* values = logits.defined() ? logits.data<float>() : nullptr;
    const PackedBatch& packed = batch.tokens;
    switch (head) {
      case TaskHead::kSequenceClassification:
        for (int64_t s = 0; s < packed.sequences(); ++s) {
          true_ids.push_back(batch.labels[static_cast<size_t>(s)]);
          predicted_ids.push_back(argmax(values + s * L, L));
        }
        break;
      case TaskHead::kTokenClassification:
        for (int64_t s = 0; s < packed.sequences(); ++s) {
          std::vector<std::string> truth, predicted;
          for (int64_t t = packed.sequence_offsets[s]; t < packed.sequence_offsets[s + 1]; ++t) {
            const int32_t label = batch.labels[static_cast<size_t>(t)];
            if (label == data::kIgnoreIndex) continue;
            const int32_t guess = argmax(values + t * L, L);
            truth.push_back(labels[static_cast<size_t>(label)]);
            predicted.push_back(labels[static_cast<size_t>(guess)]);
            tokens_correct += guess == label;
            ++tokens_scored;
          }
          true_tags.push_back(std::move(truth));
          predicted_tags.push_back(std::move(predicted));
        }
        break;
      case TaskHead::kQuestionAnswering:
        for (int64_t s = 0; s < packed.sequences(); ++s) {
          const auto feature = static_cast<size_t>(indices[static_cast<size_t>(s)]);
          for (int64_t t = packed.sequence_offsets[s]; t < packed.sequence_offsets[s + 1]; ++t) {
            start_logits[feature].push_back(values[t * 2]);
            end_logits[feature].push_back(values[t * 2 + 1]);
          }
        }
        break;
      case TaskHead::kMaskedLM: {
        const int64_t V = scored.config.vocab_size;
        int64_t row = 0;
        for (int32_t label : batch.labels) {
          if (label == data::kIgnoreIndex) continue;
          tokens_correct += argmax(values + row * V, V) == label;
          ++tokens_scored;
          ++row;
        }
        break;
      }
      case TaskHead::kNone: break;
    }
  }

  const double mean_loss = loss_count > 0 ? loss_sum / static_cast<double>(loss_count) : 0.0;
  result.metrics["loss"] = mean_loss;
  switch (head) {
    case TaskHead::kSequenceClassification: {
      const ClassificationReport report = classification_report(true_ids, predicted_ids, static_cast<int32_t>(L));
      result.examples = report.examples;
      result.metrics["accuracy"] = report.accuracy;
      result.metrics["macro_f1"] = report.macro_f1;
      result.metrics["macro_precision"] = report.macro_precision;
      result.metrics["macro_recall"] = report.macro_recall;
      break;
    }
    case TaskHead::kTokenClassification: {
      const EntityReport report = entity_report(true_tags, predicted_tags);
      result.examples = static_cast<int64_t>(true_tags.size());
      result.metrics["precision"] = report.micro.precision;
      result.metrics["recall"] = report.micro.recall;
      result.metrics["f1"] = report.micro.f1;
      result.metrics["accuracy"] =
          tokens_scored > 0 ? static_cast<double>(tokens_correct) / static_cast<double>(tokens_scored) : 0.0;
      break;
    }
    case TaskHead::kQuestionAnswering: {
      // Windows grouped by question; each question decoded from all its windows (n-best spans).
      std::vector<std::vector<size_t>> windows(qa_eval.examples.size());
      for (size_t f = 0; f < qa_eval_features.size(); ++f) {
        windows[static_cast<size_t>(qa_eval_features[f].example_index)].push_back(f);
      }
      data::QaDecodeOptions options;
      options.n_best = static_cast<size_t>(config.n_best);
      options.max_answer_length = static_cast<size_t>(config.max_answer_length);
      std::vector<std::string> predictions;
      std::vector<std::vector<std::string>> answers;
      for (size_t e = 0; e < qa_eval.examples.size(); ++e) {
        const data::QaExample& example = qa_eval.examples[e];
        std::vector<std::string> truths;
        for (const data::QaAnswer& answer : example.answers) truths.push_back(answer.text);
        answers.push_back(std::move(truths));
        if (windows[e].empty()) {
          predictions.emplace_back();
          continue;
        }
        std::vector<const data::QaFeature*> features;
        std::vector<std::span<const float>> starts, ends;
        for (size_t f : windows[e]) {
          features.push_back(&qa_eval_features[f]);
          starts.emplace_back(start_logits[f]);
          ends.emplace_back(end_logits[f]);
        }
        predictions.push_back(data::decode_answer(example, features, starts, ends, options).text);
      }
      const SquadScores scores = squad_scores(predictions, answers);
      result.examples = scores.questions;
      result.metrics["exact_match"] = scores.exact_match;
      result.metrics["f1"] = scores.f1;
      break;
    }
    case TaskHead::kMaskedLM:
      result.examples = tokens_scored;
      result.metrics["perplexity"] = std::isfinite(mean_loss) ? perplexity(mean_loss) : mean_loss;
      result.metrics["accuracy"] =
          tokens_scored > 0 ? static_cast<double>(tokens_correct) / static_cast<double>(tokens_scored) : 0.0;
      break;
    case TaskHead::kNone: break;
  }
  return result;
}

StepLoss Trainer::Impl::infer(const TrainingBatch& batch, Tensor* logits) {
  const InferenceOutputs& outputs = session->run(batch.tokens);
  const PackedBatch& packed = batch.tokens;
  const int64_t S = packed.sequences(), N = packed.tokens();
  const float* values = outputs.logits.data<float>();  // (S, L) or (N, L), (N, 2) qa, (N, V) mlm
  std::vector<float> row_losses;
  StepLoss loss;
  auto cross_entropy = [&](const float* rows_logits, const int32_t* targets, int64_t rows, int64_t width) {
    row_losses.resize(static_cast<size_t>(rows));
    const kernels::LossResult result =
        kernels::cross_entropy_forward_backward(nullptr, row_losses.data(), rows_logits, targets, rows, width, 1.0f);
    loss = StepLoss{result.loss, result.count};
  };
  switch (head) {
    case TaskHead::kSequenceClassification:
      cross_entropy(values, batch.labels.data(), S, outputs.logits.shape().back());
      *logits = outputs.logits;
      break;
    case TaskHead::kTokenClassification:
      cross_entropy(values, batch.labels.data(), N, outputs.logits.shape().back());
      *logits = outputs.logits;
      break;
    case TaskHead::kQuestionAnswering: {
      const kernels::QaLossResult result =
          kernels::qa_span_loss_forward_backward(nullptr, values, packed.sequence_offsets.data(), S,
                                                 batch.start_positions.data(), batch.end_positions.data(), 1.0f);
      loss = StepLoss{result.loss, std::max(result.start_count, result.end_count)};
      *logits = outputs.logits;
      break;
    }
    case TaskHead::kMaskedLM: {
      // The graph scores only the labelled tokens: gather their rows (R, V) in token order.
      const int64_t V = outputs.logits.shape().back();
      inference_logits.clear();
      std::vector<int32_t> targets;
      for (int64_t t = 0; t < N; ++t) {
        const int32_t label = batch.labels[static_cast<size_t>(t)];
        if (label == data::kIgnoreIndex) continue;
        inference_logits.insert(inference_logits.end(), values + t * V, values + (t + 1) * V);
        targets.push_back(label);
      }
      const auto R = static_cast<int64_t>(targets.size());
      cross_entropy(inference_logits.data(), targets.data(), R, V);
      *logits = Tensor::view(inference_logits.data(), {R, V}, DType::kF32);
      break;
    }
    case TaskHead::kNone: break;
  }
  return loss;
}

EvalResult Trainer::Impl::evaluate_only() {
  if (config.threads > 0) set_num_threads(static_cast<int>(config.threads));
  check(!config.eval_file.empty(), "evaluation only: \"eval_file\" (--eval-file) is required");
  const fs::path model_dir = config.model;
  tokenizer = text::BertTokenizer::from_model_dir(model_dir);
  inference = InferenceWeights::load(model_dir);
  const BertModel& loaded = *inference->model;
  head = loaded.head;
  check(head != TaskHead::kNone, "evaluation only: the model at ", model_dir.string(),
        " has no task head to evaluate");
  check(config.task.empty() || task_from_name(config.task) == head, "evaluation only: task \"", config.task,
        "\" but the model at ", model_dir.string(), " has a ", task_head_name(head), " head");
  check(config.max_length <= loaded.config.max_position_embeddings, "max_length ", config.max_length,
        " exceeds the model's max_position_embeddings ", loaded.config.max_position_embeddings);
  const bool labelled = head == TaskHead::kSequenceClassification || head == TaskHead::kTokenClassification;
  labels = labelled ? (config.labels.empty() ? loaded.labels() : config.labels) : std::vector<std::string>{};
  check(!labelled || static_cast<int64_t>(labels.size()) == loaded.num_labels, "evaluation only: ", labels.size(),
        " labels given but the model's head has ", loaded.num_labels);
  message(str_cat("reading ", config.eval_file));
  switch (head) {
    case TaskHead::kSequenceClassification: eval_examples = classification_examples(config.eval_file, false); break;
    case TaskHead::kTokenClassification: eval_examples = ner_examples(config.eval_file, false); break;
    case TaskHead::kQuestionAnswering: eval_examples = qa_examples(config.eval_file, false); break;
    case TaskHead::kMaskedLM:
      masking = data::masking_options_for(*tokenizer);
      masking.mask_probability = config.mlm_probability;
      eval_examples = mlm_examples(config.eval_file);
      break;
    case TaskHead::kNone: break;
  }
  check<FormatError>(!eval_examples.empty(), config.eval_file, ": no evaluation examples");
  message(str_cat(task_head_name(head), ": ", eval_examples.size(), " evaluation sequences",
                  inference->low_precision ? " (bf16/int8 layers)" : " (f32)"));
  session = std::make_unique<InferenceSession>(inference);
  // infer() reads only the (S, L) logits of sequence classification: the last layer on [CLS] rows.
  session->set_sequence_outputs_only(head == TaskHead::kSequenceClassification);
  return evaluate(0);
}

void Trainer::Impl::save(const std::string& name, bool with_optimizer) {
  // A checkpoint only ever holds finite weights: an update that overflowed stops the run here, and
  // the previous checkpoint stays the last good one.
  if (auto value = find_non_finite(model->parameters, model->parameters.values())) {
    diverged(str_cat("the optimizer step made parameter \"", value->parameter, "\" element ", value->index, " ",
                     value->value),
             state.global_step);
  }
  if (sharded_optimizer && with_optimizer) {
    // Rank 0 assembles the ranks' slices of the moments for the checkpoint (by name, whole).
    world.gather(optimizer->exp_avg_data(), shard_counts, 0);
    world.gather(optimizer->exp_avg_sq_data(), shard_counts, 0);
  }
  if (!world.primary()) return;  // the ranks' parameters are the same: rank 0 writes them
  CheckpointWriter writer(output_dir / name);
  write_model_folder(writer.path(), *model, labels, config.model);
  write_trainer_state(writer.path(), state);
  if (with_optimizer) write_optimizer_state(writer.path(), *optimizer);
  write_file_atomic(writer.path() / "train_config.json", config.to_json().dump(2) + "\n");
  writer.commit();
  if (checkpoint_store) save_to_store(name == "checkpoint-best" ? kStoreRoleBest : kStoreRoleLast, with_optimizer);
  if (sharded_optimizer && with_optimizer) optimizer->release_moments_outside(shard_begin, shard_end);
}

void Trainer::Impl::diverged(const std::string& what, int64_t step) const {
  std::string detail;
  std::string parameter;
  if (auto gradient = find_non_finite(model->parameters, gradients)) {
    parameter = gradient->parameter;
    detail = str_cat("; first non-finite gradient: parameter \"", gradient->parameter, "\" element ", gradient->index,
                     " is ", gradient->value);
  } else {
    detail = "; every gradient is finite";
  }
  if (auto value = find_non_finite(model->parameters, model->parameters.values())) {
    detail += str_cat("; first non-finite parameter: \"", value->parameter, "\" element ", value->index, " is ",
                      value->value);
  }
  const fs::path last = output_dir / "checkpoint-last";
  std::string keep;
  if (checkpoint_exists(last)) {
    const TrainerState saved = read_trainer_state(resolve_checkpoint(last));
    keep = str_cat("; the last good checkpoint is ", last.string(), " (step ", saved.global_step,
                   "), left unchanged");
  } else {
    keep = "; no checkpoint was saved before it";
  }
  throw NonFiniteError(str_cat("training diverged at step ", step, " (epoch ", format_double(state.epoch), "): ",
                               what, detail, keep, ". Lower the learning rate or enable clipping (max_grad_norm)."),
                       parameter);
}

TrainResult Trainer::Impl::run() {
  if (config.threads > 0) set_num_threads(static_cast<int>(config.threads));
  load_data_and_model();
  best_metric_name = config.metric_for_best.empty() ? default_best_metric(head) : config.metric_for_best;
  {
    const std::vector<std::string> known = metric_names(head);
    check(std::find(known.begin(), known.end(), best_metric_name) != known.end(), "metric_for_best \"",
          best_metric_name, "\" is not a metric of ", task_head_name(head), " (", Json(known).dump(), ")");
  }
  plan_steps();
  plan_shards();
  state = describe_run();

  // Fresh run or resume.
  std::error_code error;
  fs::create_directories(output_dir, error);
  check<IoError>(!error, "cannot create output_dir ", output_dir.string(), ": ", error.message());
  const fs::path last_dir = output_dir / "checkpoint-last";
  if (!config.store_roots.empty()) open_store();
  std::optional<fs::path> resume_dir;
  std::optional<uint64_t> resume_version;  // from the store
  if (config.resume == "auto") {
    if (checkpoint_exists(last_dir)) {
      resume_dir = last_dir;
    } else if (checkpoint_store && (resume_version = find_resumable_version(*checkpoint_store))) {
      message(str_cat("no checkpoint in ", output_dir.string(), ": resuming from the ", store_name()));
    } else {
      message(str_cat("no checkpoint in ", output_dir.string(),
                      checkpoint_store ? " or in the " + store_name() : std::string(), ": starting fresh"));
    }
  } else if (config.resume == "store") {
    resume_version = find_resumable_version(*checkpoint_store);
    check<IoError>(resume_version.has_value(), "resume store: the ", store_name(),
                   " holds no resumable trainer checkpoint (a committed \"last\" version with optimizer state)");
  } else if (config.resume.rfind("store:", 0) == 0) {
    resume_version = std::stoull(config.resume.substr(6));
  } else if (!config.resume.empty()) {
    resume_dir = fs::path(config.resume);
  }
  check_ranks_agree(resume_dir ? "folder " + resume_dir->string()
                               : resume_version ? str_cat("store version ", *resume_version) : "fresh");
  int64_t resumed_step = -1;
  if (resume_dir || resume_version) {
    if (resume_dir) {
      resume_from(*resume_dir);
    } else {
      resume_from_store(*resume_version);
    }
    resumed_step = state.global_step;
    if (sharded_optimizer) optimizer->release_moments_outside(shard_begin, shard_end);  // restored whole
  } else {
    if (checkpoint_exists(last_dir) && !config.overwrite_output_dir) {
      throw InvalidArgument(str_cat("output_dir ", output_dir.string(),
                                    " already holds a checkpoint: resume it (--resume auto) or start over "
                                    "(--overwrite-output-dir)"));
    }
    if (checkpoint_store && !config.overwrite_output_dir) {
      if (const std::optional<uint64_t> existing = find_resumable_version(*checkpoint_store)) {
        throw InvalidArgument(str_cat("the ", store_name(), " already holds a trainer checkpoint (version ", *existing,
                                      "): resume it (--resume store) or add this run's versions after it "
                                      "(--overwrite-output-dir)"));
      }
    }
    // Every rank has decided (each read the same folder) before rank 0 clears it.
    world.barrier();
    if (world.primary()) {
      for (const char* stale : {"checkpoint-last", "checkpoint-best", "tensorboard"}) fs::remove_all(output_dir / stale);
    }
  }
  if (world.primary()) {
    write_file_atomic(output_dir / "train_config.json", config.to_json().dump(2) + "\n");
    open_logs(resumed_step);
  }

  TrainResult result;
  result.total_steps = total_steps;
  result.resumed_from_step = resumed_step;
  const int64_t first_step = state.global_step;
  const auto start_time = Clock::now();
  int64_t tokens_this_run = 0;
  double interval_loss = 0.0;
  double interval_communication = 0.0;  // seconds in the gradient all-reduce (distributed runs)
  int64_t interval_reduced = 0;         // floats this rank put into it
  // The word embeddings' gradient is row-sparse: only the rows of the step's tokens are summed.
  std::vector<dist::RowSparseRegion> sparse_tables;
  if (model->parameters.contains("embeddings.word_embeddings.weight")) {
    const ParameterEntry& word = model->parameters.entry("embeddings.word_embeddings.weight");
    sparse_tables.push_back({word.offset, word.shape[0], word.shape[1]});
  }
  dist::GradientAllReduce reduce_gradients(world, gradients.numel(), sparse_tables);
  int64_t interval_steps = 0, interval_tokens = 0;
  auto interval_start = start_time;
  std::optional<EvalResult> last_eval;
  bool stopped = false;
  const auto elapsed = [&]() { return std::chrono::duration<double>(Clock::now() - start_time).count(); };

  auto run_evaluation = [&](int64_t step) {
    EvalResult evaluation = evaluate(step);
    Json line = {{"type", "eval"}, {"step", step}, {"epoch", state.epoch}, {"examples", evaluation.examples}};
    for (const auto& [name, value] : evaluation.metrics) {
      line[name] = value;
      if (tensorboard) tensorboard->add_scalar("eval/" + name, value, step);
    }
    log_line(line);
    if (tensorboard) tensorboard->flush();
    if (callbacks.on_eval) callbacks.on_eval(evaluation);
    const double value = evaluation.metrics.at(best_metric_name);
    const bool better = std::isnan(state.best_metric) ||
                        (greater_is_better(best_metric_name) ? value > state.best_metric : value < state.best_metric);
    if (better && std::isfinite(value)) {
      state.best_metric = value;
      state.best_step = step;
      save("checkpoint-best", false);
      message(str_cat("step ", step, ": new best ", best_metric_name, " ", format_double(value), " -> ",
                      (output_dir / "checkpoint-best").string()));
    }
    last_eval = evaluation;
  };

  while (state.global_step < total_steps) {
    // One rank's stop request (a signal, request_stop) stops every rank before the same step.
    if (world.any(stop.load() || stop_requested())) {
      stopped = true;
      break;
    }
    const int64_t step = state.global_step;  // 0-based index of this optimizer step
    // Micro-batches m = 0..micro-1 of the global stream make this step; rank r runs those with
    // m % world == r. Each one's loss is scaled by 1 / micro and the ranks' gradients are summed,
    // so the step is the one a single process with world x accumulation micro-batches takes (same
    // batches, same dropout keys).
    int64_t micro = micro_batches_per_step();
    if (total_micro_batches >= 0) micro = std::min(micro, total_micro_batches - state.micro_batches);
    zero_arena(gradients);
    double step_sums[2] = {0.0, 0.0};  // loss of this rank's micro-batches, their tokens
    bool finite_losses = true;
    for (int64_t m = 0; m < micro; ++m) {
      const std::vector<int64_t> indices = batcher->next();
      const int64_t epoch = batcher->state().epoch;
      state.data = batcher->state();
      state.epoch = static_cast<double>(state.data.epoch) +
                    static_cast<double>(state.data.position) / static_cast<double>(train_examples.size());
      if (m % world.size() != world.rank()) continue;
      const TrainingBatch batch = make_batch(train_examples, indices, epoch, false);
      const uint64_t dropout_seed =
          data::derive_key(config.seed, {0xD809ull, static_cast<uint64_t>(step), static_cast<uint64_t>(m)});
      const StepLoss loss = graph->forward_backward(batch, 1.0f / static_cast<float>(micro), dropout_seed);
      if (!std::isfinite(loss.loss)) {
        // Alone, stop at once; distributed, every rank must get past the all-reduce below first.
        if (!world.distributed()) diverged(str_cat("the loss of micro-batch ", m, " is ", loss.loss), step + 1);
        finite_losses = false;
      }
      step_sums[0] += loss.loss;
      step_sums[1] += static_cast<double>(batch.tokens.tokens());
    }
    if (world.distributed()) {
      const auto reduce_start = Clock::now();
      if (sharded_optimizer) {
        world.reduce_scatter_sum(gradients.data<float>(), shard_counts);  // this rank's slice summed
        interval_reduced += gradients.numel();
      } else {
        interval_reduced += reduce_gradients.run(gradients.data<float>());
      }
      world.all_reduce_sum(step_sums, 2);
      interval_communication += std::chrono::duration<double>(Clock::now() - reduce_start).count();
      if (world.any(!finite_losses)) diverged(str_cat("a micro-batch's loss is not finite (on some rank)"), step + 1);
    }
    const double step_loss = step_sums[0] / static_cast<double>(micro);
    const auto step_tokens = static_cast<int64_t>(step_sums[1]);
    state.micro_batches += micro;

    double grad_norm = 0.0;
    float grad_scale = 1.0f;
    try {
      if (sharded_optimizer) {
        // Each rank holds the summed gradients of its slice only: the ranks add their squares.
        double squares = sum_of_squares(model->parameters, gradients, shard_begin, shard_end);
        world.all_reduce_sum(&squares, 1);
        grad_norm = std::sqrt(squares);
        if (config.max_grad_norm > 0 && std::isfinite(grad_norm)) {
          grad_scale = static_cast<float>(clip_coefficient_of_norm(grad_norm, config.max_grad_norm).scale);
        }
      } else if (config.max_grad_norm > 0) {
        // Clipping's coefficient is applied inside the optimizer's pass (one pass less per step).
        const ClipResult clip = clip_coefficient(model->parameters, gradients, config.max_grad_norm);
        grad_norm = clip.total_norm;
        grad_scale = static_cast<float>(clip.scale);
      } else {
        grad_norm = global_norm(model->parameters, gradients);
      }
      if (!std::isfinite(grad_norm)) throw NonFiniteError("non-finite gradient norm", "");
    } catch (const NonFiniteError&) {
      diverged(str_cat("the gradients are not finite (loss ", step_loss, ")"), step + 1);
    }
    const double learning_rate = schedule->learning_rate(step);
    if (sharded_optimizer) {
      // Update this rank's slice (LAMB's per-tensor norms summed over the slices), then every rank
      // takes every slice's new parameters.
      std::vector<double> norm_sums =
          optimizer->begin_step(model->parameters.values(), gradients, shard_begin, shard_end, grad_scale);
      world.all_reduce_sum(norm_sums.data(), static_cast<int64_t>(norm_sums.size()));
      optimizer->finish_step(model->parameters.values(), gradients, learning_rate, norm_sums, shard_begin, shard_end);
      const auto gather_start = Clock::now();
      Tensor values = model->parameters.values();
      world.all_gather(values.data<float>(), shard_counts);
      interval_communication += std::chrono::duration<double>(Clock::now() - gather_start).count();
    } else {
      optimizer->step(model->parameters.values(), gradients, learning_rate, grad_scale);
    }
    state.global_step = step + 1;
    state.tokens_seen += step_tokens;
    tokens_this_run += step_tokens;
    result.step_losses.push_back(step_loss);

    const double seconds = elapsed();
    if (callbacks.on_step) {
      StepReport report;
      report.step = state.global_step;
      report.total_steps = total_steps;
      report.first_step = first_step;
      report.loss = step_loss;
      report.learning_rate = learning_rate;
      report.grad_norm = grad_norm;
      report.tokens = step_tokens;
      report.tokens_per_second = seconds > 0 ? static_cast<double>(tokens_this_run) / seconds : 0.0;
      report.epoch = state.epoch;
      report.elapsed_seconds = seconds;
      callbacks.on_step(report);
    }

    interval_loss += step_loss;
    interval_tokens += step_tokens;
    ++interval_steps;
    const bool at_end = state.global_step == total_steps;
    if (state.global_step % config.logging_steps == 0 || at_end) {
      const double interval_seconds = std::chrono::duration<double>(Clock::now() - interval_start).count();
      const double mean_loss = interval_loss / static_cast<double>(interval_steps);
      const double tokens_per_second =
          interval_seconds > 0 ? static_cast<double>(interval_tokens) / interval_seconds : 0.0;
      Json line = {{"type", "train"},
                   {"step", state.global_step},
                   {"epoch", state.epoch},
                   {"loss", mean_loss},
                   {"learning_rate", learning_rate},
                   {"grad_norm", grad_norm},
                   {"tokens_per_second", tokens_per_second},
                   {"tokens_seen", state.tokens_seen},
                   {"elapsed_seconds", seconds}};
      if (world.distributed()) {
        line["ranks"] = world.size();
        // Waiting included: a rank that finished its micro-batches first waits here for the others.
        line["all_reduce_seconds"] = interval_communication;
        line["all_reduce_mb"] = static_cast<double>(interval_reduced) * sizeof(float) / 1e6;
      }
      log_line(line);
      if (tensorboard) {
        tensorboard->add_scalar("train/loss", mean_loss, state.global_step);
        tensorboard->add_scalar("train/learning_rate", learning_rate, state.global_step);
        tensorboard->add_scalar("train/grad_norm", grad_norm, state.global_step);
        tensorboard->add_scalar("train/tokens_per_second", tokens_per_second, state.global_step);
        tensorboard->add_scalar("train/epoch", state.epoch, state.global_step);
        tensorboard->flush();
      }
      interval_loss = 0.0;
      interval_communication = 0.0;
      interval_reduced = 0;
      interval_tokens = interval_steps = 0;
      interval_start = Clock::now();
    }

    const bool evaluate_now = !eval_examples.empty() && config.eval_steps > 0 &&
                              state.global_step % config.eval_steps == 0 && !at_end;
    if (evaluate_now) run_evaluation(state.global_step);
    const bool stop_here = config.stop_after_steps > 0 && state.global_step >= config.stop_after_steps && !at_end;
    // A stop saves once, after the loop.
    if (evaluate_now || (config.save_steps > 0 && state.global_step % config.save_steps == 0)) {
      if (!at_end && !stop_here) save("checkpoint-last", true);
    }
    if (stop_here) {
      stopped = true;
      break;
    }
  }

  if (state.global_step >= total_steps) {
    if (!eval_examples.empty()) run_evaluation(state.global_step);
    result.completed = true;
  }
  save("checkpoint-last", true);
  message(str_cat(stopped ? "stopped" : "finished", " at step ", state.global_step, "; saved ",
                  (output_dir / "checkpoint-last").string()));
  if (tensorboard) tensorboard->flush();

  result.global_step = state.global_step;
  result.final_eval = result.completed ? last_eval : std::nullopt;
  result.last_checkpoint = output_dir / "checkpoint-last";
  if (state.best_step >= 0) {
    result.best_checkpoint = output_dir / "checkpoint-best";
    result.best_metric = state.best_metric;
    result.best_step = state.best_step;
  }
  result.best_metric_name = best_metric_name;
  result.last_store_version = last_store_version;
  result.best_store_version = best_store_version;
  result.resumed_from_store_version = resumed_store_version;
  return result;
}

// ---------------------------------------------------------------------------------------------

Trainer::Trainer(TrainConfig config, TrainerCallbacks callbacks)
    : config_(std::move(config)), callbacks_(std::move(callbacks)) {
  config_.validate();
  impl_ = std::make_unique<Impl>(config_, callbacks_);
}

Trainer::~Trainer() = default;

TrainResult Trainer::run() { return impl_->run(); }

EvalResult Trainer::evaluate_model(const TrainConfig& config, TrainerCallbacks callbacks) {
  // The same checks as training, except for the two keys evaluation does not use.
  TrainConfig checked = config;
  if (checked.train_file.empty()) checked.train_file = config.eval_file;
  if (checked.output_dir.empty()) checked.output_dir = ".";
  checked.validate();
  Impl impl(config, callbacks);
  return impl.evaluate_only();
}

void Trainer::request_stop() { impl_->stop.store(true); }

}  // namespace scalebert::train
