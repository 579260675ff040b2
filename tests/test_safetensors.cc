// Safetensors reading and writing, and the model-directory weight store: round trips, files written
// by Python's safetensors/transformers (fixtures), and every malformed input, each checked for the
// error type and for a message that names the problem.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/error.h"
#include "core/tensor.h"
#include "io/file_util.h"
#include "io/model_files.h"
#include "io/safetensors.h"
#include "testing.h"

using namespace scalebert;
namespace fs = std::filesystem;

using scalebert::testing::expect_error;

namespace {

// A fresh directory per test (a testing::TempDir), removed afterwards.
class TempDir : public ::testing::Test {
 protected:
  // Writes an 8-byte length (the header's size unless `length` overrides it), the header, data.
  fs::path write_raw(const std::string& file_name, const std::string& header,
                     const std::string& data = "", std::optional<uint64_t> length = {}) {
    fs::path path = dir_ / file_name;
    std::ofstream out(path, std::ios::binary);
    uint64_t header_size = length.value_or(header.size());
    out.write(reinterpret_cast<const char*>(&header_size), 8);
    out << header << data;
    return path;
  }

  const scalebert::testing::TempDir temp_;
  const fs::path dir_ = temp_.path();
};

Tensor filled(Shape shape, DType dtype, int seed) {
  Tensor tensor = Tensor::empty(std::move(shape), dtype);
  auto* bytes = static_cast<uint8_t*>(tensor.raw());
  for (size_t i = 0; i < tensor.nbytes(); ++i) bytes[i] = static_cast<uint8_t>(i * 37 + seed * 11 + 1);
  return tensor;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

std::string read_bytes(const fs::path& path) { return read_file(path); }

using scalebert::testing::fixture_path;

}  // namespace

// ---------------------------------------------------------------------------------------------
// Round trips through our own writer.

TEST_F(TempDir, RoundTripIsBitExactWithMetadataAndAlignedLayout) {
  Tensor scalar = Tensor::empty({}, DType::kF32);
  scalar.data<float>()[0] = 3.5f;
  std::vector<std::pair<std::string, Tensor>> tensors = {
      {"bytes.i8", filled({7}, DType::kI8, 1)},
      {"half.bf16", filled({5}, DType::kBF16, 2)},
      {"matrix.f32", filled({2, 3}, DType::kF32, 3)},
      {"ids.i64", filled({3}, DType::kI64, 4)},
      {"half.f16", filled({3}, DType::kF16, 5)},
      {"empty.u8", Tensor::empty({0, 4}, DType::kU8)},
      {"scalar", scalar},
      {"counts.i32", filled({2, 2}, DType::kI32, 6)},
  };
  std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "round \"trip\""}};
  fs::path path = dir_ / "round.safetensors";
  save_safetensors(path, tensors, metadata);

  SafetensorsFile file = SafetensorsFile::open(path);
  EXPECT_EQ(file.metadata(), metadata);
  ASSERT_EQ(file.size(), tensors.size());
  for (const auto& [name, tensor] : tensors) {
    ASSERT_TRUE(file.has(name)) << name;
    EXPECT_TRUE(same_bytes(file.tensor(name), tensor)) << name;
    EXPECT_EQ(file.info(name).dtype_name, dtype_name(tensor.dtype()));
  }
  EXPECT_EQ(file.tensor("scalar").data<float>()[0], 3.5f);

  // Layout: header padded to 8, data ordered by element size (largest first, caller's order kept
  // within a size), no gaps, each tensor aligned to its element size.
  EXPECT_EQ(file.data_start() % 8, 0u);
  std::vector<std::string> expected_order = {"ids.i64", "matrix.f32", "scalar", "counts.i32",
                                             "half.bf16", "half.f16", "bytes.i8", "empty.u8"};
  EXPECT_EQ(file.names(), expected_order);
  uint64_t offset = 0;
  for (const std::string& name : file.names()) {
    const SafetensorsTensorInfo& info = file.info(name);
    EXPECT_EQ(info.begin, offset) << name;
    EXPECT_EQ(info.begin % dtype_size(*info.dtype), 0u) << name;
    offset = info.end;
  }
  EXPECT_EQ(file.data_start() + offset, fs::file_size(path));
  std::vector<std::string> sorted = file.sorted_names();
  EXPECT_TRUE(std::is_sorted(sorted.begin(), sorted.end()));

  // The header is what the reference writer emits: metadata first, entries as
  // {"dtype","shape","data_offsets"}, space padding.
  std::string bytes = read_bytes(path);
  const std::string header_start = R"({"__metadata__":{"format":"pt","note":"round \"trip\""},)";
  EXPECT_EQ(bytes.substr(8, header_start.size()), header_start);
  EXPECT_NE(bytes.find(R"("ids.i64":{"dtype":"I64","shape":[3],"data_offsets":[0,24]})"),
            std::string::npos);
}

