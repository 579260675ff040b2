// MLP classification head on cached features: planned buffers, oneDNN products per row count,
// training loop (AdamW, schedule, shuffled batches), evaluation and the saved head files.
#include "train/mlp_head.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>

#include "core/error.h"
#include "io/file_util.h"
#include "io/safetensors.h"
#include "kernels/cpu/activations.h"
#include "kernels/cpu/activations_backward.h"
#include "kernels/cpu/dropout.h"
#include "train/grad_utils.h"
#include "train/optimizer.h"

namespace scalebert::train {

HeadActivation parse_head_activation(std::string_view name) {
  if (name == "relu") return HeadActivation::kRelu;
  if (name == "gelu") return HeadActivation::kGelu;
  throw InvalidArgument(str_cat("activation \"", name, "\": expected relu or gelu"));
}

std::string_view head_activation_name(HeadActivation activation) {
  return activation == HeadActivation::kRelu ? "relu" : "gelu";
}

namespace {

kernels::Activation kernel_activation(HeadActivation activation) {
  return activation == HeadActivation::kRelu ? kernels::Activation::kRelu : kernels::Activation::kGeluErf;
}

std::string weight_name(int64_t layer) { return str_cat("layers.", layer, ".weight"); }
std::string bias_name(int64_t layer) { return str_cat("layers.", layer, ".bias"); }

size_t floats(int64_t count) { return static_cast<size_t>(count) * sizeof(float); }

}  // namespace

nlohmann::json MlpHeadConfig::to_json() const {
  return {{"input_size", input_size},
          {"hidden", hidden},
          {"num_classes", num_classes},
          {"activation", std::string(head_activation_name(activation))},
          // The float's shortest decimal (0.1, not 0.10000000149...).
          {"dropout", std::round(static_cast<double>(dropout) * 1e6) / 1e6}};
}

MlpHeadConfig MlpHeadConfig::from_json(const nlohmann::json& json) {
  MlpHeadConfig config;
  try {
    config.input_size = json.at("input_size").get<int64_t>();
    config.hidden = json.at("hidden").get<std::vector<int64_t>>();
    config.num_classes = json.at("num_classes").get<int64_t>();
    config.activation = parse_head_activation(json.at("activation").get<std::string>());
    config.dropout = json.at("dropout").get<float>();
  } catch (const nlohmann::json::exception& error) {
    throw InvalidArgument(str_cat("MLP head config ", json.dump(), ": ", error.what()));
  }
  return config;
}

std::vector<int64_t> parse_hidden_sizes(std::string_view text) {
  std::vector<int64_t> sizes;
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.find(',', begin);
    if (end == std::string_view::npos) end = text.size();
    const std::string item(text.substr(begin, end - begin));
    int64_t value = 0;
    size_t used = 0;
    try {
      value = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    check(used == item.size() && !item.empty() && value > 0, "hidden sizes \"", text, "\": \"", item,
          "\" is not a positive integer");
    sizes.push_back(value);
    begin = end + 1;
  }
  return sizes;
}

// The products of one row count M, bound to the first M rows of the planned buffers.
struct MlpHead::Steps {
  std::vector<kernels::LinearStep> forward;            // per layer: z_l = a_{l-1} W^T + b
  std::vector<kernels::LinearBackwardStep> backward;   // per layer: dx, dW, db
};

MlpHead::MlpHead(const MlpHeadConfig& config, uint64_t seed) : config_(config), stream_(kernels::cpu_engine()) {
  check(config.input_size > 0, "MLP head: input size ", config.input_size, " must be positive");
  check(config.num_classes >= 2, "MLP head: ", config.num_classes, " classes; need at least 2");
  check(config.dropout >= 0.0f && config.dropout < 1.0f, "MLP head: dropout ", config.dropout, " outside [0, 1)");
  widths_.push_back(config.input_size);
  for (int64_t width : config.hidden) {
    check(width > 0, "MLP head: hidden width ", width, " must be positive");
    widths_.push_back(width);
  }
  widths_.push_back(config.num_classes);
  for (int64_t l = 0; l < layer_count(); ++l) {
    table_.add(weight_name(l), {widths_[l + 1], widths_[l]}, true);
    table_.add(bias_name(l), {widths_[l + 1]}, false);
  }
  table_.allocate();
  gradients_ = table_.make_arena();
  // torch.nn.Linear.reset_parameters: kaiming_uniform_(a=sqrt(5)) gives U(-1/sqrt(in), 1/sqrt(in))
  // for the weight, and the bias uses the same bound.
  std::mt19937_64 generator(seed);
  for (int64_t l = 0; l < layer_count(); ++l) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(widths_[l]));
    for (const std::string& name : {weight_name(l), bias_name(l)}) {
      Tensor values = table_.get(name);
      for (int64_t i = 0; i < values.numel(); ++i) {
        const double unit = static_cast<double>(generator() >> 11) * 0x1.0p-53;  // [0, 1)
        values.data<float>()[i] = static_cast<float>((2.0 * unit - 1.0) * bound);
      }
    }
    // The optimizer updates the weights in place; the products read them there (no packed copy).
    linear_.push_back(std::make_unique<kernels::PackedLinear>(
        kernels::PackedLinear::plain_view(table_.get(weight_name(l)), table_.get(bias_name(l)))));
  }
}

