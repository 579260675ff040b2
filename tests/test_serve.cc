// End-to-end tests of the inference server: a repository of the tiny fixture models served
// in-process on an ephemeral loopback port, driven by a small HTTP client. Outputs are checked
// against transformers' outputs (reference.safetensors, for token tensors) and against
// pipeline::TextPipeline (for text, itself checked against transformers elsewhere). Every loop is
// bounded and every client call has a timeout.
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <fstream>
#include <future>
#include <spawn.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include "io/safetensors.h"
#include "pipeline/text_pipeline.h"
#include "serve/server.h"
#include "serve_testing.h"
#include "testing.h"

extern char** environ;

namespace scalebert::serve {
namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;

using testing::fixture_path;
using testing::kTokenInputs;
using testing::ServedModel;
using testing::TempDir;

std::vector<ServedModel> served_models() {
  const std::string text = testing::kTextInput;
  return {
      {"cls", "tiny-bert-cls",
       "backend: \"scalebert\"\n" +
           testing::classification_config(text + R"(, { name: "text_pair" data_type: TYPE_STRING dims: [ 1 ] },)" +
                                          kTokenInputs)},
      {"emb", "tiny-bert",
       "max_batch_size: 4\ninput [ " + text + "," + kTokenInputs + R"( ]
output [ { name: "embeddings" data_type: TYPE_FP32 dims: [ -1 ] },
         { name: "last_hidden_state" data_type: TYPE_FP32 dims: [ -1, -1 ] },
         { name: "pooler_output" data_type: TYPE_FP32 dims: [ -1 ] } ]
parameters { key: "task" value: { string_value: "embeddings" } }
parameters { key: "pooling" value: { string_value: "mean" } })"},
      // The same encoder, [CLS] pooling: batches asking for no last_hidden_state run the last layer
      // on the [CLS] rows only.
      {"emb_cls", "tiny-bert",
       "max_batch_size: 4\ninput [ " + text + "," + kTokenInputs + R"( ]
output [ { name: "embeddings" data_type: TYPE_FP32 dims: [ -1 ] },
         { name: "last_hidden_state" data_type: TYPE_FP32 dims: [ -1, -1 ] } ]
parameters { key: "task" value: { string_value: "embeddings" } }
parameters { key: "pooling" value: { string_value: "cls" } })"},
      {"ner", "tiny-bert-ner",
       "max_batch_size: 4\ninput [ " + text + "," + kTokenInputs + R"( ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ -1, 5 ] },
         { name: "label_ids" data_type: TYPE_INT64 dims: [ -1 ] },
         { name: "entities" data_type: TYPE_STRING dims: [ 1 ] } ]
dynamic_batching { }
parameters { key: "task" value: { string_value: "ner" } })"},
      {"qa", "tiny-bert-qa",
       R"(max_batch_size: 4
input [ { name: "question" data_type: TYPE_STRING dims: [ 1 ] }, { name: "context" data_type: TYPE_STRING dims: [ 1 ] },)" +
           std::string(kTokenInputs) + R"( ]
output [ { name: "start_logits" data_type: TYPE_FP32 dims: [ -1 ] }, { name: "end_logits" data_type: TYPE_FP32 dims: [ -1 ] },
         { name: "answer" data_type: TYPE_STRING dims: [ 1 ] }, { name: "answer_start" data_type: TYPE_INT64 dims: [ 1 ] },
         { name: "answer_end" data_type: TYPE_INT64 dims: [ 1 ] }, { name: "score" data_type: TYPE_FP32 dims: [ 1 ] } ]
parameters { key: "task" value: { string_value: "qa" } }
parameters { key: "doc_stride" value: { string_value: "4" } }
parameters { key: "max_sequence_length" value: { string_value: "16" } })"},
      // One instance that waits 300 ms for a batch, a queue of one, no truncation past 8 tokens.
      {"slow", "tiny-bert-cls",
       "max_batch_size: 8\ninput [ " + text + R"( ]
output [ { name: "label" data_type: TYPE_STRING dims: [ 1 ] } ]
dynamic_batching { max_queue_delay_microseconds: 300000 default_queue_policy { max_queue_size: 1 } }
parameters { key: "task" value: { string_value: "classification" } }
parameters { key: "truncation" value: { string_value: "false" } }
parameters { key: "max_sequence_length" value: { string_value: "8" } })"},
  };
}

