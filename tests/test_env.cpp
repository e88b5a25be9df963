#include "test_env.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

namespace sg::test {

namespace {

struct TempDirs {
  std::vector<std::string> paths;
  ~TempDirs() {
    if (std::getenv("SG_KEEP_TEMP") != nullptr) return;
    std::error_code ec;
    for (const auto& p : paths) std::filesystem::remove_all(p, ec);
  }
};
TempDirs& temp_dirs() {
  static TempDirs dirs;
  return dirs;
}

}  // namespace

std::string source_dir() { return SG_SOURCE_DIR; }
std::string binary() { return SG_BINARY; }
std::string python() { return SG_PYTHON; }
std::string refdata_dir() { return SG_REFDATA_DIR; }

std::string temp_dir(const std::string& prefix) {
  std::random_device rd;
  std::filesystem::path base = std::filesystem::temp_directory_path();
  for (int attempt = 0; attempt < 100; ++attempt) {
    std::filesystem::path p = base / (prefix + "-" + std::to_string(rd()));
    std::error_code ec;
    if (std::filesystem::create_directory(p, ec)) {
      temp_dirs().paths.push_back(p.string());
      return p.string();
    }
  }
  std::abort();
}

CommandResult run_command(const std::string& command_line) {
  std::string full = command_line + " 2>&1";
  FILE* pipe = ::popen(full.c_str(), "r");
  if (pipe == nullptr) return {-1, "popen failed"};
  std::string output;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
  int status = ::pclose(pipe);
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return {code, output};
}

std::string shell_quote(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}

}  // namespace sg::test

namespace sg::test {

std::string sg_command(const std::string& args) { return shell_quote(binary()) + " " + args; }

std::string data_model(const std::string& name) { return source_dir() + "/data/models/" + name; }

void expect_one_line_error(const std::string& args, const std::vector<std::string>& needles, bool require_hint) {
  CommandResult result = run_command(sg_command(args));
  EXPECT_NE(result.exit_code, 0) << args;
  std::string out = result.output;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 0) << "expected one line, got:\n" << result.output;
  if (require_hint) EXPECT_NE(out.find("hint"), std::string::npos) << "no hint in: " << out;
  for (const std::string& needle : needles) {
    EXPECT_NE(out.find(needle), std::string::npos) << "missing \"" << needle << "\" in: " << out;
  }
}

std::string converted_stories260k() {
  static std::string dir;
  if (dir.empty()) {
    dir = temp_dir("sg-stories") + "/stories";
    CommandResult r = run_command(sg_command("convert --quiet --from llama2c " + shell_quote(data_model("stories260K.bin")) +
                                             " --tokenizer " + shell_quote(data_model("tok512.bin")) +
                                             " --out " + shell_quote(dir)));
    EXPECT_EQ(r.exit_code, 0) << r.output;
  }
  return dir;
}

std::string opposite_finetune() {
  static std::string dir;
  if (dir.empty()) {
    dir = temp_dir("sg-opposite") + "/ft";
    CommandResult r = run_command(sg_command("finetune --quiet --threads 1 --base " + shell_quote(converted_stories260k()) +
                                             " --task opposite --steps 40 --eval-every 0 --out " + shell_quote(dir)));
    EXPECT_EQ(r.exit_code, 0) << r.output;
  }
  return dir;
}

OppositeFixture opposite_fixture(const std::string& prefix) {
  return OppositeFixture{temp_dir(prefix), converted_stories260k(), opposite_finetune()};
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in.good()) {
    ADD_FAILURE() << "cannot read " << path;
    return nullptr;
  }
  try {
    return nlohmann::json::parse(in);
  } catch (const std::exception& error) {
    ADD_FAILURE() << path << " is not JSON: " << error.what();
    return nullptr;
  }
}

}  // namespace sg::test
