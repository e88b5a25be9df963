#include "model/llama.h"

#include <torch/torch.h>

#include <cmath>

#include "model/fused_ops.h"
#include "util/error.h"

namespace sg::model {

LlamaAttentionImpl::LlamaAttentionImpl(const ModelConfig& c)
    : num_heads_(c.num_heads), num_kv_heads_(c.num_kv_heads), head_dim_(c.head_dim),
      sliding_window_(c.sliding_window) {
  int64_t q_dim = c.num_heads * c.head_dim, kv_dim = c.num_kv_heads * c.head_dim;
  q_proj = register_module("q_proj", Linear(c.hidden_size, q_dim, c.attention_qkv_bias));
  k_proj = register_module("k_proj", Linear(c.hidden_size, kv_dim, c.attention_qkv_bias));
  v_proj = register_module("v_proj", Linear(c.hidden_size, kv_dim, c.attention_qkv_bias));
  o_proj = register_module("o_proj", Linear(q_dim, c.hidden_size, c.attention_out_bias));
}

torch::Tensor LlamaAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                          const torch::Tensor& sin, KVCache* cache, int64_t layer) {
  // H query heads share each of KV key/value heads in groups of R = H / KV; D = head_dim.
  const int64_t B = x.size(0), T = x.size(1), H = num_heads_, KV = num_kv_heads_, D = head_dim_;
  const int64_t R = H / KV;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  torch::Tensor q = q_proj(x).view({B, T, H, D});
  torch::Tensor k = k_proj(x).view({B, T, KV, D});
  torch::Tensor v = v_proj(x).view({B, T, KV, D}).transpose(1, 2);  // (B, KV, T, D)
  if (fused_ops_apply(q) && fused_ops_apply(k)) {
    q = fused_rope(q, cos, sin, scale).transpose(1, 2);  // (B, H, T, D)
    k = fused_rope(k, cos, sin, 1.0).transpose(1, 2);    // (B, KV, T, D)
  } else {
    q = apply_rope(q.transpose(1, 2), cos, sin) * scale;
    k = apply_rope(k.transpose(1, 2), cos, sin);
  }
  if (cache != nullptr) std::tie(k, v) = kv_cache_append(*cache, layer, k, v);
  torch::Tensor out = causal_attention(q.view({B, KV, R, T, D}), k, v, sliding_window_);  // (B, KV, R, T, D)
  out = out.view({B, H, T, D}).transpose(1, 2).reshape({B, T, H * D});
  return o_proj(out);
}

LlamaMLPImpl::LlamaMLPImpl(const ModelConfig& c) {
  gate_proj = register_module("gate_proj", Linear(c.hidden_size, c.intermediate_size, c.mlp_bias));
  up_proj = register_module("up_proj", Linear(c.hidden_size, c.intermediate_size, c.mlp_bias));
  down_proj = register_module("down_proj", Linear(c.intermediate_size, c.hidden_size, c.mlp_bias));
}

torch::Tensor LlamaMLPImpl::forward(const torch::Tensor& x, int64_t layer, const FfnHook* hook) {
  torch::Tensor gate = gate_proj(x), up = up_proj(x);  // (B, T, I)
  torch::Tensor activation = fused_ops_apply(gate) && fused_ops_apply(up) ? fused_swiglu(gate, up)
                                                                          : torch::silu(gate) * up;
  if (hook != nullptr) (*hook)(layer, activation);
  return down_proj(activation);
}

LlamaDecoderLayerImpl::LlamaDecoderLayerImpl(const ModelConfig& c) {
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.norm_eps));
  self_attn = register_module("self_attn", LlamaAttention(c));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.norm_eps));
  mlp = register_module("mlp", LlamaMLP(c));
}

torch::Tensor LlamaDecoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                             const torch::Tensor& sin, KVCache* cache, int64_t layer,
                                             const FfnHook* ffn_hook) {
  torch::Tensor h = x + self_attn(input_layernorm(x), cos, sin, cache, layer);
  return h + mlp->forward(post_attention_layernorm(h), layer, ffn_hook);
}

LlamaTrunkImpl::LlamaTrunkImpl(const ModelConfig& c) {
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(c.vocab_size, c.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_layers; ++i) layers->push_back(LlamaDecoderLayer(c));
  norm = register_module("norm", RMSNorm(c.hidden_size, c.norm_eps));
}

LlamaForCausalLM::LlamaForCausalLM(const ModelConfig& c) : CausalLM(c) {
  SG_CHECK(c.architecture == Architecture::kLlama, "LlamaForCausalLM needs a Llama-family config");
  model = register_module("model", LlamaTrunk(c));
  if (!c.tie_word_embeddings) {
    lm_head = register_module("lm_head", Linear(c.hidden_size, c.vocab_size, false));
  }
  for (const auto& layer : *model->layers) {
    layer_list_.push_back(std::dynamic_pointer_cast<LlamaDecoderLayerImpl>(layer));
  }
  rope_ = RopeTable(rope_inverse_frequencies(c));
}

torch::Tensor LlamaForCausalLM::forward(const torch::Tensor& tokens, KVCache* cache) {
  const int64_t past = check_forward_input(tokens, cache);
  const int64_t T = tokens.size(1);
  torch::Tensor h = model->embed_tokens(tokens);  // (B, T, C)
  torch::Tensor cos, sin;
  std::tie(cos, sin) = rope_.slice(past, T, h.scalar_type(), h.device());
  const FfnHook* hook = ffn_hook ? &ffn_hook : nullptr;
  for (size_t i = 0; i < layer_list_.size(); ++i) {
    h = layer_list_[i]->forward(h, cos, sin, cache, static_cast<int64_t>(i), hook);
  }
  if (cache != nullptr) cache->length = past + T;
  h = model->norm(h);
  // An untied head goes through its layer so that a LoRA pair on lm_head acts.
  if (lm_head) return lm_head(h);                          // (B, T, V)
  return torch::linear(h, model->embed_tokens->weight);  // (B, T, V)
}

}  // namespace sg::model
