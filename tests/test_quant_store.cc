// The quantizer with the checkpoint store: an int8 folder saved as a store version comes back
// (export, with a corrupt replica of every shard) with the same int8 tensors, scales and recipe,
// bit for bit, and loads to the same dequantized model; `scalebert quantize store:... OUT
// --store-roots ...` quantizes a stored f32 version exactly as it quantizes the folder it came
// from and saves the result as a version of another store; usage mistakes are UsageErrors.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "cli/args.h"
#include "cli/common.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "io/store/locator.h"
#include "io/store/model_checkpoint.h"
#include "io/store/store.h"
#include "quant/quantize.h"
#include "quant/quantized_model.h"
#include "quant/recipe.h"
#include "testing.h"

namespace scalebert {
namespace {

namespace fs = std::filesystem;

using testing::fixture_path;
using testing::TempDir;

std::vector<fs::path> roots_under(const fs::path& base) { return {base / "r0", base / "r1", base / "r2"}; }

std::string comma_list(const std::vector<fs::path>& roots) {
  std::string text;
  for (const fs::path& root : roots) text += (text.empty() ? std::string() : std::string(",")) + root.string();
  return text;
}

// Every tensor of the two files: same names, dtypes, shapes and bytes.
void expect_same_tensors(const fs::path& a, const fs::path& b) {
  const SafetensorsFile left = SafetensorsFile::open(a), right = SafetensorsFile::open(b);
  ASSERT_EQ(left.sorted_names(), right.sorted_names());
  for (const std::string& name : left.names()) {
    const SafetensorsTensorInfo &x = left.info(name), &y = right.info(name);
    EXPECT_EQ(x.dtype_name, y.dtype_name) << name;
    EXPECT_EQ(x.shape, y.shape) << name;
    const Tensor p = left.tensor(name), q = right.tensor(name);
    ASSERT_EQ(p.nbytes(), q.nbytes()) << name;
    EXPECT_EQ(std::memcmp(p.raw(), q.raw(), p.nbytes()), 0) << name;
  }
}

void expect_same_parameters(const BertModel& a, const BertModel& b) {
  ASSERT_EQ(a.parameters.entries().size(), b.parameters.entries().size());
  EXPECT_EQ(a.head, b.head);
  for (const ParameterEntry& entry : a.parameters.entries()) {
    const Tensor x = a.parameters.get(entry.name), y = b.parameters.get(entry.name);
    ASSERT_EQ(x.nbytes(), y.nbytes()) << entry.name;
    EXPECT_EQ(std::memcmp(x.raw(), y.raw(), x.nbytes()), 0) << entry.name;
  }
}

int quantize_command(std::vector<std::string> args) {
  std::vector<char*> pointers;
  for (std::string& arg : args) pointers.push_back(arg.data());
  return cli::run_quantize(std::span<char* const>(pointers.data(), pointers.size()));
}

TEST(QuantStore, Int8FolderRoundTripsThroughTheStoreBitForBitWithFailover) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls") / "config.json");
  TempDir dir;
  quant::QuantizeOptions options;
  options.dtype = kernels::Precision::kInt8;
  options.keep_f32 = {"classifier"};
  quant::quantize_model(fixture_path("tiny-bert-cls"), dir / "int8", options);

  store::CheckpointStore checkpoint_store(roots_under(dir / "store"));
  const store::SaveResult saved =
      quant::save_quantized_model(checkpoint_store, dir / "int8", {2, 10000}, {{"note", "test"}});
  EXPECT_EQ(saved.version, 1u);
  ASSERT_GE(saved.shards, 3u);
  const store::Manifest manifest = checkpoint_store.read_manifest(1);
  EXPECT_EQ(manifest.metadata.at("head"), "sequence-classification");
  EXPECT_EQ(manifest.metadata.at("extra").at("quantization").at("dtype"), "int8");
  EXPECT_EQ(manifest.metadata.at("extra").at("note"), "test");
  bool int8_stored = false;
  for (const store::ManifestTensor& tensor : manifest.tensors) int8_stored = int8_stored || tensor.dtype == "I8";
  EXPECT_TRUE(int8_stored) << "int8 weights are stored as int8, not widened";

  // One corrupt replica of every shard: the export still matches, and names each bad replica.
  for (const store::ManifestObject& shard : manifest.shards) {
    testing::flip_bits(checkpoint_store.version_path(shard.replicas[0], 1) / shard.file, -2, 0x40);
  }
  std::vector<std::string> warnings;
  store::MaterializedModel exported = store::materialize_version(
      roots_under(dir / "store"), 0, "quant test", [&](const std::string& warning) { warnings.push_back(warning); });
  EXPECT_EQ(exported.version(), 1u);
  EXPECT_EQ(warnings.size(), manifest.shards.size());
  EXPECT_EQ(exported.warnings(), warnings);
  for (const store::ManifestObject& shard : manifest.shards) {
    bool named = false;
    for (const std::string& warning : warnings) {
      named = named || warning.find(shard.file + " on root " + std::to_string(shard.replicas[0])) != std::string::npos;
    }
    EXPECT_TRUE(named) << shard.file;
  }
  expect_same_tensors(dir / "int8" / "model.safetensors", exported.directory() / "model.safetensors");
  const std::optional<quant::QuantizationRecipe> before = quant::read_recipe(dir / "int8");
  const std::optional<quant::QuantizationRecipe> after = quant::read_recipe(exported.directory());
  ASSERT_TRUE(before && after);
  EXPECT_EQ(after->to_json(), before->to_json());
  expect_same_parameters(quant::load_model(exported.directory()), quant::load_model(dir / "int8"));
  const fs::path temporary = exported.directory();
  { store::MaterializedModel moved = std::move(exported); }
  EXPECT_FALSE(fs::exists(temporary)) << "the materialized folder is removed with its owner";

