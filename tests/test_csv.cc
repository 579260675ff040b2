// The RFC-4180 CSV reader: quoting rules, line numbers, errors naming file and line, and the shared
// financial tweets (row counts and multi-line fields as their SOURCE.md states them).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "core/error.h"
#include "io/csv.h"
#include "testing.h"

using namespace scalebert;
using io::parse_csv;

namespace {

// The message of the FormatError that `parse` throws; fails the test when nothing is thrown.
template <typename Function>
std::string format_error(Function parse) {
  try {
    parse();
  } catch (const FormatError& error) {
    return error.what();
  }
  ADD_FAILURE() << "no FormatError";
  return {};
}

}  // namespace

TEST(Csv, HeaderRowsAndColumnsByName) {
  const io::CsvTable table = parse_csv("text,label\nhello,1\nworld,2\n", "t.csv");
  ASSERT_EQ(table.header, (std::vector<std::string>{"text", "label"}));
  ASSERT_EQ(table.num_rows(), 2u);
  EXPECT_EQ(table.rows[1][0], "world");
  EXPECT_EQ(table.column("label"), 1);
  EXPECT_EQ(table.find_column("missing"), -1);
  EXPECT_EQ(table.column_values("text"), (std::vector<std::string>{"hello", "world"}));
  EXPECT_EQ(table.row_lines, (std::vector<int64_t>{2, 3}));
}

TEST(Csv, QuotedFieldsKeepCommasQuotesAndNewlines) {
  const std::string text =
      "text,label\n"
      "\"a, b\",0\n"
      "\"she said \"\"up\"\"\",1\n"
      "\"two\nlines\",2\n"
      "\"crlf\r\ninside\",3\r\n"
      "\"\",4\n"
      "plain,5";  // no final newline
  const io::CsvTable table = parse_csv(text, "q.csv");
  ASSERT_EQ(table.num_rows(), 6u);
  EXPECT_EQ(table.rows[0][0], "a, b");
  EXPECT_EQ(table.rows[1][0], "she said \"up\"");
  EXPECT_EQ(table.rows[2][0], "two\nlines");
  EXPECT_EQ(table.rows[3][0], "crlf\r\ninside");  // data inside quotes is kept as written
  EXPECT_EQ(table.rows[3][1], "3");
  EXPECT_EQ(table.rows[4][0], "");
  EXPECT_EQ(table.rows[5][1], "5");
  // Records start on lines 2, 3, 4, 6 (line 5 is the quoted field's second line), 8, 9.
  EXPECT_EQ(table.row_lines, (std::vector<int64_t>{2, 3, 4, 6, 8, 9}));
}

TEST(Csv, CrlfRecordsBomBlankLinesEmptyFieldsAndStrayQuotes) {
  const io::CsvTable table = parse_csv("\xEF\xBB\xBFtext,label,extra\r\n\r\na,,\r\n\nb,5\" screen,x\r\n", "b.csv");
  ASSERT_EQ(table.header[0], "text");  // the byte order mark is not part of the name
  ASSERT_EQ(table.num_rows(), 2u);
  EXPECT_EQ(table.rows[0], (std::vector<std::string>{"a", "", ""}));
  EXPECT_EQ(table.rows[1][1], "5\" screen");  // a quote inside an unquoted field is data
  EXPECT_EQ(table.row_lines, (std::vector<int64_t>{3, 5}));
}

