// skillgraft neurons: per task and layer, the FFN neurons that stand out on the task against general
// text, their overlap between tasks, and what zeroing them does to every task (with a random control).
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>

#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/localize_runs.h"
#include "cli/train_flags.h"
#include "data/task_source.h"
#include "eval/evaluator.h"
#include "model/causal_lm.h"
#include "skills/neurons.h"
#include "util/error.h"
#include "util/log.h"

namespace sg::cli {

namespace {

// General text: as many positions as 32 TinyStories-length openings, enough for a stable mean on
// models of this size while costing a few forwards.
constexpr int64_t kGeneralSamples = 32;
constexpr int64_t kGeneralTokens = 64;
// Train examples a task's activations are measured on (the test split is kept for the ablation).
constexpr int64_t kActivationExamples = 256;
constexpr uint64_t kSeed = 0;  // generations and random controls


std::string join_counts(const std::vector<int64_t>& counts) {
  std::string text;
  for (int64_t count : counts) text += (text.empty() ? "" : " ") + std::to_string(count);
  return text;
}

}  // namespace

nlohmann::json neuron_study(const std::string& model_dir, const std::string& base_dir, const std::string& reference,
                            const std::vector<data::LoadedTask>& tasks, double coverage, int64_t examples) {
  model::LoadedModel loaded = model::load_model_dir(model_dir);
  SG_CHECK(loaded.tokenizer != nullptr,
           model_dir << " has no tokenizer; hint: neurons reads the tasks' text with it (convert or save the model with one)");
  model::CausalLM& model = *loaded.model;
  const io::Tokenizer& tokenizer = *loaded.tokenizer;
  const int64_t layers = loaded.config.num_layers, width = loaded.config.intermediate_size;
  // BOS + the general text must fit a small model's context.
  const int64_t general_tokens = std::min(kGeneralTokens, loaded.config.max_positions - 1);

  std::vector<skills::MeasuredSequence> general_text;
  if (!reference.empty()) {
    general_text = skills::reference_sequences(reference, tokenizer, kGeneralSamples, general_tokens);
  } else if (base_dir.empty() || base_dir == model_dir) {
    general_text = skills::generated_sequences(model, tokenizer, tokenizer, kGeneralSamples, general_tokens, kSeed);
  } else {
    model::LoadedModel base = model::load_model_dir(base_dir);
    SG_CHECK(base.tokenizer != nullptr, base_dir << " has no tokenizer; hint: --base writes the general text with it");
    general_text = skills::generated_sequences(*base.model, *base.tokenizer, tokenizer, kGeneralSamples, general_tokens, kSeed);
  }
  const skills::NeuronActivations general = skills::mean_ffn_activations(model, general_text);
  util::log_info("general text: " + std::to_string(general.positions) + " positions");

  std::vector<skills::NeuronSets> sets;
  for (const data::LoadedTask& task : tasks) {
    const skills::NeuronActivations task_activations =
        skills::mean_ffn_activations(model, skills::answer_sequences(tokenizer, task.splits.train, kActivationExamples));
    sets.push_back(skills::task_neuron_sets(task_activations, general, coverage));
  }

  eval::EvalOptions eval_options;
  eval_options.max_examples = examples;
  const skills::TaskMeasureFn measure = [&](model::CausalLM& m, size_t t) {
    const eval::EvalResult result = eval::evaluate(m, tokenizer, tasks[t].splits.test, eval_options);
    return skills::TaskMeasure{result.score, result.loss};
  };
  const skills::AblationResult ablation = skills::run_ablations(model, sets, width, kSeed, measure);

  const size_t T = tasks.size();
  nlohmann::json per_task = nlohmann::json::object();
  nlohmann::json task_names = nlohmann::json::array();
  for (size_t target = 0; target < T; ++target) {
    const data::LoadedTask& task = tasks[target];
    task_names.push_back(task.name);
    std::vector<int64_t> counts;
    int64_t total = 0;
    for (const auto& layer : sets[target]) {
      counts.push_back(static_cast<int64_t>(layer.size()));
      total += counts.back();
    }
    nlohmann::json ablated_scores = nlohmann::json::object(), ablated_losses = nlohmann::json::object();
    double others_drop = 0, others_loss_increase = 0;
    for (size_t t = 0; t < T; ++t) {
      ablated_scores[tasks[t].name] = ablation.ablated[target][t].score;
      ablated_losses[tasks[t].name] = ablation.ablated[target][t].loss;
      if (t == target) continue;
      others_drop += ablation.intact[t].score - ablation.ablated[target][t].score;
      others_loss_increase += ablation.ablated[target][t].loss - ablation.intact[t].loss;
    }
    // With one task there are no others: NaN, written as null.
    const double others = static_cast<double>(T - 1);
    others_drop = T > 1 ? others_drop / others : std::nan("");
    others_loss_increase = T > 1 ? others_loss_increase / others : std::nan("");
    const skills::TaskMeasure& intact = ablation.intact[target];
    const double target_drop = intact.score - ablation.ablated[target][target].score;
    const double random_drop = intact.score - ablation.random_control[target].score;
    // Scores of a small model on a task it was not taught are often 0 before and after; the
    // teacher-forced loss on the answers still shows what the ablation removed.
    per_task[task.name] = {{"per_layer", counts},
                           {"neurons", sets[target]},
                           {"total", total},
                           {"metric", task.metric},
                           {"score", intact.score},
                           {"ablated_scores", ablated_scores},
                           {"target_drop", target_drop},
                           {"others_mean_drop", number_or_null(others_drop)},
                           {"random_control_drop", random_drop},
                           {"loss", intact.loss},
                           {"ablated_losses", ablated_losses},
                           {"target_loss_increase", ablation.ablated[target][target].loss - intact.loss},
                           {"others_mean_loss_increase", number_or_null(others_loss_increase)},
                           {"random_control_loss_increase", ablation.random_control[target].loss - intact.loss}};
    std::printf("%s: neurons per layer %s (%lld of %lld x %lld); %s %.3f, ablated %.3f: drop %.3f, others' mean drop %.3f, "
                "random control drop %.3f; loss %+.3f, others %+.3f, random %+.3f\n",
                task.name.c_str(), join_counts(counts).c_str(), static_cast<long long>(total),
                static_cast<long long>(layers), static_cast<long long>(width), task.metric.c_str(), intact.score,
                ablation.ablated[target][target].score, target_drop, others_drop, random_drop,
                ablation.ablated[target][target].loss - intact.loss, others_loss_increase,
                ablation.random_control[target].loss - intact.loss);
  }
  std::fflush(stdout);

  nlohmann::json iou = nlohmann::json::array();
  std::vector<std::vector<double>> iou_mean(T, std::vector<double>(T, 0.0));
  for (int64_t l = 0; l < layers; ++l) {
    std::vector<std::vector<double>> matrix(T, std::vector<double>(T, 0.0));
    for (size_t a = 0; a < T; ++a) {
      for (size_t b = 0; b < T; ++b) {
        matrix[a][b] = skills::iou(sets[a][static_cast<size_t>(l)], sets[b][static_cast<size_t>(l)]);
        iou_mean[a][b] += matrix[a][b] / static_cast<double>(layers);
      }
    }
    iou.push_back(matrix);
  }
  return {{"model", model_dir},
                             {"coverage", coverage},
                             {"layers", layers},
                             {"intermediate_size", width},
                             {"reference", reference.empty() ? std::string("generations") : reference},
                             {"base", reference.empty() ? nlohmann::json(base_dir.empty() ? model_dir : base_dir)
                                                        : nlohmann::json()},
                             {"general_positions", general.positions},
                             {"tasks", task_names},
                             {"per_task", per_task},
                             {"iou", iou},
                             {"iou_mean", iou_mean}};
}

int run_neurons(const std::vector<std::string>& args) {
  std::string model_dir, base_dir, tasks_text, reference;
  double coverage = 0.5;
  int64_t examples = 100;
  TaskFlags task_flags;
  CommonOptions common;
  FlagSet flags("neurons", "skillgraft neurons --model DIR --tasks T1,T2,... --json OUT [options]",
                "Finds, per task and layer, the FFN neurons whose mean |activation| at the positions that predict\n"
                "the answer (the task's first 256 train examples) exceeds their mean on general text: the\n"
                "base's own generations from BOS (32 samples of 64 tokens, seed 0) or --reference FILE. A\n"
                "task's set per layer is the smallest one, by descending excess, holding --coverage of the\n"
                "layer's excess mass. Reports the sets' IoU between tasks per layer, and zeroes each task's\n"
                "neurons to measure the drop on that task, the mean drop on the others, and the drop from\n"
                "as many random neurons per layer (a control), on the first --examples test examples.");
  flags.add_string("model", &model_dir, "the model directory to analyse (with its tokenizer)", true);
  flags.add_string("tasks", &tasks_text, "comma-separated built-in task names or task directories", true);
  flags.add_string("base", &base_dir, "model whose generations are the general text (default: --model)");
  flags.add_double("coverage", &coverage, "share of a layer's standout mass a task's set covers, in (0, 1]");
  flags.add_int("examples", &examples, "test examples per task for the ablations (0 = all)");
  flags.add_string("reference", &reference, "plain-text corpus as the general text instead of generations");
  add_task_flags(flags, &task_flags, "task-seed", "seed of the built-in tasks' examples");
  flags.add_common(&common.threads, &common.json_path, &common.quiet);
  if (!flags.parse(args)) return 0;
  apply_common(common);
  SG_CHECK(coverage > 0 && coverage <= 1,
           "--coverage must be in (0, 1], got " << coverage << "; hint: 0.5 keeps the neurons holding half the standout mass");
  SG_CHECK(reference.empty() || base_dir.empty(),
           "--base and --reference both name the general text; hint: give one of them");
  SG_CHECK(examples >= 0, "--examples must be >= 0 (0 = all), got " << examples);
  const std::vector<std::string> task_specs = split_comma_list(tasks_text);
  SG_CHECK(!task_specs.empty(), "--tasks is empty; hint: e.g. --tasks add,opposite (see skillgraft tasks)");

  std::vector<data::LoadedTask> tasks;
  std::set<std::string> names;
  for (const std::string& spec : task_specs) {
    tasks.push_back(load_task_from_flags(spec, task_flags, "task-seed"));
    SG_CHECK(names.insert(tasks.back().name).second,
             "--tasks names '" << tasks.back().name << "' twice; hint: list each task once");
    SG_CHECK(!tasks.back().splits.train.empty() && !tasks.back().splits.test.empty(),
             "task '" << tasks.back().name << "' needs train and test examples; hint: check its directory");
  }
  write_json_output(common, neuron_study(model_dir, base_dir, reference, tasks, coverage, examples));
  return 0;
}

}  // namespace sg::cli