TEST_F(TempDir, ViewsOutliveTheFileObjectAndWritesStayPrivate) {
  fs::path path = dir_ / "a.safetensors";
  Tensor original = filled({4, 4}, DType::kF32, 9);
  save_safetensors(path, {{"w", original}});
  Tensor view;
  {
    SafetensorsFile file = SafetensorsFile::open(path);
    view = file.tensor("w");
  }  // the mapping lives on in the view's owner
  EXPECT_TRUE(same_bytes(view, original));
  view.data<float>()[0] = 123.0f;  // copy-on-write page: must neither crash nor touch the file
  EXPECT_TRUE(same_bytes(SafetensorsFile::open(path).tensor("w"), original));
}

TEST_F(TempDir, SaveReplacesAtomicallyAndLeavesNoTemporaryFiles) {
  fs::path path = dir_ / "model.safetensors";
  save_safetensors(path, {{"a", filled({8}, DType::kF32, 1)}});
  Tensor second = filled({2}, DType::kI64, 2);
  save_safetensors(path, {{"b", second}}, {{"step", "2"}});
  SafetensorsFile file = SafetensorsFile::open(path);
  EXPECT_FALSE(file.has("a"));
  EXPECT_TRUE(same_bytes(file.tensor("b"), second));
  int entries = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir_)) ++entries;
  EXPECT_EQ(entries, 1) << "temporary files left behind";

  // An abandoned writer removes its temporary file and leaves the old content.
  {
    AtomicFileWriter writer(path);
    writer.write("garbage");
    EXPECT_TRUE(fs::exists(writer.temporary_path()));
  }
  EXPECT_TRUE(same_bytes(SafetensorsFile::open(path).tensor("b"), second));
  entries = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir_)) ++entries;
  EXPECT_EQ(entries, 1);
}

TEST_F(TempDir, WriterRejectsBadNamesAndUnwritablePaths) {
  Tensor tensor = filled({2}, DType::kF32, 1);
  expect_error<InvalidArgument>(
      [&] { save_safetensors(dir_ / "x.safetensors", {{"a", tensor}, {"a", tensor}}); },
      {"duplicate tensor name \"a\""});
  expect_error<InvalidArgument>(
      [&] { save_safetensors(dir_ / "x.safetensors", {{"__metadata__", tensor}}); },
      {"reserved"});
  expect_error<InvalidArgument>([&] { save_safetensors(dir_ / "x.safetensors", {{"", tensor}}); },
                                {"empty tensor name"});
  expect_error<IoError>(
      [&] { save_safetensors(dir_ / "missing_dir" / "x.safetensors", {{"a", tensor}}); },
      {"missing_dir", "No such file"});
  EXPECT_FALSE(fs::exists(dir_ / "x.safetensors"));
}

// ---------------------------------------------------------------------------------------------
// Malformed files: each is crafted byte by byte.

