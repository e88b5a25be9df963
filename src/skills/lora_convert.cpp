// Skill conversions (see lora_convert.h). Every source is seen as a list of named deltas computed one
// at a time (fine-tuned - base, a sparse skill scattered into zeros, a dense skill's tensors), so a
// conversion holds one delta and its SVD at a time.
#include "skills/lora_convert.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>

#include "io/fingerprint.h"
#include "skills/skill_file.h"
#include "util/error.h"

namespace sg::skills {

namespace {

// One tensor of a source: its name, shape, and its delta (float32, the tensor's stored shape), made on demand.
struct DeltaSource {
  std::string name;
  std::vector<int64_t> shape;
  std::function<at::Tensor()> delta;
};

std::string kind_of(const std::string& name) {
  int64_t layer;
  std::string kind;
  layer_and_kind(name, &layer, &kind);
  return kind;
}

std::string module_of(const std::string& name) {
  return ends_with(name, ".weight") ? name.substr(0, name.size() - 7) : name;
}

bool matches_target(const std::string& name, const std::string& target) {
  const std::string module = module_of(name);
  return module == target || ends_with(module, "." + target);
}

double norm_of(const at::Tensor& t) { return t.to(at::kDouble).norm().item<double>(); }

void check_rule(const LoraRankRule& rule) {
  const bool by_rank = rule.rank > 0, by_energy = rule.energy > 0;
  SG_CHECK(rule.rank >= 0 && rule.energy >= 0 && rule.max_rank >= 0,
           "LoRA rank rule: rank " << rule.rank << ", energy " << rule.energy << ", max rank " << rule.max_rank
                                   << " must not be negative; hint: e.g. --rank 8 or --energy 0.9");
  SG_CHECK(by_rank != by_energy, "LoRA rank rule: give exactly one of a rank and an energy (got rank "
                                     << rule.rank << ", energy " << rule.energy << "); hint: e.g. --rank 8 or --energy 0.9");
  SG_CHECK(!by_energy || rule.energy <= 1, "LoRA energy " << rule.energy
                                                          << " is not in (0, 1]; hint: the share of the squared singular values to keep, e.g. 0.9");
}

// Why a tensor is not carried ("" when it is).
std::string not_carried_reason(const DeltaSource& source, const std::vector<std::string>& targets) {
  if (source.shape.size() != 2) return std::to_string(source.shape.size()) + "-D";
  if (targets.empty()) return is_embedding_weight(source.name) ? "embedding" : "";
  for (const std::string& target : targets) {
    if (matches_target(source.name, target)) return "";
  }
  return is_embedding_weight(source.name) ? "embedding" : "not a target";
}

void check_targets(const std::vector<DeltaSource>& sources, const std::vector<std::string>& targets) {
  for (const std::string& target : targets) {
    bool any = false;
    std::vector<std::string> kinds;
    for (const DeltaSource& source : sources) {
      if (source.shape.size() != 2) continue;
      any = any || matches_target(source.name, target);
      const std::string kind = kind_of(source.name);
      if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end()) kinds.push_back(kind);
    }
    std::string available;
    for (const std::string& kind : kinds) available += (available.empty() ? "" : ", ") + kind;
    SG_CHECK(any, "LoRA target '" << target << "' matches no matrix of the delta; hint: the matrices are "
                                  << (available.empty() ? std::string("(none)") : available));
  }
}

// The delta's float64 norm, refusing NaN / infinity.
double checked_norm(const DeltaSource& source, const at::Tensor& delta) {
  const double norm = norm_of(delta);
  SG_CHECK(std::isfinite(norm), "the delta of tensor \"" << source.name
                                                         << "\" is not finite; hint: the fine-tuned weights hold NaN or inf");
  return norm;
}

nlohmann::json rule_json(const LoraRankRule& rule) {
  nlohmann::json json = nlohmann::json::object();
  if (rule.rank > 0) json["rank"] = rule.rank;
  if (rule.energy > 0) json["energy"] = rule.energy;
  if (rule.max_rank > 0) json["max_rank"] = rule.max_rank;
  return json;
}

// The summary a converted skill keeps in its metrics.
nlohmann::json conversion_metrics(const ConversionReport& report, const std::string& from) {
  return {{"from", from},
          {"to", report.to},
          {"relative_error", report.relative_error()},
          {"total_relative_error", report.total_relative_error()},
          {"uncarried_fraction", report.delta_norm() > 0 ? report.uncarried_norm() / report.delta_norm() : 0.0}};
}

LoraSkill lora_from_sources(const std::vector<DeltaSource>& sources, const LoraConversionOptions& options,
                            ConversionReport* report_out) {
  check_rule(options.rule);
  check_targets(sources, options.targets);
  torch::NoGradGuard no_grad;
  LoraSkill skill;
  ConversionReport report;
  report.to = "lora";
  for (const DeltaSource& source : sources) {
    at::Tensor delta = source.delta();
    ConversionTensor row;
    row.name = source.name;
    row.kind = kind_of(source.name);
    row.shape = source.shape;
    row.delta_norm = checked_norm(source, delta);
    if (row.delta_norm == 0) continue;
    report.dense_parameters += delta.numel();
    row.reason = not_carried_reason(source, options.targets);
    row.carried = row.reason.empty();
    row.error_norm = row.delta_norm;
    if (row.carried) {
      LoraTensorDelta part;
      part.shape = source.shape;
      part.transposed = is_conv1d_weight(source.name);
      // (out, in) in float64: the Conv1D weight (in, out) is transposed first.
      at::Tensor matrix = (part.transposed ? delta.t() : delta).to(at::kDouble);
      auto [u, s, vh] = at::linalg_svd(matrix, /*full_matrices=*/false);
      row.full_rank = s.size(0);
      const int64_t rank = lora_rank_for(s, options.rule);
      at::Tensor root = s.slice(0, 0, rank).sqrt();
      part.b = (u.slice(1, 0, rank) * root.unsqueeze(0)).to(at::kFloat).contiguous();     // (out, r)
      part.a = (root.unsqueeze(1) * vh.slice(0, 0, rank)).to(at::kFloat).contiguous();    // (r, in)
      part.scale = 1;
      row.rank = rank;
      row.error_norm = (matrix - at::mm(part.b.to(at::kDouble), part.a.to(at::kDouble))).norm().item<double>();
      report.parameters += part.a.numel() + part.b.numel();
      skill.tensors[source.name] = part;
    }
    report.tensors.push_back(row);
  }
  if (report_out != nullptr) *report_out = report;
  return skill;
}

// Which key of a StateDict first differs in names, for the error message.
void check_same_names(const io::StateDict& base, const io::StateDict& finetuned) {
  for (const auto& item : finetuned) {
    SG_CHECK(base.contains(item.key()), "the fine-tuned weights have tensor \"" << item.key()
                                            << "\" but the base does not; hint: base and fine-tuned must be the same architecture");
  }
  for (const auto& item : base) {
    const at::Tensor* ft = finetuned.find(item.key());
    SG_CHECK(ft != nullptr, "the fine-tuned weights have no tensor \"" << item.key()
                                << "\"; hint: base and fine-tuned must be the same architecture");
    SG_CHECK(ft->sizes() == item.value().sizes(),
             "tensor \"" << item.key() << "\" is " << shape_text(item.value().sizes().vec()) << " in the base but "
                         << shape_text(ft->sizes().vec()) << " fine-tuned; hint: base and fine-tuned must be the same architecture");
  }
}

std::vector<DeltaSource> weight_sources(const io::StateDict& base, const io::StateDict& finetuned) {
  check_same_names(base, finetuned);
  std::vector<DeltaSource> sources;
  for (const auto& item : base) {
    const at::Tensor b = item.value();
    const at::Tensor ft = finetuned[item.key()];
    sources.push_back({item.key(), b.sizes().vec(), [b, ft] {
                         return (ft.to(at::kFloat) - b.to(at::kFloat)).contiguous();
                       }});
  }
  return sources;
}

std::vector<DeltaSource> sparse_sources(const SparseSkill& skill) {
  std::vector<DeltaSource> sources;
  for (const auto& [name, part] : skill.tensors) {
    const SparseTensorDelta* p = &part;
    sources.push_back({name, part.shape, [p] {
                         at::Tensor dense = at::zeros({numel_of(p->shape)}, at::kFloat);
                         dense.index_put_({p->indices.to(at::kLong)}, p->delta.to(at::kFloat));
                         return dense.view(p->shape);
                       }});
  }
  return sources;
}

std::vector<DeltaSource> dense_sources(const DenseSkill& skill) {
  std::vector<DeltaSource> sources;
  for (const auto& [name, delta] : skill.tensors) {
    const at::Tensor d = delta;
    sources.push_back({name, d.sizes().vec(), [d] { return d.to(at::kFloat).contiguous(); }});
  }
  return sources;
}

ConversionTensor dense_row(const std::string& name, const at::Tensor& delta, double delta_norm, double error_norm) {
  ConversionTensor row;
  row.name = name;
  row.kind = kind_of(name);
  row.shape = delta.sizes().vec();
  row.carried = true;
  row.full_rank = delta.dim() == 2 ? std::min(delta.size(0), delta.size(1)) : 0;
  row.delta_norm = delta_norm;
  row.error_norm = error_norm;
  return row;
}

}  // namespace

