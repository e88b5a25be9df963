// skillgraft report: the demo's results.json as one self-contained HTML page (inline SVG charts
// and tables; nothing fetched when it is opened).
#include <algorithm>
#include <cstdio>
#include <string>

#include "cli/commands.h"
#include "cli/flags.h"
#include "report/report.h"
#include "util/error.h"
#include "util/file.h"

namespace sg::cli {

namespace {

// The directory part of a path ("." when there is none).
std::string parent_dir(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// Parses results.json; a syntax error names the line and column.
nlohmann::json parse_results(const std::string& path) {
  const std::string text = util::read_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    size_t line = 1, column = 1;
    const size_t end = std::min(text.size(), e.byte > 0 ? static_cast<size_t>(e.byte - 1) : size_t{0});
    for (size_t i = 0; i < end; ++i) {
      if (text[i] == '\n') {
        ++line;
        column = 1;
      } else {
        ++column;
      }
    }
    // nlohmann's message: "[json.exception.parse_error.101] parse error at line 3, column 4: <detail>".
    std::string detail = e.what();
    const size_t at = detail.find("column");
    const size_t colon = at == std::string::npos ? std::string::npos : detail.find(": ", at);
    if (colon != std::string::npos) detail = detail.substr(colon + 2);
    for (char& c : detail) {
      if (c == '\n' || c == '\r') c = ' ';
    }
    SG_FAIL(path << ": not valid JSON at line " << line << ", column " << column << " (" << detail
                 << "); hint: is the file complete? rerun `skillgraft demo` to write it again");
  }
}

}  // namespace

int run_report(const std::vector<std::string>& args) {
  std::string from, out_path, title;
  CommonOptions common;
  FlagSet flags("report", "skillgraft report --from DIR [--out report.html] [options]",
                "Renders the results.json of `skillgraft demo` as one self-contained HTML page: summary, the\n"
                "localization table, recovery curves, where each skill lives, overlap between skills, neurons,\n"
                "removal, optimizer contrast and the specialist matrix. Charts are inline SVG and every number\n"
                "is also in a table; the page fetches nothing. Sections the demo did not run say \"not run\".");
  flags.add_string("from", &from, "the demo's output directory (reads DIR/results.json), or a results JSON file", true);
  flags.add_string("out", &out_path, "HTML file to write (default: report.html next to results.json)");
  flags.add_string("title", &title, "page title (default: \"skillgraft report\")");
  flags.add_common(&common.threads, &common.json_path, &common.quiet);
  if (!flags.parse(args)) return 0;
  apply_common(common);

  const bool from_dir = util::is_directory(from);
  const std::string results_path = from_dir ? util::join_path(from, "results.json") : from;
  SG_CHECK(util::file_exists(results_path),
           results_path << ": no such file; hint: " << (from_dir ? "" : "--from takes the demo's output directory or its results.json; ")
                        << "write one with `skillgraft demo --out DIR`");
  const nlohmann::json results = parse_results(results_path);
  SG_CHECK(results.is_object() && results.contains("tasks") && results["tasks"].is_array(),
           results_path << ": no \"tasks\" list, so not the results of `skillgraft demo`; hint: pass the demo's "
                           "output directory or the results.json it wrote");
  if (out_path.empty()) out_path = util::join_path(from_dir ? from : parent_dir(results_path), "report.html");
  const std::string html = report::render_report(results, title);
  util::write_file_atomic(out_path, html);
  std::printf("wrote %s (%zu bytes, %zu tasks)\n", out_path.c_str(), html.size(), results["tasks"].size());
  write_json_output(common, {{"out", out_path}, {"bytes", html.size()}, {"from", results_path}});
  return 0;
}

}  // namespace sg::cli
