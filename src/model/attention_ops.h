// Attention helpers shared by the architectures: rotary position tables (rotate-half
// convention), causal / sliding-window masks, and KV-cache appends.
#pragma once

#include <ATen/core/Tensor.h>

#include <utility>

#include "model/causal_lm.h"
#include "model/config.h"

namespace sg::model {

// Inverse RoPE frequencies, (head_dim / 2) float64: 1 / theta^(2i / head_dim), with llama3
// frequency scaling applied when the config asks for it.
at::Tensor rope_inverse_frequencies(const ModelConfig& config);

// cos/sin tables for positions, grown on demand. Not thread-safe (a model is used by one thread).
class RopeTable {
 public:
  RopeTable() = default;
  explicit RopeTable(at::Tensor inverse_frequencies) : inverse_frequencies_(std::move(inverse_frequencies)) {}
  // cos, sin: (T, head_dim) for positions [start, start + T), in `dtype` on `device`.
  std::pair<at::Tensor, at::Tensor> slice(int64_t start, int64_t length, at::ScalarType dtype,
                                          at::Device device);

 private:
  at::Tensor inverse_frequencies_;
  at::Tensor cos_, sin_;  // (capacity, head_dim)
};

// x: (B, heads, T, D), cos/sin: (T, D) -> (B, heads, T, D); x*cos + rotate_half(x)*sin.
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// Additive mask (T, past + T) for T new positions after `past` cached ones: 0 where query i may
// see key j (j <= past + i, and within `sliding_window` when > 0), -inf elsewhere. Undefined when
// nothing would be masked (a single new token without a binding window).
at::Tensor causal_mask(int64_t length, int64_t past, int64_t sliding_window, at::ScalarType dtype,
                       at::Device device);

// Stores k, v: (B, KV, T, D) at positions [length, length + T) of layer `layer` of the cache and
// returns that layer's keys and values for positions [0, length + T). Does not advance length.
std::pair<at::Tensor, at::Tensor> kv_cache_append(KVCache& cache, int64_t layer, const at::Tensor& k,
                                                  const at::Tensor& v);

}  // namespace sg::model
