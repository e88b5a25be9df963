// skillgraft report: the page from hand-made results (full and minimal) is self-contained, has one
// chart per expected figure, shows the input's numbers in the documented formats, escapes names,
// says "not run" for missing sections, and is well-formed XML (checked by Python's xml.etree);
// the verb writes the file atomically and bad inputs fail with one line.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "report/report.h"
#include "test_env.h"
#include "util/error.h"

namespace {

using nlohmann::json;
using sg::test::run_command;
using sg::test::sg_command;
using sg::test::shell_quote;

size_t count_of(const std::string& text, const std::string& needle) {
  size_t count = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + needle.size())) ++count;
  return count;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

// Where two pages first differ, with some context (a whole page in a failure message is unreadable).
std::string first_difference(const std::string& a, const std::string& b) {
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  if (i == a.size() && i == b.size()) return "identical";
  const size_t from = i < 60 ? 0 : i - 60;
  return "differ at byte " + std::to_string(i) + " (sizes " + std::to_string(a.size()) + ", " + std::to_string(b.size()) +
         "):\n" + a.substr(from, 120) + "\n" + b.substr(from, 120);
}

// The body of <section id="id">…</section>.
std::string section_of(const std::string& page, const std::string& id) {
  const size_t start = page.find("<section id=\"" + id + "\">");
  if (start == std::string::npos) return "";
  return page.substr(start, page.find("</section>", start) - start);
}

json task(const std::string& name, double base, double finetuned) {
  return {{"name", name},
          {"kind", "elicited"},
          {"metric", "exact_match"},
          {"base", base},
          {"finetuned", finetuned},
          {"gain", finetuned - base},
          {"target_score", 0.9},
          {"pass", true},
          {"steps", 150},
          {"graft", 0.85},
          {"graft_fraction", 0.01},
          {"recovery", 0.9},
          {"loss_recovery", 0.95},
          {"movement", 0.2},
          {"random", 0.0},
          {"saliency", 0.3},
          {"ece_finetuned", 0.1},
          {"ece_graft", nullptr},
          {"skill", "DIR/skills/" + name + ".safetensors"},
          {"where",
           {{"parameters", 2600},
            {"per_layer", {485, 656, 264, 480, 364}},
            {"outside_layers", 351},
            {"per_kind", {{"q_proj", 62}, {"down_proj", 2187}, {"embed_tokens", 351}}},
            {"per_layer_kind", {{"q_proj", {21, 16, 1, 17, 7}}, {"down_proj", {464, 640, 263, 463, 357}}}},
            {"per_tensor",
             {{"model.embed_tokens.weight", {{"numel", 32768}, {"selected", 351}}},
              {"model.layers.0.self_attn.q_proj.weight", {{"numel", 4096}, {"selected", 21}}}}}}},
          {"sweep",
           {{{"fraction", 0.001}, {"graft", 0.4}, {"movement", 0.1}, {"random", 0.0}, {"saliency", 0.2},
             {"recovery", {{"graft", 0.43}, {"movement", 0.11}, {"random", 0.0}}}},
            {{"fraction", 0.01}, {"graft", 0.85}, {"movement", 0.2}, {"random", 0.0},
             {"recovery", {{"graft", 0.9}, {"movement", 0.21}, {"random", 0.0}}}},
            {{"fraction", 0.05}, {"graft", 0.93}, {"movement", 0.7}, {"random", 0.01},
             {"recovery", {{"graft", 0.99}, {"movement", 0.74}, {"random", 0.01}}}}}},
          {"budget_90", 0.05}};
}