TEST(Csv, ErrorsNameFileAndLine) {
  EXPECT_EQ(format_error([] { parse_csv("text,label\nok,1\n\"never closed,2\nmore\n", "u.csv"); }),
            "u.csv:3: unterminated quoted field 1 (its opening quote is on this line; the file ends at line 5 before "
            "the closing quote)");
  EXPECT_EQ(format_error([] { parse_csv("text,label\nok,1\na,b,c\n", "n.csv"); }),
            "n.csv:3: expected 2 fields as in the header, got 3");
  EXPECT_EQ(format_error([] { parse_csv("text,label\n\"multi\nline\",1\nshort\n", "m.csv"); }),
            "m.csv:4: expected 2 fields as in the header, got 1");
  EXPECT_NE(format_error([] { parse_csv("text,label\n\"quoted\"x,1\n", "g.csv"); })
                .find("g.csv:2: unexpected 'x' after the closing quote of field 1"),
            std::string::npos);
  EXPECT_EQ(format_error([] { parse_csv("text,label\nfine,1\nbad \xFF byte,2\n", "e.csv"); }),
            "e.csv:3: invalid UTF-8 (byte 0xff at column 5); the file must be UTF-8 encoded");
  EXPECT_EQ(format_error([] { parse_csv("text\ntruncated \xE2\x82", "t.csv"); }),
            "t.csv:2: invalid UTF-8 (byte 0xe2 at column 11); the file must be UTF-8 encoded");
  EXPECT_EQ(format_error([] { parse_csv("", "empty.csv"); }), "empty.csv: empty CSV file (no header row)");
  EXPECT_EQ(format_error([] { parse_csv("\n\r\n", "blank.csv"); }), "blank.csv: empty CSV file (no header row)");
}

TEST(Csv, UnknownColumnListsTheHeader) {
  const io::CsvTable table = parse_csv("text,label\na,1\n", "c.csv");
  try {
    table.column("sentence");
    FAIL() << "no error";
  } catch (const InvalidArgument& error) {
    EXPECT_STREQ(error.what(), "c.csv: no column \"sentence\" (the header has \"text\", \"label\")");
  }
}

TEST(Csv, MissingFileIsAnIoErrorNamingIt) {
  try {
    io::read_csv("/nonexistent/tweets.csv");
    FAIL() << "no error";
  } catch (const IoError& error) {
    EXPECT_NE(std::string(error.what()).find("/nonexistent/tweets.csv"), std::string::npos) << error.what();
  }
}

TEST(Csv, ReadsAFileFromDisk) {
  const scalebert::testing::TempDir temp;
  const auto path = temp / "read.csv";
  {
    std::ofstream out(path, std::ios::binary);
    out << "text,label\n\"x\ny\",0\n";
  }
  const io::CsvTable table = io::read_csv(path);
  EXPECT_EQ(table.source, path.string());
  ASSERT_EQ(table.num_rows(), 1u);
  EXPECT_EQ(table.rows[0][0], "x\ny");
}

// The shared tweets: counts from their SOURCE.md (which matches the Hugging Face dataset).
TEST(Csv, SharedFinancialTweets) {
  const std::filesystem::path shared = scalebert::testing::shared_dir();
  if (shared.empty()) GTEST_SKIP() << "no ../shared/data (a fresh clone has none); set SCALEBERT_SHARED to run this";
  const auto folder = shared / "data" / "twitter_financial_news_sentiment";
  struct Expected {
    const char* file;
    size_t rows;
    size_t multi_line;
    std::map<std::string, size_t> labels;
  };
  const Expected expected[] = {
      {"sent_train.csv", 9543, 184, {{"0", 1442}, {"1", 1923}, {"2", 6178}}},
      {"sent_valid.csv", 2388, 43, {{"0", 347}, {"1", 475}, {"2", 1566}}},
  };
  for (const Expected& want : expected) {
    SCOPED_TRACE(want.file);
    const io::CsvTable table = io::read_csv(folder / want.file);
    EXPECT_EQ(table.header, (std::vector<std::string>{"text", "label"}));
    EXPECT_EQ(table.num_rows(), want.rows);
    size_t multi_line = 0;
    std::map<std::string, size_t> labels;
    for (const auto& row : table.rows) {
      multi_line += row[0].find('\n') != std::string::npos;
      labels[row[1]] += 1;
    }
    EXPECT_EQ(multi_line, want.multi_line);
    EXPECT_EQ(labels, want.labels);
  }
  // First row of the validation split, as the file shows it.
  const io::CsvTable valid = io::read_csv(folder / "sent_valid.csv");
  EXPECT_EQ(valid.rows[0][0], "$ALLY - Ally Financial pulls outlook https://t.co/G9Zdi1boy5");
  EXPECT_EQ(valid.rows[1][0], "$DELL $HPE - Dell, HPE targets trimmed on compute headwinds https://t.co/YRUHZw7cYl");
}
