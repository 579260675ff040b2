// The trainer end to end on the tiny fixtures and small inline data: every task trains and
// evaluates with its metrics; checkpoints are model folders that BertModel::load and transformers
// (when the venv is present) load with the same logits; a run stopped and resumed logs the same
// losses bit for bit as a run that never stopped; Ctrl-C (SIGINT to a child process) saves a
// checkpoint; a diverging run stops with the step and parameter named and keeps its last good
// checkpoint; incompatible resumes and bad data are clear errors; the config parser.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/cmd_train.h"
#include "core/error.h"
#include "io/file_util.h"
#include "model/bert_model.h"
#include "quant/quantize.h"
#include "testing.h"
#include "train/checkpoint.h"
#include "train/grad_utils.h"
#include "train/tensorboard.h"
#include "train/train_config.h"
#include "train/trainer.h"
#include "train/training_graph.h"

extern char** environ;

using namespace scalebert;
using namespace scalebert::train;
namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

using scalebert::testing::error_of;
using scalebert::testing::fixture_path;
using scalebert::testing::TempDir;
using scalebert::testing::tiny_classification_csv;
using scalebert::testing::tiny_mlm_text;

std::string conll_text(int sentences) {
  const char* const kSentences[] = {
      "bank B-ORG\nrose O\n",
      "the O\nbank B-ORG\nof I-ORG\neur I-ORG\nfell O\n",
      "net O\nincome O\nwas O\nusd B-MONEY\n5 I-MONEY\nmillion I-MONEY\n",
      "sales O\nrose O\nby O\n5 B-MONEY\nmillion I-MONEY\n",
  };
  std::string text = "-DOCSTART- O\n\n";
  for (int i = 0; i < sentences; ++i) text += std::string(kSentences[i % 4]) + "\n";
  return text;
}

std::string squad_json(int questions) {
  Json paragraphs = Json::array();
  const std::string context = "the bank rate rose in the quarter . net income fell by 5 million .";
  const char* const kQuestions[][2] = {{"what rose ?", "the bank rate"},
                                       {"what fell ?", "net income"},
                                       {"by how much ?", "5 million"}};
  Json qas = Json::array();
  for (int i = 0; i < questions; ++i) {
    const auto& [question, answer] = kQuestions[i % 3];
    const size_t start = context.find(answer);
    qas.push_back({{"id", str_cat("q", i)},
                   {"question", question},
                   {"answers", Json::array({{{"text", answer}, {"answer_start", start}}})}});
  }
  paragraphs.push_back({{"context", context}, {"qas", qas}});
  return Json{{"version", "1.1"}, {"data", Json::array({{{"title", "t"}, {"paragraphs", paragraphs}}})}}.dump();
}

TrainConfig classification_config(const TempDir& dir, const std::string& out = "out") {
  return scalebert::testing::tiny_train_config(dir, "classification", out);
}

std::vector<Json> read_jsonl(const fs::path& path) {
  std::vector<Json> lines;
  std::istringstream input(read_file(path));
  std::string line;
  while (std::getline(input, line)) {
    if (!line.empty()) lines.push_back(Json::parse(line));
  }
  return lines;
}

std::vector<Json> lines_of_type(const std::vector<Json>& lines, const std::string& type) {
  std::vector<Json> out;
  for (const Json& line : lines) {
    if (line.at("type") == type) out.push_back(line);
  }
  return out;
}

// One compute thread: the tiny model gains nothing from two, and OpenMP's spinning barriers on a
// loaded two-core machine make a 0.3 s run take seconds.
TrainConfig single_threaded(TrainConfig config) {
  if (config.threads == 0) config.threads = 1;
  return config;
}

