// Small helpers shared by the library-level tests: the message of an expected sg::Error, and the
// largest elementwise difference of two tensors.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <string>

#include "util/error.h"

namespace sg::test {

// What `f` throws as sg::Error, or "(no error)".
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const sg::Error& e) {
    return e.what();
  }
  return "(no error)";
}

// max |a - b|, computed in double.
inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

}  // namespace sg::test
