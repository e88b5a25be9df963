// Test environment: paths the build passes to every test binary, and small shared helpers.
#pragma once

#include <string>

namespace sg::test {

std::string source_dir();   // the repository root
std::string binary();       // the skillgraft executable
std::string python();       // /usr/bin/python3 (Debian's, with torch and numpy)
std::string refdata_dir();  // where reference fixtures write their outputs
// A fresh empty directory under the system temp dir, removed at process exit.
std::string temp_dir(const std::string& prefix);

struct CommandResult {
  int exit_code;
  std::string output;  // stdout and stderr together
};
// Runs a shell command line, capturing stdout+stderr.
CommandResult run_command(const std::string& command_line);
// Quotes a string for /bin/sh.
std::string shell_quote(const std::string& text);

}  // namespace sg::test
