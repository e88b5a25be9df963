// The training loop shared by finetune and pretrain: batches of encoded sequences in a seeded
// order, loss on completion tokens only, gradient accumulation and clipping, a warmup + cosine
// schedule, periodic evaluation with the best kept by a hook, early stop at a target score,
// checkpoints that resume to exactly the weights of an uninterrupted run, and a progress line.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/batching.h"
#include "io/state_dict.h"
#include "model/causal_lm.h"
#include "train/optimizer.h"

namespace sg::train {

struct TrainOptions {
  OptimizerOptions optimizer;
  double lr = 0.1;
  int64_t steps = 300;
  int64_t batch_size = 16;       // sequences per micro-batch
  int64_t grad_accum = 1;        // micro-batches per optimizer step
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.0;     // the cosine ends at lr * min_lr_ratio
  double clip = 1.0;             // global gradient-norm clip; <= 0: off
  int64_t eval_every = 50;       // 0: evaluate at the end only
  double target_score = 0.9;     // stop once an evaluation reaches it; > 1: never
  int64_t checkpoint_every = 50; // 0: no checkpoints (and no resume)
  uint64_t seed = 0;
  std::string run_dir;           // checkpoints go to run_dir/checkpoint
  bool resume = false;
  // Everything a resumed run must share with the interrupted one (base fingerprint, model config,
  // trainable tensors, task ...). Compared on --resume.
  nlohmann::json identity;
};

struct TrainHooks {
  // The validation score, higher is better (null: the negative mean training loss of the step).
  std::function<double()> evaluate;
  // Called when an evaluation beats every earlier one: persist the model as it is now.
  std::function<void(int64_t step, double score)> save_best;
};

struct TrainResult {
  int64_t steps = 0;             // optimizer steps taken in total (including before a resume)
  double best_score = 0;
  int64_t best_step = 0;
  std::string stop_reason;       // "steps" or "target_score"
  double final_loss = 0;
  int64_t tokens = 0;            // tokens processed in this process (padding excluded)
  double seconds = 0;            // training time in this process (evaluation excluded)
  double tokens_per_second = 0;
  bool resumed = false;
  nlohmann::json log = nlohmann::json::array();  // {"step","loss","lr","grad_norm"} and {"step","eval"}
};

// Trains `trainable` (tensors of `model`, requires_grad set by the caller) on `examples`.
// Throws sg::Error when the loss or gradient norm stops being finite (the last checkpoint and the
// best model stay as they were), and for a --resume whose checkpoint does not match `identity`.
TrainResult train(model::CausalLM& model, const io::StateDict& trainable,
                  const std::vector<data::EncodedSequence>& examples, const TrainOptions& options,
                  const TrainHooks& hooks);

// The summed cross-entropy of the batch's targets (those not kIgnoreTarget), as a scalar tensor
// that carries gradients when they are recorded.
at::Tensor batch_loss_sum(model::CausalLM& model, const data::Batch& batch);

// Which example sits at each position of the run's stream: epoch e is a Fisher-Yates shuffle drawn
// from its own seeded generator, so any position is found from (seed, position) alone and a resumed
// run sees the same batches. Positions are consumed in order, one epoch's shuffle cached.
class EpochOrder {
 public:
  EpochOrder(int64_t count, uint64_t seed) : count_(count), seed_(seed) {}
  int64_t at(int64_t position);

 private:
  void shuffle(int64_t epoch);
  int64_t count_;
  uint64_t seed_;
  int64_t epoch_ = -1;
  std::vector<int64_t> order_;
};

// The example indices of micro-batch `micro_batch` (0-based over the run): epochs are seeded
// permutations of all examples, consumed in order.
std::vector<int64_t> micro_batch_indices(int64_t example_count, int64_t batch_size, int64_t micro_batch,
                                         uint64_t seed);

}  // namespace sg::train
