// `scalebert ckpt`: save a tiny BERT folder, list, verify (clean, then with a corrupt replica),
// repair, gc and export back to a folder BertModel::load reads, through run_ckpt_command.
#include "cli/cmd_ckpt.h"
#include "io/store/manifest.h"
#include "io/store/store.h"

#include <fstream>

#include <gtest/gtest.h>

#include "model/bert_model.h"
#include "testing.h"

namespace scalebert::cli {
namespace {

namespace fs = std::filesystem;

// Runs the command, returning (exit code, stdout).
std::pair<int, std::string> run(const std::vector<std::string>& args) {
  ::testing::internal::CaptureStdout();
  int code = -1;
  try {
    code = run_ckpt_command(args);
  } catch (...) {
    ::testing::internal::GetCapturedStdout();
    throw;
  }
  return {code, ::testing::internal::GetCapturedStdout()};
}

TEST(CkptCommand, SaveListVerifyRepairGcExport) {
  fs::path model = testing::fixture_path("tiny-bert");
  SCALEBERT_REQUIRE_PATH(model / "config.json");
  const testing::TempDir temp;
  std::string roots = str_cat((temp / "a").string(), ",", (temp / "b").string(), ",", (temp / "c").string());

  auto [help_code, help] = run({"--help"});
  EXPECT_EQ(help_code, 0);
  EXPECT_NE(help.find("usage: scalebert ckpt"), std::string::npos);

  for (int i = 0; i < 3; ++i) {
    auto [code, out] = run({"save", model.string(), "--roots", roots, "--replication", "2", "--shard-size=20KB"});
    EXPECT_EQ(code, 0);
    EXPECT_NE(out.find(str_cat("saved version ", i + 1)), std::string::npos) << out;
  }
  auto [ls_code, listing] = run({"ls", "--roots", roots});
  EXPECT_EQ(ls_code, 0);
  EXPECT_NE(listing.find("v3"), std::string::npos);
  EXPECT_NE(listing.find("<- latest"), std::string::npos) << listing;
  EXPECT_EQ(run({"verify", "--roots", roots}).first, 0);

  // Corrupt one replica of version 3: verify exits 1 naming it; repair fixes it.
  store::CheckpointStore checkpoint_store({temp / "a", temp / "b", temp / "c"});
  store::Manifest manifest = checkpoint_store.read_manifest(3);
  const store::ManifestObject& shard = manifest.shards.at(1);
  fs::path replica = checkpoint_store.version_path(shard.replicas[0], 3) / shard.file;
  fs::resize_file(replica, fs::file_size(replica) - 3);
  auto [verify_code, report] = run({"verify", "--roots", roots, "--version", "3"});
  EXPECT_EQ(verify_code, 1);
  EXPECT_NE(report.find(str_cat("BAD  v3 ", shard.file, " on root ", shard.replicas[0])), std::string::npos) << report;
  auto [repair_code, repaired] = run({"repair", "--roots", roots});
  EXPECT_EQ(repair_code, 0) << repaired;
  EXPECT_EQ(run({"verify", "--roots", roots}).first, 0);

  auto [gc_code, collected] = run({"gc", "--roots", roots, "--keep", "1"});
  EXPECT_EQ(gc_code, 0);
  EXPECT_NE(collected.find("removed v1"), std::string::npos) << collected;
  EXPECT_EQ(checkpoint_store.versions().size(), 1u);

  fs::path out = temp / "exported";
  EXPECT_EQ(run({"export", "--roots", roots, "--out", out.string()}).first, 0);
  BertModel original = BertModel::load(model);
  BertModel restored = BertModel::load(out);
  for (const ParameterEntry& entry : original.parameters.entries()) {
    Tensor a = original.parameters.get(entry.name), b = restored.parameters.get(entry.name);
    EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << entry.name;
  }

  // Command-line mistakes are InvalidArgument naming the problem.
  EXPECT_THROW(run({"ls"}), InvalidArgument);
  EXPECT_THROW(run({"frobnicate", "--roots", roots}), InvalidArgument);
  EXPECT_THROW(run({"gc", "--roots", roots}), InvalidArgument);
  EXPECT_THROW(run({"save", model.string(), "--roots", roots, "--shard-size", "12XB"}), InvalidArgument);
  EXPECT_THROW(run({"ls", "--roots", roots, "--bogus", "1"}), InvalidArgument);
  EXPECT_THROW(run({"save", model.string(), "--roots", roots, "--replication", "4"}), InvalidArgument);
}

}  // namespace
}  // namespace scalebert::cli
