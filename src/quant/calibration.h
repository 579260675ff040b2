// Sample texts through the f32 model: the input range of every Linear (static int8 calibration) and
// per-layer and end-to-end errors of a precision plan against f32 (`scalebert quantize --report`).
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/bert_model.h"
#include "model/inference_weights.h"
#include "text/bert_tokenizer.h"

namespace scalebert::quant {

// Texts of a sample file (text lines, or a CSV's `text_column`), at most `limit`. IoError naming the
// file when it is missing; InvalidArgument when it holds no text.
std::vector<std::string> read_sample_texts(const std::filesystem::path& file, int64_t limit,
                                           const std::string& text_column = "text");

// Token ids of each text ([CLS] text [SEP], truncated to max_length).
std::vector<std::vector<int32_t>> encode_samples(const text::BertTokenizer& tokenizer,
                                                 const std::vector<std::string>& texts, int64_t max_length);

// max |x| over every sample row of the input of each Linear, by PrecisionPlan key, from f32 runs.
std::map<std::string, float> calibrate_input_ranges(std::shared_ptr<const BertModel> model,
                                                    const std::vector<std::vector<int32_t>>& samples);

struct LayerError {
  std::string layer;      // PrecisionPlan key
  std::string precision;  // "int8", "bf16", "f32"
  double relative_error;  // ||y_q - y_f32|| / ||y_f32|| over the sample rows, same f32 input
};

struct QuantizationReport {
  std::vector<LayerError> layers;  // forward order
  // End to end, quantized model vs f32 over every sample: the model's final output (logits of a
  // head, else the mean-pooled last hidden state) as relative L2 error and mean cosine similarity.
  std::string output;  // "logits" or "mean-pooled hidden"
  double output_relative_error = 0.0;
  double output_mean_cosine = 0.0;
  double output_min_cosine = 0.0;
  double argmax_agreement = 1.0;  // logits only: fraction of rows with the same argmax
};

// Runs the samples through `model` in f32 and with `plan`. Each layer's error is measured on that
// layer's f32 input (so it is the layer's own error, not the accumulated one).
QuantizationReport quantization_report(std::shared_ptr<const BertModel> model, const PrecisionPlan& plan,
                                       const std::vector<std::vector<int32_t>>& samples);

std::string format_report(const QuantizationReport& report);

}  // namespace scalebert::quant