TrainResult run_quietly(const TrainConfig& config) {
  clear_stop_request();
  Trainer trainer(single_threaded(config));
  return trainer.run();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Config

TEST(TrainConfig, ParsesTypedKeysAndNamesMistakes) {
  const TrainConfig config = TrainConfig::from_json(
      Json{{"model", "m"}, {"learning_rate", 3e-5}, {"labels", {"a", "b"}}, {"shuffle", false}, {"seed", 9}}, "c.json");
  EXPECT_EQ(config.model, "m");
  EXPECT_EQ(config.learning_rate, 3e-5);
  EXPECT_EQ(config.labels, (std::vector<std::string>{"a", "b"}));
  EXPECT_FALSE(config.shuffle);
  EXPECT_EQ(config.seed, 9u);
  EXPECT_EQ(config.batch_size, 32);  // default kept

  EXPECT_NE(error_of([] { TrainConfig::from_json(Json{{"learning_rat", 1e-4}}, "c.json"); })
                .find("c.json: unknown key \"learning_rat\" (did you mean \"learning_rate\"?)"),
            std::string::npos);
  EXPECT_NE(error_of([] { TrainConfig::from_json(Json{{"batch_size", "big"}}, "c.json"); })
                .find("key \"batch_size\" must be an integer, got \"big\""),
            std::string::npos);
  EXPECT_THROW(TrainConfig::from_json(Json{{"seed", -1}}, "c.json"), FormatError);

  // Flags go through the same table.
  const ConfigKey* rate = nullptr;
  for (const ConfigKey& key : train_config_keys()) {
    if (std::string(key.name) == "learning_rate") rate = &key;
  }
  ASSERT_NE(rate, nullptr);
  EXPECT_EQ(flag_name(rate->name), "learning-rate");
  EXPECT_EQ(parse_config_value(*rate, "2e-5"), Json(2e-5));
  EXPECT_NE(error_of([&] { parse_config_value(*rate, "fast"); }).find("--learning-rate expects a number, got 'fast'"),
            std::string::npos);

  // to_json round-trips every key.
  TrainConfig changed = config;
  changed.scale_lr = "sqrt";
  changed.max_tokens = 512;
  EXPECT_EQ(TrainConfig::from_json(changed.to_json()).to_json(), changed.to_json());

  TrainConfig bad = config;
  bad.train_file = "t.csv";
  bad.output_dir = "o";
  bad.optimizer = "sgd";
  EXPECT_NE(error_of([&] { bad.validate(); }).find("sgd"), std::string::npos);
  bad.optimizer = "lamb";
  bad.batch_size = 0;
  EXPECT_NE(error_of([&] { bad.validate(); }).find("batch_size and max_tokens are both 0"), std::string::npos);
  bad.batch_size = 8;
  bad.precision = "fp16";
  EXPECT_NE(error_of([&] { bad.validate(); }).find("precision \"fp16\": must be f32 or bf16"), std::string::npos);
  bad.precision = "bf16";
  EXPECT_NO_THROW(bad.validate());
}

TEST(TrainConfig, ExampleConfigsParse) {
  int count = 0;
  for (const auto& entry : fs::directory_iterator(scalebert::testing::source_dir() / "examples")) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("train_", 0) != 0 || entry.path().extension() != ".json") continue;
    EXPECT_NO_THROW(TrainConfig::from_file(entry.path()).validate()) << entry.path();
    ++count;
  }
  EXPECT_GE(count, 3) << "examples/train_*.json";
}

// ---------------------------------------------------------------------------------------------
// Training per task

TEST(Trainer, ClassificationTrainsEvaluatesAndWritesOutputs) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls") / "config.json");
  TempDir dir;
  TrainConfig config = classification_config(dir);
  config.max_steps = 24;
  config.eval_steps = 12;
  config.hidden_dropout = config.attention_dropout = config.classifier_dropout = 0.0;
  std::vector<StepReport> reports;
  TrainerCallbacks callbacks;
  callbacks.on_step = [&](const StepReport& report) { reports.push_back(report); };
  clear_stop_request();
  Trainer trainer(single_threaded(config), callbacks);
  const TrainResult result = trainer.run();

  EXPECT_TRUE(result.completed);
  EXPECT_EQ(result.global_step, 24);
  ASSERT_EQ(reports.size(), 24u);
  EXPECT_EQ(reports.back().step, 24);
  EXPECT_GT(reports.back().tokens_per_second, 0.0);
  EXPECT_EQ(reports[0].learning_rate, 0.0);  // linear warmup starts at 0 (transformers' convention)
  EXPECT_DOUBLE_EQ(reports[1].learning_rate, 1e-3);
  // The tiny model learns the rose / fell / neutral words: the loss falls well below ln 3.
  EXPECT_LT(result.step_losses.back(), 0.5 * result.step_losses.front()) << result.step_losses.front();
  ASSERT_TRUE(result.final_eval.has_value());
  for (const char* key : {"loss", "accuracy", "macro_f1", "macro_precision", "macro_recall"}) {
    ASSERT_TRUE(result.final_eval->metrics.count(key)) << key;
    EXPECT_TRUE(std::isfinite(result.final_eval->metrics.at(key))) << key;
  }
  EXPECT_EQ(result.final_eval->examples, 9);
  EXPECT_GE(result.final_eval->metrics.at("accuracy"), 2.0 / 3.0);
  EXPECT_EQ(result.best_metric_name, "macro_f1");

  // metrics.jsonl: one train line per step, evals at 12 and 24.
  const std::vector<Json> lines = read_jsonl(dir / "out/metrics.jsonl");
  const std::vector<Json> train_lines = lines_of_type(lines, "train");
  const std::vector<Json> eval_lines = lines_of_type(lines, "eval");
  ASSERT_EQ(train_lines.size(), 24u);
  ASSERT_EQ(eval_lines.size(), 2u);
  EXPECT_EQ(eval_lines[0].at("step"), 12);
  EXPECT_EQ(eval_lines[1].at("step"), 24);
  for (size_t i = 0; i < train_lines.size(); ++i) {
    EXPECT_EQ(train_lines[i].at("loss").get<double>(), result.step_losses[i]) << "step " << i + 1;
  }
  EXPECT_EQ(eval_lines[1].at("macro_f1").get<double>(), result.final_eval->metrics.at("macro_f1"));

  // TensorBoard: the same scalars.
  std::vector<fs::path> event_files;
  for (const auto& entry : fs::directory_iterator(dir / "out/tensorboard")) event_files.push_back(entry.path());
  ASSERT_EQ(event_files.size(), 1u);
  const EventFileContents events = read_event_file(event_files[0]);
  EXPECT_EQ(events.file_version, "brain.Event:2");
  int losses = 0;
  for (const ScalarEvent& scalar : events.scalars) {
    if (scalar.tag == "train/loss") {
      EXPECT_EQ(scalar.value, static_cast<float>(result.step_losses[static_cast<size_t>(scalar.step - 1)]));
      ++losses;
    }
    if (scalar.tag == "eval/accuracy" && scalar.step == 24) {
      EXPECT_EQ(scalar.value, static_cast<float>(result.final_eval->metrics.at("accuracy")));
    }
  }
  EXPECT_EQ(losses, 24);

  // Checkpoints are model folders: loaded back, they give the logged evaluation loss again.
  for (const char* name : {"checkpoint-last", "checkpoint-best"}) {
    const fs::path checkpoint = dir / "out" / name;
    for (const char* file : {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json",
                             "trainer_state.json", "train_config.json"}) {
      EXPECT_TRUE(fs::exists(checkpoint / file)) << checkpoint / file;
    }
    EXPECT_EQ(fs::exists(checkpoint / "optimizer.safetensors"), std::string(name) == "checkpoint-last");
    const BertConfig saved = BertConfig::from_file(checkpoint);
    EXPECT_EQ(saved.id2label, (std::vector<std::string>{"negative", "neutral", "positive"}));
    EXPECT_EQ(saved.architectures, std::vector<std::string>{"BertForSequenceClassification"});
  }
  const TrainerState last = read_trainer_state(dir / "out/checkpoint-last");
  EXPECT_EQ(last.global_step, 24);
  EXPECT_EQ(last.micro_batches, 48);
  EXPECT_EQ(last.task, "sequence-classification");
  const TrainerState best = read_trainer_state(dir / "out/checkpoint-best");
  EXPECT_EQ(best.best_step, result.best_step);

  // Re-evaluate checkpoint-last with a fresh trainer (resume of a finished run: no steps, one eval).
  TrainConfig again = config;
  again.resume = "auto";
  const TrainResult evaluated = run_quietly(again);
  EXPECT_EQ(evaluated.resumed_from_step, 24);
  EXPECT_TRUE(evaluated.step_losses.empty());
  ASSERT_TRUE(evaluated.final_eval.has_value());
  EXPECT_EQ(evaluated.final_eval->metrics, result.final_eval->metrics);
}

