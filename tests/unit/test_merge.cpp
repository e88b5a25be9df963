// Merging: the identities (task arithmetic of one skill = grafting it; ties at density 1 of one input
// = that input; dare at density 1 = task arithmetic / ties; linear of identical models = the model),
// hand-computed ties trimming and sparse_union overlaps, seeded DARE, dtypes, the checkpoint writer,
// inputs checked against the base, option validation, and mergekit YAML configs.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "compose/merge.h"
#include "compose/merge_config.h"
#include "io/fingerprint.h"
#include "io/hf_checkpoint.h"
#include "io/safetensors.h"
#include "skills/lora_skill.h"
#include "skills/skill.h"
#include "test_env.h"
#include "test_util.h"
#include "util/file.h"

namespace {

using sg::compose::MergeBase;
using sg::compose::MergeInput;
using sg::compose::MergeMethod;
using sg::compose::MergeOptions;
using sg::compose::MergeSpec;
using sg::compose::WeightedInput;
using sg::io::StateDict;
using sg::skills::SparseSkill;
using sg::test::error_of;

const int kOneThread = [] {
  at::set_num_threads(1);
  return 1;
}();

bool bits_equal(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  if (a.scalar_type() == torch::kFloat) return torch::equal(a.contiguous().view(torch::kInt32), b.contiguous().view(torch::kInt32));
  return torch::equal(a, b);
}

void expect_dicts_bit_equal(const StateDict& actual, const StateDict& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (const auto& item : expected) {
    ASSERT_TRUE(actual.contains(item.key())) << item.key();
    EXPECT_TRUE(bits_equal(actual[item.key()], item.value()))
        << item.key() << ": max diff " << sg::test::max_abs_diff(actual[item.key()], item.value());
  }
}

StateDict clone_dict(const StateDict& dict) {
  StateDict out;
  for (const auto& item : dict) out.insert(item.key(), item.value().detach().clone());
  return out;
}

StateDict random_base(uint64_t seed) {
  torch::manual_seed(seed);
  StateDict base;
  base.insert("model.embed_tokens.weight", torch::randn({50, 16}) * 0.1);
  base.insert("model.layers.0.mlp.up_proj.weight", torch::randn({24, 16}) * 0.1);
  base.insert("model.layers.0.input_layernorm.weight", 1 + torch::randn({16}) * 0.1);
  base.insert("model.layers.1.mlp.up_proj.weight", torch::randn({24, 16}) * 0.1);
  return base;
}

// ft = b * (1 + eps), |eps| < 0.45: ft - b is exact in float32 and b + (ft - b) == ft.
StateDict relative_finetune(const StateDict& base, uint64_t seed) {
  torch::manual_seed(seed);
  StateDict ft;
  for (const auto& item : base) {
    at::Tensor eps = (torch::randn_like(item.value()) * 0.05).clamp(-0.45, 0.45);
    ft.insert(item.key(), item.value() * (1 + eps));
  }
  return ft;
}

SparseSkill random_skill(const StateDict& base, const StateDict& ft, double fraction, uint64_t seed,
                         const std::string& task, const std::string& only_tensor = "") {
  torch::manual_seed(seed);
  std::map<std::string, at::Tensor> mask;
  for (const auto& item : base) {
    if (!only_tensor.empty() && item.key() != only_tensor) continue;
    mask[item.key()] = torch::rand(item.value().sizes()) < fraction;
  }
  return sg::skills::make_sparse_skill(base, ft, mask, task);
}

std::string write_checkpoint(const std::string& dir, const StateDict& weights) {
  sg::io::write_hf_checkpoint(dir, {{"model_type", "llama"}, {"note", "test"}}, weights);
  return dir;
}

struct Fixture {
  std::string root;
  StateDict base;
  std::string base_dir;
};

Fixture make_fixture(const std::string& prefix, uint64_t seed = 1) {
  Fixture f;
  f.root = sg::test::temp_dir(prefix);
  f.base = random_base(seed);
  f.base_dir = write_checkpoint(f.root + "/base", f.base);
  return f;
}

MergeSpec spec_of(const Fixture& f, MergeMethod method, std::vector<std::pair<std::string, double>> inputs) {
  MergeSpec spec;
  spec.base = f.base_dir;
  spec.options.method = method;
  for (const auto& [path, weight] : inputs) spec.inputs.push_back({path, weight, -1});
  return spec;
}

TEST(Merge, TaskArithmeticOfOneSkillWithWeightOneIsGraftingIt) {
  Fixture f = make_fixture("sg-merge");
  SparseSkill skill = random_skill(f.base, relative_finetune(f.base, 2), 0.2, 3, "t");
  const std::string path = f.root + "/skill.safetensors";
  sg::skills::save_sparse_skill(path, skill);
  StateDict grafted = clone_dict(f.base);
  sg::skills::apply_sparse_skill(grafted, skill);

  const MergeSpec spec = spec_of(f, MergeMethod::kTaskArithmetic, {{path, 1.0}});
  expect_dicts_bit_equal(sg::compose::merge_to_state_dict(spec), grafted);
  // The checkpoint path writes the same values.
  sg::compose::MergeReport report = sg::compose::merge_to_checkpoint(spec, f.root + "/out");
  expect_dicts_bit_equal(sg::io::load_safetensors_dir(f.root + "/out"), grafted);
  EXPECT_EQ(report.tensors, 4);
  EXPECT_EQ(report.merged_tensors, 4);
  // sparse_union of that one skill is its graft too.
  expect_dicts_bit_equal(sg::compose::merge_to_state_dict(spec_of(f, MergeMethod::kSparseUnion, {{path, 1.0}})), grafted);
}

TEST(Merge, LoraAndDenseSkillsMergeLikeApplyingThem) {
  Fixture f = make_fixture("sg-merge");
  torch::manual_seed(30);
  sg::skills::LoraSkill lora;
  lora.base_fingerprint = sg::io::state_dict_fingerprint(f.base);
  lora.task = "lora";
  for (const char* name : {"model.layers.0.mlp.up_proj.weight", "model.layers.1.mlp.up_proj.weight"}) {
    sg::skills::LoraTensorDelta part;
    part.a = torch::randn({3, 16}) * 0.1;
    part.b = torch::randn({24, 3}) * 0.1;
    part.scale = 2.0 / 3.0;
    part.shape = {24, 16};
    lora.tensors[name] = part;
  }
  sg::skills::DenseSkill dense;
  dense.base_fingerprint = lora.base_fingerprint;
  dense.task = "dense";
  dense.tensors["model.embed_tokens.weight"] = torch::randn({50, 16}) * 0.01;
  const std::string lora_path = f.root + "/lora.safetensors", dense_path = f.root + "/dense.safetensors";
  sg::skills::save_lora_skill(lora_path, lora);
  sg::skills::save_dense_skill(dense_path, dense);

  StateDict expected = clone_dict(f.base);
  sg::skills::apply_lora_skill(expected, sg::skills::load_lora_skill(lora_path));
  expect_dicts_bit_equal(sg::compose::merge_to_state_dict(spec_of(f, MergeMethod::kTaskArithmetic, {{lora_path, 1}})),
                         expected);
  MergeSpec ties = spec_of(f, MergeMethod::kTies, {{lora_path, 1}});
  expect_dicts_bit_equal(sg::compose::merge_to_state_dict(ties), expected);
  sg::skills::apply_dense_skill(expected, sg::skills::load_dense_skill(dense_path), /*check_base=*/false);
  // Disjoint tensors: their sum is applying both.
  const StateDict both =
      sg::compose::merge_to_state_dict(spec_of(f, MergeMethod::kTaskArithmetic, {{lora_path, 1}, {dense_path, 1}}));
  expect_dicts_bit_equal(both, expected);
  // Kinds in the report; a LoRA skill of another base is refused.
  sg::compose::MergeReport report;
  sg::compose::merge_to_state_dict(spec_of(f, MergeMethod::kTaskArithmetic, {{lora_path, 1}, {dense_path, 1}}), &report);
  EXPECT_EQ(report.inputs[0]["kind"], "lora");
  EXPECT_EQ(report.inputs[1]["kind"], "dense");
  lora.base_fingerprint = "0123456789abcdef";
  sg::skills::save_lora_skill(lora_path, lora);
  EXPECT_NE(error_of([&] { sg::compose::merge_to_state_dict(spec_of(f, MergeMethod::kTaskArithmetic, {{lora_path, 1}})); })
                .find("the skill was made for base fingerprint 0123456789abcdef"),
            std::string::npos);
}

TEST(Merge, TiesAtDensityOneOfOneInputIsThatInput) {
  Fixture f = make_fixture("sg-merge");
  StateDict ft = relative_finetune(f.base, 4);
  const std::string ft_dir = write_checkpoint(f.root + "/ft", ft);
  MergeSpec spec = spec_of(f, MergeMethod::kTies, {{ft_dir, 1.0}});
  spec.options.density = 1.0;
  expect_dicts_bit_equal(sg::compose::merge_to_state_dict(spec), ft);
  // With a weight other than 1 the normalized disjoint mean still returns the input.
  spec.inputs[0].weight = 0.25;
  expect_dicts_bit_equal(sg::compose::merge_to_state_dict(spec), ft);
}

TEST(Merge, DareAtDensityOneIsTaskArithmeticAndTies) {
  Fixture f = make_fixture("sg-merge");
  const std::string a = write_checkpoint(f.root + "/a", relative_finetune(f.base, 5));
  const std::string b = write_checkpoint(f.root + "/b", relative_finetune(f.base, 6));
  const std::string s = f.root + "/s.safetensors";
  sg::skills::save_sparse_skill(s, random_skill(f.base, relative_finetune(f.base, 7), 0.1, 8, "s"));
  MergeSpec ta = spec_of(f, MergeMethod::kTaskArithmetic, {{a, 0.7}, {b, 0.4}, {s, 1.3}});
  ta.options.lambda = 0.8;
  MergeSpec dare = ta;
  dare.options.method = MergeMethod::kDareLinear;
  dare.options.seed = 99;
  expect_dicts_bit_equal(sg::compose::merge_to_state_dict(dare), sg::compose::merge_to_state_dict(ta));

  MergeSpec ties = ta;
  ties.options.method = MergeMethod::kTies;
  ties.options.normalize = 1;
  MergeSpec dare_ties = ties;
  dare_ties.options.method = MergeMethod::kDareTies;
  expect_dicts_bit_equal(sg::compose::merge_to_state_dict(dare_ties), sg::compose::merge_to_state_dict(ties));
}

TEST(Merge, LinearOfIdenticalModelsReturnsIt) {
  Fixture f = make_fixture("sg-merge");
  StateDict ft = relative_finetune(f.base, 9);
  const std::string a = write_checkpoint(f.root + "/a", ft);
  const std::string b = write_checkpoint(f.root + "/b", ft);
  for (const auto& weights : std::vector<std::vector<double>>{{1, 1, 1}, {0.25, 0.25, 0.5}, {3, 5, 8}}) {
    MergeSpec spec = spec_of(f, MergeMethod::kLinear, {{a, weights[0]}, {b, weights[1]}, {a, weights[2]}});
    expect_dicts_bit_equal(sg::compose::merge_to_state_dict(spec), ft);
  }
}

TEST(Merge, MergingADeltaWithItselfByTaskArithmeticNormalizedReturnsIt) {
  Fixture f = make_fixture("sg-merge");
  StateDict ft = relative_finetune(f.base, 10);
  const std::string a = write_checkpoint(f.root + "/a", ft);
  MergeSpec spec = spec_of(f, MergeMethod::kTaskArithmetic, {{a, 1}, {a, 1}});
  spec.options.normalize = 1;
  expect_dicts_bit_equal(sg::compose::merge_to_state_dict(spec), ft);
}

// One tensor, base 0, inputs given as sparse skills (exact deltas).
struct HandCase {
  std::shared_ptr<const MergeBase> base;
  std::vector<WeightedInput> inputs;
};

SparseSkill hand_skill(const StateDict& base, const std::string& name, std::vector<int64_t> indices,
                       std::vector<float> deltas) {
  SparseSkill skill;
  skill.base_fingerprint = sg::io::state_dict_fingerprint(base);
  skill.task = "hand";
  skill.tensors[name] = {torch::tensor(indices, torch::kLong), torch::tensor(deltas, torch::kFloat),
                         base[name].sizes().vec(), at::Tensor(), at::Tensor()};
  return skill;
}

at::Tensor merge_one(const StateDict& base, const std::vector<std::pair<SparseSkill, double>>& skills,
                     const MergeOptions& options, const std::string& name = "w") {
  auto merge_base = MergeBase::from_state_dict(base);
  std::vector<WeightedInput> inputs;
  for (const auto& [skill, weight] : skills) {
    inputs.push_back({MergeInput::from_sparse_skill(skill, merge_base), weight, -1});
  }
  return sg::compose::merge_inputs(merge_base, inputs, options)[name];
}

TEST(Merge, SparseUnionOverlapRulesOnAHandMadeCase) {
  StateDict base;
  base.insert("w", torch::arange(8, torch::kFloat).reshape({2, 4}));
  const SparseSkill a = hand_skill(base, "w", {0, 1, 2}, {1, 2, -3});
  const SparseSkill b = hand_skill(base, "w", {2, 3}, {5, -1});
  const at::Tensor b0 = base["w"].reshape({-1});
  auto expect = [&](const std::vector<float>& delta) { return b0 + torch::tensor(delta); };
  MergeOptions options;
  options.method = MergeMethod::kSparseUnion;
  // a weight 1, b weight 3: element 2 is covered by both (a: -3, b: 5).
  options.overlap = sg::compose::OverlapRule::kMean;
  EXPECT_TRUE(torch::equal(merge_one(base, {{a, 1}, {b, 3}}, options).reshape({-1}), expect({1, 2, 3, -1, 0, 0, 0, 0})));
  options.overlap = sg::compose::OverlapRule::kMagnitude;
  EXPECT_TRUE(torch::equal(merge_one(base, {{a, 1}, {b, 3}}, options).reshape({-1}), expect({1, 2, 5, -1, 0, 0, 0, 0})));
  options.overlap = sg::compose::OverlapRule::kWeight;
  EXPECT_TRUE(torch::equal(merge_one(base, {{a, 1}, {b, 3}}, options).reshape({-1}), expect({1, 2, 5, -1, 0, 0, 0, 0})));
  // Now a weighs 3: the weight rule picks a's -3, magnitude still b's 5, mean (3 * -3 + 5) / 4 = -1.
  options.overlap = sg::compose::OverlapRule::kWeight;
  EXPECT_TRUE(torch::equal(merge_one(base, {{a, 3}, {b, 1}}, options).reshape({-1}), expect({1, 2, -3, -1, 0, 0, 0, 0})));
  options.overlap = sg::compose::OverlapRule::kMagnitude;
  EXPECT_TRUE(torch::equal(merge_one(base, {{a, 3}, {b, 1}}, options).reshape({-1}), expect({1, 2, 5, -1, 0, 0, 0, 0})));
  options.overlap = sg::compose::OverlapRule::kMean;
  EXPECT_TRUE(torch::equal(merge_one(base, {{a, 3}, {b, 1}}, options).reshape({-1}), expect({1, 2, -1, -1, 0, 0, 0, 0})));
  // Equal weights: the earlier input wins the weight rule; lambda scales the union.
  options.overlap = sg::compose::OverlapRule::kWeight;
  options.lambda = 0.5;
  EXPECT_TRUE(torch::equal(merge_one(base, {{b, 2}, {a, 2}}, options).reshape({-1}), expect({0.5, 1, 2.5, -0.5, 0, 0, 0, 0})));
}

TEST(Merge, TiesTrimsToTheTopKBreakingTiesByIndexAndElectsTheSign) {
  StateDict base;
  base.insert("w", torch::zeros({6}));
  // density 0.5 of 6 -> k = 3; four entries tie at 0.5: the three lowest indices are kept.
  const SparseSkill a = hand_skill(base, "w", {0, 1, 2, 3, 4, 5}, {0.5, -0.5, 0.5, 0.125, -0.25, 0.5});
  MergeOptions options;
  options.method = MergeMethod::kTies;
  options.density = 0.5;
  EXPECT_TRUE(torch::equal(merge_one(base, {{a, 1}}, options), torch::tensor({0.5f, -0.5f, 0.5f, 0.f, 0.f, 0.f})));
  // Two inputs at density 1: element 0: +1 (w 1) vs -2 (w 2) -> sum -3, elected -, kept -2 only:
  // -2 * 2 / 2 = -2. element 1: +3 (w 1), +1 (w 2) -> (3 + 2) / 3. element 2: 0 and 0 -> 0.
  StateDict base3;
  base3.insert("w", torch::zeros({3}));
  const SparseSkill p = hand_skill(base3, "w", {0, 1}, {1, 3});
  const SparseSkill q = hand_skill(base3, "w", {0, 1}, {-2, 1});
  options.density = 1;
  const at::Tensor merged = merge_one(base3, {{p, 1}, {q, 2}}, options);
  EXPECT_TRUE(torch::allclose(merged, torch::tensor({-2.f, 5.f / 3.f, 0.f}))) << merged;
  options.normalize = 0;  // the kept weighted sum: -4, 3 + 2
  EXPECT_TRUE(torch::allclose(merge_one(base3, {{p, 1}, {q, 2}}, options), torch::tensor({-4.f, 5.f, 0.f})));
}

// A ties merge of one input at `density` whose delta against a zero base is `delta` (tensor "w"),
// the checkpoints written under a fresh temp directory.
struct OneInputTies {
  std::string root;
  MergeSpec spec;
};

OneInputTies one_input_ties(const std::string& prefix, const at::Tensor& delta, double density) {
  OneInputTies t;
  t.root = sg::test::temp_dir(prefix);
  StateDict base, ft;
  base.insert("w", torch::zeros_like(delta));
  ft.insert("w", delta);
  t.spec.base = write_checkpoint(t.root + "/base", base);
  t.spec.options.method = MergeMethod::kTies;
  t.spec.inputs.push_back({write_checkpoint(t.root + "/ft", ft), 1.0, density});
  return t;
}

TEST(Merge, TiesKeepsExactlyKAcrossChunksAndSlabsWithManyTies) {
  // 1.3M elements (more than one slab, many chunks) whose |delta| takes 8 values: the k-th falls
  // among equal magnitudes and the cut index is needed.
  const int64_t n = 1300000;
  torch::manual_seed(12);
  at::Tensor levels = torch::randint(1, 9, {n}).to(torch::kFloat) * 0.125f;
  at::Tensor signs = torch::where(torch::rand({n}) < 0.5, torch::ones({n}), -torch::ones({n}));
  at::Tensor delta = levels * signs;
  const at::Tensor merged = sg::compose::merge_to_state_dict(one_input_ties("sg-merge-ties", delta, 0.37).spec)["w"];
  const int64_t k = static_cast<int64_t>(std::floor(0.37 * n));
  EXPECT_EQ((merged != 0).sum().item<int64_t>(), k);
  // Expected: everything above the k-th magnitude, and the lowest-index ties at it.
  at::Tensor sorted = std::get<0>(delta.abs().sort(0, /*descending=*/true));
  const float t = sorted[k - 1].item<float>();
  const at::Tensor above = delta.abs() > t;
  const int64_t take = k - above.sum().item<int64_t>();
  const at::Tensor at_t = (delta.abs() == t).nonzero().squeeze(1);
  at::Tensor keep = above.clone();
  keep.index_fill_(0, at_t.slice(0, 0, take), true);
  EXPECT_TRUE(torch::equal(merged, torch::where(keep, delta, torch::zeros({n}))));
}

TEST(Merge, TiesFindsTheExactTopKWhenTheSampleMisleads) {
  // The sampled chunks (every 8th) hold 1.0, the others small distinct values: the sample's guess
  // of the threshold is far off, and the exact fallback must still keep exactly the top k.
  const int64_t n = 1300000, chunk = 16384;
  torch::manual_seed(13);
  at::Tensor delta = torch::randn({n}) * 0.01;
  for (int64_t c = 0; c * chunk < n; c += 8) delta.slice(0, c * chunk, std::min(n, (c + 1) * chunk)).fill_(1.0);
  const at::Tensor merged = sg::compose::merge_to_state_dict(one_input_ties("sg-merge-ties", delta, 0.5).spec)["w"];
  const int64_t k = n / 2;
  const at::Tensor order = std::get<1>(delta.abs().sort(/*stable=*/true, 0, /*descending=*/true));
  at::Tensor keep = torch::zeros({n}, torch::kBool);
  keep.index_fill_(0, order.slice(0, 0, k), true);
  EXPECT_TRUE(torch::equal(merged, torch::where(keep, delta, torch::zeros({n}))));
}

TEST(Merge, TiesInOnePassGivesTheExactTopKMerge) {
  // Tensors large enough to be sampled (so ties merges them reading the inputs once), of different
  // sizes (the whole-tensor buffer grows and drains behind the next one), four inputs with their
  // own densities and weights; one input's deltas of "a" on a grid of 1e-4, so its k-th falls among
  // thousands of equal magnitudes and the lowest indices must be kept. Expected: torch in float64,
  // from a stable sort of each |delta|.
  const std::vector<std::pair<std::string, int64_t>> shapes = {{"a", 1300000}, {"b", 600000}, {"c", 2100000}};
  const std::vector<double> weights = {1.0, 0.5, 2.0, 0.8}, densities = {0.2, 0.5, 0.1, 0.35};
  torch::manual_seed(21);
  StateDict base;
  std::vector<StateDict> fts(weights.size());
  for (const auto& [name, n] : shapes) {
    base.insert(name, torch::randn({n}) * 0.1);
    for (size_t i = 0; i < weights.size(); ++i) {
      at::Tensor delta = torch::randn({n}) * 0.01;
      if (name == "a" && i == 0) delta = torch::round(delta * 1e4) / 1e4;
      fts[i].insert(name, base[name] + delta);
    }
  }
  const std::string root = sg::test::temp_dir("sg-merge-ties1");
  MergeSpec spec;
  spec.base = write_checkpoint(root + "/base", base);
  spec.options.method = MergeMethod::kTies;
  for (size_t i = 0; i < weights.size(); ++i) {
    spec.inputs.push_back({write_checkpoint(root + "/ft" + std::to_string(i), fts[i]), weights[i], densities[i]});
  }
  StateDict expected;
  for (const auto& [name, n] : shapes) {
    at::Tensor elected = torch::zeros({n}, torch::kDouble);
    std::vector<at::Tensor> trimmed;
    for (size_t i = 0; i < weights.size(); ++i) {
      const at::Tensor delta = fts[i][name] - base[name];
      const int64_t k = static_cast<int64_t>(std::floor(densities[i] * static_cast<double>(n)));
      const at::Tensor order = std::get<1>(delta.abs().sort(/*stable=*/true, 0, /*descending=*/true));
      at::Tensor keep = torch::zeros({n}, torch::kBool);
      keep.index_fill_(0, order.slice(0, 0, k), true);
      trimmed.push_back(torch::where(keep, delta, torch::zeros({n})).to(torch::kDouble));
      elected += trimmed.back() * weights[i];
    }
    const at::Tensor sign = torch::where(elected >= 0, torch::ones({n}, torch::kDouble), -torch::ones({n}, torch::kDouble));
    at::Tensor sum = torch::zeros({n}, torch::kDouble), divisor = torch::zeros({n}, torch::kDouble);
    for (size_t i = 0; i < weights.size(); ++i) {
      const at::Tensor weighted = trimmed[i] * weights[i];
      const at::Tensor agree = weighted * sign > 0;
      sum += torch::where(agree, weighted, torch::zeros_like(weighted));
      divisor += torch::where(agree, torch::full({n}, weights[i], torch::kDouble), torch::zeros_like(weighted));
    }
    divisor = torch::where(divisor == 0, torch::ones_like(divisor), divisor);
    expected.insert(name, base[name] + (sum / divisor).to(torch::kFloat));
  }
  at::set_num_threads(2);  // the records of two threads
  const sg::compose::MergeReport one_pass = sg::compose::merge_to_checkpoint(spec, root + "/one");
  const StateDict in_memory = sg::compose::merge_to_state_dict(spec);
  sg::compose::MergeReport exact;
  {
    sg::test::ScopedEnv setting("SG_TIES_EXACT", "1");
    exact = sg::compose::merge_to_checkpoint(spec, root + "/exact");
  }
  MergeSpec bf16_spec = spec;
  bf16_spec.options.dtype = "bfloat16";  // the whole tensor converted as it drains
  const sg::compose::MergeReport bf16 = sg::compose::merge_to_checkpoint(bf16_spec, root + "/bf16");
  at::set_num_threads(1);
  EXPECT_EQ(bf16.extra_passes, 0);
  const StateDict bf16_merged = sg::io::load_safetensors_dir(root + "/bf16");
  for (const auto& item : expected) {
    EXPECT_TRUE(torch::equal(bf16_merged[item.key()], item.value().to(torch::kBFloat16))) << item.key();
  }
  EXPECT_EQ(one_pass.extra_passes, 0);  // the sample only
  EXPECT_GE(exact.extra_passes, 3);     // a window pass per tensor at least
  expect_dicts_bit_equal(sg::io::load_safetensors_dir(root + "/one"), expected);
  expect_dicts_bit_equal(in_memory, expected);
  EXPECT_EQ(sg::util::read_file(root + "/one/model.safetensors"), sg::util::read_file(root + "/exact/model.safetensors"));
}

TEST(Merge, TiesInOnePassFallsBackToTheExactPassesWhenTheSampleMisses) {
  // The sampled chunks (every 8th of 4,096 elements) hold deltas ten times larger than the rest:
  // the sample's window is narrow (one pass is taken) but far above the true median, so the merge
  // must run again after the exact passes and still keep exactly the top k.
  const int64_t n = 1300000, chunk = 4096;
  torch::manual_seed(22);
  at::Tensor delta = torch::randn({n}) * 0.001;
  for (int64_t c = 0; c * chunk < n; c += 8) {
    delta.slice(0, c * chunk, std::min(n, (c + 1) * chunk)).mul_(10);
  }
  const auto [root, spec] = one_input_ties("sg-merge-ties-miss", delta, 0.5);
  const sg::compose::MergeReport report = sg::compose::merge_to_checkpoint(spec, root + "/out");
  // The window pass of the sampled window, an exact pass over the high bits and a window pass of
  // the bin found, then the merge again (the exact passes from the start: the first three only).
  EXPECT_EQ(report.extra_passes, 4);
  {
    sg::test::ScopedEnv setting("SG_TIES_EXACT", "1");
    EXPECT_EQ(sg::compose::merge_to_checkpoint(spec, root + "/exact").extra_passes, 3);
  }
  EXPECT_EQ(sg::util::read_file(root + "/out/model.safetensors"), sg::util::read_file(root + "/exact/model.safetensors"));
  const int64_t k = n / 2;
  const at::Tensor order = std::get<1>(delta.abs().sort(/*stable=*/true, 0, /*descending=*/true));
  at::Tensor keep = torch::zeros({n}, torch::kBool);
  keep.index_fill_(0, order.slice(0, 0, k), true);
  EXPECT_TRUE(torch::equal(sg::io::load_safetensors_dir(root + "/out")["w"], torch::where(keep, delta, torch::zeros({n}))));
}

TEST(Merge, SeededDareIsReproducibleAndKeepsAboutTheDensity) {
  Fixture f = make_fixture("sg-merge");
  const std::string a = write_checkpoint(f.root + "/a", relative_finetune(f.base, 11));
  MergeSpec spec = spec_of(f, MergeMethod::kDareLinear, {{a, 1.0}});
  spec.options.density = 0.3;
  spec.options.seed = 5;
  const StateDict first = sg::compose::merge_to_state_dict(spec);
  expect_dicts_bit_equal(sg::compose::merge_to_state_dict(spec), first);
  sg::compose::merge_to_checkpoint(spec, f.root + "/out");
  expect_dicts_bit_equal(sg::io::load_safetensors_dir(f.root + "/out"), first);
  int64_t kept = 0, total = 0;
  bool rescaled = true;
  for (const auto& item : f.base) {
    const at::Tensor delta = first[item.key()] - item.value();
    kept += (delta != 0).sum().item<int64_t>();
    total += delta.numel();
    // Kept entries are delta / 0.3.
    const at::Tensor original = sg::io::load_safetensors_dir(a)[item.key()] - item.value();
    const at::Tensor nonzero = delta != 0;
    rescaled = rescaled && torch::allclose(delta.masked_select(nonzero), original.masked_select(nonzero) / 0.3, 1e-4, 1e-6);
  }
  EXPECT_NEAR(static_cast<double>(kept) / total, 0.3, 0.03);
  EXPECT_TRUE(rescaled);
  spec.options.seed = 6;
  const StateDict other = sg::compose::merge_to_state_dict(spec);
  EXPECT_FALSE(bits_equal(other["model.embed_tokens.weight"], first["model.embed_tokens.weight"]));
}

TEST(Merge, UntouchedTensorsAreTheBaseAndOutputDtypesConvert) {
  Fixture f = make_fixture("sg-merge");
  const std::string name = "model.layers.0.mlp.up_proj.weight";
  SparseSkill skill = random_skill(f.base, relative_finetune(f.base, 13), 0.3, 14, "t", name);
  const std::string path = f.root + "/skill.safetensors";
  sg::skills::save_sparse_skill(path, skill);
  MergeSpec spec = spec_of(f, MergeMethod::kTies, {{path, 1.0}});
  spec.options.density = 0.5;
  sg::compose::MergeReport report;
  const StateDict merged = sg::compose::merge_to_state_dict(spec, &report);
  EXPECT_EQ(report.merged_tensors, 1);
  for (const auto& item : f.base) {
    if (item.key() != name) EXPECT_TRUE(bits_equal(merged[item.key()], item.value())) << item.key();
  }
  EXPECT_FALSE(bits_equal(merged[name], f.base[name]));
  spec.options.dtype = "bfloat16";
  sg::compose::merge_to_checkpoint(spec, f.root + "/bf16");
  const StateDict bf16 = sg::io::load_safetensors_dir(f.root + "/bf16");
  for (const auto& item : merged) {
    EXPECT_EQ(bf16[item.key()].scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(torch::equal(bf16[item.key()], item.value().to(torch::kBFloat16))) << item.key();
  }
  EXPECT_EQ(sg::io::read_json_file(f.root + "/bf16/config.json")["torch_dtype"], "bfloat16");
}

TEST(Merge, Bfloat16BaseAndInputsMergeInFloat32AndComeOutBfloat16) {
  const std::string root = sg::test::temp_dir("sg-merge-bf16");
  StateDict base_f = random_base(15);
  StateDict ft_f = relative_finetune(base_f, 16);
  StateDict base, ft;
  for (const auto& item : base_f) {
    base.insert(item.key(), item.value().to(torch::kBFloat16));
    ft.insert(item.key(), ft_f[item.key()].to(torch::kBFloat16));
  }
  MergeSpec spec;
  spec.base = write_checkpoint(root + "/base", base);
  spec.inputs.push_back({write_checkpoint(root + "/ft", ft), 0.5, -1});
  spec.options.method = MergeMethod::kTaskArithmetic;
  const StateDict merged = sg::compose::merge_to_state_dict(spec);
  for (const auto& item : base) {
    const at::Tensor b = item.value().to(torch::kFloat);
    const at::Tensor expected = (b + 0.5 * (ft[item.key()].to(torch::kFloat) - b)).to(torch::kBFloat16);
    EXPECT_EQ(merged[item.key()].scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(torch::equal(merged[item.key()], expected)) << item.key();
  }
}

TEST(Merge, CheckpointOutputCopiesConfigAndTokenizerAndRemovesStaleShards) {
  Fixture f = make_fixture("sg-merge");
  sg::util::write_file_atomic(f.base_dir + "/tokenizer.json", "{\"tok\": 1}");
  const std::string a = write_checkpoint(f.root + "/a", relative_finetune(f.base, 17));
  const std::string out = f.root + "/out";
  sg::util::make_directories(out);
  sg::util::write_file_atomic(out + "/model-00001-of-00002.safetensors", "stale");
  sg::util::write_file_atomic(out + "/model.safetensors.index.json", "{}");
  sg::util::write_file_atomic(out + "/vocab.json", "stale");
  sg::compose::merge_to_checkpoint(spec_of(f, MergeMethod::kTaskArithmetic, {{a, 1.0}}), out);
  EXPECT_EQ(sg::util::read_file(out + "/tokenizer.json"), "{\"tok\": 1}");
  EXPECT_EQ(sg::io::read_json_file(out + "/config.json")["note"], "test");
  EXPECT_FALSE(sg::util::file_exists(out + "/model-00001-of-00002.safetensors"));
  EXPECT_FALSE(sg::util::file_exists(out + "/model.safetensors.index.json"));
  EXPECT_FALSE(sg::util::file_exists(out + "/vocab.json"));
  sg::io::Metadata metadata;
  sg::io::load_safetensors(out + "/model.safetensors", &metadata);
  EXPECT_EQ(metadata.at("format"), "pt");
  EXPECT_EQ(nlohmann::json::parse(metadata.at("skillgraft_merge"))["method"], "task_arithmetic");
  // Writing over the base or an input is refused.
  EXPECT_NE(error_of([&] { sg::compose::merge_to_checkpoint(spec_of(f, MergeMethod::kTaskArithmetic, {{a, 1.0}}), f.base_dir); })
                .find("is the base checkpoint directory"),
            std::string::npos);
  EXPECT_NE(error_of([&] { sg::compose::merge_to_checkpoint(spec_of(f, MergeMethod::kTaskArithmetic, {{a, 1.0}}), a); })
                .find("is one of the inputs"),
            std::string::npos);
}

TEST(Merge, InputsAreCheckedAgainstTheBase) {
  Fixture f = make_fixture("sg-merge");
  // A checkpoint with another shape, one missing a tensor, one with an extra tensor.
  StateDict wrong_shape = clone_dict(f.base);
  wrong_shape["model.layers.0.input_layernorm.weight"] = torch::ones({17});
  const std::string shape_dir = write_checkpoint(f.root + "/shape", wrong_shape);
  std::string error = error_of([&] { sg::compose::merge_to_state_dict(spec_of(f, MergeMethod::kLinear, {{shape_dir, 1}})); });
  EXPECT_NE(error.find(shape_dir + ": tensor \"model.layers.0.input_layernorm.weight\" is [17] but [16] in the base"),
            std::string::npos)
      << error;
  StateDict missing;
  for (const auto& item : f.base) {
    if (item.key() != "model.embed_tokens.weight") missing.insert(item.key(), item.value());
  }
  const std::string missing_dir = write_checkpoint(f.root + "/missing", missing);
  error = error_of([&] { sg::compose::merge_to_state_dict(spec_of(f, MergeMethod::kLinear, {{missing_dir, 1}})); });
  EXPECT_NE(error.find("has no tensor \"model.embed_tokens.weight\""), std::string::npos) << error;
  StateDict extra = clone_dict(f.base);
  extra.insert("model.extra.weight", torch::ones({2}));
  const std::string extra_dir = write_checkpoint(f.root + "/extra", extra);
  error = error_of([&] { sg::compose::merge_to_state_dict(spec_of(f, MergeMethod::kLinear, {{extra_dir, 1}})); });
  EXPECT_NE(error.find("tensor \"model.extra.weight\" is not in the base"), std::string::npos) << error;

  // A skill of another base.
  StateDict other = random_base(99);
  const std::string skill_path = f.root + "/other.safetensors";
  sg::skills::save_sparse_skill(skill_path, random_skill(other, relative_finetune(other, 2), 0.1, 3, "other"));
  error = error_of([&] { sg::compose::merge_to_state_dict(spec_of(f, MergeMethod::kTaskArithmetic, {{skill_path, 1}})); });
  EXPECT_NE(error.find(skill_path + ": the skill was made for base fingerprint"), std::string::npos) << error;
  EXPECT_NE(error.find("hint"), std::string::npos);

  // Neither a checkpoint nor a skill; a path that is not there.
  sg::io::save_safetensors(f.root + "/plain.safetensors", f.base);
  error = error_of([&] { sg::compose::merge_to_state_dict(spec_of(f, MergeMethod::kTaskArithmetic, {{f.root + "/plain.safetensors", 1}})); });
  EXPECT_NE(error.find("neither a checkpoint directory nor a skillgraft skill file"), std::string::npos) << error;
  error = error_of([&] { sg::compose::merge_to_state_dict(spec_of(f, MergeMethod::kTaskArithmetic, {{f.root + "/nope", 1}})); });
  EXPECT_NE(error.find(f.root + "/nope: no such file or directory"), std::string::npos) << error;
}

TEST(Merge, OptionsAreValidated) {
  Fixture f = make_fixture("sg-merge");
  const std::string a = write_checkpoint(f.root + "/a", relative_finetune(f.base, 18));
  auto error_for = [&](MergeMethod method, const std::function<void(MergeSpec&)>& change) {
    MergeSpec spec = spec_of(f, method, {{a, 1.0}});
    change(spec);
    return error_of([&] { sg::compose::merge_to_state_dict(spec); });
  };
  EXPECT_NE(error_for(MergeMethod::kTaskArithmetic, [](MergeSpec& s) { s.options.density = 0.5; })
                .find("density 0.5 does not apply to task_arithmetic"),
            std::string::npos);
  EXPECT_NE(error_for(MergeMethod::kTies, [](MergeSpec& s) { s.options.density = 0; }).find("density of input 1 is 0"),
            std::string::npos);
  EXPECT_NE(error_for(MergeMethod::kDareTies, [](MergeSpec& s) { s.inputs[0].density = 1.5; }).find("in (0, 1]"),
            std::string::npos);
  EXPECT_NE(error_for(MergeMethod::kLinear, [](MergeSpec& s) { s.options.lambda = 2; }).find("lambda applies"),
            std::string::npos);
  EXPECT_NE(error_for(MergeMethod::kLinear, [](MergeSpec& s) { s.inputs[0].weight = 0; }).find("sum to 0"),
            std::string::npos);
  EXPECT_NE(error_for(MergeMethod::kSparseUnion, [](MergeSpec& s) { s.inputs[0].weight = -1; }).find("must be > 0"),
            std::string::npos);
  EXPECT_NE(error_for(MergeMethod::kTaskArithmetic, [](MergeSpec& s) { s.options.dtype = "int8"; }).find("unknown output dtype"),
            std::string::npos);
  EXPECT_NE(error_for(MergeMethod::kTaskArithmetic, [](MergeSpec& s) { s.inputs.clear(); }).find("no inputs"),
            std::string::npos);
  EXPECT_NE(error_of([] { sg::compose::parse_merge_method("slerp"); }).find("unknown merge method \"slerp\"; hint: one of linear"),
            std::string::npos);
}

// ---- YAML configs ----

std::string write_text(const std::string& path, const std::string& text) {
  sg::util::write_file_atomic(path, text);
  return path;
}

TEST(MergeConfig, ReadsTheMergekitShape) {
  Fixture f = make_fixture("sg-merge-yaml");
  write_checkpoint(f.root + "/a", relative_finetune(f.base, 19));
  write_checkpoint(f.root + "/b", relative_finetune(f.base, 20));
  const std::string path = write_text(f.root + "/merge.yaml", R"(
merge_method: dare_ties
base_model: base
models:
  - model: base          # the base: left out of task vectors, as in mergekit
  - model: a
    parameters:
      weight: 0.6
      density: 0.4
  - model: b
    parameters: {weight: 0.3}
parameters:
  lambda: 0.9
  density: 0.7
  normalize: true
  int8_mask: true
  seed: 42
dtype: bfloat16
)");
  const MergeSpec spec = sg::compose::read_merge_config(path);
  EXPECT_EQ(spec.options.method, MergeMethod::kDareTies);
  EXPECT_EQ(spec.base, f.root + "/base");
  ASSERT_EQ(spec.inputs.size(), 2u);
  EXPECT_EQ(spec.inputs[0].path, f.root + "/a");
  EXPECT_EQ(spec.inputs[0].weight, 0.6);
  EXPECT_EQ(spec.inputs[0].density, 0.4);
  EXPECT_EQ(spec.inputs[1].weight, 0.3);
  EXPECT_LT(spec.inputs[1].density, 0);  // the global 0.7
  EXPECT_EQ(spec.options.density, 0.7);
  EXPECT_EQ(spec.options.lambda, 0.9);
  EXPECT_EQ(spec.options.normalize, 1);
  EXPECT_EQ(spec.options.seed, 42u);
  EXPECT_EQ(spec.options.dtype, "bfloat16");
  // And it merges.
  const StateDict merged = sg::compose::merge_to_state_dict(spec);
  EXPECT_EQ(merged["model.embed_tokens.weight"].scalar_type(), torch::kBFloat16);
  // In linear the base is one of the averaged models.
  const std::string linear = write_text(f.root + "/linear.yaml",
                                        "merge_method: linear\nbase_model: base\nmodels:\n  - model: base\n  - model: a\n");
  EXPECT_EQ(sg::compose::read_merge_config(linear).inputs.size(), 2u);
}

TEST(MergeConfig, BadConfigsNameTheFileAndField) {
  Fixture f = make_fixture("sg-merge-yaml");
  write_checkpoint(f.root + "/a", relative_finetune(f.base, 21));
  auto error_for = [&](const std::string& text) {
    const std::string path = write_text(f.root + "/bad.yaml", text);
    return error_of([&] { sg::compose::read_merge_config(path); });
  };
  const std::string file = f.root + "/bad.yaml";
  const std::string models = "models:\n  - model: a\n";
  struct Case {
    std::string text;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {"merge_method: slerp\nbase_model: base\n" + models, file + ":1: merge_method: unknown merge method \"slerp\""},
      {"merge_method: ties\nbase_model: base\nmodels:\n  - model: nothere\n",
       file + ":4: models[0].model: " + f.root + "/nothere does not exist"},
      {"merge_method: ties\nbase_model: nobase\n" + models, file + ":2: base_model: " + f.root + "/nobase does not exist"},
      {"merge_method: ties\n" + models, file + ": base_model is missing"},
      {"base_model: base\n" + models, file + ": merge_method is missing"},
      {"merge_method: ties\nbase_model: base\n", file + ": models is missing"},
      {"merge_method: ties\nbase_model: base\nmodels: []\n", "models must be a non-empty list"},
      {"merge_method: ties\nbase_model: base\nmodel_s: 1\n" + models, file + ":3: model_s: unknown field"},
      {"merge_method: ties\nbase_model: base\nmodels:\n  - model: a\n    parameters: {weight: heavy}\n",
       file + ":5: models[0].parameters.weight: \"heavy\" is not a number"},
      {"merge_method: ties\nbase_model: base\nmodels:\n  - model: a\n    parameters: {weight: [0, 1]}\n",
       "models[0].parameters.weight: per-layer values"},
      {"merge_method: ties\nbase_model: base\nmodels:\n  - model: a\n    parameters: {gamma: 1}\n",
       "models[0].parameters.gamma: unknown field"},
      {"merge_method: ties\nbase_model: base\n" + models + "parameters: {normalize: maybe}\n",
       "parameters.normalize: \"maybe\" is not true or false"},
      {"merge_method: ties\nbase_model: base\n" + models + "dtype: int4\n", file + ":5: dtype: unknown dtype \"int4\""},
      {"merge_method: ties\nbase_model: base\nslices:\n  - sources: []\n", "slices: layer slices are not supported"},
      {"merge_method: ties\nbase_model: base\nmodels:\n  - model: a\n   weight: [\n", "not valid YAML"},
      {"- just a list\n", "expected a mapping"},
      {"merge_method: ties\nbase_model: base\nmodels:\n  - model: base\n", "lists only the base model"},
  };
  for (const Case& c : cases) {
    const std::string error = error_for(c.text);
    EXPECT_NE(error.find(c.needle), std::string::npos) << "config:\n" << c.text << "\nerror: " << error;
    EXPECT_EQ(error.find('\n'), std::string::npos) << error;
  }
  EXPECT_NE(error_of([&] { sg::compose::read_merge_config(f.root + "/none.yaml"); }).find("no such merge config"),
            std::string::npos);
}

}  // namespace
