// Unit tests of the inference server's parts that need no model: the config.pbtxt parser, the
// KServe v2 request/response codec with binary tensor data (plus a bounded fuzz of the request
// parser), and the dynamic batcher's cutting rule.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <random>
#include <thread>

#include "core/error.h"
#include "serve/batcher.h"
#include "serve/model_config.h"
#include "serve/protocol.h"

namespace scalebert::serve {
namespace {

constexpr const char* kFullConfig = R"pb(
# A Triton-style config with every field ScaleBERT reads.
name: "finbert"
backend: "scalebert"
max_batch_size: 32
input [
  { name: "text" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "input_ids", data_type: TYPE_INT64, dims: [ -1 ] }
]
output: [ { name: "logits" data_type: TYPE_FP32 dims: [ -1 ] } ]
output { name: "label" data_type: TYPE_STRING dims: [ 1 ] }
dynamic_batching {
  preferred_batch_size: [ 8, 16 ]
  max_queue_delay_microseconds: 2000
  default_queue_policy { max_queue_size: 64 default_timeout_microseconds: 500000 timeout_action: REJECT }
}
instance_group [ { count: 2 kind: KIND_CPU } ]
version_policy: { specific: { versions: [ 1, 3 ] } }
parameters { key: "task" value: { string_value: "classification" } }
parameters: { key: "threads" value: { string_value: 'one' 'two' } }
)pb";

TEST(ModelConfigParser, ReadsEveryTritonFieldScaleBertUses) {
  const ModelConfig config = parse_model_config(kFullConfig);
  EXPECT_EQ(config.name, "finbert");
  EXPECT_EQ(config.max_batch_size, 32);
  ASSERT_EQ(config.inputs.size(), 2u);
  EXPECT_EQ(config.inputs[0].name, "text");
  EXPECT_EQ(config.inputs[0].data_type, DataType::kBytes);
  EXPECT_EQ(config.inputs[1].dims, std::vector<int64_t>{-1});
  ASSERT_EQ(config.outputs.size(), 2u);
  EXPECT_EQ(config.outputs[1].name, "label");
  ASSERT_TRUE(config.dynamic_batching.has_value());
  EXPECT_EQ(config.dynamic_batching->preferred_batch_size, (std::vector<int64_t>{8, 16}));
  EXPECT_EQ(config.dynamic_batching->max_queue_delay_microseconds, 2000);
  EXPECT_EQ(config.dynamic_batching->max_queue_size, 64);
  EXPECT_EQ(config.dynamic_batching->default_timeout_microseconds, 500000);
  EXPECT_EQ(config.instance_count, 2);
  EXPECT_EQ(config.version_policy.kind, VersionPolicy::Kind::kSpecific);
  EXPECT_EQ(config.version_policy.select({3, 2, 1}), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(config.parameter("task"), "classification");
  EXPECT_EQ(config.parameter("threads"), "onetwo");  // adjacent string literals concatenate
  EXPECT_EQ(config.parameter("absent", "x"), "x");

  // Triton's JSON form: 64-bit integers as strings, 32-bit ones as numbers.
  const nlohmann::json json = config.to_json();
  EXPECT_EQ(json["max_batch_size"], 32);
  EXPECT_EQ(json["input"][1]["dims"][0], "-1");
  EXPECT_EQ(json["input"][0]["data_type"], "TYPE_STRING");
  EXPECT_EQ(json["dynamic_batching"]["max_queue_delay_microseconds"], "2000");
  EXPECT_EQ(json["instance_group"][0]["count"], 2);
  EXPECT_EQ(json["parameters"]["task"]["string_value"], "classification");
}

TEST(ModelConfigParser, VersionPolicies) {
  VersionPolicy latest;
  EXPECT_EQ(latest.select({1, 7, 3}), std::vector<int64_t>{7});
  latest.num_versions = 2;
  EXPECT_EQ(latest.select({1, 7, 3}), (std::vector<int64_t>{3, 7}));
  VersionPolicy all;
  all.kind = VersionPolicy::Kind::kAll;
  EXPECT_EQ(all.select({2, 1}), (std::vector<int64_t>{1, 2}));
  const ModelConfig config = parse_model_config(
      "max_batch_size: 1 input { name: 'text' data_type: TYPE_STRING dims: 1 } "
      "output { name: 'logits' data_type: TYPE_FP32 dims: -1 } version_policy { latest { num_versions: 3 } }");
  EXPECT_EQ(config.version_policy.num_versions, 3);
}

// Every error names the file and line of the offending field.
void expect_config_error(const std::string& text, const std::string& fragment) {
  try {
    parse_model_config(text, "m/config.pbtxt");
    ADD_FAILURE() << "accepted: " << text;
  } catch (const FormatError& error) {
    EXPECT_NE(std::string(error.what()).find(fragment), std::string::npos) << error.what();
  }
}

TEST(ModelConfigParser, RejectsWhatItDoesNotUnderstandNamingTheLine) {
  const std::string io = "input { name: 't' data_type: TYPE_STRING dims: 1 }\noutput { name: 'o' data_type: TYPE_FP32 dims: 1 }\n";
  expect_config_error("max_batch_size: 4\n" + io + "bogus_field: 1\n", "m/config.pbtxt:4: unknown or unsupported field 'bogus_field'");
  expect_config_error("max_batch_size: four\n" + io, "m/config.pbtxt:1: 'max_batch_size' must be an integer");
  expect_config_error("max_batch_size: 4\nname: \"unterminated\n" + io, "m/config.pbtxt:2: unterminated string");
  expect_config_error("max_batch_size: 4\n" + io + "instance_group [ { kind: KIND_GPU } ]", "KIND_GPU is not supported");
  expect_config_error("max_batch_size: 4\n" + io + "dynamic_batching { preferred_batch_size: 8 }", "exceeds max_batch_size");
  expect_config_error(io, "max_batch_size must be set");
  expect_config_error("max_batch_size: 4\ninput { name: 't' data_type: TYPE_WHATEVER }\n", "unknown data_type");
  expect_config_error("max_batch_size: 4\n" + io + "backend: \"onnxruntime\"", "is not served here");
  expect_config_error("max_batch_size: 4\n" + io + "dynamic_batching {", "expected '}'");
  expect_config_error(std::string(40, '{'), "expected a field name");
  std::string deep;
  for (int i = 0; i < 100; ++i) deep += "a { ";
  expect_config_error(deep, "nested more than 32 deep");
}

// ---- Protocol ----

TEST(InferProtocol, ParsesJsonInputsFlatOrNested) {
  const InferRequest request = parse_infer_request(
      R"({"id": "r1", "inputs": [
            {"name": "input_ids", "datatype": "INT64", "shape": [2, 3], "data": [[101, 7, 102], [101, 8, 102]]},
            {"name": "text", "datatype": "BYTES", "shape": [2, 1], "data": ["a", "b"]},
            {"name": "f", "datatype": "FP32", "shape": [2], "data": [0.5, 2]}],
          "outputs": [{"name": "logits", "parameters": {"binary_data": true}}, {"name": "label"}],
          "parameters": {"timeout": 1500}})",
      std::nullopt);
  EXPECT_EQ(request.id, "r1");
  ASSERT_EQ(request.inputs.size(), 3u);
  EXPECT_EQ(request.inputs[0].ints, (std::vector<int64_t>{101, 7, 102, 101, 8, 102}));
  EXPECT_EQ(request.inputs[1].strings, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(request.inputs[2].floats, (std::vector<float>{0.5f, 2.0f}));
  ASSERT_EQ(request.outputs.size(), 2u);
  EXPECT_TRUE(request.outputs[0].binary);
  EXPECT_FALSE(request.outputs[1].binary);
  EXPECT_EQ(request.timeout_microseconds, 1500);
}

