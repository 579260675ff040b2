// Memory mapping, whole-file reads and atomic writes over POSIX calls.
#include "io/file_util.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace scalebert {

namespace {

std::string os_reason() { return std::strerror(errno); }

// Closes a descriptor on scope exit unless released.
struct FdGuard {
  int fd;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

std::shared_ptr<MappedFile> MappedFile::open(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw IoError(str_cat("cannot open ", path, ": ", os_reason()));
  FdGuard guard{fd};
  struct stat status {};
  if (::fstat(fd, &status) != 0) throw IoError(str_cat("cannot stat ", path, ": ", os_reason()));
  if (S_ISDIR(status.st_mode)) throw IoError(str_cat("cannot map ", path, ": it is a directory"));
  if (!S_ISREG(status.st_mode)) throw IoError(str_cat("cannot map ", path, ": not a regular file"));

  std::shared_ptr<MappedFile> file(new MappedFile());
  file->path_ = path;
  file->size_ = static_cast<size_t>(status.st_size);
  if (file->size_ > 0) {
    // PROT_WRITE on a private mapping only allows copy-on-write pages; the file stays untouched.
    void* address = ::mmap(nullptr, file->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (address == MAP_FAILED) {
      throw IoError(str_cat("cannot mmap ", path, " (", file->size_, " bytes): ", os_reason()));
    }
    file->data_ = static_cast<uint8_t*>(address);
  }
  return file;  // the mapping stays valid after the descriptor closes
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(data_, size_);
}

std::string read_file(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw IoError(str_cat("cannot open ", path, ": ", os_reason()));
  FdGuard guard{fd};
  struct stat status {};
  if (::fstat(fd, &status) != 0) throw IoError(str_cat("cannot stat ", path, ": ", os_reason()));
  if (S_ISDIR(status.st_mode)) throw IoError(str_cat("cannot read ", path, ": it is a directory"));
  std::string contents;
  char buffer[1 << 16];
  while (true) {
    ssize_t got = ::read(fd, buffer, sizeof(buffer));
    if (got < 0) {
      if (errno == EINTR) continue;
      throw IoError(str_cat("cannot read ", path, ": ", os_reason()));
    }
    if (got == 0) break;
    contents.append(buffer, static_cast<size_t>(got));
  }
  return contents;
}

void fsync_directory(const std::filesystem::path& directory) {
  std::filesystem::path target = directory.empty() ? std::filesystem::path(".") : directory;
  int fd = ::open(target.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw IoError(str_cat("cannot open directory ", target, ": ", os_reason()));
  FdGuard guard{fd};
  // Some filesystems (certain network mounts) refuse fsync on directories with EINVAL; the rename
  // is then as durable as that filesystem can make it, so this is not an error.
  if (::fsync(fd) != 0 && errno != EINVAL) {
    throw IoError(str_cat("cannot fsync directory ", target, ": ", os_reason()));
  }
}

AtomicFileWriter::AtomicFileWriter(std::filesystem::path path) : path_(std::move(path)) {
  static std::atomic<uint64_t> counter{0};
  temporary_path_ = path_;
  temporary_path_ += str_cat(".tmp.", ::getpid(), ".", counter.fetch_add(1));
  fd_ = ::open(temporary_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    throw IoError(str_cat("cannot create ", temporary_path_, " to write ", path_, ": ", os_reason()));
  }
}

AtomicFileWriter::~AtomicFileWriter() {
  if (!committed_) abandon();
}

void AtomicFileWriter::abandon() noexcept {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  ::unlink(temporary_path_.c_str());
}

void AtomicFileWriter::write(const void* bytes, size_t count) {
  check(fd_ >= 0 && !committed_, "write to ", path_, " after commit");
  const char* cursor = static_cast<const char*>(bytes);
  while (count > 0) {
    ssize_t wrote = ::write(fd_, cursor, count);
    if (wrote < 0) {
      if (errno == EINTR) continue;
      throw IoError(str_cat("cannot write ", temporary_path_, " (after ", written_, " bytes): ",
                            os_reason()));
    }
    cursor += wrote;
    count -= static_cast<size_t>(wrote);
    written_ += static_cast<uint64_t>(wrote);
  }
}

void AtomicFileWriter::commit() {
  check(fd_ >= 0 && !committed_, "commit of ", path_, " twice");
  if (::fsync(fd_) != 0) {
    std::string reason = os_reason();
    abandon();
    throw IoError(str_cat("cannot fsync ", temporary_path_, ": ", reason));
  }
  int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    std::string reason = os_reason();
    abandon();
    throw IoError(str_cat("cannot close ", temporary_path_, ": ", reason));
  }
  if (::rename(temporary_path_.c_str(), path_.c_str()) != 0) {
    std::string reason = os_reason();
    abandon();
    throw IoError(str_cat("cannot rename ", temporary_path_, " to ", path_, ": ", reason));
  }
  committed_ = true;
  fsync_directory(path_.parent_path());
}

void write_file_atomic(const std::filesystem::path& path, std::string_view contents) {
  AtomicFileWriter writer(path);
  writer.write(contents);
  writer.commit();
}

}  // namespace scalebert
