// Raw-text packing and seeded BERT masking for masked-LM pretraining.
#include "train/data/mlm.h"

#include <algorithm>

#include "core/error.h"
#include "io/csv.h"
#include "io/file_util.h"
#include "train/data/conll.h"
#include "train/data/random.h"

namespace scalebert::train::data {

MlmPacker::MlmPacker(const text::BertTokenizer& tokenizer, size_t max_length)
    : tokenizer_(tokenizer), max_length_(max_length) {
  check(max_length >= 3, "masked LM: max_length ", max_length, " leaves no room between [CLS] and [SEP]");
}

void MlmPacker::close_sequence() {
  if (current_.input_ids.size() > 1) {
    current_.input_ids.push_back(tokenizer_.sep_id());
    sequences_.push_back(std::move(current_));
  }
  current_ = MlmSequence();
}

void MlmPacker::add_text(std::string_view text, const std::string& source) {
  io::check_utf8_lines(text, source);
  const size_t capacity = max_length_ - 2;  // tokens between [CLS] and [SEP]
  int64_t line = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view record = text.substr(pos, end - pos);
    pos = end + 1;
    ++line;
    scratch_.clear();
    tokenizer_.tokenize(record, scratch_);
    if (scratch_.ids.empty()) {
      // A blank (or whitespace-only) line ends a document.
      if (record.find_first_not_of(" \t\r") == std::string_view::npos) close_sequence();
      continue;
    }
    ++lines_;
    tokens_ += static_cast<int64_t>(scratch_.ids.size());
    const size_t used = current_.input_ids.empty() ? 0 : current_.input_ids.size() - 1;
    if (used > 0 && used + scratch_.ids.size() > capacity) close_sequence();
    size_t taken = 0;
    while (taken < scratch_.ids.size()) {
      if (current_.input_ids.empty()) {
        current_.input_ids.push_back(tokenizer_.cls_id());
        current_.source = source;
        current_.first_line = line;
      }
      const size_t room = capacity - (current_.input_ids.size() - 1);
      const size_t count = std::min(room, scratch_.ids.size() - taken);
      current_.input_ids.insert(current_.input_ids.end(), scratch_.ids.begin() + static_cast<std::ptrdiff_t>(taken),
                                scratch_.ids.begin() + static_cast<std::ptrdiff_t>(taken + count));
      taken += count;
      if (current_.input_ids.size() - 1 == capacity) close_sequence();
    }
  }
  close_sequence();  // a file ends its last document
}

void MlmPacker::add_file(const std::filesystem::path& path) { add_text(read_file(path), path.string()); }

std::vector<MlmSequence> MlmPacker::finish() {
  close_sequence();
  return std::move(sequences_);
}

MaskingOptions masking_options_for(const text::BertTokenizer& tokenizer) {
  MaskingOptions options;
  options.mask_id = tokenizer.vocab().find(tokenizer.options().mask_token);
  check<FormatError>(options.mask_id >= 0, "masked LM: the vocabulary ", tokenizer.vocab().origin(),
                     " has no mask token '", tokenizer.options().mask_token, "'");
  options.vocab_size = tokenizer.vocab().size();
  options.special_ids = {tokenizer.cls_id(), tokenizer.sep_id()};
  if (tokenizer.pad_id() >= 0) options.special_ids.push_back(tokenizer.pad_id());
  return options;
}

MaskedExample mask_tokens(std::span<const int32_t> input_ids, const MaskingOptions& options, uint64_t seed,
                          uint64_t epoch, uint64_t example_index) {
  check(options.mask_probability >= 0.0 && options.mask_probability <= 1.0 && options.replace_with_mask >= 0.0 &&
            options.replace_with_random >= 0.0 && options.replace_with_mask + options.replace_with_random <= 1.0,
        "masking: probabilities (", options.mask_probability, ", ", options.replace_with_mask, ", ",
        options.replace_with_random, ") must lie in [0, 1] with mask + random <= 1");
  check(options.mask_id >= 0 && options.vocab_size > 0, "masking: mask id ", options.mask_id, " and vocab size ",
        options.vocab_size, " must be set");
  Rng rng(derive_key(seed, {epoch, example_index}));
  MaskedExample out;
  out.input_ids.assign(input_ids.begin(), input_ids.end());
  out.labels.assign(input_ids.size(), kIgnoreIndex);
  for (size_t t = 0; t < input_ids.size(); ++t) {
    // Three draws per position whether or not it is selected, so one position's outcome never
    // shifts another's.
    const double select = rng.uniform_double();
    const double action = rng.uniform_double();
    const uint64_t random_id = rng.uniform(static_cast<uint64_t>(options.vocab_size));
    const bool special = std::find(options.special_ids.begin(), options.special_ids.end(), input_ids[t]) !=
                         options.special_ids.end();
    if (special || select >= options.mask_probability) continue;
    out.labels[t] = input_ids[t];
    if (action < options.replace_with_mask) {
      out.input_ids[t] = options.mask_id;
    } else if (action < options.replace_with_mask + options.replace_with_random) {
      out.input_ids[t] = static_cast<int32_t>(random_id);
    }
  }
  return out;
}

}  // namespace scalebert::train::data
