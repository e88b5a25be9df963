// skillgraft graft: applies a skill file (sparse, lora or dense) to a base model directory (or
// removes it from a grafted one) and writes the result as a model directory.
#include <torch/torch.h>

#include <cstdio>
#include <functional>
#include <memory>

#include "cli/commands.h"
#include "cli/flags.h"
#include "io/fingerprint.h"
#include "model/causal_lm.h"
#include "skills/lora_skill.h"
#include "skills/skill.h"
#include "util/error.h"
#include "util/log.h"

namespace sg::cli {

int run_graft(const std::vector<std::string>& args) {
  std::string base_dir, skill_path, out_dir;
  bool remove = false;
  CommonOptions common;
  FlagSet flags("graft", "skillgraft graft --base DIR --skill FILE --out DIR [--remove]",
                "Grafts a skill onto the base model it was made from. A sparse skill (from\n"
                "skillgraft localize) puts the fine-tuned values at its selected positions; a lora or\n"
                "dense skill (from skillgraft extract, or a PEFT import) adds its delta (scale B A, or\n"
                "the whole delta). --remove takes it back out of a grafted model: bit for bit for a\n"
                "sparse skill, up to float rounding (w + d - d) for lora and dense. Writes a model\n"
                "directory with the base's tokenizer.");
  flags.add_string("base", &base_dir, "the model directory to graft onto (or, with --remove, the grafted one)", true);
  flags.add_string("skill", &skill_path, "the skill file (.safetensors, kind sparse, lora or dense)", true);
  flags.add_string("out", &out_dir, "output model directory (created if missing)", true);
  flags.add_bool("remove", &remove, "remove the skill instead of applying it");
  flags.add_common(&common.threads, &common.json_path, &common.quiet);
  if (!flags.parse(args)) return 0;
  apply_common(common);

  // Read and validate the skill before the (larger) model.
  const std::string kind = skills::read_skill_file_info(skill_path).kind;
  std::string task, base_fingerprint;
  int64_t selected = 0;
  size_t tensors = 0;
  std::function<void(io::StateDict&)> graft;
  if (kind == "sparse") {
    auto skill = std::make_shared<skills::SparseSkill>(skills::load_sparse_skill(skill_path));
    task = skill->task, base_fingerprint = skill->base_fingerprint;
    selected = skill->parameter_count(), tensors = skill->tensors.size();
    graft = [skill, remove](io::StateDict& w) {
      remove ? skills::remove_sparse_skill(w, *skill) : skills::apply_sparse_skill(w, *skill, /*check_base=*/true);
    };
  } else if (kind == "lora") {
    auto skill = std::make_shared<skills::LoraSkill>(skills::load_lora_skill(skill_path));
    task = skill->task, base_fingerprint = skill->base_fingerprint;
    selected = skill->parameter_count(), tensors = skill->tensors.size();
    graft = [skill, remove](io::StateDict& w) {
      remove ? skills::remove_lora_skill(w, *skill) : skills::apply_lora_skill(w, *skill, /*check_base=*/true);
    };
  } else if (kind == "dense") {
    auto skill = std::make_shared<skills::DenseSkill>(skills::load_dense_skill(skill_path));
    task = skill->task, base_fingerprint = skill->base_fingerprint;
    selected = skill->parameter_count(), tensors = skill->tensors.size();
    graft = [skill, remove](io::StateDict& w) {
      remove ? skills::remove_dense_skill(w, *skill) : skills::apply_dense_skill(w, *skill, /*check_base=*/true);
    };
  } else {
    SG_FAIL(skill_path << ": a " << kind << " skill changes no weights; hint: graft a sparse, lora or dense skill");
  }
  model::LoadedModel loaded = model::load_model_dir(base_dir);
  io::StateDict weights = model::model_state_dict(*loaded.model);
  graft(weights);
  model::save_model_dir(out_dir, *loaded.model, loaded.tokenizer.get());

  const int64_t total = model::parameter_count(loaded.config);
  const std::string what = kind == "sparse" ? "skill" : kind + " skill";
  std::printf("%s %s \"%s\" (%lld parameters, %.4f%% of %lld, %zu tensors) %s %s -> %s\n",
              remove ? "removed" : "grafted", what.c_str(), task.c_str(),
              static_cast<long long>(selected),
              total > 0 ? 100.0 * static_cast<double>(selected) / static_cast<double>(total) : 0.0,
              static_cast<long long>(total), tensors, remove ? "from" : "onto", base_dir.c_str(), out_dir.c_str());
  write_json_output(common, {{"action", remove ? "remove" : "apply"},
                             {"base", base_dir},
                             {"skill", skill_path},
                             {"out", out_dir},
                             {"kind", kind},
                             {"task", task},
                             {"base_fingerprint", base_fingerprint},
                             {"parameters", selected},
                             {"model_parameters", total},
                             {"tensors", tensors},
                             {"out_fingerprint", io::state_dict_fingerprint(weights)}});
  return 0;
}

}  // namespace sg::cli
