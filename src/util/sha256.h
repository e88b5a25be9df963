// SHA-256 (FIPS 180-4), streamed: the content hash of the skill library's blobs. Plain C++, no
// dependencies (checked against the NIST vectors and Python's hashlib).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace sg::util {

// Feed bytes with update() any number of times, then hex_digest() once. Not thread-safe.
class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  void update(const std::string& bytes) { update(bytes.data(), bytes.size()); }
  // The 32-byte digest; ends the hash (further updates throw).
  std::array<uint8_t, 32> digest();
  // The digest as 64 lowercase hex digits.
  std::string hex_digest();

 private:
  void compress(const uint8_t* block);
  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
  bool finished_ = false;
};

// The hex SHA-256 of a byte string.
std::string sha256_hex(const std::string& bytes);
// The hex SHA-256 of a whole file, read in 1 MiB chunks; throws naming the path if unreadable.
std::string sha256_file(const std::string& path);
// Whether `text` is 64 lowercase hex digits.
bool is_sha256_hex(const std::string& text);

}  // namespace sg::util
