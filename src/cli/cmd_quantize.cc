// `scalebert quantize`: an f32 model folder (or a checkpoint-store version) to an int8 or bf16
// model folder, also saved as a new version of a checkpoint store with --store-roots, with an
// optional per-layer error report against f32.
#include <cstdio>
#include <sstream>

#include "cli/common.h"
#include "core/threads.h"
#include "io/store/locator.h"
#include "quant/calibration.h"
#include "quant/quantize.h"
#include "quant/quantized_model.h"
#include "text/bert_tokenizer.h"

namespace scalebert::cli {

namespace {

// Report samples when the user gives none: short financial texts of the kind ScaleBERT serves.
const char* const kDefaultSamples[] = {
    "$AAPL beats on revenue, guides higher for the holiday quarter",
    "Shares of the bank fell 8% after it cut its dividend and warned on loan losses.",
    "Oil prices steady as OPEC+ weighs further output cuts",
    "The Fed left rates unchanged and signaled two more hikes this year.",
    "Tesla deliveries miss estimates; stock slides premarket",
    "Company announces $2 billion share buyback program",
    "Moody's downgrades the issuer to Ba1, outlook negative",
    "Quarterly EPS of $1.12 vs. $0.98 consensus; margins expanded 150 bp",
};

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream stream(text);
  std::string part;
  while (std::getline(stream, part, ',')) {
    if (!part.empty()) parts.push_back(part);
  }
  return parts;
}

}  // namespace

