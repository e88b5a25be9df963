// skillgraft graft: applies a sparse skill file to a base model directory (or removes it from a
// grafted one) and writes the result as a model directory.
#include <torch/torch.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/flags.h"
#include "io/fingerprint.h"
#include "model/causal_lm.h"
#include "skills/skill.h"
#include "util/error.h"
#include "util/log.h"

namespace sg::cli {

int run_graft(const std::vector<std::string>& args) {
  std::string base_dir, skill_path, out_dir;
  bool remove = false;
  CommonOptions common;
  FlagSet flags("graft", "skillgraft graft --base DIR --skill FILE --out DIR [--remove]",
                "Grafts a sparse skill (from skillgraft localize) onto the base model it was made\n"
                "from: the skill's fine-tuned values replace the base's at the selected positions.\n"
                "--remove takes it back out of a grafted model (bit for bit: the result equals the\n"
                "base). Writes a model directory with the base's tokenizer.");
  flags.add_string("base", &base_dir, "the model directory to graft onto (or, with --remove, the grafted one)", true);
  flags.add_string("skill", &skill_path, "the skill file (.safetensors, kind=sparse)", true);
  flags.add_string("out", &out_dir, "output model directory (created if missing)", true);
  flags.add_bool("remove", &remove, "remove the skill instead of applying it");
  flags.add_common(&common.threads, &common.json_path, &common.quiet);
  if (!flags.parse(args)) return 0;
  apply_common(common);

  // Read and validate the skill before the (larger) model.
  skills::SparseSkill skill = skills::load_sparse_skill(skill_path);
  model::LoadedModel loaded = model::load_model_dir(base_dir);
  io::StateDict weights = model::model_state_dict(*loaded.model);
  if (remove) {
    skills::remove_sparse_skill(weights, skill);
  } else {
    skills::apply_sparse_skill(weights, skill, /*check_base=*/true);
  }
  model::save_model_dir(out_dir, *loaded.model, loaded.tokenizer.get());

  const int64_t total = model::parameter_count(loaded.config);
  const int64_t selected = skill.parameter_count();
  std::printf("%s skill \"%s\" (%lld parameters, %.4f%% of %lld, %zu tensors) %s %s -> %s\n",
              remove ? "removed" : "grafted", skill.task.c_str(), static_cast<long long>(selected),
              total > 0 ? 100.0 * static_cast<double>(selected) / static_cast<double>(total) : 0.0,
              static_cast<long long>(total), skill.tensors.size(), remove ? "from" : "onto", base_dir.c_str(),
              out_dir.c_str());
  write_json_output(common, {{"action", remove ? "remove" : "apply"},
                             {"base", base_dir},
                             {"skill", skill_path},
                             {"out", out_dir},
                             {"task", skill.task},
                             {"base_fingerprint", skill.base_fingerprint},
                             {"parameters", selected},
                             {"model_parameters", total},
                             {"tensors", skill.tensors.size()},
                             {"out_fingerprint", io::state_dict_fingerprint(weights)}});
  return 0;
}

}  // namespace sg::cli