TEST(Trainer, NewHeadOnBaseModelWithLabelsFromTheData) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert") / "config.json");
  TempDir dir;
  TrainConfig config = classification_config(dir);
  config.model = fixture_path("tiny-bert").string();
  config.task = "classification";
  config.max_steps = 3;
  config.eval_steps = 0;
  std::vector<std::string> messages;
  TrainerCallbacks callbacks;
  callbacks.on_message = [&](const std::string& text) { messages.push_back(text); };
  clear_stop_request();
  Trainer trainer(single_threaded(config), callbacks);
  const TrainResult result = trainer.run();
  EXPECT_TRUE(result.completed);
  bool announced = false;
  for (const std::string& text : messages) announced |= text.find("new sequence-classification head for 3 labels") == 0;
  EXPECT_TRUE(announced);
  const BertModel saved = BertModel::load(dir / "out/checkpoint-last");
  EXPECT_EQ(saved.head, TaskHead::kSequenceClassification);
  EXPECT_EQ(saved.labels(), (std::vector<std::string>{"negative", "neutral", "positive"}));  // sorted, as transformers' examples
}

TEST(Trainer, TokenClassificationReportsEntityF1) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-ner") / "config.json");
  TempDir dir;
  TrainConfig config;
  config.model = fixture_path("tiny-bert-ner").string();
  config.train_file = dir.write("train.conll", conll_text(12)).string();
  config.eval_file = dir.write("dev.conll", conll_text(4)).string();
  config.output_dir = (dir / "out").string();
  config.max_length = 32;
  config.batch_size = 4;
  config.learning_rate = 3e-3;
  config.max_steps = 30;
  config.seed = 3;
  const TrainResult result = run_quietly(config);
  ASSERT_TRUE(result.final_eval.has_value());
  const auto& metrics = result.final_eval->metrics;
  for (const char* key : {"loss", "precision", "recall", "f1", "accuracy"}) ASSERT_TRUE(metrics.count(key)) << key;
  EXPECT_EQ(result.final_eval->examples, 4);
  EXPECT_LT(result.step_losses.back(), result.step_losses.front());
  EXPECT_GT(metrics.at("f1"), 0.5);  // 5 entities in 4 sentences, learnable words
  EXPECT_EQ(result.best_metric_name, "f1");
}

TEST(Trainer, QuestionAnsweringReportsExactMatchAndF1) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-qa") / "config.json");
  TempDir dir;
  TrainConfig config;
  config.model = fixture_path("tiny-bert-qa").string();
  config.train_file = dir.write("train.json", squad_json(9)).string();
  config.eval_file = dir.write("dev.json", squad_json(3)).string();
  config.output_dir = (dir / "out").string();
  config.max_length = 24;  // the context is longer: several windows per question
  config.doc_stride = 8;
  config.batch_size = 4;
  config.learning_rate = 3e-3;
  config.max_steps = 30;
  const TrainResult result = run_quietly(config);
  ASSERT_TRUE(result.final_eval.has_value());
  EXPECT_EQ(result.final_eval->examples, 3);
  const auto& metrics = result.final_eval->metrics;
  ASSERT_TRUE(metrics.count("exact_match") && metrics.count("f1"));
  EXPECT_GE(metrics.at("f1"), metrics.at("exact_match"));
  EXPECT_LE(metrics.at("f1"), 100.0);
  EXPECT_LT(result.step_losses.back(), result.step_losses.front());
}

