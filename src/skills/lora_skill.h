// Low-rank and dense skills as data: a LoRA skill (per weight, a pair B·A and its scale) and a dense
// skill (per tensor, the whole delta), their skill files, applying them to a base's weights, and the
// kind of any skill file. Sparse skills live in skill.h. Names are the HF weight names throughout.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

#include "io/state_dict.h"

namespace sg::skills {

// One weight's low-rank delta: delta = scale * B A, of the weight's shape (transposed for a GPT-2
// Conv1D weight, stored (in, out): delta = (scale * B A)^T).
struct LoraTensorDelta {
  at::Tensor a;                // (r, in) float32
  at::Tensor b;                // (out, r) float32
  double scale = 1;            // alpha / r, or alpha / sqrt(r) with rslora
  std::vector<int64_t> shape;  // the base weight's shape
  bool transposed = false;     // GPT-2 Conv1D weight
};

struct LoraSkill {
  std::map<std::string, LoraTensorDelta> tensors;  // by HF weight name ("model.layers.0.self_attn.q_proj.weight")
  std::string base_fingerprint;
  std::string task;
  nlohmann::json metrics = nlohmann::json::object();
  std::string source;  // the file it was loaded from ("" when made in memory)
  int64_t parameter_count() const;  // sum of numel(A) + numel(B)
};

struct DenseSkill {
  std::map<std::string, at::Tensor> tensors;  // by HF tensor name: the whole delta, float32, tensor's shape
  std::string base_fingerprint;
  std::string task;
  nlohmann::json metrics = nlohmann::json::object();
  std::string source;
  int64_t parameter_count() const;
};

// The dense delta of one LoRA weight (float32, the weight's shape).
at::Tensor lora_dense_delta(const LoraTensorDelta& tensor);

// Skill files (docs/formats.md): LoRA: "<name>.lora_A" (r, in), "<name>.lora_B" (out, r), metadata
// kind=lora plus per-weight scales, shapes and transposition; dense: "<name>.delta", kind=dense.
// Writes are atomic; loads validate (truncated or foreign file, missing partner, ranks or shapes that
// disagree) and throw naming the file with a hint.
void save_lora_skill(const std::string& path, const LoraSkill& skill);
LoraSkill load_lora_skill(const std::string& path);
void save_dense_skill(const std::string& path, const DenseSkill& skill);
DenseSkill load_dense_skill(const std::string& path);

// Adds (or subtracts) the deltas in place under NoGradGuard; throws, changing nothing, when the
// weights' fingerprint is not the skill's base (check_base), a tensor is missing or has another shape.
void apply_lora_skill(io::StateDict& weights, const LoraSkill& skill, bool check_base = true);
void apply_dense_skill(io::StateDict& weights, const DenseSkill& skill, bool check_base = true);
// Subtract the deltas (graft --remove). Like remove_sparse_skill they check names and shapes but not
// the fingerprint (the weights are grafted). Apply then remove restores the base up to float32
// rounding of w + d - d (not bit for bit: a LoRA or dense delta has no restore entries).
void remove_lora_skill(io::StateDict& weights, const LoraSkill& skill);
void remove_dense_skill(io::StateDict& weights, const DenseSkill& skill);

// Where a skill's parameters are, for inspect --json: {kind, base_fingerprint, task, metrics,
// parameters, tensors, per_kind: {kind: parameters}, per_tensor: {name: {...}}}; per_tensor has
// rank, scale, shape, transposed (LoRA) or shape, norm (dense). Kinds as skills::layer_and_kind.
nlohmann::json describe_lora_skill(const LoraSkill& skill);
nlohmann::json describe_dense_skill(const DenseSkill& skill);

// Whether an HF weight name is a GPT-2 Conv1D weight, stored (in, out): transformer.h.N.attn.c_attn,
// .attn.c_proj, .mlp.c_fc, .mlp.c_proj (".weight"). GPT-2 is the one architecture skillgraft reads
// that has Conv1D, so the name decides (a StateDict carries no layer types).
bool is_conv1d_weight(const std::string& name);
// Whether an HF tensor name is a token or position embedding (model.embed_tokens.weight,
// transformer.wte.weight, transformer.wpe.weight): 2-D, but not a projection a PEFT LoRA pair or
// the model's adapter hooks can sit on.
bool is_embedding_weight(const std::string& name);

// What a skill file is, from its header alone: kind ("sparse", "lora", "dense", "neurons"),
// base_fingerprint, task, metrics, parameter_count (stored numbers), file bytes. Throws for a file
// that is not a skillgraft skill.
struct SkillFileInfo {
  std::string kind;
  std::string base_fingerprint;
  std::string task;
  nlohmann::json metrics = nlohmann::json::object();
  int64_t parameter_count = 0;
  int64_t file_bytes = 0;
};
SkillFileInfo read_skill_file_info(const std::string& path);

}  // namespace sg::skills
