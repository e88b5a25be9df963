// skillgraft merge: many fine-tuned checkpoints or skills over one base -> one model, by linear,
// task_arithmetic, ties, dare_linear, dare_ties or sparse_union; from flags or a mergekit YAML; or
// by stitch, which learns each input's mask from the tasks' training data.
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>

#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/train_flags.h"
#include "compose/merge.h"
#include "compose/merge_config.h"
#include "compose/stitch.h"
#include "data/task_source.h"
#include "eval/evaluator.h"
#include "model/causal_lm.h"
#include "util/error.h"

namespace sg::cli {

namespace {

std::vector<double> parse_numbers(const std::string& flag, const std::string& text) {
  std::vector<double> numbers;
  for (const std::string& item : split_comma_list(text)) {
    char* end = nullptr;
    const double value = std::strtod(item.c_str(), &end);
    SG_CHECK(end != item.c_str() && *end == '\0', "--" << flag << ": '" << item << "' is not a number; hint: e.g. 0.5,0.5");
    numbers.push_back(value);
  }
  return numbers;
}

struct StitchFlags {
  std::string tasks;
  TaskFlags task;
  compose::StitchOptions options;
  int64_t eval_examples = 100;
  bool distill = false;  // learn from the inputs' own answer distributions instead of the labels
};

// --method stitch: every input opened as base + its delta, the masks learned on the tasks' train
// splits, the merged model written as a checkpoint (exactly the weights the validation scored).
int run_stitch(const std::string& base_dir, const std::vector<std::string>& paths, const std::vector<double>& weights,
               const StitchFlags& stitch_flags, const std::string& out_dir, const CommonOptions& common) {
  for (double weight : weights) {
    SG_CHECK(weight == 1.0, "--weights does not apply to stitch; hint: it learns how much of each delta to keep");
  }
  const std::vector<std::string> task_specs = split_comma_list(stitch_flags.tasks);
  SG_CHECK(!task_specs.empty(), "--method stitch needs --tasks; hint: one task per --skills entry, in the same order");
  SG_CHECK(task_specs.size() == paths.size(), "--tasks names " << task_specs.size() << " tasks for " << paths.size()
                                                              << " inputs; hint: one task per --skills entry");
  model::LoadedModel work = model::load_model_dir(base_dir);
  SG_CHECK(work.tokenizer != nullptr, base_dir << " has no tokenizer; hint: stitch evaluates the tasks with it");
  const io::StateDict base = model::model_state_dict(*model::load_model_dir(base_dir).model);
  std::vector<io::StateDict> inputs;
  for (const std::string& path : paths) {
    compose::MergeSpec one;
    one.base = base_dir;
    one.options.method = compose::MergeMethod::kTaskArithmetic;
    one.inputs.push_back({path, 1.0, -1});
    inputs.push_back(compose::merge_to_state_dict(one));  // base + the input's delta, checked against the base
  }
  std::vector<data::LoadedTask> loaded;
  for (const std::string& spec : task_specs) loaded.push_back(load_task_from_flags(spec, stitch_flags.task, "task-seed"));
  std::vector<std::vector<data::EncodedSequence>> train(loaded.size());
  std::vector<std::vector<data::Example>> validation(loaded.size());
  std::vector<compose::StitchTask> tasks;
  std::vector<const io::StateDict*> input_weights;
  for (size_t i = 0; i < loaded.size(); ++i) {
    train[i] = data::encode_for_training(*work.tokenizer, loaded[i].splits.train);
    validation[i] = data::validation_examples(loaded[i], stitch_flags.eval_examples);
    compose::StitchTask task;
    task.name = loaded[i].name;
    task.train = &train[i];
    task.validate = [&, i](model::CausalLM& model) {
      return eval::evaluate(model, *work.tokenizer, validation[i], eval::EvalOptions()).score;
    };
    tasks.push_back(std::move(task));
    input_weights.push_back(&inputs[i]);
  }
  model::LoadedModel teacher;
  if (stitch_flags.distill) teacher = model::load_model_dir(base_dir);
  const compose::StitchResult result = compose::stitch(*work.model, base, input_weights, tasks, stitch_flags.options,
                                                       stitch_flags.distill ? teacher.model.get() : nullptr);
  model::save_model_dir(out_dir, *work.model, work.tokenizer.get());
  std::printf("stitched %zu inputs into %s: %lld of %lld parameters per input (fraction %.4g), best at step %lld of %lld, "
              "validation normalized %.3f in %.1f s\n",
              paths.size(), out_dir.c_str(), static_cast<long long>(result.budget),
              static_cast<long long>(result.candidates), stitch_flags.options.fraction,
              static_cast<long long>(result.best_step), static_cast<long long>(stitch_flags.options.steps),
              result.best_normalized, result.seconds);
  nlohmann::json per_task = nlohmann::json::array();
  for (size_t i = 0; i < tasks.size(); ++i) {
    std::printf("  %-16s alone %.3f  stitched %.3f  (%s)\n", tasks[i].name.c_str(), result.alone[i],
                result.validation[i], paths[i].c_str());
    per_task.push_back({{"task", tasks[i].name}, {"input", paths[i]}, {"alone", result.alone[i]},
                        {"stitched", result.validation[i]}});
  }
  write_json_output(common, {{"method", "stitch"},
                             {"base", base_dir},
                             {"out_dir", out_dir},
                             {"fraction", stitch_flags.options.fraction},
                             {"budget", result.budget},
                             {"candidates", result.candidates},
                             {"steps", stitch_flags.options.steps},
                             {"best_step", result.best_step},
                             {"validation_normalized", result.best_normalized},
                             {"tasks", per_task},
                             {"seconds", result.seconds}});
  return 0;
}

}  // namespace

int run_merge(const std::vector<std::string>& args) {
  std::string base_dir, skills, method_name, weights_text, densities_text, overlap = "mean", normalize, dtype;
  std::string config_path, out_dir;
  double density = 1.0, lambda = 1.0;
  int64_t seed = 0;
  bool no_rescale = false;
  CommonOptions common;
  FlagSet flags("merge",
                "skillgraft merge --base DIR --skills S1,S2,... --method M --out DIR [options]\n"
                "       skillgraft merge --config merge.yaml --out DIR",
                "Merges fine-tuned checkpoints and skills of one base model into one model, streaming tensor\n"
                "by tensor on all cores, and writes an HF checkpoint (config and tokenizer from the base).\n"
                "An input is a checkpoint directory or a skill file (sparse, LoRA or dense); each is checked\n"
                "against the base (names, shapes; a skill's base fingerprint).\n"
                "Methods (delta_i = input - base, w_i its weight):\n"
                "  linear           sum w_i theta_i / sum w_i (--normalize false: no divide)\n"
                "  task_arithmetic  base + lambda * sum w_i delta_i\n"
                "  ties             deltas trimmed to their top --density by magnitude per tensor, sign elected\n"
                "                   by sign(sum w_i delta_i), agreeing entries averaged over their weights\n"
                "  dare_linear      entries dropped at rate 1 - density (--seed), kept ones / density, summed\n"
                "  dare_ties        the same drop, then ties' sign election\n"
                "  sparse_union     every skill's entries applied; overlaps resolved by --overlap\n"
                "  stitch           learns a mask of --fraction of each delta from the tasks' train splits\n"
                "                   (--tasks, one per input), jointly, so that base + sum of the masked\n"
                "                   deltas scores best on every task's validation split\n"
                "--config reads a mergekit YAML (merge_method, base_model, models: [{model, parameters:\n"
                "{weight, density}}], parameters: {lambda, density, normalize, rescale, seed, overlap}, dtype);\n"
                "relative paths in it are read from the config file's directory.");
  flags.add_string("base", &base_dir, "the base model directory every input was fine-tuned from");
  flags.add_string("skills", &skills, "comma-separated inputs: checkpoint directories and/or skill files");
  flags.add_string("method", &method_name, compose::merge_method_list() + ", stitch");
  flags.add_string("out", &out_dir, "output model directory (created if missing)", true);
  flags.add_string("config", &config_path, "a mergekit-style YAML config instead of --base/--skills/--method");
  flags.add_string("weights", &weights_text, "comma-separated weights, one per input (default: all 1)");
  flags.add_double("density", &density, "share of each delta kept, in (0, 1] (ties, dare_linear, dare_ties)");
  flags.add_string("densities", &densities_text, "comma-separated densities, one per input (overrides --density)");
  flags.add_double("lambda", &lambda, "scale of the merged delta (not linear)");
  flags.add_int("seed", &seed, "seed of dare's random drop; stitch: of the batch order");
  flags.add_string("overlap", &overlap, "sparse_union where inputs overlap: mean | magnitude | weight");
  flags.add_string("normalize", &normalize,
                   "true | false: divide by the weights (default: the method's, as mergekit: linear and ties true)");
  flags.add_bool("no-rescale", &no_rescale, "dare: keep the surviving entries as they are (no / density)");
  flags.add_string("dtype", &dtype, "output dtype: float32 | bfloat16 | float16 (default: the base's)");
  StitchFlags stitch_flags;
  int64_t stitch_steps = stitch_flags.options.steps, stitch_batch = stitch_flags.options.batch_size,
          stitch_eval_every = stitch_flags.options.eval_every;
  flags.add_string("tasks", &stitch_flags.tasks, "stitch: comma-separated tasks, one per input (built-in names or directories)");
  flags.add_double("fraction", &stitch_flags.options.fraction, "stitch: each input's mask, share of the parameters in (0, 1]");
  flags.add_int("steps", &stitch_steps, "stitch: optimisation steps");
  flags.add_double("lr", &stitch_flags.options.lr, "stitch: learning rate on the mask scores (normalized steps)");
  flags.add_double("momentum", &stitch_flags.options.momentum, "stitch: momentum of the normalized steps");
  flags.add_bool("distill", &stitch_flags.distill,
                 "stitch: learn from each input's own answer distributions (KL) instead of the tasks' labels");
  flags.add_int("batch-size", &stitch_batch, "stitch: training examples per task and step");
  flags.add_int("eval-every", &stitch_eval_every, "stitch: validate the masks every N steps (the best are kept)");
  flags.add_int("eval-examples", &stitch_flags.eval_examples, "stitch: validation examples per task and check (0 = all)");
  add_task_flags(flags, &stitch_flags.task, "task-seed", "stitch: seed of built-in tasks' examples (use the fine-tunes')");
  flags.add_common(&common.threads, &common.json_path, &common.quiet);
  if (!flags.parse(args)) return 0;
  apply_common(common);

  compose::MergeSpec spec;
  if (!config_path.empty()) {
    for (const char* flag : {"base", "skills", "method", "weights", "density", "densities", "lambda", "seed", "overlap",
                             "normalize", "no-rescale", "dtype", "tasks", "fraction", "steps", "lr", "momentum",
                             "distill", "batch-size", "eval-every", "eval-examples", "task-seed", "n"}) {
      SG_CHECK(!flags.given(flag), "--" << flag << " cannot be combined with --config; hint: set it in the config file");
    }
    spec = compose::read_merge_config(config_path);
  } else {
    SG_CHECK(!base_dir.empty(), "--base is required (or --config); hint: the base model directory");
    SG_CHECK(!skills.empty(), "--skills is required (or --config); hint: comma-separated checkpoints or skill files");
    SG_CHECK(!method_name.empty(), "--method is required (or --config); hint: one of " << compose::merge_method_list());
    const std::vector<std::string> paths = split_comma_list(skills);
    if (method_name == "stitch") {
      for (const char* flag : {"density", "densities", "lambda", "overlap", "normalize", "no-rescale", "dtype"}) {
        SG_CHECK(!flags.given(flag), "--" << flag << " does not apply to --method stitch");
      }
      SG_CHECK(!paths.empty(), "--skills lists no inputs; hint: comma-separated checkpoints or skill files");
      SG_CHECK(seed >= 0, "--seed must be >= 0, got " << seed);
      stitch_flags.options.seed = static_cast<uint64_t>(seed);
      stitch_flags.options.steps = stitch_steps;
      stitch_flags.options.batch_size = stitch_batch;
      stitch_flags.options.eval_every = stitch_eval_every;
      SG_CHECK(stitch_flags.eval_examples >= 0, "--eval-examples must be >= 0, got " << stitch_flags.eval_examples);
      std::vector<double> weights;
      if (!weights_text.empty()) weights = parse_numbers("weights", weights_text);
      return run_stitch(base_dir, paths, weights, stitch_flags, out_dir, common);
    }
    for (const char* flag : {"tasks", "fraction", "steps", "lr", "momentum", "distill", "batch-size", "eval-every", "eval-examples", "task-seed", "n"}) {
      SG_CHECK(!flags.given(flag), "--" << flag << " applies to --method stitch only");
    }
    spec.base = base_dir;
    spec.options.method = compose::parse_merge_method(method_name);
    SG_CHECK(!paths.empty(), "--skills lists no inputs; hint: comma-separated checkpoints or skill files");
    std::vector<double> weights(paths.size(), 1.0);
    if (!weights_text.empty()) {
      weights = parse_numbers("weights", weights_text);
      SG_CHECK(weights.size() == paths.size(), "--weights has " << weights.size() << " values for " << paths.size()
                                                                << " inputs; hint: one weight per --skills entry");
    }
    std::vector<double> densities(paths.size(), -1);
    if (!densities_text.empty()) {
      densities = parse_numbers("densities", densities_text);
      SG_CHECK(densities.size() == paths.size(), "--densities has " << densities.size() << " values for " << paths.size()
                                                                    << " inputs; hint: one density per --skills entry");
    }
    for (size_t i = 0; i < paths.size(); ++i) spec.inputs.push_back({paths[i], weights[i], densities[i]});
    spec.options.density = density;
    spec.options.lambda = lambda;
    SG_CHECK(seed >= 0, "--seed must be >= 0, got " << seed);
    spec.options.seed = static_cast<uint64_t>(seed);
    spec.options.overlap = compose::parse_overlap_rule(overlap);
    SG_CHECK(normalize.empty() || normalize == "true" || normalize == "false",
             "--normalize must be true or false, got '" << normalize << "'");
    spec.options.normalize = normalize.empty() ? -1 : normalize == "true" ? 1 : 0;
    spec.options.rescale = !no_rescale;
    spec.options.dtype = dtype;
  }

  const compose::MergeReport report = compose::merge_to_checkpoint(spec, out_dir);
  const double mb = 1024.0 * 1024.0;
  std::printf("merged %zu inputs by %s into %s: %lld tensors (%lld changed), %.1f MB read, %.1f MB written in %.2f s "
              "(%.0f MB/s, %d threads)\n",
              spec.inputs.size(), report.method.c_str(), out_dir.c_str(), static_cast<long long>(report.tensors),
              static_cast<long long>(report.merged_tensors), report.bytes_read / mb, report.bytes_written / mb,
              report.seconds, report.seconds > 0 ? (report.bytes_read + report.bytes_written) / mb / report.seconds : 0.0,
              report.threads);
  nlohmann::json json = report.to_json();
  json["base"] = spec.base;
  if (!config_path.empty()) json["config"] = config_path;
  write_json_output(common, json);
  return 0;
}

}  // namespace sg::cli
