// Skills as data: a sparse delta over a base model's parameters (the values a fine-tune changed at
// a chosen set of positions), stored as a safetensors skill file, applied to and removed from a
// base. Names are the HF tensor names; positions are flat indices into each tensor.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

#include "io/state_dict.h"

namespace sg::skills {

// One tensor's part of a sparse skill: sorted flat indices (int64) and the delta at each.
struct SparseTensorDelta {
  at::Tensor indices;  // (K) int64, sorted ascending, unique, < numel
  at::Tensor delta;    // (K) float32: theta_ft - theta_base at those indices
  std::vector<int64_t> shape;  // the full tensor's shape
  // The elements where float32 cannot undo the delta exactly (fl(fl(b + d) - d) != b, mostly
  // weights near zero that moved far): their flat indices (a sorted subset of `indices`) and base
  // values, so removal writes the base back bit for bit. Undefined or empty when none.
  at::Tensor restore_indices;  // (R) int64
  at::Tensor restore_values;   // (R) float32
};

struct SparseSkill {
  std::map<std::string, SparseTensorDelta> tensors;  // by HF tensor name
  std::string base_fingerprint;                      // io::state_dict_fingerprint of the base
  std::string task;
  nlohmann::json metrics = nlohmann::json::object();  // make_sparse_skill sets nudged_elements, inexact_elements
  std::string source;  // the file it was loaded from, for messages ("" when made in memory)
  int64_t parameter_count() const;                   // total selected positions
};

// The sparse skill that grafts `mask` positions of (finetuned - base). mask: name -> bool tensor of
// the parameter's shape (absent names: nothing selected). Throws when shapes disagree. Tensors with
// nothing selected are left out. Deltas are chosen so that apply then remove restores the base bit
// for bit wherever float32 allows (see skill.cpp); metrics["nudged_elements"] counts the deltas moved
// by a few ulps for that, metrics["inexact_elements"] those no float32 delta can make exact.
SparseSkill make_sparse_skill(const io::StateDict& base, const io::StateDict& finetuned,
                              const std::map<std::string, at::Tensor>& mask, const std::string& task);

// Writes the skill file (format of ARCHITECTURE.md / docs/formats.md): "<name>.idx" (I64) and
// "<name>.delta" (F32) per tensor; __metadata__ format=skillgraft.skill, version, kind=sparse,
// base_fingerprint, task, metrics (JSON string), created, tool_version, shapes (JSON). Atomic.
void save_sparse_skill(const std::string& path, const SparseSkill& skill);
// Reads and validates a skill file (throws naming the file for a truncated or foreign file,
// a missing .idx/.delta partner, unsorted or out-of-range indices, mismatched lengths, wrong dtypes).
// The tensors view the file's private mapping (no copy).
SparseSkill load_sparse_skill(const std::string& path);
// Whether safetensors metadata says format=skillgraft.skill (any kind).
bool is_skill_metadata(const io::Metadata& metadata);

// Adds (apply) or subtracts (remove) the deltas in place under NoGradGuard. Throws, changing
// nothing, when the weights' fingerprint is not the skill's base (unless check_base is false) or a
// tensor is missing / has another shape. remove does not check the fingerprint (the weights are
// grafted), only names and shapes. Apply then remove restores the base bit for bit except at the
// metrics' inexact_elements (see skill.cpp). The weights of a model (model::model_state_dict) share
// storage with it, so applying to them changes the model.
void apply_sparse_skill(io::StateDict& weights, const SparseSkill& skill, bool check_base = true);
void remove_sparse_skill(io::StateDict& weights, const SparseSkill& skill);

// "model.layers.3.mlp.up_proj.weight" -> layer 3, kind "up_proj"; "model.embed_tokens.weight" ->
// layer -1, kind "embed_tokens"; GPT-2's "transformer.h.0.attn.c_attn.bias" -> 0, "c_attn.bias".
void layer_and_kind(const std::string& name, int64_t* layer, std::string* kind);

// Where the skill's parameters are: {kind, base_fingerprint, task, metrics, parameters,
// per_layer: [count per layer index], outside_layers (embeddings, final norm, head),
// per_kind: {"q_proj": n, ..., "embed_tokens": n, "norm": n}, per_layer_kind: {kind: [per layer]},
// per_tensor: {name: {selected, numel}}}. Layer from "layers.N." / "h.N."; kind = the last name
// component without ".weight" (GPT-2 biases keep ".bias").
nlohmann::json describe_sparse_skill(const SparseSkill& skill);

}  // namespace sg::skills
