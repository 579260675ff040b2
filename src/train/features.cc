// Frozen-encoder features: reading inputs, pooling the inference plan's outputs, the cache file.
#include "train/features.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/file_util.h"
#include "io/safetensors.h"
#include "train/data/label_map.h"

namespace scalebert::train {

FeaturePooling parse_feature_pooling(std::string_view name) {
  if (name == "cls") return FeaturePooling::kCls;
  if (name == "mean") return FeaturePooling::kMean;
  if (name == "pooler") return FeaturePooling::kPooler;
  throw InvalidArgument(str_cat("pooling \"", name, "\": expected cls, mean or pooler"));
}

std::string_view feature_pooling_name(FeaturePooling pooling) {
  switch (pooling) {
    case FeaturePooling::kCls: return "cls";
    case FeaturePooling::kMean: return "mean";
    case FeaturePooling::kPooler: return "pooler";
  }
  return "?";
}

FeatureInput read_feature_input(const std::filesystem::path& path, const data::ClassificationColumns& columns,
                                bool labelled) {
  FeatureInput input;
  input.source = path.string();
  if (path.extension() == ".txt") {
    const std::string text = read_file(path);
    size_t begin = 0;
    while (begin <= text.size()) {
      size_t end = text.find('\n', begin);
      if (end == std::string::npos) end = text.size();
      std::string line = text.substr(begin, end - begin);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!line.empty()) input.texts.push_back(std::move(line));
      begin = end + 1;
    }
    check<FormatError>(!input.texts.empty(), path.string(), ": no text lines");
    return input;
  }
  data::ClassificationColumns read_columns = columns;
  if (!labelled) {
    // read_classification needs a label column; an unlabelled table reuses the text column there.
    read_columns.label = columns.text;
  }
  data::ClassificationDataset dataset = data::read_classification(path, read_columns);
  for (data::ClassificationExample& example : dataset.examples) {
    input.texts.push_back(std::move(example.text));
    if (dataset.has_pair) input.pairs.push_back(std::move(example.pair));
  }
  if (labelled) {
    const data::LabelMap labels = data::LabelMap::build(dataset.labels());
    input.label_names = labels.names();
    for (const data::ClassificationExample& example : dataset.examples) {
      input.labels.push_back(labels.resolve(example.label, str_cat(path.string(), ":", example.line)));
    }
  }
  return input;
}

Tensor compute_features(pipeline::TextPipeline& pipeline, const std::vector<std::string>& texts,
                        const std::vector<std::string>& pairs, FeaturePooling pooling) {
  check(!texts.empty(), "compute_features: no texts");
  check(pairs.empty() || pairs.size() == texts.size(), "compute_features: ", pairs.size(), " pair texts for ",
        texts.size(), " texts");
  check(pooling != FeaturePooling::kPooler || pipeline.model().has_pooler, "pooling \"pooler\" needs a model with a ",
        "pooler, and ", pipeline.model().directory.string(), " has none (use cls or mean)");
  std::vector<text::Encoding> encodings;
  encodings.reserve(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    encodings.push_back(pairs.empty() ? pipeline.encode(texts[i]) : pipeline.encode_pair(texts[i], pairs[i]));
  }
  using Vector = pipeline::TextPipeline::SequenceVector;
  return pipeline.sequence_vectors(encodings, pooling == FeaturePooling::kCls    ? Vector::kCls
                                              : pooling == FeaturePooling::kMean ? Vector::kMean
                                                                                 : Vector::kPooler);
}

namespace {

void check_cache(const FeatureCache& cache, const std::string& where) {
  check(cache.features.defined() && cache.features.rank() == 2 && cache.features.dtype() == DType::kF32,
        where, ": features must be (S, C) F32");
  const int64_t S = cache.features.dim(0);
  check(cache.labels.empty() || static_cast<int64_t>(cache.labels.size()) == S, where, ": ", cache.labels.size(),
        " labels for ", S, " feature rows");
  const int64_t classes = static_cast<int64_t>(cache.label_names.size());
  for (size_t i = 0; i < cache.labels.size(); ++i) {
    check(cache.labels[i] >= 0 && cache.labels[i] < classes, where, ": label id ", cache.labels[i], " of row ", i,
          " is outside the ", classes, " label names");
  }
}

const std::string& metadata_field(const std::map<std::string, std::string>& metadata, const std::string& key,
                                  const std::filesystem::path& path) {
  auto found = metadata.find(key);
  check<FormatError>(found != metadata.end(), path.string(), ": not a feature cache (metadata \"", key,
                     "\" is missing)");
  return found->second;
}

int64_t metadata_int(const std::map<std::string, std::string>& metadata, const std::string& key,
                     const std::filesystem::path& path) {
  const std::string& text = metadata_field(metadata, key, path);
  try {
    size_t used = 0;
    const long long value = std::stoll(text, &used);
    if (used == text.size() && value >= 0) return value;
  } catch (const std::exception&) {
  }
  throw FormatError(str_cat(path.string(), ": metadata \"", key, "\" is \"", text, "\", not a count"));
}

}  // namespace

