// The scalebert binary end to end on the tiny fixtures: every command's exit code, JSON output
// (parsed with nlohmann) and fields, agreement with the in-process pipeline, and the messages and
// exit codes of bad inputs (1: the input or model is wrong, 2: the command line is wrong).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "pipeline/text_pipeline.h"
#include "testing.h"

using namespace scalebert;
namespace fs = std::filesystem;

namespace {

fs::path binary() { return fs::path(SCALEBERT_BINARY_DIR) / "scalebert"; }
using scalebert::testing::fixture_path;

// 'text' for the shell (paths here hold no quotes). Built by appends: GCC 12's -Wrestrict misfires
// on "'" + std::string.
std::string shell_quote(const std::string& text) {
  std::string quoted;
  quoted.reserve(text.size() + 2);
  quoted.push_back('\'');
  quoted.append(text);
  quoted.push_back('\'');
  return quoted;
}

struct Result {
  int code = -1;
  std::string out, err;
};

std::string read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// A scratch folder per test (a testing::TempDir), removed afterwards.
class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(binary())) GTEST_SKIP() << binary() << " is not built: build the scalebert target first";
    SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert"));
  }

  fs::path write(const std::string& name, const std::string& content) { return dir_.write(name, content); }

  // Runs "scalebert <arguments>" (arguments are shell words, quoted by the caller where needed).
  Result run(const std::string& arguments, const std::string& stdin_file = "/dev/null") {
    const fs::path out = dir_ / "stdout.txt", err = dir_ / "stderr.txt";
    std::string command = shell_quote(binary().string());
    command.append(" ").append(arguments).append(" < ").append(shell_quote(stdin_file));
    command.append(" > ").append(shell_quote(out.string())).append(" 2> ").append(shell_quote(err.string()));
    const int status = std::system(command.c_str());
    Result result;
    result.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    result.out = read_all(out);
    result.err = read_all(err);
    return result;
  }

  static std::vector<nlohmann::json> jsonl(const std::string& text) {
    std::vector<nlohmann::json> lines;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) lines.push_back(nlohmann::json::parse(line));  // throws if not JSON
    return lines;
  }

  static std::string quote(const fs::path& path) { return shell_quote(path.string()); }

  const scalebert::testing::TempDir dir_;
};

// Expects exit code `code` and a stderr line "scalebert: error: ..." containing every `needle`.
void expect_error(const Result& result, int code, std::initializer_list<std::string> needles) {
  EXPECT_EQ(result.code, code) << result.err;
  EXPECT_EQ(result.err.rfind("scalebert: error: ", 0), 0u) << result.err;
  for (const std::string& needle : needles) EXPECT_NE(result.err.find(needle), std::string::npos) << result.err;
}

const char* kCsv =
    "text,label\n"
    "net income rose,positive\n"
    "\"the bank, in the quarter,\nfell by 5 million\",negative\n"
    "cash,neutral\n"
    "\"sales rose \"\"strongly\"\"\",positive\n";

}  // namespace

// `serve` runs again with GOMP_SPINCOUNT=20000 (kServingSpinCount) unless the environment sets the
// OpenMP wait: OMP_DISPLAY_ENV=verbose makes GNU OpenMP print its settings as each program image starts.
TEST_F(CliTest, ServeRestartsWithAShortOpenMpSpinUnlessTheEnvironmentSetsOne) {
  const auto saved = [](const char* name) -> std::optional<std::string> {
    const char* value = std::getenv(name);
    return value ? std::optional<std::string>(value) : std::nullopt;
  };
  const std::optional<std::string> spin = saved("GOMP_SPINCOUNT"), policy = saved("OMP_WAIT_POLICY");
  unsetenv("GOMP_SPINCOUNT");
  unsetenv("OMP_WAIT_POLICY");
  setenv("OMP_DISPLAY_ENV", "verbose", 1);
  const auto count = [](const std::string& text, const std::string& needle) {
    size_t found = 0;
    for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++found;
    return found;
  };
  const Result serve = run("serve --help");
  const Result info = run("info --help");
  setenv("GOMP_SPINCOUNT", "1234", 1);
  const Result chosen = run("serve --help");
  unsetenv("OMP_DISPLAY_ENV");
  unsetenv("GOMP_SPINCOUNT");
  if (spin) setenv("GOMP_SPINCOUNT", spin->c_str(), 1);
  if (policy) setenv("OMP_WAIT_POLICY", policy->c_str(), 1);

  EXPECT_EQ(serve.code, 0) << serve.err;
  EXPECT_EQ(serve.out.rfind("usage: scalebert serve", 0), 0u) << serve.out;
  EXPECT_EQ(count(serve.err, "GOMP_SPINCOUNT = '300000'"), 1u) << serve.err;  // the first image: defaults
  EXPECT_EQ(count(serve.err, "GOMP_SPINCOUNT = '20000'"), 1u) << serve.err;   // the restarted one
  EXPECT_EQ(count(info.err, "GOMP_SPINCOUNT = "), 1u) << info.err;            // other commands: no restart
  EXPECT_EQ(chosen.code, 0);
  EXPECT_EQ(count(chosen.err, "GOMP_SPINCOUNT = "), 1u) << chosen.err;  // the user's choice stands
  EXPECT_EQ(count(chosen.err, "GOMP_SPINCOUNT = '1234'"), 1u) << chosen.err;
}

