// Sparse skills: made from (base, fine-tuned, mask), written to and read from safetensors skill
// files, applied to and removed from weights in place.
//
// Exactness. Apply adds d, remove subtracts it, both in float32: remove restores the base bit for
// bit only where fl(fl(b + d) - d) == b, which plain d = fl(ft - b) does not always satisfy (a tie
// in the rounding of b + d, a power-of-two boundary). make_sparse_skill checks the identity for
// every stored element at once and, for the few that fail, tries d nudged by up to
// kMaxNudgeUlps ulps either way, keeping the passing candidate whose b + d lands closest to ft.
// Where |b| is far below ulp(d) no float32 d can work (fl(b + d) - d is a multiple of ulp(d)), and
// -0.0 never comes back (fl(d - d) is +0.0): those keep the plain d and are counted in the metrics
// ("inexact_elements"); the nudged ones in "nudged_elements".
#include "skills/skill.h"

#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <limits>
#include <set>

#include "io/fingerprint.h"
#include "io/safetensors.h"
#include "skills/skill_file.h"
#include "util/error.h"

namespace sg::skills {

namespace {

constexpr const char* kKindSparse = "sparse";
constexpr const char* kIndexSuffix = ".idx";
constexpr const char* kDeltaSuffix = ".delta";
constexpr const char* kRestoreIndexSuffix = ".restore_idx";
constexpr const char* kRestoreSuffix = ".restore";
// How far a failing delta is moved, in ulps of itself, looking for an exact round trip.
constexpr int kMaxNudgeUlps = 4;

// Bitwise equality of float32 tensors (so -0.0 != +0.0 and a NaN equals itself).
torch::Tensor same_bits(const torch::Tensor& a, const torch::Tensor& b) {
  return a.view(torch::kInt32) == b.view(torch::kInt32);
}

struct NudgeResult {
  int64_t nudged = 0;
  int64_t inexact = 0;
};

// base, finetuned, delta: (K) float32. Rewrites delta where fl(fl(b + d) - d) != b (see the top
// of the file); vectorised over the failures, a loop over the few candidate steps.
NudgeResult make_delta_reversible(const torch::Tensor& base, const torch::Tensor& finetuned, torch::Tensor& delta) {
  NudgeResult result;
  torch::Tensor failing = (~same_bits((base + delta) - delta, base)).nonzero().squeeze(1);
  if (failing.numel() == 0) return result;
  const torch::Tensor b = base.index_select(0, failing);
  const torch::Tensor ft = finetuned.index_select(0, failing);
  const torch::Tensor d = delta.index_select(0, failing);
  torch::Tensor best = d.clone();
  torch::Tensor best_error = torch::full_like(d, std::numeric_limits<float>::infinity());
  torch::Tensor found = torch::zeros_like(d, torch::kBool);
  const float kInf = std::numeric_limits<float>::infinity();
  for (float direction : {kInf, -kInf}) {
    torch::Tensor candidate = d;
    torch::Tensor toward = torch::full_like(d, direction);
    for (int step = 0; step < kMaxNudgeUlps; ++step) {
      candidate = torch::nextafter(candidate, toward);
      torch::Tensor grafted = b + candidate;
      torch::Tensor ok = same_bits(grafted - candidate, b);
      torch::Tensor error = (grafted.to(torch::kDouble) - ft.to(torch::kDouble)).abs().to(torch::kFloat);
      torch::Tensor better = ok & (error < best_error);
      best = torch::where(better, candidate, best);
      best_error = torch::where(better, error, best_error);
      found |= ok;
    }
  }
  // The unfixable keep the plain delta (already in `best`).
  delta.index_copy_(0, failing, best);
  result.nudged = found.sum().item<int64_t>();
  result.inexact = failing.numel() - result.nudged;
  return result;
}

// The file a skill came from, else its task, for messages.
std::string skill_label(const SparseSkill& skill) {
  return skill.source.empty() ? "(task \"" + skill.task + "\")" : skill.source;
}

// Checks that `weights` has every tensor of the skill with its shape, contiguous (so a flat view
// writes through), floating point. Throws naming `what`.
void check_targets(const io::StateDict& weights, const SparseSkill& skill, const std::string& what) {
  for (const auto& [name, part] : skill.tensors) {
    const at::Tensor* weight = weights.find(name);
    SG_CHECK(weight != nullptr, what << ": the skill has tensor \"" << name
                                     << "\" but the model does not; hint: graft onto the base it was localized from");
    SG_CHECK(weight->sizes().vec() == part.shape,
             what << ": tensor \"" << name << "\" is " << shape_text(weight->sizes().vec())
                  << " in the model but " << shape_text(part.shape)
                  << " in the skill; hint: graft onto the base it was localized from");
    SG_CHECK(weight->is_floating_point(), what << ": tensor \"" << name << "\" is not floating point");
    SG_CHECK(weight->is_contiguous(), what << ": tensor \"" << name
                                           << "\" is not contiguous; hint: internal error, weights must be dense");
  }
}

// weights[name].flat[idx] += sign * delta for every tensor, in place.
void add_sparse(io::StateDict& weights, const SparseSkill& skill, double sign) {
  torch::NoGradGuard no_grad;
  for (const auto& [name, part] : skill.tensors) {
    at::Tensor& weight = weights[name];
    torch::Tensor flat = weight.view({-1});
    torch::Tensor idx = part.indices.to(weight.device());
    torch::Tensor delta = part.delta.to(weight.device(), weight.scalar_type());
    flat.index_add_(0, idx, delta, sign);
  }
}

}  // namespace

// "model.layers.3.mlp.up_proj.weight" -> layer 3, kind "up_proj"; "model.embed_tokens.weight" ->
// layer -1, kind "embed_tokens"; GPT-2's "transformer.h.0.attn.c_attn.bias" -> 0, "c_attn.bias".
void layer_and_kind(const std::string& name, int64_t* layer, std::string* kind) {
  *layer = -1;
  for (const std::string marker : {"layers.", "h."}) {
    size_t at = 0;
    while ((at = name.find(marker, at)) != std::string::npos) {
      bool starts_component = at == 0 || name[at - 1] == '.';
      size_t digits = at + marker.size();
      size_t end = digits;
      while (end < name.size() && std::isdigit(static_cast<unsigned char>(name[end]))) ++end;
      if (starts_component && end > digits && end < name.size() && name[end] == '.') {
        *layer = std::stoll(name.substr(digits, end - digits));
        break;
      }
      at += marker.size();
    }
    if (*layer >= 0) break;
  }
  std::string stem = name;
  std::string suffix;
  if (ends_with(stem, ".weight")) {
    stem.resize(stem.size() - 7);
  } else if (ends_with(stem, ".bias")) {
    stem.resize(stem.size() - 5);
    suffix = ".bias";
  }
  size_t dot = stem.rfind('.');
  *kind = (dot == std::string::npos ? stem : stem.substr(dot + 1)) + suffix;
}


int64_t SparseSkill::parameter_count() const {
  int64_t total = 0;
  for (const auto& item : tensors) total += item.second.indices.numel();
  return total;
}

SparseSkill make_sparse_skill(const io::StateDict& base, const io::StateDict& finetuned,
                              const std::map<std::string, at::Tensor>& mask, const std::string& task) {
  torch::NoGradGuard no_grad;
  for (const auto& item : mask) {
    SG_CHECK(base.contains(item.first), "mask names tensor \"" << item.first
                                            << "\", which the base does not have; hint: masks use the base's HF names");
  }
  SparseSkill skill;
  skill.base_fingerprint = io::state_dict_fingerprint(base);
  skill.task = task;
  NudgeResult totals;
  for (const auto& item : base) {
    const std::string& name = item.key();
    auto mask_it = mask.find(name);
    if (mask_it == mask.end()) continue;
    const at::Tensor& b = item.value();
    const at::Tensor* ft = finetuned.find(name);
    SG_CHECK(ft != nullptr, "the fine-tuned weights have no tensor \"" << name
                                << "\"; hint: base and fine-tuned must be the same architecture");
    SG_CHECK(ft->sizes() == b.sizes(), "tensor \"" << name << "\" is " << shape_text(b.sizes().vec())
                                                   << " in the base but " << shape_text(ft->sizes().vec())
                                                   << " fine-tuned; hint: base and fine-tuned must be the same architecture");
    const at::Tensor& m = mask_it->second;
    SG_CHECK(m.sizes() == b.sizes(), "mask for \"" << name << "\" is " << shape_text(m.sizes().vec())
                                                   << " but the tensor is " << shape_text(b.sizes().vec()));
    SG_CHECK(m.scalar_type() == torch::kBool, "mask for \"" << name << "\" is not a bool tensor");
    torch::Tensor indices = m.reshape({-1}).cpu().nonzero().squeeze(1).to(torch::kInt64);
    if (indices.numel() == 0) continue;
    torch::Tensor base_values = b.reshape({-1}).cpu().to(torch::kFloat).index_select(0, indices);
    torch::Tensor ft_values = ft->reshape({-1}).cpu().to(torch::kFloat).index_select(0, indices);
    torch::Tensor delta = ft_values - base_values;
    NudgeResult r = make_delta_reversible(base_values, ft_values, delta);
    totals.nudged += r.nudged;
    totals.inexact += r.inexact;
    SparseTensorDelta part{indices.contiguous(), delta.contiguous(), b.sizes().vec()};
    if (r.inexact > 0) {
      const torch::Tensor still_failing = (~same_bits((base_values + delta) - delta, base_values)).nonzero().squeeze(1);
      part.restore_indices = indices.index_select(0, still_failing).contiguous();
      part.restore_values = base_values.index_select(0, still_failing).contiguous();
    }
    skill.tensors[name] = part;
  }
  skill.metrics["nudged_elements"] = totals.nudged;
  skill.metrics["inexact_elements"] = totals.inexact;  // stored as restore entries: removal stays exact
  return skill;
}

void save_sparse_skill(const std::string& path, const SparseSkill& skill) {
  io::StateDict tensors;
  nlohmann::json shapes = nlohmann::json::object();
  for (const auto& [name, part] : skill.tensors) {
    tensors.insert(name + kIndexSuffix, part.indices.to(torch::kInt64).contiguous());
    tensors.insert(name + kDeltaSuffix, part.delta.to(torch::kFloat).contiguous());
    if (part.restore_indices.defined() && part.restore_indices.numel() > 0) {
      tensors.insert(name + kRestoreIndexSuffix, part.restore_indices.to(torch::kInt64).contiguous());
      tensors.insert(name + kRestoreSuffix, part.restore_values.to(torch::kFloat).contiguous());
    }
    shapes[name] = part.shape;
  }
  io::Metadata metadata = skill_file_metadata(kKindSparse, skill.base_fingerprint, skill.task, skill.metrics);
  metadata["shapes"] = shapes.dump();
  io::save_safetensors(path, tensors, metadata);
}

bool is_skill_metadata(const io::Metadata& metadata) {
  auto it = metadata.find("format");
  return it != metadata.end() && it->second == kSkillFormat;
}

SparseSkill load_sparse_skill(const std::string& path) {
  io::SafetensorsFile file = open_skill_file(path);
  const io::Metadata& metadata = file.metadata();
  check_skill_kind(path, metadata, kKindSparse);
  SparseSkill skill;
  skill.source = path;
  SkillHeader header = read_skill_header(path, metadata);
  skill.base_fingerprint = std::move(header.base_fingerprint);
  skill.task = std::move(header.task);
  skill.metrics = std::move(header.metrics);
  const nlohmann::json shapes = skill_metadata_json(path, metadata, "shapes");
  SG_CHECK(shapes.is_object(), path << ": \"shapes\" in __metadata__ is not a JSON object; hint: the file is damaged");

  std::set<std::string> names;
  for (const io::TensorEntry& entry : file.entries()) {
    std::string name;
    if (ends_with(entry.name, kRestoreIndexSuffix) || ends_with(entry.name, kRestoreSuffix)) {
      continue;  // checked with their tensor below
    } else if (ends_with(entry.name, kIndexSuffix)) {
      name = entry.name.substr(0, entry.name.size() - 4);
    } else if (ends_with(entry.name, kDeltaSuffix)) {
      name = entry.name.substr(0, entry.name.size() - 6);
    } else {
      SG_FAIL(path << ": key \"" << entry.name << "\" is neither <name>.idx nor <name>.delta; hint: the file is damaged");
    }
    names.insert(name);
  }
  for (const io::TensorEntry& entry : file.entries()) {
    for (const char* suffix : {kRestoreIndexSuffix, kRestoreSuffix}) {
      const std::string text = suffix;
      if (!ends_with(entry.name, text)) continue;
      SG_CHECK(names.count(entry.name.substr(0, entry.name.size() - text.size())),
               path << ": key \"" << entry.name << "\" belongs to no <name>.idx; hint: the file is damaged");
    }
  }
  for (const std::string& name : names) {
    const std::string idx_key = name + kIndexSuffix;
    const std::string delta_key = name + kDeltaSuffix;
    SG_CHECK(file.contains(idx_key), path << ": key \"" << delta_key << "\" has no partner \"" << idx_key
                                          << "\"; hint: the file is damaged");
    SG_CHECK(file.contains(delta_key), path << ": key \"" << idx_key << "\" has no partner \"" << delta_key
                                            << "\"; hint: the file is damaged");
    const io::TensorEntry& idx_entry = file.entry(idx_key);
    const io::TensorEntry& delta_entry = file.entry(delta_key);
    SG_CHECK(idx_entry.dtype == "I64", path << ": key \"" << idx_key << "\" is " << idx_entry.dtype
                                            << ", expected I64; hint: the file is damaged");
    SG_CHECK(delta_entry.dtype == "F32", path << ": key \"" << delta_key << "\" is " << delta_entry.dtype
                                              << ", expected F32; hint: the file is damaged");
    SG_CHECK(idx_entry.shape.size() == 1 && delta_entry.shape.size() == 1,
             path << ": keys \"" << idx_key << "\" and \"" << delta_key << "\" must be 1-D, got "
                  << shape_text(idx_entry.shape) << " and " << shape_text(delta_entry.shape)
                  << "; hint: the file is damaged");
    SG_CHECK(idx_entry.shape[0] == delta_entry.shape[0],
             path << ": key \"" << idx_key << "\" has " << idx_entry.shape[0] << " indices but \"" << delta_key
                  << "\" has " << delta_entry.shape[0] << " values; hint: the file is damaged");
    SG_CHECK(shapes.contains(name), path << ": tensor \"" << name
                                         << "\" has no entry in __metadata__ shapes; hint: the file is damaged");
    std::vector<int64_t> shape;
    const nlohmann::json& shape_json = shapes[name];
    bool shape_ok = shape_json.is_array();
    for (size_t i = 0; shape_ok && i < shape_json.size(); ++i) {
      shape_ok = shape_json[i].is_number_integer() && shape_json[i].get<int64_t>() >= 0;
      if (shape_ok) shape.push_back(shape_json[i].get<int64_t>());
    }
    SG_CHECK(shape_ok, path << ": __metadata__ shapes entry for \"" << name
                            << "\" is not a list of sizes; hint: the file is damaged");
    torch::Tensor indices = file.get(idx_key);
    torch::Tensor delta = file.get(delta_key);
    if (indices.numel() > 0) {
      const int64_t numel = numel_of(shape);
      SG_CHECK(indices.min().item<int64_t>() >= 0 && indices.max().item<int64_t>() < numel,
               path << ": key \"" << idx_key << "\" has an index outside [0, " << numel << ") for shape "
                    << shape_text(shape) << "; hint: the file is damaged or the shape is wrong");
      SG_CHECK(indices.numel() < 2 || (indices.slice(0, 1) > indices.slice(0, 0, -1)).all().item<bool>(),
               path << ": key \"" << idx_key
                    << "\" is not sorted ascending without duplicates; hint: the file is damaged");
    }
    SparseTensorDelta part{indices, delta, shape};
    const std::string restore_idx_key = name + kRestoreIndexSuffix;
    const std::string restore_key = name + kRestoreSuffix;
    SG_CHECK(file.contains(restore_idx_key) == file.contains(restore_key),
             path << ": \"" << restore_idx_key << "\" and \"" << restore_key
                  << "\" must come together; hint: the file is damaged");
    if (file.contains(restore_idx_key)) {
      part.restore_indices = file.get(restore_idx_key);
      part.restore_values = file.get(restore_key);
      SG_CHECK(part.restore_indices.scalar_type() == torch::kInt64 && part.restore_values.scalar_type() == torch::kFloat &&
                   part.restore_indices.dim() == 1 && part.restore_values.dim() == 1 &&
                   part.restore_indices.numel() == part.restore_values.numel(),
               path << ": \"" << restore_idx_key << "\" (I64) and \"" << restore_key
                    << "\" (F32) must be 1-D of one length; hint: the file is damaged");
      // Every restored position must be one of the skill's positions.
      bool subset = true;
      if (part.restore_indices.numel() > 0) {
        SG_CHECK(indices.numel() > 0, path << ": \"" << restore_idx_key << "\" without indices; hint: the file is damaged");
        torch::Tensor at = torch::searchsorted(indices, part.restore_indices).clamp_max(indices.numel() - 1);
        subset = indices.index_select(0, at).equal(part.restore_indices);
      }
      SG_CHECK(subset, path << ": \"" << restore_idx_key << "\" names positions that \"" << idx_key
                            << "\" does not; hint: the file is damaged");
    }
    skill.tensors[name] = part;
  }
  for (const auto& item : shapes.items()) {
    SG_CHECK(names.count(item.key()), path << ": __metadata__ shapes names \"" << item.key()
                                           << "\" but the file has no \"" << item.key() << kIndexSuffix
                                           << "\"; hint: the file is damaged");
  }
  return skill;
}

void apply_sparse_skill(io::StateDict& weights, const SparseSkill& skill, bool check_base) {
  if (check_base) {
    std::string fingerprint = io::state_dict_fingerprint(weights);
    SG_CHECK(fingerprint == skill.base_fingerprint,
             "skill " << skill_label(skill) << " was made for base " << skill.base_fingerprint
                                 << ", this model is " << fingerprint
                                 << "; hint: graft onto the base it was localized from");
  }
  check_targets(weights, skill, "cannot apply skill " + skill_label(skill));
  add_sparse(weights, skill, 1.0);
}

void remove_sparse_skill(io::StateDict& weights, const SparseSkill& skill) {
  check_targets(weights, skill, "cannot remove skill " + skill_label(skill));
  add_sparse(weights, skill, -1.0);
  torch::NoGradGuard no_grad;
  for (const auto& [name, part] : skill.tensors) {
    if (!part.restore_indices.defined() || part.restore_indices.numel() == 0) continue;
    torch::Tensor flat = weights[name].view({-1});
    flat.index_copy_(0, part.restore_indices.to(flat.device()),
                     part.restore_values.to(flat.device(), flat.scalar_type()));
  }
}

nlohmann::json describe_sparse_skill(const SparseSkill& skill) {
  int64_t num_layers = 0;
  std::vector<std::pair<int64_t, std::string>> where;
  for (const auto& item : skill.tensors) {
    int64_t layer;
    std::string kind;
    layer_and_kind(item.first, &layer, &kind);
    num_layers = std::max(num_layers, layer + 1);
    where.emplace_back(layer, kind);
  }
  std::vector<int64_t> per_layer(num_layers, 0);
  int64_t outside_layers = 0;
  nlohmann::json per_kind = nlohmann::json::object();
  nlohmann::json per_layer_kind = nlohmann::json::object();
  nlohmann::json per_tensor = nlohmann::json::object();
  size_t i = 0;
  for (const auto& [name, part] : skill.tensors) {
    const auto& [layer, kind] = where[i++];
    const int64_t count = part.indices.numel();
    per_tensor[name] = {{"selected", count}, {"numel", numel_of(part.shape)}};
    per_kind[kind] = per_kind.value(kind, int64_t{0}) + count;
    if (layer < 0) {
      outside_layers += count;
      continue;
    }
    per_layer[layer] += count;
    if (!per_layer_kind.contains(kind)) per_layer_kind[kind] = std::vector<int64_t>(num_layers, 0);
    per_layer_kind[kind][layer] = per_layer_kind[kind][layer].get<int64_t>() + count;
  }
  return {{"kind", kKindSparse},
          {"base_fingerprint", skill.base_fingerprint},
          {"task", skill.task},
          {"metrics", skill.metrics},
          {"parameters", skill.parameter_count()},
          {"per_layer", per_layer},
          {"outside_layers", outside_layers},
          {"per_kind", per_kind},
          {"per_layer_kind", per_layer_kind},
          {"per_tensor", per_tensor}};
}

}  // namespace sg::skills
