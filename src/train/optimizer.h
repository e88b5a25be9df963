// Optimizers (SGD with momentum, AdamW) over named parameters, with their state as a StateDict
// so checkpoints store it in safetensors; the learning-rate schedule; global gradient clipping.
// Update rules follow torch.optim.SGD (dampening 0, not Nesterov) and torch.optim.AdamW.
#pragma once

#include <cstdint>
#include <string>

#include "io/state_dict.h"

namespace sg::train {

enum class OptimizerKind { kSgd, kAdamW };
// "sgd" / "adamw"; throws for another name.
OptimizerKind optimizer_kind_from_name(const std::string& name);
std::string optimizer_kind_name(OptimizerKind kind);

struct OptimizerOptions {
  OptimizerKind kind = OptimizerKind::kSgd;
  double momentum = 0.9;      // SGD
  double weight_decay = 0.0;  // SGD: added to the gradient; AdamW: decoupled
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // AdamW
};

class Optimizer {
 public:
  // parameters: the tensors to train (requires_grad), by name.
  Optimizer(io::StateDict parameters, OptimizerOptions options);

  // One update with learning rate `lr` from the parameters' current .grad() (a parameter without
  // a gradient is skipped).
  void step(double lr);
  void zero_grad();
  int64_t steps_taken() const { return steps_taken_; }

  // "<name>.momentum_buffer" (SGD) or "<name>.exp_avg" / "<name>.exp_avg_sq" (AdamW), and
  // "optimizer.step" (int64 scalar).
  io::StateDict state() const;
  // Restores state() output; throws naming `source` for a missing or misshapen entry.
  void load_state(const io::StateDict& state, const std::string& source);

  const io::StateDict& parameters() const { return parameters_; }

 private:
  io::StateDict parameters_;
  OptimizerOptions options_;
  std::vector<at::Tensor> first_moment_;   // SGD momentum buffer / AdamW exp_avg
  std::vector<at::Tensor> second_moment_;  // AdamW exp_avg_sq
  int64_t steps_taken_ = 0;
};

// Scales every gradient by max_norm / total_norm when the global L2 norm exceeds max_norm
// (max_norm <= 0: no clipping). Returns the norm before clipping (inf/nan pass through).
double clip_grad_norm(const io::StateDict& parameters, double max_norm);

struct ScheduleOptions {
  int64_t warmup_steps = 0;   // linear from lr/warmup to lr
  int64_t total_steps = 1;    // cosine from lr down to lr * min_lr_ratio at total_steps
  double min_lr_ratio = 0.0;
};
// The learning rate of 0-based step `step`.
double scheduled_lr(double base_lr, int64_t step, const ScheduleOptions& schedule);

}  // namespace sg::train
