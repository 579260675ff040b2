// Unit tests of the BERT tokenizer on small hand-written vocabularies: vocabulary loading and its
// errors, greedy WordPiece, the basic tokenizer's normalization and splitting, byte and code point
// offsets, truncation strategies and windows, padding, batches, model directories, invalid UTF-8.
// (The comparison with the `tokenizers` package is test_tokenizer_ground_truth.cc.)
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "testing.h"
#include "text/bert_tokenizer.h"
#include "text/unicode_tables.h"
#include "text/utf8.h"

namespace scalebert::text {
namespace {

const std::vector<std::string> kTokens = {
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",                    // 0-4
    "un", "##aff", "##able", "unaff", "aff",                          // 5-9
    "the", "cafe", "!", ",", ".",                                     // 10-14
    "a", "##b", "##c", "b", "c",                                      // 15-19
    "$", "aapl", "中", "文", "hello",                                 // 20-24
    "world", "Hello", "é", "i", "##̇",                                // 25-29
    "##a", "aa", "x", "y", "z",                                       // 30-34
};

using testing::TempDir;

std::unique_ptr<BertTokenizer> make_tokenizer(bool lowercase = true, std::optional<bool> strip_accents = {}) {
  BertTokenizerOptions options;
  options.lowercase = lowercase;
  options.strip_accents = strip_accents;
  return std::make_unique<BertTokenizer>(Vocab::from_tokens(kTokens, "unit vocab"), options);
}

std::vector<std::string> tokens_of(const BertTokenizer& tokenizer, const Encoding& encoding) {
  std::vector<std::string> tokens;
  for (int32_t id : encoding.ids) tokens.emplace_back(tokenizer.vocab().token(id));
  return tokens;
}

using Strings = std::vector<std::string>;

// ---------------------------------------------------------------------------------------------
// Vocabulary

TEST(Vocab, LoadsIdsByLineAndTrimsTrailingWhitespace) {
  TempDir dir;
  const auto path = dir.write("vocab.txt", "[PAD]\r\n[UNK]\nabc  \n##de\n\nxyz");
  const Vocab vocab = Vocab::load(path);
  EXPECT_EQ(vocab.size(), 6);
  EXPECT_EQ(vocab.find("[PAD]"), 0);
  EXPECT_EQ(vocab.unk_id(), 1);
  EXPECT_EQ(vocab.find("abc"), 2);
  EXPECT_EQ(vocab.find("abc  "), -1);
  EXPECT_EQ(vocab.find("##de"), 3);
  EXPECT_EQ(vocab.find_continuation("de"), 3);
  EXPECT_EQ(vocab.find_continuation("abc"), -1);
  EXPECT_EQ(vocab.find(""), 4);
  EXPECT_EQ(vocab.find("xyz"), 5);  // last line without a newline is a token
  EXPECT_EQ(vocab.token(5), "xyz");
  EXPECT_THROW(vocab.token(6), InvalidArgument);
}

TEST(Vocab, DuplicateTokenKeepsLastIdAsTheTokenizersPackage) {
  // `tokenizers` (WordPiece::read_file) inserts into a HashMap: the last line wins.
  const Vocab vocab = Vocab::from_tokens({"[UNK]", "abc", "x", "abc"});
  EXPECT_EQ(vocab.find("abc"), 3);
  EXPECT_EQ(vocab.token(1), "abc");
}

TEST(Vocab, ErrorsNameTheFileAndLine) {
  TempDir dir;
  EXPECT_THROW(Vocab::load(dir.path() / "missing.txt"), IoError);
  try {
    Vocab::load(dir.write("no_unk.txt", "[PAD]\nabc\n"));
    FAIL() << "expected FormatError";
  } catch (const FormatError& error) {
    EXPECT_NE(std::string(error.what()).find("no_unk.txt"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("[UNK]"), std::string::npos) << error.what();
  }
  try {
    Vocab::load(dir.write("bad_utf8.txt", "[UNK]\nok\nbad\xC3(\n"));
    FAIL() << "expected FormatError";
  } catch (const FormatError& error) {
    EXPECT_NE(std::string(error.what()).find("bad_utf8.txt line 3"), std::string::npos) << error.what();
  }
  EXPECT_THROW(Vocab::load(dir.write("empty.txt", "")), FormatError);
}

// ---------------------------------------------------------------------------------------------
// WordPiece

TEST(WordPiece, GreedyLongestMatchFirst) {
  auto tokenizer = make_tokenizer();
  Encoding encoding;
  tokenizer->tokenize("unaffable", encoding);
  // "unaff" is longer than "un", so it wins even though "un" + "##aff" + "##able" also covers it.
  EXPECT_EQ(tokens_of(*tokenizer, encoding), (Strings{"unaff", "##able"}));
  encoding.clear();
  tokenizer->tokenize("abc aab", encoding);
  EXPECT_EQ(tokens_of(*tokenizer, encoding), (Strings{"a", "##b", "##c", "aa", "##b"}));
  EXPECT_EQ(encoding.word_ids, (std::vector<int32_t>{0, 0, 0, 1, 1}));
  EXPECT_EQ(encoding.offsets, (std::vector<Span>{{0, 1}, {1, 2}, {2, 3}, {4, 6}, {6, 7}}));
}

TEST(WordPiece, UnmatchablePositionMakesTheWholeWordUnk) {
  auto tokenizer = make_tokenizer();
  Encoding encoding;
  tokenizer->tokenize("abq the", encoding);  // "a" "##b" then nothing matches "q"
  EXPECT_EQ(tokens_of(*tokenizer, encoding), (Strings{"[UNK]", "the"}));
  EXPECT_EQ(encoding.offsets, (std::vector<Span>{{0, 3}, {4, 7}}));
}

TEST(WordPiece, WordsLongerThan100CharsAreUnk) {
  auto tokenizer = make_tokenizer();
  const std::string hundred(100, 'a');
  Encoding encoding;
  tokenizer->tokenize(hundred, encoding);
  // "aa" first; continuations can only be "##a" ("##aa" is not in the vocabulary): 1 + 98 pieces.
  ASSERT_EQ(encoding.size(), 99u);
  EXPECT_EQ(encoding.ids[0], tokenizer->vocab().find("aa"));
  EXPECT_EQ(encoding.ids[1], tokenizer->vocab().find("##a"));
  encoding.clear();
  tokenizer->tokenize(hundred + "a", encoding);
  EXPECT_EQ(tokens_of(*tokenizer, encoding), (Strings{"[UNK]"}));
  EXPECT_EQ(encoding.offsets[0], (Span{0, 101}));
  // The limit counts code points, not bytes: 60 "é" (120 bytes) are still one word of 60 chars.
  std::string accents;
  for (int i = 0; i < 60; ++i) accents += "é";
  encoding.clear();
  make_tokenizer(false)->tokenize(accents, encoding);
  EXPECT_EQ(encoding.size(), 1u);  // "é" then "##é" is not in the vocabulary: one [UNK], not a length [UNK]
  EXPECT_EQ(encoding.offsets[0], (Span{0, 120}));
}

// ---------------------------------------------------------------------------------------------
// Basic tokenizer

TEST(BasicTokenizer, PunctuationWhitespaceAndCase) {
  auto tokenizer = make_tokenizer();
  const Encoding encoding = tokenizer->encode("  Hello,\tWORLD!  ");
  EXPECT_EQ(tokens_of(*tokenizer, encoding), (Strings{"[CLS]", "hello", ",", "world", "!", "[SEP]"}));
  EXPECT_EQ(encoding.offsets, (std::vector<Span>{{0, 0}, {2, 7}, {7, 8}, {9, 14}, {14, 15}, {0, 0}}));
  EXPECT_EQ(encoding.word_ids, (std::vector<int32_t>{-1, 0, 1, 2, 3, -1}));
  EXPECT_EQ(encoding.sequence_ids, (std::vector<int8_t>{-1, 0, 0, 0, 0, -1}));
  EXPECT_EQ(encoding.special_tokens_mask, (std::vector<uint8_t>{1, 0, 0, 0, 0, 1}));

  auto cased = make_tokenizer(false);
  EXPECT_EQ(tokens_of(*cased, cased->encode("Hello HELLO")), (Strings{"[CLS]", "Hello", "[UNK]", "[SEP]"}));
}

TEST(BasicTokenizer, AccentsAreStrippedOnlyWhenAsked) {
  auto uncased = make_tokenizer();
  // Precomposed U+00E9 and decomposed e + U+0301 both become "e"... which is not in this vocab;
  // "Café" -> "cafe" is. Offsets cover the original bytes, including the dropped mark.
  Encoding encoding = uncased->encode("Café cafe\xCC\x81");
  EXPECT_EQ(tokens_of(*uncased, encoding), (Strings{"[CLS]", "cafe", "cafe", "[SEP]"}));
  EXPECT_EQ(encoding.offsets[1], (Span{0, 5}));
  EXPECT_EQ(encoding.offsets[2], (Span{6, 10}));  // the dropped U+0301 (bytes 10-11) is not covered
  auto cased = make_tokenizer(false);
  EXPECT_EQ(tokens_of(*cased, cased->encode("é")), (Strings{"[CLS]", "é", "[SEP]"}));
  // Uncased without stripping: lowercase U+0130 is "i" + U+0307, both mapped to the İ bytes.
  auto no_strip = make_tokenizer(true, false);
  encoding = no_strip->encode("\xC4\xB0");
  EXPECT_EQ(tokens_of(*no_strip, encoding), (Strings{"[CLS]", "i", "##̇", "[SEP]"}));
  EXPECT_EQ(encoding.offsets[1], (Span{0, 2}));
  EXPECT_EQ(encoding.offsets[2], (Span{0, 2}));
  // With stripping (the uncased default) İ -> I (NFD drops U+0307) -> i.
  EXPECT_EQ(tokens_of(*uncased, uncased->encode("\xC4\xB0")), (Strings{"[CLS]", "i", "[SEP]"}));
}

TEST(BasicTokenizer, ChineseCharactersAreSeparateWords) {
  auto tokenizer = make_tokenizer();
  const Encoding encoding = tokenizer->encode("a中文b");
  EXPECT_EQ(tokens_of(*tokenizer, encoding), (Strings{"[CLS]", "a", "中", "文", "b", "[SEP]"}));
  EXPECT_EQ(encoding.offsets[2], (Span{1, 4}));
  EXPECT_EQ(encoding.offsets[3], (Span{4, 7}));
  EXPECT_EQ(encoding.word_ids, (std::vector<int32_t>{-1, 0, 1, 2, 3, -1}));
}

TEST(BasicTokenizer, ControlCharactersAreDroppedAndSpacesSplit) {
  auto tokenizer = make_tokenizer();
  // U+0001 and U+200B (format) vanish inside a word; NUL and U+FFFD too; U+00A0 and U+3000 split.
  const Encoding encoding =
      tokenizer->encode(std::string("a\x01" "b\xE2\x80\x8B" "c") + std::string(1, '\0') + "\xEF\xBF\xBD" +
                        " x\xC2\xA0y\xE3\x80\x80z");
  EXPECT_EQ(tokens_of(*tokenizer, encoding), (Strings{"[CLS]", "a", "##b", "##c", "x", "y", "z", "[SEP]"}));
  EXPECT_EQ(encoding.offsets[3], (Span{6, 7}));  // "c" after the 3-byte U+200B
}

TEST(BasicTokenizer, SpecialTokensInTextAreNeverSplit) {
  auto tokenizer = make_tokenizer();
  const Encoding encoding = tokenizer->encode("the[MASK]x [SEP] [sep]");
  EXPECT_EQ(tokens_of(*tokenizer, encoding),
            (Strings{"[CLS]", "the", "[MASK]", "x", "[SEP]", "[UNK]", "[UNK]", "[UNK]", "[SEP]"}));
  EXPECT_EQ(encoding.offsets[2], (Span{3, 9}));
  // A special token found in the text belongs to the text: sequence 0, not a special-mask token.
  EXPECT_EQ(encoding.sequence_ids[4], 0);
  EXPECT_EQ(encoding.special_tokens_mask[4], 0);
  EXPECT_EQ(encoding.word_ids[4], 3);
}

TEST(BasicTokenizer, EmptyAndBlankTextGiveClsSep) {
  auto tokenizer = make_tokenizer();
  for (std::string_view text : {std::string_view(""), std::string_view(" \t\n "), std::string_view("\x01")}) {
    const Encoding encoding = tokenizer->encode(text);
    EXPECT_EQ(encoding.ids, (std::vector<int32_t>{2, 3})) << "text of " << text.size() << " bytes";
    EXPECT_EQ(encoding.attention_mask, (std::vector<uint8_t>{1, 1}));
  }
}

TEST(BasicTokenizer, InvalidUtf8NamesTheBytePosition) {
  auto tokenizer = make_tokenizer();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {std::string("ab\xFF"), "byte 2"},         {std::string("abc\xC3"), "byte 3"},
      {std::string("a\xE2\x82(x"), "byte 3"},    {std::string("\xC0\xAF"), "byte 0"},
      {std::string("xx\xED\xA0\x80"), "byte 2"}, {std::string("\xF4\x90\x80\x80"), "byte 0"},
  };
  for (const auto& [text, where] : cases) {
    try {
      tokenizer->encode(text);
      ADD_FAILURE() << "no error for invalid UTF-8 expected at " << where;
    } catch (const FormatError& error) {
      EXPECT_NE(std::string(error.what()).find(where), std::string::npos) << error.what();
    }
  }
}

TEST(BasicTokenizer, RandomBytesEitherEncodeOrRaiseFormatError) {
  // Seeded random byte strings biased to UTF-8 lead/continuation bytes: the tokenizer accepts
  // exactly what validate_utf8 accepts, never crashes, and offsets stay inside the text.
  auto tokenizer = make_tokenizer();
  uint64_t state = 12345;
  auto next = [&state] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<uint32_t>(state >> 33);
  };
  const unsigned char interesting[] = {'a', ' ', '[', 'C', ']', 0xC3, 0xA9, 0xE4, 0xB8, 0xAD, 0xF0, 0x9F,
                                       0x98, 0x80, 0xCC, 0x81, 0xED, 0xA0, 0xFF, 0xC0, 0x00, 0x01};
  size_t accepted = 0, rejected = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string text;
    const uint32_t length = next() % 24;
    for (uint32_t i = 0; i < length; ++i) {
      text.push_back(static_cast<char>(next() % 3 ? interesting[next() % sizeof(interesting)] : next() % 256));
    }
    bool valid = true;
    try {
      validate_utf8(text);
    } catch (const FormatError&) {
      valid = false;
    }
    try {
      const Encoding encoding = tokenizer->encode(text);
      EXPECT_TRUE(valid) << "accepted invalid UTF-8 in trial " << trial;
      for (const Span& span : encoding.offsets) EXPECT_LE(span.end, text.size());
      ++accepted;
    } catch (const FormatError& error) {
      EXPECT_FALSE(valid) << "rejected valid UTF-8 in trial " << trial << ": " << error.what();
      EXPECT_NE(std::string(error.what()).find("at byte"), std::string::npos);
      ++rejected;
    }
  }
  EXPECT_GT(accepted, 100u);
  EXPECT_GT(rejected, 100u);
}