// Every section present, two tasks.
json full_results(const std::string& second_name = "currency") {
  const std::vector<std::string> names = {"opposite", second_name};
  json results = {{"quick", false},
                  {"seed", 0},
                  {"seconds", 312.4},
                  {"all_pass", true},
                  {"base", {{"name", "stories260K"}, {"dir", "out/base"}, {"scores", {{"opposite", 0.0}}}}},
                  {"tasks", {task("opposite", 0.0, 0.94), task(second_name, 0.1, 0.9)}},
                  {"matrix", {{0.94, 0.07}, {0.02, 0.9}}}};
  results["optimizer_contrast"] = {
      {{"task", "opposite"}, {"optimizer", "sgd"}, {"finetuned", 0.94}, {"graft", 0.8}, {"movement", 0.3}, {"recovery", 0.85}, {"fraction", 0.01}},
      {{"task", "opposite"}, {"optimizer", "adamw"}, {"finetuned", 0.96}, {"graft", 0.6}, {"movement", 0.2}, {"recovery", 0.627}, {"fraction", 0.01}}};
  results["overlap"] = {{"tasks", names},
                        {"jaccard", {{1.0, 0.123}, {0.123, 1.0}}},
                        {"layers", {"embed", "0", "head"}},
                        {"per_layer", {{{1.0, 0.2}, {0.2, 1.0}}, {{1.0, 0.1}, {0.1, 1.0}}, {{1.0, 0.0}, {0.0, 1.0}}}},
                        {"related", {{{"pair", names}, {"jaccard", 0.123}}}},
                        {"related_mean", 0.123},
                        {"unrelated_mean", 0.011}};
  json per_task = json::object();
  for (const std::string& name : names) {
    per_task[name] = {{"per_layer", {3, 4, 5, 6, 7}}, {"total", 25}, {"score", 0.9},
                      {"ablated_scores", {{names[0], 0.25}, {names[1], 0.875}}}, {"target_drop", 0.65},
                      {"others_mean_drop", 0.035}, {"random_control_drop", 0.012}};
  }
  results["neurons"] = {{"model", "out/multitask"}, {"coverage", 0.5}, {"layers", 5}, {"intermediate_size", 172},
                        {"tasks", names}, {"per_task", per_task},
                        {"iou", json::array()}, {"iou_mean", {{1.0, 0.345}, {0.345, 1.0}}}};
  results["removal"] = {{"model", "out/multitask"}, {"fraction", 0.01}, {"tasks", names},
                        {"scores", {{names[0], 0.91}, {names[1], 0.88}}},
                        {"rows", {{{"removed", names[0]}, {"scores", {{names[0], 0.05}, {names[1], 0.86}}},
                                   {"target_drop", 0.86}, {"others_mean_drop", 0.02}},
                                  {{"removed", names[1]}, {"scores", {{names[0], 0.9}, {names[1], 0.125}}},
                                   {"target_drop", 0.755}, {"others_mean_drop", 0.01}}}},
                        {"learned_rows", {{{"removed", names[0]}, {"method", "learned"},
                                           {"scores", {{names[0], 0.07}, {names[1], 0.87}}},
                                           {"target_drop", 0.84}, {"others_mean_drop", 0.01}}}}};
  results["library"] = {{"dir", "out/library"}, {"entries", 2}, {"verified", 2}, {"ok", true}};
  results["merge_specialists"] = {{names[0], 0.8}, {names[1], 0.5}};
  results["merge_max_examples"] = 200;
  results["merge"] = {{{"method", "task_arithmetic"}, {"input", "graft"},
                       {"scores", {{names[0], 0.6}, {names[1], 0.45}}}, {"normalized", 0.825}}};
  results["merge_pairs"] = {{{"tasks", names}, {"jaccard", 0.04}, {"normalized", 0.9}, {"cost", 0.1}}};
  results["merge_pairs_correlation"] = nullptr;
  return results;
}

json minimal_results() {
  return {{"quick", true},
          {"tasks", {{{"name", "opposite"}, {"base", 0.0}, {"finetuned", 0.9}, {"pass", true}}}},
          {"base", {{"name", "stories260K"}}}};
}

const char* const kSections[] = {"summary", "localization", "curves", "where", "overlap",
                                 "neurons", "removal", "optimizer", "merge", "matrix"};

TEST(ReportRender, FullResultsHaveEveryChartAndNothingExternal) {
  const std::string page = sg::report::render_report(full_results(), "demo");
  for (const char* needle : {"http", "src=", "<link", "<script", "url(", "@import"}) {
    EXPECT_EQ(page.find(needle), std::string::npos) << needle;
  }
  // Summary bars; per task a recovery curve and a heat map; Jaccard, neuron IoU, neuron drops, specialist matrix.
  EXPECT_EQ(count_of(page, "<svg"), 1u + 2u * 2u + 4u);
  EXPECT_EQ(count_of(page, "</svg>"), count_of(page, "<svg"));
  EXPECT_EQ(page.find("not run"), std::string::npos);
  for (const char* id : kSections) EXPECT_FALSE(section_of(page, id).empty()) << id;
  EXPECT_EQ(page.rfind("</html>\n"), page.size() - 8);
}