// The served models (version folders are symlinks to the fixtures) in `root`, and a model whose
// only version folder holds no model: reported UNAVAILABLE with the reason.
// A model that fails to load (its version folder is empty), beside the served ones.
void write_broken_model(const fs::path& root) {
  fs::create_directories(root / "broken" / "1");
  std::ofstream(root / "broken" / "config.pbtxt")
      << "max_batch_size: 1 input { name: 'text' data_type: TYPE_STRING dims: 1 } "
         "output { name: 'embeddings' data_type: TYPE_FP32 dims: -1 }";
}

// The suite's whole repository: the served models and the broken one.
void write_repository(const fs::path& root) {
  testing::write_model_repository(root, served_models());
  write_broken_model(root);
}

struct Reply {
  int status = 0;  // 0: no response (connection closed or timed out)
  std::string body;
  httplib::Headers headers;
  Json json() const { return Json::parse(body, nullptr, false); }
};

class Client {
 public:
  explicit Client(int port) : client_("127.0.0.1", port) {
    client_.set_connection_timeout(5);
    client_.set_read_timeout(20);
    client_.set_write_timeout(5);
    client_.set_tcp_nodelay(true);
  }
  Reply get(const std::string& path) { return wrap(client_.Get(path)); }
  Reply post(const std::string& path, const std::string& body, httplib::Headers headers = {},
             const std::string& type = "application/json") {
    return wrap(client_.Post(path, headers, body, type));
  }
  // A KServe v2 request (binary inputs as marked); the reply decoded.
  InferResponse infer(const std::string& model, const InferRequest& request, int expect_status = 200) {
    const EncodedResponse encoded = encode_infer_request(request);
    httplib::Headers headers;
    if (encoded.header_length) headers.emplace("Inference-Header-Content-Length", std::to_string(*encoded.header_length));
    const Reply reply = post("/v2/models/" + model + "/infer", encoded.body, headers,
                             encoded.header_length ? "application/octet-stream" : "application/json");
    EXPECT_EQ(reply.status, expect_status) << reply.body;
    if (reply.status != 200) return {};
    std::optional<size_t> length;
    const auto found = reply.headers.find("Inference-Header-Content-Length");
    if (found != reply.headers.end()) length = std::stoul(found->second);
    return parse_infer_response(reply.body, length);
  }

 private:
  static Reply wrap(const httplib::Result& result) {
    Reply reply;
    if (!result) return reply;
    reply.status = result->status;
    reply.body = result->body;
    reply.headers = result->headers;
    return reply;
  }
  httplib::Client client_;
};

WireTensor int64_input(const std::string& name, const Tensor& values, bool binary) {
  WireTensor tensor;
  tensor.name = name;
  tensor.datatype = DataType::kInt64;
  tensor.shape = values.shape();
  tensor.ints.assign(values.data<int64_t>(), values.data<int64_t>() + values.numel());
  tensor.binary = binary;
  return tensor;
}

WireTensor text_input(const std::string& name, std::vector<std::string> texts, bool binary = false) {
  WireTensor tensor;
  tensor.name = name;
  tensor.datatype = DataType::kBytes;
  tensor.shape = {static_cast<int64_t>(texts.size()), 1};
  tensor.strings = std::move(texts);
  tensor.binary = binary;
  return tensor;
}

const WireTensor& output(const InferResponse& response, const std::string& name) {
  for (const WireTensor& tensor : response.outputs) {
    if (tensor.name == name) return tensor;
  }
  throw InvalidArgument("response has no output " + name);
}

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ServerOptions options;
    options.http_port = 0;
    options.metrics_port = 0;
    options.max_body_bytes = 1 << 20;
    options.http_threads = 32;
    options.read_timeout = std::chrono::milliseconds(500);
    suite_.start(served_models(), options, write_broken_model);
  }
  static void TearDownTestSuite() { suite_.stop(); }
  void SetUp() override {
    SCALEBERT_REQUIRE_REFERENCES(served_models());
    ASSERT_NE(suite_.server(), nullptr) << "the suite's server did not start";
  }
  static int port() { return suite_.server()->http_port(); }

  static testing::SuiteServer suite_;
};
testing::SuiteServer ServerTest::suite_;

