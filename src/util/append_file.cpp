#include "util/append_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "util/error.h"
#include "util/file.h"

namespace sg::util {

AppendFile::AppendFile(int fd, const std::string& path) : fd_(fd), path_(path) {
#ifdef O_DIRECT
  if (!env_flag("SG_NO_DIRECT_IO")) direct_fd_ = ::open(path.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);
#endif
  direct_ok_ = direct_fd_ >= 0;
  for (size_t i = 0; i < kBuffers; ++i) {
    void* memory = std::aligned_alloc(kBlock, kBufferBytes);
    if (memory == nullptr) {
      for (uint8_t* buffer : buffers_) std::free(buffer);
      if (direct_fd_ >= 0) ::close(direct_fd_);
      SG_FAIL(path << ": cannot allocate " << kBuffers << " write buffers of " << (kBufferBytes >> 20)
                   << " MB; hint: free some memory");
    }
    buffers_.push_back(static_cast<uint8_t*>(memory));
    if (i > 0) free_.push_back(i);
  }
  current_ = 0;
  thread_ = std::thread([this] { run(); });
}

AppendFile::~AppendFile() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
    jobs_.clear();
  }
  changed_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (direct_fd_ >= 0) ::close(direct_fd_);
  for (uint8_t* buffer : buffers_) std::free(buffer);
}

bool AppendFile::direct() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return direct_ok_;
}

void AppendFile::check_error() {
  std::lock_guard<std::mutex> lock(mutex_);
  SG_CHECK(error_.empty(), error_);
}

void AppendFile::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    changed_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
    if (stop_) return;
    const Job job = jobs_.front();
    jobs_.pop_front();
    busy_ = true;
    const bool direct = direct_ok_;
    lock.unlock();
    int failure = 0;
    bool fell_back = false;
    if (job.bytes > 0) {
      if (direct) {
        failure = pwrite_all(direct_fd_, buffers_[job.buffer], job.bytes, job.offset);
        // A file system that takes the open but not these writes (alignment): ordinary writes.
        if (failure == EINVAL) {
          fell_back = true;
          failure = pwrite_all(fd_, buffers_[job.buffer], job.bytes, job.offset);
        }
      } else {
        failure = pwrite_all(fd_, buffers_[job.buffer], job.bytes, job.offset);
      }
    }
    lock.lock();
    if (fell_back) direct_ok_ = false;
    if (failure != 0 && error_.empty()) {
      error_ = path_ + ": write failed (" + std::strerror(failure) + "); hint: is the disk full?";
    }
    free_.push_back(job.buffer);
    busy_ = false;
    changed_.notify_all();
  }
}

size_t AppendFile::take_free_buffer() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [this] { return !free_.empty(); });
  const size_t buffer = free_.back();
  free_.pop_back();
  return buffer;
}

// Hands the first `bytes` of the current buffer (a multiple of kBlock, or the end of the file) to
// the thread; the rest moves to the front of a fresh buffer.
void AppendFile::submit(size_t bytes) {
  const size_t next = take_free_buffer();
  const size_t tail = fill_ - std::min(bytes, fill_);
  if (tail > 0) std::memcpy(buffers_[next], buffers_[current_] + (fill_ - tail), tail);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    jobs_.push_back(Job{current_, start_, bytes});
  }
  changed_.notify_all();
  current_ = next;
  start_ += fill_ - tail;
  fill_ = tail;
}

uint8_t* AppendFile::reserve(size_t size) {
  SG_CHECK(size <= kMaxReserve, path_ << ": a staged write of " << size << " bytes is over the " << kMaxReserve
                                      << "-byte limit; hint: internal error, write it in pieces");
  check_error();
  if (fill_ + size > kBufferBytes) submit(fill_ / kBlock * kBlock);
  reserved_ = size;
  return buffers_[current_] + fill_;
}

void AppendFile::commit() {
  fill_ += reserved_;
  reserved_ = 0;
}

void AppendFile::append(const void* data, size_t size) {
  const uint8_t* bytes = static_cast<const uint8_t*>(data);
  while (size > 0) {
    const size_t piece = std::min(size, kMaxReserve);
    std::memcpy(reserve(piece), bytes, piece);
    commit();
    bytes += piece;
    size -= piece;
  }
}

void AppendFile::finish() {
  const uint64_t length = size();
  // The last block, padded with zeros to a whole one (O_DIRECT writes whole blocks), then cut off.
  const size_t padded = (fill_ + kBlock - 1) / kBlock * kBlock;
  std::memset(buffers_[current_] + fill_, 0, padded - fill_);
  fill_ = padded;
  submit(padded);
  {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [this] { return jobs_.empty() && !busy_; });
  }
  check_error();
  int result;
  do {
    result = ::ftruncate(fd_, static_cast<off_t>(length));
  } while (result != 0 && errno == EINTR);
  SG_CHECK(result == 0, path_ << ": cannot truncate to " << length << " bytes (" << std::strerror(errno) << ")");
  start_ = length;
  fill_ = 0;
}

}  // namespace sg::util
