#include "cli/train_flags.h"

#include "util/error.h"

namespace sg::cli {

void add_train_flags(FlagSet& flags, TrainFlags* t) {
  flags.add_string("optimizer", &t->optimizer, "sgd (momentum; keeps a skill's change concentrated) or adamw");
  flags.add_double("lr", &t->lr, "peak learning rate; 0 = the optimizer's default (sgd 0.1, adamw 0.001)");
  flags.add_double("momentum", &t->momentum, "SGD momentum");
  flags.add_double("weight-decay", &t->weight_decay, "weight decay (AdamW: decoupled)");
  flags.add_int("steps", &t->steps, "optimizer steps");
  flags.add_int("batch-size", &t->batch_size, "sequences per micro-batch");
  flags.add_int("grad-accum", &t->grad_accum, "micro-batches accumulated per optimizer step");
  flags.add_int("warmup", &t->warmup, "linear warmup steps; -1 = 5% of --steps");
  flags.add_double("min-lr-ratio", &t->min_lr_ratio, "the cosine schedule ends at lr * this");
  flags.add_double("clip", &t->clip, "global gradient-norm clip; 0 = off");
  flags.add_int("eval-every", &t->eval_every, "evaluate on validation every N steps (0 = at the end only)");
  flags.add_double("target-score", &t->target_score, "stop early once validation reaches this score (>1 = never)");
  flags.add_int("checkpoint-every", &t->checkpoint_every, "write a resumable checkpoint every N steps (0 = never)");
  flags.add_int("seed", &t->seed, "random seed: data order and LoRA init (same seed, same weights)");
  flags.add_bool("resume", &t->resume, "continue the interrupted run whose checkpoint is in --out");
}

train::TrainOptions to_train_options(const TrainFlags& t) {
  train::TrainOptions options;
  options.optimizer.kind = train::optimizer_kind_from_name(t.optimizer);
  options.optimizer.momentum = t.momentum;
  options.optimizer.weight_decay = t.weight_decay;
  options.lr = t.lr != 0 ? t.lr : (options.optimizer.kind == train::OptimizerKind::kSgd ? 0.1 : 1e-3);
  SG_CHECK(t.lr >= 0, "--lr must be > 0, got " << t.lr);
  SG_CHECK(t.seed >= 0, "--seed must be >= 0, got " << t.seed);
  SG_CHECK(t.warmup >= -1, "--warmup must be >= 0 (or -1 for 5% of --steps), got " << t.warmup);
  options.steps = t.steps;
  options.batch_size = t.batch_size;
  options.grad_accum = t.grad_accum;
  options.warmup_steps = t.warmup >= 0 ? t.warmup : t.steps / 20;
  options.min_lr_ratio = t.min_lr_ratio;
  options.clip = t.clip;
  options.eval_every = t.eval_every;
  options.target_score = t.target_score;
  options.checkpoint_every = t.checkpoint_every;
  options.seed = static_cast<uint64_t>(t.seed);
  options.resume = t.resume;
  return options;
}

}  // namespace sg::cli