TEST(UnicodeTables, SpotChecks) {
  using namespace unicode;
  EXPECT_TRUE(flags('!') & kPunct);
  EXPECT_TRUE(flags('$') & kPunct);  // ASCII symbols count as punctuation for BERT
  EXPECT_TRUE(flags(0x4E2D) & kChinese);
  EXPECT_TRUE(flags(0x0301) & kMn);
  EXPECT_TRUE(flags(0x00A0) & kSpace);
  EXPECT_TRUE(flags(0x200B) & kRemove);
  EXPECT_FALSE(flags('a') & (kPunct | kRemove | kSpace));
  ASSERT_EQ(lowercase(0x130).size(), 2u);
  EXPECT_EQ(lowercase(0x130)[0], U'i');
  EXPECT_EQ(lowercase(0x130)[1], 0x307u);
  ASSERT_EQ(decomposition(0xE9).size(), 2u);
  EXPECT_EQ(decomposition(0xE9)[1], 0x301u);
  EXPECT_EQ(combining_class(0x301), 230);
}

// ---------------------------------------------------------------------------------------------
// Offsets

TEST(Offsets, ByteToCodepoint) {
  const std::string text = "aé中😀b";  // bytes: a(0) é(1-2) 中(3-5) 😀(6-9) b(10)
  const std::vector<Span> bytes = {{0, 1}, {1, 3}, {3, 6}, {6, 10}, {10, 11}, {0, 11}, {0, 0}};
  const std::vector<Span> expected = {{0, 1}, {1, 2}, {2, 3}, {3, 4}, {4, 5}, {0, 5}, {0, 0}};
  EXPECT_EQ(byte_to_codepoint_offsets(text, bytes), expected);
  EXPECT_THROW(byte_to_codepoint_offsets(text, std::vector<Span>{{0, 12}}), InvalidArgument);

  auto tokenizer = make_tokenizer(false);
  const Encoding encoding = tokenizer->encode_pair("é x", "中 y");
  EXPECT_EQ(codepoint_offsets(encoding, "é x", "中 y"),
            (std::vector<Span>{{0, 0}, {0, 1}, {2, 3}, {0, 0}, {0, 1}, {2, 3}, {0, 0}}));
}