int64_t lora_rank_for(const at::Tensor& singular_values, const LoraRankRule& rule) {
  check_rule(rule);
  at::Tensor s = singular_values.to(at::kDouble);
  const int64_t full = s.size(0);
  int64_t rank = 0;
  if (rule.rank > 0) {
    rank = std::min(rule.rank, full);
  } else {
    at::Tensor energy = (s * s).cumsum(0);
    const double total = full > 0 ? energy[full - 1].item<double>() : 0.0;
    if (total == 0) return 0;
    // The first k whose cumulative share reaches the target (the total is the last cumsum, so 1 is reached).
    rank = (energy < rule.energy * total).sum().item<int64_t>() + 1;
    rank = std::min(rank, full);
  }
  if (rule.max_rank > 0) rank = std::min(rank, rule.max_rank);
  return rank;
}

double ConversionReport::delta_norm() const {
  double sum = 0;
  for (const auto& t : tensors) sum += t.delta_norm * t.delta_norm;
  return std::sqrt(sum);
}

double ConversionReport::carried_norm() const {
  double sum = 0;
  for (const auto& t : tensors) sum += t.carried ? t.delta_norm * t.delta_norm : 0;
  return std::sqrt(sum);
}

double ConversionReport::uncarried_norm() const {
  double sum = 0;
  for (const auto& t : tensors) sum += t.carried ? 0 : t.delta_norm * t.delta_norm;
  return std::sqrt(sum);
}

