// One task's localization runs, shared by `skillgraft localize` and `skillgraft demo`: the models,
// the task's encoded examples and the base / fine-tuned test scores are loaded once, then each run
// localizes at one budget, method and seed, scores the graft on the test split and describes it.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "data/batching.h"
#include "data/task_source.h"
#include "eval/evaluator.h"
#include "io/state_dict.h"
#include "model/causal_lm.h"
#include "skills/localize.h"
#include "skills/skill.h"

namespace sg::cli {

class LocalizationSession {
 public:
  // Loads base and fine-tuned (same architecture, else throws), scores both on the test split.
  // eval_examples: validation examples per mask check (0 = all).
  LocalizationSession(const std::string& base_dir, const std::string& finetuned_dir, const data::LoadedTask& task,
                      int64_t eval_examples);

  // Localizes with `options` and returns the run's JSON (method, fraction, seed, selected,
  // candidates, base/finetuned/graft test scores, recovery, loss_*, loss_recovery, ece_*,
  // best_validation, best_step, seconds, where); prints one line unless quiet. `skill` (optional)
  // receives the sparse skill, its metrics filled in.
  nlohmann::json run(const skills::LocalizeOptions& options, skills::SparseSkill* skill = nullptr);

  const data::LoadedTask& task() const { return task_; }
  const eval::EvalResult& base_eval() const { return base_eval_; }
  const eval::EvalResult& finetuned_eval() const { return finetuned_eval_; }
  const io::StateDict& base_weights() const { return base_weights_; }
  const io::StateDict& finetuned_weights() const { return finetuned_weights_; }

 private:
  data::LoadedTask task_;
  model::LoadedModel base_, finetuned_, work_;
  io::StateDict base_weights_, finetuned_weights_;
  std::vector<data::EncodedSequence> examples_;
  std::vector<data::Example> validation_;
  eval::EvalResult base_eval_, finetuned_eval_;
};

// (value - base) / (finetuned - base); NaN when fine-tuning changed nothing.
double recovery(double value, double base, double finetuned);
// A number, or null for NaN / infinity.
nlohmann::json number_or_null(double value);

}  // namespace sg::cli
