#include "report/charts.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "report/html.h"

namespace sg::report {

namespace {

// A coordinate or length, one decimal.
std::string px(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.1f", value);
  return buffer;
}

std::string title_element(const std::string& text) { return "<title>" + escape(text) + "</title>"; }

// Opening tag of a chart: its size, its accessible name, and its tooltip.
std::string svg_open(double width, double height, const std::string& title) {
  return "<svg class=\"chart\" width=\"" + px(width) + "\" height=\"" + px(height) + "\" viewBox=\"0 0 " + px(width) +
         " " + px(height) + "\" role=\"img\" aria-label=\"" + escape(title) + "\">" + title_element(title);
}

std::string text_element(double x, double y, const std::string& text, const std::string& anchor,
                         const std::string& extra = "") {
  return "<text x=\"" + px(x) + "\" y=\"" + px(y) + "\" text-anchor=\"" + anchor + "\"" + extra + ">" + escape(text) +
         "</text>";
}

std::string line_element(double x1, double y1, double x2, double y2, const std::string& stroke, double width = 1,
                         const std::string& dash = "") {
  std::string out = "<line x1=\"" + px(x1) + "\" y1=\"" + px(y1) + "\" x2=\"" + px(x2) + "\" y2=\"" + px(y2) +
                    "\" stroke=\"" + escape(stroke) + "\" stroke-width=\"" + px(width) + "\"";
  if (!dash.empty()) out += " stroke-dasharray=\"" + escape(dash) + "\"";
  return out + "/>";
}

// Roughly `count` round ticks (1, 2 or 5 × 10^k apart) covering [lo, hi].
std::vector<double> nice_ticks(double lo, double hi, int count) {
  if (!(hi > lo)) hi = lo + 1;
  const double raw = (hi - lo) / std::max(1, count);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude;
  for (double factor : {1.0, 2.0, 2.5, 5.0, 10.0}) {
    step = factor * magnitude;
    if (raw <= step * 1.0000001) break;
  }
  std::vector<double> ticks;
  const double first = std::floor(lo / step + 1e-9) * step;
  for (double value = first; value <= hi + step * 1e-6 && ticks.size() < 50; value += step) {
    ticks.push_back(std::abs(value) < step * 1e-9 ? 0.0 : value);
  }
  if (ticks.back() < hi - step * 1e-6) ticks.push_back(ticks.back() + step);
  return ticks;
}

// Decimals enough to tell ticks `step` apart.
int tick_decimals(double step) {
  int decimals = 0;
  while (decimals < 6 && std::abs(step * std::pow(10.0, decimals) - std::round(step * std::pow(10.0, decimals))) > 1e-6) {
    ++decimals;
  }
  return decimals;
}

std::string tick_label(double value, double step, bool percent) {
  if (percent) return format_percent(value);
  return format_number(value, tick_decimals(step));
}

// Rough width of a label in 11px sans-serif.
double text_width(const std::string& text, double font_px = 11) {
  size_t glyphs = 0;
  for (char c : text) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++glyphs;  // count UTF-8 lead bytes only
  }
  return static_cast<double>(glyphs) * font_px * 0.6;
}

struct Rgb {
  double r, g, b;
};

}  // namespace

std::string scale_colour(double t) {
  // ColorBrewer "Blues" (sequential, colour-blind safe, prints in grey scale).
  static const Rgb kStops[] = {{247, 251, 255}, {198, 219, 239}, {107, 174, 214}, {33, 113, 181}, {8, 48, 107}};
  if (!std::isfinite(t)) t = 0;
  t = std::clamp(t, 0.0, 1.0);
  const double position = t * 4.0;
  const int index = std::min(3, static_cast<int>(position));
  const double mix = position - index;
  const Rgb& a = kStops[index];
  const Rgb& b = kStops[index + 1];
  char buffer[16];
  std::snprintf(buffer, sizeof(buffer), "#%02x%02x%02x", static_cast<int>(std::lround(a.r + (b.r - a.r) * mix)),
                static_cast<int>(std::lround(a.g + (b.g - a.g) * mix)),
                static_cast<int>(std::lround(a.b + (b.b - a.b) * mix)));
  return buffer;
}

