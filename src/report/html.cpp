#include "report/html.h"

#include <cmath>
#include <cstdio>

namespace sg::report {

const char* const kMissing = "\xE2\x80\x94";  // em dash

std::string escape(const std::string& text) {
  std::string out;
  out.reserve(text.size() + 16);
  for (char c : text) {
    const unsigned char byte = static_cast<unsigned char>(c);
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default:
        if (byte < 0x20 && c != '\t' && c != '\n' && c != '\r') {
          out += "\xEF\xBF\xBD";
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::string format_number(double value, int decimals) {
  if (!std::isfinite(value)) return kMissing;
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.*f", decimals, value);
  std::string text = buffer;
  if (text.size() > 1 && text[0] == '-' && text.find_first_not_of("-0.") == std::string::npos) text.erase(0, 1);
  return text;
}

std::string format_percent(double fraction) {
  if (!std::isfinite(fraction)) return kMissing;
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.3g%%", fraction * 100.0);
  return buffer;
}

std::string format_count(int64_t count) { return std::to_string(count); }

std::string format_seconds(double seconds) {
  if (!std::isfinite(seconds)) return kMissing;
  char buffer[96];
  if (seconds < 60) {
    std::snprintf(buffer, sizeof(buffer), "%.1f s", seconds);
  } else {
    const long long whole = std::llround(seconds);
    std::snprintf(buffer, sizeof(buffer), "%.1f s (%lld min %lld s)", seconds, whole / 60, whole % 60);
  }
  return buffer;
}

}  // namespace sg::report
