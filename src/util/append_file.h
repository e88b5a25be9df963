// A file written front to back by a background thread: the caller fills staging buffers in order
// and hands them over; the thread writes each with O_DIRECT where the file system takes it (no copy
// into the page cache, and the disk works while the caller computes the next bytes), else with
// ordinary writes. Buffers are written in whole 4096-byte blocks; finish() pads the last block and
// truncates the file back to its length. Memory: kBuffers buffers of kBufferBytes.
//
// SG_NO_DIRECT_IO=1 in the environment turns O_DIRECT off (ordinary writes from the same thread).
//
// Thread safety: reserve/commit/append/finish belong to one thread; the region reserve() returns
// may be filled from several threads before commit().
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace sg::util {

class AppendFile {
 public:
  static constexpr size_t kBlock = 4096;
  static constexpr size_t kBufferBytes = size_t{16} << 20;
  static constexpr size_t kBuffers = 3;
  // The most one reserve() may ask for.
  static constexpr size_t kMaxReserve = kBufferBytes - kBlock;

  // `fd` is open for writing on `path` (an empty file: bytes go from offset 0); it stays owned by
  // the caller. `path` is opened again with O_DIRECT, and names the file in messages.
  AppendFile(int fd, const std::string& path);
  // Stops the thread; bytes not yet written are dropped (call finish() to keep them).
  ~AppendFile();
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;

  // A region for the next `size` bytes of the file (at most kMaxReserve), valid until commit().
  // Throws the background thread's first write error, if any.
  uint8_t* reserve(size_t size);
  // The region of the last reserve() is filled: those bytes follow the file's earlier ones.
  void commit();
  // reserve + copy + commit, for any size.
  void append(const void* data, size_t size);
  // Bytes appended so far (the file's length once finished).
  uint64_t size() const { return start_ + fill_; }
  // Whether writes go around the page cache (O_DIRECT accepted so far).
  bool direct() const;

  // Writes what is left, waits for the thread, truncates the file to size(). Throws the first
  // write error (naming the file). No fsync: the caller syncs.
  void finish();

 private:
  struct Job {
    size_t buffer;
    uint64_t offset;
    size_t bytes;
  };
  void submit(size_t bytes);
  size_t take_free_buffer();
  void run();
  void check_error();

  int fd_;
  int direct_fd_ = -1;
  std::string path_;
  std::vector<uint8_t*> buffers_;
  size_t current_ = 0;   // buffer being filled
  uint64_t start_ = 0;   // file offset of its first byte (a multiple of kBlock)
  size_t fill_ = 0;      // bytes in it
  size_t reserved_ = 0;  // bytes of the open reserve()

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Job> jobs_;
  std::vector<size_t> free_;
  bool stop_ = false;
  bool busy_ = false;
  bool direct_ok_ = true;
  std::string error_;
  std::thread thread_;
};

}  // namespace sg::util
