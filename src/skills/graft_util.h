// What the learned-mask methods share (skills/localize: one fine-tune; compose/stitch: several at
// once): the candidate tensors laid end to end as one flat (N) index space, δ computed tensor by
// tensor, a copy-free top-k of a flat vector, and one batch's completion loss with its gradient.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "data/batching.h"
#include "io/state_dict.h"
#include "model/causal_lm.h"

namespace sg::train {
class EpochOrder;
}

namespace sg::skills {

// The candidate tensors laid end to end: flat index i of the (N) vectors and masks is element
// i - offsets[t] of tensor t.
struct FlatLayout {
  std::vector<std::string> names;
  std::vector<int64_t> offsets;  // one per name, then N
  int64_t total = 0;

  FlatLayout(const std::vector<std::string>& candidate, const io::StateDict& reference);
  // The part of a flat (N) vector that belongs to tensor t.
  at::Tensor slice(const at::Tensor& flat, size_t t) const;
  // The entries of sorted flat `indices` that fall into tensor t, as local indices.
  at::Tensor local(const at::Tensor& indices, size_t t) const;
  // Bool mask of tensor t's shape with ones at the mask's entries in it.
  at::Tensor local_mask(const at::Tensor& indices, size_t t, const at::Tensor& shape_of) const;
};

// δ of one tensor, float32, flat: computed where needed instead of kept.
at::Tensor delta_of(const io::StateDict& base, const io::StateDict& finetuned, const std::string& name);

// The k largest entries of a flat float32 vector, as sorted flat indices (int64), without a copy
// of the vector: a two-pass radix select (16 bits a pass) finds the k-th largest value, a third
// pass collects. Entries tied with the k-th value are taken lowest index first. (torch::topk sorts
// (value, index) pairs as doubles, an (N) buffer four times the vector's size, and leaves the
// order of ties to std::partial_sort / nth_element.)
at::Tensor top_k_indices(const at::Tensor& values, int64_t k);

// flat = ∂L/∂θ ⊙ δ over the layout (the .grad of `weights`' tensors; 0 where a tensor has none):
// the gradient with respect to the mask γ of θ_base + γ ⊙ δ.
void gradient_times_delta(at::Tensor& flat, const io::StateDict& weights, const FlatLayout& layout,
                          const io::StateDict& base, const io::StateDict& finetuned);

// Sorted a minus sorted b (int64 index lists).
at::Tensor sorted_difference(const at::Tensor& a, const at::Tensor& b);

// Zeroes the .grad of layout's tensors in `weights` (those that have one).
void zero_gradients(io::StateDict& weights, const FlatLayout& layout);

// Mean completion loss of the batch of `batch_size` examples at position step * batch_size of
// `order`, times `scale`; adds scale * ∂L/∂θ to the .grad of layout's tensors in `weights` (the
// work model's), zeroed first unless `accumulate`. Returns the unscaled mean loss. The loss is the
// cross-entropy of the completion tokens, or, with a `teacher`, the mean over completion positions
// of KL(teacher's next-token distribution || work's).
double loss_and_gradients(model::CausalLM& work, io::StateDict& weights, const FlatLayout& layout,
                          const std::vector<data::EncodedSequence>& examples, int64_t batch_size, int64_t step,
                          train::EpochOrder& order, bool accumulate = false, double scale = 1.0,
                          model::CausalLM* teacher = nullptr);

}  // namespace sg::skills