void save_feature_cache(const std::filesystem::path& path, const FeatureCache& cache) {
  check_cache(cache, path.string());
  std::vector<std::pair<std::string, Tensor>> tensors{{"features", cache.features}};
  Tensor labels;
  if (cache.labelled()) {
    labels = Tensor::empty({static_cast<int64_t>(cache.labels.size())}, DType::kI32);  // (S)
    std::copy(cache.labels.begin(), cache.labels.end(), labels.data<int32_t>());
    tensors.emplace_back("labels", labels);
  }
  const std::map<std::string, std::string> metadata{
      {"format", kFeatureCacheFormat},
      {"version", kFeatureCacheVersion},
      {"model", cache.model},
      {"pooling", cache.pooling},
      {"source", cache.source},
      {"count", std::to_string(cache.count())},
      {"hidden", std::to_string(cache.hidden())},
      {"max_length", std::to_string(cache.max_length)},
      {"labels", nlohmann::json(cache.label_names).dump()},
  };
  save_safetensors(path, tensors, metadata);
}

FeatureCache load_feature_cache(const std::filesystem::path& path) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  const auto& metadata = file.metadata();
  const std::string& format = metadata_field(metadata, "format", path);
  check<FormatError>(format == kFeatureCacheFormat, path.string(), ": metadata format is \"", format,
                     "\", expected \"", kFeatureCacheFormat, "\"");
  const std::string& version = metadata_field(metadata, "version", path);
  check<FormatError>(version == kFeatureCacheVersion, path.string(), ": feature cache version \"", version,
                     "\" is not supported (this build reads version ", kFeatureCacheVersion, ")");
  FeatureCache cache;
  cache.model = metadata_field(metadata, "model", path);
  cache.pooling = metadata_field(metadata, "pooling", path);
  cache.source = metadata_field(metadata, "source", path);
  cache.max_length = metadata_int(metadata, "max_length", path);
  const int64_t count = metadata_int(metadata, "count", path);
  const int64_t hidden = metadata_int(metadata, "hidden", path);
  nlohmann::json names;
  try {
    names = nlohmann::json::parse(metadata_field(metadata, "labels", path));
    cache.label_names = names.get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& error) {
    throw FormatError(str_cat(path.string(), ": metadata \"labels\" is not a JSON list of strings: ", error.what()));
  }

  check<FormatError>(file.has("features"), path.string(), ": tensor \"features\" is missing");
  const SafetensorsTensorInfo& info = file.info("features");
  check<FormatError>(info.dtype_name == "F32" && info.shape == Shape{count, hidden}, path.string(),
                     ": tensor \"features\" is ", info.dtype_name, " ", shape_string(info.shape),
                     ", metadata says F32 [", count, ", ", hidden, "]");
  // Copy out of the mapping: the cache outlives the file and wants aligned rows.
  cache.features = Tensor::empty({count, hidden}, DType::kF32);
  const Tensor stored = file.tensor("features");
  std::memcpy(cache.features.data<float>(), stored.data<float>(), stored.nbytes());
  if (file.has("labels")) {
    const SafetensorsTensorInfo& label_info = file.info("labels");
    check<FormatError>(label_info.dtype_name == "I32" && label_info.shape == Shape{count}, path.string(),
                       ": tensor \"labels\" is ", label_info.dtype_name, " ", shape_string(label_info.shape),
                       ", expected I32 [", count, "]");
    const Tensor labels = file.tensor("labels");
    cache.labels.resize(static_cast<size_t>(count));
    std::memcpy(cache.labels.data(), labels.data<int32_t>(), labels.nbytes());
  }
  try {
    check_cache(cache, path.string());
  } catch (const InvalidArgument& error) {
    throw FormatError(error.what());
  }
  return cache;
}

void align_labels(FeatureCache& cache, const std::vector<std::string>& names) {
  if (cache.label_names == names) return;
  const data::LabelMap target = data::LabelMap::from_names(names);
  std::vector<int32_t> mapping(cache.label_names.size());
  for (size_t id = 0; id < cache.label_names.size(); ++id) {
    mapping[id] = target.find(cache.label_names[id]);
    check<FormatError>(mapping[id] >= 0, cache.source, ": label '", cache.label_names[id],
                       "' is not one of the training labels (", target.describe(), ")");
  }
  for (int32_t& label : cache.labels) label = mapping[static_cast<size_t>(label)];
  cache.label_names = names;
}

}  // namespace scalebert::train
