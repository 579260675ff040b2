// The trainer with a checkpoint store (store_roots): every checkpoint becomes a store version;
// a run stopped as by Ctrl-C and resumed from the store — with a corrupt replica of every shard,
// a missing replica of trainer_state.json and no local checkpoint folder — logs the same losses
// bit for bit as a run that never stopped, and ends with the same weights and optimizer moments;
// best and last versions, the resumable-version choice, export as a resumable folder, gc by
// store_keep, and the refusals (fresh run into a store that holds a run, bad store settings).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/cmd_train.h"
#include "core/error.h"
#include "io/file_util.h"
#include "io/safetensors.h"
#include "io/store/model_checkpoint.h"
#include "io/store/store.h"
#include "model/bert_model.h"
#include "testing.h"
#include "train/checkpoint.h"
#include "train/train_config.h"
#include "train/trainer.h"

using namespace scalebert;
using namespace scalebert::train;
namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

using scalebert::testing::error_of;
using scalebert::testing::fixture_path;
using scalebert::testing::TempDir;

// Dropout on (the config's 0.1), gradient accumulation, warmup, evaluation every 3 steps; one thread.
TrainConfig make_config(const TempDir& dir, const std::string& task, const std::string& out) {
  TrainConfig config = scalebert::testing::tiny_train_config(dir, task, out);
  config.threads = 1;
  return config;
}

std::vector<std::string> store_roots(const TempDir& dir) {
  return {(dir / "disk0/ckpt").string(), (dir / "disk1/ckpt").string(), (dir / "disk2/ckpt").string()};
}

TrainConfig with_store(TrainConfig config, const TempDir& dir) {
  config.store_roots = store_roots(dir);
  config.store_replicas = 2;
  config.store_shard_mb = 0.03;  // ~31 KB: the tiny model and its moments span about ten shards
  return config;
}

store::CheckpointStore open_store(const TempDir& dir) {
  const std::vector<std::string> roots = store_roots(dir);
  return store::CheckpointStore(std::vector<fs::path>(roots.begin(), roots.end()));
}

struct TrainerRun {
  TrainResult result;
  std::vector<std::string> messages;
};

// Runs a trainer; with stop_at > 0, a stop request (what Ctrl-C sends) arrives after that step.
TrainerRun run_trainer(const TrainConfig& config, int64_t stop_at = 0) {
  TrainerRun run;
  TrainerCallbacks callbacks;
  callbacks.on_message = [&](const std::string& text) { run.messages.push_back(text); };
  callbacks.on_step = [&](const StepReport& report) {
    if (stop_at > 0 && report.step == stop_at) request_stop_from_signal();
  };
  clear_stop_request();
  Trainer trainer(config, callbacks);
  run.result = trainer.run();
  clear_stop_request();
  return run;
}

