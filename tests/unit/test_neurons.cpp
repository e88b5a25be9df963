// Task neurons, library level: the FFN hook changes nothing when it changes nothing (bit for bit, on
// the fused and the composite path); zeroing neurons through it equals zeroing the matching input
// columns of the output projection (an independent way to remove them); the batched, padded
// activation means equal per-sequence means taken without padding; coverage sets against a brute
// force over every subset; IoU on hand cases; random control sets.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <set>

#include "model/causal_lm.h"
#include "model/config.h"
#include "skills/neurons.h"
#include "test_util.h"

namespace {

using sg::model::CausalLM;
using sg::model::ModelConfig;
using sg::skills::NeuronSets;

ModelConfig tiny_llama(bool mlp_bias) {
  nlohmann::json j = {{"model_type", "llama"},        {"vocab_size", 300},        {"hidden_size", 32},
                      {"intermediate_size", 40},      {"num_hidden_layers", 3},   {"num_attention_heads", 4},
                      {"num_key_value_heads", 2},     {"max_position_embeddings", 64},
                      {"rms_norm_eps", 1e-5},         {"mlp_bias", mlp_bias},     {"tie_word_embeddings", false}};
  return sg::model::config_from_json(j, "test");
}

ModelConfig tiny_gpt2() {
  nlohmann::json j = {{"model_type", "gpt2"}, {"vocab_size", 300}, {"n_embd", 32},
                      {"n_layer", 3},         {"n_head", 4},        {"n_positions", 64}};
  return sg::model::config_from_json(j, "test");
}

std::shared_ptr<CausalLM> random_model(const ModelConfig& config, uint64_t seed) {
  torch::manual_seed(seed);
  auto model = sg::model::create_model(config);
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.normal_(0.0, 0.3);  // O(1) logits, not ~0
  model->eval();
  return model;
}

std::vector<ModelConfig> configs() { return {tiny_llama(false), tiny_llama(true), tiny_gpt2()}; }

torch::Tensor tokens(int64_t B, int64_t T, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(0, 300, {B, T}, torch::kLong);
}

// Forward without gradients (the fused kernels on Llama) or with them (the composite path).
// NoGradGuard rather than InferenceMode: the RoPE table cached by an inference-mode forward could
// not be saved for a later backward.
torch::Tensor run(CausalLM& model, const torch::Tensor& input, bool fused) {
  if (fused) {
    torch::NoGradGuard no_grad;
    return model.forward(input);
  }
  return model.forward(input).detach();
}

// The output projection's weight of layer l, whose input dimension is the FFN's neurons:
// Llama down_proj.weight [C, I] (columns), GPT-2 Conv1D c_proj.weight [I, C] (rows).
torch::Tensor output_projection(CausalLM& model, int64_t layer) {
  for (const auto& item : model.named_parameters()) {
    const std::string prefix_llama = "model.layers." + std::to_string(layer) + ".mlp.down_proj.weight";
    const std::string prefix_gpt2 = "transformer.h." + std::to_string(layer) + ".mlp.c_proj.weight";
    if (item.key() == prefix_llama) return item.value().transpose(0, 1);  // [I, C]
    if (item.key() == prefix_gpt2) return item.value();                   // [I, C]
  }
  ADD_FAILURE() << "no output projection for layer " << layer;
  return {};
}

TEST(Neurons, NoOpHookLeavesLogitsBitIdentical) {
  for (const ModelConfig& config : configs()) {
    auto model = random_model(config, 3);
    const torch::Tensor input = tokens(2, 9, 4);
    for (bool fused : {true, false}) {
      const torch::Tensor plain = run(*model, input, fused);
      std::vector<int64_t> seen;
      std::vector<std::vector<int64_t>> shapes;
      model->ffn_hook = [&](int64_t layer, torch::Tensor& activation) {
        seen.push_back(layer);
        shapes.push_back(activation.sizes().vec());
      };
      const torch::Tensor observed = run(*model, input, fused);
      // A hook that replaces the activation by an equal copy is a no-op too.
      model->ffn_hook = [](int64_t, torch::Tensor& activation) { activation = activation.clone(); };
      const torch::Tensor replaced = run(*model, input, fused);
      model->ffn_hook = nullptr;
      EXPECT_TRUE(torch::equal(plain, observed)) << "fused " << fused;
      EXPECT_TRUE(torch::equal(plain, replaced)) << "fused " << fused;
      EXPECT_EQ(seen, (std::vector<int64_t>{0, 1, 2}));
      for (const auto& shape : shapes) EXPECT_EQ(shape, (std::vector<int64_t>{2, 9, config.intermediate_size}));
    }
  }
}

TEST(Neurons, HookActsOnEveryCachedStep) {
  auto model = random_model(tiny_llama(false), 5);
  c10::InferenceMode inference;
  int64_t calls = 0;
  model->ffn_hook = [&](int64_t, torch::Tensor&) { ++calls; };
  sg::model::KVCache cache = model->make_cache(1, 8);
  model->forward(tokens(1, 4, 6), &cache);
  model->forward(tokens(1, 1, 7), &cache);
  model->ffn_hook = nullptr;
  EXPECT_EQ(calls, 2 * 3);  // two forwards, three layers each
}

// Zeroing neurons of the activation must equal a model whose output projection ignores them:
// zero weights on their input side. The bias (Llama with mlp_bias, GPT-2) stays in both.
TEST(Neurons, ZeroingNeuronsEqualsZeroingTheirOutputWeights) {
  for (const ModelConfig& config : configs()) {
    const int64_t I = config.intermediate_size;
    NeuronSets whole_layer(3), some(3);
    whole_layer[1].resize(static_cast<size_t>(I));
    std::iota(whole_layer[1].begin(), whole_layer[1].end(), 0);
    some[0] = {0, 7, 39};
    some[2] = {3, 4, 5, 20};
    for (const NeuronSets& sets : {whole_layer, some}) {
      auto hooked = random_model(config, 11);
      auto edited = random_model(config, 11);
      {
        torch::NoGradGuard no_grad;
        for (int64_t l = 0; l < 3; ++l) {
          torch::Tensor weight = output_projection(*edited, l);
          for (int64_t n : sets[static_cast<size_t>(l)]) weight[n].zero_();
        }
      }
      hooked->ffn_hook = sg::skills::ablation_hook(sets);
      const torch::Tensor input = tokens(2, 7, 12);
      for (bool fused : {true, false}) {
        const torch::Tensor a = run(*hooked, input, fused), b = run(*edited, input, fused);
        // Zeroed terms are exact zeros either way, but the matmul may sum the others in another
        // order when the zeros sit in the weight instead of the input.
        EXPECT_LT(sg::test::max_abs_diff(a, b), 1e-5) << "fused " << fused << " layers " << sets.size();
        // And the ablation did something: the intact model differs.
        hooked->ffn_hook = nullptr;
        EXPECT_GT(sg::test::max_abs_diff(run(*hooked, input, fused), b), 1e-3);
        hooked->ffn_hook = sg::skills::ablation_hook(sets);
      }
    }
  }
}

// The padded batches with counted spans equal means taken one unpadded sequence at a time.
TEST(Neurons, MeanActivationsMatchUnpaddedPerSequenceMeans) {
  for (const ModelConfig& config : configs()) {
    auto model = random_model(config, 21);
    std::mt19937_64 rng(22);
    std::vector<sg::skills::MeasuredSequence> sequences;
    for (int64_t i = 0; i < 7; ++i) {
      sg::skills::MeasuredSequence s;
      const int64_t length = 2 + static_cast<int64_t>(rng() % 12);
      for (int64_t t = 0; t < length; ++t) s.tokens.push_back(static_cast<int64_t>(rng() % 300));
      s.first_counted = static_cast<int64_t>(rng() % static_cast<uint64_t>(length));
      sequences.push_back(s);
    }
    const sg::skills::NeuronActivations batched = sg::skills::mean_ffn_activations(*model, sequences, 3);
    EXPECT_FALSE(model->ffn_hook);  // cleared afterwards

    std::vector<torch::Tensor> sums;
    for (int l = 0; l < 3; ++l) sums.push_back(torch::zeros({config.intermediate_size}, torch::kDouble));
    int64_t positions = 0;
    for (const auto& s : sequences) {
      int64_t first = s.first_counted;
      model->ffn_hook = [&](int64_t layer, torch::Tensor& activation) {
        sums[static_cast<size_t>(layer)] += activation[0].slice(0, first).abs().to(torch::kDouble).sum(0);
      };
      c10::InferenceMode inference;
      model->forward(torch::tensor(s.tokens, torch::kLong).unsqueeze(0));
      positions += static_cast<int64_t>(s.tokens.size()) - first;
    }
    model->ffn_hook = nullptr;
    EXPECT_EQ(batched.positions, positions);
    ASSERT_EQ(batched.mean_abs.size(), 3u);
    for (size_t l = 0; l < 3; ++l) {
      EXPECT_LT(sg::test::max_abs_diff(batched.mean_abs[l], sums[l] / static_cast<double>(positions)), 1e-5) << l;
    }
  }
}

// The smallest number of elements of `values` whose sum reaches `target`, over every subset.
size_t brute_force_min_size(const std::vector<double>& values, double target) {
  const size_t n = values.size();
  size_t best = n + 1;
  for (uint32_t mask = 0; mask < (1u << n); ++mask) {
    double sum = 0;
    for (size_t i = 0; i < n; ++i) {
      if (mask & (1u << i)) sum += values[i];
    }
    if (sum >= target) best = std::min(best, static_cast<size_t>(__builtin_popcount(mask)));
  }
  return best;
}

TEST(Neurons, CoverageSetIsTheSmallestSetReachingTheShare) {
  // Hand case: total 8.75; half is 4.375 = 3 + 2 (neurons 1 and 4: of the tied 2s, the lower index).
  const std::vector<double> hand = {0.5, 3, 0, 1, 2, 2, 0.25};
  const torch::Tensor hand_tensor = torch::tensor(hand, torch::kDouble);
  EXPECT_EQ(sg::skills::coverage_set(hand_tensor, 0.5), (std::vector<int64_t>{1, 4}));
  EXPECT_EQ(sg::skills::coverage_set(hand_tensor, 0.1), (std::vector<int64_t>{1}));
  EXPECT_EQ(sg::skills::coverage_set(hand_tensor, 1.0), (std::vector<int64_t>{0, 1, 3, 4, 5, 6}));  // not the 0
  EXPECT_TRUE(sg::skills::coverage_set(torch::zeros({5}, torch::kDouble), 0.5).empty());

  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 40; ++trial) {
    std::vector<double> values(12);
    for (double& v : values) v = (rng() % 4 == 0) ? 0.0 : std::uniform_real_distribution<double>(0, 1)(rng);
    const double total = std::accumulate(values.begin(), values.end(), 0.0);
    for (double coverage : {0.05, 0.3, 0.5, 0.77, 1.0}) {
      const std::vector<int64_t> set = sg::skills::coverage_set(torch::tensor(values, torch::kDouble), coverage);
      double sum = 0;
      for (int64_t i : set) sum += values[static_cast<size_t>(i)];
      // Reaches the share (up to summation order) with the fewest neurons any subset needs.
      EXPECT_GE(sum, coverage * total * (1 - 1e-12)) << trial << " " << coverage;
      const double target = coverage * total * (1 - 1e-12);
      EXPECT_EQ(set.size(), brute_force_min_size(values, target)) << trial << " " << coverage;
      EXPECT_TRUE(std::is_sorted(set.begin(), set.end()));
    }
  }
}

