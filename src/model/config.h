// Model configuration: the fields skillgraft's architectures need, read from and written to an
// HF config.json. Unknown keys of the original config.json are kept so a save preserves them.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

namespace sg::model {

enum class Architecture { kLlama, kGpt2 };

struct ModelConfig {
  Architecture architecture = Architecture::kLlama;
  std::string model_type;  // "llama", "mistral", "qwen2", "gpt2"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;        // C
  int64_t intermediate_size = 0;  // FFN width
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;  // == num_heads without grouped-query attention
  int64_t head_dim = 0;      // hidden_size / num_heads unless the config says otherwise
  int64_t max_positions = 0;  // context length
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;
  // Llama3-style RoPE frequency scaling (rope_scaling.rope_type == "llama3"); factor 0 = none.
  double rope_scaling_factor = 0.0;
  double rope_low_freq_factor = 1.0;
  double rope_high_freq_factor = 4.0;
  int64_t rope_original_max_positions = 0;
  bool tie_word_embeddings = false;
  bool attention_qkv_bias = false;  // Qwen2; Llama's attention_bias
  bool attention_out_bias = false;  // Llama's attention_bias also covers o_proj
  bool mlp_bias = false;
  int64_t sliding_window = 0;  // Mistral; 0 = full attention
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;
  nlohmann::json original;  // the config.json as read (empty for a config made in code)
};

// Parses an HF config.json; `source` (a path) names the file in errors. Throws sg::Error for an
// unknown architecture, missing or inconsistent fields.
ModelConfig config_from_json(const nlohmann::json& json, const std::string& source);
// The config.json to write: the original keys, with every field above written over them.
nlohmann::json config_to_json(const ModelConfig& config);
// Parameter count implied by the config (embeddings counted once when tied).
int64_t parameter_count(const ModelConfig& config);
std::string architecture_name(Architecture architecture);

}  // namespace sg::model
