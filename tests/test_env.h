// Test environment: paths the build passes to every test binary, and small shared helpers.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <string>
#include <vector>

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

// Sets an environment variable for one scope (a switch such as SG_NO_DIRECT_IO), unset after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { ::setenv(name, value, 1); }
  ~ScopedEnv() { ::unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
};

}  // namespace sg::test

namespace sg::test {

// The skillgraft executable followed by `args`, as a shell command line.
std::string sg_command(const std::string& args);
// A file of the repository's data/models/.
std::string data_model(const std::string& name);
// Runs `skillgraft args`, which must fail (non-zero exit) with exactly one line of output that
// contains every needle (and "hint" when require_hint).
void expect_one_line_error(const std::string& args, const std::vector<std::string>& needles,
                           bool require_hint = false);
// The JSON file at `path` (a test failure, and null, when it cannot be read or parsed).
nlohmann::json read_json(const std::string& path);
// stories260K converted into an HF model directory, once per test process.
std::string converted_stories260k();
// stories260K fine-tuned on opposite for 40 steps (SGD), once per test process.
std::string opposite_finetune();
// A fresh temp directory (named from `prefix`) for a test's outputs, with the base and fine-tune above.
struct OppositeFixture {
  std::string dir, base, finetuned;
};
OppositeFixture opposite_fixture(const std::string& prefix);

}  // namespace sg::test