// Trainer::evaluate_model (`scalebert train --eval-only`) scores a saved folder with the inference
// engine: on the f32 checkpoint it must reproduce the trainer's own final evaluation (the training
// graph) for every task; on an int8 copy it must run the int8 kernels (a different, nearby loss).
TEST(Trainer, EvaluateModelMatchesTheTrainersEvaluation) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls") / "config.json");
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-ner") / "config.json");
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-qa") / "config.json");
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-mlm") / "config.json");
  TempDir dir;
  std::vector<TrainConfig> configs;
  configs.push_back(classification_config(dir, "cls"));
  TrainConfig ner;
  ner.model = fixture_path("tiny-bert-ner").string();
  ner.train_file = dir.write("train.conll", conll_text(16)).string();
  ner.eval_file = dir.write("dev.conll", conll_text(6)).string();
  ner.output_dir = (dir / "ner").string();
  ner.max_length = 24;
  ner.batch_size = 4;
  ner.learning_rate = 3e-3;
  ner.max_steps = 6;
  configs.push_back(ner);
  TrainConfig qa;
  qa.model = fixture_path("tiny-bert-qa").string();
  qa.train_file = dir.write("train.json", squad_json(9)).string();
  qa.eval_file = dir.write("dev.json", squad_json(3)).string();
  qa.output_dir = (dir / "qa").string();
  qa.max_length = 24;  // several windows per question: the n-best decoding across windows is compared too
  qa.doc_stride = 8;
  qa.batch_size = 4;
  qa.learning_rate = 3e-3;
  qa.max_steps = 10;
  configs.push_back(qa);
  TrainConfig mlm;
  mlm.model = fixture_path("tiny-bert-mlm").string();
  mlm.train_file = dir.write("train.txt", tiny_mlm_text(12)).string();
  mlm.eval_file = dir.write("eval.txt", tiny_mlm_text(6)).string();
  mlm.output_dir = (dir / "mlm").string();
  mlm.max_length = 24;
  mlm.batch_size = 4;
  mlm.learning_rate = 2e-3;
  mlm.max_steps = 4;
  mlm.mlm_probability = 0.3;
  configs.push_back(mlm);

  for (const TrainConfig& config : configs) {
    SCOPED_TRACE(config.output_dir);
    const TrainResult trained = run_quietly(config);
    ASSERT_TRUE(trained.final_eval.has_value());
    TrainConfig evaluation = single_threaded(config);
    evaluation.model = (fs::path(config.output_dir) / "checkpoint-last").string();
    evaluation.train_file.clear();  // not needed to evaluate
    evaluation.output_dir.clear();
    const EvalResult scored = Trainer::evaluate_model(evaluation);
    EXPECT_EQ(scored.examples, trained.final_eval->examples);
    ASSERT_EQ(scored.metrics.size(), trained.final_eval->metrics.size());
    for (const auto& [name, value] : trained.final_eval->metrics) {
      ASSERT_TRUE(scored.metrics.count(name)) << name;
      // f32 inference and the training graph differ only in summation order.
      EXPECT_NEAR(scored.metrics.at(name), value, 1e-4 * std::max(1.0, std::abs(value))) << name;
    }
  }

  // int8: the same classification checkpoint through the int8 kernels.
  const TrainConfig& classification = configs.front();
  quant::QuantizeOptions options;
  options.dtype = kernels::Precision::kInt8;
  const fs::path f32_dir = fs::path(classification.output_dir) / "checkpoint-last";
  quant::quantize_model(f32_dir, dir / "cls-int8", options);
  TrainConfig evaluation = single_threaded(classification);
  evaluation.model = f32_dir.string();
  const double f32_loss = Trainer::evaluate_model(evaluation).metrics.at("loss");
  evaluation.model = (dir / "cls-int8").string();
  const EvalResult int8 = Trainer::evaluate_model(evaluation);
  EXPECT_NE(int8.metrics.at("loss"), f32_loss);
  EXPECT_NEAR(int8.metrics.at("loss"), f32_loss, 0.05 * f32_loss);
  EXPECT_EQ(int8.examples, 9);

  // The model's head is the one scored; no eval file is no evaluation.
  evaluation.task = "ner";
  EXPECT_NE(error_of([&] { Trainer::evaluate_model(evaluation); }).find("has a sequence-classification head"),
            std::string::npos);
  evaluation.task.clear();
  evaluation.eval_file.clear();
  EXPECT_NE(error_of([&] { Trainer::evaluate_model(evaluation); }).find("\"eval_file\" (--eval-file) is required"),
            std::string::npos);
}

