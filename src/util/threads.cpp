#include "util/threads.h"

#include <ATen/Parallel.h>

#include <mutex>
#include <set>
#include <thread>

namespace sg::util {

int set_threads(int requested) {
  int count = requested > 0 ? requested : static_cast<int>(std::thread::hardware_concurrency());
  if (count <= 0) count = 1;
  at::set_num_threads(count);
  return at::get_num_threads();
}

int parallel_for_threads(int items) {
  std::mutex mutex;
  std::set<std::thread::id> seen;
  at::parallel_for(0, items, 1, [&](int64_t, int64_t) {
    std::lock_guard<std::mutex> lock(mutex);
    seen.insert(std::this_thread::get_id());
  });
  return static_cast<int>(seen.size());
}

}  // namespace sg::util
