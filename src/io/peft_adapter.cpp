// PEFT adapter files (see peft_adapter.h). PEFT's own rules, followed here:
// - target_modules (check_target_module_exists): a string is re.fullmatch'ed against the module name;
//   a list matches a module equal to an entry or ending in "." + entry.
// - rank_pattern / alpha_pattern (get_pattern_key, PEFT >= 0.13): the first key, in the dict's order,
//   for which re.match(rf"(.*\.)?({key})$", module) succeeds; else r / lora_alpha.
// - scaling = lora_alpha / r, or lora_alpha / math.sqrt(r) with use_rslora.
// Python's re and PCRE2 agree on the patterns adapters use (dots, classes, alternation, anchors).
#define PCRE2_CODE_UNIT_WIDTH 8

#include "io/peft_adapter.h"

#include <pcre2.h>

#include <ATen/ATen.h>

#include <cmath>
#include <map>
#include <memory>

#include "io/safetensors.h"
#include "util/error.h"
#include "util/file.h"

namespace sg::io {

namespace {

const std::string kKeyPrefix = "base_model.model.";
const char* kLayoutHint = "hint: a PEFT adapter directory holds adapter_config.json and adapter_model.safetensors";

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

// Whether `pattern` matches `subject` from its start (and, with whole, to its end). Throws naming
// `what` when the pattern does not compile.
bool regex_matches(const std::string& pattern, const std::string& subject, bool whole, const std::string& what) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  std::unique_ptr<pcre2_code, void (*)(pcre2_code*)> code(
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(), 0, &error_code, &error_offset,
                    nullptr),
      pcre2_code_free);
  SG_CHECK(code != nullptr, what << " is not a valid regular expression (" << pcre2_message(error_code)
                                 << " at offset " << error_offset << "); hint: PEFT patterns are Python regular expressions");
  std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> data(
      pcre2_match_data_create_from_pattern(code.get(), nullptr), pcre2_match_data_free);
  const uint32_t options = PCRE2_ANCHORED | (whole ? PCRE2_ENDANCHORED : 0);
  const int rc = pcre2_match(code.get(), reinterpret_cast<PCRE2_SPTR>(subject.c_str()), subject.size(), 0, options,
                             data.get(), nullptr);
  SG_CHECK(rc >= 0 || rc == PCRE2_ERROR_NOMATCH, what << ": matching failed (" << pcre2_message(rc) << ")");
  return rc >= 0;
}

// Splits a PEFT key into (module, 'A' or 'B'); "" module when the key is not a LoRA weight.
std::pair<std::string, char> parse_key(const std::string& key) {
  if (key.compare(0, kKeyPrefix.size(), kKeyPrefix) != 0) return {"", 0};
  const std::string rest = key.substr(kKeyPrefix.size());
  for (char which : {'A', 'B'}) {
    for (std::string suffix : {".lora_X.weight", ".lora_X.default.weight"}) {
      suffix[6] = which;
      if (rest.size() > suffix.size() && ends_with(rest, suffix)) {
        return {rest.substr(0, rest.size() - suffix.size()), which};
      }
    }
  }
  return {"", 0};
}

// A field that may be absent or null; otherwise of the type `ok` accepts.
bool present(const nlohmann::ordered_json& config, const char* key) {
  return config.contains(key) && !config[key].is_null();
}

