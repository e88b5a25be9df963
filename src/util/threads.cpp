#include "util/threads.h"

#include <ATen/Parallel.h>

#include <thread>

namespace sg::util {

int set_threads(int requested) {
  int count = requested > 0 ? requested : static_cast<int>(std::thread::hardware_concurrency());
  if (count <= 0) count = 1;
  at::set_num_threads(count);
  return at::get_num_threads();
}

}  // namespace sg::util
