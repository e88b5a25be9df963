// A regular expression from the command line (ECMAScript), with the one-line error a bad one gets.
#pragma once

#include <regex>
#include <string>

#include "util/error.h"

namespace sg::util {

// Throws sg::Error naming the flag ("--params 'x(' is not a valid regular expression (...)").
inline std::regex compile_flag_regex(const std::string& flag, const std::string& pattern) {
  try {
    return std::regex(pattern);
  } catch (const std::regex_error& error) {
    SG_FAIL(flag << " '" << pattern << "' is not a valid regular expression (" << error.what() << ")");
  }
}

}  // namespace sg::util
