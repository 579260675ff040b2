// `scalebert tokenize`: text lines in, one JSON object of ids, type ids, tokens and code point
// offsets per line out (the fields of Hugging Face's tokenizers, offsets as Python indexes them).
#include "cli/common.h"
#include "pipeline/input_file.h"
#include "text/bert_tokenizer.h"

namespace scalebert::cli {

int run_tokenize(std::span<char* const> arguments) {
  ArgParser args("tokenize", "Tokenize text lines with a model folder's WordPiece tokenizer (vocab.txt, "
                             "tokenizer_config.json). One JSON object per input line:\n"
                             "  {\"line\": 1, \"ids\": [...], \"type_ids\": [...], \"tokens\": [...], "
                             "\"offsets\": [[begin, end], ...]}\n"
                             "Offsets are code point indexes into the line (as Hugging Face's Python API); "
                             "[CLS]/[SEP] have [0, 0]. With --pair, offsets of second-text tokens index the "
                             "second text.");
  args.required("model", "DIR", "model folder (only its tokenizer files are read)")
      .option("input", "FILE", "text file, one input per line; - reads standard input", "-")
      .option("output", "FILE", "JSONL output; - writes standard output", "-")
      .flag("pair", "each line holds two texts separated by a TAB: [CLS] a [SEP] b [SEP]")
      .common_options();
  if (!args.parse(arguments)) return 0;
  const std::string model_dir = args.get("model");
  check<IoError>(std::filesystem::is_directory(model_dir), "model directory ", model_dir,
                 " does not exist or is not a directory");
  const auto tokenizer = text::BertTokenizer::from_model_dir(model_dir);
  text::Truncation truncation;
  if (args.given("max-length")) truncation.max_length = static_cast<size_t>(args.get_int("max-length", 3));

  pipeline::InputOptions input_options;
  input_options.csv = false;
  input_options.tab_pairs = args.flag_set("pair");
  input_options.skip_blank = false;  // every line gets its output line, as a filter should
  const pipeline::InputSet inputs = pipeline::read_inputs(args.get("input"), input_options);

  Output out(args.get("output"));
  std::string line;
  for (const pipeline::InputRecord& record : inputs.records) {
    const text::Encoding encoding = inputs.has_pairs ? tokenizer->encode_pair(record.text, record.pair, truncation)
                                                     : tokenizer->encode(record.text, truncation);
    const auto offsets = text::codepoint_offsets(encoding, record.text, record.pair);
    line.clear();
    line += str_cat("{\"line\": ", record.line, ", \"ids\": [");
    for (size_t t = 0; t < encoding.size(); ++t) line += str_cat(t ? ", " : "", encoding.ids[t]);
    line += "], \"type_ids\": [";
    for (size_t t = 0; t < encoding.size(); ++t) line += str_cat(t ? ", " : "", encoding.type_ids[t]);
    line += "], \"tokens\": [";
    for (size_t t = 0; t < encoding.size(); ++t) {
      line += (t ? ", " : "") + json_quote(tokenizer->vocab().token(encoding.ids[t]));
    }
    line += "], \"offsets\": [";
    for (size_t t = 0; t < encoding.size(); ++t) {
      line += str_cat(t ? ", [" : "[", offsets[t].begin, ", ", offsets[t].end, "]");
    }
    line += "]}\n";
    out.write(line);
  }
  out.close();
  return 0;
}

}  // namespace scalebert::cli