TEST_F(CliTest, EveryCommandHasHelpAndUsageErrorsExitTwo) {
  for (const char* command : {"info", "tokenize", "embed", "classify", "search"}) {
    SCOPED_TRACE(command);
    const Result help = run(std::string(command) + " --help");
    EXPECT_EQ(help.code, 0);
    EXPECT_EQ(help.out.rfind(std::string("usage: scalebert ") + command, 0), 0u) << help.out;
    EXPECT_NE(help.out.find("--threads"), std::string::npos);
    EXPECT_NE(help.out.find("--batch-size"), std::string::npos);
    EXPECT_NE(help.out.find("--max-length"), std::string::npos);
    expect_error(run(std::string(command) + " --no-such-flag x"), 2, {"--no-such-flag"});
  }
  EXPECT_EQ(run("").code, 2);
  expect_error(run("frobnicate"), 2, {"unknown command 'frobnicate'"});
  EXPECT_EQ(run("--help").code, 0);
  expect_error(run("embed --input x.txt"), 2, {"missing required option --model"});
  expect_error(run("info"), 2, {"missing argument MODEL_DIR"});
  expect_error(run("embed --model " + quote(fixture_path("tiny-bert")) + " --input x --batch-size 0"), 2,
               {"--batch-size", "'0'"});
  expect_error(run("embed --model " + quote(fixture_path("tiny-bert")) + " --input x --batch-size=many"), 2,
               {"--batch-size", "'many'"});
  expect_error(run("embed --model " + quote(fixture_path("tiny-bert")) + " --input"), 2, {"--input needs a value"});
}