TEST_F(ServerTest, HealthMetadataConfigAndRepositoryIndex) {
  Client client(port());
  EXPECT_EQ(client.get("/v2/health/live").status, 200);
  // Strict readiness: the broken model keeps the server from reporting ready.
  EXPECT_EQ(client.get("/v2/health/ready").status, 503);
  EXPECT_EQ(client.get("/v2").json()["extensions"].size(), 5u);
  const Json metadata = client.get("/v2/models/cls").json();
  EXPECT_EQ(metadata["name"], "cls");
  EXPECT_EQ(metadata["versions"], Json::array({"1"}));
  EXPECT_EQ(metadata["inputs"][0], Json({{"name", "text"}, {"datatype", "BYTES"}, {"shape", {-1, 1}}}));
  EXPECT_EQ(client.get("/v2/models/cls/versions/1/ready").status, 200);
  EXPECT_EQ(client.get("/v2/models/cls/versions/2/ready").status, 400);
  EXPECT_EQ(client.get("/v2/models/cls/versions/2").status, 404);
  const Json config = client.get("/v2/models/cls/config").json();
  EXPECT_EQ(config["max_batch_size"], 8);
  EXPECT_EQ(config["instance_group"][0]["count"], 2);

  const Json index = client.post("/v2/repository/index", "{}").json();
  ASSERT_TRUE(index.is_array());
  bool broken_reported = false;
  for (const Json& item : index) {
    if (item["name"] == "broken") {
      broken_reported = true;
      EXPECT_EQ(item["state"], "UNAVAILABLE");
      EXPECT_NE(item["reason"].get<std::string>().find("version 1: cannot open vocabulary file"), std::string::npos)
          << item.dump();
    } else {
      EXPECT_EQ(item["state"], "READY") << item.dump();
    }
  }
  EXPECT_TRUE(broken_reported);
  // A second server cannot take a port in use (no SO_REUSEPORT sharing).
  ServerOptions clash;
  clash.model_repository = suite_.repository();
  clash.http_port = port();
  clash.metrics_port = -1;
  InferenceServer second(clash);
  EXPECT_THROW(second.start(), IoError);

  const Reply unavailable = client.post("/v2/models/broken/infer", R"({"inputs":[]})");
  EXPECT_EQ(unavailable.status, 503);
  EXPECT_TRUE(unavailable.json().contains("error"));
}

// Token tensors in, transformers' outputs out, JSON and binary encodings alike.
TEST_F(ServerTest, TokenTensorsMatchTransformersInJsonAndBinary) {
  Client client(port());
  struct Case {
    std::string model, fixture;
    std::vector<std::string> outputs;
  };
  const std::vector<Case> cases = {{"cls", "tiny-bert-cls", {"logits"}},
                                   {"ner", "tiny-bert-ner", {"logits"}},
                                   {"qa", "tiny-bert-qa", {"start_logits", "end_logits"}},
                                   {"emb", "tiny-bert", {"last_hidden_state", "pooler_output"}}};
  for (const Case& test : cases) {
    SCOPED_TRACE(test.model);
    const auto reference = SafetensorsFile::open(fixture_path(test.fixture) / "reference.safetensors");
    const Tensor mask = reference.tensor("attention_mask");  // (B, T)
    const int64_t B = mask.shape()[0], T = mask.shape()[1];
    std::vector<InferResponse> responses;
    for (bool binary : {false, true}) {
      InferRequest request;
      for (const char* name : {"input_ids", "attention_mask", "token_type_ids"}) {
        request.inputs.push_back(int64_input(name, reference.tensor(name), binary));
      }
      for (const std::string& name : test.outputs) request.outputs.push_back({name, binary});
      responses.push_back(client.infer(test.model, request));
    }
    for (const std::string& name : test.outputs) {
      const WireTensor& got = output(responses[0], name);
      EXPECT_EQ(got.floats, output(responses[1], name).floats) << name << ": JSON and binary differ";
      const Tensor expected = reference.tensor(name == "logits" && test.model == "cls" ? "logits" : name);
      ASSERT_EQ(got.shape, expected.shape()) << name;
      const int64_t width = expected.numel() / (B * (expected.rank() >= 2 && expected.shape()[1] == T ? T : 1));
      const bool per_token = expected.rank() >= 2 && expected.shape()[1] == T;
      float worst = 0.0f;
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t t = 0; t < (per_token ? T : 1); ++t) {
          if (per_token && mask.data<int64_t>()[b * T + t] == 0) continue;  // no output at dropped tokens
          for (int64_t w = 0; w < width; ++w) {
            const int64_t at = (b * (per_token ? T : 1) + t) * width + w;
            worst = std::max(worst, std::fabs(got.floats[at] - expected.data<float>()[at]));
          }
        }
      }
      EXPECT_LT(worst, 1e-4f) << name;
    }
  }
}