// ---------------------------------------------------------------------------------------------
// Pairs, truncation, windows

TEST(Truncation, PairTemplateAndTypeIds) {
  auto tokenizer = make_tokenizer();
  const Encoding encoding = tokenizer->encode_pair("a b", "c");
  EXPECT_EQ(tokens_of(*tokenizer, encoding), (Strings{"[CLS]", "a", "b", "[SEP]", "c", "[SEP]"}));
  EXPECT_EQ(encoding.type_ids, (std::vector<int32_t>{0, 0, 0, 0, 1, 1}));
  EXPECT_EQ(encoding.sequence_ids, (std::vector<int8_t>{-1, 0, 0, -1, 1, -1}));
  EXPECT_EQ(encoding.word_ids, (std::vector<int32_t>{-1, 0, 1, -1, 0, -1}));
}

TEST(Truncation, LongestFirstTakesFromTheLongerText) {
  auto tokenizer = make_tokenizer();
  // 6 + 2 tokens, budget 9 - 3 = 6: the short text stays whole, the long one keeps 4.
  Encoding encoding = tokenizer->encode_pair("x y z x y z", "a b", {9, TruncationStrategy::kLongestFirst, 0});
  EXPECT_EQ(tokens_of(*tokenizer, encoding), (Strings{"[CLS]", "x", "y", "z", "x", "[SEP]", "a", "b", "[SEP]"}));
  // 6 + 5, budget 7: both cut, 3 and 4 (the odd token to the longer one).
  encoding = tokenizer->encode_pair("x y z x y z", "a b c a b", {10, TruncationStrategy::kLongestFirst, 0});
  EXPECT_EQ(tokens_of(*tokenizer, encoding),
            (Strings{"[CLS]", "x", "y", "z", "x", "[SEP]", "a", "b", "c", "[SEP]"}));
  // Single text: keep max_length - 2.
  encoding = tokenizer->encode("x y z x y z", {5, TruncationStrategy::kLongestFirst, 0});
  EXPECT_EQ(tokens_of(*tokenizer, encoding), (Strings{"[CLS]", "x", "y", "z", "[SEP]"}));
  // Fits: untouched.
  encoding = tokenizer->encode_pair("x", "y", {5, TruncationStrategy::kLongestFirst, 0});
  EXPECT_EQ(encoding.size(), 5u);
}

