// PEFT LoRA adapter directories at the file level: adapter_config.json (a PEFT LoraConfig) and
// adapter_model.safetensors (lora_A / lora_B per module), read and validated, and written. PEFT's
// per-module rank and alpha (rank_pattern / alpha_pattern, rslora) are resolved here. Knows no
// models: model/lora.cpp attaches the pairs to a model, library/peft.cpp makes skills of them.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "io/state_dict.h"

namespace sg::io {

constexpr const char* kPeftConfigFile = "adapter_config.json";
constexpr const char* kPeftWeightsFile = "adapter_model.safetensors";

struct PeftAdapterConfig {
  std::string path;  // adapter_config.json, for messages
  int64_t r = 0;
  double lora_alpha = 0;
  bool use_rslora = false;
  double lora_dropout = 0;
  bool fan_in_fan_out = false;
  std::string base_model_name_or_path;
  // target_modules: a list (a module matches an entry equal to its name or to a dotted suffix of it),
  // or one string (a regular expression the whole module name must match; "all-linear" = every
  // projection but the output head). Empty list and empty string: not given.
  std::vector<std::string> target_modules;
  std::string target_modules_regex;
  // In the file's order: PEFT takes the first pattern that matches (get_pattern_key).
  std::vector<std::pair<std::string, int64_t>> rank_pattern;
  std::vector<std::pair<std::string, double>> alpha_pattern;
};

// PEFT's get_pattern_key: the index of the first key in `keys` such that the module name matches the
// Python regex (.*\.)?(key)$ from its start (re.match), or -1. Throws, naming `what`, for a key that
// is not a valid regular expression.
int64_t peft_pattern_index(const std::vector<std::string>& keys, const std::string& module, const std::string& what);

// The module's rank (rank_pattern, else r), alpha (alpha_pattern, else lora_alpha), and scale:
// alpha / rank, or alpha / sqrt(rank) with use_rslora, computed as PEFT does in float64.
int64_t peft_rank(const PeftAdapterConfig& config, const std::string& module);
double peft_alpha(const PeftAdapterConfig& config, const std::string& module);
double peft_scale(const PeftAdapterConfig& config, const std::string& module);
// Whether target_modules selects the module (true when target_modules is not given).
bool peft_targets(const PeftAdapterConfig& config, const std::string& module);

// One adapted module: its lora_A (r, in) and lora_B (out, r), as stored (any float dtype).
struct PeftPair {
  std::string module;  // HF module name: the weight name without ".weight"
  std::string key_a, key_b;
  at::Tensor a, b;
};

struct PeftAdapter {
  std::string dir;
  std::string weights_path;
  PeftAdapterConfig config;
  std::vector<PeftPair> pairs;  // sorted by module
};

// Reads DIR/adapter_config.json and DIR/adapter_model.safetensors. Throws one line naming the file
// (and key) with a hint for: a missing directory or file (an adapter_model.bin pickle only, too),
// JSON that is not a LoraConfig (peft_type not LORA, r or lora_alpha missing or not positive, a
// malformed rank_pattern / alpha_pattern / target_modules), use_dora, a bias other than "none", a
// damaged or truncated safetensors file, a key that is not base_model.model.<module>.lora_A.weight /
// .lora_B.weight (with or without the ".default" adapter name: bias, DoRA, embedding, modules_to_save
// tensors are refused), an A without its B, a non-float or non-2-D tensor, A and B of two ranks.
// Does not check the pairs against a model or the config's ranks (the callers know the shapes).
PeftAdapter read_peft_adapter(const std::string& dir);

// "base_model.model.<module>.lora_A.weight" (which = 'A') or ".lora_B.weight".
std::string peft_key(const std::string& module, char which);

// A number as PEFT writes it: an integer when it is one (r, lora_alpha), else a float.
nlohmann::ordered_json peft_json_number(double value);

// The adapter_config.json skillgraft writes: a PEFT LoraConfig in inference mode, no bias, no DoRA.
struct PeftConfigFields {
  int64_t r = 8;
  double lora_alpha = 16;
  std::vector<std::string> target_modules;
  double lora_dropout = 0;
  bool use_rslora = false;
  bool fan_in_fan_out = false;
  std::string base_model_name_or_path;
  nlohmann::ordered_json rank_pattern = nlohmann::ordered_json::object();   // key -> rank
  nlohmann::ordered_json alpha_pattern = nlohmann::ordered_json::object();  // key -> alpha
};
nlohmann::ordered_json peft_config_json(const PeftConfigFields& fields);

// Writes DIR/adapter_model.safetensors (tensors as given, metadata format=pt) and then
// DIR/adapter_config.json, each atomically, creating DIR.
void write_peft_adapter(const std::string& dir, const nlohmann::ordered_json& config, const StateDict& tensors);

}  // namespace sg::io
