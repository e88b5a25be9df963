// skillgraft finetune: teach a base model one task (full, LoRA adapter, or selected parameters).
#include <cstdio>

#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/train_flags.h"
#include "eval/evaluator.h"
#include "model/lora.h"
#include "train/finetune.h"
#include "util/error.h"
#include "util/log.h"

namespace sg::cli {

int run_finetune(const std::vector<std::string>& args) {
  std::string base_dir, task_spec, out_dir, mode = "full", targets = "q_proj,v_proj", params, layers;
  int64_t rank = 8, eval_examples = 100;
  TaskFlags task_flags;
  double alpha = 16;
  bool rslora = false;
  TrainFlags train_flags;
  CommonOptions common;
  FlagSet flags("finetune", "skillgraft finetune --base DIR --task TASK --out DIR [options]",
                "Fine-tunes a base model on a task (a built-in name, see `skillgraft tasks list`, or a directory\n"
                "with train/validation/test.jsonl). The loss is taken on completion tokens only. Every\n"
                "--eval-every steps the model is scored on validation and the best is kept in --out: an HF\n"
                "model directory (--mode full, select) or a PEFT adapter (--mode lora). A run killed at any\n"
                "point continues with --resume to exactly the weights of an uninterrupted run.");
  flags.add_string("base", &base_dir, "base model directory (config.json + model.safetensors + tokenizer)", true);
  flags.add_string("task", &task_spec, "built-in task name or task directory", true);
  flags.add_string("out", &out_dir, "output directory (the best model, training.json, the resume checkpoint)", true);
  flags.add_string("mode", &mode, "full | lora | select");
  flags.add_int("rank", &rank, "LoRA rank r");
  flags.add_double("alpha", &alpha, "LoRA alpha (delta W = B A alpha / r)");
  flags.add_string("targets", &targets, "LoRA target modules, comma-separated name suffixes");
  flags.add_bool("rslora", &rslora, "LoRA scale alpha / sqrt(r)");
  flags.add_string("params", &params, "select: regex searched in parameter names (e.g. 'mlp|attn.o_proj')");
  flags.add_string("layers", &layers, "select: layer range A-B (all parameters of those layers)");
  flags.add_int("eval-examples", &eval_examples, "validation examples per evaluation (0 = all)");
  add_task_flags(flags, &task_flags, "task-seed", "seed of a built-in task's examples");
  add_train_flags(flags, &train_flags);
  flags.add_common(&common.threads, &common.json_path, &common.quiet);
  if (!flags.parse(args)) return 0;
  apply_common(common);

  train::FinetuneOptions options;
  options.base_dir = base_dir;
  options.out_dir = out_dir;
  options.mode = train::finetune_mode_from_name(mode);
  options.lora.rank = rank;
  options.lora.alpha = alpha;
  options.lora.rslora = rslora;
  options.lora.targets = split_comma_list(targets);
  options.lora.seed = static_cast<uint64_t>(train_flags.seed);
  options.select_params = params;
  options.select_layers = layers;
  options.eval_examples = eval_examples;
  options.train = to_train_options(train_flags);
  SG_CHECK(options.mode == train::FinetuneMode::kSelect || (params.empty() && layers.empty()),
           "--params/--layers apply to --mode select only; hint: add --mode select");

  const data::LoadedTask task = load_task_from_flags(task_spec, task_flags, "task-seed");
  eval::EvalOptions eval_options;
  const train::ScoreFunction score = [&](model::CausalLM& model, const io::Tokenizer& tokenizer,
                                         const std::vector<data::Example>& examples) {
    return eval::evaluate(model, tokenizer, examples, eval_options).score;
  };
  train::FinetuneResult result = train::finetune(options, task, score);

  std::printf("%s fine-tune on %s (%s): best validation %s %.3f at step %lld of %lld (stop: %s); %.0f tokens/s; "
              "%lld of %lld parameters trained -> %s\n",
              mode.c_str(), task.name.c_str(), task.kind.c_str(), task.metric.c_str(), result.train.best_score,
              static_cast<long long>(result.train.best_step), static_cast<long long>(result.train.steps),
              result.train.stop_reason.c_str(), result.train.tokens_per_second,
              static_cast<long long>(result.trainable_parameters), static_cast<long long>(result.total_parameters),
              out_dir.c_str());
  nlohmann::json output = result.to_json();
  output["task"] = task.name;
  output["kind"] = task.kind;
  output["metric"] = task.metric;
  output["mode"] = mode;
  output["out"] = out_dir;
  output["log"] = result.train.log;
  write_json_output(common, output);
  return 0;
}

}  // namespace sg::cli
