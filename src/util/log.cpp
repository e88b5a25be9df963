#include "util/log.h"

#include <unistd.h>

#include <cstdio>
#include <utility>

namespace sg::util {

namespace {
bool g_quiet = false;  // set once from main() before any work starts
}

void set_quiet(bool quiet) { g_quiet = quiet; }
bool is_quiet() { return g_quiet; }

void log_info(const std::string& line) {
  if (g_quiet) return;
  std::fprintf(stderr, "skillgraft: %s\n", line.c_str());
}

Progress::Progress(std::string label, long long total)
    : label_(std::move(label)), total_(total), tty_(::isatty(STDERR_FILENO) == 1) {}

Progress::~Progress() { finish(); }

void Progress::advance(long long steps) {
  done_ += steps;
  draw(false);
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  draw(true);
}

void Progress::draw(bool final_line) {
  if (g_quiet || total_ <= 0) return;
  int decile = static_cast<int>(10 * done_ / total_);
  if (tty_) {
    std::fprintf(stderr, "\r%s: %lld/%lld%s", label_.c_str(), done_, total_, final_line ? "\n" : "");
  } else if (decile != last_decile_ || final_line) {
    if (final_line && decile == last_decile_) return;
    std::fprintf(stderr, "%s: %lld/%lld\n", label_.c_str(), done_, total_);
  }
  last_decile_ = decile;
  std::fflush(stderr);
}

}  // namespace sg::util
