// TensorBoard event files: scalar summaries written as TFRecord-framed Event protos
// (events.out.tfevents.<seconds>.<host>.<pid>), the files `tensorboard --logdir` opens, plus a
// reader that checks the framing CRCs (for tests and for tools that inspect a run).
//
// TFRecord framing of one record (TensorFlow's core/lib/io/record_writer.cc):
//   uint64 length (little-endian) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)
// with masked_crc32c(x) = rotate_right(crc32c(x), 15) + 0xa282ead8 (CRC-32C, Castagnoli polynomial
// 0x82F63B78 reflected); the masking keeps a CRC of data that itself holds CRCs from being trivial.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace scalebert::train {

// CRC-32C (Castagnoli) of `bytes`, as SSE4.2's crc32 instruction and TensorFlow's crc32c::Value.
uint32_t crc32c(std::string_view bytes);
// TensorFlow's crc32c::Mask.
uint32_t masked_crc32c(std::string_view bytes);

// One record framed as above.
std::string frame_tfrecord(std::string_view data);

// The records of a TFRecord file in order. Throws IoError when unreadable and FormatError naming
// the file, the record index and its byte offset for a truncated record or a CRC mismatch.
std::vector<std::string> read_tfrecords(const std::filesystem::path& path);

// A decoded scalar event, for tests and inspection.
struct ScalarEvent {
  std::string tag;
  int64_t step = 0;
  float value = 0.0f;
  double wall_time = 0.0;
};

struct EventFileContents {
  std::string file_version;          // from the first record ("brain.Event:2")
  std::vector<ScalarEvent> scalars;  // every simple_value, in file order
  std::vector<int64_t> session_starts;  // steps of SessionLog START events
};

// Reads and decodes an event file (read_tfrecords + Event protos). FormatError for a record that
// does not parse as an Event.
EventFileContents read_event_file(const std::filesystem::path& path);

class TensorBoardWriter {
 public:
  // Creates `log_dir` if needed and a new event file in it whose first record carries the file
  // version. Throws IoError naming the path when the directory or file cannot be created.
  explicit TensorBoardWriter(const std::filesystem::path& log_dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // One scalar at `step` (a non-finite value is written as is: TensorBoard shows NaN/Inf).
  void add_scalar(const std::string& tag, double value, int64_t step);
  // Marks a (re)start at `step`: TensorBoard then discards events of steps >= step that an earlier,
  // interrupted writer logged, so a resumed run's curve has no duplicated tail.
  void add_session_start(int64_t step);
  // Hands buffered records to the OS (called after every batch of scalars by the trainer).
  void flush();

  const std::filesystem::path& path() const { return path_; }

 private:
  void write_record(const std::string& data);

  std::filesystem::path path_;
  std::FILE* file_ = nullptr;
};

}  // namespace scalebert::train
