// The skill library's blob files, addressed by content: ROOT/<first 2 hex>/<sha256 hex>.safetensors.
// A blob enters through a temp file in ROOT/tmp/ (copied and hashed in one pass, fsynced), then is
// renamed into place and the directory fsynced, so a blob path only ever names complete, durable
// bytes. Knows nothing of the catalog; the Library (library.h) orders blob and catalog steps.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace sg::library {

// An open file descriptor, closed on destruction.
class FileHandle {
 public:
  FileHandle() = default;
  explicit FileHandle(int fd) : fd_(fd) {}
  ~FileHandle();
  FileHandle(FileHandle&& other) noexcept : fd_(other.release()) {}
  FileHandle& operator=(FileHandle&& other) noexcept;
  FileHandle(const FileHandle&) = delete;
  FileHandle& operator=(const FileHandle&) = delete;
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release();

 private:
  int fd_ = -1;
};

// A copy of a file in ROOT/tmp/, hashed while copied and fsynced, not yet visible under its id.
// While alive it holds an exclusive flock on the temp file, so `verify` tells a live writer's temp
// file (locked) from one a killed writer left behind (unlocked). Destroyed without publish(): the
// temp file is deleted.
class StagedBlob {
 public:
  ~StagedBlob();
  StagedBlob(const StagedBlob&) = delete;
  StagedBlob& operator=(const StagedBlob&) = delete;
  const std::string& id() const { return id_; }           // sha256 hex of the bytes
  const std::string& temp_path() const { return temp_path_; }
  int64_t bytes() const { return bytes_; }

 private:
  friend class BlobStore;
  StagedBlob() = default;
  std::string id_, temp_path_;
  int64_t bytes_ = 0;
  FileHandle fd_;
  bool published_ = false;
};

// A file found under ROOT: a blob (its id parsed from its name) or something else.
struct BlobFile {
  std::string path;
  std::string id;  // "" when the name is not "<sha256 hex>.safetensors" in its right shard folder
};

// Thread-safe (no state besides the root); several processes may use one root at once. Ordering
// publish/remove against the catalog is the caller's job (Library holds its write lock).
class BlobStore {
 public:
  explicit BlobStore(std::string root);
  // Creates ROOT and ROOT/tmp (fsyncing the parent).
  static void create(const std::string& root);

  const std::string& root() const { return root_; }
  std::string path_of(const std::string& id) const;
  std::string temp_dir() const;

  // Copies `source` into a new locked temp file, hashing it; fsyncs. Throws naming the source.
  std::unique_ptr<StagedBlob> stage(const std::string& source) const;
  // Renames the staged file to path_of(id) (replacing an existing blob: same id, same bytes) and
  // fsyncs the shard directory.
  void publish(StagedBlob& staged) const;
  // Unlinks a blob and fsyncs its directory; false when there was none.
  bool remove(const std::string& id) const;
  // Opens a blob read-only; an invalid handle when it does not exist. Once open, the bytes stay
  // readable even if the blob is removed meanwhile (POSIX unlink semantics).
  FileHandle open_blob(const std::string& id) const;

  // Every file under the shard folders (not the temp folder).
  std::vector<BlobFile> list_files() const;
  // Temp files whose writer is gone (no flock held on them).
  std::vector<std::string> stale_temps() const;
  // Deletes a temp file if (still) no writer holds it; false when one does or it is gone.
  bool remove_stale_temp(const std::string& path) const;

 private:
  std::string root_;
};

// Reads an open file from its start to its end in 1 MiB chunks, passing each chunk to `sink` (may
// be empty), and returns the bytes' sha256 hex. Throws naming `what` on a read error.
std::string hash_stream(int fd, const std::string& what,
                        const std::function<void(const char*, size_t)>& sink = nullptr, int64_t* bytes = nullptr);

}  // namespace sg::library
