#include "library/blob_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <vector>

#include "util/error.h"
#include "util/file.h"
#include "util/sha256.h"

namespace sg::library {

namespace {

constexpr const char* kBlobSuffix = ".safetensors";
constexpr const char* kTempSuffix = ".tmp";
constexpr size_t kChunkBytes = 1 << 20;

std::string errno_text() { return std::strerror(errno); }

bool is_hex(const std::string& text) {
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return !text.empty();
}

bool same_inode(int fd, const std::string& path) {
  struct stat by_fd {}, by_path {};
  if (::fstat(fd, &by_fd) != 0 || ::stat(path.c_str(), &by_path) != 0) return false;
  return by_fd.st_dev == by_path.st_dev && by_fd.st_ino == by_path.st_ino;
}

}  // namespace

FileHandle::~FileHandle() {
  if (fd_ >= 0) ::close(fd_);
}

FileHandle& FileHandle::operator=(FileHandle&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.release();
  }
  return *this;
}

int FileHandle::release() {
  int fd = fd_;
  fd_ = -1;
  return fd;
}

StagedBlob::~StagedBlob() {
  if (!published_ && !temp_path_.empty()) ::unlink(temp_path_.c_str());
}

std::string hash_stream(int fd, const std::string& what, const std::function<void(const char*, size_t)>& sink,
                        int64_t* bytes) {
  SG_CHECK(::lseek(fd, 0, SEEK_SET) == 0, what << ": cannot seek (" << errno_text() << ")");
  util::Sha256 hash;
  std::vector<char> buffer(kChunkBytes);
  int64_t total = 0;
  while (true) {
    ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    SG_CHECK(n >= 0, what << ": read failed (" << errno_text() << ")");
    if (n == 0) break;
    hash.update(buffer.data(), static_cast<size_t>(n));
    if (sink) sink(buffer.data(), static_cast<size_t>(n));
    total += n;
  }
  if (bytes != nullptr) *bytes = total;
  return hash.hex_digest();
}

BlobStore::BlobStore(std::string root) : root_(std::move(root)) {}

void BlobStore::create(const std::string& root) {
  util::make_directories(util::join_path(root, "tmp"));
  util::fsync_directory(root);
  std::filesystem::path parent = std::filesystem::path(root).parent_path();
  util::fsync_directory(parent.empty() ? "." : parent.string());
}

std::string BlobStore::path_of(const std::string& id) const {
  SG_CHECK(util::is_sha256_hex(id), "\"" << id << "\" is not a blob id (64 lowercase hex digits)");
  return util::join_path(util::join_path(root_, id.substr(0, 2)), id + kBlobSuffix);
}

std::string BlobStore::temp_dir() const { return util::join_path(root_, "tmp"); }

std::unique_ptr<StagedBlob> BlobStore::stage(const std::string& source) const {
  SG_CHECK(!util::is_directory(source), source << ": is a directory, expected a skill file");
  FileHandle in(::open(source.c_str(), O_RDONLY | O_CLOEXEC));
  SG_CHECK(in.valid(), source << ": cannot open (" << errno_text() << "); hint: check the path");
  struct stat st {};
  SG_CHECK(::fstat(in.get(), &st) == 0 && S_ISREG(st.st_mode), source << ": not a regular file");

  std::unique_ptr<StagedBlob> staged(new StagedBlob());
  std::random_device random;
  for (int attempt = 0; attempt < 100 && !staged->fd_.valid(); ++attempt) {
    char name[64];
    std::snprintf(name, sizeof(name), "%d-%08x%08x%s", static_cast<int>(::getpid()), random(), random(), kTempSuffix);
    std::string path = util::join_path(temp_dir(), name);
    FileHandle fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (!fd.valid() && errno == EEXIST) continue;
    SG_CHECK(fd.valid(), path << ": cannot create (" << errno_text()
                              << "); hint: is the library writable? (skillgraft library init makes blobs/tmp)");
    // `verify --fix` deletes unlocked temp files: if it took this one between open and flock, the
    // name is gone or names another file; start over with a new name.
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0 || !same_inode(fd.get(), path)) continue;
    staged->temp_path_ = path;
    staged->fd_ = std::move(fd);
  }
  SG_CHECK(staged->fd_.valid(), temp_dir() << ": could not create a temp file; hint: check the library directory");

  const int out = staged->fd_.get();
  const std::string& temp_path = staged->temp_path_;
  uint64_t written = 0;
  staged->id_ = hash_stream(in.get(), source,
                            [&](const char* data, size_t size) {
                              util::write_at(out, temp_path, data, size, written);
                              written += size;
                            },
                            &staged->bytes_);
  // Read-only: a blob is never modified in place, only replaced whole by the same bytes.
  SG_CHECK(::fchmod(out, 0444) == 0, temp_path << ": chmod failed (" << errno_text() << ")");
  SG_CHECK(::fsync(out) == 0, temp_path << ": fsync failed (" << errno_text() << ")");
  return staged;
}

