// The server with model versions from a checkpoint store (config.pbtxt parameter store_roots):
// the store's latest version is served, loaded through corrupt replicas (failover, named in
// load_warnings); when `latest` moves to a version with other weights the watcher reloads the
// model while clients keep sending requests, none fails, and the new outputs are the new
// weights' (a negated classifier negates the logits); unload stops watching, load resumes it;
// version policies pick among store versions; configuration mistakes are reported per model.
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "io/file_util.h"
#include "io/store/model_checkpoint.h"
#include "io/store/store.h"
#include "model/bert_model.h"
#include "pipeline/text_pipeline.h"
#include "serve/model_config.h"
#include "serve/protocol.h"
#include "serve/repository.h"
#include "serve/server.h"
#include "testing.h"

namespace scalebert::serve {
namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

using testing::corrupt_first_replicas;
using testing::fixture_path;
using testing::TempDir;

std::vector<fs::path> store_roots(const TempDir& dir) {
  return {dir / "stores/r0", dir / "stores/r1", dir / "stores/r2"};
}

std::string classification_config(const std::string& extra) {
  return R"(max_batch_size: 8
input [ { name: "text" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 3 ] },
         { name: "probabilities" data_type: TYPE_FP32 dims: [ -1 ] } ]
dynamic_batching { max_queue_delay_microseconds: 500 }
parameters { key: "task" value: { string_value: "classification" } }
parameters { key: "threads" value: { string_value: "1" } }
)" + extra;
}