TEST(ReportRender, NumbersAppearInTheirFormats) {
  const std::string page = sg::report::render_report(full_results(), "");
  // Scores with 3 decimals, recoveries with 2, budgets as percentages, counts as integers.
  EXPECT_NE(page.find(">0.940<"), std::string::npos);            // fine-tuned 0.94
  EXPECT_NE(page.find(">0.850<"), std::string::npos);            // graft 0.85
  EXPECT_NE(page.find(">0.90<"), std::string::npos);             // recovery 0.9
  EXPECT_NE(page.find(">0.95<"), std::string::npos);             // loss recovery 0.95
  EXPECT_NE(page.find(">5%<"), std::string::npos);               // budget_90 0.05
  EXPECT_NE(page.find(">1%<"), std::string::npos);               // graft_fraction 0.01
  EXPECT_NE(page.find(">0.1%<"), std::string::npos);             // sweep fraction 0.001
  EXPECT_NE(page.find(">2600<"), std::string::npos);             // parameters
  EXPECT_NE(page.find(">351<"), std::string::npos);              // outside the layers
  EXPECT_NE(page.find("312.4 s (5 min 12 s)"), std::string::npos);
  EXPECT_NE(page.find("21 selected of 4096 (0.513%)"), std::string::npos);  // q_proj layer 0 tooltip: 21/4096
  EXPECT_NE(page.find(">0.123<"), std::string::npos);            // Jaccard
  EXPECT_NE(page.find(">0.011<"), std::string::npos);            // unrelated mean
  EXPECT_NE(page.find(">0.345<"), std::string::npos);            // neuron IoU
  EXPECT_NE(page.find(">0.035<"), std::string::npos);            // others' mean drop
  EXPECT_NE(page.find(">0.63<"), std::string::npos);             // optimizer recovery 0.627 -> 2 decimals
  // The merge table: the specialists' row, the merged row and its normalized score, the pair.
  const std::string merge = section_of(page, "merge");
  EXPECT_NE(merge.find(">0.825<"), std::string::npos);
  EXPECT_NE(merge.find(">0.450<"), std::string::npos);
  EXPECT_NE(merge.find("out/library"), std::string::npos);
  EXPECT_NE(merge.find(">0.100<"), std::string::npos);
  // The removal table highlights the removed task's own score.
  const std::string removal = section_of(page, "removal");
  EXPECT_NE(removal.find("class=\"num diag\">0.050<"), std::string::npos);
  EXPECT_NE(removal.find("class=\"num diag\">0.125<"), std::string::npos);
  EXPECT_EQ(removal.find("class=\"num diag\">0.860<"), std::string::npos);
  // The learned removal's row follows, marked as such.
  EXPECT_NE(removal.find("class=\"num diag\">0.070<"), std::string::npos);
  EXPECT_NE(removal.find(">learned</td>"), std::string::npos);
  EXPECT_LT(removal.find("class=\"num diag\">0.125<"), removal.find(">learned</td>"));
  // The missing graft ECE reads as a dash, not as 0.
  const std::string localization = section_of(page, "localization");
  EXPECT_NE(localization.find(">0.100<"), std::string::npos);
  EXPECT_NE(localization.find(">\xE2\x80\x94<"), std::string::npos);
}

TEST(ReportRender, NamesAndTitleAreEscaped) {
  const std::string name = "<b>&\"x'</b>";
  const std::string page = sg::report::render_report(full_results(name), "a <title> & more");
  EXPECT_EQ(page.find(name), std::string::npos);
  EXPECT_EQ(page.find("<b>"), std::string::npos);
  EXPECT_NE(page.find("&lt;b&gt;&amp;&quot;x&#39;&lt;/b&gt;"), std::string::npos);
  EXPECT_NE(page.find("<title>a &lt;title&gt; &amp; more</title>"), std::string::npos);
  // The related pair is still found (and outlined) under its escaped name.
  EXPECT_NE(page.find("related tasks"), std::string::npos);
}

TEST(ReportRender, MissingSectionsSayNotRun) {
  const std::string page = sg::report::render_report(minimal_results(), "");
  for (const char* id : kSections) {
    if (std::string(id) == "summary") continue;
    EXPECT_NE(section_of(page, id).find("not run"), std::string::npos) << id;
  }
  EXPECT_EQ(section_of(page, "summary").find("not run"), std::string::npos);
  EXPECT_EQ(count_of(page, "<svg"), 1u);  // the summary's bar chart only
  EXPECT_NE(page.find("quick demo"), std::string::npos);
  // A full result with only the sweep missing (the quick demo) keeps its other charts.
  json quick = full_results();
  for (json& t : quick["tasks"]) t.erase("sweep");
  const std::string quick_page = sg::report::render_report(quick, "");
  EXPECT_NE(section_of(quick_page, "curves").find("not run"), std::string::npos);
  EXPECT_EQ(count_of(quick_page, "<svg"), 1u + 2u + 4u);
}

TEST(ReportRender, MistypedValuesReadAsDashes) {
  json results = full_results();
  results["tasks"][0]["finetuned"] = "high";
  results["tasks"][0]["where"] = 5;
  results["tasks"][1]["sweep"] = {{{"fraction", "x"}}};
  results["overlap"]["jaccard"] = "none";
  results["neurons"]["per_task"] = json::array();
  results["matrix"] = {{0.5, "?"}, {nullptr, 0.5}};
  std::string page;
  EXPECT_NO_THROW(page = sg::report::render_report(results, ""));
  EXPECT_EQ(count_of(page, "</svg>"), count_of(page, "<svg"));
  EXPECT_NE(page.find("not run"), std::string::npos);
}

