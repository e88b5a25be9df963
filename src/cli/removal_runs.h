// A learned skill removal from one model over built-in or custom tasks, shared by
// `skillgraft remove` and `skillgraft demo`: the tasks' examples are encoded with the model's
// tokenizer and a candidate mask is rated on the validation splits.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "data/task_source.h"
#include "model/causal_lm.h"
#include "skills/removal.h"

namespace sg::cli {

// Learns which options.localize.fraction of `model`'s parameters, reset to `base`, remove `forget`
// and keep `keep` (see skills/removal.h). The keep term draws evenly from the keep tasks: each
// contributes as many training examples as the largest has, at most 2,000 (cycled or cut). A mask
// is rated by the keep tasks' mean validation score minus forget's (eval_examples each, 0 = all).
// `work` holds the result on return.
skills::LocalizeResult learn_task_removal(const model::LoadedModel& base, const model::LoadedModel& model,
                                          model::CausalLM& work, const data::LoadedTask& forget,
                                          const std::vector<data::LoadedTask>& keep,
                                          const skills::RemovalOptions& options, int64_t eval_examples);

// Every task's score of `model` on its test split: {task: score}.
nlohmann::json test_scores(model::CausalLM& model, const io::Tokenizer& tokenizer,
                           const std::vector<data::LoadedTask>& tasks);

// One removal's row: {removed, scores: after, target_drop, others_mean_drop}, the drops taken from
// `before` to `after` (both {task: score}) for the removed task and as the mean over the others
// (0 when there are none).
nlohmann::json removal_row(const nlohmann::json& before, const nlohmann::json& after, const std::string& removed);

}  // namespace sg::cli