// A classification model folder in `repository` whose versions come from the test's store
// (roots given relative to the model folder), polled every `poll_ms`.
void write_store_model(const fs::path& repository, const std::string& name, int poll_ms, const std::string& extra = "") {
  fs::create_directories(repository / name);
  std::ofstream(repository / name / "config.pbtxt") << classification_config(
      R"(parameters { key: "store_roots" value: { string_value: "../../stores/r0,../../stores/r1,../../stores/r2" } }
parameters { key: "store_poll_interval_ms" value: { string_value: ")" +
      std::to_string(poll_ms) + "\" } }\n" + extra);
}

// The fixture with its classifier negated: logits exactly negated, so outputs tell versions apart.
// What a writer does last: every root's `latest` pointer moved (atomically) to `version`.
void publish(const std::vector<fs::path>& roots, uint64_t version) {
  for (const fs::path& root : roots) write_file_atomic(root / "latest", std::to_string(version) + "\n");
}

struct Reply {
  int status = 0;
  std::string body;
};

class Client {
 public:
  explicit Client(int port) : client_("127.0.0.1", port) {
    client_.set_connection_timeout(5);
    client_.set_read_timeout(20);
  }
  Reply get(const std::string& path) { return wrap(client_.Get(path)); }
  Reply post(const std::string& path, const std::string& body) { return wrap(client_.Post(path, body, "application/json")); }
  // Classifies `texts`; nullopt (with the status in `status`) when the server does not answer 200.
  std::optional<InferResponse> classify(const std::vector<std::string>& texts, int* status = nullptr) {
    InferRequest request;
    WireTensor text;
    text.name = "text";
    text.datatype = DataType::kBytes;
    text.shape = {static_cast<int64_t>(texts.size()), 1};
    text.strings = texts;
    request.inputs.push_back(std::move(text));
    const EncodedResponse encoded = encode_infer_request(request);
    const Reply reply = post("/v2/models/cls/infer", encoded.body);
    if (status != nullptr) *status = reply.status;
    if (reply.status != 200) return std::nullopt;
    return parse_infer_response(reply.body, std::nullopt);
  }

 private:
  static Reply wrap(const httplib::Result& result) {
    Reply reply;
    if (result) {
      reply.status = result->status;
      reply.body = result->body;
    }
    return reply;
  }
  httplib::Client client_;
};

const WireTensor& output(const InferResponse& response, const std::string& name) {
  for (const WireTensor& tensor : response.outputs) {
    if (tensor.name == name) return tensor;
  }
  throw InvalidArgument("response has no output " + name);
}

std::vector<std::string> versions_of(Client& client) {
  const Json metadata = Json::parse(client.get("/v2/models/cls").body, nullptr, false);
  if (!metadata.is_object() || !metadata.contains("versions")) return {};
  return metadata["versions"].get<std::vector<std::string>>();
}

// Polls until the served versions are `expected` (bounded: the watcher polls every 100 ms).
bool wait_for_versions(Client& client, const std::vector<std::string>& expected) {
  for (int i = 0; i < 300; ++i) {
    if (versions_of(client) == expected) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

bool mentions_every_shard(const std::vector<std::string>& warnings, const store::Manifest& manifest) {
  for (const store::ManifestObject& shard : manifest.shards) {
    const std::string needle = str_cat("v", manifest.version, " ", shard.file, " on root ", shard.replicas[0]);
    bool found = false;
    for (const std::string& warning : warnings) found = found || warning.find(needle) != std::string::npos;
    if (!found) return false;
  }
  return true;
}

TEST(ServeStore, ServesLatestAndReloadsWhenItMovesWithoutDroppingRequests) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls") / "config.json");
  TempDir dir;
  const std::vector<fs::path> roots = store_roots(dir);
  store::CheckpointStore writer(roots);
  const store::SaveOptions save_options{2, 30000};  // several shards of the 98 KB model
  ASSERT_EQ(store::save_model_directory(writer, fixture_path("tiny-bert-cls"), save_options).version, 1u);
  corrupt_first_replicas(writer, 1);

  const fs::path repository = dir / "repository";
  write_store_model(repository, "cls", 100);
  ServerOptions options;
  options.model_repository = repository;
  options.http_port = 0;
  options.metrics_port = -1;
  options.http_threads = 8;
  options.limits.threads_per_instance = 1;
  InferenceServer server(options);
  server.start();
  Client client(server.http_port());
  ASSERT_EQ(versions_of(client), std::vector<std::string>{"1"}) << client.post("/v2/repository/index", "{}").body;
  EXPECT_TRUE(mentions_every_shard(server.repository().load_warnings("cls"), writer.read_manifest(1)));

  // Version 1 answers as the fixture folder does (the text pipeline, itself checked against
  // transformers elsewhere).
  const std::vector<std::string> texts = {"revenue rose in the quarter", "the stock fell", "the bank rate"};
  const auto expected = pipeline::TextPipeline::load(fixture_path("tiny-bert-cls"))->classify(texts);
  const std::optional<InferResponse> first = client.classify(texts);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->model_version, "1");
  const std::vector<float> logits_v1 = output(*first, "logits").floats;
  ASSERT_EQ(logits_v1.size(), 9u);
  for (size_t i = 0; i < texts.size(); ++i) {
    for (size_t j = 0; j < 3; ++j) {
      EXPECT_NEAR(output(*first, "probabilities").floats[i * 3 + j], expected[i].probabilities[j], 1e-5f);
    }
  }

  // Clients keep asking while the version changes; every answer must be 200 and be one
  // version's outputs.
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0}, answered_v1{0}, answered_v2{0}, mismatches{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 3; ++c) {
    clients.emplace_back([&, port = server.http_port()] {
      Client own(port);
      while (!stop.load()) {
        int status = 0;
        const std::optional<InferResponse> response = own.classify(texts, &status);
        if (!response) {
          failures.fetch_add(1);
          continue;
        }
        const float sign = response->model_version == "2" ? -1.0f : 1.0f;
        (response->model_version == "2" ? answered_v2 : answered_v1).fetch_add(1);
        const std::vector<float>& logits = output(*response, "logits").floats;
        for (size_t k = 0; k < logits_v1.size(); ++k) {
          if (std::abs(logits[k] - sign * logits_v1[k]) > 1e-5f) mismatches.fetch_add(1);
        }
      }
    });
  }

  // Version 2 (classifier negated) is written with the `latest` pointers held back, damaged,
  // then published: the watcher must load it through the corrupt replicas.
  store::StoreOptions hold_back;
  hold_back.write_hook = [](const store::WriteEvent& event) {
    if (event.begin && event.path.filename() == "latest") throw IoError("held back by the test");
  };
  store::CheckpointStore staged(roots, hold_back);
  const store::SaveResult second =
      store::save_bert_model(staged, testing::negated_classifier(fixture_path("tiny-bert-cls")), save_options,
                             store::read_model_side_files(fixture_path("tiny-bert-cls")));
  ASSERT_EQ(second.version, 2u);
  ASSERT_EQ(writer.latest(), 1u);
  std::this_thread::sleep_for(300ms);  // a few polls: nothing moves while `latest` stays at 1
  EXPECT_EQ(versions_of(client), std::vector<std::string>{"1"});
  corrupt_first_replicas(writer, 2);
  publish(roots, 2);
  ASSERT_TRUE(wait_for_versions(client, {"2"})) << client.post("/v2/repository/index", "{}").body;
  for (int i = 0; i < 400 && answered_v2.load() == 0; ++i) std::this_thread::sleep_for(25ms);  // clients see it too
  stop.store(true);
  for (std::thread& thread : clients) thread.join();
  EXPECT_EQ(failures.load(), 0) << "requests failed while the model was reloaded";
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_GT(answered_v1.load(), 0);
  EXPECT_GT(answered_v2.load(), 0);
  EXPECT_TRUE(mentions_every_shard(server.repository().load_warnings("cls"), writer.read_manifest(2)));

  const std::optional<InferResponse> after = client.classify(texts);
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->model_version, "2");
  for (size_t k = 0; k < logits_v1.size(); ++k) EXPECT_NEAR(output(*after, "logits").floats[k], -logits_v1[k], 1e-5f);

  // Unloaded, the model is not brought back by a new version; an explicit load serves the latest.
  EXPECT_EQ(client.post("/v2/repository/models/cls/unload", "{}").status, 200);
  ASSERT_EQ(store::save_model_directory(writer, fixture_path("tiny-bert-cls"), save_options).version, 3u);
  std::this_thread::sleep_for(400ms);
  int status = 0;
  EXPECT_FALSE(client.classify(texts, &status).has_value());
  EXPECT_EQ(status, 503);
  EXPECT_EQ(client.post("/v2/repository/models/cls/load", "{}").status, 200);
  EXPECT_EQ(versions_of(client), std::vector<std::string>{"3"});
  EXPECT_TRUE(server.repository().load_warnings("cls").empty());
  server.stop();
}

