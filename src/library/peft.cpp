// PEFT adapters <-> LoRA skills (see peft.h). The files themselves are io/peft_adapter's; this file
// matches their modules to a base's weights and chooses a config that carries every rank and scale.
#include "library/peft.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <map>
#include <sstream>

#include "io/peft_adapter.h"
#include "util/error.h"
#include "util/log.h"

namespace sg::library {

namespace {

std::string module_of(const std::string& name) {
  const std::string suffix = ".weight";
  if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) return "";
  return name.substr(0, name.size() - suffix.size());
}

std::string shape_text(at::IntArrayRef shape) {
  std::ostringstream text;
  text << shape;
  return text.str();
}

// An alpha with fl(alpha / rank) == scale (PEFT's scaling without rslora), searched over the float64
// neighbours of scale * rank; the nearest when none is exact (*exact = false).
double alpha_for_scale(double scale, int64_t rank, bool* exact) {
  const double r = static_cast<double>(rank);
  const double start = scale * r;
  double best = start;
  double best_error = std::abs(start / r - scale);
  double up = start, down = start;
  for (int step = 0; step <= 64; ++step) {
    for (double candidate : {up, down}) {
      const double error = std::abs(candidate / r - scale);
      if (error == 0) {
        *exact = true;
        return candidate;
      }
      if (error < best_error) {
        best = candidate;
        best_error = error;
      }
    }
    up = std::nextafter(up, std::numeric_limits<double>::infinity());
    down = std::nextafter(down, -std::numeric_limits<double>::infinity());
  }
  *exact = false;
  return best;
}

// The most common value, ties to the smallest.
template <typename T>
T most_common(const std::vector<T>& values) {
  std::map<T, int64_t> counts;
  for (const T& v : values) counts[v] += 1;
  T best = counts.begin()->first;
  int64_t best_count = 0;
  for (const auto& [value, count] : counts) {
    if (count > best_count) {
      best = value;
      best_count = count;
    }
  }
  return best;
}

// A pattern key that matches exactly `module` under PEFT's rule: regex metacharacters escaped,
// anchored at the start (the optional "(.*\.)?" prefix must then be empty).
std::string exact_pattern_key(const std::string& module) {
  std::string key = "^";
  for (char c : module) {
    if (std::string("\\.^$|?*+()[]{}").find(c) != std::string::npos) key += '\\';
    key += c;
  }
  return key;
}

}  // namespace

skills::LoraSkill import_peft_adapter(const std::string& dir, const io::StateDict& base_weights,
                                      const std::string& base_fingerprint) {
  const io::PeftAdapter adapter = io::read_peft_adapter(dir);
  const io::PeftAdapterConfig& config = adapter.config;
  const std::string& weights_path = adapter.weights_path;
  std::vector<std::string> rank_keys;
  for (const auto& item : config.rank_pattern) rank_keys.push_back(item.first);

  skills::LoraSkill skill;
  for (const io::PeftPair& pair : adapter.pairs) {
    const std::string name = pair.module + ".weight";
    const at::Tensor* weight = base_weights.find(name);
    SG_CHECK(weight != nullptr, weights_path << ": key \"" << pair.key_a << "\" adapts module \"" << pair.module
                                             << "\", which the base does not have (no tensor \"" << name
                                             << "\"); hint: maybe the adapter was made for another base model?");
    SG_CHECK(weight->dim() == 2, weights_path << ": key \"" << pair.key_a << "\" adapts \"" << name << "\", which is "
                                              << shape_text(weight->sizes())
                                              << " in the base, not a matrix; hint: maybe the adapter was made for another base model?");
    SG_CHECK(!skills::is_embedding_weight(name),
             weights_path << ": key \"" << pair.key_a << "\" adapts the embedding \"" << pair.module
                          << "\"; hint: LoRA on embeddings is not supported");
    SG_CHECK(io::peft_targets(config, pair.module),
             config.path << ": target_modules does not select \"" << pair.module << "\", but " << weights_path
                         << " has \"" << pair.key_a << "\"; hint: the config and the weights disagree (is the adapter complete?)");
    skills::LoraTensorDelta part;
    part.transposed = skills::is_conv1d_weight(name);
    part.shape = weight->sizes().vec();
    const int64_t out = part.transposed ? part.shape[1] : part.shape[0];
    const int64_t in = part.transposed ? part.shape[0] : part.shape[1];
    const int64_t pattern = io::peft_pattern_index(rank_keys, pair.module, config.path + ": rank_pattern");
    const int64_t rank = pattern >= 0 ? config.rank_pattern[pattern].second : config.r;
    SG_CHECK(pair.a.size(0) == rank,
             weights_path << ": \"" << pair.key_a << "\" has rank " << pair.a.size(0) << " but " << config.path
                          << " gives \"" << pair.module << "\" rank " << rank
                          << (pattern >= 0 ? " (rank_pattern key \"" + rank_keys[pattern] + "\")" : std::string(" (r)"))
                          << "; hint: the config and the weights disagree");
    SG_CHECK(pair.a.size(1) == in && pair.b.size(0) == out,
             weights_path << ": \"" << pair.key_a << "\" " << shape_text(pair.a.sizes()) << " and \"" << pair.key_b
                          << "\" " << shape_text(pair.b.sizes()) << " do not fit \"" << name << "\" "
                          << shape_text(weight->sizes()) << (part.transposed ? " (Conv1D, stored [in, out])" : "")
                          << ", which needs A [" << rank << ", " << in << "] and B [" << out << ", " << rank
                          << "]; hint: maybe the adapter was made for another base model?");
    part.a = pair.a.to(at::kFloat).contiguous().clone();
    part.b = pair.b.to(at::kFloat).contiguous().clone();
    part.scale = io::peft_scale(config, pair.module);
    skill.tensors[name] = part;
  }
  skill.base_fingerprint = base_fingerprint;
  skill.source = dir;
  skill.metrics["peft"] = {{"r", config.r},
                           {"lora_alpha", config.lora_alpha},
                           {"use_rslora", config.use_rslora},
                           {"base_model_name_or_path", config.base_model_name_or_path}};
  return skill;
}

