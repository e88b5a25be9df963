// PEFT LoRA adapters as LoRA skills: import a PEFT adapter directory (adapter_config.json +
// adapter_model.safetensors, with rank_pattern / alpha_pattern and rslora) against a base's weights,
// and export a LoRA skill as an adapter PEFT loads and import reads back bit for bit.
#pragma once

#include <string>

#include "io/state_dict.h"
#include "skills/lora_skill.h"

namespace sg::library {

// The adapter at `dir` as a LoRA skill on `base_weights` (HF names; the skill's base_fingerprint is
// `base_fingerprint`, source = dir, task = "", metrics {"peft": {r, lora_alpha, use_rslora,
// base_model_name_or_path}}). Per module M (key base_model.model.M.lora_A.weight): the tensor is
// M.weight; A and B are kept as float32 (exact from F16/BF16/F32); scale = alpha_M / r_M (or
// alpha_M / sqrt(r_M) with use_rslora) with r_M and alpha_M resolved by PEFT's pattern rules (see
// io/peft_adapter.h); transposed for a GPT-2 Conv1D weight (PEFT's fan_in_fan_out, which PEFT sets
// by the module's type whatever the config says, and so do we). Everything is checked before the
// skill is returned; one line naming the file and key with a hint for: anything read_peft_adapter
// refuses, a module the base does not have ("maybe the adapter was made for another base model?"),
// a module target_modules does not select, an embedding module, a pair whose shape does not fit the
// base weight, a rank differing from the one rank_pattern / r gives the module.
skills::LoraSkill import_peft_adapter(const std::string& dir, const io::StateDict& base_weights,
                                      const std::string& base_fingerprint);

// Writes `skill` to `dir` as a PEFT adapter (each file atomic, DIR created): keys
// base_model.model.M.lora_A.weight / .lora_B.weight (float32), and a LoraConfig whose r and
// lora_alpha are the most common rank and alpha, with rank_pattern / alpha_pattern (full module
// names, first-match-safe) for the modules that differ, use_rslora false, fan_in_fan_out true when a
// tensor is a Conv1D weight, target_modules the module names. Each module's alpha is chosen so that
// PEFT's alpha / r gives the skill's scale exactly in float64; where no float64 alpha can (a scale
// not made by LoRA training or conversion), the nearest is used and a line is logged. Throws for a
// tensor that is not a "<module>.weight" matrix, an embedding, or a transposition that disagrees
// with the weight's type.
void export_peft_adapter(const std::string& dir, const skills::LoraSkill& skill,
                         const std::string& base_model_name_or_path);

}  // namespace sg::library