  // An f32 folder is not a quantized model.
  testing::expect_error<InvalidArgument>(
      [&] { quant::save_quantized_model(checkpoint_store, fixture_path("tiny-bert-cls"), {}); },
      {"is not a quantized model", "scalebert.quantization"});
}

TEST(QuantStore, CommandQuantizesAStoredVersionIntoAnotherStore) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls") / "config.json");
  TempDir dir;
  // The f32 source as version 1 of a store, the reference quantized from the folder itself.
  store::CheckpointStore source(roots_under(dir / "f32"));
  store::save_model_directory(source, fixture_path("tiny-bert-cls"), {2, 30000});
  quant::QuantizeOptions options;
  quant::quantize_model(fixture_path("tiny-bert-cls"), dir / "reference", options);

  const std::string target_roots = comma_list(roots_under(dir / "int8"));
  ::testing::internal::CaptureStdout();
  const int code = quantize_command({"store:" + comma_list(roots_under(dir / "f32")) + "@1",
                                     (dir / "out").string(), "--dtype", "int8", "--store-roots", target_roots,
                                     "--replicas", "3", "--shard-size", "20KB", "--threads", "1"});
  const std::string out = ::testing::internal::GetCapturedStdout();
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("source: version 1 of store:"), std::string::npos) << out;
  EXPECT_NE(out.find("store: saved version 1"), std::string::npos) << out;
  expect_same_tensors(dir / "reference" / "model.safetensors", dir / "out" / "model.safetensors");

  store::CheckpointStore target(roots_under(dir / "int8"));
  const store::Manifest manifest = target.read_manifest(1);
  EXPECT_EQ(manifest.replication, 3u);
  EXPECT_EQ(manifest.shard_size_bytes, 20000u);
  EXPECT_EQ(manifest.metadata.at("extra").at("source"), "store:" + comma_list(roots_under(dir / "f32")) + "@1");
  EXPECT_TRUE(target.verify().clean());
  const store::MaterializedModel exported = store::materialize_version(roots_under(dir / "int8"), 1, "quant test");
  expect_same_tensors(dir / "reference" / "model.safetensors", exported.directory() / "model.safetensors");

  // Usage mistakes.
  const std::string model = fixture_path("tiny-bert-cls").string();
  testing::expect_error<cli::UsageError>(
      [&] { quantize_command({model, (dir / "x").string(), "--dtype", "int8", "--store-roots", target_roots,
                              "--replicas", "4"}); },
      {"--replicas", "more than the 3 store roots"});
  testing::expect_error<cli::UsageError>(
      [&] { quantize_command({model, (dir / "x").string(), "--dtype", "int8", "--replicas", "2"}); },
      {"--replicas needs --store-roots"});
  testing::expect_error<cli::UsageError>(
      [&] { quantize_command({"store:@2", (dir / "x").string(), "--dtype", "int8"}); }, {"no store roots"});
  testing::expect_error<cli::UsageError>(
      [&] { quantize_command({model, (dir / "x").string(), "--dtype", "int8", "--store-roots", target_roots,
                              "--shard-size", "12XB"}); },
      {"--shard-size", "12XB"});
}

TEST(StoreLocator, ParsesRootsAndVersion) {
  const std::optional<store::StoreLocator> plain = store::parse_store_locator("store:/a,/b,,/c");
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->roots, (std::vector<fs::path>{"/a", "/b", "/c"}));
  EXPECT_EQ(plain->version, 0u);
  const std::optional<store::StoreLocator> pinned = store::parse_store_locator("store:/x@y/a,/b@12");
  ASSERT_TRUE(pinned);
  EXPECT_EQ(pinned->roots, (std::vector<fs::path>{"/x@y/a", "/b"}));
  EXPECT_EQ(pinned->version, 12u);
  EXPECT_EQ(store::format_store_locator(*pinned), "store:/x@y/a,/b@12");
  EXPECT_FALSE(store::parse_store_locator("/models/minilm").has_value());
  testing::expect_error<InvalidArgument>([] { store::parse_store_locator("store:/a@0"); }, {"positive integer"});
  EXPECT_EQ(store::parse_byte_size("20KB", "s"), 20000u);
  EXPECT_EQ(store::parse_byte_size("2MiB", "s"), 2u << 20);
  testing::expect_error<InvalidArgument>([] { store::parse_byte_size("0", "--shard-size"); }, {"--shard-size"});
  testing::expect_error<IoError>(
      [] { store::materialize_version({fs::temp_directory_path() / "scalebert-no-such-store-root"}, 0, "t"); },
      {"has no committed version"});
}

}  // namespace
}  // namespace scalebert
