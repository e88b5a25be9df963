#include "model/attention_ops.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "util/error.h"

namespace sg::model {

at::Tensor rope_inverse_frequencies(const ModelConfig& c) {
  torch::Tensor exponents = torch::arange(0, c.head_dim, 2, torch::kDouble) / static_cast<double>(c.head_dim);
  torch::Tensor inverse = 1.0 / torch::pow(c.rope_theta, exponents);
  if (c.rope_scaling_factor > 0) {
    // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, the band between blended.
    const double old_context = static_cast<double>(c.rope_original_max_positions);
    const double low_wavelength = old_context / c.rope_low_freq_factor;
    const double high_wavelength = old_context / c.rope_high_freq_factor;
    auto values = inverse.accessor<double, 1>();
    for (int64_t i = 0; i < inverse.size(0); ++i) {
      double frequency = values[i];
      double wavelength = 2.0 * M_PI / frequency;
      if (wavelength > low_wavelength) {
        values[i] = frequency / c.rope_scaling_factor;
      } else if (wavelength >= high_wavelength) {
        double smooth = (old_context / wavelength - c.rope_low_freq_factor) /
                        (c.rope_high_freq_factor - c.rope_low_freq_factor);
        values[i] = (1 - smooth) * frequency / c.rope_scaling_factor + smooth * frequency;
      }
    }
  }
  return inverse;
}

std::pair<at::Tensor, at::Tensor> RopeTable::slice(int64_t start, int64_t length, at::ScalarType dtype,
                                                   at::Device device) {
  const int64_t needed = start + length;
  if (!cos_.defined() || cos_.size(0) < needed || cos_.scalar_type() != dtype || cos_.device() != device) {
    int64_t capacity = std::max<int64_t>(needed, cos_.defined() ? 2 * cos_.size(0) : 256);
    torch::NoGradGuard no_grad;
    torch::Tensor positions = torch::arange(capacity, torch::kDouble);
    torch::Tensor angles = torch::outer(positions, inverse_frequencies_);  // (capacity, D/2)
    angles = torch::cat({angles, angles}, -1);                             // (capacity, D)
    cos_ = angles.cos().to(device, dtype);
    sin_ = angles.sin().to(device, dtype);
  }
  return {cos_.narrow(0, start, length), sin_.narrow(0, start, length)};
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  torch::Tensor rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

at::Tensor attention_mask(int64_t rows, int64_t first_query, int64_t key_begin, int64_t span,
                          int64_t sliding_window, at::ScalarType dtype, at::Device device) {
  const int64_t last_query = first_query + rows - 1, last_key = key_begin + span - 1;
  const bool future_visible = last_key > first_query;
  const bool window_binds = sliding_window > 0 && key_begin <= last_query - sliding_window;
  if (!future_visible && !window_binds) return {};
  auto options = torch::TensorOptions().dtype(torch::kLong).device(device);
  torch::Tensor query = torch::arange(first_query, last_query + 1, options).unsqueeze(1);  // (rows, 1)
  torch::Tensor key = torch::arange(key_begin, last_key + 1, options).unsqueeze(0);       // (1, span)
  torch::Tensor hidden = key > query;
  if (window_binds) hidden = hidden.logical_or(key <= query - sliding_window);
  torch::Tensor mask = torch::zeros({rows, span}, torch::TensorOptions().dtype(dtype).device(device));
  return mask.masked_fill_(hidden, -std::numeric_limits<double>::infinity());
}

at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            int64_t sliding_window) {
  const int64_t B = q.size(0), KV = q.size(1), R = q.size(2), T = q.size(3), D = q.size(4);
  const int64_t S = k.size(2), past = S - T;
  // About 512K scores per block: measured fastest for small heads (2 MB stays in L2).
  const int64_t block = std::clamp<int64_t>((int64_t{1} << 19) / std::max<int64_t>(B * KV * R * S, 1), 16, 256);
  std::vector<at::Tensor> outputs;
  for (int64_t start = 0; start < T; start += block) {
    const int64_t rows = std::min(block, T - start);
    const int64_t first_query = past + start, last_query = past + start + rows - 1;
    // Keys this block may see: up to its last query, and within the window of its first one.
    const int64_t key_end = last_query + 1;
    const int64_t key_begin = sliding_window > 0 ? std::max<int64_t>(0, first_query - sliding_window + 1) : 0;
    const int64_t span = key_end - key_begin;
    // Rows grouped per KV head, (B, KV, R*rows, D), so keys and values are never copied R times.
    at::Tensor queries = q.narrow(3, start, rows).reshape({B, KV, R * rows, D});
    at::Tensor keys = k.narrow(2, key_begin, span);
    at::Tensor scores = at::matmul(queries, keys.transpose(-2, -1));  // (B, KV, R*rows, span)
    at::Tensor mask = attention_mask(rows, first_query, key_begin, span, sliding_window,
                                     scores.scalar_type(), scores.device());
    if (mask.defined()) scores.view({B, KV, R, rows, span}).add_(mask);
    at::Tensor probs = at::softmax(scores, -1);
    outputs.push_back(at::matmul(probs, v.narrow(2, key_begin, span)).view({B, KV, R, rows, D}));
  }
  return outputs.size() == 1 ? outputs[0] : at::cat(outputs, 3);
}

std::pair<at::Tensor, at::Tensor> kv_cache_append(KVCache& cache, int64_t layer, const at::Tensor& k,
                                                  const at::Tensor& v) {
  const int64_t T = k.size(2), end = cache.length + T;
  SG_CHECK(layer < static_cast<int64_t>(cache.keys.size()), "KV cache has no layer " << layer);
  SG_CHECK(end <= cache.capacity(), "KV cache is full: " << end << " positions needed, capacity "
                                                         << cache.capacity()
                                                         << "; hint: make a larger cache");
  SG_CHECK(k.size(0) == cache.keys[layer].size(0),
           "KV cache was made for batch " << cache.keys[layer].size(0) << ", got batch " << k.size(0));
  cache.keys[layer].narrow(2, cache.length, T).copy_(k);
  cache.values[layer].narrow(2, cache.length, T).copy_(v);
  return {cache.keys[layer].narrow(2, 0, end), cache.values[layer].narrow(2, 0, end)};
}

}  // namespace sg::model
