// Shared helpers for tests.
#include "testing.h"

#include <stdlib.h>  // mkdtemp

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>

#include "core/error.h"
#include "io/store/store.h"
#include "model/bert_model.h"
#include "train/train_config.h"

namespace scalebert::testing {

namespace fs = std::filesystem;

fs::path source_dir() { return SCALEBERT_SOURCE_DIR; }

fs::path fixtures_dir() {
  if (const char* override_dir = std::getenv("SCALEBERT_FIXTURES")) return override_dir;
  return fs::path(SCALEBERT_BINARY_DIR) / "fixtures";
}

fs::path fixture_path(const std::string& name) { return fixtures_dir() / name; }

fs::path shared_dir() {
  if (const char* override_dir = std::getenv("SCALEBERT_SHARED")) return override_dir;
  fs::path candidate = source_dir().parent_path() / "shared";
  return fs::exists(candidate / "data") ? candidate : fs::path();
}

namespace {

// The reference/ script that writes fixtures_dir() / `top` (tests/CMakeLists.txt runs each as a
// ground_truth.* setup test); empty when unknown.
std::string generating_script(const std::string& top) {
  if (top.rfind("tiny-bert", 0) == 0 || top == "vocab.txt") return "reference/make_tiny_bert.py";
  if (top == "minilm") return "reference/minilm_reference.py";
  if (top == "train") return "reference/train_reference.py";
  if (top == "optimizer") return "reference/optimizer_reference.py";
  if (top == "loss_curve") return "reference/loss_curve_reference.py";
  if (top == "tokenizer") return "reference/tokenizer_ground_truth.py";
  return "";
}

}  // namespace

std::string absent_path_message(const fs::path& path) {
  const fs::path relative = path.lexically_normal().lexically_relative(fixtures_dir().lexically_normal());
  if (relative.empty() || *relative.begin() == "..") return str_cat(path, " is absent");
  const std::string script = generating_script(relative.begin()->string());
  return str_cat("fixture ", path, " is absent: ctest's fixture setup generates it (",
                 script.empty() ? std::string("the ground_truth.* tests, reference/*.py") : script,
                 "; needs the project venv from scripts/setup.sh); run the tests through ctest, or set "
                 "SCALEBERT_FIXTURES to a folder that has it");
}

// ---------------------------------------------------------------------------------------------

namespace {

// The running test's "Suite.Name" with every character other than [A-Za-z0-9_.-] replaced by '_'
// (parameterized names hold '/'), or "test" outside a test.
std::string test_name_for_path() {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = info == nullptr ? std::string("test") : str_cat(info->test_suite_name(), ".", info->name());
  for (char& c : name) {
    const bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                      c == '.' || c == '-';
    if (!keep) c = '_';
  }
  return name.substr(0, 120);  // well under NAME_MAX with the prefix and the XXXXXX
}

}  // namespace

TempDir::TempDir() {
  std::string pattern = (fs::temp_directory_path() / ("scalebert_" + test_name_for_path() + "_XXXXXX")).string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    throw IoError(str_cat("cannot create a temporary directory ", pattern, ": ", std::strerror(errno)));
  }
  path_ = pattern;
}

TempDir::~TempDir() {
  // Never throws: a test that left a mount point or an unwritable folder behind still finishes.
  std::error_code error;
  fs::remove_all(path_, error);
  if (error) std::fprintf(stderr, "warning: could not remove %s: %s\n", path_.c_str(), error.message().c_str());
}

fs::path TempDir::write(const std::string& name, const std::string& content) const {
  const fs::path path = path_ / name;
  std::ofstream out(path, std::ios::binary);
  out << content;
  if (!out) throw IoError(str_cat("cannot write ", path));
  return path;
}

// ---------------------------------------------------------------------------------------------

float max_abs_diff(const Tensor& a, const Tensor& b) {
  a.expect(b.shape(), DType::kF32, "max_abs_diff left operand");
  b.expect(a.shape(), DType::kF32, "max_abs_diff right operand");
  const float* left = a.data<float>();
  const float* right = b.data<float>();
  float worst = 0.0f;
  for (int64_t i = 0; i < a.numel(); ++i) {
    float difference = std::fabs(left[i] - right[i]);
    if (std::isnan(difference)) return INFINITY;
    if (difference > worst) worst = difference;
  }
  return worst;
}

std::string error_of(const std::function<void()>& body) {
  try {
    body();
  } catch (const std::exception& error) {
    return error.what();
  }
  return "(no error)";
}

// ---------------------------------------------------------------------------------------------