MlpHead::~MlpHead() = default;

void MlpHead::reserve(int64_t rows) {
  if (rows <= capacity_) return;
  // Buffers move, so every step bound to the old ones goes.
  steps_.clear();
  capacity_ = rows;
  size_t bytes = floats(rows * widths_[0]) + 64 + floats(rows) + 64;
  for (int64_t l = 0; l < layer_count(); ++l) bytes += 3 * (floats(rows * widths_[l + 1]) + 64);
  arena_ = Arena(bytes);
  auto take = [&](int64_t count) { return static_cast<float*>(arena_.allocate(floats(count))); };
  input_ = take(rows * widths_[0]);
  row_losses_ = take(rows);
  pre_activation_.assign(static_cast<size_t>(layer_count()), nullptr);
  activation_.assign(static_cast<size_t>(layer_count()), nullptr);
  gradient_.assign(static_cast<size_t>(layer_count()), nullptr);
  for (int64_t l = 0; l < layer_count(); ++l) {
    pre_activation_[l] = take(rows * widths_[l + 1]);
    activation_[l] = take(rows * widths_[l + 1]);  // unused for the last layer (the logits stay in z)
    gradient_[l] = take(rows * widths_[l + 1]);
  }
}

MlpHead::Steps& MlpHead::steps(int64_t rows) {
  auto found = steps_.find(rows);
  if (found != steps_.end()) return *found->second;
  auto steps = std::make_unique<Steps>();
  size_t scratch = 0;
  for (int64_t l = 0; l < layer_count(); ++l) {
    const int64_t in = widths_[l], out = widths_[l + 1];
    const float* x = l == 0 ? input_ : activation_[l - 1];
    steps->forward.emplace_back(*linear_[l], x, in, pre_activation_[l], out, rows, kernels::Epilogue::kNone, false);
    float* dx = l == 0 ? nullptr : gradient_[l - 1];
    steps->backward.emplace_back(x, in, table_.get(weight_name(l)).data<float>(), gradient_[l], out, dx, in,
                                 table_.view(gradients_, weight_name(l)).data<float>(),
                                 table_.view(gradients_, bias_name(l)).data<float>(), rows, in, out, false);
    scratch = std::max({scratch, steps->forward.back().scratchpad_bytes(), steps->backward.back().scratchpad_bytes()});
  }
  if (scratch > scratchpad_bytes_) {
    scratchpad_bytes_ = scratch;
    scratchpad_ = allocate_aligned(scratchpad_bytes_);
    for (auto& [other_rows, other] : steps_) {
      for (auto& step : other->forward) step.bind_scratchpad(scratchpad_.get());
      for (auto& step : other->backward) step.bind_scratchpad(scratchpad_.get());
    }
  }
  for (auto& step : steps->forward) step.bind_scratchpad(scratchpad_.get());
  for (auto& step : steps->backward) step.bind_scratchpad(scratchpad_.get());
  return *steps_.emplace(rows, std::move(steps)).first->second;
}

void MlpHead::run_forward(Steps& steps, const float* x, int64_t rows, bool train, uint64_t seed) {
  std::memcpy(input_, x, floats(rows * widths_[0]));
  const kernels::Activation activation = kernel_activation(config_.activation);
  uint64_t offset = 0;  // dropout counter range: each hidden layer its own elements
  for (int64_t l = 0; l < layer_count(); ++l) {
    steps.forward[l].run(stream_);  // z_l = a_{l-1} W_l^T + b_l
    if (l + 1 == layer_count()) break;
    const int64_t n = rows * widths_[l + 1];
    std::memcpy(activation_[l], pre_activation_[l], floats(n));
    kernels::activation_forward(activation, activation_[l], n);  // a_l = act(z_l)
    if (train && config_.dropout > 0.0f) {
      kernels::dropout_forward(activation_[l], activation_[l], n, config_.dropout, seed, offset);
    }
    offset += static_cast<uint64_t>(n);
  }
}

