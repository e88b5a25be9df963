#include "model/lora.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "io/hf_checkpoint.h"
#include "io/peft_adapter.h"
#include "io/safetensors.h"
#include "model/layers.h"
#include "util/error.h"
#include "util/file.h"

namespace sg::model {

namespace {

// A Linear or Conv1D of the model, seen uniformly: `weight` is the layer's own tensor (shared),
// in/out are the feature counts whatever the storage layout.
struct Projection {
  std::string name;  // HF module name, e.g. model.layers.0.self_attn.q_proj
  LoraPair* lora = nullptr;
  torch::Tensor weight;
  bool transposed = false;  // Conv1D: weight is (in, out)
  int64_t in = 0, out = 0;
};

// Every projection of the model, in registration order (q, k, v, o, gate, up, down, ... per layer).
std::vector<Projection> projections(const CausalLM& model) {
  std::vector<Projection> found;
  for (const auto& item : model.named_modules()) {
    Projection p;
    p.name = item.key();
    if (auto* linear = dynamic_cast<LinearImpl*>(item.value().get())) {
      p.lora = &linear->lora;
      p.weight = linear->weight;
      p.in = p.weight.size(1);
      p.out = p.weight.size(0);
    } else if (auto* conv = dynamic_cast<Conv1DImpl*>(item.value().get())) {
      p.lora = &conv->lora;
      p.weight = conv->weight;
      p.transposed = true;
      p.in = p.weight.size(0);
      p.out = p.weight.size(1);
    } else {
      continue;
    }
    found.push_back(std::move(p));
  }
  return found;
}

std::string last_segment(const std::string& name) {
  size_t dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool matches_target(const std::string& module, const std::string& target) {
  return module == target || ends_with(module, "." + target);
}

// "q_proj, k_proj, ..." in the order the model first uses them.
std::string available_suffixes(const std::vector<Projection>& all) {
  std::vector<std::string> names;
  for (const auto& p : all) {
    std::string s = last_segment(p.name);
    if (std::find(names.begin(), names.end(), s) == names.end()) names.push_back(s);
  }
  std::string text;
  for (const auto& s : names) text += (text.empty() ? "" : ", ") + s;
  return text;
}

}  // namespace

double lora_scale(const LoraOptions& options) {
  const double rank = static_cast<double>(options.rank);
  return options.alpha / (options.rslora ? std::sqrt(rank) : rank);
}

std::vector<std::string> attach_lora(CausalLM& model, const LoraOptions& options) {
  SG_CHECK(options.rank >= 1, "LoRA rank " << options.rank << " is not positive; hint: use a rank such as 8");
  SG_CHECK(!options.targets.empty(), "no LoRA targets given; hint: name projections such as q_proj, v_proj");
  std::vector<Projection> all = projections(model);
  std::sort(all.begin(), all.end(), [](const Projection& a, const Projection& b) { return a.name < b.name; });
  std::vector<Projection*> chosen;
  for (const auto& target : options.targets) {
    bool any = false;
    for (auto& p : all) {
      if (!matches_target(p.name, target)) continue;
      any = true;
      SG_CHECK(!p.lora->attached(), "LoRA pair already attached to " << p.name
                                        << "; hint: detach_lora or merge_lora first");
      if (std::find(chosen.begin(), chosen.end(), &p) == chosen.end()) chosen.push_back(&p);
    }
    SG_CHECK(any, "LoRA target '" << target << "' matches no module; hint: projection names are "
                                  << available_suffixes(projections(model)));
  }
  std::sort(chosen.begin(), chosen.end(), [](const Projection* a, const Projection* b) { return a->name < b->name; });

  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  const double scale = lora_scale(options);
  std::vector<std::string> names;
  torch::NoGradGuard no_grad;
  for (Projection* p : chosen) {
    // kaiming_uniform_(a=sqrt(5)) on (r, in): gain sqrt(2 / 6), bound sqrt(3) * gain / sqrt(in).
    const double bound = 1.0 / std::sqrt(static_cast<double>(p->in));
    torch::Tensor a = torch::empty({options.rank, p->in}, torch::kFloat).uniform_(-bound, bound, generator);
    p->lora->A = a.to(p->weight.options()).requires_grad_(true);
    p->lora->B = torch::zeros({p->out, options.rank}, p->weight.options()).requires_grad_(true);
    p->lora->scale = scale;
    names.push_back(p->name);
  }
  return names;
}

io::StateDict lora_state_dict(const CausalLM& model) {
  std::vector<Projection> all = projections(model);
  io::StateDict pairs;
  std::vector<std::pair<std::string, torch::Tensor>> items;
  for (const auto& p : all) {
    if (!p.lora->attached()) continue;
    items.emplace_back(io::peft_key(p.name, 'A'), p.lora->A);
    items.emplace_back(io::peft_key(p.name, 'B'), p.lora->B);
  }
  std::sort(items.begin(), items.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& item : items) pairs.insert(item.first, item.second);
  return pairs;
}

bool has_lora(const CausalLM& model) {
  for (const auto& p : projections(model)) {
    if (p.lora->attached()) return true;
  }
  return false;
}

void save_lora_adapter(const std::string& dir, const CausalLM& model, const LoraOptions& options,
                       const std::string& base_model_name_or_path) {
  const double scale = lora_scale(options);
  std::set<std::string> suffixes;
  bool fan_in_fan_out = false;
  io::StateDict tensors;
  std::vector<Projection> all = projections(model);
  for (const auto& p : all) {
    if (!p.lora->attached()) continue;
    SG_CHECK(p.lora->A.size(0) == options.rank,
             "save_lora_adapter: " << p.name << " has a rank-" << p.lora->A.size(0) << " pair but the options say r="
                                   << options.rank << "; hint: pass the options the pairs were made with");
    SG_CHECK(std::abs(p.lora->scale - scale) <= 1e-12 * std::abs(scale),
             "save_lora_adapter: " << p.name << " has scale " << p.lora->scale << " but alpha/r of the options gives "
                                   << scale << "; hint: pass the options the pairs were made with");
    suffixes.insert(last_segment(p.name));
    fan_in_fan_out = fan_in_fan_out || p.transposed;
  }
  SG_CHECK(!suffixes.empty(), "save_lora_adapter: the model has no LoRA pairs; hint: attach_lora or load_lora_adapter first");
  for (const auto& item : lora_state_dict(model)) tensors.insert(item.key(), item.value().detach());

  std::vector<std::string> targets = options.targets;
  if (targets.empty()) targets.assign(suffixes.begin(), suffixes.end());
  io::PeftConfigFields fields;
  fields.r = options.rank;
  fields.lora_alpha = options.alpha;
  fields.target_modules = targets;
  fields.lora_dropout = options.dropout;
  fields.use_rslora = options.rslora;
  fields.fan_in_fan_out = fan_in_fan_out;
  fields.base_model_name_or_path = base_model_name_or_path;

  io::write_peft_adapter(dir, io::peft_config_json(fields), tensors);
}

LoraOptions load_lora_adapter(CausalLM& model, const std::string& dir) {
  const io::PeftAdapter adapter = io::read_peft_adapter(dir);
  const io::PeftAdapterConfig& config = adapter.config;
  const std::string& weights_path = adapter.weights_path;
  SG_CHECK(config.rank_pattern.empty(), config.path << ": \"rank_pattern\" is set; hint: per-module ranks are not "
                                                    << "supported on a model; import the adapter as a LoRA skill instead");
  SG_CHECK(config.alpha_pattern.empty(), config.path << ": \"alpha_pattern\" is set; hint: per-module alphas are not "
                                                     << "supported on a model; import the adapter as a LoRA skill instead");
  LoraOptions options;
  options.rank = config.r;
  options.alpha = config.lora_alpha;
  options.rslora = config.use_rslora;
  options.dropout = config.lora_dropout;
  options.targets = config.target_modules;
  if (!config.target_modules_regex.empty()) options.targets.push_back(config.target_modules_regex);

  // Check every pair against its module before attaching anything.
  std::vector<Projection> all = projections(model);
  std::map<std::string, Projection*> by_name;
  for (auto& p : all) by_name[p.name] = &p;
  std::vector<Projection*> targets;
  for (const io::PeftPair& pair : adapter.pairs) {
    auto found = by_name.find(pair.module);
    SG_CHECK(found != by_name.end(), weights_path << ": key \"" << pair.key_a << "\" names no projection \"" << pair.module
                                                  << "\" of this " << model.config().model_type
                                                  << " model; hint: maybe the adapter was made for another base model?");
    const Projection& p = *found->second;
    const std::vector<int64_t> want_A = {options.rank, p.in}, want_B = {p.out, options.rank};
    SG_CHECK(pair.a.sizes() == at::IntArrayRef(want_A),
             weights_path << ": \"" << pair.key_a << "\" has shape " << pair.a.sizes() << " but " << pair.module
                          << " with r=" << options.rank << " needs " << at::IntArrayRef(want_A)
                          << "; hint: maybe the adapter was made for another base model?");
    SG_CHECK(pair.b.sizes() == at::IntArrayRef(want_B),
             weights_path << ": \"" << pair.key_b << "\" has shape " << pair.b.sizes() << " but " << pair.module
                          << " with r=" << options.rank << " needs " << at::IntArrayRef(want_B)
                          << "; hint: maybe the adapter was made for another base model?");
    SG_CHECK(!p.lora->attached(),
             dir << ": " << pair.module << " already has a LoRA pair; hint: detach_lora or merge_lora first");
    targets.push_back(found->second);
  }

  const double scale = lora_scale(options);
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < targets.size(); ++i) {
    Projection& p = *targets[i];
    const io::PeftPair& pair = adapter.pairs[i];
    const auto options_of = p.weight.options();
    p.lora->A = pair.a.to(options_of, /*non_blocking=*/false, /*copy=*/true).requires_grad_(true);
    p.lora->B = pair.b.to(options_of, /*non_blocking=*/false, /*copy=*/true).requires_grad_(true);
    p.lora->scale = scale;
  }
  return options;
}

void merge_lora(CausalLM& model) {
  torch::NoGradGuard no_grad;
  for (auto& p : projections(model)) {
    if (!p.lora->attached()) continue;
    torch::Tensor delta = p.lora->delta_weight();  // (out, in)
    p.weight.add_(p.transposed ? delta.t() : delta);
    *p.lora = LoraPair();
  }
}

void detach_lora(CausalLM& model) {
  for (auto& p : projections(model)) *p.lora = LoraPair();
}

}  // namespace sg::model