TEST(ServeStore, VersionPoliciesAndConfigurationMistakes) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls") / "config.json");
  TempDir dir;
  const std::vector<fs::path> roots = store_roots(dir);
  store::CheckpointStore writer(roots);
  for (int i = 0; i < 3; ++i) store::save_model_directory(writer, fixture_path("tiny-bert-cls"), {2, 1 << 20});

  const fs::path repository = dir / "repository";
  // Every version, one pinned version, and no watching (interval 0).
  write_store_model(repository, "all", 0, "version_policy: { all { } }\n");
  write_store_model(repository, "pinned", 0, "version_policy: { specific { versions: [ 2 ] } }\n");
  // Mistakes: numeric folders beside store_roots; a store with nothing in it; a bad interval.
  write_store_model(repository, "mixed", 0);
  fs::create_directories(repository / "mixed" / "1");
  fs::create_directories(repository / "empty");
  std::ofstream(repository / "empty" / "config.pbtxt") << classification_config(
      R"(parameters { key: "store_roots" value: { string_value: "../../nothing/a,../../nothing/b" } })");
  fs::create_directories(repository / "interval");
  std::ofstream(repository / "interval" / "config.pbtxt") << classification_config(
      R"(parameters { key: "store_roots" value: { string_value: "a" } }
parameters { key: "store_poll_interval_ms" value: { string_value: "soon" } })");

  ModelRepository models(repository, ServeLimits{});
  models.load_all();
  std::vector<int64_t> all;
  for (const auto& model : models.versions("all")) all.push_back(model->version());
  EXPECT_EQ(all, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(models.get("pinned")->version(), 2);
  std::map<std::string, std::string> reasons;
  for (const Json& item : models.index()) {
    if (item.contains("reason")) reasons[item["name"]] = item["reason"];
  }
  EXPECT_NE(reasons["mixed"].find("also has 1 numeric version folders"), std::string::npos) << reasons["mixed"];
  EXPECT_NE(reasons["empty"].find("has no committed version"), std::string::npos) << reasons["empty"];
  EXPECT_NE(reasons["interval"].find("store_poll_interval_ms must be an integer >= 0"), std::string::npos)
      << reasons["interval"];

  // Relative roots are resolved against the model folder; a poll interval needs roots.
  ModelConfig config = parse_model_config(classification_config(
      R"(parameters { key: "store_roots" value: { string_value: "x,/abs/y" } }
parameters { key: "store_poll_interval_ms" value: { string_value: "250" } })"));
  const std::optional<StoreSource> source = store_source(config, "/repo/m");
  ASSERT_TRUE(source.has_value());
  EXPECT_EQ(source->roots, (std::vector<fs::path>{"/repo/m/x", "/abs/y"}));
  EXPECT_EQ(store_source(config, "/repo/m/../n")->roots[0], fs::path("/repo/n/x"));
  EXPECT_EQ(source->poll_interval, 250ms);
  EXPECT_FALSE(store_source(parse_model_config(classification_config("")), "/repo/m").has_value());
  testing::expect_error<FormatError>(
      [] {
        store_source(parse_model_config(classification_config(
                         R"(parameters { key: "store_poll_interval_ms" value: { string_value: "5" } })")),
                     "/repo/m");
      },
      {"store_poll_interval_ms needs store_roots"});
  models.unload_all();
}

}  // namespace
}  // namespace scalebert::serve
