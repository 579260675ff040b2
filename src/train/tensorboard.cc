// TensorBoard event files: CRC-32C, TFRecord framing, the Event proto writer and a checking reader.
#include "train/tensorboard.h"

#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <system_error>

#include "core/error.h"
#include "io/file_util.h"
#include "train/proto/event.pb.h"

namespace scalebert::train {

namespace {

// Byte-at-a-time table of the reflected Castagnoli polynomial; event files are a few KB per
// minute, so the table loop is far below any cost that matters.
constexpr std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t crc = i;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1u) ? 0x82F63B78u : 0u);
    table[i] = crc;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kCrc32cTable = make_crc32c_table();

constexpr uint32_t kMaskDelta = 0xa282ead8u;

void put_u64(std::string& out, uint64_t value) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}
void put_u32(std::string& out, uint32_t value) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}
uint64_t get_le(const char* bytes, int count) {
  uint64_t value = 0;
  for (int i = 0; i < count; ++i) value |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[i])) << (8 * i);
  return value;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

uint32_t crc32c(std::string_view bytes) {
  uint32_t crc = 0xFFFFFFFFu;
  for (char c : bytes) crc = kCrc32cTable[(crc ^ static_cast<uint8_t>(c)) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(std::string_view bytes) {
  const uint32_t crc = crc32c(bytes);
  return ((crc >> 15) | (crc << 17)) + kMaskDelta;
}

std::string frame_tfrecord(std::string_view data) {
  std::string record;
  record.reserve(data.size() + 16);
  put_u64(record, data.size());
  put_u32(record, masked_crc32c(std::string_view(record.data(), 8)));
  record.append(data);
  put_u32(record, masked_crc32c(data));
  return record;
}

std::vector<std::string> read_tfrecords(const std::filesystem::path& path) {
  const std::string bytes = read_file(path);
  std::vector<std::string> records;
  size_t offset = 0;
  while (offset < bytes.size()) {
    const std::string where = str_cat(path.string(), ": record ", records.size(), " at byte ", offset);
    check<FormatError>(bytes.size() - offset >= 12, where, ": truncated length header (", bytes.size() - offset,
                       " bytes left)");
    const uint64_t length = get_le(bytes.data() + offset, 8);
    const auto length_crc = static_cast<uint32_t>(get_le(bytes.data() + offset + 8, 4));
    check<FormatError>(length_crc == masked_crc32c(std::string_view(bytes.data() + offset, 8)), where,
                       ": length CRC mismatch");
    check<FormatError>(length <= bytes.size() - offset - 12 && bytes.size() - offset - 12 - length >= 4, where,
                       ": truncated data (length ", length, ", ", bytes.size() - offset - 12, " bytes left)");
    std::string data = bytes.substr(offset + 12, length);
    const auto data_crc = static_cast<uint32_t>(get_le(bytes.data() + offset + 12 + length, 4));
    check<FormatError>(data_crc == masked_crc32c(data), where, ": data CRC mismatch");
    records.push_back(std::move(data));
    offset += 16 + length;
  }
  return records;
}

EventFileContents read_event_file(const std::filesystem::path& path) {
  EventFileContents contents;
  const std::vector<std::string> records = read_tfrecords(path);
  for (size_t i = 0; i < records.size(); ++i) {
    tensorboard::Event event;
    check<FormatError>(event.ParseFromString(records[i]), path.string(), ": record ", i, " is not an Event proto");
    if (event.what_case() == tensorboard::Event::kFileVersion) {
      if (contents.file_version.empty()) contents.file_version = event.file_version();
    } else if (event.what_case() == tensorboard::Event::kSummary) {
      for (const auto& value : event.summary().value()) {
        if (value.value_case() != tensorboard::Summary::Value::kSimpleValue) continue;
        contents.scalars.push_back(ScalarEvent{value.tag(), event.step(), value.simple_value(), event.wall_time()});
      }
    } else if (event.what_case() == tensorboard::Event::kSessionLog &&
               event.session_log().status() == tensorboard::SessionLog::START) {
      contents.session_starts.push_back(event.step());
    }
  }
  return contents;
}

TensorBoardWriter::TensorBoardWriter(const std::filesystem::path& log_dir) {
  std::error_code error;
  std::filesystem::create_directories(log_dir, error);
  check<IoError>(!error, "cannot create TensorBoard folder ", log_dir.string(), ": ", error.message());
  char host[256] = "localhost";
  if (gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "localhost");
  host[sizeof host - 1] = '\0';
  // TensorBoard orders a folder's files by name; seconds then pid keep a resumed run's file after
  // the interrupted one's, and the counter separates writers created within one second.
  static int counter = 0;
  const auto seconds = static_cast<long long>(now_seconds());
  path_ = log_dir / str_cat("events.out.tfevents.", seconds, ".", host, ".", getpid(), ".", counter++);
  file_ = std::fopen(path_.c_str(), "wb");
  check<IoError>(file_ != nullptr, "cannot create TensorBoard event file ", path_.string(), ": ",
                 std::strerror(errno));
  tensorboard::Event event;
  event.set_wall_time(now_seconds());
  event.set_file_version("brain.Event:2");
  write_record(event.SerializeAsString());
  flush();
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

void TensorBoardWriter::add_scalar(const std::string& tag, double value, int64_t step) {
  tensorboard::Event event;
  event.set_wall_time(now_seconds());
  event.set_step(step);
  tensorboard::Summary::Value* summary_value = event.mutable_summary()->add_value();
  summary_value->set_tag(tag);
  summary_value->set_simple_value(static_cast<float>(value));
  write_record(event.SerializeAsString());
}

void TensorBoardWriter::add_session_start(int64_t step) {
  tensorboard::Event event;
  event.set_wall_time(now_seconds());
  event.set_step(step);
  event.mutable_session_log()->set_status(tensorboard::SessionLog::START);
  write_record(event.SerializeAsString());
}

void TensorBoardWriter::flush() {
  check<IoError>(std::fflush(file_) == 0, "cannot write TensorBoard event file ", path_.string(), ": ",
                 std::strerror(errno));
}

void TensorBoardWriter::write_record(const std::string& data) {
  const std::string record = frame_tfrecord(data);
  check<IoError>(std::fwrite(record.data(), 1, record.size(), file_) == record.size(),
                 "cannot write TensorBoard event file ", path_.string(), ": ", std::strerror(errno));
}

}  // namespace scalebert::train