TEST_F(TempDir, RejectsUnreadableAndTruncatedFiles) {
  expect_error<IoError>([&] { SafetensorsFile::open(dir_ / "nope.safetensors"); },
                        {"nope.safetensors", "No such file"});
  expect_error<IoError>([&] { SafetensorsFile::open(dir_); }, {"directory"});
  {
    std::ofstream(dir_ / "short.safetensors") << "abcde";
  }
  expect_error<FormatError>([&] { SafetensorsFile::open(dir_ / "short.safetensors"); },
                            {"short.safetensors", "5 bytes", "shorter than the 8-byte"});
  fs::path past = write_raw("past.safetensors", "{}", "", 1000);
  expect_error<FormatError>([&] { SafetensorsFile::open(past); },
                            {"past.safetensors", "header length 1000", "past the end"});
  fs::path absurd = write_raw("absurd.safetensors", "{}", "", 200'000'000);
  expect_error<FormatError>([&] { SafetensorsFile::open(absurd); },
                            {"absurd.safetensors", "200000000", "exceeds"});
  fs::path huge = write_raw("huge.safetensors", "{}", "", UINT64_MAX);
  expect_error<FormatError>([&] { SafetensorsFile::open(huge); }, {"exceeds"});
}

TEST_F(TempDir, RejectsHeadersThatAreNotJsonObjects) {
  expect_error<FormatError>([&] { SafetensorsFile::open(write_raw("a.st", "{\"x\": ")); },
                            {"a.st", "not valid JSON"});
  expect_error<FormatError>([&] { SafetensorsFile::open(write_raw("b.st", "[1, 2]  ")); },
                            {"b.st", "must be a JSON object", "array"});
  expect_error<FormatError>(
      [&] { SafetensorsFile::open(write_raw("c.st", R"({"w": [1, 2]})")); },
      {"c.st", "tensor \"w\"", "entry must be an object"});
  expect_error<FormatError>(
      [&] { SafetensorsFile::open(write_raw("d.st", R"({"__metadata__": {"step": 3}})")); },
      {"__metadata__", "\"step\"", "must be a string"});
  expect_error<FormatError>(
      [&] { SafetensorsFile::open(write_raw("e.st", R"({"__metadata__": "pt"})")); },
      {"__metadata__ must be an object"});
  // An empty header is a valid file with no tensors.
  SafetensorsFile empty = SafetensorsFile::open(write_raw("f.st", "{}      "));
  EXPECT_EQ(empty.size(), 0u);
}

TEST_F(TempDir, RejectsIncompleteOrMistypedEntries) {
  const std::string data(64, '\0');
  struct Case {
    std::string header;
    std::vector<std::string> fragments;
  };
  const std::vector<Case> cases = {
      {R"({"w": {"shape": [2], "data_offsets": [0, 8]}})", {"tensor \"w\"", "missing \"dtype\""}},
      {R"({"w": {"dtype": "F32", "data_offsets": [0, 8]}})", {"tensor \"w\"", "missing \"shape\""}},
      {R"({"w": {"dtype": "F32", "shape": [2]}})", {"tensor \"w\"", "missing \"data_offsets\""}},
      {R"({"w": {"dtype": 4, "shape": [2], "data_offsets": [0, 8]}})",
       {"tensor \"w\"", "dtype must be a string"}},
      {R"({"w": {"dtype": "F128", "shape": [2], "data_offsets": [0, 16]}})",
       {"tensor \"w\"", "unknown dtype \"F128\""}},
      {R"({"w": {"dtype": "F32", "shape": [-1, 2], "data_offsets": [0, 8]}})",
       {"tensor \"w\"", "non-negative", "-1"}},
      {R"({"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 8]}})",
       {"tensor \"w\"", "integer", "1.5"}},
      {R"({"w": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}})",
       {"tensor \"w\"", "shape must be a list"}},
      {R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0]}})",
       {"tensor \"w\"", "data_offsets must be [begin, end]"}},
      {R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8, 16]}})",
       {"tensor \"w\"", "data_offsets must be [begin, end]"}},
      {R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}})",
       {"tensor \"w\"", "data_offsets begin", "non-negative"}},
      {R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [16, 8]}})",
       {"tensor \"w\"", "[16, 8]", "begin > end"}},
      {R"({"w": {"dtype": "F32", "shape": [20], "data_offsets": [0, 80]}})",
       {"tensor \"w\"", "[0, 80]", "past the 64-byte data region"}},
      {R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 16]}})",
       {"tensor \"w\"", "16 bytes", "[2, 3]", "needs 24"}},
      {R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 16]}})",
       {"tensor \"w\"", "more bytes than any file"}},
      {R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
           "b": {"dtype": "I64", "shape": [2], "data_offsets": [8, 24]}})",
       {"\"a\" [0, 16)", "\"b\" [8, 24)", "overlap"}},
      {R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
           "a": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]}})",
       {"duplicate tensor name \"a\""}},
  };
  int index = 0;
  for (const Case& bad : cases) {
    std::string file_name = str_cat("bad", index++, ".safetensors");
    fs::path path = write_raw(file_name, bad.header, data);
    SCOPED_TRACE(bad.header);
    std::vector<std::string> fragments = bad.fragments;
    fragments.push_back(file_name);  // every message names the file
    expect_error<FormatError>([&] { SafetensorsFile::open(path); }, fragments);
  }
}