std::string render_line_chart(const LineChart& chart) {
  const double left = 64, right = 180, top = 20, bottom = 56, plot_width = 460, plot_height = 280;
  const double width = left + plot_width + right, height = top + plot_height + bottom;

  // Domains.
  std::vector<double> xs, ys;
  for (const ChartSeries& series : chart.series) {
    for (const ChartPoint& point : series.points) {
      if (!std::isfinite(point.x) || !std::isfinite(point.y) || (chart.log_x && point.x <= 0)) continue;
      xs.push_back(point.x);
      ys.push_back(point.y);
    }
  }
  for (const ReferenceLine& reference : chart.references) {
    if (std::isfinite(reference.y)) ys.push_back(reference.y);
  }
  for (const VerticalMarker& marker : chart.markers) {
    if (std::isfinite(marker.x) && (!chart.log_x || marker.x > 0)) xs.push_back(marker.x);
  }
  double x_lo = xs.empty() ? (chart.log_x ? 0.001 : 0.0) : *std::min_element(xs.begin(), xs.end());
  double x_hi = xs.empty() ? 1.0 : *std::max_element(xs.begin(), xs.end());
  std::vector<double> x_ticks;
  if (chart.log_x) {
    x_lo = std::pow(10.0, std::floor(std::log10(x_lo) + 1e-9));
    x_hi = std::pow(10.0, std::ceil(std::log10(x_hi) - 1e-9));
    if (x_hi <= x_lo) x_hi = x_lo * 10;
    for (double decade = x_lo; decade <= x_hi * 1.0001; decade *= 10) x_ticks.push_back(decade);
  } else {
    x_ticks = nice_ticks(x_lo, x_hi, 6);
    x_lo = x_ticks.front();
    x_hi = x_ticks.back();
  }
  double y_lo = chart.y_min.value_or(0.0), y_hi = chart.y_max.value_or(1.0);
  for (double y : ys) {
    if (!chart.y_min) y_lo = std::min(y_lo, y);
    if (!chart.y_max) y_hi = std::max(y_hi, y);
  }
  const std::vector<double> y_ticks = nice_ticks(y_lo, y_hi, 5);
  y_lo = y_ticks.front();
  y_hi = y_ticks.back();
  const double y_step = y_ticks.size() > 1 ? y_ticks[1] - y_ticks[0] : 1;

  auto to_x = [&](double x) {
    const double t = chart.log_x ? (std::log10(x) - std::log10(x_lo)) / (std::log10(x_hi) - std::log10(x_lo))
                                 : (x - x_lo) / (x_hi - x_lo);
    return left + t * plot_width;
  };
  auto to_y = [&](double y) { return top + plot_height - (y - y_lo) / (y_hi - y_lo) * plot_height; };

  std::string svg = svg_open(width, height, chart.title);
  svg += "<rect x=\"" + px(left) + "\" y=\"" + px(top) + "\" width=\"" + px(plot_width) + "\" height=\"" +
         px(plot_height) + "\" fill=\"#ffffff\" stroke=\"#d0d0d0\"/>";
  // Grid, ticks and tick labels.
  for (double y : y_ticks) {
    const double cy = to_y(y);
    svg += line_element(left, cy, left + plot_width, cy, "#e6e6e6");
    svg += line_element(left - 5, cy, left, cy, "#333333");
    svg += text_element(left - 8, cy + 4, tick_label(y, y_step, false), "end", " class=\"tick\"");
  }
  const double x_step = x_ticks.size() > 1 ? x_ticks[1] - x_ticks[0] : 1;
  for (double x : x_ticks) {
    const double cx = to_x(x);
    svg += line_element(cx, top, cx, top + plot_height, "#e6e6e6");
    svg += line_element(cx, top + plot_height, cx, top + plot_height + 6, "#333333");
    svg += text_element(cx, top + plot_height + 19, tick_label(x, chart.log_x ? x : x_step, chart.x_as_percent),
                        "middle", " class=\"tick\"");
  }
  if (chart.log_x) {  // minor ticks at 2..9 × each decade
    for (double decade = x_lo; decade < x_hi * 0.9999; decade *= 10) {
      for (int k = 2; k <= 9; ++k) {
        const double cx = to_x(decade * k);
        svg += line_element(cx, top + plot_height, cx, top + plot_height + 3, "#333333");
      }
    }
  }
  svg += line_element(left, top, left, top + plot_height, "#333333");
  svg += line_element(left, top + plot_height, left + plot_width, top + plot_height, "#333333");
  svg += text_element(left + plot_width / 2, height - 12, chart.x_label, "middle", " class=\"axis-label\"");
  svg += "<text class=\"axis-label\" text-anchor=\"middle\" transform=\"translate(16," + px(top + plot_height / 2) +
         ") rotate(-90)\">" + escape(chart.y_label) + "</text>";

  // Reference lines and markers under the data.
  for (const ReferenceLine& reference : chart.references) {
    if (!std::isfinite(reference.y)) continue;
    const double cy = to_y(reference.y);
    svg += "<g>" + title_element(reference.name + ": " + format_number(reference.y, 3)) +
           line_element(left, cy, left + plot_width, cy, reference.colour, 1.5, reference.dash) + "</g>";
  }
  for (const VerticalMarker& marker : chart.markers) {
    if (!std::isfinite(marker.x) || (chart.log_x && marker.x <= 0)) continue;
    const double cx = to_x(marker.x);
    svg += "<g>" + title_element(marker.name) + line_element(cx, top, cx, top + plot_height, marker.colour, 1.5, "1 3") +
           text_element(cx + 5, top + plot_height - 8, marker.name, "start",
                        " class=\"marker-label\" paint-order=\"stroke\" stroke=\"#ffffff\" stroke-width=\"4\"") + "</g>";
  }
  // Series: a polyline through the points (sorted by x) and a dot per point carrying its tooltip.
  for (const ChartSeries& series : chart.series) {
    std::vector<ChartPoint> points;
    for (const ChartPoint& point : series.points) {
      if (std::isfinite(point.x) && std::isfinite(point.y) && (!chart.log_x || point.x > 0)) points.push_back(point);
    }
    std::stable_sort(points.begin(), points.end(), [](const ChartPoint& a, const ChartPoint& b) { return a.x < b.x; });
    if (points.empty()) continue;
    svg += "<g>";
    std::string coordinates;
    for (const ChartPoint& point : points) coordinates += px(to_x(point.x)) + "," + px(to_y(point.y)) + " ";
    coordinates.pop_back();
    svg += "<polyline fill=\"none\" stroke=\"" + escape(series.colour) + "\" stroke-width=\"2\"";
    if (!series.dash.empty()) svg += " stroke-dasharray=\"" + escape(series.dash) + "\"";
    svg += " points=\"" + coordinates + "\">" + title_element(series.name) + "</polyline>";
    for (const ChartPoint& point : points) {
      svg += "<circle cx=\"" + px(to_x(point.x)) + "\" cy=\"" + px(to_y(point.y)) + "\" r=\"3.5\" fill=\"" +
             escape(series.colour) + "\" stroke=\"#ffffff\" stroke-width=\"1\">" +
             title_element(point.tooltip.empty() ? series.name + ": " + format_number(point.y, 3) : point.tooltip) +
             "</circle>";
    }
    svg += "</g>";
  }
  // Legend, right of the plot.
  double legend_y = top + 10;
  const double legend_x = left + plot_width + 16;
  for (const ChartSeries& series : chart.series) {
    svg += line_element(legend_x, legend_y, legend_x + 22, legend_y, series.colour, 2, series.dash);
    svg += "<circle cx=\"" + px(legend_x + 11) + "\" cy=\"" + px(legend_y) + "\" r=\"3.5\" fill=\"" +
           escape(series.colour) + "\"/>";
    svg += text_element(legend_x + 28, legend_y + 4, series.name, "start", " class=\"legend\"");
    legend_y += 18;
  }
  for (const ReferenceLine& reference : chart.references) {
    if (!std::isfinite(reference.y)) continue;
    svg += line_element(legend_x, legend_y, legend_x + 22, legend_y, reference.colour, 1.5, reference.dash);
    svg += text_element(legend_x + 28, legend_y + 4, reference.name, "start", " class=\"legend\"");
    legend_y += 18;
  }
  return svg + "</svg>";
}

