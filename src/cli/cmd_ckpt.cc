// The `ckpt` command: parses its own flags (it only needs --roots lists and a few numbers, and
// depends on nothing but the library so tests can drive it directly) and prints the store's
// reports for people.
#include "cli/cmd_ckpt.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <ctime>
#include <map>
#include <optional>

#include "core/error.h"
#include "io/store/locator.h"
#include "io/store/model_checkpoint.h"
#include "io/store/store.h"

namespace scalebert::cli {

namespace {

namespace fs = std::filesystem;
using store::CheckpointStore;

constexpr const char* kUsage = R"(usage: scalebert ckpt <subcommand> --roots DIR[,DIR...] [options]

A sharded, replicated, checksummed checkpoint store over K root folders (disks, mounts).
Give the roots in the same order every time (--roots may repeat or take a comma list).

subcommands:
  save DIR       store the Hugging Face model folder DIR (config.json, model.safetensors, vocab)
                 as a new version and point `latest` at it
                   --replication R   roots per shard, 1..K (default 2, or K when K < 2)
                   --shard-size S    tensor bytes per shard: 512MB, 1GiB, 65536 (default 1GiB)
  ls             list versions: committed or incomplete, size, shards, manifest copies
  verify         check every replica's size, xxh64 and header; exit 1 when any is bad
                   --version N       only version N (default: every committed version)
  repair         re-create missing or corrupt replicas from good ones until each has R again
                   --version N       only version N
  gc             remove old versions, crashed writes and stale temporary files
                   --keep N          newest committed versions to keep (required)
  export         write a version as a Hugging Face folder (config.json, model.safetensors, vocab)
                   --out DIR         destination folder (required)
                   --version N       default: latest
  --help         this text
)";

struct Parsed {
  std::string subcommand;
  std::vector<std::string> positionals;
  std::vector<fs::path> roots;
  std::map<std::string, std::string> options;
  bool help = false;
};

Parsed parse(const std::vector<std::string>& args) {
  Parsed parsed;
  static const std::vector<std::string> kValued = {"--roots", "--replication", "--shard-size", "--version", "--keep",
                                                   "--out"};
  for (size_t i = 0; i < args.size(); ++i) {
    std::string word = args[i];
    if (word == "--help" || word == "-h") {
      parsed.help = true;
      continue;
    }
    if (word.rfind("--", 0) != 0) {
      if (parsed.subcommand.empty()) parsed.subcommand = word;
      else parsed.positionals.push_back(word);
      continue;
    }
    std::string value;
    size_t equals = word.find('=');
    if (equals != std::string::npos) {
      value = word.substr(equals + 1);
      word = word.substr(0, equals);
    }
    check(std::find(kValued.begin(), kValued.end(), word) != kValued.end(), "ckpt: unknown option ", word,
          " (see scalebert ckpt --help)");
    if (equals == std::string::npos) {
      check(i + 1 < args.size(), "ckpt: ", word, " needs a value");
      value = args[++i];
    }
    if (word == "--roots") {
      for (fs::path& root : store::split_roots(value, "ckpt: --roots")) parsed.roots.push_back(std::move(root));
    } else {
      parsed.options[word] = value;
    }
  }
  return parsed;
}

uint64_t parse_unsigned(const std::string& text, const std::string& flag) {
  uint64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  check(error == std::errc() && end == text.data() + text.size() && !text.empty(), "ckpt: ", flag,
        " must be a non-negative integer, got \"", text, "\"");
  return value;
}

std::string human_bytes(uint64_t bytes) {
  char text[32];
  if (bytes >= (1ull << 30)) std::snprintf(text, sizeof(text), "%.2f GiB", static_cast<double>(bytes) / (1ull << 30));
  else if (bytes >= (1ull << 20)) std::snprintf(text, sizeof(text), "%.1f MiB", static_cast<double>(bytes) / (1ull << 20));
  else std::snprintf(text, sizeof(text), "%llu B", static_cast<unsigned long long>(bytes));
  return text;
}

std::optional<uint64_t> version_option(const Parsed& parsed) {
  auto found = parsed.options.find("--version");
  if (found == parsed.options.end()) return std::nullopt;
  uint64_t version = parse_unsigned(found->second, "--version");
  check(version > 0, "ckpt: --version must be at least 1");
  return version;
}

void print_faults(const std::vector<store::ReplicaFault>& faults) {
  for (const store::ReplicaFault& fault : faults) std::printf("BAD  %s\n", fault.describe().c_str());
}

int run_save(CheckpointStore& checkpoint_store, const Parsed& parsed) {
  check(parsed.positionals.size() == 1, "ckpt save: give exactly one model folder, got ", parsed.positionals.size());
  store::SaveOptions options;
  options.replication = std::min<size_t>(2, checkpoint_store.roots().size());
  if (parsed.options.count("--replication")) {
    options.replication = parse_unsigned(parsed.options.at("--replication"), "--replication");
  }
  if (parsed.options.count("--shard-size")) {
    options.shard_size_bytes = store::parse_byte_size(parsed.options.at("--shard-size"), "ckpt: --shard-size");
  }
  store::SaveResult result = store::save_model_directory(checkpoint_store, parsed.positionals[0], options);
  for (const std::string& warning : result.warnings) std::printf("warning: %s\n", warning.c_str());
  std::printf("saved version %llu: %zu shards, %s per replica set, R=%zu over %zu roots\n",
              static_cast<unsigned long long>(result.version), result.shards, human_bytes(result.bytes).c_str(),
              options.replication, checkpoint_store.roots().size());
  return 0;
}

int run_ls(const CheckpointStore& checkpoint_store) {
  std::vector<store::VersionInfo> versions = checkpoint_store.versions();
  if (versions.empty()) std::printf("no versions\n");
  for (const store::VersionInfo& info : versions) {
    if (!info.committed) {
      std::printf("v%-6llu incomplete (crashed or running write) on %zu roots\n",
                  static_cast<unsigned long long>(info.version), info.roots_with_directory);
      continue;
    }
    const store::Manifest& manifest = *info.manifest;
    std::time_t seconds = static_cast<std::time_t>(manifest.created_unix_ms / 1000);
    char when[32];
    std::strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", std::gmtime(&seconds));
    std::printf("v%-6llu %s UTC  %10s  %3zu tensors  %3zu shards  %zu files  R=%zu  manifests %zu/%zu%s\n",
                static_cast<unsigned long long>(info.version), when, human_bytes(manifest.total_bytes()).c_str(),
                manifest.tensors.size(), manifest.shards.size(), manifest.files.size(), manifest.replication,
                info.manifest_copies, checkpoint_store.roots().size(), info.latest ? "  <- latest" : "");
  }
  return 0;
}

int run_verify(const CheckpointStore& checkpoint_store, const Parsed& parsed) {
  store::VerifyReport report = checkpoint_store.verify(version_option(parsed));
  print_faults(report.faults);
  for (const std::string& line : report.under_replicated) std::printf("UNDER-REPLICATED  %s\n", line.c_str());
  for (const std::string& line : report.lost) std::printf("LOST  %s\n", line.c_str());
  std::printf("%s: %zu versions, %zu replicas checked, %zu bad\n", report.clean() ? "clean" : "DAMAGED",
              report.versions.size(), report.replicas_checked, report.faults.size());
  return report.clean() ? 0 : 1;
}

int run_repair(CheckpointStore& checkpoint_store, const Parsed& parsed) {
  store::RepairReport report = checkpoint_store.repair(version_option(parsed));
  print_faults(report.before.faults);
  for (const std::string& line : report.actions) std::printf("repair: %s\n", line.c_str());
  for (const std::string& line : report.failures) std::printf("FAILED  %s\n", line.c_str());
  for (const std::string& line : report.lost) std::printf("LOST  %s\n", line.c_str());
  std::printf("%s: %zu bad replicas found, %zu actions\n", report.complete() ? "repaired" : "INCOMPLETE",
              report.before.faults.size(), report.actions.size());
  return report.complete() ? 0 : 1;
}

int run_gc(CheckpointStore& checkpoint_store, const Parsed& parsed) {
  check(parsed.options.count("--keep"), "ckpt gc: --keep N is required");
  store::GcReport report = checkpoint_store.gc(parse_unsigned(parsed.options.at("--keep"), "--keep"));
  for (const std::string& warning : report.warnings) std::printf("warning: %s\n", warning.c_str());
  for (uint64_t version : report.removed) std::printf("removed v%llu\n", static_cast<unsigned long long>(version));
  for (uint64_t version : report.removed_incomplete) {
    std::printf("removed incomplete v%llu\n", static_cast<unsigned long long>(version));
  }
  std::printf("kept %zu versions, removed %zu (+%zu incomplete), %zu stale temporary files\n", report.kept.size(),
              report.removed.size(), report.removed_incomplete.size(), report.temporary_files_removed);
  return 0;
}

int run_export(const CheckpointStore& checkpoint_store, const Parsed& parsed) {
  check(parsed.options.count("--out"), "ckpt export: --out DIR is required");
  store::LoadOptions options;
  options.version = version_option(parsed).value_or(0);
  store::Checkpoint checkpoint = checkpoint_store.load(options);
  for (const std::string& warning : checkpoint.warnings()) std::printf("warning: %s\n", warning.c_str());
  store::materialize_hf_directory(checkpoint, parsed.options.at("--out"));
  for (const std::string& warning : checkpoint.warnings()) std::printf("warning: %s\n", warning.c_str());
  std::printf("exported version %llu (%zu tensors) to %s\n", static_cast<unsigned long long>(checkpoint.version()),
              checkpoint.names().size(), parsed.options.at("--out").c_str());
  return 0;
}

}  // namespace