TEST(ReportRender, ResultsWithoutTasksAreAnError) {
  EXPECT_THROW(sg::report::render_report(json::object(), ""), sg::Error);
  EXPECT_THROW(sg::report::render_report(json::array(), ""), sg::Error);
  EXPECT_THROW(sg::report::render_report(json{{"tasks", "opposite"}}, ""), sg::Error);
  EXPECT_NO_THROW(sg::report::render_report(json{{"tasks", json::array()}}, ""));
}

TEST(ReportRender, SameInputSameBytes) {
  EXPECT_EQ(first_difference(sg::report::render_report(full_results(), "t"), sg::report::render_report(full_results(), "t")),
            "identical");
}

// Python's xml.etree parses the whole page (everything after the doctype) and each <svg> on its own.
TEST(ReportRender, PageAndChartsAreWellFormedXml) {
  if (!std::filesystem::exists(sg::test::python())) GTEST_SKIP() << sg::test::python() << " not found";
  const std::string dir = sg::test::temp_dir("sg-report-xml");
  const std::string script = dir + "/check.py";
  write_text(script,
             "import re, sys, xml.etree.ElementTree as ET\n"
             "for path in sys.argv[1:]:\n"
             "    text = open(path, encoding='utf-8').read()\n"
             "    assert text.startswith('<!DOCTYPE html>\\n'), path\n"
             "    ET.fromstring(text.split('\\n', 1)[1])\n"
             "    svgs = re.findall(r'<svg\\b.*?</svg>', text, re.S)\n"
             "    for svg in svgs:\n"
             "        root = ET.fromstring(svg)\n"
             "        assert root.tag == 'svg' and root.find('title') is not None, path\n"
             "    print(path.rsplit('/', 1)[-1], len(svgs))\n");
  write_text(dir + "/full.html", sg::report::render_report(full_results(), "full"));
  write_text(dir + "/escaped.html", sg::report::render_report(full_results("<b>&\"x'</b>"), "<&>"));
  write_text(dir + "/minimal.html", sg::report::render_report(minimal_results(), ""));
  auto r = run_command(shell_quote(sg::test::python()) + " " + shell_quote(script) + " " + shell_quote(dir + "/full.html") +
                       " " + shell_quote(dir + "/escaped.html") + " " + shell_quote(dir + "/minimal.html"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "full.html 9\nescaped.html 9\nminimal.html 1\n");
}

TEST(ReportCli, WritesThePageAtomically) {
  const std::string dir = sg::test::temp_dir("sg-report-cli");
  const json results = full_results();
  write_text(dir + "/results.json", results.dump(1));
  write_text(dir + "/report.html", "old page");
  auto r = run_command(sg_command("report --from " + shell_quote(dir)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string expected = sg::report::render_report(results, "");
  EXPECT_EQ(first_difference(read_text(dir + "/report.html"), expected), "identical");
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp."), std::string::npos) << entry.path();
  }
  // --from FILE.json writes next to it unless --out says otherwise; --title reaches the page.
  write_text(dir + "/other.json", minimal_results().dump());
  r = run_command(sg_command("report --quiet --from " + shell_quote(dir + "/other.json") + " --out " +
                             shell_quote(dir + "/minimal.html") + " --title " + shell_quote("Run <7>")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(first_difference(read_text(dir + "/minimal.html"), sg::report::render_report(minimal_results(), "Run <7>")),
            "identical");
  // A failed run leaves the previous page as it was.
  write_text(dir + "/results.json", "{\"tasks\": [");
  r = run_command(sg_command("report --from " + shell_quote(dir)));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(first_difference(read_text(dir + "/report.html"), expected), "identical");
}

TEST(ReportCli, BadInputsFailWithOneLine) {
  const std::string dir = sg::test::temp_dir("sg-report-bad");
  sg::test::expect_one_line_error("report --from " + shell_quote(dir), {"results.json", "skillgraft demo"}, true);
  sg::test::expect_one_line_error("report --from " + shell_quote(dir + "/missing.json"), {"missing.json"}, true);
  write_text(dir + "/broken.json", "{\n  \"quick\": true,\n  \"tasks\": [}\n");
  sg::test::expect_one_line_error("report --from " + shell_quote(dir + "/broken.json"), {"not valid JSON", "line 3"}, true);
  write_text(dir + "/notasks.json", "{\"quick\": true}");
  sg::test::expect_one_line_error("report --from " + shell_quote(dir + "/notasks.json"), {"\"tasks\""}, true);
  write_text(dir + "/results.json", minimal_results().dump());
  sg::test::expect_one_line_error("report --from " + shell_quote(dir) + " --out " + shell_quote(dir + "/no/such/dir/r.html"),
                                  {"r.html"}, true);
  sg::test::expect_one_line_error("report", {"--from"});
  auto r = run_command(sg_command("report --help"));
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("--from"), std::string::npos);
}

}  // namespace
