// stitch: a merge that learns from the tasks' own training data which part of each input's delta
// to keep. Input i (a fine-tune, or a skill seen as base + its delta) gets a budget-exact mask γ_i
// of k = fraction · N entries over the candidate parameters, and the merged model is
//   θ = θ_base + Σ_i γ_i ⊙ δ_i          (where masks overlap, the deltas add, as in task arithmetic).
// The masks are learned together the way skills/localize learns one graft: input i's scores start
// at |δ_i| scaled so its k-th largest is 1 (the first masks are the movement masks); the forward
// pass uses the hard top-k masks; the loss is the mean over tasks of each task's completion loss on
// the merged model, and its gradient with respect to γ_i, ∂L/∂θ ⊙ δ_i, goes straight through to
// input i's scores, updated by normalized gradient descent with momentum (the step is the gradient
// over its RMS). Every eval_every steps each task's validation score is divided by its input's own
// score (the specialist alone, measured first); the masks with the best mean are kept, and each
// task's share of the loss becomes 0.1 + its shortfall (scaled to a mean of 1), so the effort goes
// to the tasks the merged model still lacks.
// So where the plain methods add whole deltas that answer each other's prompts (two specialists of
// "The … of … is" prompts each answering every such prompt their own way), a stitched mask also
// learns to leave out the part of its delta that hurts the other tasks. Related: Localize-and-
// Stitch (He et al., 2024) localizes each task alone and then stitches the masks; here the masks
// are learned jointly, on the merged model.
// Memory: the inputs' full weights (the caller's) and two (N) float32 vectors per input.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "data/batching.h"
#include "io/state_dict.h"
#include "model/causal_lm.h"

namespace sg::compose {

struct StitchTask {
  std::string name;
  const std::vector<data::EncodedSequence>* train = nullptr;  // the task's training sequences
  // The task's validation score (higher is better) of the model `work` holds when called.
  std::function<double(model::CausalLM&)> validate;
};

struct StitchOptions {
  // Defaults measured on the quick demo's four specialists (docs/results.md).
  double fraction = 0.3;    // each input's mask, of the candidate parameters, in (0, 1]
  int64_t steps = 600;
  double lr = 0.01;         // on the scores, per normalized step (the gradient over its RMS)
  double momentum = 0.9;    // heavy-ball momentum on the normalized steps (0: plain)
  int64_t batch_size = 32;  // training examples per task and step
  int64_t eval_every = 25;
  bool balance = true;      // weigh each task's loss by how far it falls short (else: equally)
  std::string exclude;      // regex: parameters left out of the candidates
  uint64_t seed = 0;        // batch order
};

struct StitchResult {
  std::vector<std::map<std::string, at::Tensor>> masks;  // per input: bool, per candidate tensor
  std::vector<double> alone;       // per task: its input alone on validation (the divisor)
  std::vector<double> validation;  // per task: the kept masks' validation score
  double best_normalized = 0;      // mean over tasks of validation / alone (alone <= 0: the score)
  int64_t best_step = 0;
  int64_t budget = 0;              // k per input
  int64_t candidates = 0;          // N
  double seconds = 0;
};

// Learns the masks; `inputs[i]` holds input i's full weights (same names and shapes as `base`, else
// throws) and `tasks[i]` is what it was trained for. `work` is a model of the base's architecture;
// it holds θ of the kept masks on return.
// With a `teacher` (another model of the architecture), task i's loss is the KL divergence from
// input i's next-token distributions (its weights copied into the teacher) at the completion
// positions, instead of the cross-entropy of the labels: the merged model learns to answer as each
// specialist does.
StitchResult stitch(model::CausalLM& work, const io::StateDict& base, const std::vector<const io::StateDict*>& inputs,
                    const std::vector<StitchTask>& tasks, const StitchOptions& options,
                    model::CausalLM* teacher = nullptr);

}  // namespace sg::compose
