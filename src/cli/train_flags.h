// The trainer's flags, declared once for finetune and pretrain.
#pragma once

#include <string>

#include "cli/flags.h"
#include "train/trainer.h"

namespace sg::cli {

struct TrainFlags {
  std::string optimizer = "sgd";
  double lr = 0;  // 0: the optimizer's default (sgd 0.1, adamw 1e-3)
  double momentum = 0.9;
  double weight_decay = 0;
  int64_t steps = 300;
  int64_t batch_size = 16;
  int64_t grad_accum = 1;
  int64_t warmup = -1;  // -1: 5% of the steps
  double min_lr_ratio = 0.1;
  double clip = 1.0;
  int64_t eval_every = 50;
  double target_score = 0.9;
  int64_t checkpoint_every = 50;
  int64_t seed = 0;
  bool resume = false;
};

void add_train_flags(FlagSet& flags, TrainFlags* train);
// Checks the values and turns them into TrainOptions (run_dir/identity left to the caller).
train::TrainOptions to_train_options(const TrainFlags& train);

}  // namespace sg::cli
