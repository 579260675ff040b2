// scalebert command-line entry point: dispatches to a command and turns every error into a message
// and an exit code (1 for failures, 2 for usage errors); nothing escapes as a crash.
#include <cstdio>
#include <cstring>
#include <exception>
#include <span>
#include <string>
#include <vector>

#include "cli/cmd_ckpt.h"
#include "cli/cmd_data.h"
#include "cli/cmd_train.h"
#include "cli/common.h"
#include "core/threads.h"
#include "dist/communicator.h"

namespace {

// Commands written against a vector of arguments.
int run_ckpt(std::span<char* const> args) {
  return scalebert::cli::run_ckpt_command(std::vector<std::string>(args.begin(), args.end()));
}
int run_data(std::span<char* const> args) {
  return scalebert::cli::run_data_command(std::vector<std::string>(args.begin(), args.end()));
}
int run_train(std::span<char* const> args) {
  return scalebert::cli::run_train_command(std::vector<std::string>(args.begin(), args.end()));
}

struct Command {
  const char* name;
  int (*run)(std::span<char* const>);
  const char* summary;
};

constexpr Command kCommands[] = {
    {"info", scalebert::cli::run_info, "summarize a model folder: config, head, labels, parameters, weights"},
    {"tokenize", scalebert::cli::run_tokenize, "text lines in, JSONL token ids, tokens and offsets out"},
    {"embed", scalebert::cli::run_embed, "sentence embeddings (cls or mean pooling) as JSONL"},
    {"classify", scalebert::cli::run_classify, "sequence classification with label probabilities as JSONL"},
    {"search", scalebert::cli::run_search, "semantic search: top-k corpus texts for each query"},
    {"serve", scalebert::cli::run_serve, "KServe v2 inference server over a Triton-style model repository"},
    {"features", scalebert::cli::run_features, "frozen-encoder features of a dataset, cached on disk"},
    {"train-head", scalebert::cli::run_train_head, "train an MLP head on cached features (accuracy, macro-F1)"},
    {"train", run_train, "fine-tune or pretrain: classification, ner, qa, mlm (config file and flags)"},
    {"data", run_data, "convert the shared datasets; build a WordPiece vocabulary"},
    {"quantize", scalebert::cli::run_quantize, "int8 or bf16 model folder from an f32 one, with an error report"},
    {"ckpt", run_ckpt, "sharded, replicated checkpoint store: save, ls, verify, repair, gc, export"},
};

void print_usage(std::FILE* out) {
  std::fputs("usage: scalebert <command> [options]   (scalebert <command> --help for its options)\n\ncommands:\n",
             out);
  for (const Command& command : kCommands) std::fprintf(out, "  %-10s %s\n", command.name, command.summary);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    print_usage(stderr);
    return 2;
  }
  const std::string name = argv[1];
  // The server's kernel threads should stop spinning soon after each batch (see the function).
  if (name == "serve") scalebert::restart_with_openmp_spin_count(argv, scalebert::kServingSpinCount);
  if (name == "--help" || name == "-h" || name == "help") {
    print_usage(stdout);
    return 0;
  }
  if (name == "--version") {
    std::puts("scalebert 0.1.0");
    return 0;
  }
  const Command* command = nullptr;
  for (const Command& candidate : kCommands) {
    if (name == candidate.name) command = &candidate;
  }
  if (command == nullptr) {
    std::fprintf(stderr, "scalebert: error: unknown command '%s'\n", name.c_str());
    print_usage(stderr);
    return 2;
  }
  // An error on one rank of a distributed run ends the whole job: the other ranks would otherwise
  // wait in their next collective forever.
  const auto failed = [](int code) {
    std::fflush(stderr);
    scalebert::dist::abort_job_if_distributed(code);
    return code;
  };
  try {
    return command->run(std::span<char* const>(argv + 2, static_cast<size_t>(argc - 2)));
  } catch (const scalebert::cli::UsageError& error) {
    std::fprintf(stderr, "scalebert: error: %s\n", error.what());
    return failed(2);
  } catch (const scalebert::Error& error) {
    std::fprintf(stderr, "scalebert: error: %s\n", error.what());
    return failed(1);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "scalebert: error: out of memory (try a smaller --batch-size)\n");
    return failed(1);
  } catch (const std::exception& error) {
    // Not a ScaleBERT error: a defect or a library's exception that was not translated. Still a
    // message and an exit code, never an abort.
    std::fprintf(stderr, "scalebert: error: unexpected failure: %s\n", error.what());
    return failed(1);
  }
}