TEST(Trainer, MaskedLmFromScratchReportsPerplexity) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-mlm") / "config.json");
  TempDir dir;
  TrainConfig config;
  config.model = fixture_path("tiny-bert-mlm").string();
  config.from_scratch = true;
  config.train_file = dir.write("train.txt", tiny_mlm_text(24)).string();
  config.eval_file = dir.write("eval.txt", tiny_mlm_text(6)).string();
  config.output_dir = (dir / "out").string();
  config.max_length = 24;
  config.batch_size = 0;
  config.max_tokens = 64;  // a token budget instead of a sequence count
  config.learning_rate = 2e-3;
  config.epochs = 2;
  config.optimizer = "lamb";
  config.mlm_probability = 0.3;
  const TrainResult result = run_quietly(config);
  EXPECT_TRUE(result.completed);
  ASSERT_TRUE(result.final_eval.has_value());
  const auto& metrics = result.final_eval->metrics;
  EXPECT_NEAR(metrics.at("perplexity"), std::exp(metrics.at("loss")), 1e-9 * metrics.at("perplexity"));
  EXPECT_GT(result.final_eval->examples, 0);
  EXPECT_EQ(result.best_metric_name, "perplexity");
  const BertModel saved = BertModel::load(dir / "out/checkpoint-last");
  EXPECT_EQ(saved.head, TaskHead::kMaskedLM);
  EXPECT_EQ(read_trainer_state(dir / "out/checkpoint-last").optimizer, "lamb");
}

TEST(Trainer, LearningRateScalingRules) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls") / "config.json");
  TempDir dir;
  for (const auto& [rule, factor] : std::vector<std::pair<std::string, double>>{{"none", 1.0}, {"linear", 3.0},
                                                                                 {"sqrt", std::sqrt(3.0)}}) {
    TrainConfig config = classification_config(dir, "out_" + rule);
    config.schedule = "constant";
    config.warmup_steps = 0;
    config.max_steps = 1;
    config.eval_file.clear();
    config.learning_rate = 1e-4;
    config.base_batch_size = 2;  // global batch 3 x 2 = 6 = 3 x base
    config.scale_lr = rule;
    run_quietly(config);
    const std::vector<Json> lines = read_jsonl(dir / ("out_" + rule) / "metrics.jsonl");
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_NEAR(lines[0].at("learning_rate").get<double>(), 1e-4 * factor, 1e-15) << rule;
  }
}

// ---------------------------------------------------------------------------------------------
// Checkpoints that other tools open

TEST(Trainer, CheckpointsLoadInTransformersWithTheSameLogits) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls") / "config.json");
  const fs::path python = scalebert::testing::source_dir() / ".venv/bin/python";
  if (!fs::exists(python)) GTEST_SKIP() << "no " << python << ": run scripts/setup.sh";
  TempDir dir;
  TrainConfig classification = classification_config(dir, "cls");
  classification.max_steps = 2;
  classification.eval_file.clear();
  run_quietly(classification);
  TrainConfig mlm;
  mlm.model = fixture_path("tiny-bert-mlm").string();
  mlm.train_file = dir.write("train.txt", tiny_mlm_text(8)).string();
  mlm.output_dir = (dir / "mlm").string();
  mlm.max_length = 24;
  mlm.batch_size = 4;
  mlm.max_steps = 2;
  mlm.learning_rate = 1e-3;
  run_quietly(mlm);
  TrainConfig ner;
  ner.model = fixture_path("tiny-bert").string();  // a new token-classification head on a base model
  ner.task = "ner";
  ner.train_file = dir.write("train.conll", conll_text(4)).string();
  ner.output_dir = (dir / "ner").string();
  ner.max_length = 24;
  ner.batch_size = 4;
  ner.max_steps = 2;
  run_quietly(ner);

  const std::vector<int32_t> ids = {6, 60, 75, 90, 110, 7};
  const fs::path script = dir.write("load.py", R"(
import json, sys, torch
import transformers
from transformers import AutoConfig
out = {}
for path in sys.argv[2:]:
    config = AutoConfig.from_pretrained(path)
    cls = getattr(transformers, config.architectures[0])
    model, info = cls.from_pretrained(path, output_loading_info=True)
    model.eval()
    ids = torch.tensor([json.loads(sys.argv[1].split("|")[0])])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    out[path] = {"missing": info["missing_keys"], "unexpected": info["unexpected_keys"],
                 "mismatched": [str(m) for m in info["mismatched_keys"]], "logits": logits.flatten().tolist()}
json.dump(out, open(sys.argv[1].split("|")[1], "w"))
)");
  const fs::path result_path = dir / "logits.json";
  const std::string command = python.string() + " " + script.string() + " '" + Json(ids).dump() + "|" +
                              result_path.string() + "' " + (dir / "cls/checkpoint-last").string() + " " +
                              (dir / "mlm/checkpoint-last").string() + " " + (dir / "ner/checkpoint-last").string() +
                              " 2>" + (dir / "python.log").string();
  ASSERT_EQ(std::system(command.c_str()), 0) << read_file(dir / "python.log");
  const Json loaded = Json::parse(read_file(result_path));

  for (const char* run : {"cls", "mlm", "ner"}) {
    const fs::path checkpoint = dir / run / "checkpoint-last";
    const Json& entry = loaded.at(checkpoint.string());
    EXPECT_TRUE(entry.at("missing").empty()) << run << ": " << entry.at("missing").dump();
    EXPECT_TRUE(entry.at("unexpected").empty()) << run << ": " << entry.at("unexpected").dump();
    EXPECT_TRUE(entry.at("mismatched").empty()) << run << ": " << entry.at("mismatched").dump();

    BertModel model = BertModel::load(checkpoint);
    Tensor gradients = model.parameters.make_arena();
    TrainingGraph graph(model, gradients, DropoutRates::none());
    TrainingBatch batch;
    batch.tokens.add_sequence(ids);
    if (model.head == TaskHead::kSequenceClassification) {
      batch.labels = {0};
    } else {
      batch.labels.assign(ids.size(), 1);  // every position scored (MLM rows, NER tokens)
    }
    Tensor logits;
    graph.evaluate(batch, &logits);
    const std::vector<double> expected = entry.at("logits").get<std::vector<double>>();
    ASSERT_EQ(static_cast<size_t>(logits.numel()), expected.size()) << run;
    double worst = 0;
    for (size_t i = 0; i < expected.size(); ++i) {
      worst = std::max(worst, std::fabs(static_cast<double>(logits.data<float>()[i]) - expected[i]));
    }
    EXPECT_LT(worst, 1e-4) << run;
  }
}

