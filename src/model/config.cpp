#include "model/config.h"

#include "util/error.h"

namespace sg::model {

namespace {

// Reads an integer field; `fallback` < 0 means the field is required.
int64_t get_int(const nlohmann::json& json, const char* key, int64_t fallback,
                const std::string& source) {
  auto it = json.find(key);
  if (it == json.end() || it->is_null()) {
    SG_CHECK(fallback >= 0, source << ": config.json lacks \"" << key
                                   << "\"; hint: is this an HF checkpoint's config.json?");
    return fallback;
  }
  SG_CHECK(it->is_number_integer(),
           source << ": config.json field \"" << key << "\" is " << it->dump() << ", expected an integer");
  int64_t value = it->get<int64_t>();
  SG_CHECK(value >= 0, source << ": config.json field \"" << key << "\" is negative (" << value << ")");
  return value;
}

double get_double(const nlohmann::json& json, const char* key, double fallback,
                  const std::string& source) {
  auto it = json.find(key);
  if (it == json.end() || it->is_null()) return fallback;
  SG_CHECK(it->is_number(),
           source << ": config.json field \"" << key << "\" is " << it->dump() << ", expected a number");
  return it->get<double>();
}

bool get_bool(const nlohmann::json& json, const char* key, bool fallback, const std::string& source) {
  auto it = json.find(key);
  if (it == json.end() || it->is_null()) return fallback;
  SG_CHECK(it->is_boolean(),
           source << ": config.json field \"" << key << "\" is " << it->dump() << ", expected true/false");
  return it->get<bool>();
}

// bos/eos ids may be an integer, a list (first one used) or absent.
int64_t get_token_id(const nlohmann::json& json, const char* key) {
  auto it = json.find(key);
  if (it == json.end()) return -1;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_array() && !it->empty() && (*it)[0].is_number_integer()) return (*it)[0].get<int64_t>();
  return -1;
}

void check_positive(int64_t value, const char* what, const std::string& source) {
  SG_CHECK(value > 0, source << ": config.json: " << what << " must be positive, got " << value);
}

ModelConfig llama_from_json(const nlohmann::json& json, const std::string& model_type,
                            const std::string& source) {
  ModelConfig c;
  c.architecture = Architecture::kLlama;
  c.model_type = model_type;
  c.vocab_size = get_int(json, "vocab_size", -1, source);
  c.hidden_size = get_int(json, "hidden_size", -1, source);
  c.intermediate_size = get_int(json, "intermediate_size", -1, source);
  c.num_layers = get_int(json, "num_hidden_layers", -1, source);
  c.num_heads = get_int(json, "num_attention_heads", -1, source);
  c.num_kv_heads = get_int(json, "num_key_value_heads", c.num_heads, source);
  check_positive(c.num_heads, "num_attention_heads", source);
  c.head_dim = get_int(json, "head_dim", c.hidden_size / c.num_heads, source);
  c.max_positions = get_int(json, "max_position_embeddings", 2048, source);
  c.norm_eps = get_double(json, "rms_norm_eps", 1e-6, source);
  c.rope_theta = get_double(json, "rope_theta", 10000.0, source);
  c.tie_word_embeddings = get_bool(json, "tie_word_embeddings", false, source);
  bool attention_bias = get_bool(json, "attention_bias", false, source);
  c.attention_qkv_bias = model_type == "qwen2" || attention_bias;
  c.attention_out_bias = model_type != "qwen2" && attention_bias;
  c.mlp_bias = get_bool(json, "mlp_bias", false, source);
  if (model_type == "mistral" || model_type == "qwen2") {
    bool use_window = model_type == "mistral" || get_bool(json, "use_sliding_window", false, source);
    if (use_window) c.sliding_window = get_int(json, "sliding_window", 0, source);
  }
  auto scaling = json.find("rope_scaling");
  if (scaling != json.end() && !scaling->is_null()) {
    SG_CHECK(scaling->is_object(), source << ": config.json rope_scaling must be an object");
    std::string type = scaling->value("rope_type", scaling->value("type", std::string()));
    SG_CHECK(type == "llama3" || type == "default",
             source << ": config.json rope_scaling type \"" << type
                    << "\" is not supported; hint: supported are \"default\" and \"llama3\"");
    if (type == "llama3") {
      c.rope_scaling_factor = get_double(*scaling, "factor", 8.0, source);
      c.rope_low_freq_factor = get_double(*scaling, "low_freq_factor", 1.0, source);
      c.rope_high_freq_factor = get_double(*scaling, "high_freq_factor", 4.0, source);
      c.rope_original_max_positions =
          get_int(*scaling, "original_max_position_embeddings", 8192, source);
    }
  }
  check_positive(c.num_kv_heads, "num_key_value_heads", source);
  SG_CHECK(c.num_heads % c.num_kv_heads == 0,
           source << ": config.json: num_attention_heads (" << c.num_heads
                  << ") is not a multiple of num_key_value_heads (" << c.num_kv_heads << ")");
  SG_CHECK(c.head_dim % 2 == 0, source << ": config.json: head_dim " << c.head_dim
                                       << " is odd; rotary embeddings need an even head_dim");
  return c;
}

ModelConfig gpt2_from_json(const nlohmann::json& json, const std::string& source) {
  ModelConfig c;
  c.architecture = Architecture::kGpt2;
  c.model_type = "gpt2";
  c.vocab_size = get_int(json, "vocab_size", -1, source);
  c.hidden_size = get_int(json, "n_embd", -1, source);
  c.num_layers = get_int(json, "n_layer", -1, source);
  c.num_heads = get_int(json, "n_head", -1, source);
  check_positive(c.num_heads, "n_head", source);
  c.num_kv_heads = c.num_heads;
  SG_CHECK(c.hidden_size % c.num_heads == 0,
           source << ": config.json: n_embd " << c.hidden_size << " is not a multiple of n_head "
                  << c.num_heads);
  c.head_dim = c.hidden_size / c.num_heads;
  c.intermediate_size = get_int(json, "n_inner", 4 * c.hidden_size, source);
  c.max_positions = get_int(json, "n_positions", 1024, source);
  c.norm_eps = get_double(json, "layer_norm_epsilon", 1e-5, source);
  c.tie_word_embeddings = true;
  std::string activation = json.value("activation_function", std::string("gelu_new"));
  SG_CHECK(activation == "gelu_new" || activation == "gelu_pytorch_tanh",
           source << ": config.json activation_function \"" << activation
                  << "\" is not supported; hint: GPT-2 uses gelu_new");
  return c;
}

}  // namespace

