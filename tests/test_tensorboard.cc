// TensorBoard event files: CRC-32C against the published check values, TFRecord framing against
// the header every TensorFlow event file starts with, the Event bytes decoded by hand (field
// numbers as TensorFlow's event.proto / summary.proto define them), and the reader's corruption
// checks.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/file_util.h"
#include "testing.h"
#include "train/tensorboard.h"

using namespace scalebert;
using namespace scalebert::train;
namespace fs = std::filesystem;

namespace {

// A minimal protobuf wire reader, independent of the generated code.
struct WireReader {
  std::string_view bytes;
  size_t at = 0;
  bool done() const { return at >= bytes.size(); }
  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0;; shift += 7) {
      const auto byte = static_cast<uint8_t>(bytes.at(at++));
      value |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if ((byte & 0x80) == 0) return value;
    }
  }
  std::string_view length_delimited() {
    const auto length = static_cast<size_t>(varint());
    std::string_view out = bytes.substr(at, length);
    at += length;
    return out;
  }
  template <typename T>
  T fixed() {
    T value;
    std::memcpy(&value, bytes.data() + at, sizeof value);
    at += sizeof value;
    return value;
  }
};

}  // namespace

TEST(Crc32c, PublishedCheckValues) {
  // RFC 3720 B.4 and the "check" value of the CRC-32C catalogue entry.
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(crc32c(std::string(32, '\xFF')), 0x62A8AB43u);
  std::string ascending;
  for (int i = 0; i < 32; ++i) ascending.push_back(static_cast<char>(i));
  EXPECT_EQ(crc32c(ascending), 0x46DD794Eu);
  EXPECT_EQ(crc32c(""), 0u);
}

TEST(TfRecord, FramingMatchesTensorFlowEventFileHeader) {
  // The first record of every TensorFlow / TensorBoard event file holds a 24-byte Event (wall_time
  // and file_version "brain.Event:2"); its length header and masked CRC are the bytes
  // 18 00 00 00 00 00 00 00 a3 7f 4b 22 found at the start of such files.
  const std::string record = frame_tfrecord(std::string(24, 'x'));
  const unsigned char expected[12] = {0x18, 0, 0, 0, 0, 0, 0, 0, 0xa3, 0x7f, 0x4b, 0x22};
  ASSERT_EQ(record.size(), 24u + 16u);
  EXPECT_EQ(std::memcmp(record.data(), expected, 12), 0);
  // Mask definition: rotate right by 15, add 0xa282ead8.
  const uint32_t crc = crc32c("abc");
  EXPECT_EQ(masked_crc32c("abc"), ((crc >> 15) | (crc << 17)) + 0xa282ead8u);
}

