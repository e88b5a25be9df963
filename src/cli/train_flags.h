// Flags several verbs share, declared once: the trainer's (finetune, pretrain), a built-in task's
// generation (eval, finetune, localize), comma-separated lists, and where the embedded data is.
#pragma once

#include <string>
#include <vector>

#include "cli/flags.h"
#include "data/task_source.h"
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

// How a built-in task is generated; the seed flag's name differs where --seed means training.
struct TaskFlags {
  int64_t seed = 0;
  int64_t train_size = 400;
};
void add_task_flags(FlagSet& flags, TaskFlags* task, const std::string& seed_flag, const std::string& seed_help);
// load_task(spec) with the flags' options; throws for a negative seed (naming seed_flag).
data::LoadedTask load_task_from_flags(const std::string& spec, const TaskFlags& task, const std::string& seed_flag);

// "a,b,,c" -> {"a", "b", "c"}.
std::vector<std::string> split_comma_list(const std::string& text);

// The repository's data/ directory (the embedded base model and tokenizer): the source tree the
// binary was built from, else ../data beside the executable.
std::string default_data_dir();

}  // namespace sg::cli