kernels::LossResult MlpHead::forward_backward(const float* x, const int32_t* labels, int64_t rows, uint64_t seed) {
  check(rows >= 1, "MLP head: a batch needs at least one row, got ", rows);
  for (int64_t r = 0; r < rows; ++r) {
    check(labels[r] >= 0 && labels[r] < config_.num_classes, "MLP head: label ", labels[r], " of row ", r,
          " is outside [0, ", config_.num_classes, ")");
  }
  reserve(rows);
  Steps& plan = steps(rows);
  run_forward(plan, x, rows, true, seed);
  const int64_t last = layer_count() - 1;
  // dlogits = (softmax - onehot) / rows, OVERWRITTEN into gradient_[last].
  const kernels::LossResult loss = kernels::cross_entropy_forward_backward(
      gradient_[last], row_losses_, pre_activation_[last], labels, rows, config_.num_classes, 1.0f);
  const kernels::Activation activation = kernel_activation(config_.activation);
  std::vector<uint64_t> offsets(static_cast<size_t>(layer_count()), 0);
  for (int64_t l = 1; l < layer_count(); ++l) offsets[l] = offsets[l - 1] + static_cast<uint64_t>(rows * widths_[l]);
  for (int64_t l = last; l >= 0; --l) {
    plan.backward[l].run(stream_);  // da_{l-1} = dz_l W_l; dW_l += dz_l^T a_{l-1}; db_l += sum dz_l
    if (l == 0) break;
    const int64_t n = rows * widths_[l];
    float* d = gradient_[l - 1];
    if (config_.dropout > 0.0f) kernels::dropout_backward(d, d, n, config_.dropout, seed, offsets[l - 1]);
    kernels::activation_backward(activation, d, pre_activation_[l - 1], d, n);  // dz = act'(z) * da
  }
  return loss;
}

const float* MlpHead::forward(const float* x, int64_t rows) {
  check(rows >= 1, "MLP head: a batch needs at least one row, got ", rows);
  reserve(rows);
  run_forward(steps(rows), x, rows, false, 0);
  return pre_activation_[layer_count() - 1];
}

void MlpHead::save(const std::filesystem::path& directory, const nlohmann::json& extra) const {
  std::filesystem::create_directories(directory);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const ParameterEntry& entry : table_.entries()) tensors.emplace_back(entry.name, table_.get(entry.name));
  save_safetensors(directory / "head.safetensors", tensors, {{"config", config_.to_json().dump()}});
  nlohmann::json description = extra;
  description["config"] = config_.to_json();
  description["weights"] = "head.safetensors";
  write_file_atomic(directory / "head.json", description.dump(2) + "\n");
}

std::unique_ptr<MlpHead> MlpHead::load(const std::filesystem::path& directory) {
  const std::filesystem::path path = directory / "head.safetensors";
  const SafetensorsFile file = SafetensorsFile::open(path);
  auto config_text = file.metadata().find("config");
  check<FormatError>(config_text != file.metadata().end(), path.string(), ": metadata \"config\" is missing");
  MlpHeadConfig config;
  try {
    config = MlpHeadConfig::from_json(nlohmann::json::parse(config_text->second));
  } catch (const std::exception& error) {
    throw FormatError(str_cat(path.string(), ": ", error.what()));
  }
  auto head = std::make_unique<MlpHead>(config, 0);
  for (const ParameterEntry& entry : head->table_.entries()) {
    check<FormatError>(file.has(entry.name), path.string(), ": tensor \"", entry.name, "\" is missing");
    const SafetensorsTensorInfo& info = file.info(entry.name);
    check<FormatError>(info.dtype_name == "F32" && info.shape == entry.shape, path.string(), ": tensor \"",
                       entry.name, "\" is ", info.dtype_name, " ", shape_string(info.shape), ", expected F32 ",
                       shape_string(entry.shape));
    const Tensor stored = file.tensor(entry.name);
    std::memcpy(head->table_.get(entry.name).data<float>(), stored.data<float>(), stored.nbytes());
  }
  return head;
}

namespace {

void check_cache_fits(const MlpHead& head, const FeatureCache& cache, const char* what) {
  check(cache.labelled(), what, " features (", cache.source, ") have no labels");
  check(cache.hidden() == head.config().input_size, what, " features (", cache.source, ") have width ",
        cache.hidden(), " but the head takes ", head.config().input_size);
  check(static_cast<int64_t>(cache.label_names.size()) == head.config().num_classes, what, " features (",
        cache.source, ") have ", cache.label_names.size(), " classes but the head has ", head.config().num_classes);
}

}  // namespace

