#include <gtest/gtest.h>

#include <filesystem>

#include "test_env.h"
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
