// skillgraft merge: many fine-tuned checkpoints or skills over one base -> one model, by linear,
// task_arithmetic, ties, dare_linear, dare_ties or sparse_union; from flags or a mergekit YAML.
#include <cstdio>
#include <cstdlib>

#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/train_flags.h"
#include "compose/merge.h"
#include "compose/merge_config.h"
#include "util/error.h"

namespace sg::cli {

namespace {

std::vector<double> parse_numbers(const std::string& flag, const std::string& text) {
  std::vector<double> numbers;
  for (const std::string& item : split_comma_list(text)) {
    char* end = nullptr;
    const double value = std::strtod(item.c_str(), &end);
    SG_CHECK(end != item.c_str() && *end == '\0', "--" << flag << ": '" << item << "' is not a number; hint: e.g. 0.5,0.5");
    numbers.push_back(value);
  }
  return numbers;
}

}  // namespace

int run_merge(const std::vector<std::string>& args) {
  std::string base_dir, skills, method_name, weights_text, densities_text, overlap = "mean", normalize, dtype;
  std::string config_path, out_dir;
  double density = 1.0, lambda = 1.0;
  int64_t seed = 0;
  bool no_rescale = false;
  CommonOptions common;
  FlagSet flags("merge",
                "skillgraft merge --base DIR --skills S1,S2,... --method M --out DIR [options]\n"
                "       skillgraft merge --config merge.yaml --out DIR",
                "Merges fine-tuned checkpoints and skills of one base model into one model, streaming tensor\n"
                "by tensor on all cores, and writes an HF checkpoint (config and tokenizer from the base).\n"
                "An input is a checkpoint directory or a skill file (sparse, LoRA or dense); each is checked\n"
                "against the base (names, shapes; a skill's base fingerprint).\n"
                "Methods (delta_i = input - base, w_i its weight):\n"
                "  linear           sum w_i theta_i / sum w_i (--normalize false: no divide)\n"
                "  task_arithmetic  base + lambda * sum w_i delta_i\n"
                "  ties             deltas trimmed to their top --density by magnitude per tensor, sign elected\n"
                "                   by sign(sum w_i delta_i), agreeing entries averaged over their weights\n"
                "  dare_linear      entries dropped at rate 1 - density (--seed), kept ones / density, summed\n"
                "  dare_ties        the same drop, then ties' sign election\n"
                "  sparse_union     every skill's entries applied; overlaps resolved by --overlap\n"
                "--config reads a mergekit YAML (merge_method, base_model, models: [{model, parameters:\n"
                "{weight, density}}], parameters: {lambda, density, normalize, rescale, seed, overlap}, dtype);\n"
                "relative paths in it are read from the config file's directory.");
  flags.add_string("base", &base_dir, "the base model directory every input was fine-tuned from");
  flags.add_string("skills", &skills, "comma-separated inputs: checkpoint directories and/or skill files");
  flags.add_string("method", &method_name, compose::merge_method_list());
  flags.add_string("out", &out_dir, "output model directory (created if missing)", true);
  flags.add_string("config", &config_path, "a mergekit-style YAML config instead of --base/--skills/--method");
  flags.add_string("weights", &weights_text, "comma-separated weights, one per input (default: all 1)");
  flags.add_double("density", &density, "share of each delta kept, in (0, 1] (ties, dare_linear, dare_ties)");
  flags.add_string("densities", &densities_text, "comma-separated densities, one per input (overrides --density)");
  flags.add_double("lambda", &lambda, "scale of the merged delta (not linear)");
  flags.add_int("seed", &seed, "seed of dare's random drop");
  flags.add_string("overlap", &overlap, "sparse_union where inputs overlap: mean | magnitude | weight");
  flags.add_string("normalize", &normalize,
                   "true | false: divide by the weights (default: the method's, as mergekit: linear and ties true)");
  flags.add_bool("no-rescale", &no_rescale, "dare: keep the surviving entries as they are (no / density)");
  flags.add_string("dtype", &dtype, "output dtype: float32 | bfloat16 | float16 (default: the base's)");
  flags.add_common(&common.threads, &common.json_path, &common.quiet);
  if (!flags.parse(args)) return 0;
  apply_common(common);

  compose::MergeSpec spec;
  if (!config_path.empty()) {
    for (const char* flag : {"base", "skills", "method", "weights", "density", "densities", "lambda", "seed", "overlap",
                             "normalize", "no-rescale", "dtype"}) {
      SG_CHECK(!flags.given(flag), "--" << flag << " cannot be combined with --config; hint: set it in the config file");
    }
    spec = compose::read_merge_config(config_path);
  } else {
    SG_CHECK(!base_dir.empty(), "--base is required (or --config); hint: the base model directory");
    SG_CHECK(!skills.empty(), "--skills is required (or --config); hint: comma-separated checkpoints or skill files");
    SG_CHECK(!method_name.empty(), "--method is required (or --config); hint: one of " << compose::merge_method_list());
    spec.base = base_dir;
    spec.options.method = compose::parse_merge_method(method_name);
    const std::vector<std::string> paths = split_comma_list(skills);
    SG_CHECK(!paths.empty(), "--skills lists no inputs; hint: comma-separated checkpoints or skill files");
    std::vector<double> weights(paths.size(), 1.0);
    if (!weights_text.empty()) {
      weights = parse_numbers("weights", weights_text);
      SG_CHECK(weights.size() == paths.size(), "--weights has " << weights.size() << " values for " << paths.size()
                                                                << " inputs; hint: one weight per --skills entry");
    }
    std::vector<double> densities(paths.size(), -1);
    if (!densities_text.empty()) {
      densities = parse_numbers("densities", densities_text);
      SG_CHECK(densities.size() == paths.size(), "--densities has " << densities.size() << " values for " << paths.size()
                                                                    << " inputs; hint: one density per --skills entry");
    }
    for (size_t i = 0; i < paths.size(); ++i) spec.inputs.push_back({paths[i], weights[i], densities[i]});
    spec.options.density = density;
    spec.options.lambda = lambda;
    SG_CHECK(seed >= 0, "--seed must be >= 0, got " << seed);
    spec.options.seed = static_cast<uint64_t>(seed);
    spec.options.overlap = compose::parse_overlap_rule(overlap);
    SG_CHECK(normalize.empty() || normalize == "true" || normalize == "false",
             "--normalize must be true or false, got '" << normalize << "'");
    spec.options.normalize = normalize.empty() ? -1 : normalize == "true" ? 1 : 0;
    spec.options.rescale = !no_rescale;
    spec.options.dtype = dtype;
  }

  const compose::MergeReport report = compose::merge_to_checkpoint(spec, out_dir);
  const double mb = 1024.0 * 1024.0;
  std::printf("merged %zu inputs by %s into %s: %lld tensors (%lld changed), %.1f MB read, %.1f MB written in %.2f s "
              "(%.0f MB/s, %d threads)\n",
              spec.inputs.size(), report.method.c_str(), out_dir.c_str(), static_cast<long long>(report.tensors),
              static_cast<long long>(report.merged_tensors), report.bytes_read / mb, report.bytes_written / mb,
              report.seconds, report.seconds > 0 ? (report.bytes_read + report.bytes_written) / mb / report.seconds : 0.0,
              report.threads);
  nlohmann::json json = report.to_json();
  json["base"] = spec.base;
  if (!config_path.empty()) json["config"] = config_path;
  write_json_output(common, json);
  return 0;
}

}  // namespace sg::cli
