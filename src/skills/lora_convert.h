// Conversions between skill kinds: a dense delta (fine-tuned - base), a dense skill or a sparse skill
// to a LoRA skill by truncated SVD of each weight matrix (a fixed rank or an energy share), a LoRA
// or sparse skill (or two checkpoints) to a dense skill; each with a report of the reconstruction
// error per tensor, per tensor kind and overall. Streams tensor by tensor (one delta resident).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "io/state_dict.h"
#include "skills/lora_skill.h"
#include "skills/skill.h"

namespace sg::skills {

// How many singular values of each matrix a LoRA keeps: exactly one of rank and energy is set.
struct LoraRankRule {
  int64_t rank = 0;      // > 0: keep min(rank, min(out, in))
  double energy = 0;     // in (0, 1]: keep the smallest k with sum_{i<k} s_i^2 >= energy * sum_i s_i^2
  int64_t max_rank = 0;  // > 0: keep at most this many (either rule)
};

struct LoraConversionOptions {
  LoraRankRule rule;
  // Module-name suffixes as in model::LoraOptions ("q_proj" matches ...self_attn.q_proj.weight, and
  // "embed_tokens" an embedding). Empty: every 2-D weight except the embeddings (see is_embedding_weight).
  std::vector<std::string> targets;
};

// One tensor of a delta and what the conversion made of it. Tensors whose delta is exactly zero are
// left out of skills and reports.
struct ConversionTensor {
  std::string name;
  std::string kind;  // as layer_and_kind: "q_proj", "c_attn", "norm", "embed_tokens"
  std::vector<int64_t> shape;
  bool carried = false;  // false: the converted skill has nothing of it
  std::string reason;    // why not carried: "1-D", "embedding", "not a target"
  int64_t rank = 0;      // LoRA rank kept (0 for a dense result)
  int64_t full_rank = 0; // min(out, in) for a matrix
  double delta_norm = 0; // ||delta||_F, float64
  double error_norm = 0; // ||delta - converted||_F (for a tensor not carried, its whole delta_norm)
};

struct ConversionReport {
  std::string to;  // "lora" or "dense"
  std::vector<ConversionTensor> tensors;  // in the source's tensor order
  int64_t parameters = 0;        // stored numbers of the converted skill
  int64_t dense_parameters = 0;  // numel of every nonzero delta tensor (what a dense skill stores)

  double delta_norm() const;      // ||delta|| over every tensor
  double carried_norm() const;    // over the carried tensors
  double uncarried_norm() const;  // over the tensors not carried
  double error_norm() const;      // reconstruction error over the carried tensors
  // error_norm / carried_norm: how well the carried tensors are reproduced (0 when none carried).
  double relative_error() const;
  // ||everything missing|| / ||delta||, with the uncarried tensors counted as wholly missing.
  double total_relative_error() const;
  // {"to", "overall": {...}, "per_kind": {kind: {...}}, "per_tensor": [...]} (docs/formats.md).
  nlohmann::json to_json() const;
};

// LoRA skills by truncated SVD (float64) of each carried matrix: with U S V^T the thin SVD of the
// delta (transposed first for a GPT-2 Conv1D weight, so A is (r, in) and B (out, r)) and k the kept
// rank, B = U_k S_k^(1/2), A = S_k^(1/2) V_k^T, scale 1, stored float32. Throws for a rule that is not
// exactly one of rank / energy, a target that matches no 2-D tensor, mismatched shapes.
LoraSkill lora_skill_from_weights(const io::StateDict& base, const io::StateDict& finetuned, const std::string& task,
                                  const LoraConversionOptions& options, ConversionReport* report = nullptr);
LoraSkill lora_skill_from_dense(const DenseSkill& skill, const LoraConversionOptions& options,
                                ConversionReport* report = nullptr);
LoraSkill lora_skill_from_sparse(const SparseSkill& skill, const LoraConversionOptions& options,
                                 ConversionReport* report = nullptr);

// Dense skills: fl(finetuned - base) of every tensor that changed (base fingerprint from `base`; the
// error is ||fl(base + delta) - finetuned||, float32 rounding); a sparse skill's deltas scattered into
// zeros (exact); a LoRA skill's lora_dense_delta (the error is the float32 rounding of scale B A).
DenseSkill dense_skill_from_weights(const io::StateDict& base, const io::StateDict& finetuned, const std::string& task,
                                    ConversionReport* report = nullptr);
DenseSkill dense_skill_from_sparse(const SparseSkill& skill, ConversionReport* report = nullptr);
DenseSkill dense_skill_from_lora(const LoraSkill& skill, ConversionReport* report = nullptr);

// The rank `rule` keeps for singular values `s` (descending, float64 1-D). 0 when all are zero.
int64_t lora_rank_for(const at::Tensor& singular_values, const LoraRankRule& rule);

}  // namespace sg::skills