TEST(Truncation, OnlyFirstOnlySecondAndTheirErrors) {
  auto tokenizer = make_tokenizer();
  Encoding encoding = tokenizer->encode_pair("x y z", "a b c", {7, TruncationStrategy::kOnlyFirst, 0});
  EXPECT_EQ(tokens_of(*tokenizer, encoding), (Strings{"[CLS]", "x", "[SEP]", "a", "b", "c", "[SEP]"}));
  encoding = tokenizer->encode_pair("x y z", "a b c", {7, TruncationStrategy::kOnlySecond, 0});
  EXPECT_EQ(tokens_of(*tokenizer, encoding), (Strings{"[CLS]", "x", "y", "z", "[SEP]", "a", "[SEP]"}));
  // The second text cannot give up 3 of its 3 tokens: the package refuses, so do we.
  EXPECT_THROW(tokenizer->encode_pair("x y z", "a b c", {6, TruncationStrategy::kOnlySecond, 0}), InvalidArgument);
  EXPECT_THROW(tokenizer->encode("x y z", {4, TruncationStrategy::kOnlySecond, 0}), InvalidArgument);
  EXPECT_NO_THROW(tokenizer->encode("x", {4, TruncationStrategy::kOnlySecond, 0}));  // fits: no error
  EXPECT_THROW(tokenizer->encode_pair("x", "y", {2, TruncationStrategy::kLongestFirst, 0}), InvalidArgument);
}