TEST_F(TempDir, AcceptsGapsEmptyTensorsAndForeignDtypes) {
  // Empty tensors may share an offset with others; gaps are tolerated; F64 is a valid safetensors
  // dtype that ScaleBERT does not compute with: the file opens, tensor() says Unsupported.
  const std::string header = R"({"e": {"dtype": "F32", "shape": [0, 3], "data_offsets": [8, 8]},
      "d": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]},
      "f": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]}})";
  std::string data(24, '\0');
  float values[2] = {1.5f, -2.0f};
  std::memcpy(&data[16], values, 8);
  SafetensorsFile file = SafetensorsFile::open(write_raw("ok.st", header, data));
  EXPECT_EQ(file.names(), (std::vector<std::string>{"e", "d", "f"}));  // file order kept
  EXPECT_EQ(file.tensor("f").data<float>()[1], -2.0f);
  EXPECT_EQ(file.tensor("e").numel(), 0);
  EXPECT_EQ(file.info("d").dtype_name, "F64");
  EXPECT_FALSE(file.info("d").dtype.has_value());
  expect_error<Unsupported>([&] { file.tensor("d"); }, {"tensor \"d\"", "F64"});
  expect_error<InvalidArgument>([&] { file.info("zz"); }, {"no tensor \"zz\"", "ok.st"});
}

// ---------------------------------------------------------------------------------------------
// Files written by Python (safetensors / transformers), from the generated fixtures.

TEST(SafetensorsFixture, ReadsTransformersFileAndMatchesPyTorchEmbeddings) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert"));
  SafetensorsFile weights = SafetensorsFile::open(fixture_path("tiny-bert") / "model.safetensors");
  EXPECT_EQ(weights.size(), 39u);
  EXPECT_EQ(weights.metadata().at("format"), "pt");
  const SafetensorsTensorInfo& words = weights.info("embeddings.word_embeddings.weight");
  EXPECT_EQ(words.shape, (Shape{120, 32}));
  EXPECT_EQ(words.dtype, DType::kF32);

  // Recompute the embedding output from the weights read here and compare with PyTorch's
  // hidden_states.0: LayerNorm(word[id] + position[t] + type[type id]) * gamma + beta.
  SafetensorsFile reference = SafetensorsFile::open(fixture_path("tiny-bert") / "reference.safetensors");
  EXPECT_EQ(reference.metadata().at("class"), "BertModel");
  Tensor ids = reference.tensor("input_ids");
  Tensor types = reference.tensor("token_type_ids");
  Tensor expected = reference.tensor("hidden_states.0");
  ASSERT_EQ(ids.shape(), (Shape{3, 16}));
  ASSERT_EQ(expected.shape(), (Shape{3, 16, 32}));
  EXPECT_EQ(ids.data<int64_t>()[0], 6);  // [CLS]
  auto f32 = [&](const char* name) {
    // Not necessarily 4-byte aligned in general; the reference writer sorts by dtype, so it is.
    return weights.tensor(name).data<float>();
  };
  const float* word = f32("embeddings.word_embeddings.weight");
  const float* position = f32("embeddings.position_embeddings.weight");
  const float* type = f32("embeddings.token_type_embeddings.weight");
  const float* gamma = f32("embeddings.LayerNorm.weight");
  const float* beta = f32("embeddings.LayerNorm.bias");
  const int C = 32;
  double worst = 0;
  for (int row = 0; row < 3 * 16; ++row) {
    int t = row % 16;
    int64_t id = ids.data<int64_t>()[row];
    int64_t type_id = types.data<int64_t>()[row];
    double x[32];
    double mean = 0;
    for (int c = 0; c < C; ++c) {
      x[c] = double(word[id * C + c]) + position[t * C + c] + type[type_id * C + c];
      mean += x[c] / C;
    }
    double variance = 0;
    for (int c = 0; c < C; ++c) variance += (x[c] - mean) * (x[c] - mean) / C;
    for (int c = 0; c < C; ++c) {
      double y = (x[c] - mean) / std::sqrt(variance + 1e-12) * gamma[c] + beta[c];
      worst = std::max(worst, std::fabs(y - expected.data<float>()[row * C + c]));
    }
  }
  EXPECT_LT(worst, 1e-5) << "embedding output differs from PyTorch's hidden_states.0";
}

