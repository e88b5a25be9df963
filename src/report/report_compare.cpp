// Report sections that compare skills with each other: overlap, neurons, removal from a
// multi-task model, optimizer contrast, and the specialist matrix.
#include <algorithm>
#include <cmath>

#include "report/charts.h"
#include "report/html.h"
#include "report/page.h"

namespace sg::report {

namespace {

const char* const kDash = "\xE2\x80\x93";  // en dash, between the names of a pair

std::vector<std::string> task_names(const nlohmann::json& results) {
  std::vector<std::string> names;
  for (const nlohmann::json& task : results["tasks"]) names.push_back(string_at(task, "name", "?"));
  return names;
}

// Labels for an n×n matrix: `names` when they fit, else "1", "2", ...
std::vector<std::string> labels_for(const std::vector<std::string>& names, size_t n) {
  if (names.size() == n) return names;
  std::vector<std::string> labels;
  for (size_t i = 0; i < n; ++i) labels.push_back(std::to_string(i + 1));
  return labels;
}

size_t index_of(const std::vector<std::string>& names, const std::string& name) {
  return static_cast<size_t>(std::find(names.begin(), names.end(), name) - names.begin());
}

// A square matrix as a table, the diagonal highlighted.
std::string matrix_table(const std::vector<std::string>& labels, const std::vector<std::vector<std::optional<double>>>& m,
                         const std::string& corner, int decimals, const std::string& caption) {
  std::vector<std::string> header = {corner};
  header.insert(header.end(), labels.begin(), labels.end());
  std::vector<std::vector<Cell>> rows;
  for (size_t i = 0; i < m.size(); ++i) {
    std::vector<Cell> row = {text_cell(i < labels.size() ? labels[i] : std::to_string(i + 1))};
    for (size_t j = 0; j < labels.size(); ++j) {
      row.push_back(number_cell(j < m[i].size() ? m[i][j] : std::nullopt, decimals, i == j ? "num diag" : "num"));
    }
    rows.push_back(row);
  }
  return render_table(header, rows, caption);
}

// Heat map of a task × task overlap matrix, coloured from 0 to the largest off-diagonal value
// (sparse skills overlap little; a 0..1 scale would paint everything off the diagonal white).
HeatMap overlap_map(const std::string& title, const std::vector<std::string>& labels,
                    const std::vector<std::vector<std::optional<double>>>& m, const std::string& what) {
  HeatMap map;
  map.title = title;
  map.row_axis = "task";
  map.column_axis = "task";
  map.row_labels = labels;
  map.column_labels = labels;
  map.values = m;
  double largest = 0;
  for (size_t i = 0; i < m.size(); ++i) {
    for (size_t j = 0; j < m[i].size(); ++j) {
      if (i != j && m[i][j] && std::isfinite(*m[i][j])) largest = std::max(largest, *m[i][j]);
    }
  }
  map.scale_max = largest > 0 ? largest : 1.0;
  map.scale_label = what + " (scale clipped at the largest off-diagonal value)";
  map.decimals = 3;
  return map;
}

std::string overlap_parameters(const nlohmann::json& overlap) {
  const std::vector<std::string> tasks = strings_at(overlap, "tasks");
  const std::vector<std::vector<std::optional<double>>> jaccard = matrix_of(member(overlap, "jaccard"));
  if (jaccard.empty()) return "<h3>Parameters</h3>" + not_run("no parameter Jaccard matrix in the overlap section");
  const std::vector<std::string> labels = labels_for(tasks, jaccard.size());
  HeatMap map = overlap_map("Parameter overlap (Jaccard) between the skills' selected parameters", labels, jaccard,
                            "Jaccard index of the parameter sets");
  std::vector<std::vector<Cell>> related_rows;
  const nlohmann::json* related = member(overlap, "related");
  if (related != nullptr && related->is_array()) {
    for (const nlohmann::json& item : *related) {
      const std::vector<std::string> pair = strings_at(item, "pair");
      if (pair.size() != 2) continue;
      related_rows.push_back({text_cell(pair[0] + " " + kDash + " " + pair[1]), number_cell(number_at(item, "jaccard"), 3)});
      const size_t a = index_of(labels, pair[0]), b = index_of(labels, pair[1]);
      if (a < labels.size() && b < labels.size()) {
        map.outlined.push_back({a, b});
        map.outlined.push_back({b, a});
      }
    }
  }
  if (!map.outlined.empty()) map.outline_label = "related tasks";
  std::string caption = "Jaccard index |A &#8745; B| / |A &#8746; B| of the parameter sets two skills select.";
  const std::optional<double> related_mean = number_at(overlap, "related_mean");
  const std::optional<double> unrelated_mean = number_at(overlap, "unrelated_mean");
  if (related_mean || unrelated_mean) {
    caption += " Mean over related pairs <strong>" + number_text(related_mean, 3) + "</strong> against <strong>" +
               number_text(unrelated_mean, 3) + "</strong> over unrelated pairs.";
  }
  std::string html = "<h3>Parameters</h3>" +
                     figure(render_heat_map(map), caption,
                            matrix_table(labels, jaccard, "task", 3, "Parameter Jaccard, task × task"));
  if (!related_rows.empty()) {
    html += render_table({"related pair", "Jaccard"}, related_rows, "Related pairs (outlined in the heat map)");
  }
  // Per layer: the mean over all pairs, and each related pair.
  const std::vector<std::string> layer_names = strings_at(overlap, "layers");
  const nlohmann::json* per_layer = member(overlap, "per_layer");
  if (!layer_names.empty() && per_layer != nullptr && per_layer->is_array()) {
    std::vector<std::string> header = {"layer", "mean over all pairs"};
    std::vector<std::pair<size_t, size_t>> pairs;
    if (related != nullptr && related->is_array()) {
      for (const nlohmann::json& item : *related) {
        const std::vector<std::string> pair = strings_at(item, "pair");
        if (pair.size() != 2) continue;
        const size_t a = index_of(labels, pair[0]), b = index_of(labels, pair[1]);
        if (a >= labels.size() || b >= labels.size()) continue;
        pairs.push_back({a, b});
        header.push_back(pair[0] + " " + kDash + " " + pair[1]);
      }
    }
    std::vector<std::vector<Cell>> rows;
    for (size_t l = 0; l < layer_names.size() && l < per_layer->size(); ++l) {
      const std::vector<std::vector<std::optional<double>>> m = matrix_of(&(*per_layer)[l]);
      double sum = 0;
      int count = 0;
      for (size_t i = 0; i < m.size(); ++i) {
        for (size_t j = i + 1; j < m[i].size(); ++j) {
          if (m[i][j]) {
            sum += *m[i][j];
            ++count;
          }
        }
      }
      std::vector<Cell> row = {text_cell(layer_names[l]), number_cell(count > 0 ? std::optional<double>(sum / count) : std::nullopt, 3)};
      for (const auto& [a, b] : pairs) {
        row.push_back(number_cell(a < m.size() && b < m[a].size() ? m[a][b] : std::nullopt, 3));
      }
      rows.push_back(row);
    }
    html += render_table(header, rows, "Parameter Jaccard per layer");
  }
  return html;
}

std::string overlap_neurons(const nlohmann::json& results) {
  const nlohmann::json* neurons = member(results, "neurons");
  const std::vector<std::vector<std::optional<double>>> iou =
      neurons != nullptr ? matrix_of(member(*neurons, "iou_mean")) : std::vector<std::vector<std::optional<double>>>{};
  if (iou.empty()) return "<h3>Neurons</h3>" + not_run("no neuron localization (\"neurons\" with \"iou_mean\") in results.json");
  const std::vector<std::string> labels = labels_for(strings_at(*neurons, "tasks"), iou.size());
  const HeatMap map = overlap_map("Neuron overlap (IoU, mean over layers) between the tasks' FFN neuron sets", labels,
                                  iou, "IoU of the neuron sets (mean over layers)");
  return "<h3>Neurons</h3>" +
         figure(render_heat_map(map),
                "Intersection over union of the FFN neurons each task relies on, per layer, averaged over the layers.",
                matrix_table(labels, iou, "task", 3, "Neuron IoU (mean over layers), task × task"));
}

}  // namespace

std::string section_overlap(const nlohmann::json& results) {
  std::string body =
      "<p class=\"lead\">Do different skills use the same parameters? Related tasks are expected to share more than "
      "unrelated ones.</p>";
  const nlohmann::json* overlap = member(results, "overlap");
  body += overlap != nullptr ? overlap_parameters(*overlap)
                             : "<h3>Parameters</h3>" + not_run("no overlap analysis (\"overlap\") in results.json");
  body += overlap_neurons(results);
  return section("overlap", "Overlap between skills", body);
}

std::string section_neurons(const nlohmann::json& results) {
  const nlohmann::json* neurons = member(results, "neurons");
  std::string body =
      "<p class=\"lead\">Each task's FFN neurons (by activation on its prompts) are ablated in the multi-task model: the "
      "score on the task should drop far more than on the other tasks, and more than when as many random neurons "
      "are ablated.</p>";
  if (neurons == nullptr) return section("neurons", "Neurons", body + not_run("no neuron localization (\"neurons\") in results.json"));
  body += "<dl class=\"facts\"><dt>model</dt><dd>" + escape(string_at(*neurons, "model", kMissing)) +
          "</dd><dt>coverage</dt><dd>" + percent_text(number_at(*neurons, "coverage")) + "</dd><dt>layers</dt><dd>" +
          number_text(number_at(*neurons, "layers"), 0) + "</dd><dt>FFN width</dt><dd>" +
          number_text(number_at(*neurons, "intermediate_size"), 0) + "</dd></dl>";
  const nlohmann::json* per_task = member(*neurons, "per_task");
  std::vector<std::string> tasks = strings_at(*neurons, "tasks");
  if (tasks.empty() && per_task != nullptr && per_task->is_object()) {
    for (const auto& item : per_task->items()) tasks.push_back(item.key());
  }
  if (per_task == nullptr || !per_task->is_object() || tasks.empty()) {
    return section("neurons", "Neurons", body + not_run("no per-task neuron results"));
  }
  std::vector<std::vector<Cell>> rows;
  BarChart chart;
  chart.title = "Score drop when a task's neurons are ablated";
  chart.y_label = "score drop";
  chart.series = {{"target task", "#D55E00", {}}, {"other tasks (mean)", kColourGraft, {}}, {"random neurons", kColourRandom, {}}};
  std::vector<std::vector<std::optional<double>>> ablated;
  bool any_ablated = false;
  for (const std::string& task : tasks) {
    const nlohmann::json* entry = member(*per_task, task);
    const nlohmann::json empty = nlohmann::json::object();
    const nlohmann::json& e = entry != nullptr ? *entry : empty;
    std::string layers_text;
    const nlohmann::json* per_layer = member(e, "per_layer");
    if (per_layer != nullptr && per_layer->is_array()) {
      for (size_t l = 0; l < per_layer->size(); ++l) {
        layers_text += (l > 0 ? " \xC2\xB7 " : "") + number_text(number_in(*per_layer, l), 0);
      }
    }
    rows.push_back({text_cell(task), number_cell(number_at(e, "total"), 0), text_cell(layers_text.empty() ? kMissing : layers_text, "num"),
                    number_cell(number_at(e, "score"), 3), number_cell(number_at(e, "target_drop"), 3),
                    number_cell(number_at(e, "others_mean_drop"), 3), number_cell(number_at(e, "random_control_drop"), 3)});
    chart.categories.push_back(task);
    chart.series[0].values.push_back(number_at(e, "target_drop"));
    chart.series[1].values.push_back(number_at(e, "others_mean_drop"));
    chart.series[2].values.push_back(number_at(e, "random_control_drop"));
    std::vector<std::optional<double>> row;
    const nlohmann::json* scores = member(e, "ablated_scores");
    for (const std::string& scored : tasks) {
      row.push_back(scores != nullptr ? number_at(*scores, scored) : std::nullopt);
      any_ablated = any_ablated || row.back().has_value();
    }
    ablated.push_back(row);
  }
  body += render_table({"task", "neurons", "per layer", "score", "target drop", "others' mean drop", "random control drop"},
                       rows, "Neurons per task and the effect of ablating them");
  body += figure(render_bar_chart(chart),
                 "Drop in test score when the task's neurons are zeroed: on the task itself, on the other tasks (mean), "
                 "and on the task when the same number of random neurons is zeroed instead.");
  if (any_ablated) {
    body += matrix_table(tasks, ablated, "neurons ablated \xE2\x86\x93 / task scored \xE2\x86\x92", 3,
                         "Scores after ablation: row = whose neurons are ablated, column = task scored");
  }
  return section("neurons", "Neurons", body);
}

std::string section_removal(const nlohmann::json& results) {
  const nlohmann::json* removal = member(results, "removal");
  std::string body =
      "<p class=\"lead\">One model fine-tuned on all tasks; removing one task's parameters (restoring their base "
      "values) should remove that skill and leave the others. <em>graft mask</em>: the task's own graft, localized in "
      "the multi-task model against the base; <em>learned</em>: a removal mask of the same size trained to make the "
      "task answer like the base and the others like the multi-task model.</p>";
  if (removal == nullptr) return section("removal", "Removal", body + not_run("no removal experiment (\"removal\") in results.json"));
  std::vector<std::string> tasks = strings_at(*removal, "tasks");
  const nlohmann::json* scores = member(*removal, "scores");
  const nlohmann::json* removal_rows = member(*removal, "rows");
  if (tasks.empty() && scores != nullptr && scores->is_object()) {
    for (const auto& item : scores->items()) tasks.push_back(item.key());
  }
  if (tasks.empty() || removal_rows == nullptr || !removal_rows->is_array()) {
    return section("removal", "Removal", body + not_run("the removal section has no tasks or rows"));
  }
  std::vector<std::string> header = {"removed", "mask"};
  header.insert(header.end(), tasks.begin(), tasks.end());
  header.push_back("target drop");
  header.push_back("others' mean drop");
  std::vector<std::vector<Cell>> rows;
  if (scores != nullptr) {
    std::vector<Cell> row = {text_cell("nothing (multi-task model)"), text_cell(kMissing)};
    for (const std::string& task : tasks) row.push_back(number_cell(number_at(*scores, task), 3));
    row.push_back(text_cell(kMissing, "num"));
    row.push_back(text_cell(kMissing, "num"));
    rows.push_back(row);
  }
  std::vector<const nlohmann::json*> items;
  for (const nlohmann::json& item : *removal_rows) items.push_back(&item);
  const nlohmann::json* learned_rows = member(*removal, "learned_rows");
  if (learned_rows != nullptr && learned_rows->is_array()) {
    for (const nlohmann::json& item : *learned_rows) items.push_back(&item);
  }
  for (const nlohmann::json* entry : items) {
    const nlohmann::json& item = *entry;
    const std::string removed = string_at(item, "removed", "?");
    const nlohmann::json* row_scores = member(item, "scores");
    const std::string method = string_at(item, "method", "graft");
    std::vector<Cell> row = {text_cell(removed), text_cell(method == "graft" ? "graft mask" : method)};
    for (const std::string& task : tasks) {
      row.push_back(number_cell(row_scores != nullptr ? number_at(*row_scores, task) : std::nullopt, 3,
                                task == removed ? "num diag" : "num"));
    }
    row.push_back(number_cell(number_at(item, "target_drop"), 3));
    row.push_back(number_cell(number_at(item, "others_mean_drop"), 3));
    rows.push_back(row);
  }
  const std::optional<double> fraction = number_at(*removal, "fraction");
  body += render_table(header, rows,
                       "Test scores after removing each task's skill" +
                           (fraction ? " (" + format_percent(*fraction) + " of the parameters)" : std::string()) +
                           "; highlighted: the removed task itself.");
  return section("removal", "Removal", body);
}

std::string section_optimizer(const nlohmann::json& results) {
  const nlohmann::json* contrast = member(results, "optimizer_contrast");
  std::string body =
      "<p class=\"lead\">The same task fine-tuned with SGD and with AdamW: does the optimizer change how localized the "
      "skill is?</p>";
  if (contrast == nullptr || !contrast->is_array() || contrast->empty()) {
    return section("optimizer", "Optimizer contrast", body + not_run("no optimizer contrast in results.json"));
  }
  std::vector<std::vector<Cell>> rows;
  for (const nlohmann::json& item : *contrast) {
    rows.push_back({text_cell(string_at(item, "task", "?")), text_cell(string_at(item, "optimizer", kMissing)),
                    {percent_text(number_at(item, "fraction")), "num"}, number_cell(number_at(item, "finetuned"), 3),
                    number_cell(number_at(item, "graft"), 3), number_cell(number_at(item, "movement"), 3),
                    number_cell(number_at(item, "recovery"), 2)});
  }
  body += render_table({"task", "optimizer", "budget", "fine-tuned", "graft", "movement", "recovery"}, rows);
  return section("optimizer", "Optimizer contrast", body);
}

std::string section_matrix(const nlohmann::json& results) {
  const std::vector<std::vector<std::optional<double>>> matrix = matrix_of(member(results, "matrix"));
  std::string body =
      "<p class=\"lead\">Each specialist (row) scored on every task's test split (column): a specialist should be good "
      "at its own task (the diagonal) and no better than the base elsewhere.</p>";
  if (matrix.empty()) return section("matrix", "Specialist matrix", body + not_run("no specialist matrix in results.json"));
  const std::vector<std::string> labels = labels_for(task_names(results), matrix.size());
  HeatMap map;
  map.title = "Specialist matrix: specialist (row) scored on task (column)";
  map.row_axis = "specialist";
  map.column_axis = "task scored";
  map.row_labels = labels;
  map.column_labels = labels;
  map.values = matrix;
  map.scale_min = 0;
  map.scale_max = 1;
  map.scale_label = "test score (0 to 1)";
  for (size_t i = 0; i < matrix.size(); ++i) map.outlined.push_back({i, i});
  map.outline_label = "the specialist on its own task";
  body += figure(render_heat_map(map), "Test score of each specialist on each task.",
                 matrix_table(labels, matrix, "specialist \xE2\x86\x93 / task \xE2\x86\x92", 3, "Specialist matrix"));
  return section("matrix", "Specialist matrix", body);
}

}  // namespace sg::report