std::string joined(const std::vector<std::string>& lines) {
  std::string text;
  for (const std::string& line : lines) text += line + "\n";
  return text;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

class StoreResume : public ::testing::TestWithParam<std::string> {};

TEST_P(StoreResume, StoppedRunResumedFromCorruptStoreLogsTheSameLossesBitForBit) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls") / "config.json");
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-mlm") / "config.json");
  TempDir dir;
  const TrainerRun straight = run_trainer(make_config(dir, GetParam(), "straight"));
  ASSERT_TRUE(straight.result.completed);
  ASSERT_EQ(straight.result.step_losses.size(), 8u);

  // First half: stopped after step 4 as by Ctrl-C; every checkpoint also goes to the store.
  const TrainerRun first = run_trainer(with_store(make_config(dir, GetParam(), "split"), dir), 4);
  EXPECT_FALSE(first.result.completed);
  ASSERT_EQ(first.result.global_step, 4);
  ASSERT_GT(first.result.last_store_version, 0u);

  store::CheckpointStore store = open_store(dir);
  ASSERT_EQ(store.latest(), first.result.last_store_version);
  EXPECT_EQ(find_resumable_version(store), first.result.last_store_version);
  // Evaluation at step 3 saved best then last; the stop saved last at step 4.
  const std::vector<store::VersionInfo> versions = store.versions();
  ASSERT_EQ(versions.size(), 3u);
  std::vector<std::string> roles;
  for (const store::VersionInfo& info : versions) {
    ASSERT_TRUE(info.committed);
    roles.push_back(info.manifest->metadata.at("extra").at("role").get<std::string>());
    EXPECT_EQ(info.manifest->replication, 2u);
    EXPECT_EQ(info.manifest->root_count, 3u);
  }
  EXPECT_EQ(roles, (std::vector<std::string>{"best", "last", "last"}));
  EXPECT_EQ(versions[0].manifest->metadata.count("optimizer"), 0u);  // best: model only
  EXPECT_TRUE(store.verify().clean());

  // Damage: the first replica of every shard of the resumable version gets a flipped data byte,
  // one replica of trainer_state.json disappears, and the local checkpoint folder is gone.
  const uint64_t version = first.result.last_store_version;
  const store::Manifest manifest = store.read_manifest(version);
  ASSERT_GE(manifest.shards.size(), 4u) << "expected several shards at store_shard_mb 0.03";
  for (const store::ManifestObject& shard : manifest.shards) {
    scalebert::testing::flip_bits(store.version_path(shard.replicas[0], version) / shard.file,
                                  static_cast<int64_t>(shard.bytes - 3), 0x10);
  }
  bool removed_state = false;
  for (const store::ManifestObject& file : manifest.files) {
    if (file.file == "files/trainer_state.json") {
      removed_state = fs::remove(store.version_path(file.replicas[0], version) / file.file);
    }
  }
  ASSERT_TRUE(removed_state);
  fs::remove_all(dir / "split/checkpoint-last");
  EXPECT_FALSE(store.verify(version).clean());

  // Second half: "store" for classification, "auto" (no folder left, so the store) for mlm.
  TrainConfig second_config = with_store(make_config(dir, GetParam(), "split"), dir);
  second_config.resume = GetParam() == "mlm" ? "auto" : "store";
  const TrainerRun second = run_trainer(second_config);
  EXPECT_TRUE(second.result.completed);
  EXPECT_EQ(second.result.resumed_from_step, 4);
  EXPECT_EQ(second.result.resumed_from_store_version, version);
  // Every skipped replica was reported, naming the object and its root.
  const std::string log = joined(second.messages);
  for (const store::ManifestObject& shard : manifest.shards) {
    EXPECT_NE(log.find(shard.file + " on root " + std::to_string(shard.replicas[0])), std::string::npos)
        << shard.file << " in:\n" << log;
  }
  EXPECT_NE(log.find("trainer_state.json on root"), std::string::npos) << log;
  EXPECT_NE(log.find("resumed from version " + std::to_string(version) + " of checkpoint store"), std::string::npos)
      << log;

  std::vector<double> losses = first.result.step_losses;
  losses.insert(losses.end(), second.result.step_losses.begin(), second.result.step_losses.end());
  ASSERT_EQ(losses.size(), straight.result.step_losses.size());
  for (size_t i = 0; i < losses.size(); ++i) EXPECT_EQ(losses[i], straight.result.step_losses[i]) << "step " << i + 1;
  // Same weights and optimizer moments, byte for byte, in the folder and in the store's last version.
  for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
    EXPECT_TRUE(read_file(dir / "split/checkpoint-last" / file) == read_file(dir / "straight/checkpoint-last" / file))
        << file;
  }
  ASSERT_GT(second.result.last_store_version, version);
  EXPECT_EQ(store.latest(), second.result.last_store_version);
  const fs::path exported = dir / "exported";
  store::materialize_hf_directory(store.load({second.result.last_store_version}), exported);
  const SafetensorsFile straight_model = SafetensorsFile::open(dir / "straight/checkpoint-last/model.safetensors");
  const SafetensorsFile exported_model = SafetensorsFile::open(exported / "model.safetensors");
  ASSERT_EQ(exported_model.sorted_names(), straight_model.sorted_names());
  for (const std::string& name : straight_model.names()) {
    const Tensor a = straight_model.tensor(name), b = exported_model.tensor(name);
    ASSERT_EQ(a.nbytes(), b.nbytes()) << name;
    EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << name;
  }
  // The export is a checkpoint folder: trainer state and optimizer moments as the trainer writes them.
  EXPECT_EQ(read_trainer_state(exported).global_step, 8);
  const SafetensorsFile straight_moments = SafetensorsFile::open(dir / "straight/checkpoint-last/optimizer.safetensors");
  const SafetensorsFile exported_moments = SafetensorsFile::open(exported / "optimizer.safetensors");
  EXPECT_EQ(exported_moments.sorted_names(), straight_moments.sorted_names());
  EXPECT_EQ(exported_moments.metadata().at("step"), "8");
  EXPECT_EQ(BertModel::load(exported).parameters.parameter_count(),
            BertModel::load(dir / "straight/checkpoint-last").parameters.parameter_count());

  // verify still names the damage; repair restores two good replicas of everything.
  const store::RepairReport repaired = store.repair();
  EXPECT_TRUE(repaired.complete());
  EXPECT_TRUE(store.verify().clean());
}

INSTANTIATE_TEST_SUITE_P(Tasks, StoreResume, ::testing::Values("classification", "mlm"));

