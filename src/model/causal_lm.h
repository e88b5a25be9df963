// CausalLM: the interface every architecture implements (tokens -> next-token logits, with an
// optional KV cache), its state dict in HF names, and loading/saving HF checkpoint directories.
// A model is used by one thread at a time; the KV cache belongs to the caller.
#pragma once

#include <torch/nn/module.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "io/state_dict.h"
#include "io/tokenizer.h"
#include "model/config.h"

namespace sg::model {

// Keys and values of every layer for a batch of sequences that all have `length` positions
// filled. keys[l], values[l]: (B, num_kv_heads, capacity, head_dim).
struct KVCache {
  std::vector<torch::Tensor> keys;
  std::vector<torch::Tensor> values;
  int64_t length = 0;
  int64_t capacity() const { return keys.empty() ? 0 : keys[0].size(2); }
};

// Called by every FFN with its neuron activations: the (B, T, I) tensor right before the output
// projection (Llama: silu(gate) * up, also on the fused path; GPT-2: gelu(c_fc(x))). `layer` is the
// decoder layer's index. The hook may read the activation (to record it), edit it in place, or
// replace it (to ablate neurons); the projection sees what it leaves there.
using FfnHook = std::function<void(int64_t layer, torch::Tensor& activation)>;

class CausalLM : public torch::nn::Module {
 public:
  explicit CausalLM(ModelConfig config) : config_(std::move(config)) {}
  const ModelConfig& config() const { return config_; }

  // tokens: (B, T) int64 -> logits (B, T, V). Without a cache the T tokens are positions 0..T-1;
  // with one they follow the cache's `length` positions, and the cache is extended by T.
  virtual torch::Tensor forward(const torch::Tensor& tokens, KVCache* cache = nullptr) = 0;
  // An empty cache for `batch` sequences of up to `capacity` positions, on the model's device.
  KVCache make_cache(int64_t batch, int64_t capacity) const;

  // Empty (the default): the FFNs run exactly as without hooks. Set by the caller for the forwards
  // it wants to observe or edit, and cleared afterwards; not saved with the model.
  FfnHook ffn_hook;

 protected:
  // Checks tokens (B, T) against the vocabulary and the context left after the cache's
  // positions; returns the number of cached positions the tokens follow.
  int64_t check_forward_input(const torch::Tensor& tokens, const KVCache* cache) const;
  ModelConfig config_;
};

// A new model of the config's architecture with freshly initialised weights.
std::shared_ptr<CausalLM> create_model(const ModelConfig& config);
// A model of the config's architecture filled from `weights` (see load_model_weights), without
// first initialising weights that the checkpoint replaces.
std::shared_ptr<CausalLM> create_model_from_weights(const ModelConfig& config, const io::StateDict& weights,
                                                    const std::string& source);

// The model's parameters under their HF names (tied weights appear once, under the input
// embedding's name). The tensors share storage with the model.
io::StateDict model_state_dict(const CausalLM& model);

// Copies `weights` into the model. Checks that every parameter is present with the right shape
// (errors name `source` and the tensor, with a hint), converts dtypes, and rejects unexpected
// tensors except known non-parameters (GPT-2's attn.bias / attn.masked_bias buffers, a tied
// lm_head.weight equal to the embedding).
void load_model_weights(CausalLM& model, const io::StateDict& weights, const std::string& source);

struct LoadedModel {
  ModelConfig config;
  std::shared_ptr<CausalLM> model;
  std::unique_ptr<io::Tokenizer> tokenizer;  // null when the directory has none
};

// Loads an HF checkpoint directory: config.json + model.safetensors (or its shards) and, when
// present, its tokenizer. Throws for a missing/truncated file, an unknown architecture, a
// tokenizer whose vocabulary does not fit the model's.
LoadedModel load_model_dir(const std::string& dir);

// Writes config.json, model.safetensors (sharded past max_shard_bytes when > 0) and the
// tokenizer (when given) into `dir`, each file atomically. A Python HF user can load the result.
void save_model_dir(const std::string& dir, const CausalLM& model, const io::Tokenizer* tokenizer,
                    uint64_t max_shard_bytes = 0);

}  // namespace sg::model
