// TextPipeline on checkpoint-store locators ("store:ROOTS[@N]"): a model saved with the store API,
// one replica of every shard corrupt, classifies through the locator exactly as the folder does,
// failing over and saying so; @N picks a version; the temporary folder lives as long as the
// pipeline; int8 versions load as int8; `scalebert info` and `classify` take locators; a store
// without versions is an IoError naming it.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "io/store/locator.h"
#include "io/store/model_checkpoint.h"
#include "io/store/store.h"
#include "kernels/cpu/low_precision_matmul.h"
#include "model/bert_model.h"
#include "pipeline/text_pipeline.h"
#include "quant/quantize.h"
#include "testing.h"

namespace scalebert::pipeline {
namespace {

namespace fs = std::filesystem;

using testing::corrupt_first_replicas;
using testing::fixture_path;
using testing::TempDir;

const std::vector<std::string>& sample_texts() {
  static const std::vector<std::string> texts = {"revenue rose in the quarter", "the stock fell", "the bank rate"};
  return texts;
}

std::string locator_of(const std::vector<fs::path>& roots, uint64_t version = 0) {
  return store::format_store_locator({roots, version});
}

void expect_same_classifications(const std::vector<Classification>& got, const std::vector<Classification>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].label, want[i].label) << "text " << i;
    EXPECT_EQ(got[i].probabilities, want[i].probabilities) << "text " << i;  // same weights, same kernels: exact
  }
}

TEST(PipelineStore, ClassifiesThroughALocatorWithACorruptReplica) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls") / "config.json");
  TempDir dir;
  const std::vector<fs::path> roots = {dir / "r0", dir / "r1", dir / "r2"};
  store::CheckpointStore writer(roots);
  const store::SaveOptions options{2, 30000};  // several shards of the 98 KB model
  ASSERT_EQ(store::save_model_directory(writer, fixture_path("tiny-bert-cls"), options).version, 1u);
  const size_t shards = writer.read_manifest(1).shards.size();
  ASSERT_GT(shards, 1u);
  corrupt_first_replicas(writer, 1);

  const auto want = TextPipeline::load(fixture_path("tiny-bert-cls"))->classify(sample_texts());
  PipelineOptions pipeline_options;
  std::vector<std::string> warnings;
  pipeline_options.on_store_warning = [&](const std::string& warning) { warnings.push_back(warning); };
  auto pipeline = TextPipeline::load(locator_of(roots), pipeline_options);
  EXPECT_EQ(pipeline->source(), locator_of(roots));
  ASSERT_TRUE(pipeline->store_version().has_value());
  EXPECT_EQ(*pipeline->store_version(), 1u);
  // Every corrupt replica was failed over and named, to the callback and in store_warnings().
  EXPECT_GE(warnings.size(), shards);
  EXPECT_EQ(pipeline->store_warnings().size(), warnings.size());
  EXPECT_EQ(pipeline->labels(), (std::vector<std::string>{"negative", "neutral", "positive"}));
  // Only the packed weights are held; the layout of the parameter table still answers counts.
  EXPECT_FALSE(pipeline->model().parameters.values().defined());
  EXPECT_EQ(pipeline->model().parameters.parameter_count(), 23491);
  expect_same_classifications(pipeline->classify(sample_texts()), want);

  // The temporary folder lives as long as the pipeline.
  const fs::path materialized = pipeline->model().directory;
  EXPECT_TRUE(fs::exists(materialized / "config.json"));
  pipeline.reset();
  EXPECT_FALSE(fs::exists(materialized));
}

TEST(PipelineStore, VersionSuffixPicksAVersion) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls") / "config.json");
  TempDir dir;
  const std::vector<fs::path> roots = {dir / "r0", dir / "r1"};
  store::CheckpointStore writer(roots);
  const store::SaveOptions options{2, 1u << 20};
  ASSERT_EQ(store::save_model_directory(writer, fixture_path("tiny-bert-cls"), options).version, 1u);
  const std::vector<store::SideFile> files = store::read_model_side_files(fixture_path("tiny-bert-cls"));
  const BertModel negated = testing::negated_classifier(fixture_path("tiny-bert-cls"));
  ASSERT_EQ(store::save_bert_model(writer, negated, options, files).version, 2u);

  const auto first = TextPipeline::load(locator_of(roots, 1))->classify(sample_texts());
  const auto latest = TextPipeline::load(locator_of(roots))->classify(sample_texts());
  expect_same_classifications(first, TextPipeline::load(fixture_path("tiny-bert-cls"))->classify(sample_texts()));
  // Version 2 is the latest: its probabilities are the softmax of negated logits, which differ.
  ASSERT_EQ(latest.size(), first.size());
  for (size_t i = 0; i < first.size(); ++i) EXPECT_NE(latest[i].probabilities, first[i].probabilities) << i;
  // softmax(-z) ordering: version 2's most probable class is version 1's least probable.
  for (size_t i = 0; i < first.size(); ++i) {
    const auto& p = first[i].probabilities;
    const int64_t least = std::min_element(p.begin(), p.end()) - p.begin();
    EXPECT_EQ(latest[i].label, least) << i;
  }
}