void export_peft_adapter(const std::string& dir, const skills::LoraSkill& skill,
                         const std::string& base_model_name_or_path) {
  SG_CHECK(!skill.tensors.empty(), "export_peft_adapter " << dir << ": the skill has no tensors; hint: nothing to export");
  struct Module {
    std::string name;
    int64_t rank;
    double alpha;
  };
  std::vector<Module> modules;
  std::vector<int64_t> ranks;
  std::vector<double> alphas;
  io::StateDict tensors;
  bool fan_in_fan_out = false;
  for (const auto& [name, part] : skill.tensors) {
    const std::string module = module_of(name);
    SG_CHECK(!module.empty(), "export_peft_adapter: tensor \"" << name
                                                               << "\" is not a <module>.weight; hint: PEFT adapts module weights only");
    SG_CHECK(!skills::is_embedding_weight(name), "export_peft_adapter: tensor \"" << name
                                                     << "\" is an embedding; hint: PEFT LoRA pairs sit on projections; "
                                                     << "convert without the embeddings in --targets");
    SG_CHECK(part.transposed == skills::is_conv1d_weight(name),
             "export_peft_adapter: tensor \"" << name << "\" is " << (part.transposed ? "" : "not ")
                                              << "transposed, but PEFT's fan_in_fan_out follows the layer type; hint: internal error");
    SG_CHECK(part.a.dim() == 2 && part.b.dim() == 2 && part.a.size(0) == part.b.size(1) && part.a.size(0) >= 1,
             "export_peft_adapter: tensor \"" << name << "\" has no rank-r pair; hint: internal error");
    bool exact = false;
    const int64_t rank = part.a.size(0);
    const double alpha = alpha_for_scale(part.scale, rank, &exact);
    if (!exact) {
      std::ostringstream line;
      line << "export_peft_adapter: no lora_alpha gives " << name << "'s scale " << part.scale << " exactly as alpha / "
           << rank << "; written with the nearest (relative difference "
           << std::abs(alpha / static_cast<double>(rank) - part.scale) / std::abs(part.scale) << ")";
      util::log_info(line.str());
    }
    modules.push_back({module, rank, alpha});
    ranks.push_back(rank);
    alphas.push_back(alpha);
    fan_in_fan_out = fan_in_fan_out || part.transposed;
    tensors.insert(io::peft_key(module, 'A'), part.a.detach().to(at::kFloat).contiguous());
    tensors.insert(io::peft_key(module, 'B'), part.b.detach().to(at::kFloat).contiguous());
  }
  const int64_t r = most_common(ranks);
  const double lora_alpha = most_common(alphas);

  // Patterns keyed by full module names; if PEFT's first-match rule would give any module another
  // rank or alpha, key them by escaped, anchored names instead.
  io::PeftAdapterConfig resolved;
  resolved.path = "export_peft_adapter " + dir;
  resolved.r = r;
  resolved.lora_alpha = lora_alpha;
  auto resolves = [&](bool escaped) {
    resolved.rank_pattern.clear();
    resolved.alpha_pattern.clear();
    for (const Module& m : modules) {
      const std::string key = escaped ? exact_pattern_key(m.name) : m.name;
      if (m.rank != r) resolved.rank_pattern.emplace_back(key, m.rank);
      if (m.alpha != lora_alpha) resolved.alpha_pattern.emplace_back(key, m.alpha);
    }
    for (const Module& m : modules) {
      if (io::peft_rank(resolved, m.name) != m.rank || io::peft_alpha(resolved, m.name) != m.alpha) return false;
    }
    return true;
  };
  if (!resolves(false)) {
    SG_CHECK(resolves(true), "export_peft_adapter " << dir << ": no rank_pattern / alpha_pattern gives every module "
                                                    << "its rank and alpha; hint: internal error");
  }
  nlohmann::ordered_json rank_pattern = nlohmann::ordered_json::object();
  for (const auto& [key, rank] : resolved.rank_pattern) rank_pattern[key] = rank;
  nlohmann::ordered_json alpha_pattern = nlohmann::ordered_json::object();
  for (const auto& [key, alpha] : resolved.alpha_pattern) alpha_pattern[key] = io::peft_json_number(alpha);
  std::vector<std::string> targets;
  for (const Module& m : modules) targets.push_back(m.name);

  io::PeftConfigFields fields;
  fields.r = r;
  fields.lora_alpha = lora_alpha;
  fields.target_modules = targets;
  fields.fan_in_fan_out = fan_in_fan_out;
  fields.base_model_name_or_path = base_model_name_or_path;
  fields.rank_pattern = rank_pattern;
  fields.alpha_pattern = alpha_pattern;
  const nlohmann::ordered_json config = io::peft_config_json(fields);

  io::write_peft_adapter(dir, config, tensors);
}

}  // namespace sg::library
