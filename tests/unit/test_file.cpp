#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>

#include "test_env.h"
#include "util/append_file.h"
#include "util/error.h"
#include "util/file.h"

namespace {

TEST(AtomicFileWriter, CommitReplacesDestination) {
  std::string dir = sg::test::temp_dir("sg-file");
  std::string path = sg::util::join_path(dir, "a.bin");
  sg::util::write_file_atomic(path, "old");
  sg::util::write_file_atomic(path, "new contents");
  EXPECT_EQ(sg::util::read_file(path), "new contents");
  // No temp file is left behind.
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir)) { (void)e; ++files; }
  EXPECT_EQ(files, 1);
}

TEST(AtomicFileWriter, NoCommitLeavesDestinationUntouched) {
  std::string dir = sg::test::temp_dir("sg-file");
  std::string path = sg::util::join_path(dir, "a.bin");
  sg::util::write_file_atomic(path, "original");
  {
    sg::util::AtomicFileWriter writer(path);
    writer.write("partial");
  }  // destroyed without commit, as after an exception
  EXPECT_EQ(sg::util::read_file(path), "original");
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir)) { (void)e; ++files; }
  EXPECT_EQ(files, 1);
}

// AppendFile writes whole blocks (O_DIRECT where it can) and cuts the file back to its length.
TEST(AppendFile, PiecesOfAnySizeGiveTheBytesWithAndWithoutDirectIo) {
  std::mt19937 random(7);
  std::string expected;
  for (size_t size : {size_t{1}, size_t{4095}, size_t{4097}, size_t{20} << 20, size_t{3}, size_t{16} << 20, size_t{5}}) {
    for (size_t j = 0; j < size; ++j) expected.push_back(static_cast<char>(random() & 0xff));
  }
  for (const char* setting : {"0", "1"}) {
    const std::string path = sg::util::join_path(sg::test::temp_dir("sg-append"), "f.bin");
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    {
      sg::test::ScopedEnv direct_io("SG_NO_DIRECT_IO", setting);
      sg::util::AppendFile file(fd, path);
      size_t at = 0;
      for (size_t size : {size_t{1}, size_t{4095}, size_t{4097}, size_t{20} << 20}) {
        file.append(expected.data() + at, size);
        at += size;
      }
      // The rest through reserve/commit, in pieces up to the limit.
      while (at < expected.size()) {
        const size_t piece = std::min(expected.size() - at, sg::util::AppendFile::kMaxReserve - 1);
        std::memcpy(file.reserve(piece), expected.data() + at, piece);
        file.commit();
        at += piece;
      }
      EXPECT_EQ(file.size(), expected.size());
      if (std::string(setting) == "1") EXPECT_FALSE(file.direct());
      file.finish();
    }
    ::close(fd);
    EXPECT_TRUE(sg::util::read_file(path) == expected) << "SG_NO_DIRECT_IO=" << setting;
  }
}

TEST(AppendFile, AWriteErrorNamesTheFile) {
  const int fd = ::open("/dev/full", O_WRONLY);
  if (fd < 0) GTEST_SKIP() << "no /dev/full";
  std::string error;
  {
    sg::util::AppendFile file(fd, "/dev/full");
    const std::string bytes(int64_t{40} << 20, 'x');
    try {
      file.append(bytes.data(), bytes.size());
      file.finish();
    } catch (const sg::Error& e) {
      error = e.what();
    }
  }
  ::close(fd);
  EXPECT_NE(error.find("/dev/full: write failed"), std::string::npos) << error;
}

TEST(ReadFile, MissingFileNamesThePath) {
  try {
    sg::util::read_file("/nonexistent/dir/file.bin");
    FAIL() << "expected sg::Error";
  } catch (const sg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/file.bin"), std::string::npos);
  }
}

TEST(MappedFile, MapsContentsAndEmptyFiles) {
  std::string dir = sg::test::temp_dir("sg-file");
  std::string path = sg::util::join_path(dir, "m.bin");
  sg::util::write_file_atomic(path, "hello");
  auto mapped = sg::util::MappedFile::open(path);
  ASSERT_EQ(mapped->size(), 5u);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(mapped->data()), 5), "hello");
  // Private mapping: writing to memory does not change the file.
  mapped->data()[0] = 'J';
  EXPECT_EQ(sg::util::read_file(path), "hello");
  std::string empty = sg::util::join_path(dir, "e.bin");
  sg::util::write_file_atomic(empty, "");
  EXPECT_EQ(sg::util::MappedFile::open(empty)->size(), 0u);
}

}  // namespace