TEST(InferProtocol, BinaryTensorDataRoundTrips) {
  InferRequest request;
  WireTensor ids;
  ids.name = "input_ids";
  ids.datatype = DataType::kInt64;
  ids.shape = {1, 4};
  ids.ints = {101, -5, int64_t{1} << 40, 102};
  ids.binary = true;
  WireTensor text;
  text.name = "text";
  text.datatype = DataType::kBytes;
  text.shape = {3};
  text.strings = {"", std::string("a\0b", 3), "\xc3\xa9t\xc3\xa9"};
  text.binary = true;
  WireTensor mask;  // stays JSON, between the two binary inputs
  mask.name = "attention_mask";
  mask.datatype = DataType::kInt64;
  mask.shape = {1, 4};
  mask.ints = {1, 1, 1, 0};
  request.inputs = {ids, mask, text};
  request.binary_output_default = true;
  const EncodedResponse encoded = encode_infer_request(request);
  ASSERT_TRUE(encoded.header_length.has_value());
  // Binary part: 4 int64 + three (4-byte length + bytes) strings.
  EXPECT_EQ(encoded.body.size() - *encoded.header_length, 32u + 4 + 0 + 4 + 3 + 4 + 5);

  const InferRequest parsed = parse_infer_request(encoded.body, encoded.header_length);
  ASSERT_EQ(parsed.inputs.size(), 3u);
  EXPECT_EQ(parsed.inputs[0].ints, ids.ints);
  EXPECT_EQ(parsed.inputs[1].ints, mask.ints);
  EXPECT_EQ(parsed.inputs[2].strings, text.strings);
  EXPECT_TRUE(parsed.binary_output_default);

  // INT32 and FP32 binary inputs decode as little-endian.
  const int32_t values[3] = {7, -1, 65536};
  std::string header = R"({"inputs":[{"name":"x","datatype":"INT32","shape":[3],"parameters":{"binary_data_size":12}}]})";
  std::string body = header + std::string(reinterpret_cast<const char*>(values), 12);
  EXPECT_EQ(parse_infer_request(body, header.size()).inputs[0].ints, (std::vector<int64_t>{7, -1, 65536}));

  // A response with binary and JSON outputs reads back the same.
  InferResponse response;
  response.model_name = "m";
  response.model_version = "2";
  WireTensor logits;
  logits.name = "logits";
  logits.datatype = DataType::kFp32;
  logits.shape = {1, 2};
  logits.floats = {0.25f, -3.5f};
  logits.binary = true;
  WireTensor label;
  label.name = "label";
  label.datatype = DataType::kBytes;
  label.shape = {1, 1};
  label.strings = {"positive"};
  response.outputs = {logits, label};
  const EncodedResponse encoded_response = encode_infer_response(response);
  const InferResponse back = parse_infer_response(encoded_response.body, encoded_response.header_length);
  EXPECT_EQ(back.model_version, "2");
  EXPECT_EQ(back.outputs[0].floats, logits.floats);
  EXPECT_EQ(back.outputs[1].strings, label.strings);
}

