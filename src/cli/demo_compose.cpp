#include "cli/demo_compose.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "cli/localize_runs.h"
#include "compose/merge.h"
#include "compose/stitch.h"
#include "data/batching.h"
#include "eval/evaluator.h"
#include "library/library.h"
#include "model/causal_lm.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/log.h"

namespace sg::cli {

namespace {

// One merged model of the table: a method, its input kind and its options.
struct MergeRecipe {
  compose::MergeMethod method;
  const char* input;  // "full" (the specialists' checkpoints) or "graft" (their skill files)
  double density;     // ties, dare_*
};

// mergekit's usual settings: weights 1, lambda 1; TIES and DARE keep half of each delta. sparse_union
// only makes sense for sparse inputs; linear averages the models (each task keeps 1/n of its delta).
const MergeRecipe kMergeRecipes[] = {
    {compose::MergeMethod::kLinear, "full", 1.0},          {compose::MergeMethod::kTaskArithmetic, "full", 1.0},
    {compose::MergeMethod::kTies, "full", 0.5},            {compose::MergeMethod::kDareLinear, "full", 0.5},
    {compose::MergeMethod::kDareTies, "full", 0.5},        {compose::MergeMethod::kLinear, "graft", 1.0},
    {compose::MergeMethod::kTaskArithmetic, "graft", 1.0}, {compose::MergeMethod::kTies, "graft", 0.5},
    {compose::MergeMethod::kDareLinear, "graft", 0.5},     {compose::MergeMethod::kDareTies, "graft", 0.5},
    {compose::MergeMethod::kSparseUnion, "graft", 1.0},
};

std::vector<data::Example> first_examples(const std::vector<data::Example>& examples, int64_t max_examples) {
  if (max_examples <= 0 || static_cast<int64_t>(examples.size()) <= max_examples) return examples;
  return std::vector<data::Example>(examples.begin(), examples.begin() + max_examples);
}

// Pearson correlation; NaN with fewer than 3 points or no spread.
double correlation(const std::vector<double>& x, const std::vector<double>& y) {
  const size_t n = x.size();
  if (n < 3) return std::nan("");
  double mx = 0, my = 0;
  for (size_t i = 0; i < n; ++i) {
    mx += x[i] / n;
    my += y[i] / n;
  }
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < n; ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  return sxx > 0 && syy > 0 ? sxy / std::sqrt(sxx * syy) : std::nan("");
}

}  // namespace

nlohmann::json library_study(const std::string& library_dir, const std::vector<std::string>& tasks,
                             const std::vector<std::string>& skill_paths) {
  SG_CHECK(tasks.size() == skill_paths.size(), "library_study: " << tasks.size() << " tasks, " << skill_paths.size()
                                                                 << " skill files");
  library::Library lib = library::Library::init(library_dir);
  nlohmann::json ids = nlohmann::json::object();
  int64_t added = 0;
  for (size_t i = 0; i < tasks.size(); ++i) {
    library::AddOptions add;
    add.name = "graft-" + tasks[i];
    add.provenance = {{"command", "skillgraft demo"}, {"inputs", {skill_paths[i]}}};
    const library::AddResult result = lib.add(skill_paths[i], add);
    ids[tasks[i]] = result.entry.id;
    if (result.added) ++added;
  }
  const library::VerifyReport report = lib.verify();
  SG_CHECK(report.ok(), "the demo's skill library at " << library_dir << " failed verify: "
                                                       << report.to_json().dump());
  std::printf("\nskill library %s: %lld entries, %lld verified\n", library_dir.c_str(),
              static_cast<long long>(report.entries), static_cast<long long>(report.verified));
  return {{"dir", library_dir}, {"entries", lib.count()}, {"added", added}, {"verified", report.verified},
          {"ok", report.ok()}, {"ids", ids}};
}

nlohmann::json merge_study(const std::string& base_dir, const std::vector<MergeStudyTask>& tasks,
                           const nlohmann::json& overlap, const MergeStudyOptions& options) {
  model::LoadedModel work = model::load_model_dir(base_dir);
  SG_CHECK(work.tokenizer != nullptr, "the base at " << base_dir << " has no tokenizer");
  io::StateDict weights = model::model_state_dict(*work.model);
  std::vector<std::vector<data::Example>> examples;
  for (const MergeStudyTask& task : tasks) examples.push_back(first_examples(task.task->splits.test, options.max_examples));

  auto score = [&](size_t t) {
    return eval::evaluate(*work.model, *work.tokenizer, examples[t], eval::EvalOptions()).score;
  };
  auto load_weights = [&](const io::StateDict& merged) {
    torch::NoGradGuard no_grad;
    for (const auto& item : merged) weights[item.key()].copy_(item.value());
  };

  // The specialists on the same examples: the denominators. Their weights stay loaded for stitch.
  std::vector<double> specialist(tasks.size());
  nlohmann::json specialist_json = nlohmann::json::object();
  std::vector<io::StateDict> specialist_weights;
  for (size_t t = 0; t < tasks.size(); ++t) {
    specialist_weights.push_back(model::model_state_dict(*model::load_model_dir(tasks[t].specialist_dir).model));
    load_weights(specialist_weights.back());
    specialist[t] = score(t);
    specialist_json[tasks[t].task->name] = specialist[t];
  }
  // mean over tasks of merged / specialist (a task whose specialist scores 0 is left out).
  auto normalized_of = [&](const std::vector<size_t>& which, const std::vector<double>& scores) {
    double sum = 0;
    int64_t n = 0;
    for (size_t i = 0; i < which.size(); ++i) {
      if (specialist[which[i]] <= 0) continue;
      sum += scores[i] / specialist[which[i]];
      ++n;
    }
    return n > 0 ? sum / static_cast<double>(n) : std::nan("");
  };
  auto merge_and_score = [&](compose::MergeMethod method, const std::string& input, double density,
                             const std::vector<size_t>& which, std::vector<double>* scores) {
    compose::MergeSpec spec;
    spec.base = base_dir;
    spec.options.method = method;
    spec.options.density = density;
    spec.options.seed = options.seed;
    for (size_t t : which) {
      compose::MergeInputSpec one;
      one.path = input == "full" ? tasks[t].specialist_dir : tasks[t].skill_path;
      spec.inputs.push_back(one);
    }
    load_weights(compose::merge_to_state_dict(spec));
    scores->clear();
    for (size_t t : which) scores->push_back(score(t));
  };

  std::vector<size_t> all(tasks.size());
  for (size_t t = 0; t < tasks.size(); ++t) all[t] = t;
  nlohmann::json rows = nlohmann::json::array();
  nlohmann::json best = nlohmann::json::object();
  double best_normalized = -1;
  std::printf("\nmerging all %zu skills into one model (test split%s; normalized = mean of merged / specialist)\n",
              tasks.size(), options.max_examples > 0 ? (", first " + std::to_string(options.max_examples) + " examples").c_str() : "");
  std::printf("%-16s %-6s", "method", "input");
  for (const MergeStudyTask& task : tasks) std::printf(" %12s", task.task->name.c_str());
  std::printf(" %10s\n%-23s", "normalized", "specialists");
  for (double value : specialist) std::printf(" %12.3f", value);
  std::printf("\n");
  for (const MergeRecipe& recipe : kMergeRecipes) {
    const auto start = std::chrono::steady_clock::now();
    const std::string method = compose::merge_method_name(recipe.method);
    util::log_info("merge: " + method + " of the " + recipe.input + " inputs");
    std::vector<double> scores;
    merge_and_score(recipe.method, recipe.input, recipe.density, all, &scores);
    const double normalized = normalized_of(all, scores);
    nlohmann::json score_json = nlohmann::json::object();
    std::printf("%-16s %-6s", method.c_str(), recipe.input);
    for (size_t t = 0; t < tasks.size(); ++t) {
      score_json[tasks[t].task->name] = scores[t];
      std::printf(" %12.3f", scores[t]);
    }
    std::printf(" %10.3f\n", normalized);
    std::fflush(stdout);
    const bool uses_density = recipe.method == compose::MergeMethod::kTies ||
                              recipe.method == compose::MergeMethod::kDareLinear ||
                              recipe.method == compose::MergeMethod::kDareTies;
    nlohmann::json settings = {{"weights", 1.0}, {"lambda", 1.0}};
    if (uses_density) settings["density"] = recipe.density;
    if (recipe.method == compose::MergeMethod::kSparseUnion) settings["overlap"] = "mean";
    rows.push_back({{"method", method},
                    {"input", recipe.input},
                    {"options", settings},
                    {"scores", score_json},
                    {"normalized", number_or_null(normalized)},
                    {"seconds", util::seconds_since(start)}});
    if (std::isfinite(normalized) && normalized > best_normalized) {
      best_normalized = normalized;
      best = {{"method", method}, {"input", recipe.input}, {"normalized", normalized}};
    }
  }

  // stitch: each specialist's mask learned on the train splits so that base + the masked deltas
  // holds every task (validated on the first 100 validation examples of each).
  if (options.stitch_steps > 0) {
    const auto start = std::chrono::steady_clock::now();
    util::log_info("merge: stitch of the full inputs");
    std::vector<const io::StateDict*> input_pointers;
    std::vector<std::vector<data::EncodedSequence>> train(tasks.size());
    std::vector<std::vector<data::Example>> validation(tasks.size());
    std::vector<compose::StitchTask> stitch_tasks;
    for (size_t t = 0; t < tasks.size(); ++t) {
      train[t] = data::encode_for_training(*work.tokenizer, tasks[t].task->splits.train);
      validation[t] = data::validation_examples(*tasks[t].task, 100);
      compose::StitchTask task;
      task.name = tasks[t].task->name;
      task.train = &train[t];
      task.validate = [&, t](model::CausalLM& model) {
        return eval::evaluate(model, *work.tokenizer, validation[t], eval::EvalOptions()).score;
      };
      stitch_tasks.push_back(std::move(task));
    }
    for (const io::StateDict& input : specialist_weights) input_pointers.push_back(&input);
    compose::StitchOptions stitch_options;
    stitch_options.fraction = options.stitch_fraction;
    stitch_options.steps = options.stitch_steps;
    stitch_options.seed = options.seed;
    const io::StateDict base_weights = model::model_state_dict(*model::load_model_dir(base_dir).model);
    const compose::StitchResult stitched =
        compose::stitch(*work.model, base_weights, input_pointers, stitch_tasks, stitch_options);
    if (!options.stitch_out.empty()) model::save_model_dir(options.stitch_out, *work.model, work.tokenizer.get());
    std::vector<double> scores;
    for (size_t t = 0; t < tasks.size(); ++t) scores.push_back(score(t));
    const double normalized = normalized_of(all, scores);
    nlohmann::json score_json = nlohmann::json::object(), validation_json = nlohmann::json::object();
    std::printf("%-16s %-6s", "stitch", "full");
    for (size_t t = 0; t < tasks.size(); ++t) {
      score_json[tasks[t].task->name] = scores[t];
      validation_json[tasks[t].task->name] = stitched.validation[t];
      std::printf(" %12.3f", scores[t]);
    }
    std::printf(" %10.3f   (masks of %.0f%% learned on the train splits, best at step %lld of %lld)\n", normalized,
                options.stitch_fraction * 100, static_cast<long long>(stitched.best_step),
                static_cast<long long>(options.stitch_steps));
    std::fflush(stdout);
    rows.push_back({{"method", "stitch"},
                    {"input", "full"},
                    {"options", {{"fraction", options.stitch_fraction},
                                 {"steps", options.stitch_steps},
                                 {"lr", stitch_options.lr},
                                 {"batch_size", stitch_options.batch_size}}},
                    {"scores", score_json},
                    {"normalized", number_or_null(normalized)},
                    {"validation", validation_json},
                    {"validation_normalized", stitched.best_normalized},
                    {"best_step", stitched.best_step},
                    {"out_dir", options.stitch_out},
                    {"seconds", util::seconds_since(start)}});
    if (std::isfinite(normalized) && normalized > best_normalized) {
      best_normalized = normalized;
      best = {{"method", "stitch"}, {"input", "full"}, {"normalized", normalized}};
    }
  }

  // Every pair merged alone: does the grafts' overlap predict the cost (1 - normalized)?
  nlohmann::json pairs = nlohmann::json::array();
  std::vector<double> jaccards, costs;
  if (options.pairs && tasks.size() >= 2) {
    std::printf("\npairs merged by task_arithmetic of the full deltas: cost = 1 - normalized\n%-28s %8s %8s\n",
                "pair", "jaccard", "cost");
    for (size_t i = 0; i < tasks.size(); ++i) {
      for (size_t j = i + 1; j < tasks.size(); ++j) {
        std::vector<double> scores;
        merge_and_score(compose::MergeMethod::kTaskArithmetic, "full", 1.0, {i, j}, &scores);
        const double normalized = normalized_of({i, j}, scores);
        double jaccard = std::nan("");
        if (overlap.contains("jaccard") && overlap["jaccard"].is_array() && overlap["jaccard"].size() > j) {
          jaccard = overlap["jaccard"][i][j].get<double>();
        }
        const std::string label = tasks[i].task->name + "+" + tasks[j].task->name;
        std::printf("%-28s %8.3f %8.3f\n", label.c_str(), jaccard, 1 - normalized);
        pairs.push_back({{"tasks", {tasks[i].task->name, tasks[j].task->name}},
                         {"jaccard", number_or_null(jaccard)},
                         {"scores", {scores[0], scores[1]}},
                         {"normalized", number_or_null(normalized)},
                         {"cost", number_or_null(1 - normalized)}});
        if (std::isfinite(jaccard) && std::isfinite(normalized)) {
          jaccards.push_back(jaccard);
          costs.push_back(1 - normalized);
        }
      }
    }
    std::printf("correlation of jaccard and cost over %zu pairs: %.3f\n", jaccards.size(), correlation(jaccards, costs));
  }
  return {{"max_examples", options.max_examples},
          {"specialists", specialist_json},
          {"merge", rows},
          {"best", best},
          {"pairs", pairs},
          {"pairs_correlation", number_or_null(correlation(jaccards, costs))}};
}

}  // namespace sg::cli