void BlobStore::publish(StagedBlob& staged) const {
  SG_CHECK(!staged.published_, staged.temp_path_ << ": published twice");
  const std::string path = path_of(staged.id_);
  const std::string shard = std::filesystem::path(path).parent_path().string();
  if (!util::is_directory(shard)) {
    util::make_directories(shard);
    util::fsync_directory(root_);
  }
  SG_CHECK(::rename(staged.temp_path_.c_str(), path.c_str()) == 0,
           path << ": cannot rename the temp file into place (" << errno_text() << ")");
  staged.published_ = true;
  util::fsync_directory(shard);
  util::fsync_directory(temp_dir());
}

bool BlobStore::remove(const std::string& id) const {
  const std::string path = path_of(id);
  if (::unlink(path.c_str()) != 0) {
    SG_CHECK(errno == ENOENT, path << ": cannot delete (" << errno_text() << ")");
    return false;
  }
  util::fsync_directory(std::filesystem::path(path).parent_path().string());
  return true;
}

FileHandle BlobStore::open_blob(const std::string& id) const {
  const std::string path = path_of(id);
  FileHandle fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  SG_CHECK(fd.valid() || errno == ENOENT, path << ": cannot open (" << errno_text() << ")");
  return fd;
}

std::vector<BlobFile> BlobStore::list_files() const {
  namespace fs = std::filesystem;
  std::vector<BlobFile> files;
  std::error_code ec;
  for (fs::directory_iterator shard(root_, ec), end; !ec && shard != end; shard.increment(ec)) {
    const std::string shard_name = shard->path().filename().string();
    if (shard_name == "tmp") continue;
    if (!shard->is_directory(ec)) {
      files.push_back({shard->path().string(), ""});
      continue;
    }
    const bool shard_ok = shard_name.size() == 2 && is_hex(shard_name);
    std::error_code inner;
    for (fs::directory_iterator file(shard->path(), inner), file_end; !inner && file != file_end;
         file.increment(inner)) {
      const std::string name = file->path().filename().string();
      const std::string stem = file->path().stem().string();
      const bool named_ok = shard_ok && file->path().extension() == kBlobSuffix && util::is_sha256_hex(stem) &&
                            stem.compare(0, 2, shard_name) == 0 && file->is_regular_file(inner);
      files.push_back({file->path().string(), named_ok ? stem : ""});
    }
    SG_CHECK(!inner, shard->path().string() << ": cannot list (" << inner.message() << ")");
  }
  SG_CHECK(!ec, root_ << ": cannot list (" << ec.message() << "); hint: is this a skill library?");
  return files;
}

std::vector<std::string> BlobStore::stale_temps() const {
  namespace fs = std::filesystem;
  std::vector<std::string> stale;
  std::error_code ec;
  for (fs::directory_iterator file(temp_dir(), ec), end; !ec && file != end; file.increment(ec)) {
    const std::string path = file->path().string();
    FileHandle fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) continue;  // gone meanwhile: its writer published or cleaned it
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) stale.push_back(path);
  }
  SG_CHECK(!ec, temp_dir() << ": cannot list (" << ec.message() << ")");
  return stale;
}

bool BlobStore::remove_stale_temp(const std::string& path) const {
  FileHandle fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return false;
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0 || !same_inode(fd.get(), path)) return false;
  SG_CHECK(::unlink(path.c_str()) == 0 || errno == ENOENT, path << ": cannot delete (" << errno_text() << ")");
  return true;
}

}  // namespace sg::library
