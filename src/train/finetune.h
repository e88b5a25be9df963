// Fine-tuning a base model on a task: full, LoRA (a PEFT adapter) or selected parameters, with
// the best model (by validation score) kept in the output directory. Evaluation comes in as a
// callback so this layer does not depend on eval/.
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <string>
#include <vector>

#include "data/task_source.h"
#include "io/tokenizer.h"
#include "model/causal_lm.h"
#include "model/lora.h"
#include "train/trainer.h"

namespace sg::train {

enum class FinetuneMode { kFull, kLora, kSelect };
FinetuneMode finetune_mode_from_name(const std::string& name);  // full | lora | select
std::string finetune_mode_name(FinetuneMode mode);

struct FinetuneOptions {
  std::string base_dir;
  std::string out_dir;
  FinetuneMode mode = FinetuneMode::kFull;
  model::LoraOptions lora;     // kLora
  std::string select_params;   // kSelect: ECMAScript regex searched in each parameter name
  std::string select_layers;   // kSelect: "A-B" (or "A"): every parameter of layers A..B
  TrainOptions train;          // run_dir and identity are filled in from the above
  int64_t eval_examples = 100; // validation examples per evaluation; 0: all
};

// The validation score of the model on examples (higher is better).
using ScoreFunction =
    std::function<double(model::CausalLM&, const io::Tokenizer&, const std::vector<data::Example>&)>;

struct FinetuneResult {
  TrainResult train;
  std::vector<std::string> trainable;  // names of the trained tensors
  int64_t trainable_parameters = 0;
  int64_t total_parameters = 0;        // of the base
  std::string base_fingerprint;
  nlohmann::json to_json() const;
};

// Loads the base, trains on task.splits.train (scored on task.splits.validation), and writes the
// best model to options.out_dir: an HF model directory (full, select) or a PEFT adapter (lora),
// plus training.json (options, result, metrics log). The checkpoint for --resume lives in
// out_dir/checkpoint while the run is unfinished and is removed at the end.
FinetuneResult finetune(const FinetuneOptions& options, const data::LoadedTask& task, const ScoreFunction& score);

// The parameters selected by a regex and/or a layer range (kSelect); throws when none match.
std::vector<std::string> select_parameters(const model::CausalLM& model, const std::string& regex,
                                           const std::string& layers);

}  // namespace sg::train
