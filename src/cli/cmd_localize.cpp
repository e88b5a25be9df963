// skillgraft localize: find the few parameters of a fine-tune that carry its skill, score the
// graft against the base and the fine-tuned model, and write the sparse skill file.
#include <torch/torch.h>

#include <cmath>
#include <cstdio>

#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/localize_runs.h"
#include "cli/train_flags.h"
#include "data/batching.h"
#include "data/task_source.h"
#include "eval/evaluator.h"
#include "io/fingerprint.h"
#include "model/causal_lm.h"
#include "skills/localize.h"
#include "skills/skill.h"
#include "util/error.h"
#include "util/log.h"

namespace sg::cli {

namespace {

std::vector<double> parse_fractions(const std::string& text) {
  std::vector<double> fractions;
  for (const std::string& item : split_comma_list(text)) {
    char* end = nullptr;
    const double value = std::strtod(item.c_str(), &end);
    SG_CHECK(end != item.c_str() && *end == '\0', "--sweep: '" << item << "' is not a number; hint: e.g. 0.001,0.01,0.05");
    fractions.push_back(value);
  }
  SG_CHECK(!fractions.empty(), "--sweep is empty; hint: e.g. 0.001,0.01,0.05");
  return fractions;
}

}  // namespace

int run_localize(const std::vector<std::string>& args) {
  std::string base_dir, finetuned_dir, task_spec, out_path, method_name = "graft", exclude, sweep;
  double fraction = 0.01;
  int64_t steps = skills::LocalizeOptions().steps, batch_size = 128, eval_every = 10, seeds = 1, seed = 0;
  TaskFlags task_flags;
  int64_t eval_examples = 100;
  double lr = 0;
  std::string score_optimizer = "nsgd";
  double momentum = 0.9;
  bool constant_lr = false;
  CommonOptions common;
  FlagSet flags("localize", "skillgraft localize --base DIR --finetuned DIR --task TASK --out SKILL [options]",
                "Finds the fraction of parameters that carries what the fine-tune taught: grafting only their\n"
                "fine-tuned values onto the base, theta_base + mask * (theta_ft - theta_base), should recover the\n"
                "fine-tuned score. --method graft (default) learns a budget-exact mask; movement, saliency and\n"
                "random are baselines at the same budget; graft-sigmoid is the paper's relaxation. Reports the\n"
                "base, fine-tuned and graft scores on the test split and the recovery, and writes the skill file.");
  flags.add_string("base", &base_dir, "base model directory", true);
  flags.add_string("finetuned", &finetuned_dir, "the fine-tuned model directory (same architecture)", true);
  flags.add_string("task", &task_spec, "built-in task name or task directory (what the fine-tune learned)", true);
  flags.add_string("out", &out_path, "skill file to write (safetensors); with --sweep, optional (for --fraction)");
  flags.add_double("fraction", &fraction, "share of candidate parameters to graft, in (0, 1]");
  flags.add_string("method", &method_name, "graft | graft-sigmoid | movement | saliency | random");
  flags.add_string("exclude", &exclude, "regex: parameters left out of the candidates (default: none)");
  flags.add_string("sweep", &sweep, "comma-separated fractions to run in one go (writes the curve to --json)");
  flags.add_int("seeds", &seeds, "repeat each run with this many seeds (mean and spread)");
  flags.add_int("seed", &seed, "first seed (mask init for graft-sigmoid/random, batch order)");
  flags.add_int("steps", &steps, "graft optimisation steps");
  flags.add_string("score-optimizer", &score_optimizer,
                   "nsgd (gradient over its RMS; recovers more) or adam (the issue's first design)");
  flags.add_double("lr", &lr, "learning rate on the mask scores; 0 = the optimizer's default (nsgd 0.1, adam 0.02)");
  flags.add_double("momentum", &momentum, "nsgd: momentum of the normalized steps (0: plain; then --lr ~0.5)");
  flags.add_bool("constant-lr", &constant_lr, "nsgd: keep the learning rate constant (default: cosine decay to 0)");
  flags.add_int("batch-size", &batch_size, "training examples per step");
  flags.add_int("eval-every", &eval_every, "validate the current mask every N steps (the best is kept)");
  flags.add_int("eval-examples", &eval_examples, "validation examples per check (0 = all)");
  add_task_flags(flags, &task_flags, "task-seed", "seed of a built-in task's examples (use the fine-tune's)");
  flags.add_common(&common.threads, &common.json_path, &common.quiet);
  if (!flags.parse(args)) return 0;
  apply_common(common);
  SG_CHECK(seeds >= 1, "--seeds must be >= 1, got " << seeds);
  SG_CHECK(seed >= 0, "--seed must be >= 0, got " << seed);
  const std::vector<double> fractions = sweep.empty() ? std::vector<double>{fraction} : parse_fractions(sweep);
  SG_CHECK(!out_path.empty() || !sweep.empty(), "--out is required: the skill file to write");
  for (double value : fractions) {
    SG_CHECK(value > 0 && value <= 1, "--fraction must be in (0, 1], got " << value
                                                                          << "; hint: 0.01 grafts 1% of the parameters");
  }
  skills::LocalizeOptions options;
  options.method = skills::localize_method_from_name(method_name);
  options.exclude = exclude;
  options.steps = steps;
  options.score_optimizer = skills::score_optimizer_from_name(score_optimizer);
  SG_CHECK(lr >= 0, "--lr must be >= 0, got " << lr << "; hint: 0 picks the optimizer's default");
  options.lr = lr > 0 ? lr : skills::default_score_lr(options.score_optimizer);
  SG_CHECK(momentum >= 0 && momentum < 1, "--momentum must be in [0, 1), got " << momentum);
  options.momentum = momentum;
  options.decay = !constant_lr;
  options.batch_size = batch_size;
  options.eval_every = eval_every;

  const data::LoadedTask task = load_task_from_flags(task_spec, task_flags, "task-seed");
  LocalizationSession session(base_dir, finetuned_dir, task, eval_examples);
  skills::candidate_names(session.base_weights(), session.finetuned_weights(), exclude);  // a bad --exclude fails early

  nlohmann::json runs = nlohmann::json::array();
  for (double run_fraction : fractions) {
    std::vector<double> scores;
    for (int64_t s = 0; s < seeds; ++s) {
      options.fraction = run_fraction;
      options.seed = static_cast<uint64_t>(seed + s);
      skills::SparseSkill skill;
      nlohmann::json run = session.run(options, &skill);
      scores.push_back(run["graft"].get<double>());
      runs.push_back(run);
      const bool main_run = run_fraction == fraction && s == 0;
      if (!out_path.empty() && (sweep.empty() || main_run)) skills::save_sparse_skill(out_path, skill);
    }
    if (seeds > 1) {
      torch::Tensor values = torch::tensor(scores, torch::kDouble);
      std::printf("%s %s fraction %.4g: graft mean %.3f, std %.3f over %lld seeds\n", task.name.c_str(),
                  method_name.c_str(), run_fraction, values.mean().item<double>(), values.std().item<double>(),
                  static_cast<long long>(seeds));
    }
  }
  write_json_output(common, {{"task", task.name},
                             {"kind", task.kind},
                             {"metric", task.metric},
                             {"base_fingerprint", io::state_dict_fingerprint(session.base_weights())},
                             {"ece_base", number_or_null(session.base_eval().ece)},
                             {"runs", runs},
                             {"out", out_path}});
  return 0;
}

}  // namespace sg::cli