// Text in: the server's answers equal TextPipeline's on the same folder.
TEST_F(ServerTest, TextInputsMatchTheTextPipeline) {
  Client client(port());
  const std::vector<std::string> texts = {"bank shares rose", "net income fell in the quarter, eur 5 million loss",
                                          "stock", "revenue growth and cash; debt is rising"};
  {
    auto pipeline = pipeline::TextPipeline::load(fixture_path("tiny-bert-cls"));
    const auto expected = pipeline->classify(texts);
    InferRequest request;
    request.inputs.push_back(text_input("text", texts, /*binary=*/true));
    const InferResponse response = client.infer("cls", request);
    const WireTensor& probabilities = output(response, "probabilities");
    ASSERT_EQ(probabilities.shape, (std::vector<int64_t>{4, 3}));
    for (size_t i = 0; i < texts.size(); ++i) {
      for (size_t j = 0; j < 3; ++j) EXPECT_NEAR(probabilities.floats[i * 3 + j], expected[i].probabilities[j], 1e-5f);
      EXPECT_EQ(output(response, "label").strings[i], pipeline->labels()[expected[i].label]);
      EXPECT_EQ(output(response, "label_id").ints[i], expected[i].label);
    }
    // Pairs.
    std::vector<std::pair<std::string, std::string>> pairs = {{texts[0], texts[1]}, {texts[2], texts[3]}};
    const auto expected_pairs = pipeline->classify_pairs(pairs);
    InferRequest pair_request;
    pair_request.inputs = {text_input("text", {texts[0], texts[2]}), text_input("text_pair", {texts[1], texts[3]})};
    const InferResponse pair_response = client.infer("cls", pair_request);
    for (size_t i = 0; i < 2; ++i) {
      for (size_t j = 0; j < 3; ++j) {
        EXPECT_NEAR(output(pair_response, "probabilities").floats[i * 3 + j], expected_pairs[i].probabilities[j], 1e-5f);
      }
    }
  }
  {
    auto pipeline = pipeline::TextPipeline::load(fixture_path("tiny-bert"));
    const Tensor expected = pipeline->embed(texts, pipeline::Pooling::kMean, false);  // (4, C)
    InferRequest request;
    request.inputs.push_back(text_input("text", texts));
    request.outputs.push_back({"embeddings", true});
    const InferResponse response = client.infer("emb", request);
    const WireTensor& embeddings = output(response, "embeddings");
    ASSERT_EQ(embeddings.shape, expected.shape());
    for (int64_t i = 0; i < expected.numel(); ++i) EXPECT_NEAR(embeddings.floats[i], expected.data<float>()[i], 1e-5f);
  }
  {
    // [CLS] pooling: the [CLS]-row run (embeddings alone) equals the pipeline's and, bit for bit,
    // a run that computes every row because the request also asks for last_hidden_state.
    auto pipeline = pipeline::TextPipeline::load(fixture_path("tiny-bert"));
    const Tensor expected = pipeline->embed(texts, pipeline::Pooling::kCls, false);  // (4, C)
    InferRequest cls_rows, every_row;
    cls_rows.inputs.push_back(text_input("text", texts));
    cls_rows.outputs.push_back({"embeddings", true});
    every_row.inputs.push_back(text_input("text", texts));
    every_row.outputs = {{"embeddings", true}, {"last_hidden_state", true}};
    const WireTensor cls = output(client.infer("emb_cls", cls_rows), "embeddings");
    const InferResponse full = client.infer("emb_cls", every_row);
    ASSERT_EQ(cls.shape, expected.shape());
    for (int64_t i = 0; i < expected.numel(); ++i) EXPECT_NEAR(cls.floats[i], expected.data<float>()[i], 1e-5f);
    EXPECT_EQ(cls.floats, output(full, "embeddings").floats);
    const WireTensor& hidden = output(full, "last_hidden_state");  // (4, T, C): row 0 is [CLS]
    const int64_t C = expected.dim(1), T = hidden.shape[1];
    for (int64_t b = 0; b < expected.dim(0); ++b) {
      for (int64_t c = 0; c < C; ++c) EXPECT_EQ(hidden.floats[(b * T) * C + c], cls.floats[b * C + c]);
    }
  }
  {
    auto pipeline = pipeline::TextPipeline::load(fixture_path("tiny-bert-ner"));
    const auto expected = pipeline->token_classify(texts);
    InferRequest request;
    request.inputs.push_back(text_input("text", texts));
    const InferResponse response = client.infer("ner", request);
    const WireTensor& entities = output(response, "entities");
    for (size_t i = 0; i < texts.size(); ++i) {
      const Json got = Json::parse(entities.strings[i]);
      ASSERT_EQ(got.size(), expected[i].entities.size()) << entities.strings[i];
      for (size_t e = 0; e < got.size(); ++e) {
        EXPECT_EQ(got[e]["type"], expected[i].entities[e].type);
        EXPECT_EQ(got[e]["text"], expected[i].entities[e].text);
        EXPECT_EQ(got[e]["start"], expected[i].entities[e].chars.begin);
        EXPECT_EQ(got[e]["end"], expected[i].entities[e].chars.end);
      }
    }
  }
  {
    pipeline::PipelineOptions options;
    options.max_length = 16;
    auto pipeline = pipeline::TextPipeline::load(fixture_path("tiny-bert-qa"), options);
    // Contexts longer than one 16-token window: the answer comes from the best doc-stride window.
    const std::vector<std::pair<std::string, std::string>> pairs = {
        {"what rose?", "bank shares rose in the quarter while net income fell and debt is rising, eur 5 million"},
        {"how much cash?", "cash of usd 9 million"}};
    const auto expected = pipeline->answer(pairs, 30, 4);
    InferRequest request;
    request.inputs = {text_input("question", {pairs[0].first, pairs[1].first}),
                      text_input("context", {pairs[0].second, pairs[1].second}, true)};
    const InferResponse response = client.infer("qa", request);
    for (size_t i = 0; i < pairs.size(); ++i) {
      EXPECT_EQ(output(response, "answer").strings[i], expected[i].text);
      EXPECT_EQ(output(response, "answer_start").ints[i], expected[i].chars.begin);
      EXPECT_EQ(output(response, "answer_end").ints[i], expected[i].chars.end);
      EXPECT_NEAR(output(response, "score").floats[i], expected[i].score, 1e-6f);
    }
  }
}