double ConversionReport::error_norm() const {
  double sum = 0;
  for (const auto& t : tensors) sum += t.carried ? t.error_norm * t.error_norm : 0;
  return std::sqrt(sum);
}

double ConversionReport::relative_error() const {
  const double carried = carried_norm();
  return carried > 0 ? error_norm() / carried : 0.0;
}

double ConversionReport::total_relative_error() const {
  double sum = 0;
  for (const auto& t : tensors) sum += t.error_norm * t.error_norm;
  const double total = delta_norm();
  return total > 0 ? std::sqrt(sum) / total : 0.0;
}

nlohmann::json ConversionReport::to_json() const {
  struct KindTotals {
    int64_t tensors = 0, carried = 0, min_rank = 0, max_rank = 0, parameters = 0;
    double delta_sq = 0, error_sq = 0, carried_sq = 0;
  };
  std::map<std::string, KindTotals> kinds;
  nlohmann::json per_tensor = nlohmann::json::array();
  for (const auto& t : tensors) {
    KindTotals& k = kinds[t.kind];
    k.tensors += 1;
    k.delta_sq += t.delta_norm * t.delta_norm;
    if (t.carried) {
      k.min_rank = k.carried == 0 ? t.rank : std::min(k.min_rank, t.rank);
      k.max_rank = std::max(k.max_rank, t.rank);
      k.carried += 1;
      k.carried_sq += t.delta_norm * t.delta_norm;
      k.error_sq += t.error_norm * t.error_norm;
    }
    per_tensor.push_back({{"name", t.name},
                          {"kind", t.kind},
                          {"shape", t.shape},
                          {"carried", t.carried},
                          {"reason", t.reason},
                          {"rank", t.rank},
                          {"full_rank", t.full_rank},
                          {"delta_norm", t.delta_norm},
                          {"error_norm", t.error_norm},
                          {"relative_error", t.delta_norm > 0 ? t.error_norm / t.delta_norm : 0.0}});
  }
  const double total = delta_norm();
  nlohmann::json per_kind = nlohmann::json::object();
  for (const auto& [kind, k] : kinds) {
    per_kind[kind] = {{"tensors", k.tensors},
                      {"carried", k.carried},
                      {"min_rank", k.min_rank},
                      {"max_rank", k.max_rank},
                      {"delta_norm", std::sqrt(k.delta_sq)},
                      {"delta_share", total > 0 ? k.delta_sq / (total * total) : 0.0},
                      {"error_norm", std::sqrt(k.error_sq)},
                      {"relative_error", k.carried_sq > 0 ? std::sqrt(k.error_sq / k.carried_sq) : 0.0}};
  }
  int64_t carried = 0;
  for (const auto& t : tensors) carried += t.carried;
  nlohmann::json overall = {{"tensors", tensors.size()},
                            {"carried_tensors", carried},
                            {"delta_norm", total},
                            {"carried_norm", carried_norm()},
                            {"uncarried_norm", uncarried_norm()},
                            {"uncarried_fraction", total > 0 ? uncarried_norm() / total : 0.0},
                            {"error_norm", error_norm()},
                            {"relative_error", relative_error()},
                            {"total_relative_error", total_relative_error()},
                            {"parameters", parameters},
                            {"dense_parameters", dense_parameters}};
  return {{"to", to}, {"overall", overall}, {"per_kind", per_kind}, {"per_tensor", per_tensor}};
}

