// Model repositories of the tiny fixtures for the server's end-to-end tests.
#include "serve_testing.h"

#include <fstream>

#include "core/error.h"

namespace scalebert::testing {

namespace fs = std::filesystem;

std::string classification_config(const std::string& inputs) {
  return "max_batch_size: 8\ninput [ " + inputs + R"( ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 3 ] },
         { name: "probabilities" data_type: TYPE_FP32 dims: [ -1 ] },
         { name: "label" data_type: TYPE_STRING dims: [ 1 ] },
         { name: "label_id" data_type: TYPE_INT64 dims: [ 1 ] } ]
dynamic_batching { preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 1000 }
instance_group [ { count: 2 kind: KIND_CPU } ]
parameters { key: "task" value: { string_value: "classification" } }
parameters { key: "threads" value: { string_value: "1" } })";
}

void write_model_repository(const fs::path& root, const std::vector<ServedModel>& models) {
  for (const ServedModel& model : models) {
    fs::create_directories(root / model.name);
    fs::create_directory_symlink(fixture_path(model.fixture), root / model.name / "1");
    std::ofstream config(root / model.name / "config.pbtxt");
    config << model.config;
    if (!config) throw IoError(str_cat("cannot write ", root / model.name / "config.pbtxt"));
  }
}

std::vector<fs::path> reference_files(const std::vector<ServedModel>& models) {
  std::vector<fs::path> files;
  for (const ServedModel& model : models) files.push_back(fixture_path(model.fixture) / "reference.safetensors");
  return files;
}

void SuiteServer::start(const std::vector<ServedModel>& models, serve::ServerOptions options,
                        const std::function<void(const fs::path& root)>& extra) {
  for (const fs::path& file : reference_files(models)) {
    if (!fs::exists(file)) return;
  }
  repository_ = std::make_unique<TempDir>();
  write_model_repository(repository_->path(), models);
  if (extra) extra(repository_->path());
  options.model_repository = repository_->path();
  server_ = std::make_unique<serve::InferenceServer>(options);
  server_->start();
}

void SuiteServer::stop() {
  server_.reset();
  repository_.reset();
}

}  // namespace scalebert::testing