TEST_F(ServerTest, BadInputIsA4xxWithAnErrorAndTheServerKeepsServing) {
  Client client(port());
  auto expect_error = [&](const Reply& reply, int status, const std::string& fragment) {
    EXPECT_EQ(reply.status, status) << reply.body;
    const Json json = reply.json();
    ASSERT_TRUE(json.is_object() && json.contains("error")) << reply.body;
    EXPECT_NE(json["error"].get<std::string>().find(fragment), std::string::npos) << reply.body;
  };
  const std::string text_request = R"({"inputs":[{"name":"text","datatype":"BYTES","shape":[1,1],"data":["bank"]}]})";
  expect_error(client.post("/v2/models/cls/infer", "{\"inputs\": [}"), 400, "malformed JSON");
  expect_error(client.post("/v2/models/nope/infer", text_request), 404, "unknown model 'nope'");
  expect_error(client.post("/v2/models/cls/versions/7/infer", text_request), 404, "no version 7");
  expect_error(client.post("/v2/models/cls/infer",
                           R"({"inputs":[{"name":"text","datatype":"INT64","shape":[1,1],"data":[3]}]})"),
               400, "datatype INT64, the model takes BYTES");
  expect_error(client.post("/v2/models/cls/infer",
                           R"({"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"data":["a"]}]})"),
               400, "shape has 1 dimensions");
  expect_error(client.post("/v2/models/cls/infer",
                           R"({"inputs":[{"name":"text","datatype":"BYTES","shape":[9,1],"data":["a","a","a","a","a","a","a","a","a"]}]})"),
               400, "batch of 9 outside 1..8");
  expect_error(client.post("/v2/models/cls/infer",
                           R"({"inputs":[{"name":"input_ids","datatype":"INT64","shape":[1,3],"data":[6,999,7]}]})"),
               400, "outside the vocabulary");
  expect_error(client.post("/v2/models/cls/infer",
                           R"({"inputs":[{"name":"input_ids","datatype":"INT64","shape":[1,2],"data":[6,7]},
                               {"name":"attention_mask","datatype":"INT64","shape":[1,2],"data":[0,0]}]})"),
               400, "keeps no token");
  expect_error(client.post("/v2/models/cls/infer",
                           R"({"inputs":[{"name":"text","datatype":"BYTES","shape":[1,1],"data":["a"]}],"outputs":[{"name":"nope"}]})"),
               400, "unknown output 'nope'");
  expect_error(client.post("/v2/models/cls/infer", text_request, {{"Inference-Header-Content-Length", "zz"}}), 400,
               "not a number");
  // Invalid UTF-8 can only arrive as binary data (JSON strings are checked by the JSON parser).
  InferRequest bad_utf8;
  bad_utf8.inputs.push_back(text_input("text", {"ok", "caf\xc3"}, true));
  const EncodedResponse encoded = encode_infer_request(bad_utf8);
  expect_error(client.post("/v2/models/cls/infer", encoded.body,
                           {{"Inference-Header-Content-Length", std::to_string(*encoded.header_length)}}),
               400, "row 1: text is not valid UTF-8");
  expect_error(client.post("/v2/models/cls/infer", "{\"inputs\":[{\"name\":\"text\",\"datatype\":\"BYTES\",\"shape\":[1,1],\"data\":[\"caf\xc3\"]}]}"),
               400, "malformed JSON");
  // Over max_sequence_length with truncation off: 400; with truncation on (cls): truncated, 200.
  const std::string long_text = R"({"inputs":[{"name":"text","datatype":"BYTES","shape":[1,1],"data":["bank shares rose and net income fell in the quarter"]}]})";
  expect_error(client.post("/v2/models/slow/infer", long_text), 400, "longer than max_sequence_length 8");
  EXPECT_EQ(client.post("/v2/models/cls/infer", R"({"inputs":[{"name":"text","datatype":"BYTES","shape":[1,1],"data":[")" +
                                                    std::string(3000, 'a') + " " + R"("]}]})").status, 200);
  // A body over the 1 MiB limit.
  expect_error(client.post("/v2/models/cls/infer", std::string((1 << 20) + 10, ' ')), 413, "too large");
  expect_error(client.get("/v2/nothing/here"), 404, "no such endpoint");

  // A client that sends its headers and part of its body, then stalls past the read timeout:
  // cut off (a 400 or a closed connection), while other clients are served meanwhile.
  {
    httplib::Client healthy("127.0.0.1", port());
    std::thread slow([&] {
      const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in address{};
      address.sin_family = AF_INET;
      address.sin_port = htons(static_cast<uint16_t>(port()));
      address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
      const std::string partial = "POST /v2/models/cls/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"inp";
      ASSERT_EQ(::send(fd, partial.data(), partial.size(), 0), static_cast<ssize_t>(partial.size()));
      timeval timeout{5, 0};
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
      char buffer[512];
      const auto start = std::chrono::steady_clock::now();
      const ssize_t got = ::recv(fd, buffer, sizeof(buffer) - 1, 0);  // waits for the server's verdict
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      EXPECT_LT(waited, 4.0) << "the server kept a stalled client for " << waited << " s";
      if (got > 0) {
        EXPECT_EQ(std::string(buffer, static_cast<size_t>(got)).substr(0, 12), "HTTP/1.1 400");
      }
      ::close(fd);
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(healthy.Get("/v2/health/live")->status, 200);
    slow.join();
  }
  EXPECT_EQ(client.post("/v2/models/cls/infer", text_request).status, 200);
}

TEST_F(ServerTest, ConcurrentClientsGetTheirOwnAnswersAndMetricsCountThem) {
  Client probe(port());
  const std::vector<std::string> texts = {"bank shares rose", "net income fell", "cash", "debt is rising in the year",
                                          "profit", "eur 5 million loss"};
  // Each text alone first: the answers every batched request must reproduce.
  std::vector<std::vector<float>> expected;
  for (const std::string& text : texts) {
    InferRequest request;
    request.inputs.push_back(text_input("text", {text}));
    request.outputs.push_back({"probabilities", false});
    expected.push_back(output(probe.infer("cls", request), "probabilities").floats);
  }
  const Json before = probe.get("/v2/models/cls/stats").json()["model_stats"][0];

  constexpr int kClients = 8, kRequests = 12;
  std::atomic<int> mismatches{0}, failures{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      Client client(port());
      for (int r = 0; r < kRequests; ++r) {
        const size_t pick = static_cast<size_t>(c * 7 + r) % texts.size();
        InferRequest request;
        request.inputs.push_back(text_input("text", {texts[pick]}, r % 2 == 0));
        request.outputs.push_back({"probabilities", r % 3 == 0});
        const InferResponse response = client.infer("cls", request);
        if (response.outputs.empty()) {
          ++failures;
          continue;
        }
        const auto& got = output(response, "probabilities").floats;
        for (size_t j = 0; j < got.size(); ++j) {
          if (std::fabs(got[j] - expected[pick][j]) > 1e-5f) ++mismatches;
        }
      }
    });
  }
  for (std::thread& client : clients) client.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);

  const Json after = probe.get("/v2/models/cls/stats").json()["model_stats"][0];
  const uint64_t done = after["inference_stats"]["success"]["count"].get<uint64_t>() -
                        before["inference_stats"]["success"]["count"].get<uint64_t>();
  EXPECT_EQ(done, static_cast<uint64_t>(kClients * kRequests));
  const uint64_t executions = after["execution_count"].get<uint64_t>() - before["execution_count"].get<uint64_t>();
  EXPECT_LT(executions, done) << "concurrent requests were never batched together";
  bool batched = false;
  for (const Json& stat : after["batch_stats"]) batched |= stat["batch_size"].get<int64_t>() > 1;
  EXPECT_TRUE(batched);

  // Prometheus text with Triton's names, counting the same requests.
  httplib::Client metrics("127.0.0.1", suite_.server()->metrics_port());
  metrics.set_read_timeout(5);
  const auto result = metrics.Get("/metrics");
  ASSERT_TRUE(result);
  const std::string& text = result->body;
  for (const char* name : {"nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
                           "nv_inference_exec_count", "nv_inference_request_duration_us",
                           "nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us",
                           "nv_inference_request_latency_us_bucket"}) {
    EXPECT_NE(text.find(std::string("\n") + name + "{model=\"cls\",version=\"1\""), std::string::npos) << name;
  }
  const std::string success_line = "nv_inference_request_success{model=\"cls\",version=\"1\"} ";
  const size_t at = text.find(success_line);
  ASSERT_NE(at, std::string::npos);
  EXPECT_EQ(std::stoull(text.substr(at + success_line.size())), after["inference_stats"]["success"]["count"].get<uint64_t>());
}