std::vector<int32_t> predict_head(MlpHead& head, const FeatureCache& cache, int64_t batch_size, double* loss) {
  check(batch_size >= 1, "predict_head: batch size ", batch_size, " must be positive");
  const int64_t S = cache.count(), C = cache.hidden(), L = head.config().num_classes;
  check(C == head.config().input_size, "features (", cache.source, ") have width ", C, " but the head takes ",
        head.config().input_size);
  std::vector<int32_t> predictions(static_cast<size_t>(S));
  double total = 0.0;
  for (int64_t begin = 0; begin < S; begin += batch_size) {
    const int64_t rows = std::min(batch_size, S - begin);
    const float* logits = head.forward(cache.features.data<float>() + begin * C, rows);  // (rows, L)
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = logits + r * L;
      predictions[begin + r] = static_cast<int32_t>(std::max_element(row, row + L) - row);
      if (loss != nullptr && cache.labelled()) {
        const float top = *std::max_element(row, row + L);
        double sum = 0.0;
        for (int64_t j = 0; j < L; ++j) sum += std::exp(static_cast<double>(row[j] - top));
        total += std::log(sum) + top - row[cache.labels[begin + r]];
      }
    }
  }
  if (loss != nullptr) *loss = S > 0 ? total / static_cast<double>(S) : 0.0;
  return predictions;
}

std::vector<EpochReport> train_head(MlpHead& head, const FeatureCache& train, const FeatureCache* eval,
                                    const HeadTrainingOptions& options,
                                    const std::function<void(const EpochReport&)>& on_epoch) {
  check_cache_fits(head, train, "training");
  if (eval != nullptr) check_cache_fits(head, *eval, "evaluation");
  check(options.epochs >= 1 && options.batch_size >= 1, "train_head: epochs ", options.epochs, " and batch size ",
        options.batch_size, " must be positive");
  const int64_t S = train.count(), C = train.hidden();
  const int64_t steps_per_epoch = (S + options.batch_size - 1) / options.batch_size;
  const int64_t total_steps = steps_per_epoch * options.epochs;

  OptimizerOptions optimizer_options;
  optimizer_options.weight_decay = options.weight_decay;
  AdamW optimizer(head.parameters(), optimizer_options);
  ScheduleOptions schedule_options;
  schedule_options.kind = options.schedule;
  schedule_options.total_steps = total_steps;
  schedule_options.warmup_steps = static_cast<int64_t>(std::ceil(options.warmup_ratio * static_cast<double>(total_steps)));
  schedule_options.peak_learning_rate = options.learning_rate;
  const LearningRateSchedule schedule(schedule_options);

  std::vector<int64_t> order(static_cast<size_t>(S));
  for (int64_t i = 0; i < S; ++i) order[i] = i;
  std::mt19937_64 shuffler(options.seed ^ 0x5eedda7aULL);
  std::vector<float> batch_features(static_cast<size_t>(options.batch_size * C));  // (B, C)
  std::vector<int32_t> batch_labels(static_cast<size_t>(options.batch_size));      // (B)
  Tensor values = head.parameters().values();
  std::vector<EpochReport> reports;
  int64_t step = 0;
  for (int64_t epoch = 1; epoch <= options.epochs; ++epoch) {
    const auto start = std::chrono::steady_clock::now();
    // Fisher-Yates with the raw 64-bit generator (std::shuffle's distribution is implementation
    // defined; this order is the same on every platform).
    for (int64_t i = S - 1; i > 0; --i) std::swap(order[i], order[shuffler() % static_cast<uint64_t>(i + 1)]);
    double loss_sum = 0.0;
    for (int64_t begin = 0; begin < S; begin += options.batch_size, ++step) {
      const int64_t rows = std::min(options.batch_size, S - begin);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t index = order[begin + r];
        std::memcpy(batch_features.data() + r * C, train.features.data<float>() + index * C, floats(C));
        batch_labels[r] = train.labels[index];
      }
      zero_arena(head.gradients());
      loss_sum += head.forward_backward(batch_features.data(), batch_labels.data(), rows,
                                        options.seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(step)).loss;
      optimizer.step(values, head.gradients(), schedule.learning_rate(step));
    }
    EpochReport report;
    report.epoch = epoch;
    report.train_loss = loss_sum / static_cast<double>(steps_per_epoch);
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (eval != nullptr) {
      report.evaluated = true;
      const std::vector<int32_t> predictions = predict_head(head, *eval, 256, &report.eval_loss);
      report.eval = classification_report(eval->labels, predictions, static_cast<int32_t>(head.config().num_classes));
    }
    if (on_epoch) on_epoch(report);
    reports.push_back(std::move(report));
  }
  return reports;
}

}  // namespace scalebert::train