TEST(Neurons, CoverageOutsideRangeFails) {
  const torch::Tensor s = torch::ones({4}, torch::kDouble);
  for (double coverage : {0.0, -0.5, 1.5}) {
    EXPECT_NE(sg::test::error_of([&] { sg::skills::coverage_set(s, coverage); }).find("--coverage"), std::string::npos);
  }
}

TEST(Neurons, StandoutIsThePositiveExcess) {
  const torch::Tensor task = torch::tensor({1.0, 2.0, 0.5, 3.0}, torch::kDouble);
  const torch::Tensor general = torch::tensor({2.0, 0.5, 0.5, 1.0}, torch::kDouble);
  EXPECT_TRUE(torch::equal(sg::skills::standout(task, general), torch::tensor({0.0, 1.5, 0.0, 2.0}, torch::kDouble)));
}

TEST(Neurons, IouOnHandCases) {
  const std::vector<int64_t> a = {1, 2, 3}, b = {2, 3, 4}, c = {7, 8}, none = {};
  EXPECT_DOUBLE_EQ(sg::skills::iou(a, a), 1.0);
  EXPECT_DOUBLE_EQ(sg::skills::iou(a, c), 0.0);
  EXPECT_DOUBLE_EQ(sg::skills::iou(a, b), 0.5);  // {2, 3} of {1, 2, 3, 4}
  EXPECT_DOUBLE_EQ(sg::skills::iou(a, none), 0.0);
  EXPECT_DOUBLE_EQ(sg::skills::iou(none, none), 1.0);
}

