// Frozen-encoder features: every text of a dataset run once through the inference plan (no
// activations kept, no gradients), pooled to one vector per text, and cached on disk so that a
// small head can train on them many times over in seconds (train/mlp_head.h).
//
// Cache file: safetensors (so any tool reads it) with
//   features  (S, C) F32    one pooled vector per input row, in input order
//   labels    (S) I32       class ids into label_names; absent for unlabelled input
// and string metadata: format "scalebert.features", version "1", model (the model folder), pooling
// ("cls", "mean" or "pooler"), count (S), hidden (C), max_length, source (the input file),
// labels (a JSON list of the class names, id order; "[]" when unlabelled).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"
#include "pipeline/text_pipeline.h"
#include "train/data/classification.h"

namespace scalebert::train {

enum class FeaturePooling {
  kCls,     // hidden state of [CLS]
  kMean,    // mean of every token's hidden state (sentence-transformers' mean pooling)
  kPooler,  // BERT's pooler output tanh(W h_[CLS] + b) (needs a model with a pooler)
};
// "cls", "mean", "pooler"; InvalidArgument naming the value otherwise.
FeaturePooling parse_feature_pooling(std::string_view name);
std::string_view feature_pooling_name(FeaturePooling pooling);

inline constexpr const char* kFeatureCacheFormat = "scalebert.features";
inline constexpr const char* kFeatureCacheVersion = "1";

struct FeatureCache {
  Tensor features;                       // (S, C) F32
  std::vector<int32_t> labels;           // (S) ids into label_names; empty when unlabelled
  std::vector<std::string> label_names;  // id -> name
  std::string model;
  std::string pooling;
  std::string source;
  int64_t max_length = 0;

  int64_t count() const { return features.defined() ? features.dim(0) : 0; }
  int64_t hidden() const { return features.defined() ? features.dim(1) : 0; }
  bool labelled() const { return !labels.empty(); }
};

// The rows of an input file: texts (and pair texts) with labels when the file has them.
struct FeatureInput {
  std::vector<std::string> texts;
  std::vector<std::string> pairs;        // empty, or one per text
  std::vector<int32_t> labels;           // empty, or one per text
  std::vector<std::string> label_names;  // id -> name
  std::string source;
};

// Reads .txt (one text per non-empty line, unlabelled) or a table (.csv, .tsv, .jsonl) through
// data::read_classification with `columns` (labels built with data::LabelMap::build, so integer
// labels keep their values). `labelled` false reads a table's text column(s) only. Throws
// IoError/FormatError naming the file and line.
FeatureInput read_feature_input(const std::filesystem::path& path, const data::ClassificationColumns& columns,
                                bool labelled);

// (S, C) F32 features of texts[i] (paired with pairs[i] when pairs is non-empty), computed with
// the pipeline's inference session in length-ordered batches and written back in input order.
// InvalidArgument for no texts, a pair count that differs, or kPooler on a model without pooler.
Tensor compute_features(pipeline::TextPipeline& pipeline, const std::vector<std::string>& texts,
                        const std::vector<std::string>& pairs, FeaturePooling pooling);

// Writes the cache atomically. InvalidArgument for features that are not (S, C) F32 or labels whose
// count differs from S or whose ids fall outside label_names.
void save_feature_cache(const std::filesystem::path& path, const FeatureCache& cache);
// Reads and validates a cache (format, version, shapes, count, label ids); FormatError naming the
// file and the offending field.
FeatureCache load_feature_cache(const std::filesystem::path& path);

// Re-expresses `cache`'s labels in the ids of `names` (by name), so an evaluation cache built from
// a file missing a class lines up with the training cache. FormatError naming the label and both
// lists when a name is unknown to `names`.
void align_labels(FeatureCache& cache, const std::vector<std::string>& names);

}  // namespace scalebert::train
