// Logging to stderr: info lines, and a progress line for long work. stdout is for results only.
#pragma once

#include <string>

namespace sg::util {

void set_quiet(bool quiet);
bool is_quiet();
// One line to stderr, prefixed "skillgraft: ".
void log_info(const std::string& line);

// A progress counter on stderr, redrawn in place on a terminal and printed every ~10% otherwise.
class Progress {
 public:
  Progress(std::string label, long long total);
  ~Progress();
  void advance(long long steps = 1);
  void finish();

 private:
  void draw(bool final_line);
  std::string label_;
  long long total_;
  long long done_ = 0;
  int last_decile_ = -1;
  bool tty_;
  bool finished_ = false;
};

}  // namespace sg::util
