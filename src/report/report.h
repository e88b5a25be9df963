// The demo report: one self-contained HTML page (inline CSS and SVG, no scripts, no external
// references) from the results.json that `skillgraft demo` writes. Knows JSON, not tensors.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace sg::report {

// Renders the whole page. Every section whose data is missing from `results` (the quick demo has
// no sweep, an older demo has no overlap…) says "not run" instead of failing; values of the wrong
// type read "—". Throws sg::Error only when `results` is not an object with a "tasks" list.
// An empty title means "skillgraft report". Deterministic: the same input gives the same bytes.
std::string render_report(const nlohmann::json& results, const std::string& title);

}  // namespace sg::report
