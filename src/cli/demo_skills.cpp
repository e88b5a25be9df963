#include "cli/demo_skills.h"

#include <torch/torch.h>

#include <cmath>
#include <map>
#include <set>

#include "cli/localize_runs.h"
#include "util/error.h"
#include "util/log.h"

namespace sg::cli {

namespace {

double number(const nlohmann::json& value) { return value.is_number() ? value.get<double>() : std::nan(""); }

nlohmann::json without_where(nlohmann::json run) {
  run.erase("where");
  return run;
}

// The layer group of a tensor: "0".."L-1" inside the blocks, "embed" for everything outside them
// (embeddings, final norm, head).
std::string layer_group(const std::string& name) {
  int64_t layer = -1;
  std::string kind;
  skills::layer_and_kind(name, &layer, &kind);
  return layer < 0 ? "embed" : std::to_string(layer);
}

}  // namespace

nlohmann::json localize_specialist(const std::string& base_dir, const std::string& specialist_dir,
                                   const data::LoadedTask& task, const SkillStudyOptions& options,
                                   const std::string& skill_path, skills::SparseSkill* skill) {
  LocalizationSession session(base_dir, specialist_dir, task, options.eval_examples);
  skills::LocalizeOptions run_options;
  run_options.fraction = options.fraction;
  run_options.steps = options.steps;
  run_options.seed = options.seed;
  nlohmann::json runs = nlohmann::json::array();
  nlohmann::json entry = nlohmann::json::object();

  // graft at the default budget, every seed; the seed-0 mask is the skill.
  double graft_sum = 0, recovery_sum = 0, loss_recovery_sum = 0;
  nlohmann::json graft_scores = nlohmann::json::array();
  for (int64_t s = 0; s < options.seeds; ++s) {
    run_options.seed = options.seed + static_cast<uint64_t>(s);
    skills::SparseSkill seed_skill;
    nlohmann::json run = session.run(run_options, &seed_skill);
    graft_sum += number(run["graft"]);
    recovery_sum += number(run["recovery"]);
    loss_recovery_sum += number(run["loss_recovery"]);
    graft_scores.push_back(run["graft"]);
    if (s == 0) {
      skills::save_sparse_skill(skill_path, seed_skill);
      entry["where"] = run["where"];
      entry["ece_finetuned"] = run["ece_finetuned"];
      entry["ece_graft"] = run["ece_graft"];
      *skill = std::move(seed_skill);
    }
    runs.push_back(without_where(run));
  }
  const double seeds = static_cast<double>(options.seeds);
  entry["graft"] = graft_sum / seeds;
  entry["graft_seeds"] = graft_scores;
  entry["graft_fraction"] = options.fraction;
  entry["recovery"] = number_or_null(recovery_sum / seeds);
  entry["loss_recovery"] = number_or_null(loss_recovery_sum / seeds);
  entry["skill"] = skill_path;

  // Baselines at the same budget.
  run_options.seed = options.seed;
  std::map<std::string, nlohmann::json> at_budget;  // method -> run at options.fraction
  at_budget["graft"] = runs[0];
  for (skills::LocalizeMethod method :
       {skills::LocalizeMethod::kMovement, skills::LocalizeMethod::kSaliency, skills::LocalizeMethod::kRandom}) {
    run_options.method = method;
    nlohmann::json run = without_where(session.run(run_options));
    const std::string name = skills::localize_method_name(method);
    entry[name] = run["graft"];
    entry[name + "_recovery"] = run["recovery"];
    at_budget[name] = run;
    runs.push_back(run);
  }

  // The curve: graft, movement and random at every budget of the sweep.
  nlohmann::json sweep = nlohmann::json::array();
  nlohmann::json budget_90;
  for (double fraction : options.sweep) {
    nlohmann::json point = {{"fraction", fraction}, {"recovery", nlohmann::json::object()}};
    for (skills::LocalizeMethod method :
         {skills::LocalizeMethod::kGraft, skills::LocalizeMethod::kMovement, skills::LocalizeMethod::kRandom}) {
      const std::string name = skills::localize_method_name(method);
      nlohmann::json run;
      if (std::abs(fraction - options.fraction) < 1e-12) {
        run = at_budget[name];
      } else {
        run_options.method = method;
        run_options.fraction = fraction;
        run = without_where(session.run(run_options));
        runs.push_back(run);
      }
      point[name] = run["graft"];
      point["recovery"][name] = run["recovery"];
      point["loss_recovery_" + name] = run["loss_recovery"];
    }
    if (budget_90.is_null() && number(point["recovery"]["graft"]) >= 0.9) budget_90 = fraction;
    sweep.push_back(point);
  }
  if (!options.sweep.empty()) {
    entry["sweep"] = sweep;
    entry["budget_90"] = budget_90;
  }
  entry["runs"] = runs;
  return entry;
}

nlohmann::json skill_overlap(const std::vector<std::string>& tasks, const std::vector<skills::SparseSkill>& skills,
                             const std::vector<std::pair<std::string, std::string>>& related) {
  SG_CHECK(tasks.size() == skills.size(), "skill_overlap: " << tasks.size() << " tasks but " << skills.size() << " skills");
  torch::NoGradGuard no_grad;
  // Per skill and tensor: a bool mask of the tensor's elements.
  std::set<std::string> tensor_names;
  std::map<std::string, int64_t> numel;
  for (const skills::SparseSkill& skill : skills) {
    for (const auto& item : skill.tensors) {
      tensor_names.insert(item.first);
      int64_t n = 1;
      for (int64_t d : item.second.shape) n *= d;
      numel[item.first] = n;
    }
  }
  std::vector<std::string> groups{"embed"};
  for (const std::string& name : tensor_names) {
    const std::string group = layer_group(name);
    if (std::find(groups.begin(), groups.end(), group) == groups.end()) groups.push_back(group);
  }
  std::sort(groups.begin() + 1, groups.end(), [](const std::string& a, const std::string& b) { return std::stoll(a) < std::stoll(b); });
  const size_t t = tasks.size();
  auto mask_of = [&](const skills::SparseSkill& skill, const std::string& name) {
    torch::Tensor mask = torch::zeros({numel[name]}, torch::kBool);
    auto found = skill.tensors.find(name);
    if (found != skill.tensors.end()) mask.index_fill_(0, found->second.indices, true);
    return mask;
  };
  // inter[g][i][j], uni[g][i][j] summed over the group's tensors
  std::map<std::string, std::vector<std::vector<double>>> inter, uni;
  for (const std::string& group : groups) {
    inter[group].assign(t, std::vector<double>(t, 0));
    uni[group].assign(t, std::vector<double>(t, 0));
  }
  for (const std::string& name : tensor_names) {
    std::vector<torch::Tensor> masks;
    for (const skills::SparseSkill& skill : skills) masks.push_back(mask_of(skill, name));
    const std::string group = layer_group(name);
    for (size_t i = 0; i < t; ++i) {
      for (size_t j = 0; j < t; ++j) {
        inter[group][i][j] += static_cast<double>((masks[i] & masks[j]).sum().item<int64_t>());
        uni[group][i][j] += static_cast<double>((masks[i] | masks[j]).sum().item<int64_t>());
      }
    }
  }
  auto jaccard = [&](const std::vector<std::string>& over) {
    std::vector<std::vector<double>> matrix(t, std::vector<double>(t, 0));
    for (size_t i = 0; i < t; ++i) {
      for (size_t j = 0; j < t; ++j) {
        double a = 0, b = 0;
        for (const std::string& group : over) {
          a += inter[group][i][j];
          b += uni[group][i][j];
        }
        matrix[i][j] = b > 0 ? a / b : 0;
      }
    }
    return matrix;
  };
  const std::vector<std::vector<double>> overall = jaccard(groups);
  nlohmann::json per_layer = nlohmann::json::array();
  for (const std::string& group : groups) per_layer.push_back(jaccard({group}));
  auto index_of = [&](const std::string& name) {
    return static_cast<size_t>(std::find(tasks.begin(), tasks.end(), name) - tasks.begin());
  };
  nlohmann::json related_json = nlohmann::json::array();
  std::set<std::pair<size_t, size_t>> related_pairs;
  double related_sum = 0;
  for (const auto& pair : related) {
    const size_t i = index_of(pair.first), j = index_of(pair.second);
    if (i >= t || j >= t) continue;
    related_pairs.insert({std::min(i, j), std::max(i, j)});
    related_json.push_back({{"pair", {pair.first, pair.second}}, {"jaccard", overall[i][j]}});
    related_sum += overall[i][j];
  }
  double unrelated_sum = 0;
  int64_t unrelated_count = 0;
  for (size_t i = 0; i < t; ++i) {
    for (size_t j = i + 1; j < t; ++j) {
      if (related_pairs.count({i, j}) != 0) continue;
      unrelated_sum += overall[i][j];
      ++unrelated_count;
    }
  }
  return {{"tasks", tasks},
          {"jaccard", overall},
          {"layers", groups},
          {"per_layer", per_layer},
          {"related", related_json},
          {"related_mean", number_or_null(related_pairs.empty() ? std::nan("") : related_sum / related_pairs.size())},
          {"unrelated_mean", number_or_null(unrelated_count == 0 ? std::nan("") : unrelated_sum / unrelated_count)}};
}

void reset_to_base(io::StateDict& weights, const io::StateDict& base, const skills::SparseSkill& skill) {
  torch::NoGradGuard no_grad;
  for (const auto& item : skill.tensors) {
    torch::Tensor target = weights[item.first].view({-1});
    const torch::Tensor source = base[item.first].reshape({-1});
    target.index_copy_(0, item.second.indices, source.index_select(0, item.second.indices));
  }
}

}  // namespace sg::cli