LoraSkill lora_skill_from_weights(const io::StateDict& base, const io::StateDict& finetuned, const std::string& task,
                                  const LoraConversionOptions& options, ConversionReport* report) {
  ConversionReport local;
  LoraSkill skill = lora_from_sources(weight_sources(base, finetuned), options, &local);
  skill.base_fingerprint = io::state_dict_fingerprint(base);
  skill.task = task;
  skill.metrics["conversion"] = conversion_metrics(local, "weights");
  skill.metrics["conversion"]["rule"] = rule_json(options.rule);
  if (report != nullptr) *report = local;
  return skill;
}

LoraSkill lora_skill_from_dense(const DenseSkill& dense, const LoraConversionOptions& options, ConversionReport* report) {
  ConversionReport local;
  LoraSkill skill = lora_from_sources(dense_sources(dense), options, &local);
  skill.base_fingerprint = dense.base_fingerprint;
  skill.task = dense.task;
  skill.metrics = dense.metrics;
  skill.metrics["conversion"] = conversion_metrics(local, "dense");
  skill.metrics["conversion"]["rule"] = rule_json(options.rule);
  if (report != nullptr) *report = local;
  return skill;
}

LoraSkill lora_skill_from_sparse(const SparseSkill& sparse, const LoraConversionOptions& options,
                                 ConversionReport* report) {
  ConversionReport local;
  LoraSkill skill = lora_from_sources(sparse_sources(sparse), options, &local);
  skill.base_fingerprint = sparse.base_fingerprint;
  skill.task = sparse.task;
  skill.metrics = sparse.metrics;
  skill.metrics["conversion"] = conversion_metrics(local, "sparse");
  skill.metrics["conversion"]["rule"] = rule_json(options.rule);
  if (report != nullptr) *report = local;
  return skill;
}

