// Every merge method against an independent Python reference (tests/reference/merge_ref.py, written
// from the methods' definitions in float64 numpy): two fine-tuned checkpoints and two overlapping
// sparse skills with quantized deltas (so ties' trimming meets equal magnitudes), one tensor larger
// than a chunk. Each case's merged tensors must match to float32 rounding.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>

#include "compose/merge.h"
#include "io/fingerprint.h"
#include "io/hf_checkpoint.h"
#include "io/safetensors.h"
#include "skills/skill.h"
#include "test_env.h"
#include "test_util.h"
#include "util/file.h"

namespace {

using sg::compose::MergeMethod;
using sg::io::StateDict;

const int kOneThread = [] {
  at::set_num_threads(1);
  return 1;
}();

// A sparse skill whose deltas are multiples of 1/64 in [-4/64, 4/64] at a random share of positions.
sg::skills::SparseSkill quantized_skill(const StateDict& base, double fraction, uint64_t seed) {
  torch::manual_seed(seed);
  sg::skills::SparseSkill skill;
  skill.base_fingerprint = sg::io::state_dict_fingerprint(base);
  skill.task = "q" + std::to_string(seed);
  for (const auto& item : base) {
    const int64_t n = item.value().numel();
    at::Tensor indices = (torch::rand({n}) < fraction).nonzero().squeeze(1);
    at::Tensor levels = torch::randint(1, 5, {indices.numel()}).to(torch::kFloat) / 64;
    at::Tensor signs = torch::where(torch::rand({indices.numel()}) < 0.5, torch::ones_like(levels), -torch::ones_like(levels));
    skill.tensors[item.key()] = {indices, levels * signs, item.value().sizes().vec(), at::Tensor(), at::Tensor()};
  }
  return skill;
}

struct Case {
  std::string name;
  MergeMethod method;
  std::vector<int> inputs;
  std::vector<double> weights;
  std::vector<double> densities;
  double lambda = 1.0;
  int normalize = -1;
  bool rescale = true;
  uint64_t seed = 0;
  sg::compose::OverlapRule overlap = sg::compose::OverlapRule::kMean;
};

TEST(MergeReference, EveryMethodMatchesThePythonReference) {
  const std::string root = sg::test::temp_dir("sg-merge-ref");
  torch::manual_seed(1);
  StateDict base;
  base.insert("model.embed_tokens.weight", torch::randn({30, 16}) * 0.1);
  base.insert("model.layers.0.mlp.up_proj.weight", torch::randn({130, 150}) * 0.1);  // > one chunk
  base.insert("model.layers.0.input_layernorm.weight", 1 + torch::randn({16}) * 0.1);
  sg::io::write_hf_checkpoint(root + "/base", {{"model_type", "llama"}}, base);
  std::vector<std::string> paths;
  for (uint64_t seed : {2, 3}) {
    torch::manual_seed(seed);
    StateDict ft;
    for (const auto& item : base) ft.insert(item.key(), item.value() + torch::randn_like(item.value()) * 0.02);
    paths.push_back(root + "/ft" + std::to_string(seed));
    sg::io::write_hf_checkpoint(paths.back(), {{"model_type", "llama"}}, ft);
  }
  for (uint64_t seed : {4, 5}) {
    paths.push_back(root + "/skill" + std::to_string(seed) + ".safetensors");
    sg::skills::save_sparse_skill(paths.back(), quantized_skill(base, 0.2, seed));
  }

  using sg::compose::OverlapRule;
  std::vector<Case> cases = {
      {"linear", MergeMethod::kLinear, {0, 1}, {0.3, 0.7}, {1, 1}},
      {"linear_sum", MergeMethod::kLinear, {0, 1, 2}, {0.5, 0.25, 0.4}, {1, 1, 1}, 1.0, 0},
      {"task_arithmetic", MergeMethod::kTaskArithmetic, {0, 1, 2}, {0.5, 1.0, 0.8}, {1, 1, 1}, 0.9},
      {"task_arithmetic_norm", MergeMethod::kTaskArithmetic, {0, 1, 3}, {0.5, 1.0, 0.8}, {1, 1, 1}, 1.2, 1},
      {"ties", MergeMethod::kTies, {0, 1, 2, 3}, {1.0, 0.7, 1.2, 0.5}, {0.3, 0.5, 0.6, 1.0}, 1.1},
      {"ties_sum", MergeMethod::kTies, {0, 2, 3}, {1.0, -0.5, 2.0}, {0.2, 0.1, 0.05}, 1.0, 0},
      {"dare_linear", MergeMethod::kDareLinear, {0, 1, 2}, {0.6, 0.9, 1.0}, {0.5, 0.3, 0.9}, 1.0, -1, true, 7},
      {"dare_ties", MergeMethod::kDareTies, {0, 1, 3}, {1.0, 0.8, 0.6}, {0.4, 0.4, 0.7}, 0.8, -1, true, 3},
      {"dare_ties_plain", MergeMethod::kDareTies, {1, 2}, {1.0, 1.0}, {0.6, 0.5}, 1.0, 1, false, 11},
      {"union_mean", MergeMethod::kSparseUnion, {2, 3}, {1.0, 2.0}, {1, 1}, 1.0, -1, true, 0, OverlapRule::kMean},
      {"union_magnitude", MergeMethod::kSparseUnion, {2, 3, 0}, {1.0, 2.0, 0.5}, {1, 1, 1}, 0.7, -1, true, 0,
       OverlapRule::kMagnitude},
      {"union_weight", MergeMethod::kSparseUnion, {3, 2}, {1.0, 2.0}, {1, 1}, 1.0, -1, true, 0, OverlapRule::kWeight},
  };

  nlohmann::json job = {{"base", root + "/base"}, {"inputs", paths}, {"cases", nlohmann::json::array()}};
  for (const Case& c : cases) {
    const bool normalize = c.normalize < 0 ? (c.method == MergeMethod::kLinear || c.method == MergeMethod::kTies)
                                           : c.normalize == 1;
    job["cases"].push_back({{"name", c.name},
                            {"method", sg::compose::merge_method_name(c.method)},
                            {"inputs", c.inputs},
                            {"weights", c.weights},
                            {"densities", c.densities},
                            {"lambda", c.lambda},
                            {"normalize", normalize},
                            {"rescale", c.rescale},
                            {"seed", c.seed},
                            {"overlap", sg::compose::overlap_rule_name(c.overlap)}});
  }
  sg::io::write_json_file(root + "/job.json", job);
  const std::string script = sg::test::source_dir() + "/tests/reference/merge_ref.py";
  const auto result = sg::test::run_command(sg::test::shell_quote(sg::test::python()) + " " + sg::test::shell_quote(script) +
                                            " --job " + sg::test::shell_quote(root + "/job.json") + " --out " +
                                            sg::test::shell_quote(root + "/ref.safetensors"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const StateDict reference = sg::io::load_safetensors(root + "/ref.safetensors");

  for (const Case& c : cases) {
    sg::compose::MergeSpec spec;
    spec.base = root + "/base";
    for (size_t k = 0; k < c.inputs.size(); ++k) spec.inputs.push_back({paths[c.inputs[k]], c.weights[k], c.densities[k]});
    spec.options.method = c.method;
    spec.options.lambda = c.lambda;
    spec.options.normalize = c.normalize;
    spec.options.rescale = c.rescale;
    spec.options.seed = c.seed;
    spec.options.overlap = c.overlap;
    const StateDict merged = sg::compose::merge_to_state_dict(spec);
    for (const auto& item : base) {
      const at::Tensor expected = reference[c.name + "/" + item.key()];
      const at::Tensor actual = merged[item.key()];
      // float32 output against a float64 reference: within one rounding of the result.
      const double scale = expected.abs().max().item<double>();
      const double diff = sg::test::max_abs_diff(actual, expected);
      EXPECT_LE(diff, 2e-7 * scale) << c.name << " " << item.key() << ": largest difference " << diff;
      // The merge moved something (the case is not vacuous).
      EXPECT_GT(sg::test::max_abs_diff(expected, item.value()), 1e-4) << c.name << " " << item.key();
    }
  }
}

}  // namespace
