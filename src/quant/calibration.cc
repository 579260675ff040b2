// Calibration ranges and error reports over sample texts.
#include "quant/calibration.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "core/arena.h"
#include "core/error.h"
#include "model/inference_session.h"
#include "pipeline/input_file.h"

namespace scalebert::quant {

namespace {

constexpr int64_t kBatchSequences = 16;

// Runs `samples` in batches through `session`, calling consume(outputs, batch) after each.
template <typename Consume>
void run_samples(InferenceSession& session, const std::vector<std::vector<int32_t>>& samples, Consume&& consume) {
  for (size_t begin = 0; begin < samples.size(); begin += kBatchSequences) {
    PackedBatch batch;
    for (size_t index = begin; index < std::min(samples.size(), begin + kBatchSequences); ++index) {
      batch.add_sequence(samples[index]);
    }
    consume(session.run(batch), batch);
  }
}

// The packed Linear a PrecisionPlan key names in `weights`, or nullptr.
const kernels::PrecisionLinear* find_linear(const InferenceWeights& weights, const std::string& key) {
  const std::string prefix = "encoder.layer.";
  if (key.rfind(prefix, 0) == 0) {
    const size_t dot = key.find('.', prefix.size());
    const size_t layer = std::stoul(key.substr(prefix.size(), dot - prefix.size()));
    const std::string part = key.substr(dot + 1);
    if (layer >= weights.layers.size()) return nullptr;
    const EncoderLayerWeights& entry = weights.layers[layer];
    if (part == "attention.self") return &entry.qkv;
    if (part == "attention.output.dense") return &entry.attention_out;
    if (part == "intermediate.dense") return &entry.intermediate;
    if (part == "output.dense") return &entry.output;
    return nullptr;
  }
  if (key == "pooler.dense") return weights.pooler.get();
  if (key == "classifier" || key == "qa_outputs") return weights.classifier.get();
  if (key == "cls.predictions.transform.dense") return weights.mlm_transform.get();
  return nullptr;
}

// y = x W^T + b for `rows` rows of x through one step of `linear`.
std::vector<float> apply(const kernels::PrecisionLinear& linear, const std::vector<float>& x, int64_t rows) {
  const int64_t K = linear.in_features(), N = linear.out_features();
  std::vector<float> y(static_cast<size_t>(rows * N));
  Tensor activations = Tensor::empty({rows * K * 2}, DType::kI8);
  Tensor row_scales = Tensor::empty({rows}, DType::kF32);
  Tensor accumulators = Tensor::empty({rows * N}, DType::kI32);
  kernels::LowPrecisionBuffers buffers{activations.raw(), row_scales.data<float>(), accumulators.data<int32_t>()};
  kernels::PrecisionLinearStep step(linear, x.data(), K, y.data(), N, rows, kernels::Epilogue::kNone, false, buffers);
  auto scratchpad = allocate_aligned(std::max<size_t>(step.scratchpad_bytes(), 64));
  step.bind_scratchpad(scratchpad.get());
  dnnl::stream stream(kernels::cpu_engine());
  step.run(stream);
  stream.wait();
  return y;
}

}  // namespace

std::vector<std::string> read_sample_texts(const std::filesystem::path& file, int64_t limit,
                                           const std::string& text_column) {
  check<IoError>(std::filesystem::is_regular_file(file), "sample file ", file.string(), " does not exist");
  pipeline::InputOptions options;
  options.text_column = text_column;
  const pipeline::InputSet inputs = pipeline::read_inputs(file, options);
  std::vector<std::string> texts;
  for (const pipeline::InputRecord& record : inputs.records) {
    if (static_cast<int64_t>(texts.size()) >= limit) break;
    texts.push_back(record.text);
  }
  check(!texts.empty(), "sample file ", file.string(), " holds no text");
  return texts;
}

std::vector<std::vector<int32_t>> encode_samples(const text::BertTokenizer& tokenizer,
                                                 const std::vector<std::string>& texts, int64_t max_length) {
  std::vector<std::vector<int32_t>> samples;
  for (const std::string& text : texts) {
    samples.push_back(tokenizer.encode(text, {static_cast<size_t>(max_length)}).ids);
  }
  return samples;
}

std::map<std::string, float> calibrate_input_ranges(std::shared_ptr<const BertModel> model,
                                                    const std::vector<std::vector<int32_t>>& samples) {
  check(!samples.empty(), "calibration needs at least one sample");
  InferenceSession session(InferenceWeights::build(std::move(model), PrecisionPlan{}));
  std::map<std::string, float> ranges;
  session.set_linear_observer([&](const std::string& linear, const float* x, int64_t rows, int64_t width) {
    float& range = ranges[linear];
    for (int64_t i = 0; i < rows * width; ++i) range = std::max(range, std::fabs(x[i]));
  });
  run_samples(session, samples, [](const InferenceOutputs&, const PackedBatch&) {});
  return ranges;
}

QuantizationReport quantization_report(std::shared_ptr<const BertModel> model, const PrecisionPlan& plan,
                                       const std::vector<std::vector<int32_t>>& samples) {
  check(!samples.empty(), "a quantization report needs at least one sample");
  auto reference_weights = InferenceWeights::build(model, PrecisionPlan{});
  auto quantized_weights = InferenceWeights::build(model, plan);
  InferenceSession reference(reference_weights), quantized(quantized_weights);

  // Every Linear's f32 input on the first batch.
  struct Captured {
    std::string layer;
    std::vector<float> x;
    int64_t rows;
  };
  std::vector<Captured> inputs;
  reference.set_linear_observer([&](const std::string& linear, const float* x, int64_t rows, int64_t width) {
    inputs.push_back(Captured{linear, std::vector<float>(x, x + rows * width), rows});
  });
  PackedBatch first;
  for (size_t index = 0; index < std::min<size_t>(samples.size(), kBatchSequences); ++index) {
    first.add_sequence(samples[index]);
  }
  reference.run(first);
  reference.set_linear_observer(nullptr);

  QuantizationReport report;
  for (const Captured& input : inputs) {
    const kernels::PrecisionLinear* exact = find_linear(*reference_weights, input.layer);
    const kernels::PrecisionLinear* low = find_linear(*quantized_weights, input.layer);
    check(exact != nullptr && low != nullptr, "no packed Linear for layer ", input.layer);
    const std::vector<float> y_exact = apply(*exact, input.x, input.rows);
    const std::vector<float> y_low = apply(*low, input.x, input.rows);
    double diff = 0.0, norm = 0.0;
    for (size_t i = 0; i < y_exact.size(); ++i) {
      diff += (static_cast<double>(y_low[i]) - y_exact[i]) * (static_cast<double>(y_low[i]) - y_exact[i]);
      norm += static_cast<double>(y_exact[i]) * y_exact[i];
    }
    report.layers.push_back(LayerError{input.layer, std::string(kernels::precision_name(low->precision())),
                                       norm > 0.0 ? std::sqrt(diff / norm) : std::sqrt(diff)});
  }

  // End to end: one output row per logits row, or per sequence (mean-pooled hidden state).
  auto output_rows = [](const InferenceOutputs& outputs, const PackedBatch& batch) {
    std::vector<std::vector<float>> rows;
    if (outputs.logits.defined()) {
      const int64_t width = outputs.logits.dim(1);
      for (int64_t row = 0; row < outputs.logits.dim(0); ++row) {
        const float* values = outputs.logits.data<float>() + row * width;
        rows.emplace_back(values, values + width);
      }
      return rows;
    }
    const int64_t C = outputs.hidden.dim(1);
    for (int64_t sequence = 0; sequence < batch.sequences(); ++sequence) {
      std::vector<float> mean(C, 0.0f);
      for (int64_t token = batch.sequence_offsets[sequence]; token < batch.sequence_offsets[sequence + 1]; ++token) {
        for (int64_t c = 0; c < C; ++c) mean[c] += outputs.hidden.data<float>()[token * C + c];
      }
      for (float& value : mean) value /= static_cast<float>(batch.length(sequence));
      rows.push_back(std::move(mean));
    }
    return rows;
  };
  double diff = 0.0, norm = 0.0, cosine_sum = 0.0;
  double min_cosine = 1.0;
  int64_t count = 0, agree = 0;
  std::vector<std::vector<float>> expected;
  run_samples(reference, samples, [&](const InferenceOutputs& outputs, const PackedBatch& batch) {
    report.output = outputs.logits.defined() ? "logits" : "mean-pooled hidden";
    for (auto& row : output_rows(outputs, batch)) expected.push_back(std::move(row));
  });
  run_samples(quantized, samples, [&](const InferenceOutputs& outputs, const PackedBatch& batch) {
    for (const auto& row : output_rows(outputs, batch)) {
      const std::vector<float>& want = expected.at(count);
      double dot = 0.0, got_norm = 0.0, want_norm = 0.0;
      for (size_t i = 0; i < row.size(); ++i) {
        diff += (static_cast<double>(row[i]) - want[i]) * (static_cast<double>(row[i]) - want[i]);
        norm += static_cast<double>(want[i]) * want[i];
        dot += static_cast<double>(row[i]) * want[i];
        got_norm += static_cast<double>(row[i]) * row[i];
        want_norm += static_cast<double>(want[i]) * want[i];
      }
      const double cosine = got_norm > 0 && want_norm > 0 ? dot / std::sqrt(got_norm * want_norm) : 1.0;
      cosine_sum += cosine;
      min_cosine = std::min(min_cosine, cosine);
      agree += std::max_element(row.begin(), row.end()) - row.begin() ==
               std::max_element(want.begin(), want.end()) - want.begin();
      ++count;
    }
  });
  report.output_relative_error = norm > 0.0 ? std::sqrt(diff / norm) : std::sqrt(diff);
  report.output_mean_cosine = cosine_sum / static_cast<double>(count);
  report.output_min_cosine = min_cosine;
  report.argmax_agreement = report.output == "logits" ? static_cast<double>(agree) / static_cast<double>(count) : 1.0;
  return report;
}

std::string format_report(const QuantizationReport& report) {
  std::string text = "per-layer relative error (same f32 input; ||y_q - y_f32|| / ||y_f32||):\n";
  char line[256];
  for (const LayerError& layer : report.layers) {
    std::snprintf(line, sizeof line, "  %-45s %-5s %.3e\n", layer.layer.c_str(), layer.precision.c_str(),
                  layer.relative_error);
    text += line;
  }
  std::snprintf(line, sizeof line,
                "end to end (%s): relative error %.3e, cosine mean %.6f min %.6f", report.output.c_str(),
                report.output_relative_error, report.output_mean_cosine, report.output_min_cosine);
  text += line;
  if (report.output == "logits") {
    std::snprintf(line, sizeof line, ", argmax agreement %.4f", report.argmax_agreement);
    text += line;
  }
  return text + "\n";
}

}  // namespace scalebert::quant
