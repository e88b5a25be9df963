// Files: whole-file reads, atomic writes (temp + fsync + rename), and read-only mappings.
// Everything here throws sg::Error naming the path; nothing here knows about tensors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace sg::util {

// Reads a whole file; throws if it is missing or unreadable.
std::string read_file(const std::string& path);

bool file_exists(const std::string& path);
bool is_directory(const std::string& path);
// Creates the directory and its parents if missing; throws if that fails.
void make_directories(const std::string& path);
std::string join_path(const std::string& dir, const std::string& name);
// fsync of a directory (after a rename into it); best effort where the file system refuses.
void fsync_directory(const std::string& dir);

// Writes all `size` bytes at `offset` (retrying short and interrupted writes). Returns 0, or the
// errno of the failure (EIO for a write that wrote nothing): it throws nothing, for writer threads.
int pwrite_all(int fd, const void* data, size_t size, uint64_t offset);

// pwrite_all that throws a failure as one line naming `path` (with a hint).
void write_at(int fd, const std::string& path, const void* data, size_t size, uint64_t offset);

// Whether environment variable `name` is set to something other than "" or "0" (switches such as
// SG_NO_DIRECT_IO=1).
bool env_flag(const char* name);

// Writes a file atomically: bytes go to "<path>.tmp.<pid>", are fsynced, then renamed over
// <path> and the directory is fsynced. If commit() is never called (an exception, a crash), the
// destination is untouched and the temp file is removed by the destructor.
// Not thread-safe; one writer per instance.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(const std::string& path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t size);
  void write(const std::string& bytes) { write(bytes.data(), bytes.size()); }
  uint64_t bytes_written() const { return bytes_written_; }
  // fsync, close, rename over the destination, fsync the directory.
  void commit();

 private:
  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
  uint64_t bytes_written_ = 0;
  bool committed_ = false;
};

// Convenience: atomically replaces <path> with <bytes>.
void write_file_atomic(const std::string& path, const std::string& bytes);

// A private (copy-on-write) mapping of a whole file. Pages are writable in memory but writes never
// reach the file, so tensors viewing it may be modified safely. Shared ownership: tensors that view
// the mapping hold a shared_ptr to it. An empty file maps to size() == 0 and data() == nullptr.
class MappedFile {
 public:
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace sg::util