void expect_request_error(const std::string& body, const std::string& fragment,
                          std::optional<size_t> header_length = std::nullopt) {
  try {
    parse_infer_request(body, header_length);
    ADD_FAILURE() << "accepted: " << body;
  } catch (const InvalidArgument& error) {
    EXPECT_NE(std::string(error.what()).find(fragment), std::string::npos) << error.what();
  }
}

TEST(InferProtocol, RejectsMalformedRequestsNamingTheProblem) {
  expect_request_error("{\"inputs\": [", "malformed JSON");
  expect_request_error("[]", "must be a JSON object");
  expect_request_error("{}", "no \"inputs\"");
  expect_request_error(R"({"inputs":[{"name":"x","datatype":"INT65","shape":[1],"data":[1]}]})", "unknown datatype \"INT65\"");
  expect_request_error(R"({"inputs":[{"name":"x","datatype":"INT64","shape":[2],"data":[1]}]})", "has 2 elements but \"data\" has 1");
  expect_request_error(R"({"inputs":[{"name":"x","datatype":"INT64","shape":[1],"data":[1.5]}]})", "must be integers");
  expect_request_error(R"({"inputs":[{"name":"x","datatype":"BYTES","shape":[1],"data":[3]}]})", "must be strings");
  expect_request_error(R"({"inputs":[{"name":"x","datatype":"INT64","shape":[-1],"data":[]}]})", "negative dimension");
  expect_request_error(R"({"inputs":[{"name":"x","datatype":"INT64","shape":[4294967296, 4294967296],"data":[]}]})", "shape too large");
  expect_request_error(R"({"inputs":[{"name":"x","datatype":"INT64","shape":[1],"data":[1]},{"name":"x","datatype":"INT64","shape":[1],"data":[1]}]})", "given twice");
  const std::string header = R"({"inputs":[{"name":"x","datatype":"INT64","shape":[2],"parameters":{"binary_data_size":16}}]})";
  expect_request_error(header + std::string(8, '\0'), "exceeds the 8 binary bytes", header.size());
  expect_request_error(header + std::string(20, '\0'), "4 bytes of binary data after", header.size());
  expect_request_error(header, "exceeds the body", header.size() + 1);
  const std::string bytes_header = R"({"inputs":[{"name":"s","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":6}}]})";
  expect_request_error(bytes_header + std::string("\x09\0\0\0ab", 6), "overruns", bytes_header.size());
  expect_request_error(std::string(100000, '[') + std::string(100000, ']'), "");  // deep nesting: an error, no crash
}