// ---------------------------------------------------------------------------------------------
// Exact resume

class ExactResume : public ::testing::TestWithParam<std::string> {};

TEST_P(ExactResume, StoppedAndResumedRunLogsTheSameLossesBitForBit) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls") / "config.json");
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-mlm") / "config.json");
  TempDir dir;
  auto make_config = [&](const std::string& out) {
    return scalebert::testing::tiny_train_config(dir, GetParam(), out);  // dropout on (the config's 0.1)
  };
  const TrainResult straight = run_quietly(make_config("straight"));
  ASSERT_TRUE(straight.completed);

  TrainConfig first_half = make_config("split");
  first_half.stop_after_steps = 4;
  const TrainResult first = run_quietly(first_half);
  EXPECT_FALSE(first.completed);
  EXPECT_EQ(first.global_step, 4);
  TrainConfig second_half = make_config("split");
  second_half.resume = "auto";
  const TrainResult second = run_quietly(second_half);
  EXPECT_TRUE(second.completed);
  EXPECT_EQ(second.resumed_from_step, 4);

  std::vector<double> joined = first.step_losses;
  joined.insert(joined.end(), second.step_losses.begin(), second.step_losses.end());
  ASSERT_EQ(joined.size(), straight.step_losses.size());
  for (size_t i = 0; i < joined.size(); ++i) EXPECT_EQ(joined[i], straight.step_losses[i]) << "step " << i + 1;

  // The logs agree line for line except for timings; evaluation lines included.
  auto strip = [](std::vector<Json> lines) {
    for (Json& line : lines) {
      for (const char* key : {"tokens_per_second", "elapsed_seconds"}) line.erase(key);
    }
    return lines;
  };
  EXPECT_EQ(strip(read_jsonl(dir / "split/metrics.jsonl")), strip(read_jsonl(dir / "straight/metrics.jsonl")));
  // Same weights and optimizer moments, byte for byte.
  for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
    EXPECT_TRUE(read_file(dir / "split/checkpoint-last" / file) == read_file(dir / "straight/checkpoint-last" / file))
        << file;
  }
  // The resumed run's event file starts with a session restart at step 5.
  int files = 0;
  for (const auto& entry : fs::directory_iterator(dir / "split/tensorboard")) {
    const EventFileContents events = read_event_file(entry.path());
    if (!events.session_starts.empty()) {
      EXPECT_EQ(events.session_starts, std::vector<int64_t>{5});
    }
    ++files;
  }
  EXPECT_EQ(files, 2);
}

INSTANTIATE_TEST_SUITE_P(Tasks, ExactResume, ::testing::Values("classification", "mlm"));

// ---------------------------------------------------------------------------------------------
// Ctrl-C: a child process trains until SIGINT, saves and exits.

TEST(TrainerChild, DISABLED_TrainUntilSignalled) {
  const char* out = std::getenv("SCALEBERT_TRAINER_CHILD_DIR");
  if (out == nullptr) GTEST_SKIP() << "runs only as the child of Trainer.SigintSavesCheckpointAndExits";
  TrainConfig config;
  config.model = fixture_path("tiny-bert-cls").string();
  config.train_file = (fs::path(out) / "train.csv").string();
  config.output_dir = (fs::path(out) / "out").string();
  config.max_length = 32;
  config.batch_size = 2;
  config.max_steps = 1000000;
  config.logging_steps = 1;
  config.schedule = "constant";
  config.threads = 1;
  clear_stop_request();
  StopOnSignals signals;
  Trainer trainer(config);
  const TrainResult result = trainer.run();
  std::_Exit(!result.completed && stop_requested() ? 42 : 3);
}

