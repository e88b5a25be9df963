// The demo's skill studies on top of its specialists: localization of every specialist (the
// default budget, baselines, the sweep), the overlap of the skills' masks, the optimizer contrast
// and the removal of one skill from a multi-task model.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "data/task_source.h"
#include "skills/skill.h"

namespace sg::cli {

struct SkillStudyOptions {
  double fraction = 0.01;           // the default budget
  int64_t seeds = 1;                // graft repeats at the default budget
  std::vector<double> sweep;        // budgets of the curve (empty: none)
  int64_t steps = 100;              // graft optimisation steps
  int64_t eval_examples = 100;      // validation examples per mask check
  uint64_t seed = 0;
};

// Localizes the specialist of `task` at options.fraction with graft (options.seeds seeds), movement,
// saliency and random, runs the sweep, writes the seed-0 graft as `skill_path`. Returns the task
// entry's fields: graft (mean over seeds), graft_seeds, graft_fraction, recovery, loss_recovery,
// movement, saliency, random (+ their recoveries), ece_finetuned, ece_graft, skill, where, sweep,
// budget_90, runs. `skill` receives the seed-0 graft.
nlohmann::json localize_specialist(const std::string& base_dir, const std::string& specialist_dir,
                                   const data::LoadedTask& task, const SkillStudyOptions& options,
                                   const std::string& skill_path, skills::SparseSkill* skill);

// Jaccard overlap of the skills' parameter sets, overall and per layer group ("embed"/outside,
// "0".."L-1"): {tasks, jaccard, layers, per_layer, related: [{pair, jaccard}], related_mean,
// unrelated_mean}. `related` lists the pairs expected to share more (those with both tasks present).
nlohmann::json skill_overlap(const std::vector<std::string>& tasks, const std::vector<skills::SparseSkill>& skills,
                             const std::vector<std::pair<std::string, std::string>>& related);

// Resets the skill's positions of `weights` to the base's values (in place).
void reset_to_base(io::StateDict& weights, const io::StateDict& base, const skills::SparseSkill& skill);

}  // namespace sg::cli