// Bounded fuzz: random byte edits of valid bodies (JSON and binary) must give a parsed request or
// an InvalidArgument, nothing else (no other exception, no crash, no hang).
TEST(InferProtocol, FuzzedBodiesFailCleanly) {
  InferRequest seed;
  WireTensor ids;
  ids.name = "input_ids";
  ids.datatype = DataType::kInt64;
  ids.shape = {2, 3};
  ids.ints = {101, 7, 102, 101, 8, 102};
  WireTensor text;
  text.name = "text";
  text.datatype = DataType::kBytes;
  text.shape = {2, 1};
  text.strings = {"apple", "bank"};
  seed.inputs = {ids, text};
  seed.outputs = {{"logits", true}};
  const EncodedResponse json_body = encode_infer_request(seed);
  seed.inputs[0].binary = seed.inputs[1].binary = true;
  const EncodedResponse binary_body = encode_infer_request(seed);

  std::mt19937 random(1234);
  int parsed = 0, rejected = 0;
  for (int iteration = 0; iteration < 4000; ++iteration) {
    const EncodedResponse& base = iteration % 2 ? binary_body : json_body;
    std::string body = base.body;
    std::optional<size_t> header_length = base.header_length;
    const int edits = 1 + static_cast<int>(random() % 4);
    for (int e = 0; e < edits && !body.empty(); ++e) {
      const size_t at = random() % body.size();
      switch (random() % 5) {
        case 0: body[at] = static_cast<char>(random() % 256); break;
        case 1: body.erase(at, 1 + random() % 8); break;
        case 2: body.insert(at, 1, "{}[]\",:0-9e\\"[random() % 12]); break;
        case 3: body.resize(at); break;
        case 4: if (header_length) header_length = *header_length + (random() % 5) - 2; break;
      }
    }
    try {
      parse_infer_request(body, header_length);
      ++parsed;
    } catch (const InvalidArgument&) {
      ++rejected;
    } catch (const std::exception& error) {
      FAIL() << "iteration " << iteration << ": unexpected exception type: " << error.what();
    }
  }
  EXPECT_GT(rejected, 1000);
  EXPECT_GT(parsed, 10);  // some edits keep the body valid (e.g. a digit changed)
}

// ---- Batcher ----

class FakeJob : public BatchJob {
 public:
  explicit FakeJob(int64_t size, int number = 0) : size_(size), id(number) {}
  int64_t batch_size() const override { return size_; }
  int64_t size_;
  int id;
};

std::vector<int> ids_of(const DynamicBatcher::Batch& batch) {
  std::vector<int> ids;
  for (const auto& job : batch.jobs) ids.push_back(static_cast<FakeJob*>(job.get())->id);
  return ids;
}

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