TEST(Truncation, StrideWindowsAsTheTokenizersPackage) {
  auto tokenizer = make_tokenizer();
  // Question "x" (1 token), context of 7 tokens, max_length 8 -> window of 8 - 3 - 1 = 4 context
  // tokens, stride 2 -> starts 0, 2, 4 (the last one reaches the end).
  const std::vector<Encoding> windows = tokenizer->encode_qa_windows("x", "a b c a b c y", 8, 2);
  ASSERT_EQ(windows.size(), 3u);
  EXPECT_EQ(tokens_of(*tokenizer, windows[0]), (Strings{"[CLS]", "x", "[SEP]", "a", "b", "c", "a", "[SEP]"}));
  EXPECT_EQ(tokens_of(*tokenizer, windows[1]), (Strings{"[CLS]", "x", "[SEP]", "c", "a", "b", "c", "[SEP]"}));
  EXPECT_EQ(tokens_of(*tokenizer, windows[2]), (Strings{"[CLS]", "x", "[SEP]", "b", "c", "y", "[SEP]"}));
  // Offsets and word ids stay those of the original context.
  EXPECT_EQ(windows[2].offsets[3], (Span{8, 9}));
  EXPECT_EQ(windows[2].word_ids[3], 4);
  // stride >= window: refused like the package's assertion.
  EXPECT_THROW(tokenizer->encode_qa_windows("x", "a b c a b c y", 8, 4), InvalidArgument);
  // Context that fits: one window.
  EXPECT_EQ(tokenizer->encode_qa_windows("x", "a b", 8, 2).size(), 1u);
}

