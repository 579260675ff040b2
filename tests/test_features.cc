// Frozen-encoder features: the cache written by compute_features + save_feature_cache equals direct
// inference (one text at a time through an InferenceSession) and, on all-MiniLM-L6-v2, PyTorch's
// pooled hidden states; the cache file round-trips and refuses what is not a cache.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/file_util.h"
#include "io/safetensors.h"
#include "kernels/cpu/pooling.h"
#include "model/inference_session.h"
#include "train/features.h"
#include "testing.h"

using namespace scalebert;
using namespace scalebert::train;

namespace {

const std::vector<std::string> kTexts = {
    "net income rose 5% in the quarter",
    "the bank cut its rate",
    "shares fell",
    "eur revenue and cash flow grew by 12 million in the year, profit and sales rose",
    "loss",
    "interest on debt",
    "market growth",
};

}  // namespace

TEST(Features, CacheEqualsDirectInference) {
  const std::filesystem::path model_dir = scalebert::testing::fixture_path("tiny-bert");
  SCALEBERT_REQUIRE_PATH(model_dir / "config.json");
  pipeline::PipelineOptions options;
  options.batch_size = 3;  // several batches, ordered by length, written back in input order
  auto pipeline = pipeline::TextPipeline::load(model_dir, options);
  const std::vector<std::string> pairs;

  for (FeaturePooling pooling : {FeaturePooling::kCls, FeaturePooling::kMean, FeaturePooling::kPooler}) {
    FeatureCache cache;
    cache.features = compute_features(*pipeline, kTexts, pairs, pooling);
    cache.labels = {0, 1, 2, 0, 1, 2, 0};
    cache.label_names = {"negative", "neutral", "positive"};
    cache.model = model_dir.string();
    cache.pooling = std::string(feature_pooling_name(pooling));
    cache.source = "texts";
    cache.max_length = pipeline->max_length();
    const scalebert::testing::TempDir temp;
    const std::filesystem::path path = temp / "features.safetensors";
    save_feature_cache(path, cache);
    const FeatureCache loaded = load_feature_cache(path);
    ASSERT_EQ(loaded.count(), static_cast<int64_t>(kTexts.size()));
    EXPECT_EQ(loaded.labels, cache.labels);
    EXPECT_EQ(loaded.label_names, cache.label_names);
    EXPECT_EQ(loaded.pooling, cache.pooling);
    EXPECT_EQ(loaded.model, cache.model);

    // Direct inference: one sequence per batch through a fresh session of the same weights.
    auto weights = InferenceWeights::build(std::make_shared<const BertModel>(BertModel::load(model_dir)));
    InferenceSession session(weights);
    const int64_t C = loaded.hidden();
    std::vector<float> expected(static_cast<size_t>(C));
    for (size_t i = 0; i < kTexts.size(); ++i) {
      const text::Encoding encoding = pipeline->encode(kTexts[i]);
      PackedBatch batch;
      batch.add_sequence(encoding.ids, encoding.type_ids);
      const InferenceOutputs& outputs = session.run(batch);
      if (pooling == FeaturePooling::kCls) {
        kernels::cls_pool(expected.data(), outputs.hidden.data<float>(), batch.sequence_offsets.data(), 1, C);
      } else if (pooling == FeaturePooling::kMean) {
        kernels::mean_pool(expected.data(), outputs.hidden.data<float>(), batch.sequence_offsets.data(), 1, C);
      } else {
        std::copy_n(outputs.pooled.data<float>(), C, expected.data());
      }
      for (int64_t c = 0; c < C; ++c) {
        ASSERT_NEAR(loaded.features.data<float>()[i * C + c], expected[c], 1e-5f)
            << feature_pooling_name(pooling) << " text " << i << " column " << c;
      }
    }
  }
}

