// Report sections about each skill on its own: recovery curves and where the skill lives.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>

#include "report/charts.h"
#include "report/html.h"
#include "report/page.h"

namespace sg::report {

namespace {

// "model.layers.3.mlp.up_proj.weight" -> (3, "up_proj"); "model.embed_tokens.weight" -> (-1, "embed_tokens");
// GPT-2 "transformer.h.0.attn.c_attn.bias" -> (0, "c_attn.bias"). The same rule as the skill
// descriptions the demo writes (skills::describe_sparse_skill), which name the kinds.
std::pair<long long, std::string> layer_and_kind(const std::string& name) {
  long long layer = -1;
  for (const std::string marker : {"layers.", "h."}) {
    size_t at = 0;
    while (layer < 0 && (at = name.find(marker, at)) != std::string::npos) {
      const bool starts_component = at == 0 || name[at - 1] == '.';
      const size_t digits = at + marker.size();
      size_t end = digits;
      while (end < name.size() && std::isdigit(static_cast<unsigned char>(name[end]))) ++end;
      if (starts_component && end > digits && end < name.size() && name[end] == '.' && end - digits < 9) {
        layer = std::stoll(name.substr(digits, end - digits));
      }
      at += marker.size();
    }
    if (layer >= 0) break;
  }
  std::string stem = name, suffix;
  auto ends_with = [&](const std::string& tail) {
    return stem.size() >= tail.size() && stem.compare(stem.size() - tail.size(), tail.size(), tail) == 0;
  };
  if (ends_with(".weight")) {
    stem.resize(stem.size() - 7);
  } else if (ends_with(".bias")) {
    stem.resize(stem.size() - 5);
    suffix = ".bias";
  }
  const size_t dot = stem.rfind('.');
  return {layer, (dot == std::string::npos ? stem : stem.substr(dot + 1)) + suffix};
}

// Attention before MLP before norms, as a reader scans a block; unknown kinds after, by name.
int kind_rank(const std::string& kind) {
  static const char* const kOrder[] = {"q_proj", "k_proj",  "v_proj",          "o_proj",
                                       "c_attn", "c_proj",  "gate_proj",       "up_proj",
                                       "down_proj", "c_fc", "input_layernorm", "post_attention_layernorm",
                                       "ln_1",   "ln_2"};
  for (size_t i = 0; i < sizeof(kOrder) / sizeof(kOrder[0]); ++i) {
    if (kind == kOrder[i]) return static_cast<int>(i);
  }
  return 1000;
}

void sort_kinds(std::vector<std::string>* kinds) {
  std::stable_sort(kinds->begin(), kinds->end(), [](const std::string& a, const std::string& b) {
    const int ra = kind_rank(a), rb = kind_rank(b);
    return ra != rb ? ra < rb : a < b;
  });
}

std::string count_text(std::optional<double> value) {
  return value ? format_count(static_cast<int64_t>(std::llround(*value))) : std::string(kMissing);
}

std::string task_heading(const nlohmann::json& task) {
  std::string html = "<h3>" + escape(string_at(task, "name", "?"));
  const std::string metric = string_at(task, "metric");
  if (!metric.empty()) html += " <small>(" + escape(metric) + ")</small>";
  return html + "</h3>";
}

bool has_sweep(const nlohmann::json& task) {
  const nlohmann::json* sweep = member(task, "sweep");
  return sweep != nullptr && sweep->is_array() && !sweep->empty();
}

std::string curve_for_task(const nlohmann::json& task) {
  const std::string name = string_at(task, "name", "?");
  const nlohmann::json& sweep = *member(task, "sweep");
  struct Method {
    const char* key;
    const char* label;
    const char* colour;
  };
  const Method methods[] = {{"graft", "graft (learned mask)", kColourGraft},
                            {"movement", "movement", kColourMovement},
                            {"saliency", "saliency", kColourSaliency},
                            {"random", "random", kColourRandom}};
  LineChart chart;
  chart.title = name + ": test score against the share of parameters grafted";
  chart.x_label = "share of parameters grafted (log scale)";
  chart.y_label = "test score" + (string_at(task, "metric").empty() ? "" : " (" + string_at(task, "metric") + ")");
  chart.log_x = true;
  chart.x_as_percent = true;
  const std::optional<double> base = number_at(task, "base");
  const std::optional<double> finetuned = number_at(task, "finetuned");
  for (const Method& method : methods) {
    ChartSeries series{method.label, method.colour, {}, ""};
    for (const nlohmann::json& point : sweep) {
      const std::optional<double> fraction = number_at(point, "fraction");
      const std::optional<double> score = number_at(point, method.key);
      if (!fraction || !score || *fraction <= 0) continue;
      std::string tooltip = std::string(method.label) + " at " + format_percent(*fraction) + ": " + format_number(*score, 3);
      const nlohmann::json* recovery = member(point, "recovery");
      const std::optional<double> r = recovery != nullptr ? number_at(*recovery, method.key) : std::nullopt;
      if (r) tooltip += " (recovery " + format_number(*r, 2) + ")";
      series.points.push_back({*fraction, *score, tooltip});
    }
    if (!series.points.empty()) chart.series.push_back(series);
  }
  if (finetuned) chart.references.push_back({"fine-tuned", *finetuned, kColourFinetuned, "6 4"});
  if (base) chart.references.push_back({"base", *base, kColourBase, "2 3"});
  const std::optional<double> budget_90 = number_at(task, "budget_90");
  if (budget_90 && *budget_90 > 0) {
    chart.markers.push_back({"90% recovery at " + format_percent(*budget_90), *budget_90, "#555555"});
  }

  std::vector<std::vector<Cell>> rows;
  for (const nlohmann::json& point : sweep) {
    const nlohmann::json* recovery = member(point, "recovery");
    const nlohmann::json empty = nlohmann::json::object();
    const nlohmann::json& r = recovery != nullptr ? *recovery : empty;
    rows.push_back({{percent_text(number_at(point, "fraction")), "num"}, number_cell(number_at(point, "graft"), 3),
                    number_cell(number_at(point, "movement"), 3), number_cell(number_at(point, "saliency"), 3),
                    number_cell(number_at(point, "random"), 3), number_cell(number_at(r, "graft"), 2),
                    number_cell(number_at(r, "movement"), 2), number_cell(number_at(r, "random"), 2)});
  }
  const std::string table = render_table({"share grafted", "graft", "movement", "saliency", "random",
                                          "recovery: graft", "recovery: movement", "recovery: random"},
                                         rows, name + ": scores and recoveries per budget");
  std::string caption = "Test score of the base with only the selected share of the fine-tune's parameter changes grafted "
                        "on, per selection method. Dashed: the fine-tuned specialist; dotted: the base model.";
  if (budget_90) caption += " The vertical line marks the smallest budget recovering 90% of the gain (" +
                            escape(format_percent(*budget_90)) + ").";
  return task_heading(task) + figure(render_line_chart(chart), caption, table);
}

std::string where_for_task(const nlohmann::json& task) {
  const std::string name = string_at(task, "name", "?");
  const nlohmann::json& where = *member(task, "where");
  const nlohmann::json* per_layer_kind = member(where, "per_layer_kind");
  const nlohmann::json* per_kind = member(where, "per_kind");
  const nlohmann::json* per_tensor = member(where, "per_tensor");
  const nlohmann::json* per_layer = member(where, "per_layer");

  size_t layers = per_layer != nullptr && per_layer->is_array() ? per_layer->size() : 0;
  std::vector<std::string> layer_kinds;
  if (per_layer_kind != nullptr && per_layer_kind->is_object()) {
    for (const auto& item : per_layer_kind->items()) {
      layer_kinds.push_back(item.key());
      if (item.value().is_array()) layers = std::max(layers, item.value().size());
    }
  }
  sort_kinds(&layer_kinds);
  std::vector<std::string> outside_kinds;
  if (per_kind != nullptr && per_kind->is_object()) {
    for (const auto& item : per_kind->items()) {
      if (std::find(layer_kinds.begin(), layer_kinds.end(), item.key()) == layer_kinds.end()) {
        outside_kinds.push_back(item.key());
      }
    }
  }
  sort_kinds(&outside_kinds);
  // Elements per (kind, layer), from the per-tensor sizes, for the share in the tooltips.
  std::map<std::pair<std::string, long long>, double> numel;
  if (per_tensor != nullptr && per_tensor->is_object()) {
    for (const auto& item : per_tensor->items()) {
      const auto [layer, kind] = layer_and_kind(item.key());
      const std::optional<double> size = number_at(item.value(), "numel");
      if (size) numel[{kind, layer}] += *size;
    }
  }
  const std::optional<double> outside_total = number_at(where, "outside_layers");
  if (layers == 0 && layer_kinds.empty() && outside_kinds.empty()) {
    return task_heading(task) + not_run("the skill's description has no per-layer counts");
  }

  HeatMap map;
  map.title = name + ": parameters selected per tensor kind and layer";
  map.row_axis = "tensor kind";
  map.column_axis = "layer";
  for (size_t l = 0; l < layers; ++l) map.column_labels.push_back(std::to_string(l));
  map.decimals = -1;
  double largest = 0;
  auto tooltip = [&](const std::string& kind, long long layer, std::optional<double> count) {
    std::string text = kind + (layer >= 0 ? ", layer " + std::to_string(layer) : " (outside the layers)") + ": " +
                       count_text(count) + " selected";
    auto it = numel.find({kind, layer});
    if (count && it != numel.end() && it->second > 0) {
      text += " of " + format_count(static_cast<int64_t>(it->second)) + " (" + format_percent(*count / it->second) + ")";
    }
    return text;
  };
  std::vector<std::vector<Cell>> rows;
  for (const std::string& kind : layer_kinds) {
    const nlohmann::json& counts = (*per_layer_kind)[kind];
    std::vector<std::optional<double>> values;
    std::vector<std::string> tips;
    std::vector<Cell> row = {text_cell(kind)};
    double total = 0;
    for (size_t l = 0; l < layers; ++l) {
      const std::optional<double> count = number_in(counts, l);
      values.push_back(count);
      tips.push_back(tooltip(kind, static_cast<long long>(l), count));
      row.push_back({count_text(count), "num"});
      if (count) {
        largest = std::max(largest, *count);
        total += *count;
      }
    }
    row.push_back({kMissing, "num"});
    row.push_back({count_text(total), "num"});
    map.row_labels.push_back(kind);
    map.values.push_back(values);
    map.tooltips.push_back(tips);
    rows.push_back(row);
  }
  auto add_outside_row = [&](const std::string& label, const std::string& kind, std::optional<double> count) {
    map.row_labels.push_back(label);
    map.values.push_back({count});
    map.tooltips.push_back({tooltip(kind, -1, count)});
    if (count) largest = std::max(largest, *count);
    std::vector<Cell> row = {text_cell(label)};
    for (size_t l = 0; l < layers; ++l) row.push_back({kMissing, "num"});
    row.push_back({count_text(count), "num"});
    row.push_back({count_text(count), "num"});
    rows.push_back(row);
  };
  if (!outside_kinds.empty()) {
    for (const std::string& kind : outside_kinds) add_outside_row(kind + " (outside)", kind, number_at(*per_kind, kind));
  } else if (outside_total && *outside_total > 0) {
    add_outside_row("outside the layers", "embeddings, norm, head", outside_total);
  }
  std::vector<Cell> totals = {text_cell("all kinds")};
  for (size_t l = 0; l < layers; ++l) {
    totals.push_back({count_text(per_layer != nullptr ? number_in(*per_layer, l) : std::nullopt), "num"});
  }
  totals.push_back({count_text(outside_total), "num"});
  totals.push_back({count_text(number_at(where, "parameters")), "num"});
  rows.push_back(totals);
  map.scale_min = 0;
  map.scale_max = std::max(1.0, largest);
  map.scale_label = "parameters selected (count)";

  std::vector<std::string> header = {"tensor kind"};
  for (size_t l = 0; l < layers; ++l) header.push_back("layer " + std::to_string(l));
  header.push_back("outside layers");
  header.push_back("total");
  std::string caption = escape(count_text(number_at(where, "parameters"))) + " parameters selected";
  if (outside_total) caption += ", " + escape(count_text(outside_total)) + " of them outside the layers (embeddings, final norm, head)";
  caption += ". Cell colour: the number of parameters selected in that tensor (count, not share)";
  caption += numel.empty() ? "." : "; hover a cell for the share of the tensor's elements.";
  return task_heading(task) +
         figure(render_heat_map(map), caption, render_table(header, rows, name + ": parameters selected per kind and layer"));
}

}  // namespace

std::string section_curves(const nlohmann::json& results) {
  const nlohmann::json& tasks = results["tasks"];
  std::string body =
      "<p class=\"lead\">How much of each skill a budget recovers: the share of parameters grafted (log scale) against "
      "the test score, for the learned mask and the baselines at the same budget.</p>";
  bool any = false;
  for (const nlohmann::json& task : tasks) any = any || has_sweep(task);
  if (!any) return section("curves", "Recovery curves", body + not_run("no budget sweep in results.json (the quick demo skips it; run the full demo)"));
  for (const nlohmann::json& task : tasks) {
    body += has_sweep(task) ? curve_for_task(task) : task_heading(task) + not_run("no sweep for this task");
  }
  return section("curves", "Recovery curves", body);
}

std::string section_where(const nlohmann::json& results) {
  const nlohmann::json& tasks = results["tasks"];
  std::string body =
      "<p class=\"lead\">Where each localized skill sits in the network: the parameters its mask selects, per tensor "
      "kind (rows) and transformer layer (columns); tensors outside the layers (embeddings, final norm, output head) get "
      "a row of their own.</p>";
  bool any = false;
  for (const nlohmann::json& task : tasks) any = any || member(task, "where") != nullptr;
  if (!any) return section("where", "Where skills live", body + not_run("no skill descriptions (\"where\") in results.json"));
  for (const nlohmann::json& task : tasks) {
    body += member(task, "where") != nullptr ? where_for_task(task)
                                              : task_heading(task) + not_run("no skill description for this task");
  }
  return section("where", "Where skills live", body);
}

}  // namespace sg::report