TEST(PipelineStore, Int8VersionLoadsAsInt8) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls") / "config.json");
  if (kernels::supported_precision(kernels::Precision::kInt8) != kernels::Precision::kInt8) {
    GTEST_SKIP() << "this CPU lacks the int8 instructions";
  }
  TempDir dir;
  quant::QuantizeOptions quantize_options;
  quant::quantize_model(fixture_path("tiny-bert-cls"), dir / "int8", quantize_options);
  const std::vector<fs::path> roots = {dir / "r0", dir / "r1"};
  store::CheckpointStore writer(roots);
  ASSERT_EQ(quant::save_quantized_model(writer, dir / "int8", {2, 20000}).version, 1u);
  corrupt_first_replicas(writer, 1);

  PipelineOptions quiet;
  quiet.on_store_warning = [](const std::string&) {};
  auto stored = TextPipeline::load(locator_of(roots), quiet);
  EXPECT_TRUE(stored->weights().low_precision);
  EXPECT_EQ(stored->weights().layers[0].qkv.precision(), kernels::Precision::kInt8);
  EXPECT_TRUE(stored->weights().word_embeddings_int8.defined());
  expect_same_classifications(stored->classify(sample_texts()),
                              TextPipeline::load(dir / "int8")->classify(sample_texts()));
}

TEST(PipelineStore, MissingStoreIsAnIoErrorNamingIt) {
  TempDir dir;
  testing::expect_error<IoError>([&] { TextPipeline::load(locator_of({dir / "empty0", dir / "empty1"})); },
                                 {"empty0"});
  testing::expect_error<InvalidArgument>([&] { TextPipeline::load("store:"); }, {"store:"});
}

// Run a command, capturing standard output; the exit status in `code`.
std::string run_command(const std::string& command, int* code) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return out;
  char buffer[4096];
  size_t read = 0;
  while ((read = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) out.append(buffer, read);
  const int status = ::pclose(pipe);
  *code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

// The commands that open models through TextPipeline take a locator as MODEL_DIR.
TEST(PipelineStore, CommandsTakeALocator) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls") / "config.json");
  const fs::path binary = fs::path(SCALEBERT_BINARY_DIR) / "scalebert";
  if (!fs::exists(binary)) GTEST_SKIP() << binary << " is not built";
  TempDir dir;
  const std::vector<fs::path> roots = {dir / "r0", dir / "r1"};
  store::CheckpointStore writer(roots);
  ASSERT_EQ(store::save_model_directory(writer, fixture_path("tiny-bert-cls"), {2, 30000}).version, 1u);
  corrupt_first_replicas(writer, 1);
  // Quoted for the shell by appends (GCC 12's -Wrestrict misfires on "'" + std::string).
  std::string locator;
  locator.push_back('\'');
  locator.append(locator_of(roots));
  locator.push_back('\'');

  int code = -1;
  const std::string info_text = run_command(binary.string() + " info --json " + locator + " 2>/dev/null", &code);
  ASSERT_EQ(code, 0) << info_text;
  const nlohmann::json info = nlohmann::json::parse(info_text);
  EXPECT_EQ(info["head"], "sequence-classification");
  EXPECT_EQ(info["parameters"], 23491);
  EXPECT_EQ(info["tensors"], 41);

  std::ofstream(dir / "texts.txt") << "revenue rose in the quarter\nthe stock fell\n";
  const std::string from_store = run_command(
      binary.string() + " classify --model " + locator + " --input " + (dir / "texts.txt").string() + " 2>" +
          (dir / "stderr.txt").string(),
      &code);
  ASSERT_EQ(code, 0) << from_store;
  const std::string from_folder = run_command(
      binary.string() + " classify --model " + fixture_path("tiny-bert-cls").string() + " --input " +
          (dir / "texts.txt").string() +
          " 2>/dev/null",
      &code);
  ASSERT_EQ(code, 0);
  EXPECT_EQ(from_store, from_folder);
  std::ifstream err(dir / "stderr.txt");
  const std::string stderr_text((std::istreambuf_iterator<char>(err)), std::istreambuf_iterator<char>());
  EXPECT_NE(stderr_text.find("checkpoint store: "), std::string::npos) << "failover not reported: " << stderr_text;
}

}  // namespace
}  // namespace scalebert::pipeline
