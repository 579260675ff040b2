// Checkpoint store: XXH64 against Python's xxhash, shard planning and placement, manifest
// validation, save/load round trips (bit-identical), failover and its report for every kind of
// replica fault, verify/repair/gc, read-only and vanished roots, writes failing midway (injected
// and a real full tmpfs), writers SIGKILLed at random moments, and BERT models in and out.
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <random>
#include <set>
#include <thread>
#include <utility>

#include <gtest/gtest.h>

#include "core/error.h"
#include "io/file_util.h"
#include "io/safetensors.h"
#include "io/store/checksum.h"
#include "io/store/manifest.h"
#include "io/store/model_checkpoint.h"
#include "io/store/placement.h"
#include "io/store/store.h"
#include "model/bert_model.h"
#include "testing.h"

namespace scalebert::store {
namespace {

namespace fs = std::filesystem;
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// ---------------------------------------------------------------------------------------------
// Helpers

using testing::TempDir;

// `count` store roots in `temp`: root0, root1, ...
std::vector<fs::path> roots_in(const TempDir& temp, size_t count) {
  std::vector<fs::path> list;
  for (size_t i = 0; i < count; ++i) list.push_back(temp / str_cat("root", i));
  return list;
}

// Tensors of mixed dtypes and sizes filled with seeded random bits (any bit pattern, NaNs
// included: comparisons are bytewise).
NamedTensors make_tensors(uint64_t seed, size_t count, int64_t max_elements) {
  std::mt19937_64 random(seed);
  const DType dtypes[] = {DType::kF32, DType::kBF16, DType::kI64, DType::kI8, DType::kF16, DType::kI32};
  NamedTensors tensors;
  for (size_t i = 0; i < count; ++i) {
    DType dtype = dtypes[random() % 6];
    int64_t rows = 1 + static_cast<int64_t>(random() % 8);
    int64_t columns = 1 + static_cast<int64_t>(random() % static_cast<uint64_t>(std::max<int64_t>(1, max_elements / rows)));
    Tensor tensor = Tensor::empty({rows, columns}, dtype);
    auto* bytes = static_cast<uint8_t*>(tensor.raw());
    for (size_t b = 0; b < tensor.nbytes(); ++b) bytes[b] = static_cast<uint8_t>(random());
    tensors.emplace_back(str_cat("layer.", i, ".weight"), tensor);
  }
  return tensors;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && a.nbytes() == b.nbytes() &&
         (a.nbytes() == 0 || std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0);
}

// Every tensor of `checkpoint` equals `expected`, in order, bit for bit.
void expect_identical(const Checkpoint& checkpoint, const NamedTensors& expected) {
  std::vector<std::string> names = checkpoint.names();
  ASSERT_EQ(names.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    ASSERT_EQ(names[i], expected[i].first);
    EXPECT_TRUE(same_bytes(checkpoint.tensor(names[i]), expected[i].second)) << "tensor " << names[i];
  }
}

void flip_byte(const fs::path& path, uint64_t offset, uint8_t mask) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(file) << path;
  file.seekg(static_cast<std::streamoff>(offset));
  char byte = 0;
  file.read(&byte, 1);
  byte = static_cast<char>(static_cast<uint8_t>(byte) ^ mask);
  file.seekp(static_cast<std::streamoff>(offset));
  file.write(&byte, 1);
}

enum class Fault { kDelete, kTruncate, kFlipData, kFlipHeader, kSwapWithOtherShard, kDirectory };
const char* fault_name(Fault fault) {
  switch (fault) {
    case Fault::kDelete: return "delete";
    case Fault::kTruncate: return "truncate";
    case Fault::kFlipData: return "flip data byte";
    case Fault::kFlipHeader: return "flip header byte";
    case Fault::kSwapWithOtherShard: return "replaced by another shard";
    case Fault::kDirectory: return "directory in its place";
  }
  return "?";
}

void inject(Fault fault, const fs::path& path, const fs::path& other_shard, std::mt19937_64& random) {
  uint64_t size = fs::file_size(path);
  switch (fault) {
    case Fault::kDelete: fs::remove(path); break;
    case Fault::kTruncate: fs::resize_file(path, size / 2); break;
    case Fault::kFlipData: flip_byte(path, size - 1 - random() % std::min<uint64_t>(size, 64), 0x01); break;
    case Fault::kFlipHeader: flip_byte(path, 8 + random() % 16, 0x20); break;
    case Fault::kSwapWithOtherShard: fs::copy_file(other_shard, path, fs::copy_options::overwrite_existing); break;
    case Fault::kDirectory:
      fs::remove(path);
      fs::create_directories(path);
      break;
  }
}

bool report_names(const std::vector<ReplicaFault>& faults, const std::string& object, size_t root) {
  for (const ReplicaFault& fault : faults) {
    if (fault.object == object && fault.root == root && !fault.reason.empty()) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// XXH64

TEST(Xxh64, MatchesPythonXxhash) {
  // From Python's xxhash 4.1.0 (PyPI):
  //   buf(n) = bytes(((i*131+7)&0xFF) for i in range(n)); xxhash.xxh64(buf(n), seed=s).intdigest()
  struct Case {
    size_t length;
    uint64_t seed;
    uint64_t expected;
  };
  const Case cases[] = {
      {0, 0u, 0xef46db3751d8e999ull},     {0, 12345u, 0x95584af7701f808dull},
      {1, 0u, 0xa96c7f0ce858bbb7ull},     {1, 12345u, 0x496fc29a1e753bd7ull},
      {3, 0u, 0xbed43740ee6332bbull},     {3, 12345u, 0xb6b19aedc2948346ull},
      {4, 0u, 0xfa212ae44b3bb23dull},     {4, 12345u, 0x14172bb7250877afull},
      {7, 0u, 0x2744460dd675d2c0ull},     {7, 12345u, 0x8652f10a98d4ca79ull},
      {8, 0u, 0x994b676b71ce94ddull},     {8, 12345u, 0xaf294d209690c736ull},
      {15, 0u, 0x09e6451ed2ff8b1dull},    {15, 12345u, 0xda23c1b59c879e57ull},
      {31, 0u, 0x6711d55e306b5d8full},    {31, 12345u, 0x17dd097895721fa7ull},
      {32, 0u, 0x07f7b8e3bc5d6e25ull},    {32, 12345u, 0xf3a05319bc5e3718ull},
      {33, 0u, 0x09f85eeb4e1cbe9full},    {33, 12345u, 0x16b78ac8c6986979ull},
      {63, 0u, 0xb7c9968c066cb6a5ull},    {63, 12345u, 0xee9799100775ac1dull},
      {64, 0u, 0x50d4159a0411632eull},    {64, 12345u, 0x1fa49a6ecd161475ull},
      {100, 0u, 0x9ddada11d3dc2d8full},   {100, 12345u, 0x21fc897b6959f33aull},
      {1000, 0u, 0x0bf0bdbcc82eb373ull},  {1000, 12345u, 0xfbc39d8f021fda77ull},
      {4097, 0u, 0x00811ab3925b884aull},  {4097, 12345u, 0x21134eec46ff37ddull},
      {1048576, 0u, 0x1b13a8085220794bull}, {1048576, 12345u, 0x12b8640e5a18d61dull},
  };
  std::vector<uint8_t> buffer(1 << 20);
  for (size_t i = 0; i < buffer.size(); ++i) buffer[i] = static_cast<uint8_t>((i * 131 + 7) & 0xFF);
  std::mt19937_64 random(7);
  for (const Case& test : cases) {
    EXPECT_EQ(xxh64(buffer.data(), test.length, test.seed), test.expected) << "length " << test.length;
    // Streaming in random pieces gives the same digest.
    Xxh64 state(test.seed);
    size_t done = 0;
    while (done < test.length) {
      size_t piece = std::min<size_t>(test.length - done, random() % 70);
      state.update(buffer.data() + done, piece);
      done += piece;
    }
    EXPECT_EQ(state.digest(), test.expected) << "streamed, length " << test.length;
  }
  EXPECT_EQ(xxh64("abc"), 0x44bc2cf5ad770999ull);
  EXPECT_EQ(hex64(0x00811ab3925b884aull), "00811ab3925b884a");
  EXPECT_EQ(parse_hex64("00811AB3925B884A", "test"), 0x00811ab3925b884aull);
  EXPECT_THROW(parse_hex64("0081", "test"), FormatError);
  EXPECT_THROW(parse_hex64("00811ab3925b884g", "test"), FormatError);
}

// ---------------------------------------------------------------------------------------------
// Planning and placement

TEST(Placement, ShardsPackInOrderAndNeverExceedTheSizeUnlessOneTensorDoes) {
  EXPECT_EQ(plan_shards({}, 10).size(), 0u);
  std::vector<std::vector<size_t>> plan = plan_shards({4, 4, 4, 30, 1, 9, 10}, 10);
  std::vector<std::vector<size_t>> expected = {{0, 1}, {2}, {3}, {4, 5}, {6}};
  EXPECT_EQ(plan, expected);
  EXPECT_THROW(plan_shards({1}, 0), InvalidArgument);
}

TEST(Placement, ReplicasAreDistinctAndEvenlySpread) {
  for (size_t roots = 1; roots <= 5; ++roots) {
    for (size_t replication = 1; replication <= roots; ++replication) {
      std::vector<size_t> count(roots, 0);
      for (uint64_t object = 0; object < 23; ++object) {
        std::vector<size_t> order = placement_order(object, replication, roots);
        ASSERT_EQ(order.size(), roots);
        EXPECT_EQ(std::set<size_t>(order.begin(), order.end()).size(), roots) << "a permutation of the roots";
        for (size_t j = 0; j < replication; ++j) ++count[order[j]];
        auto [low, high] = std::minmax_element(count.begin(), count.end());
        EXPECT_LE(*high - *low, 1u) << "K=" << roots << " R=" << replication << " after object " << object;
      }
    }
  }
  EXPECT_THROW(placement_order(0, 3, 2), InvalidArgument);
  EXPECT_THROW(placement_order(0, 0, 2), InvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// Manifest

Manifest sample_manifest() {
  Manifest manifest;
  manifest.version = 7;
  manifest.created_unix_ms = 1700000000123;
  manifest.replication = 2;
  manifest.shard_size_bytes = 1000;
  manifest.root_count = 3;
  manifest.shards.push_back(ManifestObject{"shard-00000.safetensors", 123, 0xdeadbeefcafef00dull, {0, 1}});
  manifest.files.push_back(ManifestObject{"files/vocab.txt", 5, 42, {1, 2}});
  manifest.tensors.push_back(ManifestTensor{"a", "F32", {2, 3}, 0});
  manifest.metadata = {{"config", {{"hidden_size", 32}, {"layer_norm_eps", 1e-12}}}, {"note", "x"}};
  return manifest;
}

TEST(Manifest, RoundTripsAndDetectsCorruption) {
  Manifest manifest = sample_manifest();
  std::string text = manifest.to_text();
  Manifest parsed = Manifest::parse(text, "m");
  EXPECT_EQ(parsed.to_text(), text);
  EXPECT_EQ(parsed.shards[0].xxh64, 0xdeadbeefcafef00dull);
  EXPECT_EQ(parsed.tensors[0].shape, (Shape{2, 3}));
  EXPECT_EQ(parsed.metadata, manifest.metadata);

  // A changed value that still parses is caught by the body checksum.
  std::string tampered = text;
  size_t where = tampered.find("\"bytes\": 123");
  ASSERT_NE(where, std::string::npos);
  tampered.replace(where, 12, "\"bytes\": 124");
  EXPECT_THROW(Manifest::parse(tampered, "m"), FormatError);
  EXPECT_THROW(Manifest::parse(text.substr(0, text.size() / 2), "m"), FormatError);

  Manifest escaping = sample_manifest();
  escaping.files[0].file = "../outside";
  EXPECT_THROW(Manifest::parse(escaping.to_text(), "m"), FormatError);
  Manifest bad_root = sample_manifest();
  bad_root.shards[0].replicas = {0, 3};
  EXPECT_THROW(Manifest::parse(bad_root.to_text(), "m"), FormatError);
  Manifest bad_shard = sample_manifest();
  bad_shard.tensors[0].shard = 1;
  EXPECT_THROW(Manifest::parse(bad_shard.to_text(), "m"), FormatError);

  EXPECT_EQ(version_directory_name(7), "v0000000007");
  EXPECT_EQ(parse_version_directory_name("v0000000007"), 7u);
  EXPECT_FALSE(parse_version_directory_name("v000000007x"));
  EXPECT_FALSE(parse_version_directory_name("latest"));
}

// ---------------------------------------------------------------------------------------------
// Save and load

TEST(Store, SaveLoadRoundTripWithShardsReplicasManifestsAndVersions) {
  TempDir temp;
  CheckpointStore store(roots_in(temp, 3));
  NamedTensors first = make_tensors(1, 12, 3000);
  SaveOptions options{2, 20000};
  SaveResult saved = store.save(first, {{"step", 100}}, options, {{"vocab.txt", "[PAD]\n[UNK]\n"}});
  EXPECT_EQ(saved.version, 1u);
  EXPECT_TRUE(saved.faults.empty());
  EXPECT_EQ(store.latest(), 1u);

  std::vector<uint64_t> sizes;
  for (const auto& [name, tensor] : first) sizes.push_back(tensor.nbytes());
  const size_t expected_shards = plan_shards(sizes, options.shard_size_bytes).size();
  EXPECT_GT(expected_shards, 2u);

  Manifest manifest = store.read_manifest(1);
  ASSERT_EQ(manifest.shards.size(), expected_shards);
  EXPECT_EQ(manifest.metadata["step"], 100);
  for (size_t root = 0; root < 3; ++root) {
    EXPECT_TRUE(fs::exists(store.version_path(root, 1) / "manifest.json")) << "manifest on every root";
  }
  for (const ManifestObject* object : manifest.objects()) {
    ASSERT_EQ(object->replicas.size(), 2u);
    EXPECT_NE(object->replicas[0], object->replicas[1]);
    for (size_t root : object->replicas) {
      fs::path path = store.version_path(root, 1) / object->file;
      ASSERT_TRUE(fs::exists(path)) << path;
      EXPECT_EQ(fs::file_size(path), object->bytes);
    }
  }
  // Shards are plain safetensors files with at most shard_size tensor bytes (none here is
  // larger than a shard by itself).
  for (const ManifestObject& shard : manifest.shards) {
    SafetensorsFile file = SafetensorsFile::open(store.version_path(shard.replicas[0], 1) / shard.file);
    uint64_t data = 0;
    for (const std::string& name : file.names()) data += file.info(name).nbytes();
    EXPECT_LE(data, options.shard_size_bytes);
  }

  Checkpoint checkpoint = store.load();
  EXPECT_EQ(checkpoint.version(), 1u);
  expect_identical(checkpoint, first);
  EXPECT_TRUE(checkpoint.faults().empty());
  EXPECT_EQ(checkpoint.file("vocab.txt"), "[PAD]\n[UNK]\n");
  EXPECT_EQ(checkpoint.file_names(), std::vector<std::string>{"vocab.txt"});
  EXPECT_THROW(checkpoint.tensor("nope"), InvalidArgument);
  EXPECT_THROW(checkpoint.file("nope"), InvalidArgument);

  // A second version moves latest; the first stays loadable; numbering is monotonic.
  NamedTensors second = make_tensors(2, 5, 500);
  EXPECT_EQ(store.save(second, {}, {3, 1 << 20}).version, 2u);
  EXPECT_EQ(store.latest(), 2u);
  expect_identical(store.load(), second);
  expect_identical(store.load({1, VerifyMode::kLazy}), first);
  std::vector<VersionInfo> versions = store.versions();
  ASSERT_EQ(versions.size(), 2u);
  EXPECT_TRUE(versions[0].committed && versions[1].committed && versions[1].latest && !versions[0].latest);
  EXPECT_TRUE(store.verify().clean());

  // Bad requests.
  EXPECT_THROW(store.save(second, {}, {4, 100}), InvalidArgument);
  EXPECT_THROW(store.save(second, {}, {1, 0}), InvalidArgument);
  NamedTensors duplicate = {first[0], first[0]};
  EXPECT_THROW(store.save(duplicate, {}, {1, 100}), InvalidArgument);
  EXPECT_THROW(store.save(second, {}, {1, 100}, {{"../x", "y"}}), InvalidArgument);
  EXPECT_THROW(store.load({9, VerifyMode::kEager}), IoError);
}

TEST(Store, ShardsReadByPythonSafetensors) {
  fs::path python = testing::source_dir() / ".venv/bin/python";
  if (!fs::exists(python)) GTEST_SKIP() << "no project venv at " << python << " (scripts/setup.sh makes it)";
  TempDir temp;
  CheckpointStore store(roots_in(temp, 2));
  NamedTensors tensors = make_tensors(3, 4, 200);
  store.save(tensors, {}, {1, 1 << 20});
  Manifest manifest = store.read_manifest(1);
  ASSERT_EQ(manifest.shards.size(), 1u);
  fs::path shard = store.version_path(manifest.shards[0].replicas[0], 1) / manifest.shards[0].file;
  fs::path out = temp.path() / "python.txt";
  // The reference reader (safetensors' own, which refuses gaps and misalignment) lists names and
  // byte sizes; torch cannot hold every dtype we stored, so read raw bytes with numpy views.
  std::string command = str_cat(python.string(), " -c \"import sys; from safetensors import safe_open; "
                                "f = safe_open(sys.argv[1], 'np'); "
                                "open(sys.argv[2], 'w').write(' '.join(sorted(k + ':' + str(f.get_tensor(k).nbytes) "
                                "for k in f.keys())))\" ",
                                shard.string(), " ", out.string(), " 2>&1");
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  std::set<std::string> expected;
  std::string expected_text;
  for (const auto& [name, tensor] : tensors) expected.insert(name + ":" + std::to_string(tensor.nbytes()));
  for (const std::string& entry : expected) expected_text += (expected_text.empty() ? "" : " ") + entry;
  EXPECT_EQ(read_file(out), expected_text);
}

// ---------------------------------------------------------------------------------------------
// Faults on read: failover, reports, verify, repair

TEST(StoreFaults, EachKindOfReplicaFaultFailsOverAndIsRepaired) {
  for (Fault fault : {Fault::kDelete, Fault::kTruncate, Fault::kFlipData, Fault::kFlipHeader,
                      Fault::kSwapWithOtherShard, Fault::kDirectory}) {
    for (VerifyMode mode : {VerifyMode::kEager, VerifyMode::kLazy}) {
      SCOPED_TRACE(str_cat(fault_name(fault), mode == VerifyMode::kLazy ? " (lazy)" : " (eager)"));
      TempDir temp;
      CheckpointStore store(roots_in(temp, 3));
      NamedTensors tensors = make_tensors(11, 6, 400);
      store.save(tensors, {}, {2, 600});
      Manifest manifest = store.read_manifest(1);
      ASSERT_GE(manifest.shards.size(), 2u);
      const ManifestObject& target = manifest.shards[0];
      size_t root = target.replicas[0];  // the first replica: the one a reader tries first
      std::mt19937_64 random(5);
      inject(fault, store.version_path(root, 1) / target.file,
             store.version_path(manifest.shards[1].replicas[0], 1) / manifest.shards[1].file, random);

      Checkpoint checkpoint = store.load({0, mode});
      expect_identical(checkpoint, tensors);
      EXPECT_TRUE(report_names(checkpoint.faults(), target.file, root))
          << "load report: " << ::testing::PrintToString(checkpoint.warnings());
      EXPECT_EQ(checkpoint.faults().size(), 1u);

      VerifyReport report = store.verify();
      EXPECT_FALSE(report.clean());
      EXPECT_TRUE(report_names(report.faults, target.file, root));
      EXPECT_EQ(report.faults.size(), 1u);
      ASSERT_EQ(report.under_replicated.size(), 1u);

      RepairReport repair = store.repair();
      EXPECT_TRUE(repair.complete()) << ::testing::PrintToString(repair.failures);
      EXPECT_TRUE(store.verify().clean()) << ::testing::PrintToString(store.verify().faults);
      Checkpoint repaired = store.load();
      expect_identical(repaired, tensors);
      EXPECT_TRUE(repaired.faults().empty());
    }
  }
}

TEST(StoreFaults, PropertyAnySingleFaultPerShardLoadsBitIdenticalAndIsNamed) {
  std::mt19937_64 random(20240601);
  const Fault kinds[] = {Fault::kDelete, Fault::kTruncate, Fault::kFlipData, Fault::kFlipHeader,
                         Fault::kSwapWithOtherShard, Fault::kDirectory};
  for (int trial = 0; trial < 10; ++trial) {
    size_t root_count = 2 + random() % 3;
    size_t replication = 2 + random() % (root_count - 1);
    SCOPED_TRACE(str_cat("trial ", trial, " K=", root_count, " R=", replication));
    TempDir temp;
    CheckpointStore store(roots_in(temp, root_count));
    NamedTensors tensors = make_tensors(100 + static_cast<uint64_t>(trial), 4 + random() % 8, 600);
    store.save(tensors, {{"trial", trial}}, {replication, 300 + random() % 1200}, {{"config.json", "{}"}});
    Manifest manifest = store.read_manifest(1);
    ASSERT_GE(manifest.shards.size(), 2u);

    // One fault in one replica of every object (shards and the side file), and one manifest.
    std::vector<std::pair<std::string, size_t>> injected;
    std::vector<const ManifestObject*> objects = std::as_const(manifest).objects();
    for (size_t i = 0; i < objects.size(); ++i) {
      const ManifestObject& object = *objects[i];
      size_t root = object.replicas[random() % object.replicas.size()];
      Fault fault = kinds[random() % 6];
      if (i >= manifest.shards.size() && fault == Fault::kFlipHeader) fault = Fault::kFlipData;  // not safetensors
      const ManifestObject& other = manifest.shards[(i + 1) % manifest.shards.size()];
      fs::path other_path = store.version_path(other.replicas[0], 1) / other.file;
      if (i >= manifest.shards.size() && fault == Fault::kSwapWithOtherShard) fault = Fault::kTruncate;
      inject(fault, store.version_path(root, 1) / object.file, other_path, random);
      injected.emplace_back(object.file, root);
    }
    size_t manifest_root = random() % root_count;
    flip_byte(store.version_path(manifest_root, 1) / "manifest.json", 40, 0x04);

    Checkpoint checkpoint = store.load({0, random() % 2 ? VerifyMode::kEager : VerifyMode::kLazy});
    expect_identical(checkpoint, tensors);
    EXPECT_EQ(checkpoint.file("config.json"), "{}");
    VerifyReport report = store.verify();
    EXPECT_TRUE(report.lost.empty());
    EXPECT_TRUE(report_names(report.faults, "manifest.json", manifest_root));
    for (const auto& [object, root] : injected) {
      EXPECT_TRUE(report_names(report.faults, object, root)) << object << " on root " << root;
    }
    EXPECT_EQ(report.faults.size(), injected.size() + 1) << ::testing::PrintToString(report.faults);

    RepairReport repair = store.repair();
    EXPECT_TRUE(repair.complete()) << ::testing::PrintToString(repair.failures);
    VerifyReport after = store.verify();
    EXPECT_TRUE(after.clean()) << ::testing::PrintToString(after.faults);
    Manifest repaired = store.read_manifest(1);
    for (const ManifestObject* object : std::as_const(repaired).objects()) {
      EXPECT_EQ(object->replicas.size(), replication) << object->file;
    }
    expect_identical(store.load(), tensors);
  }
}

TEST(StoreFaults, NoGoodReplicaFailsNamingEveryReplica) {
  TempDir temp;
  CheckpointStore store(roots_in(temp, 3));
  NamedTensors tensors = make_tensors(4, 4, 300);
  store.save(tensors, {}, {2, 1 << 20});
  Manifest manifest = store.read_manifest(1);
  const ManifestObject& shard = manifest.shards[0];
  for (size_t root : shard.replicas) fs::remove(store.version_path(root, 1) / shard.file);
  try {
    store.load();
    FAIL() << "expected IoError";
  } catch (const IoError& error) {
    std::string message = error.what();
    EXPECT_NE(message.find("no good replica of shard-00000.safetensors"), std::string::npos) << message;
    for (size_t root : shard.replicas) EXPECT_NE(message.find(str_cat("on root ", root)), std::string::npos) << message;
  }
  // Lazy loading opens, and fails only on touch.
  Checkpoint lazy = store.load({0, VerifyMode::kLazy});
  EXPECT_THROW(lazy.tensor(tensors[0].first), IoError);
  VerifyReport report = store.verify();
  ASSERT_EQ(report.lost.size(), 1u);
  RepairReport repair = store.repair();
  EXPECT_FALSE(repair.complete());
  EXPECT_EQ(repair.lost.size(), 1u);
}

TEST(StoreFaults, VanishedRootLoadsAndRepairRebuildsIt) {
  TempDir temp;
  std::vector<fs::path> roots = roots_in(temp, 3);
  CheckpointStore store(roots);
  NamedTensors tensors = make_tensors(5, 8, 500);
  store.save(tensors, {}, {2, 3000}, {{"vocab.txt", "a\nb\n"}});
  fs::remove_all(roots[1]);

  Checkpoint checkpoint = store.load();
  expect_identical(checkpoint, tensors);
  EXPECT_EQ(checkpoint.file("vocab.txt"), "a\nb\n");
  for (const ReplicaFault& fault : checkpoint.faults()) EXPECT_EQ(fault.root, 1u) << fault.describe();
  VerifyReport report = store.verify();
  EXPECT_TRUE(report_names(report.faults, "manifest.json", 1));
  EXPECT_TRUE(report_names(report.faults, "latest", 1));

  RepairReport repair = store.repair();
  EXPECT_TRUE(repair.complete()) << ::testing::PrintToString(repair.failures);
  EXPECT_TRUE(store.verify().clean());
  EXPECT_TRUE(fs::exists(roots[1] / "scalebert-store.json"));
  expect_identical(store.load(), tensors);
}

TEST(StoreFaults, RootsGivenInAnotherOrderAreRefused) {
  TempDir temp;
  std::vector<fs::path> roots = roots_in(temp, 2);
  CheckpointStore(roots).save(make_tensors(6, 2, 10), {}, {1, 100});
  EXPECT_THROW(CheckpointStore({roots[1], roots[0]}), InvalidArgument);
  EXPECT_THROW(CheckpointStore({roots[0], roots[0]}), InvalidArgument);
  EXPECT_THROW(CheckpointStore({}), InvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// Faults on write

// A hook that refuses every write under one root, as a read-only or vanished mount does.
WriteHook read_only_root(size_t refused) {
  return [refused](const WriteEvent& event) {
    if (event.root == refused) throw IoError(str_cat("injected: root ", refused, " is read-only: ", event.path));
  };
}

TEST(StoreWriteFaults, ReadOnlyRootIsSkippedWhenEnoughRootsRemain) {
  TempDir temp;
  NamedTensors tensors = make_tensors(7, 6, 400);
  StoreOptions options;
  options.write_hook = read_only_root(1);
  std::vector<std::string> warnings;
  options.on_warning = [&](const std::string& warning) { warnings.push_back(warning); };
  CheckpointStore store(roots_in(temp, 3), options);
  SaveResult saved = store.save(tensors, {}, {2, 1000});
  EXPECT_TRUE(report_names(saved.faults, "version directory", 1));
  EXPECT_FALSE(warnings.empty());
  Manifest manifest = store.read_manifest(1);
  for (const ManifestObject* object : manifest.objects()) {
    EXPECT_EQ(object->replicas.size(), 2u);
    EXPECT_EQ(std::count(object->replicas.begin(), object->replicas.end(), 1u), 0) << object->file;
  }
  expect_identical(CheckpointStore(roots_in(temp, 3)).load(), tensors);
}

TEST(StoreWriteFaults, TooFewWritableRootsFailsAndKeepsThePreviousVersion) {
  TempDir temp;
  NamedTensors previous = make_tensors(8, 4, 300);
  CheckpointStore(roots_in(temp, 2)).save(previous, {}, {2, 1000});
  StoreOptions options;
  options.write_hook = read_only_root(0);
  CheckpointStore failing(roots_in(temp, 2), options);
  EXPECT_THROW(failing.save(make_tensors(9, 4, 300), {}, {2, 1000}), IoError);
  CheckpointStore store(roots_in(temp, 2));
  EXPECT_EQ(store.latest(), 1u);
  expect_identical(store.load(), previous);
}

TEST(StoreWriteFaults, WriteFailingMidwayLeavesNoTornFileAndPreviousVersionIntact) {
  TempDir temp;
  NamedTensors previous = make_tensors(10, 4, 2000);
  CheckpointStore(roots_in(temp, 2)).save(previous, {}, {2, 1 << 20});
  // The second replica of every shard is a chunked copy: fail it after its first 4 KiB chunk.
  StoreOptions options;
  options.copy_chunk_bytes = 4096;
  int failures = 0;
  options.write_hook = [&](const WriteEvent& event) {
    if (!event.begin && event.bytes_written >= 4096 && event.path.extension() == ".safetensors") {
      ++failures;
      throw IoError(str_cat("injected: no space left after ", event.bytes_written, " bytes of ", event.path));
    }
  };
  CheckpointStore failing(roots_in(temp, 2), options);
  NamedTensors next = make_tensors(11, 4, 2000);
  EXPECT_THROW(failing.save(next, {}, {2, 1 << 20}), IoError);
  EXPECT_GE(failures, 1);

  CheckpointStore store(roots_in(temp, 2));
  EXPECT_EQ(store.latest(), 1u);
  expect_identical(store.load(), previous);
  // The failed version is an incomplete directory without temporary files (the writer removed
  // its own); gc removes it once a newer version is committed, and numbering never reuses it.
  for (const fs::path& root : roots_in(temp, 2)) {
    for (const auto& entry : fs::recursive_directory_iterator(root)) {
      EXPECT_EQ(entry.path().filename().string().find(".tmp."), std::string::npos) << entry.path();
    }
  }
  std::vector<VersionInfo> versions = store.versions();
  ASSERT_EQ(versions.size(), 2u);
  EXPECT_FALSE(versions[1].committed);
  EXPECT_EQ(store.save(next, {}, {2, 1 << 20}).version, 3u);
  GcReport gc = store.gc(5);
  EXPECT_EQ(gc.removed_incomplete, std::vector<uint64_t>{2});
  expect_identical(store.load(), next);

}

TEST(StoreWriteFaults, CopyFailingMidwayOnOneRootMovesToAnotherRoot) {
  TempDir temp;
  StoreOptions options;
  options.copy_chunk_bytes = 4096;
  options.write_hook = [](const WriteEvent& event) {
    if (event.root == 1 && !event.begin && event.bytes_written >= 4096) {
      throw IoError(str_cat("injected: I/O error after ", event.bytes_written, " bytes of ", event.path));
    }
  };
  CheckpointStore store(roots_in(temp, 3), options);
  NamedTensors tensors = make_tensors(14, 6, 4000);
  SaveResult saved = store.save(tensors, {}, {2, 9000});
  ASSERT_FALSE(saved.faults.empty()) << "some copy to root 1 must have been cut short";
  EXPECT_EQ(saved.faults[0].root, 1u);
  Manifest manifest = store.read_manifest(1);
  for (const ManifestObject* object : std::as_const(manifest).objects()) EXPECT_EQ(object->replicas.size(), 2u);
  // Root 1 is skipped for the rest of that save: its manifest and pointer are what verify misses.
  for (const ReplicaFault& fault : CheckpointStore(roots_in(temp, 3)).verify().faults) {
    EXPECT_EQ(fault.root, 1u) << fault.describe();
    EXPECT_TRUE(fault.object == "manifest.json" || fault.object == "latest") << fault.describe();
  }
  expect_identical(CheckpointStore(roots_in(temp, 3)).load(), tensors);
}

TEST(StoreWriteFaults, RealReadOnlyBindMount) {
  TempDir temp;
  std::vector<fs::path> roots = roots_in(temp, 3);
  for (const fs::path& root : roots) fs::create_directories(root);
  if (::mount(roots[2].c_str(), roots[2].c_str(), nullptr, MS_BIND, nullptr) != 0) {
    GTEST_SKIP() << "cannot bind-mount (" << std::strerror(errno) << "): needs root and mount permission";
  }
  bool read_only = ::mount(nullptr, roots[2].c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) == 0;
  if (read_only) {
    CheckpointStore store(roots);
    NamedTensors tensors = make_tensors(12, 5, 300);
    SaveResult saved = store.save(tensors, {}, {2, 1000});
    EXPECT_TRUE(report_names(saved.faults, "version directory", 2)) << ::testing::PrintToString(saved.warnings);
    Manifest manifest = store.read_manifest(1);
    for (const ManifestObject* object : std::as_const(manifest).objects()) {
      EXPECT_EQ(std::count(object->replicas.begin(), object->replicas.end(), 2u), 0);
    }
    expect_identical(store.load(), tensors);
    RepairReport repair = store.repair();
    EXPECT_FALSE(repair.complete()) << "root 2 cannot take its manifest while read-only";
  }
  ::umount2(roots[2].c_str(), MNT_DETACH);
  if (!read_only) GTEST_SKIP() << "cannot remount read-only: " << std::strerror(errno);
}

TEST(StoreWriteFaults, RealFullTmpfsFailsTheWriteMidway) {
  TempDir temp;
  std::vector<fs::path> roots = roots_in(temp, 2);
  for (const fs::path& root : roots) fs::create_directories(root);
  if (::mount("tmpfs", roots[0].c_str(), "tmpfs", 0, "size=192k") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs (" << std::strerror(errno) << "): needs root and mount permission";
  }
  {
    CheckpointStore store(roots);
    NamedTensors small = make_tensors(13, 3, 200);
    store.save(small, {}, {2, 1 << 20});
    // ~400 KB of tensors cannot fit in 192 KB: save_safetensors hits ENOSPC midway on root 0.
    NamedTensors large;
    for (int i = 0; i < 4; ++i) {
      Tensor tensor = Tensor::zeros({100, 250}, DType::kF32);
      large.emplace_back(str_cat("big.", i), tensor);
    }
    try {
      store.save(large, {}, {2, 1 << 20});
      ADD_FAILURE() << "expected IoError";
    } catch (const IoError& error) {
      EXPECT_NE(std::string(error.what()).find("No space left"), std::string::npos) << error.what();
    }
    EXPECT_EQ(store.latest(), 1u);
    expect_identical(store.load(), small);
    EXPECT_TRUE(store.verify(1).clean());
  }
  ::umount2(roots[0].c_str(), MNT_DETACH);
}

// ---------------------------------------------------------------------------------------------
// A writer killed at random moments

TEST(StoreCrash, WriterKilledAtRandomMomentsLeavesEveryCommittedVersionIntact) {
  TempDir temp;
  const std::vector<fs::path> roots = roots_in(temp, 3);
  auto tensors_for = [](uint64_t seed) { return make_tensors(seed, 10, 6000); };
  const SaveOptions options{2, 16000};

  // Version 1, saved in-process; its duration bounds the kill times.
  auto start = std::chrono::steady_clock::now();
  CheckpointStore(roots).save(tensors_for(1000), {{"seed", 1000}}, options);
  double save_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  std::mt19937_64 random(77);
  int killed_midway = 0;
  for (int trial = 0; trial < 8; ++trial) {
    uint64_t seed = 2000 + static_cast<uint64_t>(trial);
    NamedTensors tensors = tensors_for(seed);  // made before fork: the child only writes
    pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      try {
        CheckpointStore(roots).save(tensors, {{"seed", seed}}, options);
      } catch (...) {
        ::_exit(3);
      }
      ::_exit(0);
    }
    auto delay = std::chrono::microseconds(static_cast<int64_t>(save_seconds * 2.0e6 * static_cast<double>(random() % 1000) / 1000.0));
    std::this_thread::sleep_for(delay);
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    if (WIFSIGNALED(status)) ++killed_midway;

    // Every committed version loads bit-identical to the tensors its seed makes.
    CheckpointStore store(roots);
    ASSERT_TRUE(store.latest().has_value());
    for (const VersionInfo& info : store.versions()) {
      if (!info.committed) continue;
      Checkpoint checkpoint = store.load({info.version, VerifyMode::kEager});
      expect_identical(checkpoint, tensors_for(checkpoint.metadata()["seed"].get<uint64_t>()));
    }
    expect_identical(store.load({1, VerifyMode::kEager}), tensors_for(1000));
    Checkpoint current = store.load();
    expect_identical(current, tensors_for(current.metadata()["seed"].get<uint64_t>()));
  }
  EXPECT_GE(killed_midway, 1) << "no kill landed during a save; the test did not exercise crashes";

  // Cleanup after crashes: repair what a kill cut short (manifests, pointers); a new save makes
  // every incomplete version older than a committed one, so gc may remove them all.
  CheckpointStore store(roots);
  RepairReport repair = store.repair();
  EXPECT_TRUE(repair.complete()) << ::testing::PrintToString(repair.failures);
  uint64_t final_version = store.save(tensors_for(3000), {{"seed", 3000}}, options).version;
  EXPECT_EQ(store.latest(), final_version);
  GcReport gc = store.gc(100);
  EXPECT_TRUE(store.verify().clean()) << ::testing::PrintToString(store.verify().faults);
  for (const VersionInfo& info : store.versions()) EXPECT_TRUE(info.committed) << "v" << info.version;
  std::cout << "[ crash ] " << killed_midway << " of 8 writers killed midway; gc removed " << gc.removed_incomplete.size()
            << " incomplete versions and " << gc.temporary_files_removed << " temporary files\n";
}

// ---------------------------------------------------------------------------------------------
// gc and the watcher

TEST(StoreVersions, GcKeepsTheNewestAndTheWatcherSeesNewVersions) {
  TempDir temp;
  CheckpointStore store(roots_in(temp, 2));
  StoreWatcher watcher(store, 0);
  EXPECT_FALSE(watcher.poll());
  std::vector<NamedTensors> saved;
  for (uint64_t i = 1; i <= 4; ++i) {
    saved.push_back(make_tensors(30 + i, 2, 50));
    store.save(saved.back(), {}, {1, 1 << 20});
    EXPECT_EQ(watcher.poll(), i);
    EXPECT_FALSE(watcher.poll());
  }
  // A stale temporary file of a dead writer, and one of a live one (this process).
  fs::path root = roots_in(temp, 2)[0];
  pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ::waitpid(dead, nullptr, 0);
  write_file_atomic(root / str_cat("latest.tmp.", dead, ".0"), "x");
  write_file_atomic(root / str_cat("latest.tmp.", ::getpid(), ".99"), "x");

  EXPECT_THROW(store.gc(0), InvalidArgument);
  GcReport report = store.gc(2);
  EXPECT_EQ(report.removed, (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(report.kept, (std::vector<uint64_t>{3, 4}));
  EXPECT_EQ(report.temporary_files_removed, 1u);
  EXPECT_FALSE(fs::exists(root / str_cat("latest.tmp.", dead, ".0")));
  EXPECT_TRUE(fs::exists(root / str_cat("latest.tmp.", ::getpid(), ".99")));
  EXPECT_FALSE(fs::exists(store.version_path(0, 1)));
  expect_identical(store.load(), saved[3]);
  expect_identical(store.load({3, VerifyMode::kEager}), saved[2]);
  EXPECT_THROW(store.load({1, VerifyMode::kEager}), IoError);
  EXPECT_EQ(store.save(saved[0], {}, {1, 1 << 20}).version, 5u) << "numbers never go back";

  // Every `latest` pointer lost: the newest committed version is still found.
  for (const fs::path& each : roots_in(temp, 2)) fs::remove(each / "latest");
  EXPECT_EQ(store.latest(), 5u);

  // A protected old version (a trainer's best checkpoint) survives a gc that keeps only the newest.
  store.save(saved[1], {}, {1, 1 << 20});  // version 6
  GcReport protected_report = store.gc(1, {3});
  EXPECT_EQ(protected_report.removed, (std::vector<uint64_t>{4, 5}));
  EXPECT_EQ(protected_report.kept, (std::vector<uint64_t>{3, 6}));
  expect_identical(store.load({3, VerifyMode::kEager}), saved[2]);
}

// ---------------------------------------------------------------------------------------------
// BERT models

TEST(StoreModel, HuggingFaceFolderRoundTripsThroughTheStore) {
  fs::path source = testing::fixture_path("tiny-bert-cls");
  SCALEBERT_REQUIRE_PATH(source / "config.json");
  TempDir temp;
  CheckpointStore store(roots_in(temp, 3));
  SaveResult saved = save_model_directory(store, source, {2, 20000});
  EXPECT_GT(saved.shards, 1u);
  Checkpoint checkpoint = store.load();
  EXPECT_EQ(checkpoint.metadata()["kind"], "bert");
  EXPECT_EQ(checkpoint.metadata()["head"], "sequence-classification");
  EXPECT_TRUE(checkpoint.has_file("vocab.txt"));

  fs::path out = temp.path() / "exported";
  materialize_hf_directory(checkpoint, out);
  BertModel original = BertModel::load(source);
  BertModel restored = BertModel::load(out);
  EXPECT_EQ(restored.head, original.head);
  EXPECT_EQ(restored.num_labels, original.num_labels);
  ASSERT_EQ(restored.parameters.entries().size(), original.parameters.entries().size());
  for (const ParameterEntry& entry : original.parameters.entries()) {
    EXPECT_TRUE(same_bytes(restored.parameters.get(entry.name), original.parameters.get(entry.name))) << entry.name;
  }
  EXPECT_EQ(read_file(out / "vocab.txt"), read_file(source / "vocab.txt"));
  EXPECT_EQ(read_file(out / "config.json"), read_file(source / "config.json"));
}

}  // namespace
}  // namespace scalebert::store