TEST(TrainerStore, ResumesFromTheNewestLastVersionAndKeepsOnlyStoreKeep) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls") / "config.json");
  TempDir dir;
  TrainConfig config = with_store(make_config(dir, "classification", "out"), dir);
  config.max_steps = 4;
  config.eval_steps = 0;
  config.save_steps = 1;  // a last version after every step
  config.store_keep = 2;
  const TrainerRun run = run_trainer(config);
  ASSERT_TRUE(run.result.completed);
  store::CheckpointStore store = open_store(dir);
  // Steps 1-3 periodic saves, then the end: evaluation (a best version) and the final last one.
  std::vector<uint64_t> kept;
  for (const store::VersionInfo& info : store.versions()) kept.push_back(info.version);
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_EQ(kept.back(), run.result.last_store_version);
  EXPECT_EQ(run.result.best_store_version, run.result.last_store_version - 1);
  EXPECT_EQ(find_resumable_version(store), run.result.last_store_version);

  // A crash between a best and a last save leaves `latest` on a best version: resume skips it.
  const store::Checkpoint last = store.load({run.result.last_store_version});
  std::vector<store::SideFile> files;
  for (const std::string& name : last.file_names()) files.push_back({name, last.file(name)});
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (auto& [name, tensor] : last.tensors()) {
    if (name.rfind("optimizer/", 0) != 0) tensors.emplace_back(name, tensor);
  }
  Json metadata = last.metadata();
  metadata.erase("optimizer");
  metadata["extra"]["role"] = "best";
  const store::SaveResult best = store.save(tensors, metadata, {2, 1 << 20}, files);
  EXPECT_EQ(store.latest(), best.version);
  EXPECT_EQ(find_resumable_version(store), run.result.last_store_version);

  // Resuming a finished run from the store: no steps left, the final evaluation only.
  TrainConfig again = config;
  again.resume = "store";
  const TrainerRun resumed = run_trainer(again);
  EXPECT_EQ(resumed.result.resumed_from_step, 4);
  EXPECT_EQ(resumed.result.resumed_from_store_version, run.result.last_store_version);
  EXPECT_TRUE(resumed.result.step_losses.empty());

  // store:N picks a version; a best version cannot be resumed (no optimizer state).
  again.resume = "store:" + std::to_string(best.version);
  EXPECT_NE(error_of([&] { run_trainer(again); }).find("no optimizer state"), std::string::npos);
}

TEST(TrainerStore, RefusesAFreshRunIntoAStoreThatHoldsOneAndBadSettings) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls") / "config.json");
  TempDir dir;
  TrainConfig config = with_store(make_config(dir, "classification", "a"), dir);
  config.max_steps = 2;
  config.eval_steps = 0;
  ASSERT_TRUE(run_trainer(config).result.completed);

  TrainConfig fresh = with_store(make_config(dir, "classification", "b"), dir);
  fresh.max_steps = 2;
  fresh.eval_steps = 0;
  const std::string refusal = error_of([&] { run_trainer(fresh); });
  EXPECT_NE(refusal.find("already holds a trainer checkpoint (version 2): resume it (--resume store)"),
            std::string::npos)
      << refusal;
  fresh.overwrite_output_dir = true;  // adds this run's versions after the other run's
  const TrainerRun added = run_trainer(fresh);
  EXPECT_EQ(added.result.best_store_version, 3u);  // the end: evaluation (best), then last
  EXPECT_EQ(added.result.last_store_version, 4u);

  TrainConfig bad = make_config(dir, "classification", "c");
  bad.resume = "store";
  EXPECT_NE(error_of([&] { bad.validate(); }).find("needs store_roots"), std::string::npos);
  bad = with_store(bad, dir);
  bad.resume = "store:x";
  EXPECT_NE(error_of([&] { bad.validate(); }).find("expected store:N"), std::string::npos);
  bad.resume = "";
  bad.store_replicas = 4;
  EXPECT_NE(error_of([&] { bad.validate(); }).find("more than the 3 store_roots"), std::string::npos);
  bad.store_replicas = 0;
  EXPECT_EQ(bad.store_replication(), 2u);
  bad.store_shard_mb = 0;
  EXPECT_NE(error_of([&] { bad.validate(); }).find("store_shard_mb 0"), std::string::npos);
  // An empty store with resume "store" is a clear error naming the store.
  TrainConfig empty = make_config(dir, "classification", "d");
  empty.store_roots = {(dir / "empty0").string(), (dir / "empty1").string()};
  empty.resume = "store";
  EXPECT_NE(error_of([&] { run_trainer(empty); }).find("holds no resumable trainer checkpoint"), std::string::npos);
}

TEST(TrainerStore, CommandLineFlags) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls") / "config.json");
  TempDir dir;
  const TrainConfig config = make_config(dir, "classification", "cli");
  const std::string roots = store_roots(dir)[0] + "," + store_roots(dir)[1] + "," + store_roots(dir)[2];
  std::vector<std::string> args = {"--model", config.model, "--train-file", config.train_file, "--output-dir",
                                   config.output_dir, "--max-length", "32", "--batch-size", "4", "--max-steps", "2",
                                   "--threads", "1", "--quiet", "--store-roots", roots, "--store-replicas", "3",
                                   "--store-shard-mb", "0.05"};
  EXPECT_EQ(cli::run_train_command(args), 0);
  store::CheckpointStore store = open_store(dir);
  ASSERT_EQ(store.latest(), 1u);
  const store::Manifest manifest = store.read_manifest(1);
  EXPECT_EQ(manifest.replication, 3u);
  EXPECT_EQ(manifest.shard_size_bytes, static_cast<uint64_t>(0.05 * 1048576.0));
  const Json saved_config = Json::parse(store.load({1}).file("train_config.json"));
  EXPECT_EQ(saved_config.at("store_roots").size(), 3u);
}
