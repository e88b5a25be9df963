#include "eval/metrics.h"

#include <cmath>
#include <limits>

#include "util/error.h"

namespace sg::eval {

double expected_calibration_error(const std::vector<double>& confidence, const std::vector<bool>& correct,
                                  int bins) {
  SG_CHECK(confidence.size() == correct.size(),
           "expected_calibration_error: " << confidence.size() << " confidences but " << correct.size()
                                          << " correctness values; hint: pass one of each per example");
  SG_CHECK(bins >= 1, "expected_calibration_error: bins must be >= 1, got " << bins);
  if (confidence.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::vector<double> confidence_sum(static_cast<size_t>(bins), 0.0);
  std::vector<double> correct_count(static_cast<size_t>(bins), 0.0);
  std::vector<double> count(static_cast<size_t>(bins), 0.0);
  for (size_t i = 0; i < confidence.size(); ++i) {
    const double c = confidence[i];
    SG_CHECK(c >= 0.0 && c <= 1.0, "expected_calibration_error: confidence " << c << " of example " << i
                                                                             << " is outside [0, 1]");
    int bin = static_cast<int>(std::floor(c * bins));
    if (bin >= bins) bin = bins - 1;  // confidence 1.0 belongs to the last bin
    confidence_sum[static_cast<size_t>(bin)] += c;
    correct_count[static_cast<size_t>(bin)] += correct[i] ? 1.0 : 0.0;
    count[static_cast<size_t>(bin)] += 1.0;
  }
  const double total = static_cast<double>(confidence.size());
  double ece = 0;
  for (size_t b = 0; b < count.size(); ++b) {
    if (count[b] == 0) continue;
    ece += count[b] / total * std::fabs(correct_count[b] / count[b] - confidence_sum[b] / count[b]);
  }
  return ece;
}

bool exact_match(const std::string& generated, const std::string& expected) { return generated == expected; }

}  // namespace sg::eval