DenseSkill dense_skill_from_weights(const io::StateDict& base, const io::StateDict& finetuned, const std::string& task,
                                    ConversionReport* report) {
  torch::NoGradGuard no_grad;
  ConversionReport local;
  local.to = "dense";
  DenseSkill skill;
  for (const DeltaSource& source : weight_sources(base, finetuned)) {
    at::Tensor delta = source.delta();
    const at::Tensor b = base[source.name];
    const at::Tensor ft = finetuned[source.name];
    const double delta_norm = (ft.to(at::kDouble) - b.to(at::kDouble)).norm().item<double>();
    SG_CHECK(std::isfinite(delta_norm), "the delta of tensor \"" << source.name
                                                                 << "\" is not finite; hint: the fine-tuned weights hold NaN or inf");
    if (delta_norm == 0) continue;
    // What grafting the delta gives, in the base's dtype, against the fine-tuned values.
    const at::Tensor grafted = b + delta.to(b.scalar_type());
    const double error_norm = (grafted.to(at::kDouble) - ft.to(at::kDouble)).norm().item<double>();
    local.tensors.push_back(dense_row(source.name, delta, delta_norm, error_norm));
    local.parameters += delta.numel();
    local.dense_parameters += delta.numel();
    skill.tensors[source.name] = delta;
  }
  skill.base_fingerprint = io::state_dict_fingerprint(base);
  skill.task = task;
  skill.metrics["conversion"] = conversion_metrics(local, "weights");
  if (report != nullptr) *report = local;
  return skill;
}

DenseSkill dense_skill_from_sparse(const SparseSkill& sparse, ConversionReport* report) {
  torch::NoGradGuard no_grad;
  ConversionReport local;
  local.to = "dense";
  DenseSkill skill;
  for (const DeltaSource& source : sparse_sources(sparse)) {
    at::Tensor delta = source.delta();
    const double delta_norm = checked_norm(source, delta);
    if (delta_norm == 0) continue;
    local.tensors.push_back(dense_row(source.name, delta, delta_norm, 0.0));
    local.parameters += delta.numel();
    local.dense_parameters += delta.numel();
    skill.tensors[source.name] = delta;
  }
  skill.base_fingerprint = sparse.base_fingerprint;
  skill.task = sparse.task;
  skill.metrics = sparse.metrics;
  skill.metrics["conversion"] = conversion_metrics(local, "sparse");
  if (report != nullptr) *report = local;
  return skill;
}

DenseSkill dense_skill_from_lora(const LoraSkill& lora, ConversionReport* report) {
  torch::NoGradGuard no_grad;
  ConversionReport local;
  local.to = "dense";
  DenseSkill skill;
  for (const auto& [name, part] : lora.tensors) {
    at::Tensor delta = lora_dense_delta(part);
    at::Tensor exact = at::mm(part.b.to(at::kDouble), part.a.to(at::kDouble)) * part.scale;
    if (part.transposed) exact = exact.t();
    const double delta_norm = exact.norm().item<double>();
    SG_CHECK(std::isfinite(delta_norm), "LoRA tensor \"" << name << "\" gives a non-finite delta; hint: the skill is damaged");
    if (delta_norm == 0) continue;
    local.tensors.push_back(dense_row(name, delta, delta_norm, (delta.to(at::kDouble) - exact).norm().item<double>()));
    local.parameters += delta.numel();
    local.dense_parameters += delta.numel();
    skill.tensors[name] = delta;
  }
  skill.base_fingerprint = lora.base_fingerprint;
  skill.task = lora.task;
  skill.metrics = lora.metrics;
  skill.metrics["conversion"] = conversion_metrics(local, "lora");
  if (report != nullptr) *report = local;
  return skill;
}

}  // namespace sg::skills
