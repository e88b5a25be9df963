// HTML text for the report: escaping and number formatting. Pure string functions, no I/O.
// Everything returned is valid both as HTML text and as XML text (inline SVG).
#pragma once

#include <cstdint>
#include <string>

namespace sg::report {

// & < > " ' become character references, so any string (a task name from a user's directory) is
// safe as element text or as a double-quoted attribute value. Control characters other than tab,
// newline and carriage return (invalid in XML) become U+FFFD.
std::string escape(const std::string& text);

// Fixed decimals: format_number(0.94, 3) == "0.940"; NaN and infinities read "—".
std::string format_number(double value, int decimals);
// A share of parameters as a percentage with up to 3 significant digits:
// 0.01 -> "1%", 0.001 -> "0.1%", 0.0005 -> "0.05%", 0.125 -> "12.5%", 1 -> "100%".
std::string format_percent(double fraction);
// An integer count, no separators (copyable): 2600 -> "2600".
std::string format_count(int64_t count);
// Seconds: 312.4 -> "312.4 s (5 min 12 s)"; under a minute just "42.0 s".
std::string format_seconds(double seconds);

// The dash shown for a value that is missing or not a number.
extern const char* const kMissing;

}  // namespace sg::report
