// LoRA and dense skills: their skill files (written atomically, validated on load), applying them to
// and removing them from weights in place, and what any skill file is from its header alone.
#include "skills/lora_skill.h"

#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "io/fingerprint.h"
#include "io/safetensors.h"
#include "skills/skill.h"
#include "skills/skill_file.h"
#include "util/error.h"

namespace sg::skills {

namespace {

constexpr const char* kKindLora = "lora";
constexpr const char* kKindDense = "dense";
constexpr const char* kLoraASuffix = ".lora_A";
constexpr const char* kLoraBSuffix = ".lora_B";
constexpr const char* kDenseSuffix = ".delta";

// The file a skill came from, else its task, for messages.
std::string label_of(const std::string& source, const std::string& task) {
  return source.empty() ? "(task \"" + task + "\")" : source;
}

void check_fingerprint(const io::StateDict& weights, const std::string& expected, const std::string& label) {
  const std::string fingerprint = io::state_dict_fingerprint(weights);
  SG_CHECK(fingerprint == expected, "skill " << label << " was made for base " << expected << ", this model is "
                                             << fingerprint << "; hint: graft onto the base it was made from");
}

// The weight `name` of `weights` with `shape`, floating point; throws naming `what`.
void check_target(const io::StateDict& weights, const std::string& name, const std::vector<int64_t>& shape,
                  const std::string& what) {
  const at::Tensor* weight = weights.find(name);
  SG_CHECK(weight != nullptr, what << ": the skill has tensor \"" << name
                                   << "\" but the model does not; hint: graft onto the base it was made from");
  SG_CHECK(weight->sizes().vec() == shape, what << ": tensor \"" << name << "\" is " << shape_text(weight->sizes().vec())
                                                << " in the model but " << shape_text(shape)
                                                << " in the skill; hint: graft onto the base it was made from");
  SG_CHECK(weight->is_floating_point(), what << ": tensor \"" << name << "\" is not floating point");
}

void add_lora(io::StateDict& weights, const LoraSkill& skill, double sign, const std::string& what) {
  for (const auto& [name, part] : skill.tensors) check_target(weights, name, part.shape, what);
  torch::NoGradGuard no_grad;
  for (const auto& [name, part] : skill.tensors) {
    at::Tensor weight = weights[name];
    weight.add_(lora_dense_delta(part).to(weight.device(), weight.scalar_type()), sign);
  }
}

void add_dense(io::StateDict& weights, const DenseSkill& skill, double sign, const std::string& what) {
  for (const auto& [name, delta] : skill.tensors) check_target(weights, name, delta.sizes().vec(), what);
  torch::NoGradGuard no_grad;
  for (const auto& [name, delta] : skill.tensors) {
    at::Tensor weight = weights[name];
    weight.add_(delta.to(weight.device(), weight.scalar_type()), sign);
  }
}

// A 2-D F32 key of the file; throws naming the file and key.
at::Tensor matrix_key(const io::SafetensorsFile& file, const std::string& key) {
  const io::TensorEntry& entry = file.entry(key);
  SG_CHECK(entry.dtype == "F32", file.path() << ": key \"" << key << "\" is " << entry.dtype
                                             << ", expected F32; hint: the file is damaged");
  SG_CHECK(entry.shape.size() == 2, file.path() << ": key \"" << key << "\" is " << shape_text(entry.shape)
                                                << ", expected a matrix; hint: the file is damaged");
  return file.get(key);
}

std::vector<int64_t> shape_from_json(const std::string& path, const std::string& name, const nlohmann::json& json) {
  std::vector<int64_t> shape;
  bool ok = json.is_array();
  for (size_t i = 0; ok && i < json.size(); ++i) {
    ok = json[i].is_number_integer() && json[i].get<int64_t>() >= 0;
    if (ok) shape.push_back(json[i].get<int64_t>());
  }
  SG_CHECK(ok, path << ": __metadata__ \"lora\" entry for \"" << name
                    << "\" has no list of sizes as \"shape\"; hint: the file is damaged");
  return shape;
}

// Tensor kind as skills::layer_and_kind ("q_proj", "c_attn", "norm").
std::string kind_of(const std::string& name) {
  int64_t layer;
  std::string kind;
  layer_and_kind(name, &layer, &kind);
  return kind;
}

}  // namespace

int64_t LoraSkill::parameter_count() const {
  int64_t total = 0;
  for (const auto& item : tensors) total += item.second.a.numel() + item.second.b.numel();
  return total;
}

int64_t DenseSkill::parameter_count() const {
  int64_t total = 0;
  for (const auto& item : tensors) total += item.second.numel();
  return total;
}

bool is_conv1d_weight(const std::string& name) {
  if (name.rfind("transformer.h.", 0) != 0) return false;
  for (const char* suffix : {".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight"}) {
    if (ends_with(name, suffix)) return true;
  }
  return false;
}

bool is_embedding_weight(const std::string& name) {
  for (const char* suffix : {"embed_tokens.weight", "transformer.wte.weight", "transformer.wpe.weight"}) {
    if (ends_with(name, suffix)) return true;
  }
  return false;
}

at::Tensor lora_dense_delta(const LoraTensorDelta& tensor) {
  torch::NoGradGuard no_grad;
  // (out, r) (r, in) -> (out, in), in float64 so the only rounding is the final one to float32.
  at::Tensor delta = at::mm(tensor.b.to(at::kDouble), tensor.a.to(at::kDouble)).mul_(tensor.scale).to(at::kFloat);
  return tensor.transposed ? delta.t().contiguous() : delta;
}

void save_lora_skill(const std::string& path, const LoraSkill& skill) {
  io::StateDict tensors;
  nlohmann::json lora = nlohmann::json::object();
  for (const auto& [name, part] : skill.tensors) {
    SG_CHECK(part.a.defined() && part.b.defined() && part.a.dim() == 2 && part.b.dim() == 2 &&
                 part.a.size(0) == part.b.size(1) && part.a.size(0) >= 1,
             "save_lora_skill " << path << ": tensor \"" << name
                                << "\" needs A (r, in) and B (out, r) with one rank r >= 1; hint: internal error");
    SG_CHECK(std::isfinite(part.scale), "save_lora_skill " << path << ": tensor \"" << name << "\" has scale "
                                                           << part.scale << "; hint: internal error");
    SG_CHECK(part.shape.size() == 2, "save_lora_skill " << path << ": tensor \"" << name << "\" has shape "
                                                        << shape_text(part.shape) << ", not a matrix; hint: internal error");
    const int64_t out = part.transposed ? part.shape[1] : part.shape[0];
    const int64_t in = part.transposed ? part.shape[0] : part.shape[1];
    SG_CHECK(part.b.size(0) == out && part.a.size(1) == in,
             "save_lora_skill " << path << ": tensor \"" << name << "\" of shape " << shape_text(part.shape)
                                << " cannot take A " << shape_text(part.a.sizes().vec()) << " / B "
                                << shape_text(part.b.sizes().vec()) << "; hint: internal error");
    tensors.insert(name + kLoraASuffix, part.a.detach().to(at::kFloat).contiguous());
    tensors.insert(name + kLoraBSuffix, part.b.detach().to(at::kFloat).contiguous());
    lora[name] = {{"scale", part.scale}, {"shape", part.shape}, {"transposed", part.transposed}};
  }
  io::Metadata metadata = skill_file_metadata(kKindLora, skill.base_fingerprint, skill.task, skill.metrics);
  metadata["lora"] = lora.dump();
  io::save_safetensors(path, tensors, metadata);
}

LoraSkill load_lora_skill(const std::string& path) {
  io::SafetensorsFile file = open_skill_file(path);
  const io::Metadata& metadata = file.metadata();
  check_skill_kind(path, metadata, kKindLora);
  LoraSkill skill;
  skill.source = path;
  SkillHeader header = read_skill_header(path, metadata);
  skill.base_fingerprint = std::move(header.base_fingerprint);
  skill.task = std::move(header.task);
  skill.metrics = std::move(header.metrics);
  const nlohmann::json lora = skill_metadata_json(path, metadata, "lora");
  SG_CHECK(lora.is_object(), path << ": \"lora\" in __metadata__ is not a JSON object; hint: the file is damaged");

  std::set<std::string> names;
  for (const io::TensorEntry& entry : file.entries()) {
    if (ends_with(entry.name, kLoraASuffix) || ends_with(entry.name, kLoraBSuffix)) {
      names.insert(entry.name.substr(0, entry.name.size() - 7));
    } else {
      SG_FAIL(path << ": key \"" << entry.name
                   << "\" is neither <name>.lora_A nor <name>.lora_B; hint: the file is damaged");
    }
  }
  for (const std::string& name : names) {
    const std::string key_a = name + kLoraASuffix, key_b = name + kLoraBSuffix;
    SG_CHECK(file.contains(key_a), path << ": key \"" << key_b << "\" has no partner \"" << key_a
                                        << "\"; hint: the file is damaged");
    SG_CHECK(file.contains(key_b), path << ": key \"" << key_a << "\" has no partner \"" << key_b
                                        << "\"; hint: the file is damaged");
    SG_CHECK(lora.contains(name), path << ": tensor \"" << name
                                       << "\" has no entry in __metadata__ \"lora\"; hint: the file is damaged");
    const nlohmann::json& info = lora[name];
    SG_CHECK(info.is_object() && info.contains("scale") && info["scale"].is_number() && info.contains("transposed") &&
                 info["transposed"].is_boolean() && info.contains("shape"),
             path << ": __metadata__ \"lora\" entry for \"" << name
                  << "\" needs a number \"scale\", a list \"shape\" and a bool \"transposed\"; hint: the file is damaged");
    LoraTensorDelta part;
    part.a = matrix_key(file, key_a);
    part.b = matrix_key(file, key_b);
    part.scale = info["scale"].get<double>();
    part.transposed = info["transposed"].get<bool>();
    part.shape = shape_from_json(path, name, info["shape"]);
    SG_CHECK(std::isfinite(part.scale), path << ": tensor \"" << name << "\" has scale " << part.scale
                                             << "; hint: the file is damaged");
    SG_CHECK(part.shape.size() == 2, path << ": tensor \"" << name << "\" has shape " << shape_text(part.shape)
                                          << "; a LoRA pair needs a matrix; hint: the file is damaged");
    const int64_t out = part.transposed ? part.shape[1] : part.shape[0];
    const int64_t in = part.transposed ? part.shape[0] : part.shape[1];
    const int64_t rank = part.a.size(0);
    SG_CHECK(rank >= 1 && part.a.size(1) == in && part.b.size(0) == out && part.b.size(1) == rank,
             path << ": keys \"" << key_a << "\" " << shape_text(part.a.sizes().vec()) << " and \"" << key_b << "\" "
                  << shape_text(part.b.sizes().vec()) << " do not make a rank-r delta of " << shape_text(part.shape)
                  << (part.transposed ? " (transposed)" : "") << ": need A [r, " << in << "] and B [" << out
                  << ", r], r >= 1; hint: the file is damaged");
    skill.tensors[name] = part;
  }
  for (const auto& item : lora.items()) {
    SG_CHECK(names.count(item.key()), path << ": __metadata__ \"lora\" names \"" << item.key()
                                           << "\" but the file has no \"" << item.key() << kLoraASuffix
                                           << "\"; hint: the file is damaged");
  }
  return skill;
}

void save_dense_skill(const std::string& path, const DenseSkill& skill) {
  io::StateDict tensors;
  for (const auto& [name, delta] : skill.tensors) {
    SG_CHECK(delta.defined(), "save_dense_skill " << path << ": tensor \"" << name << "\" is undefined; hint: internal error");
    tensors.insert(name + kDenseSuffix, delta.detach().to(at::kFloat).contiguous());
  }
  io::save_safetensors(path, tensors, skill_file_metadata(kKindDense, skill.base_fingerprint, skill.task, skill.metrics));
}

DenseSkill load_dense_skill(const std::string& path) {
  io::SafetensorsFile file = open_skill_file(path);
  const io::Metadata& metadata = file.metadata();
  check_skill_kind(path, metadata, kKindDense);
  DenseSkill skill;
  skill.source = path;
  SkillHeader header = read_skill_header(path, metadata);
  skill.base_fingerprint = std::move(header.base_fingerprint);
  skill.task = std::move(header.task);
  skill.metrics = std::move(header.metrics);
  for (const io::TensorEntry& entry : file.entries()) {
    SG_CHECK(ends_with(entry.name, kDenseSuffix) && entry.name.size() > 6,
             path << ": key \"" << entry.name << "\" is not <name>.delta; hint: the file is damaged");
    SG_CHECK(entry.dtype == "F32", path << ": key \"" << entry.name << "\" is " << entry.dtype
                                        << ", expected F32; hint: the file is damaged");
    skill.tensors[entry.name.substr(0, entry.name.size() - 6)] = file.get(entry.name);
  }
  return skill;
}

void apply_lora_skill(io::StateDict& weights, const LoraSkill& skill, bool check_base) {
  const std::string label = label_of(skill.source, skill.task);
  if (check_base) check_fingerprint(weights, skill.base_fingerprint, label);
  add_lora(weights, skill, 1.0, "cannot apply skill " + label);
}

void remove_lora_skill(io::StateDict& weights, const LoraSkill& skill) {
  add_lora(weights, skill, -1.0, "cannot remove skill " + label_of(skill.source, skill.task));
}

void apply_dense_skill(io::StateDict& weights, const DenseSkill& skill, bool check_base) {
  const std::string label = label_of(skill.source, skill.task);
  if (check_base) check_fingerprint(weights, skill.base_fingerprint, label);
  add_dense(weights, skill, 1.0, "cannot apply skill " + label);
}

void remove_dense_skill(io::StateDict& weights, const DenseSkill& skill) {
  add_dense(weights, skill, -1.0, "cannot remove skill " + label_of(skill.source, skill.task));
}

nlohmann::json describe_lora_skill(const LoraSkill& skill) {
  nlohmann::json per_kind = nlohmann::json::object();
  nlohmann::json per_tensor = nlohmann::json::object();
  for (const auto& [name, part] : skill.tensors) {
    const int64_t count = part.a.numel() + part.b.numel();
    const std::string kind = kind_of(name);
    per_kind[kind] = per_kind.value(kind, int64_t{0}) + count;
    per_tensor[name] = {{"rank", part.a.size(0)},
                        {"scale", part.scale},
                        {"shape", part.shape},
                        {"transposed", part.transposed},
                        {"parameters", count}};
  }
  return {{"kind", kKindLora},
          {"base_fingerprint", skill.base_fingerprint},
          {"task", skill.task},
          {"metrics", skill.metrics},
          {"parameters", skill.parameter_count()},
          {"tensors", skill.tensors.size()},
          {"per_kind", per_kind},
          {"per_tensor", per_tensor}};
}

nlohmann::json describe_dense_skill(const DenseSkill& skill) {
  nlohmann::json per_kind = nlohmann::json::object();
  nlohmann::json per_tensor = nlohmann::json::object();
  for (const auto& [name, delta] : skill.tensors) {
    const std::string kind = kind_of(name);
    per_kind[kind] = per_kind.value(kind, int64_t{0}) + delta.numel();
    per_tensor[name] = {{"shape", delta.sizes().vec()}, {"norm", delta.to(at::kDouble).norm().item<double>()}};
  }
  return {{"kind", kKindDense},
          {"base_fingerprint", skill.base_fingerprint},
          {"task", skill.task},
          {"metrics", skill.metrics},
          {"parameters", skill.parameter_count()},
          {"tensors", skill.tensors.size()},
          {"per_kind", per_kind},
          {"per_tensor", per_tensor}};
}

SkillFileInfo read_skill_file_info(const std::string& path) {
  io::SafetensorsFile file = open_skill_file(path);
  const io::Metadata& metadata = file.metadata();
  SkillFileInfo info;
  info.kind = skill_metadata_field(path, metadata, "kind");
  info.base_fingerprint = skill_metadata_field(path, metadata, "base_fingerprint");
  info.task = skill_metadata_field(path, metadata, "task");
  info.metrics = skill_metadata_json(path, metadata, "metrics");
  // Which keys carry the parameters, and whether a key counts its length or its numel.
  std::vector<std::string> counted;
  bool length_only = false;
  if (info.kind == "sparse") {
    counted = {".idx"};
    length_only = true;
  } else if (info.kind == kKindLora) {
    counted = {kLoraASuffix, kLoraBSuffix};
  } else if (info.kind == kKindDense) {
    counted = {kDenseSuffix};
  } else if (info.kind == "neurons") {
    counted = {".neurons"};
  } else {
    SG_FAIL(path << ": skill kind \"" << info.kind
                 << "\" is unknown (this tool knows sparse, lora, dense, neurons); hint: use the skillgraft that wrote it");
  }
  for (const io::TensorEntry& entry : file.entries()) {
    for (const std::string& suffix : counted) {
      if (!ends_with(entry.name, suffix)) continue;
      info.parameter_count += length_only ? (entry.shape.empty() ? 1 : entry.shape[0]) : numel_of(entry.shape);
    }
  }
  std::error_code error;
  const auto bytes = std::filesystem::file_size(path, error);
  SG_CHECK(!error, path << ": cannot read the file size (" << error.message() << ")");
  info.file_bytes = static_cast<int64_t>(bytes);
  return info;
}

}  // namespace sg::skills
