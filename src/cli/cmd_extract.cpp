// skillgraft extract: a skill of another kind from a fine-tune or a skill file: LoRA by truncated SVD
// of each weight matrix's delta (a rank, or an energy share), or the dense delta; prints the
// reconstruction error per tensor kind and overall, and the sizes.
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/train_flags.h"
#include "io/fingerprint.h"
#include "model/causal_lm.h"
#include "skills/lora_convert.h"
#include "skills/lora_skill.h"
#include "skills/skill.h"
#include "util/error.h"
#include "util/log.h"

namespace sg::cli {

namespace {

std::string rank_range(const nlohmann::json& kind) {
  if (kind["carried"].get<int64_t>() == 0) return "-";
  const int64_t lo = kind["min_rank"].get<int64_t>(), hi = kind["max_rank"].get<int64_t>();
  return lo == hi ? std::to_string(lo) : std::to_string(lo) + ".." + std::to_string(hi);
}

void print_report(const nlohmann::json& report) {
  const bool lora = report["to"] == "lora";
  // delta share: the kind's share of ||delta||^2.
  std::printf("%-24s %7s %7s %8s %11s %10s\n", "kind", "tensors", "carried", lora ? "rank" : "", "delta share",
              "rel. error");
  for (const auto& item : report["per_kind"].items()) {
    const nlohmann::json& k = item.value();
    char error[32] = "-";
    if (k["carried"].get<int64_t>() > 0) std::snprintf(error, sizeof(error), "%.3g", k["relative_error"].get<double>());
    std::printf("%-24s %7lld %7lld %8s %10.2f%% %10s\n", item.key().c_str(),
                static_cast<long long>(k["tensors"].get<int64_t>()), static_cast<long long>(k["carried"].get<int64_t>()),
                lora ? rank_range(k).c_str() : "", 100.0 * k["delta_share"].get<double>(), error);
  }
  const nlohmann::json& o = report["overall"];
  std::printf("relative error %.6g over the carried tensors (||delta - %s|| / ||delta||)\n",
              o["relative_error"].get<double>(), lora ? "B A" : "stored delta");
  const double uncarried = o["uncarried_fraction"].get<double>();
  std::printf("not carried: %.2f%% of the delta norm, %.2f%% of its square (%lld of %lld tensors: 1-D norms and "
              "biases, embeddings, non-targets)\n",
              100.0 * uncarried, 100.0 * uncarried * uncarried,
              static_cast<long long>(o["tensors"].get<int64_t>() - o["carried_tensors"].get<int64_t>()),
              static_cast<long long>(o["tensors"].get<int64_t>()));
  std::printf("total relative error %.6g (everything not carried counted as lost)\n",
              o["total_relative_error"].get<double>());
}

}  // namespace

int run_extract(const std::vector<std::string>& args) {
  std::string base_dir, finetuned_dir, skill_path, to, targets_text, task, out_path;
  int64_t rank = 0, max_rank = 0;
  double energy = 0;
  CommonOptions common;
  FlagSet flags("extract",
                "skillgraft extract --base DIR (--finetuned DIR | --skill FILE) --to lora|dense "
                "(--rank R | --energy E) --out FILE [options]",
                "Makes a skill of another kind. --to lora: per weight matrix, the truncated SVD of its\n"
                "delta (fine-tuned - base, or the skill's delta) as B A with B = U S^1/2, A = S^1/2 V^T,\n"
                "scale 1; --rank R keeps R singular values, --energy E the fewest whose squares reach\n"
                "the share E of the total (per tensor), --max-rank caps either. LoRA carries 2-D\n"
                "projection weights only: norms and biases (1-D) and the embeddings are left out (name\n"
                "an embedding in --targets to carry it; it then cannot be exported to PEFT), and the\n"
                "report says how much of the delta's norm they hold. --to dense: the whole delta of\n"
                "every changed tensor. Prints, per tensor kind, the ranks, the share of the delta and\n"
                "the relative reconstruction error ||delta - approximation|| / ||delta||, then overall.\n"
                "The skill keeps the base's fingerprint: graft it onto --base.");
  flags.add_string("base", &base_dir, "the base model directory", true);
  flags.add_string("finetuned", &finetuned_dir, "the fine-tuned model directory (the delta is fine-tuned - base)");
  flags.add_string("skill", &skill_path, "a skill file of --base (sparse, dense or lora) to convert");
  flags.add_string("to", &to, "lora or dense", true);
  flags.add_int("rank", &rank, "LoRA: singular values kept per matrix");
  flags.add_double("energy", &energy, "LoRA: share of the squared singular values kept per matrix, in (0, 1]");
  flags.add_int("max-rank", &max_rank, "LoRA: at most this rank per matrix (0 = no cap)");
  flags.add_string("targets", &targets_text,
                   "LoRA: comma-separated module-name suffixes to carry (default: every 2-D weight but the embeddings)");
  flags.add_string("task", &task, "the skill's task name (default: the skill's, or the fine-tuned directory's name)");
  flags.add_string("out", &out_path, "the skill file to write (.safetensors)", true);
  flags.add_common(&common.threads, &common.json_path, &common.quiet);
  if (!flags.parse(args)) return 0;
  apply_common(common);

  SG_CHECK(finetuned_dir.empty() != skill_path.empty(),
           "give exactly one of --finetuned and --skill; hint: the delta comes from a fine-tune or from a skill file");
  SG_CHECK(to == "lora" || to == "dense", "--to is \"" << to << "\"; hint: --to lora or --to dense");
  skills::LoraConversionOptions options;
  options.rule.rank = rank;
  options.rule.energy = energy;
  options.rule.max_rank = max_rank;
  options.targets = split_comma_list(targets_text);
  if (to == "lora") {
    SG_CHECK((rank > 0) != (energy > 0), "--to lora needs exactly one of --rank R and --energy E; hint: e.g. --rank 8");
    SG_CHECK(energy <= 1, "--energy " << energy << " is not in (0, 1]; hint: e.g. --energy 0.9");
    SG_CHECK(rank >= 0 && max_rank >= 0, "--rank and --max-rank must not be negative");
  } else {
    SG_CHECK(rank == 0 && energy == 0 && max_rank == 0 && targets_text.empty(),
             "--rank, --energy, --max-rank and --targets shape a LoRA; hint: drop them with --to dense");
  }

  model::LoadedModel base = model::load_model_dir(base_dir);
  const io::StateDict base_weights = model::model_state_dict(*base.model);
  const std::string base_fingerprint = io::state_dict_fingerprint(base_weights);
  skills::ConversionReport report;
  skills::LoraSkill lora;
  skills::DenseSkill dense;
  std::string source_kind = "weights";
  if (!finetuned_dir.empty()) {
    model::LoadedModel finetuned = model::load_model_dir(finetuned_dir);
    const io::StateDict finetuned_weights = model::model_state_dict(*finetuned.model);
    if (task.empty()) task = std::filesystem::path(finetuned_dir).lexically_normal().filename().string();
    if (task.empty()) task = std::filesystem::path(finetuned_dir).lexically_normal().parent_path().filename().string();
    if (to == "lora") {
      lora = skills::lora_skill_from_weights(base_weights, finetuned_weights, task, options, &report);
    } else {
      dense = skills::dense_skill_from_weights(base_weights, finetuned_weights, task, &report);
    }
  } else {
    const skills::SkillFileInfo info = skills::read_skill_file_info(skill_path);
    source_kind = info.kind;
    SG_CHECK(info.base_fingerprint == base_fingerprint,
             "skill " << skill_path << " was made for base " << info.base_fingerprint << ", " << base_dir << " is "
                      << base_fingerprint << "; hint: pass the base the skill was made from as --base");
    if (info.kind == "sparse") {
      const skills::SparseSkill sparse = skills::load_sparse_skill(skill_path);
      if (to == "lora") lora = skills::lora_skill_from_sparse(sparse, options, &report);
      else dense = skills::dense_skill_from_sparse(sparse, &report);
    } else if (info.kind == "dense") {
      SG_CHECK(to == "lora", skill_path << " is already a dense skill; hint: --to lora");
      lora = skills::lora_skill_from_dense(skills::load_dense_skill(skill_path), options, &report);
    } else if (info.kind == "lora") {
      const skills::LoraSkill source = skills::load_lora_skill(skill_path);
      if (to == "dense") {
        dense = skills::dense_skill_from_lora(source, &report);
      } else {
        // Re-ranking: the LoRA's own delta, decomposed again.
        lora = skills::lora_skill_from_dense(skills::dense_skill_from_lora(source), options, &report);
      }
    } else {
      SG_FAIL(skill_path << ": a " << info.kind << " skill has no weight delta to convert; hint: extract from a sparse, dense or lora skill");
    }
    if (!task.empty()) (to == "lora" ? lora.task : dense.task) = task;
  }
  if (to == "lora") {
    SG_CHECK(!lora.tensors.empty(), "the delta has no matrix a LoRA can carry; hint: check --targets, or use --to dense");
    lora.base_fingerprint = base_fingerprint;
    lora.metrics["conversion"]["source"] = finetuned_dir.empty() ? skill_path : finetuned_dir;
    skills::save_lora_skill(out_path, lora);
  } else {
    SG_CHECK(!dense.tensors.empty(), "the delta is zero everywhere; hint: is --finetuned the base itself?");
    dense.base_fingerprint = base_fingerprint;
    dense.metrics["conversion"]["source"] = finetuned_dir.empty() ? skill_path : finetuned_dir;
    skills::save_dense_skill(out_path, dense);
  }

  nlohmann::json result = report.to_json();
  print_report(result);
  const int64_t bytes = static_cast<int64_t>(std::filesystem::file_size(out_path));
  const int64_t parameters = report.parameters;
  std::printf("%s skill \"%s\": %lld parameters (the dense delta has %lld, %.2f%%), %s, %lld bytes\n", to.c_str(),
              (to == "lora" ? lora.task : dense.task).c_str(), static_cast<long long>(parameters),
              static_cast<long long>(report.dense_parameters),
              report.dense_parameters > 0 ? 100.0 * static_cast<double>(parameters) / static_cast<double>(report.dense_parameters) : 0.0,
              out_path.c_str(), static_cast<long long>(bytes));
  result["out"] = out_path;
  result["bytes"] = bytes;
  result["base"] = base_dir;
  result["base_fingerprint"] = base_fingerprint;
  result["from"] = source_kind;
  result["source"] = finetuned_dir.empty() ? skill_path : finetuned_dir;
  result["task"] = to == "lora" ? lora.task : dense.task;
  if (to == "lora") {
    nlohmann::json rule = nlohmann::json::object();
    if (rank > 0) rule["rank"] = rank;
    if (energy > 0) rule["energy"] = energy;
    if (max_rank > 0) rule["max_rank"] = max_rank;
    result["rule"] = rule;
  }
  write_json_output(common, result);
  return 0;
}

}  // namespace sg::cli