PeftAdapterConfig parse_config(const std::string& path) {
  const std::string text = util::read_file(path);
  nlohmann::ordered_json config;
  try {
    config = nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    SG_FAIL(path << ": not valid JSON (byte " << e.byte << "); hint: is the file complete?");
  }
  SG_CHECK(config.is_object(), path << ": not a JSON object; " << kLayoutHint);
  PeftAdapterConfig out;
  out.path = path;
  if (present(config, "peft_type")) {
    SG_CHECK(config["peft_type"].is_string() && config["peft_type"].get<std::string>() == "LORA",
             path << ": peft_type is " << config["peft_type"].dump() << "; hint: only LoRA adapters are supported");
  }
  SG_CHECK(config.contains("r") && config["r"].is_number_integer(),
           path << ": \"r\" (the LoRA rank, an integer) is missing; hint: is this a PEFT LoraConfig?");
  SG_CHECK(config.contains("lora_alpha") && config["lora_alpha"].is_number(),
           path << ": \"lora_alpha\" (a number) is missing; hint: is this a PEFT LoraConfig?");
  out.r = config["r"].get<int64_t>();
  out.lora_alpha = config["lora_alpha"].get<double>();
  SG_CHECK(out.r >= 1, path << ": r = " << out.r << " is not positive; hint: the file is damaged");
  SG_CHECK(std::isfinite(out.lora_alpha), path << ": lora_alpha is not finite; hint: the file is damaged");
  auto boolean = [&](const char* key) {
    if (!present(config, key)) return false;
    SG_CHECK(config[key].is_boolean(), path << ": \"" << key << "\" is " << config[key].dump()
                                            << ", expected true or false; hint: the file is damaged");
    return config[key].get<bool>();
  };
  out.use_rslora = boolean("use_rslora");
  out.fan_in_fan_out = boolean("fan_in_fan_out");
  SG_CHECK(!boolean("use_dora"), path << ": use_dora is true; hint: DoRA adapters are not supported");
  if (present(config, "bias")) {
    SG_CHECK(config["bias"].is_string() && config["bias"].get<std::string>() == "none",
             path << ": bias is " << config["bias"].dump()
                  << "; hint: adapters that train biases are not supported (bias must be \"none\")");
  }
  if (present(config, "lora_dropout") && config["lora_dropout"].is_number()) {
    out.lora_dropout = config["lora_dropout"].get<double>();
  }
  if (present(config, "base_model_name_or_path")) {
    SG_CHECK(config["base_model_name_or_path"].is_string(),
             path << ": base_model_name_or_path is not a string; hint: the file is damaged");
    out.base_model_name_or_path = config["base_model_name_or_path"].get<std::string>();
  }
  if (present(config, "target_modules")) {
    const auto& targets = config["target_modules"];
    if (targets.is_string()) {
      out.target_modules_regex = targets.get<std::string>();
    } else {
      SG_CHECK(targets.is_array(), path << ": target_modules is neither a list nor a string; hint: the file is damaged");
      for (const auto& target : targets) {
        SG_CHECK(target.is_string(), path << ": target_modules holds " << target.dump()
                                          << ", not a module name; hint: the file is damaged");
        out.target_modules.push_back(target.get<std::string>());
      }
    }
  }
  if (present(config, "rank_pattern")) {
    SG_CHECK(config["rank_pattern"].is_object(), path << ": rank_pattern is not an object; hint: the file is damaged");
    for (const auto& item : config["rank_pattern"].items()) {
      SG_CHECK(item.value().is_number_integer() && item.value().get<int64_t>() >= 1,
               path << ": rank_pattern[\"" << item.key() << "\"] is " << item.value().dump()
                    << ", not a positive integer rank; hint: the file is damaged");
      out.rank_pattern.emplace_back(item.key(), item.value().get<int64_t>());
    }
  }
  if (present(config, "alpha_pattern")) {
    SG_CHECK(config["alpha_pattern"].is_object(), path << ": alpha_pattern is not an object; hint: the file is damaged");
    for (const auto& item : config["alpha_pattern"].items()) {
      SG_CHECK(item.value().is_number() && std::isfinite(item.value().get<double>()),
               path << ": alpha_pattern[\"" << item.key() << "\"] is " << item.value().dump()
                    << ", not a number; hint: the file is damaged");
      out.alpha_pattern.emplace_back(item.key(), item.value().get<double>());
    }
  }
  return out;
}

template <typename T>
std::vector<std::string> keys_of(const std::vector<std::pair<std::string, T>>& pattern) {
  std::vector<std::string> keys;
  for (const auto& item : pattern) keys.push_back(item.first);
  return keys;
}

}  // namespace

int64_t peft_pattern_index(const std::vector<std::string>& keys, const std::string& module, const std::string& what) {
  for (size_t i = 0; i < keys.size(); ++i) {
    if (regex_matches("(.*\\.)?(" + keys[i] + ")$", module, /*whole=*/false, what + " key \"" + keys[i] + "\"")) {
      return static_cast<int64_t>(i);
    }
  }
  return -1;
}

int64_t peft_rank(const PeftAdapterConfig& config, const std::string& module) {
  const int64_t at = peft_pattern_index(keys_of(config.rank_pattern), module, config.path + ": rank_pattern");
  return at >= 0 ? config.rank_pattern[at].second : config.r;
}

double peft_alpha(const PeftAdapterConfig& config, const std::string& module) {
  const int64_t at = peft_pattern_index(keys_of(config.alpha_pattern), module, config.path + ": alpha_pattern");
  return at >= 0 ? config.alpha_pattern[at].second : config.lora_alpha;
}

double peft_scale(const PeftAdapterConfig& config, const std::string& module) {
  const double rank = static_cast<double>(peft_rank(config, module));
  return peft_alpha(config, module) / (config.use_rslora ? std::sqrt(rank) : rank);
}

bool peft_targets(const PeftAdapterConfig& config, const std::string& module) {
  if (!config.target_modules_regex.empty()) {
    if (config.target_modules_regex == "all-linear") return module != "lm_head" && !ends_with(module, ".lm_head");
    return regex_matches("(?:" + config.target_modules_regex + ")", module, /*whole=*/true,
                         config.path + ": target_modules \"" + config.target_modules_regex + "\"");
  }
  if (config.target_modules.empty()) return true;
  for (const std::string& target : config.target_modules) {
    if (module == target || ends_with(module, "." + target)) return true;
  }
  return false;
}

std::string peft_key(const std::string& module, char which) {
  return kKeyPrefix + module + (which == 'A' ? ".lora_A.weight" : ".lora_B.weight");
}