// ---------------------------------------------------------------------------------------------
// Padding and batches

TEST(Padding, LongestMaxLengthAndMultiple) {
  auto tokenizer = make_tokenizer();
  const std::vector<std::string_view> texts = {"a", "a b c", ""};
  std::vector<Encoding> batch = tokenizer->encode_batch(texts, {}, {PaddingStrategy::kLongest});
  for (const Encoding& encoding : batch) EXPECT_EQ(encoding.size(), 5u);
  EXPECT_EQ(batch[0].ids, (std::vector<int32_t>{2, 15, 3, 0, 0}));
  EXPECT_EQ(batch[0].attention_mask, (std::vector<uint8_t>{1, 1, 1, 0, 0}));
  EXPECT_EQ(batch[0].sequence_ids, (std::vector<int8_t>{-1, 0, -1, -1, -1}));
  EXPECT_EQ(batch[0].offsets[4], (Span{0, 0}));

  batch = tokenizer->encode_batch(texts, {}, {PaddingStrategy::kMaxLength, 4});
  EXPECT_EQ(batch[0].size(), 4u);
  EXPECT_EQ(batch[1].size(), 5u);  // longer than max_length: left as it is (padding never truncates)
  batch = tokenizer->encode_batch(texts, {}, {PaddingStrategy::kLongest, 0, 8});
  EXPECT_EQ(batch[2].size(), 8u);
  // Truncation and padding together give a rectangular batch.
  batch = tokenizer->encode_batch(texts, {4}, {PaddingStrategy::kMaxLength, 4});
  for (const Encoding& encoding : batch) EXPECT_EQ(encoding.size(), 4u);
}

