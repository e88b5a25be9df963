// Small helpers the benchmark programs share.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "util/error.h"

namespace sg::bench {

inline double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The middle value (the upper one of an even count).
inline double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// A field of /proc/self/status in bytes ("VmRSS", "VmHWM").
inline int64_t status_bytes(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1)) * 1024;
  }
  SG_FAIL("no " << field << " in /proc/self/status");
}

// Sets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0).
inline void reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.close();
  SG_CHECK(out.good(), "cannot reset the peak RSS through /proc/self/clear_refs");
}

}  // namespace sg::bench
