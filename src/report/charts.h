// Inline SVG charts for the report: line chart (optionally log x), heat map with a colour-scale
// legend, grouped bar chart. Each returns one self-contained <svg> element: no ids, no external
// references, no xmlns (inline SVG in HTML needs none), every label escaped; tooltips are <title>.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace sg::report {

struct ChartPoint {
  double x = 0;
  double y = 0;
  std::string tooltip;  // plain text, escaped by the renderer
};

struct ChartSeries {
  std::string name;
  std::string colour;  // CSS colour, e.g. "#0072B2"
  std::vector<ChartPoint> points;
  std::string dash;  // stroke-dasharray, empty for solid
};

// A horizontal line across the plot (fine-tuned score, base score).
struct ReferenceLine {
  std::string name;
  double y = 0;
  std::string colour;
  std::string dash;
};

// A vertical line (e.g. the budget reaching 90% recovery).
struct VerticalMarker {
  std::string name;
  double x = 0;
  std::string colour;
};

struct LineChart {
  std::string title;  // the chart's accessible name and tooltip
  std::string x_label, y_label;
  bool log_x = false;            // x values must then be > 0 (others are dropped)
  bool x_as_percent = false;     // tick labels as percentages (0.01 -> 1%)
  std::optional<double> y_min, y_max;  // default: 0 .. max(1, data)
  std::vector<ChartSeries> series;
  std::vector<ReferenceLine> references;
  std::vector<VerticalMarker> markers;
};
std::string render_line_chart(const LineChart& chart);

// Rows × columns of cells coloured by value on a sequential scale from scale_min to scale_max.
// A row with exactly one value and more than one column is drawn as one cell spanning the row
// (e.g. the embeddings, which belong to no layer). A missing value is a grey cell reading "—".
struct HeatMap {
  std::string title;
  std::string row_axis, column_axis;  // axis titles
  std::vector<std::string> row_labels, column_labels;
  std::vector<std::vector<std::optional<double>>> values;
  std::vector<std::vector<std::string>> tooltips;  // same shape as values; may be empty
  double scale_min = 0, scale_max = 1;             // values outside are clamped to the ends
  std::string scale_label;                         // what the colour means, under the legend
  int decimals = 3;                                // digits of the numbers written in the cells (-1: integers)
  std::vector<std::pair<size_t, size_t>> outlined;  // (row, column) cells to outline
  std::string outline_label;                        // legend text for the outline, if any
  bool percent_values = false;                      // write cell values as percentages
};
std::string render_heat_map(const HeatMap& map);

struct BarSeries {
  std::string name;
  std::string colour;
  std::vector<std::optional<double>> values;  // one per category; missing bars are skipped
};

struct BarChart {
  std::string title;
  std::string y_label;
  std::vector<std::string> categories;
  std::vector<BarSeries> series;
  int decimals = 3;
};
std::string render_bar_chart(const BarChart& chart);

// The sequential colour (light to dark blue) for t in [0, 1], as "#rrggbb".
std::string scale_colour(double t);

}  // namespace sg::report