TEST_F(TempDir, RewritingTransformersFileIsByteIdentical) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert"));
  fs::path original = fixture_path("tiny-bert") / "model.safetensors";
  SafetensorsFile file = SafetensorsFile::open(original);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const std::string& name : file.names()) tensors.emplace_back(name, file.tensor(name));
  fs::path copy = dir_ / "copy.safetensors";
  save_safetensors(copy, tensors, file.metadata());
  // Same order, same JSON layout, same padding: the reference writer's exact bytes.
  EXPECT_TRUE(read_bytes(copy) == read_bytes(original));
}

// ---------------------------------------------------------------------------------------------
// WeightStore over model directories.

TEST(WeightStoreFixture, SingleFileLoadsF32AndTracksUnusedNames) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert"));
  WeightStore store = WeightStore::open(fixture_path("tiny-bert"));
  EXPECT_EQ(store.files().size(), 1u);
  EXPECT_EQ(store.names().size(), 39u);
  EXPECT_EQ(store.unused_names().size(), 39u);
  Tensor query = store.load_f32("encoder.layer.0.attention.self.query.weight", {32, 32});
  EXPECT_EQ(reinterpret_cast<uintptr_t>(query.raw()) % kAlignment, 0u);
  EXPECT_TRUE(same_bytes(query, store.tensor("encoder.layer.0.attention.self.query.weight")));
  query.data<float>()[0] += 1.0f;  // private: the next load sees the file's value
  EXPECT_NE(query.data<float>()[0],
            store.load_f32("encoder.layer.0.attention.self.query.weight", {32, 32}).data<float>()[0]);
  // The "bert." prefix resolves in both directions.
  EXPECT_EQ(store.resolve("bert.pooler.dense.weight"), "pooler.dense.weight");
  store.load_f32("bert.pooler.dense.weight", {32, 32});
  EXPECT_FALSE(store.mark_used("embeddings.position_ids"));  // transformers 4.46 does not save it
  EXPECT_TRUE(store.mark_used("pooler.dense.bias"));
  std::vector<std::string> unused = store.unused_names();
  EXPECT_EQ(unused.size(), 36u);
  EXPECT_EQ(std::count(unused.begin(), unused.end(), "pooler.dense.weight"), 0);
  EXPECT_EQ(std::count(unused.begin(), unused.end(), "pooler.dense.bias"), 0);
  EXPECT_EQ(std::count(unused.begin(), unused.end(), "embeddings.word_embeddings.weight"), 1);

  expect_error<InvalidArgument>(
      [&] { store.load_f32("encoder.layer.1.output.dense.weight", {64, 32}); },
      {"encoder.layer.1.output.dense.weight", "expected shape [64, 32]", "got [32, 64]"});
  expect_error<InvalidArgument>([&] { store.load_f32("encoder.layer.9.output.dense.weight", {1}); },
                                {"encoder.layer.9.output.dense.weight", "not found"});
}