TEST_F(ServerTest, FullQueueIs503AndQueueTimeoutIs503) {
  Client client(port());
  const std::string request = R"({"inputs":[{"name":"text","datatype":"BYTES","shape":[1,1],"data":["bank"]}]})";
  // "slow" waits 300 ms for a batch with a queue of one: a second request meanwhile is refused.
  auto first = std::async(std::launch::async, [&] { return Client(port()).post("/v2/models/slow/infer", request); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const Reply refused = client.post("/v2/models/slow/infer", request);
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_NE(refused.body.find("queue full"), std::string::npos) << refused.body;
  EXPECT_EQ(first.get().status, 200);
  // A 50 ms timeout expires in the 300 ms queue delay.
  const Reply expired = client.post(
      "/v2/models/slow/infer",
      R"({"inputs":[{"name":"text","datatype":"BYTES","shape":[1,1],"data":["bank"]}],"parameters":{"timeout":50000}})");
  EXPECT_EQ(expired.status, 503) << expired.body;
  EXPECT_NE(expired.body.find("timed out"), std::string::npos) << expired.body;
}

TEST_F(ServerTest, ReloadAndUnloadNeverDropRequestsInFlight) {
  std::atomic<bool> done{false};
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&] {
      Client client(port());
      const std::string request = R"({"inputs":[{"name":"text","datatype":"BYTES","shape":[1,1],"data":["bank shares rose"]}]})";
      for (int r = 0; r < 200 && !done.load(); ++r) {
        const Reply reply = client.post("/v2/models/cls/infer", request);
        (reply.status == 200 ? ok : failed)++;
      }
    });
  }
  Client admin(port());
  for (int i = 0; i < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const Reply reply = admin.post("/v2/repository/models/cls/load", "");
    EXPECT_EQ(reply.status, 200) << reply.body;
  }
  done.store(true);
  for (std::thread& client : clients) client.join();
  EXPECT_GT(ok.load(), 0);
  EXPECT_EQ(failed.load(), 0) << "requests failed while the model was reloaded";

  // Unload: the model is gone (503 not ready), load brings it back.
  EXPECT_EQ(admin.post("/v2/repository/models/emb/unload", "").status, 200);
  EXPECT_EQ(admin.get("/v2/models/emb/ready").status, 400);
  EXPECT_EQ(admin.post("/v2/models/emb/infer", R"({"inputs":[{"name":"text","datatype":"BYTES","shape":[1,1],"data":["a"]}]})").status, 503);
  EXPECT_EQ(admin.post("/v2/repository/models/emb/load", "").status, 200);
  EXPECT_EQ(admin.get("/v2/models/emb/ready").status, 200);
  EXPECT_EQ(admin.post("/v2/repository/models/nothing/load", "").status, 404);
}

