// Metrics on hand-computed cases: expected calibration error and exact match.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "eval/metrics.h"
#include "util/error.h"

namespace {

using sg::eval::exact_match;
using sg::eval::expected_calibration_error;

TEST(EvalEce, PerfectlyConfidentAndRightIsZero) {
  EXPECT_EQ(expected_calibration_error({1.0, 1.0, 1.0}, {true, true, true}), 0.0);
}

TEST(EvalEce, PerfectlyConfidentAndWrongIsOne) {
  EXPECT_DOUBLE_EQ(expected_calibration_error({1.0, 1.0}, {false, false}), 1.0);
}

TEST(EvalEce, TwoBinWorkedExample) {
  // bin [0, .5): conf .2, .4 (mean .3), accuracy 1/2 -> 2/4 * |.5 - .3| = .1
  // bin [.5, 1]: conf .6, .9 (mean .75), accuracy 2/2 -> 2/4 * |1 - .75| = .125
  EXPECT_NEAR(expected_calibration_error({0.2, 0.4, 0.6, 0.9}, {false, true, true, true}, 2), 0.225, 1e-12);
}

TEST(EvalEce, BinLowerEdgeBelongsToTheUpperBin) {
  // 0.5 with 2 bins opens bin 1, shared with 0.6: mean .55, accuracy .5 -> .05
  // (were 0.5 in bin 0 the answer would be .5 * .5 + .5 * .6 = .55).
  EXPECT_NEAR(expected_calibration_error({0.5, 0.6}, {true, false}, 2), 0.05, 1e-12);
}

TEST(EvalEce, ConfidenceOneGoesInTheLastBin) {
  // 15 bins: .95 and 1.0 share bin 14 = [14/15, 1]: mean .975, accuracy .5 -> .475
  // (a 16th bin for 1.0 would give .5 * .05 + .5 * 1 = .525).
  EXPECT_NEAR(expected_calibration_error({0.95, 1.0}, {true, false}), 0.475, 1e-12);
  // Calibrated within a bin: conf .5 twice, one right.
  EXPECT_NEAR(expected_calibration_error({0.5, 0.5}, {true, false}), 0.0, 1e-12);
}

TEST(EvalEce, EmptyIsNanAndBadInputsThrow) {
  EXPECT_TRUE(std::isnan(expected_calibration_error({}, {})));
  EXPECT_THROW(expected_calibration_error({0.5}, {true, false}), sg::Error);
  EXPECT_THROW(expected_calibration_error({1.5}, {true}), sg::Error);
  EXPECT_THROW(expected_calibration_error({-0.1}, {true}), sg::Error);
  EXPECT_THROW(expected_calibration_error({std::numeric_limits<double>::quiet_NaN()}, {true}), sg::Error);
  EXPECT_THROW(expected_calibration_error({0.5}, {true}, 0), sg::Error);
}

TEST(EvalExactMatch, IsByteExact) {
  EXPECT_TRUE(exact_match(" small.", " small."));
  EXPECT_TRUE(exact_match("", ""));
  EXPECT_FALSE(exact_match("small.", " small."));
  EXPECT_FALSE(exact_match(" Small.", " small."));
  EXPECT_FALSE(exact_match(" small.\n", " small."));
  EXPECT_FALSE(exact_match(" small", " small."));
}

}  // namespace