TEST(WeightStoreFixture, HeadModelsResolveTheBertPrefix) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-cls"));
  WeightStore store = WeightStore::open(fixture_path("tiny-bert-cls"));
  EXPECT_EQ(store.resolve("embeddings.word_embeddings.weight"),
            "bert.embeddings.word_embeddings.weight");
  EXPECT_EQ(store.resolve("classifier.weight"), "classifier.weight");
  EXPECT_EQ(store.load_f32("classifier.weight", {3, 32}).shape(), (Shape{3, 32}));
  EXPECT_FALSE(store.has("cls.predictions.bias"));
}

TEST(WeightStoreFixture, LegacyGammaBetaNamesResolveToTheSameWeights) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-legacy"));
  WeightStore modern = WeightStore::open(fixture_path("tiny-bert"));
  WeightStore legacy = WeightStore::open(fixture_path("tiny-bert-legacy"));
  EXPECT_EQ(legacy.resolve("embeddings.LayerNorm.weight"), "bert.embeddings.LayerNorm.gamma");
  EXPECT_EQ(legacy.resolve("encoder.layer.1.output.LayerNorm.bias"),
            "bert.encoder.layer.1.output.LayerNorm.beta");
  EXPECT_EQ(modern.resolve("embeddings.LayerNorm.gamma"), "embeddings.LayerNorm.weight");
  for (const std::string& name : modern.names()) {
    Shape shape = modern.info(name).shape;
    EXPECT_TRUE(same_bytes(modern.load_f32(name, shape), legacy.load_f32(name, shape))) << name;
  }
  EXPECT_TRUE(legacy.unused_names().empty());
}

TEST(WeightStoreFixture, ShardedCheckpointMatchesSingleFile) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-sharded"));
  WeightStore single = WeightStore::open(fixture_path("tiny-bert"));
  WeightStore sharded = WeightStore::open(fixture_path("tiny-bert-sharded"));
  EXPECT_GE(sharded.files().size(), 3u);
  ASSERT_EQ(sharded.names(), single.names());
  for (const std::string& name : single.names()) {
    EXPECT_TRUE(same_bytes(sharded.tensor(name), single.tensor(name))) << name;
  }
  EXPECT_TRUE(sharded.unused_names().empty());
}

TEST(WeightStoreFixture, HalfPrecisionWidensExactly) {
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-bf16"));
  SCALEBERT_REQUIRE_PATH(fixture_path("tiny-bert-f16"));
  WeightStore full = WeightStore::open(fixture_path("tiny-bert"));
  WeightStore bf16 = WeightStore::open(fixture_path("tiny-bert-bf16"));
  WeightStore f16 = WeightStore::open(fixture_path("tiny-bert-f16"));
  const std::string name = "encoder.layer.0.intermediate.dense.weight";
  EXPECT_EQ(bf16.info(name).dtype, DType::kBF16);
  EXPECT_EQ(f16.info(name).dtype, DType::kF16);
  Tensor reference = full.load_f32(name, {64, 32});
  Tensor from_bf16 = bf16.load_f32(name, {64, 32});
  Tensor from_f16 = f16.load_f32(name, {64, 32});
  EXPECT_EQ(reinterpret_cast<uintptr_t>(from_bf16.raw()) % kAlignment, 0u);
  for (int64_t i = 0; i < reference.numel(); ++i) {
    float value = reference.data<float>()[i];
    // PyTorch rounds to nearest even, as float_to_bf16 does: the widened values must be identical.
    ASSERT_EQ(from_bf16.data<float>()[i], bf16_to_float(float_to_bf16(value))) << i;
    // F16 keeps 11 significant bits; these weights (|w| < 2) are all normal halves.
    ASSERT_LE(std::fabs(from_f16.data<float>()[i] - value), std::ldexp(std::fabs(value), -11) + 1e-7f)
        << i;
  }
  EXPECT_GT(scalebert::testing::max_abs_diff(from_f16, reference), 0.0f);  // really rounded
}

