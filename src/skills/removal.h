// Learned skill removal: which few parameters of a model that holds several skills, reset to the
// base, take one skill away and leave the others. A removal mask m with exactly k ones defines
// θ(m) = θ_model − m ⊙ (θ_model − θ_base), which is a graft from the model toward the base, so the
// graft optimizer learns m (budget-exact top-k, straight-through) with this loss per step:
//   KL(base ‖ θ(m)) on a batch of the skill's completions   (behave like the base on it)
//   + keep_weight · KL(model ‖ θ(m)) on a batch of the other skills' completions (unchanged there).
// Both terms are bounded below by 0, unlike ascent on the skill's cross-entropy.
//
// The plain alternative (reset the skill's own graft mask, localized against the base) also takes
// the machinery the skills share; measured in docs/results.md (session 9).
#pragma once

#include <vector>

#include "data/batching.h"
#include "model/causal_lm.h"
#include "skills/localize.h"

namespace sg::skills {

struct RemovalOptions {
  LocalizeOptions localize;  // fraction, steps, lr, batch size (per term), eval_every, seed
  double keep_weight = 1.0;  // weight of the keep term
};

// Learns the removal mask. `work` has the architecture of `base` and `model` (both loaded, used as
// the two teachers; not modified) and holds θ(best mask) on return; `forget` are the skill's
// training sequences, `keep` the other skills'. `score` rates a candidate (work holds θ(m)),
// e.g. the other skills' validation score minus the removed skill's; the best-rated mask is kept.
// The result's mask marks the parameters reset to the base.
LocalizeResult learn_removal(model::CausalLM& work, model::CausalLM& base, model::CausalLM& model,
                             const std::vector<data::EncodedSequence>& forget,
                             const std::vector<data::EncodedSequence>& keep, const RemovalOptions& options,
                             const GraftScore& score);

}  // namespace sg::skills
