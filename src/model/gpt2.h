// GPT-2: learned positions, LayerNorm, fused c_attn with Conv1D weights stored [in, out],
// gelu_new MLP, lm_head tied to wte. Names follow HF's GPT2LMHeadModel ("transformer." prefix);
// checkpoints without the prefix are mapped on load (see load_model_weights).
#pragma once

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>

#include "model/causal_lm.h"
#include "model/layers.h"

namespace sg::model {

class Gpt2AttentionImpl : public torch::nn::Module {
 public:
  explicit Gpt2AttentionImpl(const ModelConfig& config);
  // x: (B, T, C) -> (B, T, C)
  torch::Tensor forward(const torch::Tensor& x, KVCache* cache, int64_t layer);
  Conv1D c_attn{nullptr}, c_proj{nullptr};

 private:
  int64_t num_heads_, head_dim_;
};
TORCH_MODULE(Gpt2Attention);

class Gpt2MLPImpl : public torch::nn::Module {
 public:
  explicit Gpt2MLPImpl(const ModelConfig& config);
  // x: (B, T, C) -> (B, T, C). `hook` (may be null) sees the (B, T, I) gelu(c_fc(x)) of block
  // `layer` before c_proj.
  torch::Tensor forward(const torch::Tensor& x, int64_t layer = 0, const FfnHook* hook = nullptr);
  Conv1D c_fc{nullptr}, c_proj{nullptr};
};
TORCH_MODULE(Gpt2MLP);

class Gpt2BlockImpl : public torch::nn::Module {
 public:
  explicit Gpt2BlockImpl(const ModelConfig& config);
  // x: (B, T, C) -> (B, T, C); `ffn_hook` (may be null) is passed to the MLP.
  torch::Tensor forward(const torch::Tensor& x, KVCache* cache, int64_t layer, const FfnHook* ffn_hook = nullptr);
  LayerNorm ln_1{nullptr}, ln_2{nullptr};
  Gpt2Attention attn{nullptr};
  Gpt2MLP mlp{nullptr};
};
TORCH_MODULE(Gpt2Block);

// HF's GPT2Model.
class Gpt2TrunkImpl : public torch::nn::Module {
 public:
  explicit Gpt2TrunkImpl(const ModelConfig& config);
  torch::nn::Embedding wte{nullptr}, wpe{nullptr};
  torch::nn::ModuleList h{nullptr};
  LayerNorm ln_f{nullptr};
};
TORCH_MODULE(Gpt2Trunk);

class Gpt2LMHeadModel : public CausalLM {
 public:
  explicit Gpt2LMHeadModel(const ModelConfig& config);
  // tokens: (B, T) -> logits (B, T, V)
  torch::Tensor forward(const torch::Tensor& tokens, KVCache* cache = nullptr) override;
  Gpt2Trunk transformer{nullptr};

 private:
  std::vector<std::shared_ptr<Gpt2BlockImpl>> blocks_;
};

}  // namespace sg::model