TEST_F(TempDir, LoadF32CopiesMisalignedF32AndRefusesIntegers) {
  // A 1-element I8 tensor first would misalign F32 data; our writer orders by size, so craft the
  // misalignment with a header whose length makes the data start at 8 + 16 = 24 (not 64-aligned).
  fs::path model = dir_ / "model";
  fs::create_directories(model);
  Tensor weight = filled({3, 5}, DType::kF32, 3);
  save_safetensors(model / "model.safetensors",
                   {{"w", weight}, {"ids", filled({4}, DType::kI64, 1)}});
  WeightStore store = WeightStore::open(model);
  Tensor loaded = store.load_f32("w", {3, 5});
  EXPECT_EQ(reinterpret_cast<uintptr_t>(loaded.raw()) % kAlignment, 0u);
  EXPECT_TRUE(same_bytes(loaded, weight));
  expect_error<FormatError>([&] { store.load_f32("ids", {4}); }, {"\"ids\"", "I64", "float"});
  // A single .safetensors file opens as a store too.
  EXPECT_EQ(WeightStore::open(model / "model.safetensors").names().size(), 2u);
}

TEST_F(TempDir, DirectoryErrorsNameTheFiles) {
  expect_error<IoError>([&] { WeightStore::open(dir_ / "absent"); }, {"absent", "does not exist"});
  expect_error<IoError>([&] { WeightStore::open(dir_); },
                        {"model.safetensors", "model.safetensors.index.json"});
  {
    std::ofstream(dir_ / "pytorch_model.bin") << "not really";
  }
  expect_error<Unsupported>([&] { WeightStore::open(dir_); },
                            {"pytorch_model.bin", "convert it to safetensors"});
}

TEST_F(TempDir, ShardedIndexErrorsNameIndexTensorAndShard) {
  Tensor tensor = filled({2, 2}, DType::kF32, 1);
  save_safetensors(dir_ / "shard-1.safetensors", {{"a", tensor}});
  save_safetensors(dir_ / "shard-2.safetensors", {{"b", tensor}});
  auto write_index = [&](const std::string& text) {
    std::ofstream(dir_ / "model.safetensors.index.json") << text;
  };
  write_index(R"({"metadata": {}, "weight_map": {"a": "shard-1.safetensors", "b": "shard-2.safetensors"}})");
  WeightStore store = WeightStore::open(dir_);
  EXPECT_EQ(store.files().size(), 2u);
  EXPECT_TRUE(same_bytes(store.tensor("b"), tensor));

  write_index(R"({"weight_map": {"a": "shard-1.safetensors", "b": "shard-1.safetensors"}})");
  expect_error<FormatError>([&] { WeightStore::open(dir_); },
                            {"model.safetensors.index.json", "tensor \"b\"", "shard-1.safetensors",
                             "does not contain it"});
  write_index(R"({"weight_map": {"a": "shard-9.safetensors"}})");
  expect_error<IoError>([&] { WeightStore::open(dir_); },
                        {"model.safetensors.index.json", "tensor \"a\"", "shard-9", "does not exist"});
  write_index(R"({"weight_map": {"a": "../shard-1.safetensors"}})");
  expect_error<FormatError>([&] { WeightStore::open(dir_); },
                            {"tensor \"a\"", "not a path inside the model directory"});
  write_index(R"({"weight_map": {"a": 3}})");
  expect_error<FormatError>([&] { WeightStore::open(dir_); }, {"tensor \"a\"", "not a file name"});
  write_index(R"({"metadata": {}})");
  expect_error<FormatError>([&] { WeightStore::open(dir_); },
                            {"model.safetensors.index.json", "weight_map"});
  write_index(R"({"weight_map": )");
  expect_error<FormatError>([&] { WeightStore::open(dir_); },
                            {"model.safetensors.index.json", "not valid JSON"});
}
