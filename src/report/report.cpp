#include "report/report.h"

#include <cmath>

#include "report/charts.h"
#include "report/html.h"
#include "report/page.h"
#include "util/error.h"

namespace sg::report {

const char* const kColourGraft = "#0072B2";
const char* const kColourMovement = "#E69F00";
const char* const kColourRandom = "#8C8C8C";
const char* const kColourSaliency = "#009E73";
const char* const kColourFinetuned = "#1A1A1A";
const char* const kColourBase = "#CC79A7";

namespace {

// Inline style: system fonts only (nothing to fetch), tabular numbers, print-friendly.
const char* const kStyle = R"(
:root{--ink:#1a1a1a;--muted:#5f6368;--rule:#dadce0;--panel:#f8f9fa;--accent:#0072B2;--warn:#b3261e;--ok:#1e7d32}
*{box-sizing:border-box}
body{margin:0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--ink);background:#ffffff;line-height:1.5}
header.page{background:#0b2545;color:#ffffff;padding:28px 32px 20px}
header.page h1{margin:0 0 6px;font-size:26px;font-weight:600}
header.page p{margin:0;color:#c9d6e8}
nav.toc{padding:10px 32px;border-bottom:1px solid var(--rule);background:var(--panel);font-size:14px}
nav.toc a{color:var(--accent);text-decoration:none;margin-right:16px;white-space:nowrap}
main{max-width:1180px;margin:0 auto;padding:8px 32px 48px}
section{margin-top:36px}
h2{font-size:20px;font-weight:600;border-bottom:2px solid var(--rule);padding-bottom:6px}
h3{font-size:16px;font-weight:600;margin:24px 0 8px}
p.lead{color:var(--muted);max-width:70em}
p.not-run{color:var(--muted);font-style:italic;background:var(--panel);border-left:4px solid var(--rule);padding:8px 12px}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:4px 18px;margin:0 0 16px}
dl.facts dt{color:var(--muted)}
dl.facts dd{margin:0;font-variant-numeric:tabular-nums}
table{border-collapse:collapse;font-size:13px;margin:8px 0 16px;font-variant-numeric:tabular-nums}
caption{caption-side:top;text-align:left;color:var(--muted);padding-bottom:4px}
th,td{padding:4px 10px;border-bottom:1px solid var(--rule);text-align:left;vertical-align:top}
thead th{background:var(--panel);border-bottom:2px solid var(--rule);font-weight:600}
tbody tr:nth-child(even){background:#fcfcfd}
td.num,th.num{text-align:right}
td.diag{background:#e3eefa;font-weight:600}
td.pass{color:var(--ok);font-weight:600}
td.fail{color:var(--warn);font-weight:600}
.table-wrap{overflow-x:auto}
figure{margin:12px 0 24px}
figcaption{color:var(--muted);font-size:13px;max-width:70em}
details{margin:6px 0}
summary{cursor:pointer;color:var(--accent);font-size:13px}
svg.chart{max-width:100%;height:auto;display:block}
svg.chart text{font-family:inherit;font-size:11px;fill:#333333}
svg.chart text.axis-label{font-size:12px;fill:#1a1a1a}
svg.chart text.legend{font-size:12px}
svg.chart text.cell{font-size:10px}
svg.chart text.marker-label{font-size:11px;fill:#1a1a1a}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.badge.ok{background:#e6f4ea;color:var(--ok)}
.badge.bad{background:#fce8e6;color:var(--warn)}
footer{color:var(--muted);font-size:12px;border-top:1px solid var(--rule);margin-top:48px;padding-top:12px}
@media print{nav.toc{display:none}header.page{background:#ffffff;color:#000000}header.page p{color:#333333}}
)";

struct SectionLink {
  const char* id;
  const char* label;
};
const SectionLink kSections[] = {{"summary", "Summary"},
                                 {"localization", "Localization"},
                                 {"curves", "Recovery curves"},
                                 {"where", "Where skills live"},
                                 {"overlap", "Overlap"},
                                 {"neurons", "Neurons"},
                                 {"removal", "Removal"},
                                 {"optimizer", "Optimizer contrast"},
                                 {"merge", "Library and merging"},
                                 {"matrix", "Specialist matrix"}};

}  // namespace

const nlohmann::json* member(const nlohmann::json& object, const std::string& key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<double> number_at(const nlohmann::json& object, const std::string& key) {
  const nlohmann::json* value = member(object, key);
  if (value == nullptr || !value->is_number()) return std::nullopt;
  return value->get<double>();
}

std::string string_at(const nlohmann::json& object, const std::string& key, const std::string& fallback) {
  const nlohmann::json* value = member(object, key);
  return value != nullptr && value->is_string() ? value->get<std::string>() : fallback;
}

std::optional<double> number_in(const nlohmann::json& array, size_t i) {
  if (!array.is_array() || i >= array.size() || !array[i].is_number()) return std::nullopt;
  return array[i].get<double>();
}

std::vector<std::string> strings_at(const nlohmann::json& object, const std::string& key) {
  std::vector<std::string> out;
  const nlohmann::json* value = member(object, key);
  if (value == nullptr || !value->is_array()) return out;
  for (const nlohmann::json& item : *value) out.push_back(item.is_string() ? item.get<std::string>() : "");
  return out;
}

std::vector<std::vector<std::optional<double>>> matrix_of(const nlohmann::json* value) {
  std::vector<std::vector<std::optional<double>>> out;
  if (value == nullptr || !value->is_array()) return out;
  for (const nlohmann::json& row : *value) {
    std::vector<std::optional<double>> cells;
    if (row.is_array()) {
      for (size_t j = 0; j < row.size(); ++j) cells.push_back(number_in(row, j));
    }
    out.push_back(cells);
  }
  return out;
}

std::string number_text(std::optional<double> value, int decimals) {
  return value ? format_number(*value, decimals) : std::string(kMissing);
}

std::string percent_text(std::optional<double> fraction) {
  return fraction ? format_percent(*fraction) : std::string(kMissing);
}

Cell text_cell(const std::string& text, const std::string& klass) { return {escape(text), klass}; }

Cell number_cell(std::optional<double> value, int decimals, const std::string& klass) {
  return {number_text(value, decimals), klass};
}

std::string render_table(const std::vector<std::string>& header, const std::vector<std::vector<Cell>>& rows,
                         const std::string& caption) {
  std::string html = "<div class=\"table-wrap\"><table>";
  if (!caption.empty()) html += "<caption>" + escape(caption) + "</caption>";
  html += "<thead><tr>";
  for (size_t i = 0; i < header.size(); ++i) {
    // A column header aligns like its column: right over numbers.
    const bool numeric = i > 0 && (rows.empty() || (i < rows[0].size() && rows[0][i].klass.rfind("num", 0) == 0));
    html += std::string("<th scope=\"col\"") + (numeric ? " class=\"num\"" : "") + ">" + escape(header[i]) + "</th>";
  }
  html += "</tr></thead><tbody>";
  for (const std::vector<Cell>& row : rows) {
    html += "<tr>";
    for (size_t i = 0; i < row.size(); ++i) {
      const char* tag = i == 0 ? "th" : "td";
      html += std::string("<") + tag + (i == 0 ? " scope=\"row\"" : "");
      if (!row[i].klass.empty()) html += " class=\"" + row[i].klass + "\"";
      html += ">" + row[i].html + "</" + tag + ">";
    }
    html += "</tr>";
  }
  return html + "</tbody></table></div>";
}

std::string not_run(const std::string& why) { return "<p class=\"not-run\">not run \xE2\x80\x94 " + escape(why) + "</p>"; }

std::string figure(const std::string& svg, const std::string& caption_html, const std::string& table_html) {
  std::string html = "<figure>" + svg;
  if (!caption_html.empty()) html += "<figcaption>" + caption_html + "</figcaption>";
  if (!table_html.empty()) html += "<details><summary>the numbers</summary>" + table_html + "</details>";
  return html + "</figure>";
}

std::string section(const std::string& id, const std::string& heading, const std::string& body) {
  return "<section id=\"" + id + "\"><h2>" + escape(heading) + "</h2>" + body + "</section>\n";
}

std::string section_summary(const nlohmann::json& results) {
  const nlohmann::json& tasks = results["tasks"];
  std::string body = "<dl class=\"facts\">";
  auto fact = [&](const std::string& name, const std::string& value_html) {
    body += "<dt>" + escape(name) + "</dt><dd>" + value_html + "</dd>";
  };
  const nlohmann::json* base = member(results, "base");
  fact("base model", escape(base != nullptr ? string_at(*base, "name", kMissing) : kMissing));
  if (base != nullptr && member(*base, "dir") != nullptr) fact("base directory", escape(string_at(*base, "dir")));
  const nlohmann::json* quick = member(results, "quick");
  fact("run", quick != nullptr && quick->is_boolean() ? (quick->get<bool>() ? "quick demo" : "full demo") : kMissing);
  const std::optional<double> seed = number_at(results, "seed");
  fact("seed", seed ? format_count(static_cast<int64_t>(*seed)) : kMissing);
  const std::optional<double> seconds = number_at(results, "seconds");
  fact("demo time", seconds ? format_seconds(*seconds) : kMissing);
  size_t passed = 0;
  for (const nlohmann::json& task : tasks) {
    const nlohmann::json* pass = member(task, "pass");
    if (pass != nullptr && pass->is_boolean() && pass->get<bool>()) ++passed;
  }
  const nlohmann::json* all_pass = member(results, "all_pass");
  const bool all = all_pass != nullptr && all_pass->is_boolean() ? all_pass->get<bool>() : passed == tasks.size();
  fact("specialists", std::to_string(passed) + " of " + std::to_string(tasks.size()) + " reach their target " +
                          (all ? "<span class=\"badge ok\">all pass</span>" : "<span class=\"badge bad\">some fail</span>"));
  body += "</dl>";
  if (tasks.empty()) return section("summary", "Summary", body + not_run("results.json lists no tasks"));

  std::vector<std::vector<Cell>> rows;
  BarChart chart;
  chart.title = "Test score per task: base, fine-tuned specialist, graft";
  chart.y_label = "test score";
  chart.series = {{"base", kColourBase, {}}, {"fine-tuned", kColourFinetuned, {}}, {"graft", kColourGraft, {}}};
  bool any_graft = false;
  for (const nlohmann::json& task : tasks) {
    const std::string name = string_at(task, "name", "?");
    const nlohmann::json* pass = member(task, "pass");
    Cell verdict = text_cell(kMissing);
    if (pass != nullptr && pass->is_boolean()) verdict = pass->get<bool>() ? text_cell("pass", "pass") : text_cell("FAIL", "fail");
    const std::optional<double> steps = number_at(task, "steps");
    rows.push_back({text_cell(name), text_cell(string_at(task, "kind", kMissing)),
                    text_cell(string_at(task, "metric", kMissing)), number_cell(number_at(task, "base"), 3),
                    number_cell(number_at(task, "finetuned"), 3), number_cell(number_at(task, "gain"), 3),
                    number_cell(number_at(task, "target_score"), 3),
                    {steps ? format_count(static_cast<int64_t>(*steps)) : kMissing, "num"}, verdict});
    chart.categories.push_back(name);
    chart.series[0].values.push_back(number_at(task, "base"));
    chart.series[1].values.push_back(number_at(task, "finetuned"));
    chart.series[2].values.push_back(number_at(task, "graft"));
    any_graft = any_graft || number_at(task, "graft").has_value();
  }
  if (!any_graft) chart.series.pop_back();
  body += render_table({"task", "kind", "metric", "base", "fine-tuned", "gain", "target", "steps", "specialist"}, rows);
  body += figure(render_bar_chart(chart),
                 "Test score of the base model, the fine-tuned specialist" +
                     std::string(any_graft ? " and the graft (base + the localized parameters) at the graft budget" : "") +
                     ", per task. Hover a bar for its value.");
  return section("summary", "Summary", body);
}

std::string section_localization(const nlohmann::json& results) {
  const nlohmann::json& tasks = results["tasks"];
  std::vector<std::vector<Cell>> rows;
  bool any = false;
  for (const nlohmann::json& task : tasks) {
    if (member(task, "graft") == nullptr) continue;
    any = true;
    rows.push_back({text_cell(string_at(task, "name", "?")), text_cell(string_at(task, "metric", kMissing)),
                    {percent_text(number_at(task, "graft_fraction")), "num"}, number_cell(number_at(task, "base"), 3),
                    number_cell(number_at(task, "finetuned"), 3), number_cell(number_at(task, "graft"), 3),
                    number_cell(number_at(task, "movement"), 3), number_cell(number_at(task, "random"), 3),
                    number_cell(number_at(task, "saliency"), 3), number_cell(number_at(task, "recovery"), 2),
                    number_cell(number_at(task, "loss_recovery"), 2), number_cell(number_at(task, "ece_finetuned"), 3),
                    number_cell(number_at(task, "ece_graft"), 3), {percent_text(number_at(task, "budget_90")), "num"}});
  }
  std::string body =
      "<p class=\"lead\">Each specialist's skill is localized: a mask over the parameters picks the few whose fine-tuned "
      "values, grafted onto the base, recover the fine-tuned score. Movement (largest |&#916;&#952;|), saliency and "
      "random pick the same number of parameters. Recovery = (graft &#8722; base) / (fine-tuned &#8722; base); loss "
      "recovery is the same on the answer tokens' loss. ECE: expected calibration error. 90% budget: the smallest swept "
      "share whose graft recovers 90% of the gain.</p>";
  if (!any) return section("localization", "Localization", body + not_run("the demo localized no skill (no \"graft\" score in any task)"));
  body += render_table({"task", "metric", "budget", "base", "fine-tuned", "graft", "movement", "random", "saliency",
                        "recovery", "loss recovery", "ECE fine-tuned", "ECE graft", "90% budget"},
                       rows, "Scores on each task's test split at the graft budget (share of parameters).");
  return section("localization", "Localization", body);
}

std::string render_report(const nlohmann::json& results, const std::string& title) {
  SG_CHECK(results.is_object(), "results: expected a JSON object, got " << results.type_name()
                                                                       << "; hint: pass the results.json that `skillgraft demo` writes");
  SG_CHECK(results.contains("tasks") && results["tasks"].is_array(),
           "results: no \"tasks\" list; hint: pass the results.json that `skillgraft demo --out DIR` writes");
  const std::string page_title = title.empty() ? "skillgraft report" : title;
  const nlohmann::json* base = member(results, "base");
  std::string subtitle = "Skill localization on " + (base != nullptr ? string_at(*base, "name", "the base model") : "the base model");
  subtitle += " \xC2\xB7 " + std::to_string(results["tasks"].size()) + " tasks";
  const nlohmann::json* quick = member(results, "quick");
  if (quick != nullptr && quick->is_boolean()) subtitle += quick->get<bool>() ? " \xC2\xB7 quick demo" : " \xC2\xB7 full demo";

  std::string html = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>"
                     "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>"
                     "<meta name=\"generator\" content=\"skillgraft report\"/><title>" +
                     escape(page_title) + "</title><style>" + kStyle + "</style></head>\n<body>";
  html += "<header class=\"page\"><h1>" + escape(page_title) + "</h1><p>" + escape(subtitle) + "</p></header>\n";
  html += "<nav class=\"toc\" aria-label=\"sections\">";
  for (const SectionLink& link : kSections) html += std::string("<a href=\"#") + link.id + "\">" + link.label + "</a>";
  html += "</nav>\n<main>";
  html += section_summary(results);
  html += section_localization(results);
  html += section_curves(results);
  html += section_where(results);
  html += section_overlap(results);
  html += section_neurons(results);
  html += section_removal(results);
  html += section_optimizer(results);
  html += section_merge(results);
  html += section_matrix(results);
  html += "<footer>Generated by <code>skillgraft report</code> from the demo's results.json. Self-contained: no scripts, "
          "fonts or images are fetched; every chart is inline SVG and every number is also in a table.</footer>";
  html += "</main></body></html>\n";
  return html;
}

}  // namespace sg::report
