// Building blocks of the report page shared by its sections: tolerant JSON access (a missing or
// mistyped value is std::nullopt, never an exception), tables, section wrappers, colours.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

namespace sg::report {

// Method colours (Okabe–Ito, colour-blind safe), the same in every chart.
extern const char* const kColourGraft;
extern const char* const kColourMovement;
extern const char* const kColourRandom;
extern const char* const kColourSaliency;
extern const char* const kColourFinetuned;
extern const char* const kColourBase;

// object[key] when object is an object holding a non-null key; else nullptr.
const nlohmann::json* member(const nlohmann::json& object, const std::string& key);
// A number at object[key] (booleans are not numbers); nullopt when missing, null or another type.
std::optional<double> number_at(const nlohmann::json& object, const std::string& key);
// A string at object[key], or `fallback`.
std::string string_at(const nlohmann::json& object, const std::string& key, const std::string& fallback = "");
// A number at array[i].
std::optional<double> number_in(const nlohmann::json& array, size_t i);
// An array of strings (non-strings become ""); empty when missing.
std::vector<std::string> strings_at(const nlohmann::json& object, const std::string& key);
// A square numeric matrix; cells that are not numbers are nullopt. Empty when not an array.
std::vector<std::vector<std::optional<double>>> matrix_of(const nlohmann::json* value);

// A formatted number or "—".
std::string number_text(std::optional<double> value, int decimals);
std::string percent_text(std::optional<double> fraction);

struct Cell {
  std::string html;   // already escaped
  std::string klass;  // CSS class, e.g. "num", "diag", "pass"
};
Cell text_cell(const std::string& text, const std::string& klass = "");
Cell number_cell(std::optional<double> value, int decimals, const std::string& klass = "num");

// A table: header cells are escaped text; the first cell of each row is a row header.
std::string render_table(const std::vector<std::string>& header, const std::vector<std::vector<Cell>>& rows,
                         const std::string& caption = "");

// <p class="not-run">not run — why</p>
std::string not_run(const std::string& why);
// A figure: the chart, then a caption, then the same numbers as a table in a <details>.
std::string figure(const std::string& svg, const std::string& caption_html, const std::string& table_html = "");

// The sections, in page order. Each returns a whole <section>.
std::string section_summary(const nlohmann::json& results);
std::string section_localization(const nlohmann::json& results);
std::string section_curves(const nlohmann::json& results);
std::string section_where(const nlohmann::json& results);
std::string section_overlap(const nlohmann::json& results);
std::string section_neurons(const nlohmann::json& results);
std::string section_removal(const nlohmann::json& results);
std::string section_optimizer(const nlohmann::json& results);
std::string section_merge(const nlohmann::json& results);
std::string section_matrix(const nlohmann::json& results);

std::string section(const std::string& id, const std::string& heading, const std::string& body);

}  // namespace sg::report
