#include "cli/localize_runs.h"

#include <torch/torch.h>

#include <cmath>
#include <cstdio>

#include "util/error.h"
#include "util/log.h"

namespace sg::cli {

double recovery(double value, double base, double finetuned) {
  const double gain = finetuned - base;
  return std::abs(gain) > 1e-12 ? (value - base) / gain : std::nan("");
}

nlohmann::json number_or_null(double value) { return std::isfinite(value) ? nlohmann::json(value) : nlohmann::json(); }

LocalizationSession::LocalizationSession(const std::string& base_dir, const std::string& finetuned_dir,
                                         const data::LoadedTask& task, int64_t eval_examples)
    : task_(task) {
  base_ = model::load_model_dir(base_dir);
  SG_CHECK(base_.tokenizer != nullptr, base_dir << " has no tokenizer; hint: localization evaluates the task with it");
  finetuned_ = model::load_model_dir(finetuned_dir);
  work_ = model::load_model_dir(base_dir);
  base_weights_ = model::model_state_dict(*base_.model);
  finetuned_weights_ = model::model_state_dict(*finetuned_.model);
  skills::candidate_names(base_weights_, finetuned_weights_, "");  // fails early on mismatched models
  examples_ = data::encode_for_training(*base_.tokenizer, task_.splits.train);
  validation_ = data::validation_examples(task_, eval_examples);
  const eval::EvalOptions eval_options;
  base_eval_ = eval::evaluate(*base_.model, *base_.tokenizer, task_.splits.test, eval_options);
  finetuned_eval_ = eval::evaluate(*finetuned_.model, *base_.tokenizer, task_.splits.test, eval_options);
  util::log_info(task_.name + " test " + task_.metric + ": base " + std::to_string(base_eval_.score) +
                 ", fine-tuned " + std::to_string(finetuned_eval_.score));
}

nlohmann::json LocalizationSession::run(const skills::LocalizeOptions& options, skills::SparseSkill* skill_out) {
  const eval::EvalOptions eval_options;
  const skills::GraftScore score = [&](model::CausalLM& model) {
    return eval::evaluate(model, *base_.tokenizer, validation_, eval_options).score;
  };
  const skills::LocalizeResult located =
      skills::localize(*work_.model, base_weights_, finetuned_weights_, examples_, options, score);
  const eval::EvalResult graft_eval = eval::evaluate(*work_.model, *base_.tokenizer, task_.splits.test, eval_options);
  skills::SparseSkill skill = skills::make_sparse_skill(base_weights_, finetuned_weights_, located.mask, task_.name);
  const std::string method = skills::localize_method_name(options.method);
  const double metric_recovery = recovery(graft_eval.score, base_eval_.score, finetuned_eval_.score);
  // Loss recovery: the share of the fine-tune's loss drop on the answer tokens the graft keeps.
  const double loss_recovery = recovery(graft_eval.loss, base_eval_.loss, finetuned_eval_.loss);
  nlohmann::json run = {{"method", method},
                        {"fraction", options.fraction},
                        {"seed", options.seed},
                        {"selected", located.selected},
                        {"candidates", located.candidates},
                        {"base", base_eval_.score},
                        {"finetuned", finetuned_eval_.score},
                        {"graft", graft_eval.score},
                        {"recovery", number_or_null(metric_recovery)},
                        {"loss_base", base_eval_.loss},
                        {"loss_finetuned", finetuned_eval_.loss},
                        {"loss_graft", graft_eval.loss},
                        {"loss_recovery", number_or_null(loss_recovery)},
                        {"ece_finetuned", number_or_null(finetuned_eval_.ece)},
                        {"ece_graft", number_or_null(graft_eval.ece)},
                        {"seconds", located.seconds},
                        {"where", skills::describe_sparse_skill(skill)}};
  if (options.method == skills::LocalizeMethod::kGraft || options.method == skills::LocalizeMethod::kGraftSigmoid) {
    run["score_optimizer"] = options.score_optimizer == skills::ScoreOptimizer::kAdam ? "adam" : "nsgd";
    run["lr"] = options.lr;
    if (options.score_optimizer == skills::ScoreOptimizer::kNormalizedSgd) {
      run["momentum"] = options.momentum;
      run["lr_decay"] = options.decay ? "cosine" : "constant";
    }
    run["steps"] = options.steps;
    run["best_validation"] = located.best_validation;
    run["best_step"] = located.best_step;
  }
  if (options.method == skills::LocalizeMethod::kGraftSigmoid) run["relaxed_mass_over_budget"] = located.relaxed_mass;
  {
    std::printf("%s %s fraction %.4g seed %llu: %lld of %lld parameters; test %s base %.3f fine-tuned %.3f graft %.3f "
                "(recovery %.2f, loss recovery %.2f) in %.1f s\n",
                task_.name.c_str(), method.c_str(), options.fraction, static_cast<unsigned long long>(options.seed),
                static_cast<long long>(located.selected), static_cast<long long>(located.candidates),
                task_.metric.c_str(), base_eval_.score, finetuned_eval_.score, graft_eval.score, metric_recovery,
                loss_recovery, located.seconds);
    std::fflush(stdout);
  }
  if (skill_out != nullptr) {
    skill.metrics.update({{"metric", task_.metric}, {"base", base_eval_.score}, {"finetuned", finetuned_eval_.score},
                          {"graft", graft_eval.score}, {"fraction", options.fraction}, {"method", method}});
    *skill_out = std::move(skill);
  }
  return run;
}

}  // namespace sg::cli
