// Errors: SG_CHECK throws sg::Error with one clear line; only main() and the HTTP layer catch.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace sg {

// The one exception type library code throws for bad input or a failed operation.
// what() is a single line: what was wrong, where, and a hint.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace sg

// SG_CHECK(cond, "what was wrong: " << value << "; hint: what to do")
// The message is a stream expression, built only when the check fails.
#define SG_CHECK(cond, message)                   \
  do {                                            \
    if (!(cond)) {                                \
      std::ostringstream sg_check_stream_;        \
      sg_check_stream_ << message;                \
      throw ::sg::Error(sg_check_stream_.str());  \
    }                                             \
  } while (0)

#define SG_FAIL(message)                      \
  do {                                        \
    std::ostringstream sg_fail_stream_;       \
    sg_fail_stream_ << message;               \
    throw ::sg::Error(sg_fail_stream_.str()); \
  } while (0)
