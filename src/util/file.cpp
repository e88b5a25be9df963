#include "util/file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "util/error.h"

namespace sg::util {

namespace {

std::string errno_text() { return std::strerror(errno); }

std::string parent_directory(const std::string& path) {
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? "." : parent.string();
}

}  // namespace

void fsync_directory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;  // best effort: some file systems do not allow opening directories
  ::fsync(fd);
  ::close(fd);
}

std::string read_file(const std::string& path) {
  SG_CHECK(!is_directory(path), path << ": is a directory, expected a file");
  std::ifstream in(path, std::ios::binary);
  SG_CHECK(in.good(), path << ": cannot open (" << errno_text() << "); hint: check the path");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  SG_CHECK(!in.bad(), path << ": read failed");
  return buffer.str();
}

bool file_exists(const std::string& path) {
  std::error_code ec;
  return std::filesystem::exists(path, ec);
}

bool is_directory(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_directory(path, ec);
}

void make_directories(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  SG_CHECK(!ec && is_directory(path), path << ": cannot create directory (" << ec.message() << ")");
}

int pwrite_all(int fd, const void* data, size_t size, uint64_t offset) {
  const char* bytes = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::pwrite(fd, bytes, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? errno : EIO;
    bytes += n;
    size -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return 0;
}

void write_at(int fd, const std::string& path, const void* data, size_t size, uint64_t offset) {
  const int failure = pwrite_all(fd, data, size, offset);
  SG_CHECK(failure == 0, path << ": write failed (" << std::strerror(failure) << "); hint: is the disk full?");
}

bool env_flag(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && value[0] != '\0' && std::strcmp(value, "0") != 0;
}

std::string join_path(const std::string& dir, const std::string& name) {
  return (std::filesystem::path(dir) / name).string();
}

AtomicFileWriter::AtomicFileWriter(const std::string& path)
    : path_(path), temp_path_(path + ".tmp." + std::to_string(::getpid())) {
  fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  SG_CHECK(fd_ >= 0, temp_path_ << ": cannot create (" << errno_text()
                                << "); hint: is the directory writable?");
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_path_.c_str());
}

void AtomicFileWriter::write(const void* data, size_t size) {
  SG_CHECK(fd_ >= 0 && !committed_, path_ << ": write after commit");
  write_at(fd_, temp_path_, data, size, bytes_written_);
  bytes_written_ += size;
}

void AtomicFileWriter::commit() {
  SG_CHECK(fd_ >= 0 && !committed_, path_ << ": commit called twice");
  SG_CHECK(::fsync(fd_) == 0, temp_path_ << ": fsync failed (" << errno_text() << ")");
  SG_CHECK(::close(fd_) == 0, temp_path_ << ": close failed (" << errno_text() << ")");
  fd_ = -1;
  SG_CHECK(::rename(temp_path_.c_str(), path_.c_str()) == 0,
           path_ << ": cannot rename temp file into place (" << errno_text() << ")");
  committed_ = true;
  fsync_directory(parent_directory(path_));
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  AtomicFileWriter writer(path);
  writer.write(bytes);
  writer.commit();
}

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  SG_CHECK(!is_directory(path), path << ": is a directory, expected a file");
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  SG_CHECK(fd >= 0, path << ": cannot open (" << errno_text() << "); hint: check the path");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    std::string why = errno_text();
    ::close(fd);
    SG_FAIL(path << ": cannot stat (" << why << ")");
  }
  std::shared_ptr<MappedFile> mapped(new MappedFile());
  mapped->path_ = path;
  mapped->size_ = static_cast<size_t>(st.st_size);
  if (mapped->size_ > 0) {
    void* addr = ::mmap(nullptr, mapped->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
      std::string why = errno_text();
      ::close(fd);
      SG_FAIL(path << ": mmap failed (" << why << ")");
    }
    mapped->data_ = static_cast<uint8_t*>(addr);
  }
  ::close(fd);
  return mapped;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(data_, size_);
}

}  // namespace sg::util
