#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include "util/threads.h"

namespace {

// at::parallel_for is an inline template: it runs in parallel only where the calling code is built
// with OpenMP (as LibTorch is). Independent check: the distinct std::thread ids that ran the body.
TEST(Threads, OurParallelForRunsOnAsManyThreadsAsSet) {
  const int before = at::get_num_threads();
  EXPECT_EQ(sg::util::set_threads(2), 2);
  EXPECT_EQ(sg::util::parallel_for_threads(2), 2) << "at::parallel_for ran serially: is the build missing OpenMP?";
  EXPECT_EQ(sg::util::parallel_for_threads(1), 1);
  EXPECT_EQ(sg::util::set_threads(1), 1);
  EXPECT_EQ(sg::util::parallel_for_threads(8), 1);
  sg::util::set_threads(before);
}

}  // namespace
