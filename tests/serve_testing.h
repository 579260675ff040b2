// Model repositories of the tiny fixtures for the server's end-to-end tests (test_serve.cc over
// HTTP, test_serve_grpc.cc over gRPC): config.pbtxt pieces, writing a repository whose version
// folders link to the fixtures, and skipping when the fixtures' reference outputs are absent.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "serve/server.h"

#include "testing.h"

namespace scalebert::testing {

// The text input of a config.pbtxt input list.
inline constexpr const char* kTextInput = R"({ name: "text" data_type: TYPE_STRING dims: [ 1 ] })";
// The token-tensor inputs of a config.pbtxt input list, to follow a "," in it.
inline constexpr const char* kTokenInputs = R"(
  { name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] },
  { name: "attention_mask" data_type: TYPE_INT64 dims: [ -1 ] },
  { name: "token_type_ids" data_type: TYPE_INT64 dims: [ -1 ] })";

// config.pbtxt of the tiny classifier ("cls") as both tests serve it: the input list's entries
// `inputs`; logits, probabilities, label and label_id out; dynamic batches of up to 8 (4 preferred);
// two instances of one thread each.
std::string classification_config(const std::string& inputs);

// One model of a test repository: its name, the fixture its version 1 is, its config.pbtxt.
struct ServedModel {
  std::string name, fixture, config;
};

// For every model: <root>/<name>/config.pbtxt, and <root>/<name>/1 a symlink to its fixture.
void write_model_repository(const std::filesystem::path& root, const std::vector<ServedModel>& models);

// fixture_path(model.fixture) / "reference.safetensors" for every model: the transformers outputs the
// tests compare with, made by reference/make_tiny_bert.py with the fixture itself.
std::vector<std::filesystem::path> reference_files(const std::vector<ServedModel>& models);

// One InferenceServer per test suite, over a temporary repository of `models`: starting one loads
// every model, so a suite's tests share it (start in SetUpTestSuite, stop in TearDownTestSuite).
class SuiteServer {
 public:
  // Writes the repository (then `extra` adds to it, when given), points options.model_repository
  // at it and starts the server. Does nothing when a reference file of `models` is missing: the
  // suite's SetUp skips with SCALEBERT_REQUIRE_REFERENCES, then finds server() null.
  void start(const std::vector<ServedModel>& models, serve::ServerOptions options,
             const std::function<void(const std::filesystem::path& root)>& extra = {});
  // Stops the server, then removes the repository.
  void stop();
  serve::InferenceServer* server() const { return server_.get(); }
  const std::filesystem::path& repository() const { return repository_->path(); }

 private:
  std::unique_ptr<TempDir> repository_;
  std::unique_ptr<serve::InferenceServer> server_;
};

}  // namespace scalebert::testing

// Skips the running test unless every reference file of `models` exists, naming the first absent one.
#define SCALEBERT_REQUIRE_REFERENCES(models)                                                                    \
  for (const ::std::filesystem::path& scalebert_reference_file : ::scalebert::testing::reference_files(models)) \
  SCALEBERT_REQUIRE_PATH(scalebert_reference_file)