int run_ckpt_command(const std::vector<std::string>& args) {
  Parsed parsed = parse(args);
  if (parsed.help || parsed.subcommand.empty()) {
    std::fputs(kUsage, stdout);
    check(parsed.help, "ckpt: missing subcommand (save, ls, verify, repair, gc, export)");
    return 0;
  }
  static const std::vector<std::string> kSubcommands = {"save", "ls", "verify", "repair", "gc", "export"};
  check(std::find(kSubcommands.begin(), kSubcommands.end(), parsed.subcommand) != kSubcommands.end(),
        "ckpt: unknown subcommand \"", parsed.subcommand, "\" (save, ls, verify, repair, gc, export)");
  check(parsed.subcommand == "save" || parsed.positionals.empty(), "ckpt ", parsed.subcommand,
        ": unexpected argument \"", parsed.positionals.empty() ? "" : parsed.positionals[0], "\"");
  check(!parsed.roots.empty(), "ckpt ", parsed.subcommand, ": --roots DIR[,DIR...] is required");

  store::StoreOptions options;
  options.on_warning = [](const std::string& warning) { std::fprintf(stderr, "warning: %s\n", warning.c_str()); };
  CheckpointStore checkpoint_store(parsed.roots, options);
  if (parsed.subcommand == "save") return run_save(checkpoint_store, parsed);
  if (parsed.subcommand == "ls") return run_ls(checkpoint_store);
  if (parsed.subcommand == "verify") return run_verify(checkpoint_store, parsed);
  if (parsed.subcommand == "repair") return run_repair(checkpoint_store, parsed);
  if (parsed.subcommand == "gc") return run_gc(checkpoint_store, parsed);
  return run_export(checkpoint_store, parsed);
}

}  // namespace scalebert::cli
