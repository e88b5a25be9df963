// Wall-clock timing on the steady clock, for progress lines and reported durations.
#pragma once

#include <chrono>

namespace sg::util {

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace sg::util
