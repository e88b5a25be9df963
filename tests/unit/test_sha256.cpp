// SHA-256: the FIPS 180-4 / NIST test vectors, every prefix length across the padding boundaries,
// and a large file hashed in uneven chunks, both against Python's hashlib.
#include <gtest/gtest.h>

#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "test_env.h"
#include "util/error.h"
#include "util/sha256.h"

namespace {

using sg::util::sha256_hex;

void write_bytes(const std::string& path, const std::string& bytes) {
  FILE* out = std::fopen(path.c_str(), "wb");
  ASSERT_NE(out, nullptr);
  ASSERT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), out), bytes.size());
  std::fclose(out);
}

std::string random_bytes(size_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string bytes(size, '\0');
  for (char& c : bytes) c = static_cast<char>(rng() & 0xff);
  return bytes;
}

// Lines printed by a Python snippet given the file path as argv[1].
std::vector<std::string> python_lines(const std::string& script, const std::string& path) {
  sg::test::CommandResult result = sg::test::run_command(sg::test::shell_quote(sg::test::python()) + " -c " +
                                                         sg::test::shell_quote(script) + " " + sg::test::shell_quote(path));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  std::vector<std::string> lines;
  std::istringstream in(result.output);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(Sha256, NistVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
                       "mnopqrstnopqrstu"),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  // One million 'a', fed 1000 bytes at a time.
  sg::util::Sha256 hash;
  const std::string thousand(1000, 'a');
  for (int i = 0; i < 1000; ++i) hash.update(thousand);
  EXPECT_EQ(hash.hex_digest(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, EveryPrefixAcrossPaddingBoundariesMatchesHashlib) {
  const std::string dir = sg::test::temp_dir("sg-sha256");
  const std::string path = dir + "/bytes.bin";
  const std::string bytes = random_bytes(200, 7);
  write_bytes(path, bytes);
  std::vector<std::string> expected = python_lines(
      "import hashlib,sys\nd=open(sys.argv[1],'rb').read()\nfor n in range(len(d)+1): print(hashlib.sha256(d[:n]).hexdigest())",
      path);
  ASSERT_EQ(expected.size(), bytes.size() + 1);
  for (size_t n = 0; n <= bytes.size(); ++n) EXPECT_EQ(sha256_hex(bytes.substr(0, n)), expected[n]) << "length " << n;
}

TEST(Sha256, LargeFileInUnevenChunksMatchesHashlib) {
  const std::string dir = sg::test::temp_dir("sg-sha256");
  const std::string path = dir + "/large.bin";
  const std::string bytes = random_bytes(3 * 1024 * 1024 + 77, 11);  // more than the 1 MiB read chunk
  write_bytes(path, bytes);
  std::vector<std::string> expected =
      python_lines("import hashlib,sys\nprint(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())", path);
  ASSERT_EQ(expected.size(), 1u);
  EXPECT_EQ(sg::util::sha256_file(path), expected[0]);
  std::mt19937 rng(3);
  sg::util::Sha256 hash;
  for (size_t at = 0; at < bytes.size();) {
    size_t take = std::min<size_t>(bytes.size() - at, rng() % 200);  // 0..199, including empty updates
    hash.update(bytes.data() + at, take);
    at += take;
  }
  EXPECT_EQ(hash.hex_digest(), expected[0]);
}

TEST(Sha256, MisuseAndHelpers) {
  sg::util::Sha256 hash;
  hash.update("x");
  hash.hex_digest();
  EXPECT_THROW(hash.update("y"), sg::Error);
  EXPECT_THROW(sg::util::sha256_file("/nonexistent/file"), sg::Error);
  EXPECT_TRUE(sg::util::is_sha256_hex(sha256_hex("abc")));
  EXPECT_FALSE(sg::util::is_sha256_hex("ABC"));
  EXPECT_FALSE(sg::util::is_sha256_hex(std::string(64, 'g')));
}

}  // namespace
