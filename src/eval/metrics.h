// Evaluation metrics on plain values: expected calibration error and exact match. No model here
// (the evaluator in eval/evaluator.h produces the values these take).
#pragma once

#include <string>
#include <vector>

namespace sg::eval {

// Expected calibration error over `bins` equal-width bins of [0, 1]: bin b holds confidences in
// [b/bins, (b+1)/bins), the last bin also 1.0. ECE = sum over bins of
// (examples in bin / all examples) * |accuracy in bin - mean confidence in bin|.
// NaN for no examples. Throws sg::Error when the vectors differ in length, bins < 1, or a
// confidence is outside [0, 1] (NaN included).
double expected_calibration_error(const std::vector<double>& confidence, const std::vector<bool>& correct,
                                  int bins = 15);

// Byte-for-byte equality: no trimming, no case folding, no Unicode normalisation.
bool exact_match(const std::string& generated, const std::string& expected);

}  // namespace sg::eval