std::string render_heat_map(const HeatMap& map) {
  const size_t rows = map.row_labels.size();
  const size_t columns = map.column_labels.size();
  double longest_column = 0, longest_row = text_width(map.row_axis);
  for (const std::string& label : map.column_labels) longest_column = std::max(longest_column, text_width(label));
  for (const std::string& label : map.row_labels) longest_row = std::max(longest_row, text_width(label));
  const double cell_width = std::clamp(560.0 / std::max<size_t>(1, columns), 40.0, 72.0);
  const double cell_height = 26;
  const bool rotate_columns = longest_column > cell_width - 6;
  const double left = std::clamp(longest_row + 16, 60.0, 260.0);
  const double top = 22 + (rotate_columns ? longest_column * 0.72 + 10 : 18);
  const double grid_width = cell_width * static_cast<double>(columns);
  const double grid_height = cell_height * static_cast<double>(rows);
  const double legend_top = top + grid_height + 22;
  const double legend_width = 220;
  const double width = std::max({left + grid_width + (rotate_columns ? longest_column * 0.77 : 0.0) + 24,
                                 left + legend_width + 40 + (map.outline_label.empty() ? 0 : text_width(map.outline_label, 12) + 40),
                                 left + text_width(map.scale_label, 12) + 24});
  const double height = legend_top + 52;

  std::string svg = svg_open(width, height, map.title);
  svg += text_element(left + grid_width / 2, 13, map.column_axis, "middle", " class=\"axis-label\"");
  svg += text_element(left - 8, top - 6, map.row_axis, "end", " class=\"axis-label\"");
  for (size_t c = 0; c < columns; ++c) {
    const double cx = left + cell_width * (static_cast<double>(c) + 0.5);
    if (rotate_columns) {
      svg += "<text class=\"tick\" text-anchor=\"start\" transform=\"translate(" + px(cx - 2) + "," + px(top - 6) +
             ") rotate(-40)\">" + escape(map.column_labels[c]) + "</text>";
    } else {
      svg += text_element(cx, top - 6, map.column_labels[c], "middle", " class=\"tick\"");
    }
  }
  const double range = map.scale_max - map.scale_min;
  auto normalised = [&](double value) { return range > 0 ? (value - map.scale_min) / range : 1.0; };
  auto cell_text = [&](double value) {
    if (map.percent_values) return format_percent(value);
    if (map.decimals < 0) return format_count(static_cast<int64_t>(std::llround(value)));
    return format_number(value, map.decimals);
  };
  for (size_t r = 0; r < rows; ++r) {
    const double y = top + cell_height * static_cast<double>(r);
    svg += text_element(left - 8, y + cell_height / 2 + 4, map.row_labels[r], "end", " class=\"tick\"");
    const std::vector<std::optional<double>> empty;
    const std::vector<std::optional<double>>& row = r < map.values.size() ? map.values[r] : empty;
    const bool spanning = row.size() == 1 && columns > 1;
    const size_t cells = spanning ? 1 : columns;
    for (size_t c = 0; c < cells; ++c) {
      const double x = left + cell_width * static_cast<double>(c);
      const double w = spanning ? grid_width : cell_width;
      const std::optional<double> value = c < row.size() ? row[c] : std::nullopt;
      const bool present = value && std::isfinite(*value);
      const double t = present ? std::clamp(normalised(*value), 0.0, 1.0) : 0.0;
      const std::string fill = present ? scale_colour(t) : "#eeeeee";
      std::string tooltip = r < map.tooltips.size() && c < map.tooltips[r].size() ? map.tooltips[r][c] : "";
      if (tooltip.empty()) {
        tooltip = map.row_labels[r] + (spanning ? "" : " / " + map.column_labels[c]) + ": " +
                  (present ? cell_text(*value) : std::string("no value"));
      }
      svg += "<g><rect x=\"" + px(x) + "\" y=\"" + px(y) + "\" width=\"" + px(w) + "\" height=\"" + px(cell_height) +
             "\" fill=\"" + fill + "\" stroke=\"#ffffff\" stroke-width=\"1\">" + title_element(tooltip) + "</rect>";
      svg += text_element(x + w / 2, y + cell_height / 2 + 4, present ? cell_text(*value) : std::string(kMissing),
                          "middle", std::string(" class=\"cell\" style=\"fill:") + (t > 0.55 ? "#ffffff" : "#1a1a1a") + "\"");
      svg += "</g>";
    }
  }
  for (const auto& [r, c] : map.outlined) {
    if (r >= rows || c >= columns) continue;
    svg += "<rect x=\"" + px(left + cell_width * static_cast<double>(c) + 1.5) + "\" y=\"" +
           px(top + cell_height * static_cast<double>(r) + 1.5) + "\" width=\"" + px(cell_width - 3) + "\" height=\"" +
           px(cell_height - 3) + "\" fill=\"none\" stroke=\"#D55E00\" stroke-width=\"2.5\"/>";
  }
  // Colour-scale legend: a stepped bar with ticks, and what the colour means.
  const int steps = 44;
  for (int i = 0; i < steps; ++i) {
    svg += "<rect x=\"" + px(left + legend_width * i / steps) + "\" y=\"" + px(legend_top) + "\" width=\"" +
           px(legend_width / steps + 0.6) + "\" height=\"12\" fill=\"" + scale_colour((i + 0.5) / steps) + "\"/>";
  }
  svg += "<rect x=\"" + px(left) + "\" y=\"" + px(legend_top) + "\" width=\"" + px(legend_width) +
         "\" height=\"12\" fill=\"none\" stroke=\"#999999\"/>";
  if (range > 0) {
    const std::vector<double> ticks = nice_ticks(map.scale_min, map.scale_max, 4);
    const double step = ticks.size() > 1 ? ticks[1] - ticks[0] : range;
    for (double tick : ticks) {
      if (tick < map.scale_min - 1e-12 || tick > map.scale_max + 1e-12) continue;
      const double cx = left + legend_width * normalised(tick);
      svg += line_element(cx, legend_top + 12, cx, legend_top + 16, "#333333");
      svg += text_element(cx, legend_top + 27, map.percent_values ? format_percent(tick) : tick_label(tick, step, false),
                          "middle", " class=\"tick\"");
    }
  }
  svg += text_element(left, legend_top + 44, map.scale_label, "start", " class=\"legend\"");
  if (!map.outline_label.empty()) {
    const double ox = left + legend_width + 24;
    svg += "<rect x=\"" + px(ox) + "\" y=\"" + px(legend_top) + "\" width=\"14\" height=\"12\" fill=\"none\" "
           "stroke=\"#D55E00\" stroke-width=\"2.5\"/>";
    svg += text_element(ox + 20, legend_top + 10, map.outline_label, "start", " class=\"legend\"");
  }
  return svg + "</svg>";
}