TEST_F(CliTest, InfoReportsConfigHeadLabelsAndParameters) {
  const Result result = run("info --json " + quote(fixture_path("tiny-bert-cls")));
  ASSERT_EQ(result.code, 0) << result.err;
  const nlohmann::json info = nlohmann::json::parse(result.out);
  EXPECT_EQ(info["head"], "sequence-classification");
  EXPECT_EQ(info["labels"], (std::vector<std::string>{"negative", "neutral", "positive"}));
  EXPECT_EQ(info["hidden_size"], 32);
  EXPECT_EQ(info["num_hidden_layers"], 2);
  EXPECT_EQ(info["vocab_size"], 120);
  EXPECT_EQ(info["tokenizer_vocab_size"], 120);
  // V*C + P*C + TV*C + 2C  +  2 layers x (QKV+O 4(C*C+C), 2 LN 4C, C*I+I, I*C+C)  +  pooler C*C+C  +  3C+3
  //  = 5248 + 2 * 8544 + 1056 + 99
  EXPECT_EQ(info["parameters"], 23491);
  EXPECT_EQ(info["tensors"], 41);
  EXPECT_EQ(info["default_max_length"], 40);

  const Result text = run("info " + quote(fixture_path("tiny-bert-ner")));
  ASSERT_EQ(text.code, 0) << text.err;
  EXPECT_NE(text.out.find("token-classification"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("B-ORG"), std::string::npos) << text.out;
  expect_error(run("info " + quote(dir_ / "missing-model")), 1, {"missing-model"});
}

TEST_F(CliTest, TokenizeWritesIdsTypeIdsTokensAndCodePointOffsets) {
  const fs::path input = write("lines.txt", "net income rose\n\nCafé cash\n");
  const Result result = run("tokenize --model " + quote(fixture_path("tiny-bert")) + " --input " + quote(input));
  ASSERT_EQ(result.code, 0) << result.err;
  const auto lines = jsonl(result.out);
  ASSERT_EQ(lines.size(), 3u);  // the blank line is tokenized too ([CLS] [SEP])
  EXPECT_EQ(lines[0]["ids"], (std::vector<int>{6, 69, 70, 85, 7}));
  EXPECT_EQ(lines[0]["tokens"], (std::vector<std::string>{"[CLS]", "net", "income", "rose", "[SEP]"}));
  EXPECT_EQ(lines[0]["type_ids"], (std::vector<int>{0, 0, 0, 0, 0}));
  EXPECT_EQ(lines[0]["offsets"], nlohmann::json::parse("[[0,0],[0,3],[4,10],[11,15],[0,0]]"));
  EXPECT_EQ(lines[1]["tokens"], (std::vector<std::string>{"[CLS]", "[SEP]"}));
  EXPECT_EQ(lines[2]["line"], 3);
  // "cash" starts at code point 5 (byte 6: é is two bytes).
  EXPECT_EQ(lines[2]["offsets"][2], (std::vector<int>{5, 9}));

  // Pairs from standard input, TAB separated; truncation with --max-length.
  const fs::path pairs = write("pairs.txt", "net income\tcash rose\n");
  const Result pair = run("tokenize --pair --model " + quote(fixture_path("tiny-bert")), pairs.string());
  ASSERT_EQ(pair.code, 0) << pair.err;
  const auto pair_lines = jsonl(pair.out);
  ASSERT_EQ(pair_lines.size(), 1u);
  EXPECT_EQ(pair_lines[0]["type_ids"], (std::vector<int>{0, 0, 0, 0, 1, 1, 1}));
  EXPECT_EQ(pair_lines[0]["offsets"][4], (std::vector<int>{0, 4}));  // "cash" in the second text
  const Result truncated =
      run("tokenize --max-length 4 --model " + quote(fixture_path("tiny-bert")) + " --input " + quote(input));
  ASSERT_EQ(truncated.code, 0) << truncated.err;
  EXPECT_EQ(jsonl(truncated.out)[0]["ids"].size(), 4u);

  expect_error(run("tokenize --pair --model " + quote(fixture_path("tiny-bert")) + " --input " + quote(input)), 1,
               {input.string() + ":1:", "TAB"});
}

TEST_F(CliTest, EmbedCsvMatchesThePipelineInInputOrder) {
  const fs::path input = write("texts.csv", kCsv);
  const fs::path output = dir_ / "embeddings.jsonl";
  const Result result = run("embed --model " + quote(fixture_path("tiny-bert")) + " --input " + quote(input) +
                            " --output " + quote(output) + " --pooling mean --normalize --batch-size 3");
  ASSERT_EQ(result.code, 0) << result.err;
  EXPECT_NE(result.err.find("embedded 4 texts"), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("sentences/s"), std::string::npos) << result.err;
  const auto lines = jsonl(read_all(output));
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[1]["line"], 3);
  EXPECT_EQ(lines[2]["line"], 5);  // the record before spans lines 3 and 4

  auto pipeline = pipeline::TextPipeline::load(fixture_path("tiny-bert"));
  const std::vector<std::string> texts = {"net income rose", "the bank, in the quarter,\nfell by 5 million", "cash",
                                          "sales rose \"strongly\""};
  const Tensor want = pipeline->embed(texts, pipeline::Pooling::kMean, true);
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(lines[i]["index"], i);
    const auto embedding = lines[i]["embedding"].get<std::vector<float>>();
    ASSERT_EQ(embedding.size(), 32u);
    float norm = 0.0f, worst = 0.0f;
    for (size_t c = 0; c < embedding.size(); ++c) {
      norm += embedding[c] * embedding[c];
      worst = std::max(worst, std::fabs(embedding[c] - want.data<float>()[i * 32 + c]));
    }
    EXPECT_NEAR(norm, 1.0f, 1e-5f);
    EXPECT_LE(worst, 1e-5f) << "text " << i;
  }

  // CLS pooling without normalization differs from mean pooling.
  const Result cls = run("embed --model " + quote(fixture_path("tiny-bert")) + " --input " + quote(input) +
                         " --pooling cls");
  ASSERT_EQ(cls.code, 0) << cls.err;
  EXPECT_NE(jsonl(cls.out)[0]["embedding"], lines[0]["embedding"]);
  expect_error(
      run("embed --model " + quote(fixture_path("tiny-bert")) + " --input " + quote(input) + " --pooling max"), 2,
      {"--pooling", "max"});
}

