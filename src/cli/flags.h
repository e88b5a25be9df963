// Command-line flags: each verb declares its flags once, with default and help; --help prints
// them. Parse errors throw sg::Error naming the flag, with a hint.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sg::cli {

class FlagSet {
 public:
  // usage: e.g. "skillgraft generate --model DIR --prompt TEXT [options]"
  FlagSet(std::string verb, std::string usage, std::string description);

  void add_string(const std::string& name, std::string* target, const std::string& help,
                  bool required = false);
  void add_int(const std::string& name, int64_t* target, const std::string& help);
  void add_double(const std::string& name, double* target, const std::string& help);
  // A switch: present means true.
  void add_bool(const std::string& name, bool* target, const std::string& help);
  // A positional argument, in declaration order.
  void add_positional(const std::string& name, std::string* target, const std::string& help,
                      bool required = true);
  // --threads, --json, --quiet: every verb has them.
  void add_common(int64_t* threads, std::string* json_path, bool* quiet);

  // Parses args (after the verb). Returns false when --help was asked for (help is printed to
  // stdout); throws sg::Error for an unknown flag, a missing value, a bad number, a missing
  // required flag.
  bool parse(const std::vector<std::string>& args);
  std::string help() const;
  // Whether a flag was given on the command line (not just defaulted).
  bool given(const std::string& name) const;

 private:
  enum class Kind { kString, kInt, kDouble, kBool };
  struct Flag {
    std::string name;
    Kind kind;
    void* target;
    std::string help;
    std::string default_text;
    bool required;
    bool given = false;
  };
  struct Positional {
    std::string name;
    std::string* target;
    std::string help;
    bool required;
  };
  Flag* find(const std::string& name);
  void assign(Flag& flag, const std::string& value);

  std::string verb_, usage_, description_;
  std::vector<Flag> flags_;
  std::vector<Positional> positionals_;
};

}  // namespace sg::cli