TEST(DynamicBatcher, WithoutDynamicBatchingEveryRequestIsItsOwnBatch) {
  DynamicBatcher batcher({false, 8, {}, std::chrono::microseconds(0), 16});
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(batcher.enqueue(std::make_shared<FakeJob>(2, i)));
  EXPECT_EQ(ids_of(batcher.next_batch()), std::vector<int>{0});
  EXPECT_EQ(ids_of(batcher.next_batch()), std::vector<int>{1});
}

TEST(DynamicBatcher, CutsAtMaxBatchSizeAtOnceTakingRequestsWhole) {
  DynamicBatcher batcher({true, 8, {}, std::chrono::microseconds(10'000'000), 16});
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(batcher.enqueue(std::make_shared<FakeJob>(3, i)));
  const auto start = Clock::now();
  // 3 + 3 fit, the third would make 9 > 8: cut now without waiting the 10 s delay.
  EXPECT_EQ(ids_of(batcher.next_batch()), (std::vector<int>{0, 1}));
  EXPECT_LT(ms_since(start), 1000.0);
}

TEST(DynamicBatcher, CutsAtAPreferredSizeAtOnce) {
  DynamicBatcher batcher({true, 16, {4}, std::chrono::microseconds(10'000'000), 16});
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(batcher.enqueue(std::make_shared<FakeJob>(1, i)));
  const auto start = Clock::now();
  EXPECT_EQ(ids_of(batcher.next_batch()), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_LT(ms_since(start), 1000.0);
}

TEST(DynamicBatcher, WaitsForTheOldestRequestsQueueDelayThenTakesWhatThereIs) {
  DynamicBatcher batcher({true, 16, {8}, std::chrono::microseconds(50'000), 16});
  ASSERT_TRUE(batcher.enqueue(std::make_shared<FakeJob>(1, 0)));
  std::thread late([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    batcher.enqueue(std::make_shared<FakeJob>(2, 1));
  });
  const auto start = Clock::now();
  const auto batch = batcher.next_batch();
  const double waited = ms_since(start);
  late.join();
  EXPECT_EQ(ids_of(batch), (std::vector<int>{0, 1}));  // the late one joined the batch
  EXPECT_GE(waited, 45.0);
  EXPECT_LT(waited, 2000.0);
}

TEST(DynamicBatcher, FullQueueRefusesAndExpiredRequestsComeBackUnrun) {
  DynamicBatcher batcher({true, 4, {}, std::chrono::microseconds(0), 2});
  auto expired = std::make_shared<FakeJob>(1, 0);
  expired->deadline = Clock::now() - std::chrono::milliseconds(1);
  ASSERT_TRUE(batcher.enqueue(expired));
  ASSERT_TRUE(batcher.enqueue(std::make_shared<FakeJob>(1, 1)));
  EXPECT_FALSE(batcher.enqueue(std::make_shared<FakeJob>(1, 2)));  // queue of 2 is full
  const auto batch = batcher.next_batch();
  ASSERT_EQ(batch.expired.size(), 1u);
  EXPECT_EQ(static_cast<FakeJob*>(batch.expired[0].get())->id, 0);
  EXPECT_EQ(ids_of(batch), std::vector<int>{1});
}

TEST(DynamicBatcher, ShutdownDrainsWithoutDelayThenReturnsEmpty) {
  DynamicBatcher batcher({true, 8, {}, std::chrono::microseconds(10'000'000), 8});
  ASSERT_TRUE(batcher.enqueue(std::make_shared<FakeJob>(1, 0)));
  batcher.shutdown();
  EXPECT_FALSE(batcher.enqueue(std::make_shared<FakeJob>(1, 1)));
  const auto start = Clock::now();
  EXPECT_EQ(ids_of(batcher.next_batch()), std::vector<int>{0});
  EXPECT_LT(ms_since(start), 1000.0);
  EXPECT_TRUE(batcher.next_batch().jobs.empty());
}

}  // namespace
}  // namespace scalebert::serve
