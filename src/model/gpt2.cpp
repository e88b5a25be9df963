#include "model/gpt2.h"

#include <torch/torch.h>

#include <cmath>

#include "model/attention_ops.h"
#include "util/error.h"

namespace sg::model {

Gpt2AttentionImpl::Gpt2AttentionImpl(const ModelConfig& c)
    : num_heads_(c.num_heads), head_dim_(c.head_dim) {
  c_attn = register_module("c_attn", Conv1D(c.hidden_size, 3 * c.hidden_size));
  c_proj = register_module("c_proj", Conv1D(c.hidden_size, c.hidden_size));
}

torch::Tensor Gpt2AttentionImpl::forward(const torch::Tensor& x, KVCache* cache, int64_t layer) {
  const int64_t B = x.size(0), T = x.size(1), H = num_heads_, D = head_dim_;
  std::vector<torch::Tensor> qkv = c_attn(x).view({B, T, 3, H, D}).unbind(2);  // 3 x (B, T, H, D)
  torch::Tensor q = qkv[0].transpose(1, 2) * (1.0 / std::sqrt(static_cast<double>(D)));
  torch::Tensor k = qkv[1].transpose(1, 2);  // (B, H, T, D)
  torch::Tensor v = qkv[2].transpose(1, 2);
  if (cache != nullptr) std::tie(k, v) = kv_cache_append(*cache, layer, k, v);
  torch::Tensor out = causal_attention(q.unsqueeze(2), k, v, 0).squeeze(2);  // (B, H, T, D)
  return c_proj(out.transpose(1, 2).reshape({B, T, H * D}));
}

Gpt2MLPImpl::Gpt2MLPImpl(const ModelConfig& c) {
  c_fc = register_module("c_fc", Conv1D(c.hidden_size, c.intermediate_size));
  c_proj = register_module("c_proj", Conv1D(c.intermediate_size, c.hidden_size));
}

torch::Tensor Gpt2MLPImpl::forward(const torch::Tensor& x, int64_t layer, const FfnHook* hook) {
  torch::Tensor activation = torch::gelu(c_fc(x), "tanh");  // (B, T, I); gelu_new is the tanh approximation
  if (hook != nullptr) (*hook)(layer, activation);
  return c_proj(activation);
}

Gpt2BlockImpl::Gpt2BlockImpl(const ModelConfig& c) {
  ln_1 = register_module("ln_1", LayerNorm(c.hidden_size, c.norm_eps));
  attn = register_module("attn", Gpt2Attention(c));
  ln_2 = register_module("ln_2", LayerNorm(c.hidden_size, c.norm_eps));
  mlp = register_module("mlp", Gpt2MLP(c));
}

torch::Tensor Gpt2BlockImpl::forward(const torch::Tensor& x, KVCache* cache, int64_t layer,
                                     const FfnHook* ffn_hook) {
  torch::Tensor h = x + attn(ln_1(x), cache, layer);
  return h + mlp->forward(ln_2(h), layer, ffn_hook);
}

Gpt2TrunkImpl::Gpt2TrunkImpl(const ModelConfig& c) {
  wte = register_module("wte", torch::nn::Embedding(c.vocab_size, c.hidden_size));
  wpe = register_module("wpe", torch::nn::Embedding(c.max_positions, c.hidden_size));
  h = register_module("h", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_layers; ++i) h->push_back(Gpt2Block(c));
  ln_f = register_module("ln_f", LayerNorm(c.hidden_size, c.norm_eps));
}

Gpt2LMHeadModel::Gpt2LMHeadModel(const ModelConfig& c) : CausalLM(c) {
  SG_CHECK(c.architecture == Architecture::kGpt2, "Gpt2LMHeadModel needs a GPT-2 config");
  transformer = register_module("transformer", Gpt2Trunk(c));
  for (const auto& block : *transformer->h) {
    blocks_.push_back(std::dynamic_pointer_cast<Gpt2BlockImpl>(block));
  }
}

torch::Tensor Gpt2LMHeadModel::forward(const torch::Tensor& tokens, KVCache* cache) {
  const int64_t past = check_forward_input(tokens, cache);
  const int64_t T = tokens.size(1);
  torch::Tensor positions = torch::arange(past, past + T, tokens.options().dtype(torch::kLong));
  torch::Tensor h = transformer->wte(tokens) + transformer->wpe(positions);  // (B, T, C)
  const FfnHook* hook = ffn_hook ? &ffn_hook : nullptr;
  for (size_t i = 0; i < blocks_.size(); ++i) {
    h = blocks_[i]->forward(h, cache, static_cast<int64_t>(i), hook);
  }
  if (cache != nullptr) cache->length = past + T;
  return torch::linear(transformer->ln_f(h), transformer->wte->weight);  // (B, T, V)
}

}  // namespace sg::model
