// The Llama family (Llama, Mistral, Qwen2): RMSNorm, RoPE (rotate-half convention, rope_theta,
// optional llama3 scaling), grouped-query attention with optional q/k/v/o biases and sliding
// window, SwiGLU MLP, tied or untied embeddings. Module tree and names follow HF's
// LlamaForCausalLM: model.embed_tokens, model.layers.N.{self_attn,mlp,...}, model.norm, lm_head.
#pragma once

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>

#include "model/attention_ops.h"
#include "model/causal_lm.h"
#include "model/layers.h"

namespace sg::model {

class LlamaAttentionImpl : public torch::nn::Module {
 public:
  explicit LlamaAttentionImpl(const ModelConfig& config);
  // x: (B, T, C), cos/sin: (T, head_dim) for the T positions -> (B, T, C)
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        KVCache* cache, int64_t layer);
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  int64_t num_heads_, num_kv_heads_, head_dim_, sliding_window_;
};
TORCH_MODULE(LlamaAttention);

class LlamaMLPImpl : public torch::nn::Module {
 public:
  explicit LlamaMLPImpl(const ModelConfig& config);
  // x: (B, T, C) -> (B, T, C); down(silu(gate(x)) * up(x)). `hook` (may be null) sees the
  // (B, T, I) silu(gate(x)) * up(x) of decoder layer `layer` before down_proj.
  torch::Tensor forward(const torch::Tensor& x, int64_t layer = 0, const FfnHook* hook = nullptr);
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(LlamaMLP);

class LlamaDecoderLayerImpl : public torch::nn::Module {
 public:
  explicit LlamaDecoderLayerImpl(const ModelConfig& config);
  // x: (B, T, C) -> (B, T, C); `ffn_hook` (may be null) is passed to the MLP.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        KVCache* cache, int64_t layer, const FfnHook* ffn_hook = nullptr);
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  LlamaAttention self_attn{nullptr};
  LlamaMLP mlp{nullptr};
};
TORCH_MODULE(LlamaDecoderLayer);

// HF's LlamaModel: the trunk without the output head.
class LlamaTrunkImpl : public torch::nn::Module {
 public:
  explicit LlamaTrunkImpl(const ModelConfig& config);
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
};
TORCH_MODULE(LlamaTrunk);

class LlamaForCausalLM : public CausalLM {
 public:
  explicit LlamaForCausalLM(const ModelConfig& config);
  // tokens: (B, T) -> logits (B, T, V)
  torch::Tensor forward(const torch::Tensor& tokens, KVCache* cache = nullptr) override;

  LlamaTrunk model{nullptr};
  Linear lm_head{nullptr};  // null when tied to model.embed_tokens

 private:
  std::vector<std::shared_ptr<LlamaDecoderLayerImpl>> layer_list_;  // typed views of model->layers
  RopeTable rope_;
};

}  // namespace sg::model
