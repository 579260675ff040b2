// A multilayer perceptron classification head trained on cached frozen-encoder features
// (train/features.h): Linear -> activation -> dropout for each hidden layer, then Linear to the
// classes, mean cross-entropy, AdamW (train/optimizer.h) over the head's own flat parameter arena.
//
// Layer l maps (M, in_l) -> (M, out_l); parameters "layers.<l>.weight" (out_l, in_l) and
// "layers.<l>.bias" (out_l), PyTorch's Linear layout, so the saved head loads as a torch
// nn.Sequential of Linear layers. Products run through oneDNN (kernels/cpu/matmul.h and
// linear_backward.h), bound once per row count to buffers planned for the batch capacity; a step
// allocates nothing. Gradients are ADDED into the head's gradient arena (zero it before a step);
// activation gradients are overwritten.
//
// Forward, per hidden layer l (dropout p, mask from (seed, offset_l) as kernels/cpu/dropout.h):
//   z_l = a_{l-1} W_l^T + b_l      a_l = dropout(act(z_l))          (a_{-1} = the features x)
// last layer: logits = a_{n-2} W^T + b; loss = mean_r CE(logits_r, y_r).
// Backward: dlogits = (softmax - onehot) / rows; for each layer from the last:
//   da_{l-1} = dz_l W_l, dW_l += dz_l^T a_{l-1}, db_l += sum_r dz_l;
//   dz_{l-1} = act'(z_{l-1}) * mask_{l-1} * da_{l-1}.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/arena.h"
#include "kernels/cpu/linear_backward.h"
#include "kernels/cpu/loss.h"
#include "kernels/cpu/matmul.h"
#include "model/parameters.h"
#include "train/features.h"
#include "train/metrics.h"
#include "train/schedule.h"

namespace scalebert::train {

enum class HeadActivation { kRelu, kGelu };
// "relu" or "gelu" (exact erf form); InvalidArgument naming the value otherwise.
HeadActivation parse_head_activation(std::string_view name);
std::string_view head_activation_name(HeadActivation activation);

struct MlpHeadConfig {
  int64_t input_size = 0;
  std::vector<int64_t> hidden;  // hidden widths, e.g. {256, 128}; empty: a linear probe
  int64_t num_classes = 0;
  HeadActivation activation = HeadActivation::kRelu;
  float dropout = 0.1f;  // after every hidden activation, training only

  nlohmann::json to_json() const;
  // InvalidArgument naming the field for a missing or malformed one.
  static MlpHeadConfig from_json(const nlohmann::json& json);
};

// "256,128" -> {256, 128}; "" -> {} (linear probe). InvalidArgument naming the item otherwise.
std::vector<int64_t> parse_hidden_sizes(std::string_view text);

class MlpHead {
 public:
  // Parameters drawn as torch.nn.Linear's default init: W and b ~ U(-1/sqrt(in), 1/sqrt(in)),
  // from a generator seeded with `seed`. InvalidArgument for a non-positive size, fewer than 2
  // classes or dropout outside [0, 1).
  MlpHead(const MlpHeadConfig& config, uint64_t seed);
  ~MlpHead();
  MlpHead(const MlpHead&) = delete;
  MlpHead& operator=(const MlpHead&) = delete;

  const MlpHeadConfig& config() const { return config_; }
  int64_t layer_count() const { return static_cast<int64_t>(widths_.size()) - 1; }
  const ParameterTable& parameters() const { return table_; }
  ParameterTable& parameters() { return table_; }
  // (total_elements) F32, the table's layout; forward_backward adds into it.
  Tensor& gradients() { return gradients_; }

  // Forward, loss and backward of `rows` examples: x (rows, input_size), labels (rows) in
  // [0, num_classes). Dropout masks come from `seed` (training) when `train`; gradients are
  // ADDED. InvalidArgument for rows < 1 or a label out of range (naming the row).
  kernels::LossResult forward_backward(const float* x, const int32_t* labels, int64_t rows, uint64_t seed);
  // Logits (rows, num_classes) of x (rows, input_size), dropout off; valid until the next call.
  const float* forward(const float* x, int64_t rows);

  // Writes <directory>/head.safetensors (the parameters; metadata "config" = to_json()) and
  // <directory>/head.json ({"config", plus every key of `extra`}), both atomically.
  void save(const std::filesystem::path& directory, const nlohmann::json& extra) const;
  // Reads a head saved by save(); FormatError naming the file and tensor for a missing or
  // wrongly shaped parameter.
  static std::unique_ptr<MlpHead> load(const std::filesystem::path& directory);

 private:
  struct Steps;  // the products of one row count
  Steps& steps(int64_t rows);
  void reserve(int64_t rows);
  void run_forward(Steps& steps, const float* x, int64_t rows, bool train, uint64_t seed);

  MlpHeadConfig config_;
  std::vector<int64_t> widths_;  // (layers + 1): input_size, hidden..., num_classes
  ParameterTable table_;
  Tensor gradients_;
  std::vector<std::unique_ptr<kernels::PackedLinear>> linear_;  // plain views of the weights in table_
  dnnl::stream stream_;

  int64_t capacity_ = 0;  // rows the buffers hold
  Arena arena_;
  float* input_ = nullptr;                // (M, input_size)
  std::vector<float*> pre_activation_;    // per layer (M, out_l): z_l; the last is the logits
  std::vector<float*> activation_;        // per hidden layer (M, out_l): a_l
  std::vector<float*> gradient_;          // per layer (M, out_l): dz_l (and da_l before act')
  float* row_losses_ = nullptr;           // (M)
  std::map<int64_t, std::unique_ptr<Steps>> steps_;
  std::shared_ptr<void> scratchpad_;
  size_t scratchpad_bytes_ = 0;
};

struct HeadTrainingOptions {
  int64_t epochs = 20;
  int64_t batch_size = 64;
  double learning_rate = 1e-3;
  double weight_decay = 0.01;  // AdamW, weights only (not biases)
  ScheduleKind schedule = ScheduleKind::kLinear;
  double warmup_ratio = 0.0;   // fraction of all steps spent warming up
  uint64_t seed = 0;           // data order and dropout
};

struct EpochReport {
  int64_t epoch = 0;          // 1-based
  double train_loss = 0.0;    // mean over the epoch's batches, dropout on
  double seconds = 0.0;       // training time of the epoch (evaluation excluded)
  bool evaluated = false;
  double eval_loss = 0.0;
  ClassificationReport eval;  // accuracy, macro-F1, per class, confusion
};

// Trains `head` on `train` (labelled, hidden size = input_size) for options.epochs epochs of
// shuffled batches, evaluating on `eval` after every epoch when given. InvalidArgument for an
// unlabelled cache, a width mismatch or label counts that differ from num_classes.
std::vector<EpochReport> train_head(MlpHead& head, const FeatureCache& train, const FeatureCache* eval,
                                    const HeadTrainingOptions& options,
                                    const std::function<void(const EpochReport&)>& on_epoch = {});

// Predictions (argmax) for every row of `cache`, in batches of `batch_size`; the mean loss too
// when the cache is labelled and `loss` is given.
std::vector<int32_t> predict_head(MlpHead& head, const FeatureCache& cache, int64_t batch_size,
                                  double* loss = nullptr);

}  // namespace scalebert::train
