// skillgraft remove: takes one skill out of a model that holds several, resetting a learned few of
// its parameters to the base, and scores every task before and after.
#include <torch/torch.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/localize_runs.h"
#include "cli/removal_runs.h"
#include "cli/train_flags.h"
#include "io/fingerprint.h"
#include "skills/skill.h"
#include "util/error.h"
#include "util/log.h"

namespace sg::cli {

int run_remove(const std::vector<std::string>& args) {
  std::string model_dir, base_dir, task_spec, keep_spec, out_dir;
  skills::RemovalOptions options;
  options.localize.batch_size = 64;
  int64_t eval_examples = 50, seed = 0;
  double lr = 0;
  TaskFlags task_flags;
  CommonOptions common;
  FlagSet flags("remove", "skillgraft remove --model DIR --base DIR --task TASK --keep T1,T2,... --out DIR [options]",
                "Removes one skill from a model fine-tuned on several (from the base): learns which --fraction\n"
                "of the parameters, reset to the base's values, make the model answer TASK like the base\n"
                "while answering the --keep tasks as before (KL to the base on TASK's completions plus\n"
                "--keep-weight times KL to the model on the others'; a budget-exact mask trained like\n"
                "localize's graft). Scores every task on its test split before and after and writes the\n"
                "model with the skill removed.");
  flags.add_string("model", &model_dir, "the model holding the skills (fine-tuned from --base)", true);
  flags.add_string("base", &base_dir, "the base model it was fine-tuned from (same architecture)", true);
  flags.add_string("task", &task_spec, "the skill to remove: a built-in task name or task directory", true);
  flags.add_string("keep", &keep_spec, "comma-separated tasks whose skills must stay", true);
  flags.add_string("out", &out_dir, "output model directory (created if missing)", true);
  flags.add_double("fraction", &options.localize.fraction, "share of the parameters reset to the base, in (0, 1]");
  flags.add_int("steps", &options.localize.steps, "mask optimisation steps");
  flags.add_double("lr", &lr, "learning rate on the mask scores; 0 = localize's default (0.1)");
  flags.add_int("batch-size", &options.localize.batch_size, "examples per step, for each of the two terms");
  flags.add_double("keep-weight", &options.keep_weight, "weight of the keep term against the removal term");
  flags.add_string("exclude", &options.localize.exclude, "regex: parameters never reset (default: none)");
  flags.add_int("eval-every", &options.localize.eval_every, "rate the current mask every N steps (the best is kept)");
  flags.add_int("eval-examples", &eval_examples, "validation examples per task and rating (0 = all)");
  flags.add_int("seed", &seed, "seed of the batch order");
  add_task_flags(flags, &task_flags, "task-seed", "seed of built-in tasks' examples (use the fine-tune's)");
  flags.add_common(&common.threads, &common.json_path, &common.quiet);
  if (!flags.parse(args)) return 0;
  apply_common(common);
  SG_CHECK(options.localize.fraction > 0 && options.localize.fraction <= 1,
           "--fraction must be in (0, 1], got " << options.localize.fraction << "; hint: 0.01 resets 1% of the parameters");
  SG_CHECK(lr >= 0, "--lr must be >= 0, got " << lr << "; hint: 0 picks the default");
  if (lr > 0) options.localize.lr = lr;
  SG_CHECK(seed >= 0, "--seed must be >= 0, got " << seed);
  options.localize.seed = static_cast<uint64_t>(seed);

  const data::LoadedTask forget = load_task_from_flags(task_spec, task_flags, "task-seed");
  std::vector<data::LoadedTask> keep;
  for (const std::string& name : split_comma_list(keep_spec)) {
    keep.push_back(load_task_from_flags(name, task_flags, "task-seed"));
    SG_CHECK(keep.back().name != forget.name,
             "--keep names " << name << ", the task being removed; hint: list only the skills that must stay");
  }
  SG_CHECK(!keep.empty(), "--keep is empty; hint: name the other skills the model holds, e.g. --keep opposite,add");
  model::LoadedModel base = model::load_model_dir(base_dir);
  model::LoadedModel model = model::load_model_dir(model_dir);
  model::LoadedModel work = model::load_model_dir(model_dir);
  SG_CHECK(model.tokenizer != nullptr, model_dir << " has no tokenizer; hint: removal evaluates the tasks with it");
  const io::StateDict base_weights = model::model_state_dict(*base.model);
  const io::StateDict model_weights = model::model_state_dict(*model.model);
  skills::candidate_names(model_weights, base_weights, options.localize.exclude);  // mismatched models fail early

  std::vector<data::LoadedTask> tasks = {forget};
  tasks.insert(tasks.end(), keep.begin(), keep.end());
  const nlohmann::json before = test_scores(*model.model, *model.tokenizer, tasks);
  util::log_info("removing " + forget.name + " from " + model_dir + " (" + std::to_string(keep.size()) + " tasks kept)");
  const skills::LocalizeResult result =
      learn_task_removal(base, model, *work.model, forget, keep, options, eval_examples);
  const nlohmann::json after = test_scores(*work.model, *model.tokenizer, tasks);
  model::save_model_dir(out_dir, *work.model, model.tokenizer.get());

  const nlohmann::json row = removal_row(before, after, forget.name);
  std::printf("%-14s %8s %8s\n", "task", "before", "after");
  for (const data::LoadedTask& task : tasks) {
    std::printf("%-14s %8.3f %8.3f%s\n", task.name.c_str(), before[task.name].get<double>(),
                after[task.name].get<double>(), task.name == forget.name ? "  (removed)" : "");
  }
  std::printf("removed %s: %lld of %lld parameters reset to the base; its drop %.3f, the others' mean drop %.3f "
              "(mask from step %lld, %.1f s) -> %s\n",
              forget.name.c_str(), static_cast<long long>(result.selected), static_cast<long long>(result.candidates),
              row["target_drop"].get<double>(), row["others_mean_drop"].get<double>(),
              static_cast<long long>(result.best_step), result.seconds, out_dir.c_str());
  const skills::SparseSkill reset = skills::make_sparse_skill(model_weights, base_weights, result.mask, forget.name);
  write_json_output(common, {{"task", forget.name},
                             {"model", model_dir},
                             {"base", base_dir},
                             {"out", out_dir},
                             {"fraction", options.localize.fraction},
                             {"selected", result.selected},
                             {"candidates", result.candidates},
                             {"before", before},
                             {"after", after},
                             {"target_drop", row["target_drop"]},
                             {"others_mean_drop", row["others_mean_drop"]},
                             {"best_validation", result.best_validation},
                             {"best_step", result.best_step},
                             {"seconds", result.seconds},
                             {"where", skills::describe_sparse_skill(reset)},
                             {"out_fingerprint", io::state_dict_fingerprint(model::model_state_dict(*work.model))}});
  return 0;
}

}  // namespace sg::cli