TEST(TensorBoardWriter, WritesEventsThatDecodeByHandAndByTheReader) {
  const scalebert::testing::TempDir temp;
  const fs::path dir = temp.path();
  fs::path file;
  {
    TensorBoardWriter writer(dir / "tb");
    writer.add_scalar("train/loss", 0.75, 3);
    writer.add_scalar("eval/f1", 81.5, 10);
    writer.add_session_start(11);
    writer.flush();
    file = writer.path();
  }
  EXPECT_EQ(file.parent_path(), dir / "tb");
  EXPECT_EQ(file.filename().string().rfind("events.out.tfevents.", 0), 0u) << file;

  const std::vector<std::string> records = read_tfrecords(file);
  ASSERT_EQ(records.size(), 4u);

  // Record 0: Event { wall_time (1, fixed64) ; file_version (3, bytes) }.
  {
    WireReader reader{records[0]};
    EXPECT_EQ(reader.varint(), (1u << 3) | 1u);
    const double wall_time = reader.fixed<double>();
    EXPECT_GT(wall_time, 1.6e9);
    EXPECT_EQ(reader.varint(), (3u << 3) | 2u);
    EXPECT_EQ(reader.length_delimited(), "brain.Event:2");
    EXPECT_TRUE(reader.done());
    EXPECT_EQ(records[0].size(), 24u);  // the size behind the universal header above
  }
  // Record 1: Event { wall_time ; step (2, varint) = 3 ; summary (5) { value (1) { tag (1) ;
  // simple_value (2, fixed32) } } }.
  {
    WireReader reader{records[1]};
    EXPECT_EQ(reader.varint(), (1u << 3) | 1u);
    reader.fixed<double>();
    EXPECT_EQ(reader.varint(), (2u << 3) | 0u);
    EXPECT_EQ(reader.varint(), 3u);
    EXPECT_EQ(reader.varint(), (5u << 3) | 2u);
    WireReader summary{reader.length_delimited()};
    EXPECT_TRUE(reader.done());
    EXPECT_EQ(summary.varint(), (1u << 3) | 2u);
    WireReader value{summary.length_delimited()};
    EXPECT_EQ(value.varint(), (1u << 3) | 2u);
    EXPECT_EQ(value.length_delimited(), "train/loss");
    EXPECT_EQ(value.varint(), (2u << 3) | 5u);
    EXPECT_EQ(value.fixed<float>(), 0.75f);
    EXPECT_TRUE(value.done());
  }
  // Record 3: Event { wall_time ; step = 11 ; session_log (7) { status (1) = START (1) } }.
  {
    WireReader reader{records[3]};
    reader.varint();
    reader.fixed<double>();
    EXPECT_EQ(reader.varint(), (2u << 3) | 0u);
    EXPECT_EQ(reader.varint(), 11u);
    EXPECT_EQ(reader.varint(), (7u << 3) | 2u);
    WireReader session{reader.length_delimited()};
    EXPECT_EQ(session.varint(), (1u << 3) | 0u);
    EXPECT_EQ(session.varint(), 1u);
  }

  const EventFileContents contents = read_event_file(file);
  EXPECT_EQ(contents.file_version, "brain.Event:2");
  ASSERT_EQ(contents.scalars.size(), 2u);
  EXPECT_EQ(contents.scalars[0].tag, "train/loss");
  EXPECT_EQ(contents.scalars[0].step, 3);
  EXPECT_EQ(contents.scalars[0].value, 0.75f);
  EXPECT_EQ(contents.scalars[1].tag, "eval/f1");
  EXPECT_EQ(contents.scalars[1].step, 10);
  EXPECT_EQ(contents.scalars[1].value, 81.5f);
  EXPECT_EQ(contents.session_starts, std::vector<int64_t>{11});
}

TEST(TfRecord, ReaderRejectsCorruptionAndTruncation) {
  const scalebert::testing::TempDir temp;
  const fs::path dir = temp.path();
  const std::string good = frame_tfrecord("hello") + frame_tfrecord("world!");
  write_file_atomic(dir / "good", good);
  EXPECT_EQ(read_tfrecords(dir / "good"), (std::vector<std::string>{"hello", "world!"}));

  std::string flipped = good;
  flipped[12 + 1] ^= 0x01;  // a data byte of record 0
  write_file_atomic(dir / "flipped", flipped);
  try {
    read_tfrecords(dir / "flipped");
    FAIL() << "a flipped data byte was not detected";
  } catch (const FormatError& error) {
    EXPECT_NE(std::string(error.what()).find("record 0 at byte 0: data CRC mismatch"), std::string::npos)
        << error.what();
  }

  std::string bad_length = good;
  bad_length[21 + 2] ^= 0x40;  // the length field of record 1 (starts at byte 21)
  write_file_atomic(dir / "bad_length", bad_length);
  try {
    read_tfrecords(dir / "bad_length");
    FAIL() << "a corrupt length was not detected";
  } catch (const FormatError& error) {
    EXPECT_NE(std::string(error.what()).find("record 1 at byte 21: length CRC mismatch"), std::string::npos)
        << error.what();
  }

  write_file_atomic(dir / "truncated", good.substr(0, good.size() - 3));
  EXPECT_THROW(read_tfrecords(dir / "truncated"), FormatError);
}