TEST(Trainer, SigintSavesCheckpointAndExits) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls") / "config.json");
  TempDir dir;
  dir.write("train.csv", tiny_classification_csv(12, 0));
  // Everything the child needs is built before fork(): after it only exec-safe calls are made.
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  std::vector<std::string> arguments = {self, "--gtest_also_run_disabled_tests",
                                        "--gtest_filter=TrainerChild.DISABLED_TrainUntilSignalled"};
  std::vector<std::string> environment;
  for (char** variable = environ; *variable != nullptr; ++variable) environment.emplace_back(*variable);
  environment.push_back("SCALEBERT_TRAINER_CHILD_DIR=" + dir.path().string());
  environment.push_back("SCALEBERT_FIXTURES=" + scalebert::testing::fixtures_dir().string());
  std::vector<char*> argv, envp;
  for (std::string& argument : arguments) argv.push_back(argument.data());
  argv.push_back(nullptr);
  for (std::string& variable : environment) envp.push_back(variable.data());
  envp.push_back(nullptr);
  const std::string log = (dir / "child.log").string();

  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    FILE* output = std::freopen(log.c_str(), "w", stdout);
    (void)output;
    execve(argv[0], argv.data(), envp.data());
    std::_Exit(127);
  }
  // Wait until it has logged three steps, then press Ctrl-C.
  const fs::path metrics = dir / "out/metrics.jsonl";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  size_t logged = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (fs::exists(metrics)) {  // complete lines only: the child may be writing one
      const std::string text = read_file(metrics);
      logged = static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
    }
    if (logged >= 3) break;
    int status = 0;
    if (waitpid(child, &status, WNOHANG) == child) FAIL() << "the child exited early:\n" << read_file(log);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_GE(logged, 3u) << "the child did not train:\n" << read_file(log);
  ASSERT_EQ(kill(child, SIGINT), 0);
  int status = 0;
  bool exited = false;
  for (int i = 0; i < 3000 && !exited; ++i) {  // 60 s
    exited = waitpid(child, &status, WNOHANG) == child;
    if (!exited) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!exited) {
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
    FAIL() << "the child did not stop after SIGINT";
  }
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  EXPECT_EQ(WEXITSTATUS(status), 42) << read_file(log);

  // The checkpoint holds the last logged step, and the run resumes from it.
  const TrainerState saved = read_trainer_state(dir / "out/checkpoint-last");
  const std::vector<Json> lines = read_jsonl(metrics);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(saved.global_step, lines.back().at("step").get<int64_t>());
  EXPECT_GE(saved.global_step, 3);
  TrainConfig resume;
  resume.model = fixture_path("tiny-bert-cls").string();
  resume.train_file = (dir / "train.csv").string();
  resume.output_dir = (dir / "out").string();
  resume.max_length = 32;
  resume.batch_size = 2;
  resume.max_steps = 1000000;
  resume.logging_steps = 1;
  resume.schedule = "constant";
  resume.resume = "auto";
  resume.stop_after_steps = saved.global_step + 2;
  const TrainResult continued = run_quietly(resume);
  EXPECT_EQ(continued.resumed_from_step, saved.global_step);
  EXPECT_EQ(continued.global_step, saved.global_step + 2);
}

// ---------------------------------------------------------------------------------------------
// Bad input

TEST(Trainer, DivergenceStopsWithStepAndParameterAndKeepsLastGoodCheckpoint) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls") / "config.json");
  TempDir dir;
  TrainConfig config = classification_config(dir);
  config.eval_file.clear();
  config.learning_rate = 1e37;  // the first update throws weights to ~1e38: the next forward overflows
  config.schedule = "constant";
  config.warmup_steps = 0;
  config.weight_decay = 0.0;
  config.max_grad_norm = 0.0;
  config.save_steps = 1;
  config.hidden_dropout = config.attention_dropout = config.classifier_dropout = 0.0;
  std::string message, parameter;
  try {
    run_quietly(config);
  } catch (const NonFiniteError& error) {
    message = error.what();
    parameter = error.parameter();
  }
  ASSERT_FALSE(message.empty()) << "the run did not stop";
  EXPECT_NE(message.find("training diverged at step 2"), std::string::npos) << message;
  EXPECT_NE(message.find("first non-finite gradient: parameter \""), std::string::npos) << message;
  EXPECT_FALSE(parameter.empty());
  EXPECT_NE(message.find("last good checkpoint is " + (dir / "out/checkpoint-last").string() + " (step 1)"),
            std::string::npos)
      << message;
  EXPECT_EQ(read_trainer_state(dir / "out/checkpoint-last").global_step, 1);
  // The kept checkpoint is finite.
  const BertModel kept = BertModel::load(dir / "out/checkpoint-last");
  EXPECT_FALSE(find_non_finite(kept.parameters, kept.parameters.values()).has_value());

  // An update that overflows the weights themselves is caught before it is saved.
  TrainConfig overflow = config;
  overflow.output_dir = (dir / "overflow").string();
  overflow.learning_rate = 1e39;
  const std::string overflow_error = error_of([&] { run_quietly(overflow); });
  EXPECT_NE(overflow_error.find("training diverged at step 1"), std::string::npos) << overflow_error;
  EXPECT_NE(overflow_error.find("the optimizer step made parameter"), std::string::npos) << overflow_error;
  EXPECT_NE(overflow_error.find("no checkpoint was saved before it"), std::string::npos) << overflow_error;
  EXPECT_FALSE(checkpoint_exists(dir / "overflow/checkpoint-last"));
}

