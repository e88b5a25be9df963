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

// Causal (optionally sliding-window) attention of T new queries over S = past + T positions.
// q: (B, KV, R, T, D), already scaled by 1/sqrt(D) (R query heads share each of KV key/value
// heads); k, v: (B, KV, S, D) -> (B, KV, R, T, D).
// Queries are processed in blocks that see only the keys they may attend to, so masked scores
// are mostly never computed and each block's scores stay cache-sized.
at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            int64_t sliding_window);

// Additive mask (rows, span) for queries at absolute positions [first_query, first_query + rows)
// over keys at [key_begin, key_begin + span): 0 where query i may see key j (j <= i, and
// j > i - sliding_window when sliding_window > 0), -inf elsewhere. Undefined when nothing is masked.
at::Tensor attention_mask(int64_t rows, int64_t first_query, int64_t key_begin, int64_t span,
                          int64_t sliding_window, at::ScalarType dtype, at::Device device);

// Stores k, v: (B, KV, T, D) at positions [length, length + T) of layer `layer` of the cache and
// returns that layer's keys and values for positions [0, length + T). Does not advance length.
std::pair<at::Tensor, at::Tensor> kv_cache_append(KVCache& cache, int64_t layer, const at::Tensor& k,
                                                  const at::Tensor& v);

}  // namespace sg::model
