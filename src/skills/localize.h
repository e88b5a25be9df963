// Skill localization: which few parameters of a fine-tune carry its skill. A mask γ with exactly
// k = fraction · N ones over the candidate parameters defines the graft θ(γ) = θ_base + γ ⊙ δ,
// δ = θ_ft − θ_base. Methods: a budget-exact learned mask (graft: straight-through top-k on
// scores trained with normalized gradient descent or Adam), the paper's sigmoid relaxation
// (graft-sigmoid), and the baselines at the same budget (movement: top-k |δ|; saliency:
// top-k |δ ⊙ ∂L/∂θ|; random). Top-k ties at the k-th value: lowest flat index first.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/batching.h"
#include "io/state_dict.h"
#include "model/causal_lm.h"

namespace sg::skills {

enum class LocalizeMethod { kGraft, kGraftSigmoid, kMovement, kSaliency, kRandom };
LocalizeMethod localize_method_from_name(const std::string& name);  // graft, graft-sigmoid, ...
std::string localize_method_name(LocalizeMethod method);

// How the graft methods update the mask scores from ∂L/∂γ.
enum class ScoreOptimizer { kNormalizedSgd, kAdam };
ScoreOptimizer score_optimizer_from_name(const std::string& name);  // nsgd, adam
double default_score_lr(ScoreOptimizer optimizer);                   // nsgd 0.1, adam 0.02

struct LocalizeOptions {
  LocalizeMethod method = LocalizeMethod::kGraft;
  double fraction = 0.01;   // of the candidate parameters, in (0, 1]
  std::string exclude;      // regex: parameters left out of the candidates (default: none)
  // 300 steps: on the demo's opposite and sentiment specialists at 1% (docs/results.md, session 8),
  // 100 steps recover 0.88-0.90 / 0.25-1.24 of the gain, 300 steps 0.99-1.01 / 1.00-1.39 (3x the time).
  int64_t steps = 300;      // graft / graft-sigmoid optimisation steps
  ScoreOptimizer score_optimizer = ScoreOptimizer::kNormalizedSgd;
  // nsgd defaults measured on the quick demo's specialists at 1%, 100 steps (docs/results.md): with
  // momentum 0.9, lr 0.1 and the cosine decay, opposite 0.27 -> 0.55, country_code 0.20 -> 0.39
  // against plain steps at lr 0.5. With --momentum 0, lr ~0.5 suits.
  double lr = 0.1;          // on the mask scores (default_score_lr of the optimizer)
  double momentum = 0.9;    // nsgd: heavy-ball momentum of the normalized steps (0: plain)
  bool decay = true;        // nsgd: lr decays to 0 over the steps (cosine)
  int64_t batch_size = 128; // training examples per step (and for saliency's gradient)
  int64_t eval_every = 10;  // validation of the current mask; the best is kept
  double sigmoid_bias = 10; // graft-sigmoid: γ = γ0 + (1 − 2γ0) σ(S − b)
  uint64_t seed = 0;
  // Graft methods: the loss a step minimises in place of the completion cross-entropy of the
  // training examples. Called with work holding θ(γ) and the step's number; adds its gradient to
  // the .grad of work's parameters (zeroed before the call) and returns the loss. See removal.h.
  std::function<double(model::CausalLM& work, int64_t step)> loss;
};

// The mask as a validation score sees it: the model holds θ(γ) when this is called.
using GraftScore = std::function<double(model::CausalLM&)>;

struct LocalizeResult {
  std::map<std::string, at::Tensor> mask;  // bool, the parameter's shape, one per candidate tensor
  int64_t selected = 0;                    // ones in the mask (exactly the budget k)
  int64_t candidates = 0;                  // N
  double best_validation = 0;              // graft methods: the kept mask's validation score
  int64_t best_step = 0;
  double relaxed_mass = 0;                 // graft-sigmoid: Σγ before rounding, in units of k
  double seconds = 0;
};

// The candidate tensors: every parameter of `base` whose name does not match `exclude`. Throws
// when base and finetuned differ in names or shapes ("not the same architecture").
std::vector<std::string> candidate_names(const io::StateDict& base, const io::StateDict& finetuned,
                                         const std::string& exclude);

// Localizes. `work` is a model of the base's architecture; its weights are overwritten with
// grafts while this runs and hold θ(best mask) on return. `examples` are the task's training
// sequences; `score` is consulted every eval_every steps (graft methods only).
LocalizeResult localize(model::CausalLM& work, const io::StateDict& base, const io::StateDict& finetuned,
                        const std::vector<data::EncodedSequence>& examples, const LocalizeOptions& options,
                        const GraftScore& score);

// One graft / graft-sigmoid optimisation on `work`, a step at a time: localize() runs it, the
// benchmark (bench/bench_localize) times step(). Keeps references to work, base, finetuned and
// examples (they must outlive it); not thread-safe. Masks are k sorted flat indices (int64) over
// the candidates laid end to end in candidate_names order.
// Memory, N = candidate parameters: besides base, finetuned and work (with its .grad) it holds
// three (N) float32 vectors — the scores, ∂L/∂γ, and one more: the momentum of nsgd (none without
// momentum) or graft-sigmoid's σ — plus k-entry index lists. δ is never stored: it is
// θ_ft − θ_base, tensor by tensor. --score-optimizer adam needs two more (N) vectors (m and v).
class GraftOptimizer {
 public:
  // Writes the base into `work` and sets the scores: |δ| / (k-th largest |δ|) for graft (its
  // first mask is the movement mask), seeded uniform noise for graft-sigmoid.
  GraftOptimizer(model::CausalLM& work, const io::StateDict& base, const io::StateDict& finetuned,
                 const std::vector<data::EncodedSequence>& examples, const LocalizeOptions& options);
  ~GraftOptimizer();
  GraftOptimizer(const GraftOptimizer&) = delete;
  GraftOptimizer& operator=(const GraftOptimizer&) = delete;

  // One optimisation step on the next batch: forward and backward at the current hard mask
  // (graft) or the relaxed γ (graft-sigmoid), ∂L/∂γ = ∂L/∂θ ⊙ δ, score update. Returns the
  // batch's mean loss. Leaves work at θ(γ) of that step.
  double step();
  // The current hard mask (k sorted flat indices): top-k of the scores (graft) or of γ (sigmoid).
  at::Tensor mask();
  // Makes work hold θ(mask) exactly: θ_ft at the mask, θ_base elsewhere (only the changed
  // entries are written when work already holds a hard mask).
  void write(const at::Tensor& mask);
  // The mask as one bool tensor per candidate, in the parameter's shape.
  std::map<std::string, at::Tensor> split(const at::Tensor& mask) const;
  double relaxed_mass();  // graft-sigmoid: Σγ in units of k

  int64_t candidates() const;    // N
  int64_t budget() const;        // k
  int64_t buffer_bytes() const;  // bytes of the (N)-sized vectors it holds now

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Writes θ_base + mask ⊙ δ into `weights` (the work model's state dict), in place.
void write_graft(io::StateDict& weights, const io::StateDict& base, const io::StateDict& finetuned,
                 const std::map<std::string, at::Tensor>& mask);

}  // namespace sg::skills