TEST(Trainer, IncompatibleResumeIsAClearError) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls") / "config.json");
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-ner") / "config.json");
  TempDir dir;
  TrainConfig config = classification_config(dir);
  config.max_steps = 2;
  config.eval_file.clear();
  run_quietly(config);

  // A fresh run into the same folder refuses to clobber it.
  EXPECT_NE(error_of([&] { run_quietly(config); }).find("already holds a checkpoint"), std::string::npos);

  TrainConfig resume = config;
  resume.resume = "auto";
  resume.max_steps = 4;

  TrainConfig other_labels = resume;
  other_labels.labels = {"negative", "positive", "neutral"};  // a new head with another label order
  EXPECT_NE(error_of([&] { run_quietly(other_labels); }).find("label set"), std::string::npos);

  TrainConfig other_task = resume;  // the NER model and data resuming a classification run
  other_task.model = fixture_path("tiny-bert-ner").string();
  other_task.train_file = dir.write("train.conll", conll_text(4)).string();
  const std::string task_error = error_of([&] { run_quietly(other_task); });
  EXPECT_NE(task_error.find("cannot resume from " + (dir / "out/checkpoint-last").string() +
                            ": it trains task sequence-classification, this run token-classification"),
            std::string::npos)
      << task_error;

  TrainConfig other_seed = resume;
  other_seed.seed = 8;
  EXPECT_NE(error_of([&] { run_quietly(other_seed); }).find("seed 7"), std::string::npos);

  // Another model shape: the state records it, the check names the key and both values.
  const fs::path state_path = dir / "out/checkpoint-last/trainer_state.json";
  Json state = Json::parse(read_file(state_path));
  state["model_shape"]["hidden_size"] = 64;
  write_file_atomic(state_path, state.dump());
  const std::string shape_error = error_of([&] { run_quietly(resume); });
  EXPECT_NE(shape_error.find("model hidden_size is 64 there and 32 in this run's model"), std::string::npos)
      << shape_error;

  TrainConfig missing = config;
  missing.resume = (dir / "nowhere").string();
  EXPECT_NE(error_of([&] { run_quietly(missing); }).find("no checkpoint at"), std::string::npos);
}

TEST(Trainer, BadDataNamesFileAndLine) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls") / "config.json");
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-mlm") / "config.json");
  TempDir dir;
  TrainConfig config = classification_config(dir);

  TrainConfig empty = config;
  empty.train_file = dir.write("empty.csv", "").string();
  EXPECT_NE(error_of([&] { run_quietly(empty); }).find("empty.csv"), std::string::npos);

  TrainConfig unknown = config;
  unknown.eval_file = dir.write("bad_valid.csv", "text,label\nrevenue rose,positive\nprofit fell,bearish\n").string();
  const std::string unknown_error = error_of([&] { run_quietly(unknown); });
  EXPECT_NE(unknown_error.find("bad_valid.csv:3"), std::string::npos) << unknown_error;
  EXPECT_NE(unknown_error.find("bearish"), std::string::npos) << unknown_error;

  TrainConfig malformed = config;
  malformed.train_file = dir.write("bad.jsonl", "{\"text\": \"a\", \"label\": \"positive\"}\n{\"text\": 3}\n").string();
  EXPECT_NE(error_of([&] { run_quietly(malformed); }).find("bad.jsonl:2"), std::string::npos);

  TrainConfig blank_text;
  blank_text.model = fixture_path("tiny-bert-mlm").string();
  blank_text.train_file = dir.write("blank.txt", "\n\n  \n").string();
  blank_text.output_dir = (dir / "mlm").string();
  blank_text.max_length = 16;
  EXPECT_NE(error_of([&] { run_quietly(blank_text); }).find("blank.txt"), std::string::npos);

  TrainConfig too_long = config;
  too_long.max_length = 512;
  EXPECT_NE(error_of([&] { run_quietly(too_long); }).find("exceeds the model's max_position_embeddings 40"),
            std::string::npos);

  TrainConfig no_task = config;
  no_task.model = fixture_path("tiny-bert").string();
  EXPECT_NE(error_of([&] { run_quietly(no_task); }).find("has no task head"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// The command line

TEST(TrainCommand, ConfigFileWithFlagOverrides) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls") / "config.json");
  TempDir dir;
  TrainConfig config = classification_config(dir);
  config.threads = 1;
  config.max_steps = 2;
  const fs::path config_path = dir.write("run.json", config.to_json().dump(2));
  const std::vector<std::string> args = {"--config", config_path.string(), "--max-steps", "3", "--no-tensorboard",
                                         "--labels", "negative,neutral,positive", "--quiet"};
  EXPECT_EQ(cli::run_train_command(args), 0);
  EXPECT_EQ(read_trainer_state(dir / "out/checkpoint-last").global_step, 3);
  EXPECT_FALSE(fs::exists(dir / "out/tensorboard"));
  const TrainConfig recorded = TrainConfig::from_file(dir / "out/train_config.json");
  EXPECT_EQ(recorded.max_steps, 3);
  EXPECT_FALSE(recorded.tensorboard);
  EXPECT_EQ(recorded.learning_rate, config.learning_rate);  // from the file

  EXPECT_THROW(cli::run_train_command({"--config", config_path.string(), "--max-steps", "many"}), cli::UsageError);
  EXPECT_THROW(cli::run_train_command({"--max-step", "3"}), cli::UsageError);
  EXPECT_THROW(cli::run_train_command({"--shuffle", "--no-shuffle"}), cli::UsageError);
  EXPECT_EQ(cli::run_train_command({"--help"}), 0);
  // A fresh run into the same folder is refused; --resume auto continues (nothing left to do).
  EXPECT_THROW(cli::run_train_command(args), InvalidArgument);
  std::vector<std::string> resume = args;
  resume.insert(resume.end(), {"--resume", "auto"});
  EXPECT_EQ(cli::run_train_command(resume), 0);
}