TEST_F(CliTest, ClassifyPrintsLabelsProbabilitiesAndAccuracy) {
  const fs::path input = write("labelled.csv", kCsv);
  const Result result = run("classify --model " + quote(fixture_path("tiny-bert-cls")) + " --input " + quote(input));
  ASSERT_EQ(result.code, 0) << result.err;
  const auto lines = jsonl(result.out);
  ASSERT_EQ(lines.size(), 4u);
  auto pipeline = pipeline::TextPipeline::load(fixture_path("tiny-bert-cls"));
  const std::vector<std::string> texts = {"net income rose", "the bank, in the quarter,\nfell by 5 million", "cash",
                                          "sales rose \"strongly\""};
  const std::vector<std::string> gold = {"positive", "negative", "neutral", "positive"};
  const auto want = pipeline->classify(texts);
  int correct = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto& line = lines[i];
    EXPECT_EQ(line["label"], pipeline->labels()[want[i].label]);
    EXPECT_EQ(line["gold"], gold[i]);
    ASSERT_EQ(line["probabilities"].size(), 3u);
    for (size_t l = 0; l < 3; ++l) {
      EXPECT_NEAR(line["probabilities"][pipeline->labels()[l]].get<float>(), want[i].probabilities[l], 1e-6f);
    }
    correct += line["label"] == gold[i];
  }
  char accuracy[64];
  std::snprintf(accuracy, sizeof accuracy, "accuracy: %.4f (%d of 4 correct)", correct / 4.0, correct);
  EXPECT_NE(result.err.find(accuracy), std::string::npos) << result.err;
  // The confusion matrix: one row per true label, counts that add up to that label's gold examples.
  EXPECT_NE(result.err.find("confusion matrix (rows: true class, columns: predicted class)"), std::string::npos)
      << result.err;
  EXPECT_NE(result.err.find("macro avg"), std::string::npos) << result.err;

  // Text lines with TAB pairs, output to a file.
  const fs::path pairs = write("pairs.txt", "net income\tcash rose\nthe bank\tfell\n");
  const Result pair = run("classify --pair --model " + quote(fixture_path("tiny-bert-cls")) + " --input " +
                          quote(pairs) + " --output " + quote(dir_ / "out.jsonl"));
  ASSERT_EQ(pair.code, 0) << pair.err;
  EXPECT_EQ(jsonl(read_all(dir_ / "out.jsonl")).size(), 2u);
  EXPECT_EQ(pair.err.find("accuracy"), std::string::npos);

  const fs::path bad_gold = write("bad_gold.csv", "text,label\ncash,bullish\n");
  expect_error(run("classify --model " + quote(fixture_path("tiny-bert-cls")) + " --input " + quote(bad_gold)), 1,
               {bad_gold.string() + ":2:", "bullish"});
  expect_error(run("classify --model " + quote(fixture_path("tiny-bert")) + " --input " + quote(input)), 1,
               {"sequence-classification head"});
  expect_error(run("classify --model " + quote(fixture_path("tiny-bert-cls")) + " --input " + quote(input) +
                   " --text-column sentence"),
               1, {"no column \"sentence\""});
}

