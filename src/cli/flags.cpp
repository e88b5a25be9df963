#include "cli/flags.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "util/error.h"

namespace sg::cli {

FlagSet::FlagSet(std::string verb, std::string usage, std::string description)
    : verb_(std::move(verb)), usage_(std::move(usage)), description_(std::move(description)) {}

void FlagSet::add_string(const std::string& name, std::string* target, const std::string& help,
                         bool required) {
  flags_.push_back({name, Kind::kString, target, help, target->empty() ? "" : *target, required});
}

void FlagSet::add_int(const std::string& name, int64_t* target, const std::string& help) {
  flags_.push_back({name, Kind::kInt, target, help, std::to_string(*target), false});
}

void FlagSet::add_double(const std::string& name, double* target, const std::string& help) {
  std::ostringstream text;
  text << *target;
  flags_.push_back({name, Kind::kDouble, target, help, text.str(), false});
}

void FlagSet::add_bool(const std::string& name, bool* target, const std::string& help) {
  flags_.push_back({name, Kind::kBool, target, help, "", false});
}

void FlagSet::add_positional(const std::string& name, std::string* target, const std::string& help,
                             bool required) {
  positionals_.push_back({name, target, help, required});
}

void FlagSet::add_common(int64_t* threads, std::string* json_path, bool* quiet) {
  add_int("threads", threads, "compute threads (0 = one per core)");
  add_string("json", json_path, "also write the results as JSON to this path");
  add_bool("quiet", quiet, "no progress or info lines on stderr");
}

FlagSet::Flag* FlagSet::find(const std::string& name) {
  for (auto& flag : flags_) {
    if (flag.name == name) return &flag;
  }
  return nullptr;
}

void FlagSet::assign(Flag& flag, const std::string& value) {
  const std::string where = "skillgraft " + verb_ + ": --" + flag.name;
  switch (flag.kind) {
    case Kind::kString:
      *static_cast<std::string*>(flag.target) = value;
      break;
    case Kind::kInt: {
      char* end = nullptr;
      errno = 0;
      long long parsed = std::strtoll(value.c_str(), &end, 10);
      SG_CHECK(!value.empty() && *end == '\0' && errno == 0,
               where << " expects an integer, got \"" << value << "\"");
      *static_cast<int64_t*>(flag.target) = parsed;
      break;
    }
    case Kind::kDouble: {
      char* end = nullptr;
      errno = 0;
      double parsed = std::strtod(value.c_str(), &end);
      SG_CHECK(!value.empty() && *end == '\0' && errno == 0,
               where << " expects a number, got \"" << value << "\"");
      *static_cast<double*>(flag.target) = parsed;
      break;
    }
    case Kind::kBool:
      *static_cast<bool*>(flag.target) = true;
      break;
  }
  flag.given = true;
}

bool FlagSet::parse(const std::vector<std::string>& args) {
  size_t next_positional = 0;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(help().c_str(), stdout);
      return false;
    }
    if (arg.size() > 2 && arg.compare(0, 2, "--") == 0) {
      std::string name = arg.substr(2), value;
      bool has_inline_value = false;
      size_t eq = name.find('=');
      if (eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        has_inline_value = true;
      }
      Flag* flag = find(name);
      SG_CHECK(flag != nullptr, "skillgraft " << verb_ << ": unknown flag --" << name
                                              << "; hint: see skillgraft " << verb_ << " --help");
      if (flag->kind == Kind::kBool) {
        SG_CHECK(!has_inline_value, "skillgraft " << verb_ << ": --" << name << " takes no value");
        assign(*flag, "");
        continue;
      }
      if (!has_inline_value) {
        SG_CHECK(i + 1 < args.size(), "skillgraft " << verb_ << ": --" << name << " needs a value; hint: see skillgraft "
                                                    << verb_ << " --help");
        value = args[++i];
      }
      assign(*flag, value);
      continue;
    }
    SG_CHECK(next_positional < positionals_.size(),
             "skillgraft " << verb_ << ": unexpected argument \"" << arg << "\"; hint: see skillgraft "
                           << verb_ << " --help");
    *positionals_[next_positional++].target = arg;
  }
  for (size_t i = next_positional; i < positionals_.size(); ++i) {
    SG_CHECK(!positionals_[i].required, "skillgraft " << verb_ << ": missing " << positionals_[i].name
                                                      << "; usage: " << usage_);
  }
  for (const auto& flag : flags_) {
    SG_CHECK(!flag.required || flag.given, "skillgraft " << verb_ << ": missing --" << flag.name
                                                         << "; usage: " << usage_);
  }
  return true;
}

bool FlagSet::given(const std::string& name) const {
  for (const auto& flag : flags_) {
    if (flag.name == name) return flag.given;
  }
  return false;
}

std::string FlagSet::help() const {
  std::ostringstream out;
  out << "usage: " << usage_ << "\n\n" << description_ << "\n";
  if (!positionals_.empty()) {
    out << "\narguments:\n";
    for (const auto& p : positionals_) out << "  " << p.name << "\n      " << p.help << "\n";
  }
  out << "\noptions:\n";
  for (const auto& f : flags_) {
    out << "  --" << f.name;
    if (f.kind == Kind::kString) out << " TEXT";
    if (f.kind == Kind::kInt) out << " N";
    if (f.kind == Kind::kDouble) out << " X";
    out << "\n      " << f.help;
    if (f.required) out << " (required)";
    else if (!f.default_text.empty()) out << " (default: " << f.default_text << ")";
    out << "\n";
  }
  out << "  --help\n      show this help\n";
  return out.str();
}

}  // namespace sg::cli