TEST(Features, MiniLmMatchesPyTorch) {
  const std::filesystem::path reference_dir = scalebert::testing::fixture_path("minilm");
  SCALEBERT_REQUIRE_PATH(reference_dir / "reference.safetensors");
  std::string model_dir = read_file(reference_dir / "model_dir.txt");
  while (!model_dir.empty() && (model_dir.back() == '\n' || model_dir.back() == '\r')) model_dir.pop_back();
  const std::vector<std::string> texts =
      nlohmann::json::parse(read_file(reference_dir / "texts.json")).get<std::vector<std::string>>();
  const SafetensorsFile reference = SafetensorsFile::open(reference_dir / "reference.safetensors");
  const Tensor hidden = reference.tensor("last_hidden_state");  // (B, T, C)
  const Tensor mask = reference.tensor("attention_mask");       // (B, T)
  const Tensor pooler = reference.tensor("pooler_output");      // (B, C)
  const int64_t B = hidden.dim(0), T = hidden.dim(1), C = hidden.dim(2);
  ASSERT_EQ(B, static_cast<int64_t>(texts.size()));

  auto pipeline = pipeline::TextPipeline::load(model_dir);
  const Tensor mean = compute_features(*pipeline, texts, {}, FeaturePooling::kMean);  // (B, C)
  const Tensor cls = compute_features(*pipeline, texts, {}, FeaturePooling::kCls);
  const Tensor pooled = compute_features(*pipeline, texts, {}, FeaturePooling::kPooler);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<double> want(static_cast<size_t>(C), 0.0);
    int64_t count = 0;
    for (int64_t t = 0; t < T; ++t) {
      if (mask.data<int64_t>()[b * T + t] == 0) continue;
      ++count;
      for (int64_t c = 0; c < C; ++c) want[c] += hidden.data<float>()[(b * T + t) * C + c];
    }
    for (int64_t c = 0; c < C; ++c) {
      ASSERT_NEAR(mean.data<float>()[b * C + c], want[c] / count, 1e-4) << "mean, text " << b << " column " << c;
      ASSERT_NEAR(cls.data<float>()[b * C + c], hidden.data<float>()[b * T * C + c], 1e-4) << "cls, text " << b;
      ASSERT_NEAR(pooled.data<float>()[b * C + c], pooler.data<float>()[b * C + c], 1e-4) << "pooler, text " << b;
    }
  }
}

TEST(Features, CacheErrorsAndLabelAlignment) {
  FeatureCache cache;
  cache.features = Tensor::zeros({2, 4}, DType::kF32);
  cache.labels = {0, 3};
  cache.label_names = {"a", "b"};
  const scalebert::testing::TempDir temp;
  const std::filesystem::path path = temp / "bad.safetensors";
  EXPECT_THROW(save_feature_cache(path, cache), InvalidArgument);  // label 3 outside 2 names

  // A safetensors file that is not a feature cache.
  save_safetensors(path, {{"features", Tensor::zeros({2, 4}, DType::kF32)}}, {{"format", "something else"}});
  try {
    load_feature_cache(path);
    FAIL() << "expected FormatError";
  } catch (const FormatError& error) {
    EXPECT_NE(std::string(error.what()).find("something else"), std::string::npos) << error.what();
  }
  // Metadata that disagrees with the tensor.
  save_safetensors(path, {{"features", Tensor::zeros({2, 4}, DType::kF32)}},
                   {{"format", kFeatureCacheFormat}, {"version", kFeatureCacheVersion}, {"model", "m"},
                    {"pooling", "mean"}, {"source", "s"}, {"count", "3"}, {"hidden", "4"}, {"max_length", "8"},
                    {"labels", "[]"}});
  EXPECT_THROW(load_feature_cache(path), FormatError);

  // An evaluation cache whose file lacked a class is re-expressed in the training ids.
  FeatureCache eval;
  eval.features = Tensor::zeros({3, 4}, DType::kF32);
  eval.label_names = {"bullish", "neutral"};
  eval.labels = {0, 1, 1};
  align_labels(eval, {"bearish", "bullish", "neutral"});
  EXPECT_EQ(eval.labels, (std::vector<int32_t>{1, 2, 2}));
  eval.label_names = {"sideways"};
  eval.labels = {0, 0, 0};
  EXPECT_THROW(align_labels(eval, {"bearish", "bullish", "neutral"}), FormatError);
  EXPECT_THROW(parse_feature_pooling("max"), InvalidArgument);
}

TEST(Features, ReadsLabelledTablesAndTextLines) {
  const scalebert::testing::TempDir temp;
  const std::filesystem::path csv = temp / "features.csv";
  std::ofstream(csv) << "text,label\n\"up, strongly\",2\ndown,0\nflat,2\n";
  const FeatureInput labelled = read_feature_input(csv, {}, true);
  EXPECT_EQ(labelled.texts, (std::vector<std::string>{"up, strongly", "down", "flat"}));
  EXPECT_EQ(labelled.labels, (std::vector<int32_t>{2, 0, 2}));  // integer labels keep their values
  EXPECT_EQ(labelled.label_names.size(), 3u);
  const std::filesystem::path txt = temp / "features.txt";
  std::ofstream(txt) << "first line\n\nsecond line\r\n";
  const FeatureInput lines = read_feature_input(txt, {}, false);
  EXPECT_EQ(lines.texts, (std::vector<std::string>{"first line", "second line"}));
  EXPECT_TRUE(lines.labels.empty());
}