namespace {

const char* const kPositive[] = {"revenue rose", "profit rose", "sales rose in the quarter", "cash rose",
                                 "growth in sales", "the stock rose"};
const char* const kNegative[] = {"revenue fell", "profit fell", "loss in the quarter", "the stock fell",
                                 "debt rose", "sales fell"};
const char* const kNeutral[] = {"the bank rate", "interest on debt", "shares of the bank", "the market",
                                "eur and usd", "the year"};

}  // namespace

std::string tiny_classification_csv(int rows, int offset) {
  std::string csv = "text,label\n";
  for (int i = 0; i < rows; ++i) {
    const int k = (i + offset) % 6;
    switch (i % 3) {
      case 0: csv += std::string(kPositive[k]) + ",positive\n"; break;
      case 1: csv += std::string(kNegative[k]) + ",negative\n"; break;
      default: csv += std::string(kNeutral[k]) + ",neutral\n"; break;
    }
  }
  return csv;
}

std::string tiny_mlm_text(int lines) {
  std::string text;
  for (int i = 0; i < lines; ++i) {
    text += std::string(kPositive[i % 6]) + " and " + kNegative[(i + 1) % 6] + " in the " + kNeutral[(i + 2) % 6] + "\n";
    if (i % 4 == 3) text += "\n";
  }
  return text;
}

train::TrainConfig tiny_train_config(const TempDir& dir, const std::string& task, const std::string& out) {
  train::TrainConfig config;
  config.model = fixture_path("tiny-bert-cls").string();
  config.train_file = dir.write("train.csv", tiny_classification_csv(20, 0)).string();
  config.eval_file = dir.write("valid.csv", tiny_classification_csv(9, 3)).string();
  config.output_dir = (dir / out).string();
  config.max_length = 32;
  config.batch_size = 3;
  config.gradient_accumulation_steps = 2;
  config.learning_rate = 2e-3;
  config.warmup_steps = 2;
  config.max_steps = 8;
  config.logging_steps = 1;
  config.eval_steps = 3;
  config.seed = 7;
  if (task == "mlm") {
    config.model = fixture_path("tiny-bert-mlm").string();
    config.train_file = dir.write("train.txt", tiny_mlm_text(20)).string();
    config.eval_file = dir.write("eval.txt", tiny_mlm_text(4)).string();
    config.max_length = 16;
    config.optimizer = "lamb";
  }
  return config;
}

// ---------------------------------------------------------------------------------------------

void fill_random_parameters(BertModel& model, uint32_t seed, float stddev) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  for (const ParameterEntry& entry : model.parameters.entries()) {
    Tensor values = model.parameters.get(entry.name);
    const float center = entry.name.find("LayerNorm.weight") != std::string::npos ? 1.0f : 0.0f;
    float* data = values.data<float>();
    for (int64_t i = 0; i < values.numel(); ++i) data[i] = center + normal(generator);
  }
}

std::shared_ptr<BertModel> random_bert(const EncoderShape& shape, TaskHead head, int64_t labels, uint32_t seed) {
  BertConfig config;
  config.vocab_size = shape.vocab_size;
  config.hidden_size = shape.hidden_size;
  config.num_hidden_layers = shape.num_hidden_layers;
  config.num_attention_heads = shape.num_attention_heads;
  config.intermediate_size = shape.intermediate_size;
  config.max_position_embeddings = shape.max_position_embeddings;
  auto model = std::make_shared<BertModel>(BertModel::create(config, head, true, labels));
  fill_random_parameters(*model, seed);
  return model;
}

BertModel negated_classifier(const fs::path& model_dir) {
  BertModel model = BertModel::load(model_dir);
  for (const char* name : {"classifier.weight", "classifier.bias"}) {
    Tensor tensor = model.parameters.get(name);
    float* values = tensor.data<float>();
    for (int64_t i = 0; i < tensor.numel(); ++i) values[i] = -values[i];
  }
  return model;
}

void flip_bits(const fs::path& path, std::int64_t offset, unsigned char mask) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(file) << path;
  const std::ios::seekdir from = offset < 0 ? std::ios::end : std::ios::beg;
  file.seekg(static_cast<std::streamoff>(offset), from);
  char byte = 0;
  file.read(&byte, 1);
  byte = static_cast<char>(byte ^ static_cast<char>(mask));
  file.seekp(static_cast<std::streamoff>(offset), from);
  file.write(&byte, 1);
  ASSERT_TRUE(file) << "flipping byte " << offset << " of " << path;
}

void corrupt_first_replicas(const store::CheckpointStore& checkpoint_store, std::uint64_t version) {
  for (const store::ManifestObject& shard : checkpoint_store.read_manifest(version).shards) {
    flip_bits(checkpoint_store.version_path(shard.replicas[0], version) / shard.file, -1, 0x10);
  }
}

}  // namespace scalebert::testing