int run_quantize(std::span<char* const> arguments) {
  ArgParser args("quantize",
                 "Quantize a model folder: every Linear weight int8 (symmetric per output channel, activations "
                 "quantized per token row at run time, or with static scales from --calibrate) or bf16; layer "
                 "norms, softmax and biases stay f32. The output folder holds model.safetensors (weights, scales, "
                 "and the recipe in its metadata) plus the config and tokenizer files, and loads like any model.");
  args.positional("MODEL_DIR", "f32 model folder, or a store version: store:ROOT,ROOT,...[@VERSION]")
      .positional("OUT_DIR", "output folder (created)")
      .required("dtype", "int8|bf16", "target precision")
      .option("calibrate", "FILE", "int8: static activation scales from these texts (text lines or CSV)")
      .option("calibration-samples", "N", "texts read from the calibration file", "256")
      .option("keep-f32", "NAMES", "comma-separated Linear names or prefixes kept f32 (e.g. classifier,encoder.layer.11)")
      .flag("f32-embeddings", "int8: keep the word embeddings f32 (larger file)")
      .flag("report", "print per-layer and end-to-end error against f32")
      .option("samples", "FILE", "report: texts to measure on (default: the calibration file, else built-in texts)")
      .option("text-column", "NAME", "CSV column with the texts", "text")
      .option("threads", "N", "threads (0: all cores)", "0")
      .option("store-roots", "A,B,...", "also save the quantized model as a new version of this checkpoint store")
      .option("replicas", "R", "store: roots holding each shard (default min(2, roots))")
      .option("shard-size", "S", "store: tensor bytes per shard, e.g. 512MB, 1GiB", "1GiB")
      .epilog("examples:\n"
              "  scalebert quantize models/minilm models/minilm-int8 --dtype int8\n"
              "  scalebert quantize store:/d0/ckpt,/d1/ckpt@3 out/int8 --dtype int8 \\\n"
              "                     --store-roots /d0/q,/d1/q,/d2/q --replicas 2\n");
  if (!args.parse(arguments)) return 0;
  set_num_threads(static_cast<int>(args.get_int("threads", 0)));
  quant::QuantizeOptions options;
  const std::string dtype = args.get("dtype");
  if (dtype != "int8" && dtype != "bf16") {
    throw UsageError(str_cat("option --dtype: unsupported dtype \"", dtype, "\" (expected int8 or bf16)"));
  }
  options.dtype = kernels::precision_from_name(dtype);
  options.calibration_file = args.get("calibrate");
  options.calibration_samples = args.get_int("calibration-samples", 1);
  options.keep_f32 = split_commas(args.get("keep-f32"));
  options.int8_embeddings = !args.flag_set("f32-embeddings");
  options.text_column = args.get("text-column");
  const std::string model_arg = args.positional_value("MODEL_DIR");
  const std::string out_dir = args.positional_value("OUT_DIR");

  // A store version as the source: verified (failing over to good replicas) and written out as a
  // temporary folder, removed at the end.
  store::MaterializedModel source;
  std::string model_dir = model_arg;
  std::optional<store::StoreLocator> locator;
  try {
    locator = store::parse_store_locator(model_arg);
  } catch (const InvalidArgument& error) {
    throw UsageError(error.what());
  }
  if (locator) {
    source = store::materialize_version(locator->roots, locator->version, "quantize-source",
                                        [](const std::string& warning) {
                                          std::fprintf(stderr, "quantize: checkpoint store: %s\n", warning.c_str());
                                        });
    model_dir = source.directory().string();
    std::printf("source: version %llu of %s\n", static_cast<unsigned long long>(source.version()),
                model_arg.c_str());
  }
  std::optional<store::CheckpointStore> target;
  store::SaveOptions save_options;
  if (args.given("store-roots")) {
    std::vector<std::filesystem::path> roots;
    try {
      roots = store::split_roots(args.get("store-roots"), "option --store-roots");
      save_options.shard_size_bytes = store::parse_byte_size(args.get("shard-size"), "option --shard-size");
    } catch (const InvalidArgument& error) {
      throw UsageError(error.what());
    }
    save_options.replication = args.given("replicas") ? static_cast<size_t>(args.get_int("replicas", 1))
                                                      : std::min<size_t>(2, roots.size());
    if (save_options.replication > roots.size()) {
      throw UsageError(str_cat("option --replicas: ", save_options.replication, " is more than the ", roots.size(),
                               " store roots"));
    }
    store::StoreOptions store_options;
    store_options.on_warning = [](const std::string& warning) {
      std::fprintf(stderr, "quantize: checkpoint store: %s\n", warning.c_str());
    };
    target.emplace(std::move(roots), store_options);
  } else if (args.given("replicas")) {
    throw UsageError("option --replicas needs --store-roots");
  }

  const quant::QuantizeSummary summary = quant::quantize_model(model_dir, out_dir, options);
  std::printf("quantized %s -> %s: %s, %s activations, %ld Linear layers low precision, %ld f32, "
              "word embeddings %s\n",
              model_dir.c_str(), out_dir.c_str(), dtype.c_str(),
              summary.recipe.static_activations ? "static" : "dynamic",
              static_cast<long>(summary.layers_low_precision), static_cast<long>(summary.layers_f32),
              summary.recipe.int8_embeddings ? "int8" : "f32");
  std::printf("weights: %.1f MB -> %.1f MB (%.1f%%) in %.2f s\n", summary.input_bytes / 1e6, summary.output_bytes / 1e6,
              summary.input_bytes > 0 ? 100.0 * summary.output_bytes / summary.input_bytes : 0.0, summary.seconds);
  if (target) {
    nlohmann::json extra = {{"source", locator ? format_store_locator(store::StoreLocator{locator->roots, source.version()})
                                               : std::filesystem::absolute(model_dir).lexically_normal().string()}};
    const store::SaveResult saved = quant::save_quantized_model(*target, out_dir, save_options, extra);
    std::printf("store: saved version %llu (%zu shards, %zu replicas) to %s\n",
                static_cast<unsigned long long>(saved.version), saved.shards, save_options.replication,
                args.get("store-roots").c_str());
  }
  if (!kernels::cpu_has_int8_dot_product() && options.dtype == kernels::Precision::kInt8) {
    std::printf("note: this CPU lacks AVX-512 VNNI: the int8 model will run in f32 here\n");
  }

  if (args.flag_set("report")) {
    std::vector<std::string> texts;
    if (args.given("samples") || !options.calibration_file.empty()) {
      const std::string file = args.given("samples") ? args.get("samples") : options.calibration_file.string();
      texts = quant::read_sample_texts(file, options.calibration_samples, options.text_column);
    } else {
      texts.assign(std::begin(kDefaultSamples), std::end(kDefaultSamples));
    }
    auto model = std::make_shared<const BertModel>(BertModel::load(model_dir));
    auto tokenizer = text::BertTokenizer::from_model_dir(model_dir);
    const int64_t max_length = std::min<int64_t>(options.max_length, model->config.max_position_embeddings);
    const quant::QuantizationReport report = quant::quantization_report(
        model, quant::precision_plan(summary.recipe), quant::encode_samples(*tokenizer, texts, max_length));
    std::printf("report over %zu texts\n%s", texts.size(), quant::format_report(report).c_str());
  }
  return 0;
}

}  // namespace scalebert::cli
