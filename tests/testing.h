// Shared helpers for tests: paths to sources, fixtures and ../shared, skipping when a generated
// fixture is absent, temporary directories, float comparisons, and the tiny-fixture training data,
// training configs, models and store corruptions that several tests use.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/tensor.h"
#include "kernels/cpu/low_precision_matmul.h"
#include "model/bert_model.h"

namespace scalebert {
namespace store {
class CheckpointStore;
}  // namespace store
namespace train {
struct TrainConfig;
}  // namespace train
}  // namespace scalebert

namespace scalebert::testing {

// The repository root (compiled in).
std::filesystem::path source_dir();
// Where ctest's fixture setup (reference/*.py) writes generated ground truth: <build>/fixtures, or
// $SCALEBERT_FIXTURES.
std::filesystem::path fixtures_dir();
// fixtures_dir() / name: a generated fixture ("tiny-bert-cls", "minilm", "optimizer", ...).
std::filesystem::path fixture_path(const std::string& name);
// ../shared next to the repository; empty path when absent (a user's fresh clone has none).
std::filesystem::path shared_dir();

// Why `path` is needed and absent: names the path and, for a path under fixtures_dir(), the
// reference/ script that ctest's fixture setup (the ground_truth.* tests) runs to generate it.
std::string absent_path_message(const std::filesystem::path& path);

}  // namespace scalebert::testing

// Skips the running test (GTEST_SKIP) unless `required` exists, saying which path is absent and, for a
// generated fixture, that ctest's fixture setup generates it. More text may be streamed after it.
// Use it in a test body or in a fixture's SetUp.
#define SCALEBERT_REQUIRE_PATH(required)                                    \
  switch (0)                                                                \
  case 0:                                                                   \
  default:                                                                  \
    if (const ::std::filesystem::path scalebert_required_path = (required); \
        ::std::filesystem::exists(scalebert_required_path)) {               \
    } else                                                                  \
      GTEST_SKIP() << ::scalebert::testing::absent_path_message(scalebert_required_path)

// Skips the running test unless this CPU runs `precision` natively (kernels::supported_precision
// would fall back to another one), naming the precision the instructions are missing for.
#define SCALEBERT_REQUIRE_PRECISION(precision)                                                      \
  if (::scalebert::kernels::supported_precision(precision) != (precision)) {                       \
    GTEST_SKIP() << "this CPU lacks the instructions for " << ::scalebert::kernels::precision_name(precision); \
  }

namespace scalebert::testing {

// A fresh directory under std::filesystem::temp_directory_path(), named after the running test and
// made unique by mkdtemp (ctest -j runs tests, and instances of one test binary, side by side),
// removed with everything in it at scope exit. Not copyable: one owner removes it.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::filesystem::path& name) const { return path_ / name; }
  // Writes `content` (bytes as given) to path() / name and returns that path.
  std::filesystem::path write(const std::string& name, const std::string& content) const;

 private:
  std::filesystem::path path_;
};

// gtest parameter name for a fixture name: "tiny-bert-cls" -> "tiny_bert_cls" (test names allow
// only letters, digits and underscores). For INSTANTIATE_TEST_SUITE_P over std::string params.
inline std::string fixture_param_name(const ::testing::TestParamInfo<std::string>& param) {
  std::string name = param.param;
  for (char& c : name) c = (c == '-') ? '_' : c;
  return name;
}

// Largest |a - b| over all elements; both tensors F32 with equal shapes.
float max_abs_diff(const Tensor& a, const Tensor& b);

// Runs `action`, requiring it to throw ErrorType (or a subclass) whose message contains every one of
// `fragments`; another exception type, or none, is a test failure.
template <typename ErrorType, typename Action>
void expect_error(Action&& action, const std::vector<std::string>& fragments) {
  try {
    action();
  } catch (const ErrorType& error) {
    const std::string message = error.what();
    for (const std::string& fragment : fragments) {
      EXPECT_NE(message.find(fragment), std::string::npos) << "message \"" << message << "\" lacks \"" << fragment << "\"";
    }
    return;
  } catch (const std::exception& error) {
    ADD_FAILURE() << "wrong exception type: " << error.what();
    return;
  }
  ADD_FAILURE() << "no exception thrown; expected one mentioning \"" << fragments.at(0) << "\"";
}

// The message of the std::exception `body` throws, or "(no error)".
std::string error_of(const std::function<void()>& body);

// ---------------------------------------------------------------------------------------------
// Inline training data in words of the tiny vocabulary (reference/make_tiny_bert.py), so texts
// tokenize to whole words.

// "text,label" CSV of `rows` rows cycling positive, negative, neutral; `offset` shifts the texts.
std::string tiny_classification_csv(int rows, int offset);
// `lines` lines of text for masked-LM training, a blank line (document break) after every fourth.
std::string tiny_mlm_text(int lines);

// A short training run on the tiny fixtures, its data written into `dir` and its output in dir / out:
// tiny-bert-cls on tiny_classification_csv (20 training rows, 9 evaluation rows), or for task "mlm"
// tiny-bert-mlm on tiny_mlm_text with LAMB and 16 tokens. Dropout on (the configs' 0.1), batches of 3,
// gradient accumulation 2, warmup 2, 8 steps, logging every step, evaluation every 3, seed 7.
train::TrainConfig tiny_train_config(const TempDir& dir, const std::string& task, const std::string& out);

// Sets every parameter of `model` to a draw from N(0, stddev^2), LayerNorm weights to 1 + that: a
// random model of any shape whose activations stay O(1) (std::mt19937 seeded with `seed`).
void fill_random_parameters(BertModel& model, uint32_t seed, float stddev = 0.05f);

// The encoder shape of a random test model (BertConfig's defaults elsewhere).
struct EncoderShape {
  int64_t vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size,
      max_position_embeddings;
};
// A model of that shape with a pooler and `labels` outputs on `head`, its parameters from
// fill_random_parameters(seed).
std::shared_ptr<BertModel> random_bert(const EncoderShape& shape, TaskHead head, int64_t labels, uint32_t seed);

// ---------------------------------------------------------------------------------------------
// Models and corruptions for checkpoint-store tests.

// The classification model in `model_dir` with its classifier weight and bias negated: its logits
// are exactly negated, so two versions of a model are told apart by their outputs.
BertModel negated_classifier(const std::filesystem::path& model_dir);

// XORs byte `offset` of the file at `path` with `mask` (offset < 0 counts from the end: -1 is the
// last byte). The size stays; a checksum does not.
void flip_bits(const std::filesystem::path& path, std::int64_t offset, unsigned char mask);

// The first replica (in failover order) of every shard of `version` corrupt: bit 0x10 of its last
// byte flipped.
void corrupt_first_replicas(const store::CheckpointStore& checkpoint_store, std::uint64_t version);

}  // namespace scalebert::testing
