// LoRA on a model's projection layers (Linear, GPT-2 Conv1D): attaching fresh pairs, the pairs as a
// PEFT-named StateDict, PEFT adapter directories (adapter_config.json + adapter_model.safetensors),
// merging into the base weights and removing. Does not freeze base parameters (the trainer does).
//
// Pairs live unregistered on the layers (see LoraPair in model/layers.h): model_state_dict() and
// checkpoints never contain them. They act in every forward path (with grad, no-grad, KV cache).
// Like the model, not thread-safe: one thread at a time.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/state_dict.h"
#include "model/causal_lm.h"

namespace sg::model {

struct LoraOptions {
  int64_t rank = 8;
  double alpha = 16;
  std::vector<std::string> targets;  // module-name suffixes: "q_proj" matches model.layers.3.self_attn.q_proj
  bool rslora = false;               // scale alpha/sqrt(rank) instead of alpha/rank
  double dropout = 0;                // recorded in adapter_config.json only
  uint64_t seed = 0;                 // init of A (kaiming-uniform a=sqrt(5) like PEFT); B = 0
};

// alpha / rank, or alpha / sqrt(rank) with rslora.
double lora_scale(const LoraOptions& options);

// Attaches fresh pairs to every Linear/Conv1D whose module name equals a target or ends with
// "." + target, on the base weight's device and dtype, with requires_grad. A is uniform in
// ±1/sqrt(in) (PEFT's kaiming-uniform a=sqrt(5)), drawn from one generator seeded with
// options.seed in sorted module order; B = 0, so the model's output is unchanged.
// Returns the attached module names (HF names without ".weight"), sorted. Throws sg::Error (and
// attaches nothing) when a target matches no module (listing the suffixes available), when
// targets is empty, when rank < 1, or when a matched module already has a pair.
std::vector<std::string> attach_lora(CausalLM& model, const LoraOptions& options);

// The attached pairs under PEFT keys base_model.model.<module>.lora_A.weight (r, in) /
// .lora_B.weight (out, r), sorted by key. The tensors are the model's own (shared storage), so an
// optimizer built over this map trains the model's pairs.
io::StateDict lora_state_dict(const CausalLM& model);

bool has_lora(const CausalLM& model);

// Writes DIR/adapter_config.json (PEFT LoraConfig fields) and DIR/adapter_model.safetensors
// (the pairs in their dtype, sorted keys, metadata format=pt), each atomically, creating DIR. target_modules is options.targets, or the attached modules' last name segments when empty.
// Throws when the model has no pairs or a pair's rank/scale disagrees with `options`.
void save_lora_adapter(const std::string& dir, const CausalLM& model, const LoraOptions& options,
                       const std::string& base_model_name_or_path);

// Reads a PEFT adapter directory, attaches pairs to the modules its keys name and fills them.
// Keys may carry the ".default" adapter-name segment (base_model.model.X.lora_A.default.weight).
// Everything is checked before anything is attached; errors name the file and key with a hint:
// missing files, a non-LoRA key, a key naming no projection of this model, an A without its B,
// shapes that do not fit (rank differing from r included), r/lora_alpha missing, unsupported
// rank_pattern/alpha_pattern, a module that already has a pair. Returns the options read
// (targets = target_modules, seed 0).
LoraOptions load_lora_adapter(CausalLM& model, const std::string& dir);

// Folds scale * B A into each base weight (under NoGradGuard; transposed for Conv1D) and removes
// the pairs. The forward is then the adapted one up to float rounding.
void merge_lora(CausalLM& model);

// Removes the pairs; base weights untouched (the forward is the base's again, bit for bit).
void detach_lora(CausalLM& model);

}  // namespace sg::model
