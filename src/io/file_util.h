// Low-level file access shared by the checkpoint readers and writers: a read-only memory mapping
// with RAII, whole-file reads, and atomic writes (temporary file, fsync, rename, fsync directory)
// so that a crash never leaves a torn file under the final name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace scalebert {

// A whole file mapped into memory. Pages are mapped MAP_PRIVATE with PROT_READ|PROT_WRITE: the
// file itself is never modified, but a consumer that writes into a tensor viewing the mapping gets
// a private copy-on-write page instead of a crash. Not copyable; share it through shared_ptr so
// that tensors viewing the bytes keep the mapping alive.
class MappedFile {
 public:
  // Throws IoError naming the path and the OS reason when it cannot be opened, stat'ed or mapped.
  static std::shared_ptr<MappedFile> open(const std::filesystem::path& path);

  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  // Null for an empty file (mmap cannot map zero bytes).
  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  MappedFile() = default;

  std::filesystem::path path_;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Reads a whole file into a string; throws IoError naming the path and the OS reason.
std::string read_file(const std::filesystem::path& path);

// Writes one file atomically: bytes go to "<path>.tmp.<pid>.<n>" in the same directory (so the
// rename stays on one filesystem), commit() fsyncs it, renames it over `path` and fsyncs the
// directory so the rename itself is durable. Destroying an uncommitted writer removes the
// temporary file, so readers only ever see the old file or the complete new one.
class AtomicFileWriter {
 public:
  // Throws IoError when the temporary file cannot be created (missing directory, permissions).
  explicit AtomicFileWriter(std::filesystem::path path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  // Appends bytes (handles short writes and EINTR); throws IoError on failure (e.g. disk full).
  void write(const void* bytes, size_t count);
  void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }
  // Bytes written so far.
  uint64_t size() const { return written_; }

  // fsync, close, rename over the final path, fsync the directory. Throws IoError on failure
  // (the temporary file is then removed). Calling anything after commit() is an error.
  void commit();

  const std::filesystem::path& path() const { return path_; }
  const std::filesystem::path& temporary_path() const { return temporary_path_; }

 private:
  void abandon() noexcept;

  std::filesystem::path path_;
  std::filesystem::path temporary_path_;
  int fd_ = -1;
  uint64_t written_ = 0;
  bool committed_ = false;
};

// Convenience: the whole content in one call, atomically.
void write_file_atomic(const std::filesystem::path& path, std::string_view contents);

// fsyncs a directory so that a rename or file creation inside it survives a crash.
void fsync_directory(const std::filesystem::path& directory);

}  // namespace scalebert