TEST(Neurons, RandomSetsHaveTheSizesAndAreSeeded) {
  const NeuronSets like = {{1, 2, 3}, {}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}};
  const NeuronSets a = sg::skills::random_neuron_sets(like, 10, 5), b = sg::skills::random_neuron_sets(like, 10, 5);
  const NeuronSets c = sg::skills::random_neuron_sets(like, 10, 6);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  ASSERT_EQ(a.size(), 3u);
  for (size_t l = 0; l < 3; ++l) {
    EXPECT_EQ(a[l].size(), like[l].size());
    EXPECT_EQ(std::set<int64_t>(a[l].begin(), a[l].end()).size(), a[l].size());  // distinct
    for (int64_t n : a[l]) EXPECT_TRUE(n >= 0 && n < 10);
  }
  EXPECT_EQ(a[2], like[2]);  // all ten of ten
}

TEST(Neurons, AblationsClearTheHookAndMeasureEachSet) {
  auto model = random_model(tiny_llama(false), 31);
  const torch::Tensor input = tokens(1, 6, 32);
  // A task's "score": the logits' sum, so any zeroed neuron shows.
  const sg::skills::TaskMeasureFn measure = [&](CausalLM& m, size_t) {
    c10::InferenceMode inference;
    return sg::skills::TaskMeasure{m.forward(input).sum().item<double>(), 0.0};
  };
  const std::vector<NeuronSets> sets = {{{1}, {}, {}}, {{}, {}, {}}};
  const sg::skills::AblationResult result = sg::skills::run_ablations(*model, sets, 40, 0, measure);
  EXPECT_FALSE(model->ffn_hook);
  ASSERT_EQ(result.intact.size(), 2u);
  ASSERT_EQ(result.ablated.size(), 2u);
  EXPECT_NE(result.ablated[0][0].score, result.intact[0].score);   // neuron 1 of layer 0 zeroed
  EXPECT_EQ(result.ablated[1][0].score, result.intact[0].score);   // an empty set changes nothing
  EXPECT_EQ(result.random_control[1].score, result.intact[1].score);
}

}  // namespace
