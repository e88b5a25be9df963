// Report sections on putting skills back together: the skill library the demo filled and the merge
// table (every method, from the full deltas and from the grafts, against the specialists), with
// the pairs' merge cost next to their grafts' overlap.
#include "report/html.h"
#include "report/page.h"

namespace sg::report {

std::string section_merge(const nlohmann::json& results) {
  std::string body =
      "<p class=\"lead\">Every specialist's graft kept in a skill library, then all skills merged into one model by "
      "each method, from the specialists' full deltas and from their grafts; normalized = mean over tasks of "
      "merged score / specialist score. The mergekit methods use no data; stitch learns which part of each delta to "
      "keep from the tasks' train splits (masks learned jointly on the merged model).</p>";
  const nlohmann::json* library = member(results, "library");
  if (library != nullptr) {
    body += "<dl class=\"facts\"><dt>library</dt><dd><code>" + escape(string_at(*library, "dir", "?")) + "</code>: " +
            number_text(number_at(*library, "entries"), 0) + " entries, " +
            number_text(number_at(*library, "verified"), 0) + " verified</dd></dl>";
  }
  const nlohmann::json* merge = member(results, "merge");
  if (merge == nullptr || !merge->is_array() || merge->empty()) {
    return section("merge", "Library and merging", body + not_run("no merge table (\"merge\") in results.json"));
  }
  std::vector<std::string> tasks;
  const nlohmann::json* specialists = member(results, "merge_specialists");
  if (specialists != nullptr && specialists->is_object()) {
    for (const auto& item : specialists->items()) tasks.push_back(item.key());
  }
  std::vector<std::string> header = {"method", "input"};
  header.insert(header.end(), tasks.begin(), tasks.end());
  header.push_back("normalized");
  std::vector<std::vector<Cell>> rows;
  if (specialists != nullptr) {
    std::vector<Cell> row = {text_cell("specialists"), text_cell("")};
    for (const std::string& task : tasks) row.push_back(number_cell(number_at(*specialists, task), 3));
    row.push_back(number_cell(1.0, 3));
    rows.push_back(row);
  }
  for (const nlohmann::json& item : *merge) {
    const nlohmann::json* scores = member(item, "scores");
    std::vector<Cell> row = {text_cell(string_at(item, "method", "?")), text_cell(string_at(item, "input", "?"))};
    for (const std::string& task : tasks) row.push_back(number_cell(scores != nullptr ? number_at(*scores, task) : std::nullopt, 3));
    row.push_back(number_cell(number_at(item, "normalized"), 3));
    rows.push_back(row);
  }
  const std::optional<double> max_examples = number_at(results, "merge_max_examples");
  body += render_table(header, rows,
                       "Test scores of one model holding every skill" +
                           (max_examples && *max_examples > 0 ? " (first " + number_text(max_examples, 0) + " test examples per task)"
                                                              : std::string()) +
                           ".");
  const nlohmann::json* pairs = member(results, "merge_pairs");
  if (pairs != nullptr && pairs->is_array() && !pairs->empty()) {
    std::vector<std::vector<Cell>> pair_rows;
    for (const nlohmann::json& item : *pairs) {
      const std::vector<std::string> names = strings_at(item, "tasks");
      const std::string label = names.size() == 2 ? names[0] + " + " + names[1] : "?";
      pair_rows.push_back({text_cell(label), number_cell(number_at(item, "jaccard"), 3),
                           number_cell(number_at(item, "normalized"), 3), number_cell(number_at(item, "cost"), 3)});
    }
    body += render_table({"pair", "graft Jaccard", "normalized", "cost"}, pair_rows,
                         "Each pair merged alone (task_arithmetic of the full deltas); correlation of Jaccard and cost: " +
                             number_text(number_at(results, "merge_pairs_correlation"), 3) + ".");
  }
  return section("merge", "Library and merging", body);
}

}  // namespace sg::report