PeftAdapter read_peft_adapter(const std::string& dir) {
  PeftAdapter adapter;
  adapter.dir = dir;
  const std::string config_path = util::join_path(dir, kPeftConfigFile);
  adapter.weights_path = util::join_path(dir, kPeftWeightsFile);
  const std::string& weights_path = adapter.weights_path;
  SG_CHECK(util::is_directory(dir), dir << ": adapter directory not found; " << kLayoutHint);
  SG_CHECK(util::file_exists(config_path), config_path << ": missing; " << kLayoutHint);
  SG_CHECK(util::file_exists(weights_path) || !util::file_exists(util::join_path(dir, "adapter_model.bin")),
           weights_path << ": missing (only adapter_model.bin, a PyTorch pickle, is there); hint: re-save the adapter "
                        << "with safe_serialization=True");
  SG_CHECK(util::file_exists(weights_path), weights_path << ": missing; " << kLayoutHint);
  adapter.config = parse_config(config_path);

  SafetensorsFile file = [&] {
    try {
      return SafetensorsFile::open(weights_path);
    } catch (const sg::Error& e) {
      SG_FAIL("cannot read the adapter weights: " << e.what());
    }
  }();
  // Every key must be a LoRA weight before any pairing, so the first complaint is about the odd key.
  std::map<std::string, PeftPair> pairs;
  for (const TensorEntry& entry : file.entries()) {
    auto [module, which] = parse_key(entry.name);
    SG_CHECK(!module.empty(), weights_path << ": key \"" << entry.name << "\" is not a LoRA weight "
                                           << "(base_model.model.<module>.lora_A.weight / .lora_B.weight); hint: "
                                           << "bias, DoRA, embedding and modules_to_save tensors are not supported");
    PeftPair& pair = pairs[module];
    pair.module = module;
    std::string& key = which == 'A' ? pair.key_a : pair.key_b;
    SG_CHECK(key.empty(), weights_path << ": keys \"" << key << "\" and \"" << entry.name << "\" are both lora_" << which
                                       << " of " << module << "; hint: the file holds two adapters; save one");
    key = entry.name;
  }
  SG_CHECK(!pairs.empty(), weights_path << ": holds no LoRA weights; hint: is this a PEFT LoRA adapter?");
  for (auto& [module, pair] : pairs) {
    SG_CHECK(!pair.key_a.empty() && !pair.key_b.empty(),
             weights_path << ": \"" << (pair.key_a.empty() ? pair.key_b : pair.key_a) << "\" has no matching lora_"
                          << (pair.key_a.empty() ? 'A' : 'B') << "; hint: the file is incomplete");
    for (const std::string* key : {&pair.key_a, &pair.key_b}) {
      const TensorEntry& entry = file.entry(*key);
      SG_CHECK(at::isFloatingType(entry.scalar_type),
               weights_path << ": \"" << *key << "\" has non-float dtype " << entry.dtype
                            << "; hint: quantized adapters are not supported");
      SG_CHECK(entry.shape.size() == 2, weights_path << ": \"" << *key << "\" has " << entry.shape.size()
                                                     << " dimensions, a LoRA weight has 2; hint: the file is damaged");
    }
    pair.a = file.get(pair.key_a);
    pair.b = file.get(pair.key_b);
    SG_CHECK(pair.a.size(0) == pair.b.size(1),
             weights_path << ": \"" << pair.key_a << "\" has rank " << pair.a.size(0) << " but \"" << pair.key_b
                          << "\" has rank " << pair.b.size(1) << "; hint: the file is damaged");
    adapter.pairs.push_back(pair);
  }
  return adapter;
}

nlohmann::ordered_json peft_json_number(double value) {
  if (std::floor(value) == value && std::abs(value) < 9e15) return static_cast<int64_t>(value);
  return value;
}

nlohmann::ordered_json peft_config_json(const PeftConfigFields& fields) {
  return {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"r", fields.r},
      {"lora_alpha", peft_json_number(fields.lora_alpha)},
      {"target_modules", fields.target_modules},
      {"lora_dropout", fields.lora_dropout},
      {"use_rslora", fields.use_rslora},
      {"bias", "none"},
      {"fan_in_fan_out", fields.fan_in_fan_out},
      {"base_model_name_or_path", fields.base_model_name_or_path},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"modules_to_save", nullptr},
      {"layers_to_transform", nullptr},
      {"layers_pattern", nullptr},
      {"rank_pattern", fields.rank_pattern},
      {"alpha_pattern", fields.alpha_pattern},
      {"revision", nullptr},
      {"use_dora", false},
  };
}

void write_peft_adapter(const std::string& dir, const nlohmann::ordered_json& config, const StateDict& tensors) {
  util::make_directories(dir);
  save_safetensors(util::join_path(dir, kPeftWeightsFile), tensors, {{"format", "pt"}});
  util::write_file_atomic(util::join_path(dir, kPeftConfigFile), config.dump(2) + "\n");
}

}  // namespace sg::io
