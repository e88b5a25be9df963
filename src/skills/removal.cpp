#include "skills/removal.h"

#include <torch/torch.h>

#include "skills/graft_util.h"
#include "train/trainer.h"
#include "util/error.h"

namespace sg::skills {

LocalizeResult learn_removal(model::CausalLM& work, model::CausalLM& base, model::CausalLM& model,
                             const std::vector<data::EncodedSequence>& forget,
                             const std::vector<data::EncodedSequence>& keep, const RemovalOptions& options,
                             const GraftScore& score) {
  SG_CHECK(!forget.empty(), "the skill to remove has no training examples; hint: removal learns from its train split");
  SG_CHECK(!keep.empty(), "no examples of the skills to keep; hint: name at least one task to keep");
  SG_CHECK(options.keep_weight >= 0, "the keep weight must be >= 0, got " << options.keep_weight);
  SG_CHECK(options.localize.method == LocalizeMethod::kGraft,
           "removal learns its mask with the graft method; hint: leave LocalizeOptions::method at kGraft");
  const io::StateDict base_weights = model::model_state_dict(base);
  const io::StateDict model_weights = model::model_state_dict(model);
  for (const auto& item : base_weights) item.value().set_requires_grad(false);
  for (const auto& item : model_weights) item.value().set_requires_grad(false);
  // The graft's "base" is the model and its "fine-tuned" is the base: γ = 1 resets to the base.
  const FlatLayout layout(candidate_names(model_weights, base_weights, options.localize.exclude), model_weights);
  io::StateDict weights = model::model_state_dict(work);
  train::EpochOrder forget_order(static_cast<int64_t>(forget.size()), options.localize.seed);
  train::EpochOrder keep_order(static_cast<int64_t>(keep.size()), options.localize.seed + 1);
  LocalizeOptions run = options.localize;
  const int64_t batch = options.localize.batch_size;
  run.loss = [&](model::CausalLM& current, int64_t step) {
    const double forget_loss =
        loss_and_gradients(current, weights, layout, forget, batch, step, forget_order, /*accumulate=*/true, 1.0, &base);
    if (options.keep_weight == 0) return forget_loss;
    const double keep_loss = loss_and_gradients(current, weights, layout, keep, batch, step, keep_order,
                                                /*accumulate=*/true, options.keep_weight, &model);
    return forget_loss + options.keep_weight * keep_loss;
  };
  return localize(work, model_weights, base_weights, forget, run, score);
}

}  // namespace sg::skills
