#include "cli/train_flags.h"

#include <unistd.h>

#include <sstream>

#include "util/error.h"
#include "util/file.h"

#ifndef SKILLGRAFT_DATA_DIR
#define SKILLGRAFT_DATA_DIR ""
#endif

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

void add_task_flags(FlagSet& flags, TaskFlags* task, const std::string& seed_flag, const std::string& seed_help) {
  flags.add_int(seed_flag, &task->seed, seed_help);
  flags.add_int("n", &task->train_size, "a built-in task's train examples (validation and test get n/4 each)");
}

data::LoadedTask load_task_from_flags(const std::string& spec, const TaskFlags& task, const std::string& seed_flag) {
  SG_CHECK(task.seed >= 0, "--" << seed_flag << " must be >= 0, got " << task.seed);
  data::BuiltinTaskOptions options;
  options.seed = static_cast<uint64_t>(task.seed);
  options.train_size = task.train_size;
  return data::load_task(spec, options);
}

std::vector<std::string> split_comma_list(const std::string& text) {
  std::vector<std::string> items;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) {
    if (!item.empty()) items.push_back(item);
  }
  return items;
}

std::string default_data_dir() {
  const std::string built_in = SKILLGRAFT_DATA_DIR;
  if (!built_in.empty() && util::file_exists(util::join_path(built_in, "models/stories260K.bin"))) return built_in;
  char path[4096];
  const ssize_t length = ::readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (length > 0) {
    const std::string exe(path, static_cast<size_t>(length));
    return util::join_path(exe.substr(0, exe.rfind('/')), "../data");
  }
  return "data";
}

}  // namespace sg::cli