TEST(Batch, SameAsOneByOne) {
  auto tokenizer = make_tokenizer();
  const std::vector<std::string_view> texts = {"Hello world!", "unaffable cafe", "中文 $aapl"};
  const std::vector<Encoding> batch = tokenizer->encode_batch(texts);
  for (size_t i = 0; i < texts.size(); ++i) {
    const Encoding one = tokenizer->encode(texts[i]);
    EXPECT_EQ(batch[i].ids, one.ids);
    EXPECT_EQ(batch[i].offsets, one.offsets);
  }
  const std::vector<std::pair<std::string_view, std::string_view>> pairs = {{"a", "b"}, {"a b c", "x"}};
  const std::vector<Encoding> pair_batch = tokenizer->encode_pair_batch(pairs, {}, {PaddingStrategy::kLongest});
  EXPECT_EQ(pair_batch[0].size(), pair_batch[1].size());
  EXPECT_EQ(pair_batch[1].type_ids, (std::vector<int32_t>{0, 0, 0, 0, 0, 1, 1}));
}

// ---------------------------------------------------------------------------------------------
// Model directories

TEST(ModelDir, ReadsTokenizerConfig) {
  TempDir dir;
  std::string vocab;
  for (const std::string& token : kTokens) vocab += token + "\n";
  dir.write("vocab.txt", vocab);
  auto uncased = BertTokenizer::from_model_dir(dir.path());  // no config: uncased
  EXPECT_TRUE(uncased->options().lowercase);
  EXPECT_EQ(tokens_of(*uncased, uncased->encode("Hello")), (Strings{"[CLS]", "hello", "[SEP]"}));

  dir.write("tokenizer_config.json",
            R"({"do_lower_case": false, "model_max_length": 512, "unk_token": {"content": "[UNK]"}})");
  auto cased = BertTokenizer::from_model_dir(dir.path());
  EXPECT_FALSE(cased->options().lowercase);
  EXPECT_EQ(cased->options().model_max_length, 512);
  EXPECT_EQ(tokens_of(*cased, cased->encode("Hello")), (Strings{"[CLS]", "Hello", "[SEP]"}));

  dir.write("tokenizer_config.json", R"({"model_max_length": 1000000000000000019884624838656})");
  EXPECT_FALSE(BertTokenizer::from_model_dir(dir.path())->options().model_max_length.has_value());
  dir.write("tokenizer_config.json", R"({"do_lower_case": "yes"})");
  EXPECT_THROW(BertTokenizer::from_model_dir(dir.path()), FormatError);
  dir.write("tokenizer_config.json", R"({"do_lower_case": tru)");
  EXPECT_THROW(BertTokenizer::from_model_dir(dir.path()), FormatError);
  dir.write("vocab.txt", "[UNK]\nabc\n");  // no [CLS]/[SEP]
  std::filesystem::remove(dir.path() / "tokenizer_config.json");
  EXPECT_THROW(BertTokenizer::from_model_dir(dir.path()), FormatError);
  EXPECT_THROW(BertTokenizer::from_model_dir(dir.path() / "nowhere"), IoError);
}

TEST(ModelDir, SharedVocabularyEncodesATweet) {
  const std::filesystem::path shared = testing::shared_dir();
  if (shared.empty()) GTEST_SKIP() << "no ../shared/data: the bert-base-uncased vocabulary is not available";
  auto tokenizer = BertTokenizer::from_vocab_file(shared / "data" / "bert_base_uncased_vocab" / "vocab.txt");
  const Encoding encoding = tokenizer->encode("$AAPL jumps 3%");
  // bert-base-uncased: [CLS]=101, $=1002, aa=9779, ##pl=24759, jumps=14523, 3=1017, %=1003, [SEP]=102
  EXPECT_EQ(encoding.ids, (std::vector<int32_t>{101, 1002, 9779, 24759, 14523, 1017, 1003, 102}));
}

}  // namespace
}  // namespace scalebert::text