TEST_F(CliTest, SearchFindsTheIdenticalTextFirst) {
  const fs::path corpus = write("corpus.csv", kCsv);
  const fs::path queries = write("queries.txt", "cash\nsales rose \"strongly\"\n");
  const Result result = run("search --model " + quote(fixture_path("tiny-bert")) + " --corpus " + quote(corpus) +
                            " --queries " + quote(queries) + " --top-k 2 --format jsonl");
  ASSERT_EQ(result.code, 0) << result.err;
  const auto lines = jsonl(result.out);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["query"], "cash");
  ASSERT_EQ(lines[0]["neighbours"].size(), 2u);
  EXPECT_EQ(lines[0]["neighbours"][0]["index"], 2);
  EXPECT_EQ(lines[0]["neighbours"][0]["label"], "neutral");
  EXPECT_NEAR(lines[0]["neighbours"][0]["score"].get<float>(), 1.0f, 1e-5f);
  EXPECT_GE(lines[0]["neighbours"][0]["score"].get<float>(), lines[0]["neighbours"][1]["score"].get<float>());
  EXPECT_EQ(lines[1]["neighbours"][0]["index"], 3);
  EXPECT_EQ(lines[1]["neighbours"][0]["line"], 6);

  const Result text = run("search --model " + quote(fixture_path("tiny-bert")) + " --corpus " + quote(corpus) +
                          " --queries " + quote(queries));
  ASSERT_EQ(text.code, 0) << text.err;
  EXPECT_EQ(text.out.rfind("query 1: cash\n  1. 1.0000  neutral   cash\n", 0), 0u) << text.out;
  expect_error(run("search --model " + quote(fixture_path("tiny-bert")) + " --corpus " + quote(corpus) + " --queries " +
                   quote(queries) + " --format xml"),
               2, {"--format", "xml"});
}

TEST_F(CliTest, BadInputsNameTheFileAndLine) {
  const std::string model = " --model " + quote(fixture_path("tiny-bert"));
  expect_error(run("embed" + model + " --input " + quote(dir_ / "absent.txt")), 1, {"absent.txt", "does not exist"});
  const fs::path empty = write("empty.txt", "");
  expect_error(run("embed" + model + " --input " + quote(empty)), 1, {empty.string() + ": empty input file"});
  const fs::path blank = write("blank.txt", "\n  \n");
  expect_error(run("embed" + model + " --input " + quote(blank)), 1, {"no input lines"});
  const fs::path bad_utf8 = write("bad.txt", "fine\nbroken \xC3\x28 text\n");
  expect_error(run("embed" + model + " --input " + quote(bad_utf8)), 1, {bad_utf8.string() + ":2:", "invalid UTF-8"});
  const fs::path open_quote = write("open.csv", "text,label\n\"never closed,1\n");
  expect_error(run("embed" + model + " --input " + quote(open_quote)), 1,
               {open_quote.string() + ":2:", "unterminated quoted field"});
  const fs::path ragged = write("ragged.csv", "text,label\na,1\nb,2,3\n");
  expect_error(run("classify --model " + quote(fixture_path("tiny-bert-cls")) + " --input " + quote(ragged)), 1,
               {ragged.string() + ":3:", "expected 2 fields"});
  expect_error(run("embed --model " + quote(dir_ / "no-model") + " --input " + quote(write("ok0.txt", "cash\n"))), 1,
               {"no-model"});
  expect_error(run("embed" + model + " --input " + quote(write("ok.txt", "cash\n")) + " --max-length 100"), 1,
               {"max length 100", "40 position embeddings"});
  expect_error(run("embed" + model + " --input " + quote(write("ok2.txt", "cash\n")) + " --output " +
                   quote(dir_ / "no-dir" / "out.jsonl")),
               1, {"cannot open output file", "no-dir"});
}

TEST_F(CliTest, ForcedProgressBarShowsCountRateAndEnd) {
  std::string lines;
  for (int i = 0; i < 20; ++i) lines += "net income rose by " + std::to_string(i) + "\n";
  const fs::path input = write("many.txt", lines);
  const Result result = run("embed --progress --batch-size 4" + std::string(" --model ") +
                            quote(fixture_path("tiny-bert")) + " --input " + quote(input) + " --output " +
                            quote(dir_ / "e.jsonl"));
  ASSERT_EQ(result.code, 0) << result.err;
  EXPECT_NE(result.err.find("embed ["), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("20/20 100%"), std::string::npos) << result.err;
  // Without --progress and with stderr not a terminal, no bar.
  const Result quiet = run("embed --model " + quote(fixture_path("tiny-bert")) + " --input " + quote(input) +
                           " --output " + quote(dir_ / "e.jsonl"));
  EXPECT_EQ(quiet.err.find("embed ["), std::string::npos) << quiet.err;
}