ModelConfig config_from_json(const nlohmann::json& json, const std::string& source) {
  SG_CHECK(json.is_object(), source << ": config.json is not a JSON object");
  std::string model_type = json.value("model_type", std::string());
  if (model_type.empty() && json.contains("architectures") && json["architectures"].is_array() &&
      !json["architectures"].empty() && json["architectures"][0].is_string()) {
    std::string arch = json["architectures"][0].get<std::string>();
    if (arch.rfind("Llama", 0) == 0) model_type = "llama";
    else if (arch.rfind("Mistral", 0) == 0) model_type = "mistral";
    else if (arch.rfind("Qwen2", 0) == 0) model_type = "qwen2";
    else if (arch.rfind("GPT2", 0) == 0) model_type = "gpt2";
  }
  ModelConfig c;
  if (model_type == "llama" || model_type == "mistral" || model_type == "qwen2") {
    c = llama_from_json(json, model_type, source);
  } else if (model_type == "gpt2") {
    c = gpt2_from_json(json, source);
  } else {
    SG_FAIL(source << ": unknown architecture (model_type \"" << model_type
                   << "\"); hint: skillgraft reads llama, mistral, qwen2 and gpt2 checkpoints");
  }
  check_positive(c.vocab_size, "vocab_size", source);
  check_positive(c.hidden_size, "hidden size", source);
  check_positive(c.num_layers, "number of layers", source);
  check_positive(c.intermediate_size, "intermediate size", source);
  check_positive(c.head_dim, "head_dim", source);
  check_positive(c.max_positions, "context length", source);
  c.bos_token_id = get_token_id(json, "bos_token_id");
  c.eos_token_id = get_token_id(json, "eos_token_id");
  c.original = json;
  return c;
}

nlohmann::json config_to_json(const ModelConfig& c) {
  nlohmann::json j = c.original.is_object() ? c.original : nlohmann::json::object();
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_id >= 0) j["eos_token_id"] = c.eos_token_id;
  if (!j.contains("torch_dtype")) j["torch_dtype"] = "float32";
  if (c.architecture == Architecture::kGpt2) {
    j["architectures"] = {"GPT2LMHeadModel"};
    j["n_embd"] = c.hidden_size;
    j["n_layer"] = c.num_layers;
    j["n_head"] = c.num_heads;
    j["n_positions"] = c.max_positions;
    j["n_ctx"] = c.max_positions;
    j["n_inner"] = c.intermediate_size;
    j["layer_norm_epsilon"] = c.norm_eps;
    j["activation_function"] = "gelu_new";
    j["tie_word_embeddings"] = true;
    return j;
  }
  static const std::map<std::string, std::string> kClassNames = {
      {"llama", "LlamaForCausalLM"}, {"mistral", "MistralForCausalLM"}, {"qwen2", "Qwen2ForCausalLM"}};
  j["architectures"] = {kClassNames.at(c.model_type)};
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_positions;
  j["rms_norm_eps"] = c.norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["hidden_act"] = "silu";
  if (c.model_type == "llama") {
    j["attention_bias"] = c.attention_qkv_bias;
    j["mlp_bias"] = c.mlp_bias;
  }
  if (c.sliding_window > 0) j["sliding_window"] = c.sliding_window;
  return j;
}

int64_t parameter_count(const ModelConfig& c) {
  int64_t C = c.hidden_size, V = c.vocab_size, F = c.intermediate_size, L = c.num_layers;
  if (c.architecture == Architecture::kGpt2) {
    int64_t per_layer = 2 * 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + (C * F + F) + (F * C + C);
    return V * C + c.max_positions * C + L * per_layer + 2 * C;
  }
  int64_t q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  int64_t attention = C * q + 2 * C * kv + q * C;
  if (c.attention_qkv_bias) attention += q + 2 * kv;
  if (c.attention_out_bias) attention += C;
  int64_t mlp = 3 * C * F + (c.mlp_bias ? 2 * F + C : 0);
  int64_t per_layer = attention + mlp + 2 * C;
  return V * C * (c.tie_word_embeddings ? 1 : 2) + L * per_layer + C;
}

std::string architecture_name(Architecture architecture) {
  return architecture == Architecture::kGpt2 ? "gpt2" : "llama";
}

}  // namespace sg::model