std::string render_bar_chart(const BarChart& chart) {
  const size_t categories = chart.categories.size();
  const size_t series_count = std::max<size_t>(1, chart.series.size());
  const double bar_width = 14, group_gap = 18;
  const double group_width = bar_width * static_cast<double>(series_count) + group_gap;
  double longest = 0;
  for (const std::string& label : chart.categories) longest = std::max(longest, text_width(label));
  const bool rotate = longest > group_width - 4;
  const double left = 64, top = 36, plot_height = 220;
  const double plot_width = std::max(320.0, group_width * static_cast<double>(categories));
  const double bottom = rotate ? longest * 0.6 + 36 : 40;
  double legend_width = 0;
  for (const BarSeries& series : chart.series) legend_width += text_width(series.name) + 36;
  const double width = left + std::max(plot_width, legend_width) + 24;
  const double height = top + plot_height + bottom;

  double lo = 0, hi = 0;
  for (const BarSeries& series : chart.series) {
    for (const std::optional<double>& value : series.values) {
      if (value && std::isfinite(*value)) {
        lo = std::min(lo, *value);
        hi = std::max(hi, *value);
      }
    }
  }
  if (hi - lo < 1e-12) hi = lo + 1;
  const std::vector<double> ticks = nice_ticks(lo, hi, 5);
  lo = ticks.front();
  hi = ticks.back();
  const double step = ticks.size() > 1 ? ticks[1] - ticks[0] : 1;
  auto to_y = [&](double y) { return top + plot_height - (y - lo) / (hi - lo) * plot_height; };

  std::string svg = svg_open(width, height, chart.title);
  for (double tick : ticks) {
    const double cy = to_y(tick);
    svg += line_element(left, cy, left + plot_width, cy, tick == 0 ? "#999999" : "#e6e6e6");
    svg += line_element(left - 5, cy, left, cy, "#333333");
    svg += text_element(left - 8, cy + 4, tick_label(tick, step, false), "end", " class=\"tick\"");
  }
  svg += line_element(left, top, left, top + plot_height, "#333333");
  svg += line_element(left, top + plot_height, left + plot_width, top + plot_height, "#333333");
  svg += "<text class=\"axis-label\" text-anchor=\"middle\" transform=\"translate(16," + px(top + plot_height / 2) +
         ") rotate(-90)\">" + escape(chart.y_label) + "</text>";
  const double zero = to_y(0);
  for (size_t c = 0; c < categories; ++c) {
    const double group_left = left + group_width * static_cast<double>(c) + group_gap / 2;
    const double centre = group_left + bar_width * static_cast<double>(series_count) / 2;
    svg += line_element(centre, top + plot_height, centre, top + plot_height + 5, "#333333");
    if (rotate) {
      svg += "<text class=\"tick\" text-anchor=\"end\" transform=\"translate(" + px(centre + 3) + "," +
             px(top + plot_height + 14) + ") rotate(-35)\">" + escape(chart.categories[c]) + "</text>";
    } else {
      svg += text_element(centre, top + plot_height + 18, chart.categories[c], "middle", " class=\"tick\"");
    }
    for (size_t s = 0; s < chart.series.size(); ++s) {
      const BarSeries& series = chart.series[s];
      if (c >= series.values.size() || !series.values[c] || !std::isfinite(*series.values[c])) continue;
      const double value = *series.values[c];
      const double y = std::min(zero, to_y(value));
      const double h = std::max(0.5, std::abs(to_y(value) - zero));
      svg += "<rect x=\"" + px(group_left + bar_width * static_cast<double>(s)) + "\" y=\"" + px(y) + "\" width=\"" +
             px(bar_width - 2) + "\" height=\"" + px(h) + "\" fill=\"" + escape(series.colour) + "\">" +
             title_element(chart.categories[c] + ", " + series.name + ": " + format_number(value, chart.decimals)) +
             "</rect>";
    }
  }
  double legend_x = left;
  for (const BarSeries& series : chart.series) {
    svg += "<rect x=\"" + px(legend_x) + "\" y=\"10\" width=\"12\" height=\"12\" fill=\"" + escape(series.colour) + "\"/>";
    svg += text_element(legend_x + 17, 20, series.name, "start", " class=\"legend\"");
    legend_x += text_width(series.name) + 36;
  }
  return svg + "</svg>";
}

}  // namespace sg::report