// stop() drains: requests queued when it is called still get their answers.
TEST(ServerLifecycle, StopDrainsQueuedRequests) {
  SCALEBERT_REQUIRE_REFERENCES(served_models());
  ServerOptions options;
  options.http_port = 0;
  options.metrics_port = -1;
  testing::SuiteServer served;  // a server of the test's own: it gets stopped
  served.start(served_models(), options, write_broken_model);
  InferenceServer* server = served.server();
  const int server_port = server->http_port();
  const std::string request = R"({"inputs":[{"name":"text","datatype":"BYTES","shape":[1,1],"data":["bank"]}]})";
  // "slow" holds the request ~300 ms in its queue; stop() is called while it waits.
  auto queued = std::async(std::launch::async, [&] { return Client(server_port).post("/v2/models/slow/infer", request); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  server->stop();
  const Reply reply = queued.get();
  EXPECT_EQ(reply.status, 200) << reply.body;
  served.stop();
}

// The command: SIGTERM drains and exits 0.
TEST(ServerLifecycle, ServeCommandExitsZeroOnSigterm) {
  SCALEBERT_REQUIRE_REFERENCES(served_models());
  const fs::path binary = fs::path(SCALEBERT_BINARY_DIR) / "scalebert";
  if (!fs::exists(binary)) GTEST_SKIP() << binary << " not built";
  const TempDir root;
  write_repository(root.path());
  // A free port: bind to 0, read it, release it (the server binds it a moment later).
  int port_number = 0;
  {
    const int probe = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(probe, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    socklen_t length = sizeof(address);
    ASSERT_EQ(::getsockname(probe, reinterpret_cast<sockaddr*>(&address), &length), 0);
    port_number = ntohs(address.sin_port);
    ::close(probe);
  }
  const std::string port_text = std::to_string(port_number);
  std::vector<std::string> arguments = {binary.string(), "serve", "--model-repository", root.path().string(),
                                        "--http-port", port_text, "--metrics-port", "-1", "--no-grpc", "--no-strict-readiness"};
  std::vector<char*> argv;
  for (std::string& argument : arguments) argv.push_back(argument.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ), 0);
  Client client(port_number);
  bool ready = false;
  for (int attempt = 0; attempt < 100 && !ready; ++attempt) {  // up to 10 s
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ready = client.get("/v2/health/ready").status == 200;
  }
  EXPECT_TRUE(ready);
  if (ready) {
    EXPECT_EQ(client.post("/v2/models/cls/infer", R"({"inputs":[{"name":"text","datatype":"BYTES","shape":[1,1],"data":["bank"]}]})").status, 200);
  }
  kill(pid, SIGTERM);
  int status = 0;
  for (int attempt = 0; attempt < 100; ++attempt) {  // up to 10 s
    if (waitpid(pid, &status, WNOHANG) == pid) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (attempt == 99) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      ADD_FAILURE() << "serve did not exit within 10 s of SIGTERM";
    }
  }
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace scalebert::serve
