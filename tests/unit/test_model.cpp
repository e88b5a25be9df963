// Model unit tests: identities (cache vs full forward, save/load round trips), closed-form RoPE
// and permutation checks, sampling statistics, and error messages for bad checkpoints.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>

#include "io/hf_checkpoint.h"
#include "io/llama2c.h"
#include "io/safetensors.h"
#include "model/attention_ops.h"
#include "model/causal_lm.h"
#include "model/fused_ops.h"
#include "model/generate.h"
#include "test_env.h"
#include "test_util.h"
#include "util/error.h"
#include "util/file.h"

namespace {

using sg::test::error_of;
using sg::test::max_abs_diff;

using sg::model::ModelConfig;

ModelConfig tiny_llama(bool bias = true, bool tied = false, int64_t window = 0) {
  nlohmann::json j = {{"model_type", window > 0 ? "mistral" : (bias ? "qwen2" : "llama")},
                      {"vocab_size", 300},
                      {"hidden_size", 32},
                      {"intermediate_size", 40},
                      {"num_hidden_layers", 2},
                      {"num_attention_heads", 4},
                      {"num_key_value_heads", 2},
                      {"max_position_embeddings", 64},
                      {"rms_norm_eps", 1e-5},
                      {"rope_theta", 10000.0},
                      {"tie_word_embeddings", tied}};
  if (window > 0) j["sliding_window"] = window;
  return sg::model::config_from_json(j, "test");
}

ModelConfig tiny_gpt2() {
  nlohmann::json j = {{"model_type", "gpt2"}, {"vocab_size", 300}, {"n_embd", 32},
                      {"n_layer", 2},         {"n_head", 4},        {"n_positions", 64}};
  return sg::model::config_from_json(j, "test");
}

std::shared_ptr<sg::model::CausalLM> random_model(const ModelConfig& config, uint64_t seed) {
  torch::manual_seed(seed);
  auto model = sg::model::create_model(config);
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.normal_(0.0, 0.3);  // O(1) logits, not ~0
  model->eval();
  return model;
}

// A cached forward (prefill then one token at a time) must equal the full forward.
void expect_cache_matches_full(const ModelConfig& config) {
  auto model = random_model(config, 7);
  torch::NoGradGuard no_grad;
  torch::Tensor tokens = torch::randint(0, config.vocab_size, {2, 12}, torch::kLong);
  torch::Tensor full = model->forward(tokens);
  sg::model::KVCache cache = model->make_cache(2, 12);
  std::vector<torch::Tensor> pieces = {model->forward(tokens.narrow(1, 0, 5), &cache)};
  for (int64_t t = 5; t < 12; ++t) pieces.push_back(model->forward(tokens.narrow(1, t, 1), &cache));
  EXPECT_EQ(cache.length, 12);
  EXPECT_LT(max_abs_diff(torch::cat(pieces, 1), full), 1e-4);
}

TEST(Model, LlamaCacheMatchesFullForward) { expect_cache_matches_full(tiny_llama()); }
TEST(Model, MistralSlidingWindowCacheMatchesFullForward) { expect_cache_matches_full(tiny_llama(false, false, 4)); }
TEST(Model, Gpt2CacheMatchesFullForward) { expect_cache_matches_full(tiny_gpt2()); }

TEST(Model, SlidingWindowLimitsAttention) {
  // With a window of 4, position 10's output cannot depend on token 0; without a window it does.
  for (int64_t window : {0, 4}) {
    auto model = random_model(tiny_llama(false, false, window), 3);
    torch::NoGradGuard no_grad;
    torch::Tensor tokens = torch::randint(0, 300, {1, 11}, torch::kLong);
    torch::Tensor changed = tokens.clone();
    changed[0][0] = (tokens[0][0].item<int64_t>() + 1) % 300;
    double diff = max_abs_diff(model->forward(tokens).select(1, 10), model->forward(changed).select(1, 10));
    if (window > 0) EXPECT_EQ(diff, 0.0);
    else EXPECT_GT(diff, 1e-6);
  }
}

TEST(Model, CausalMaskIsCausal) {
  // Changing a later token never changes earlier logits.
  auto model = random_model(tiny_gpt2(), 5);
  torch::NoGradGuard no_grad;
  torch::Tensor tokens = torch::randint(0, 300, {1, 8}, torch::kLong);
  torch::Tensor changed = tokens.clone();
  changed[0][6] = (tokens[0][6].item<int64_t>() + 1) % 300;
  EXPECT_EQ(max_abs_diff(model->forward(tokens).narrow(1, 0, 6), model->forward(changed).narrow(1, 0, 6)), 0.0);
}

TEST(Attention, BlockedCausalAttentionMatchesNaiveLoops) {
  // Reference: plain loops over query i (absolute position past + i) and visible keys j.
  const int64_t B = 2, KV = 2, R = 3, D = 4;
  for (int64_t window : {0, 5, 40}) {
    for (auto [T, past] : std::vector<std::pair<int64_t, int64_t>>{{1, 0}, {1, 30}, {50, 0}, {37, 20}, {300, 0}}) {
      const int64_t S = past + T;
      torch::Tensor q = torch::randn({B, KV, R, T, D}, torch::kDouble);
      torch::Tensor k = torch::randn({B, KV, S, D}, torch::kDouble);
      torch::Tensor v = torch::randn({B, KV, S, D}, torch::kDouble);
      torch::Tensor got = sg::model::causal_attention(q, k, v, window);
      torch::Tensor expected = torch::zeros_like(got);
      auto qa = q.accessor<double, 5>();
      auto ka = k.accessor<double, 4>(), va = v.accessor<double, 4>();
      auto ea = expected.accessor<double, 5>();
      for (int64_t b = 0; b < B; ++b)
        for (int64_t g = 0; g < KV; ++g)
          for (int64_t r = 0; r < R; ++r)
            for (int64_t i = 0; i < T; ++i) {
              const int64_t pos = past + i;
              std::vector<double> weights;
              double top = -1e300;
              for (int64_t j = 0; j <= pos; ++j) {
                if (window > 0 && j <= pos - window) { weights.push_back(-1e300); continue; }
                double dot = 0;
                for (int64_t d = 0; d < D; ++d) dot += qa[b][g][r][i][d] * ka[b][g][j][d];
                weights.push_back(dot);
                top = std::max(top, dot);
              }
              double total = 0;
              for (double& w : weights) total += (w = w == -1e300 ? 0 : std::exp(w - top));
              for (int64_t j = 0; j <= pos; ++j)
                for (int64_t d = 0; d < D; ++d) ea[b][g][r][i][d] += weights[j] / total * va[b][g][j][d];
            }
      EXPECT_LT(max_abs_diff(got, expected), 1e-10) << "T=" << T << " past=" << past << " window=" << window;
    }
  }
}

TEST(FusedOps, MatchTheCompositeExpressions) {
  // The fused inference kernels against the plain LibTorch expressions they replace, in float64.
  torch::NoGradGuard no_grad;
  torch::Tensor x = torch::randn({3, 5, 48});
  torch::Tensor w = torch::randn({48});
  torch::Tensor xd = x.to(torch::kDouble);
  torch::Tensor norm = xd * torch::rsqrt(xd.pow(2).mean(-1, true) + 1e-5) * w.to(torch::kDouble);
  EXPECT_LT(max_abs_diff(sg::model::fused_rms_norm(x, w, 1e-5), norm), 1e-5);

  const int64_t B = 2, T = 7, H = 3, D = 8;
  torch::Tensor q = torch::randn({B, T, H, D});
  torch::Tensor angles = torch::randn({T, D / 2}, torch::kDouble);
  torch::Tensor cos = torch::cat({angles, angles}, -1).cos(), sin = torch::cat({angles, angles}, -1).sin();
  torch::Tensor qd = q.to(torch::kDouble).transpose(1, 2);  // (B, H, T, D)
  torch::Tensor rotated = torch::cat({-qd.narrow(-1, D / 2, D / 2), qd.narrow(-1, 0, D / 2)}, -1);
  torch::Tensor rope = (qd * cos + rotated * sin) * 0.5;
  torch::Tensor fused = sg::model::fused_rope(q, cos.to(torch::kFloat), sin.to(torch::kFloat), 0.5);
  EXPECT_LT(max_abs_diff(fused.transpose(1, 2), rope), 1e-5);

  torch::Tensor gate = torch::randn({4, 33}) * 4, up = torch::randn({4, 33});
  torch::Tensor gd = gate.to(torch::kDouble);
  EXPECT_LT(max_abs_diff(sg::model::fused_swiglu(gate, up), gd * torch::sigmoid(gd) * up.to(torch::kDouble)), 1e-5);
}

TEST(FusedOps, InferenceAndTrainingForwardsAgree) {
  // Under NoGradGuard the fused kernels run; with gradients the composite path does.
  auto model = random_model(tiny_llama(), 31);
  torch::Tensor tokens = torch::randint(0, 300, {2, 9}, torch::kLong);
  torch::Tensor training = model->forward(tokens);
  torch::NoGradGuard no_grad;
  EXPECT_LT(max_abs_diff(model->forward(tokens), training.detach()), 1e-4);
}

TEST(Model, TiedLlamaHasNoSeparateHead) {
  auto model = random_model(tiny_llama(false, true), 1);
  auto sd = sg::model::model_state_dict(*model);
  EXPECT_FALSE(sd.contains("lm_head.weight"));
  ASSERT_TRUE(sd.contains("model.embed_tokens.weight"));
  // The head is the embedding: scaling the embedding's row 5 scales only logit 5's dependence on it.
  torch::NoGradGuard no_grad;
  torch::Tensor tokens = torch::tensor({{1, 2, 3}}, torch::kLong);
  torch::Tensor before = model->forward(tokens);
  sd["model.embed_tokens.weight"][5].mul_(2.0);  // token 5 is not in the input: only its logit moves
  torch::Tensor after = model->forward(tokens);
  torch::Tensor changed = (after - before).abs().amax({0, 1}) > 0;
  EXPECT_EQ(changed.sum().item<int64_t>(), 1);
  EXPECT_TRUE(changed[5].item<bool>());
}

TEST(Model, ParameterCountMatchesModules) {
  for (const ModelConfig& config : {tiny_llama(), tiny_llama(false, true), tiny_gpt2()}) {
    auto model = sg::model::create_model(config);
    int64_t n = 0;
    for (auto& p : model->parameters()) n += p.numel();
    EXPECT_EQ(sg::model::parameter_count(config), n) << config.model_type;
  }
}

TEST(Model, SaveLoadRoundTripIsBitExact) {
  for (const ModelConfig& config : {tiny_llama(), tiny_llama(false, true), tiny_gpt2()}) {
    auto model = random_model(config, 11);
    std::string dir = sg::test::temp_dir("sg-model");
    sg::model::save_model_dir(dir, *model, nullptr);
    sg::model::LoadedModel loaded = sg::model::load_model_dir(dir);
    auto a = sg::model::model_state_dict(*model), b = sg::model::model_state_dict(*loaded.model);
    ASSERT_EQ(a.size(), b.size());
    for (const auto& item : a) {
      ASSERT_TRUE(b.contains(item.key())) << item.key();
      EXPECT_TRUE(torch::equal(item.value(), b[item.key()])) << item.key();
    }
    // Saving the loaded model again writes the same bytes.
    std::string again = sg::test::temp_dir("sg-model");
    sg::model::save_model_dir(again, *loaded.model, nullptr);
    EXPECT_EQ(sg::util::read_file(dir + "/model.safetensors"), sg::util::read_file(again + "/model.safetensors"));
  }
}

TEST(Model, ShardedSaveLoadsTheSameWeights) {
  auto model = random_model(tiny_llama(), 13);
  std::string dir = sg::test::temp_dir("sg-model");
  sg::model::save_model_dir(dir, *model, nullptr, /*max_shard_bytes=*/20000);
  EXPECT_TRUE(sg::util::file_exists(dir + "/model.safetensors.index.json"));
  EXPECT_FALSE(sg::util::file_exists(dir + "/model.safetensors"));
  sg::model::LoadedModel loaded = sg::model::load_model_dir(dir);
  for (const auto& item : sg::model::model_state_dict(*model)) {
    EXPECT_TRUE(torch::equal(item.value(), sg::model::model_state_dict(*loaded.model)[item.key()])) << item.key();
  }
}

TEST(Model, HalfPrecisionCheckpointsLoadAsFloat32) {
  // A BF16 / F16 checkpoint loads into float32 parameters equal to the stored values, widened.
  for (auto dtype : {torch::kBFloat16, torch::kHalf}) {
    auto model = random_model(tiny_llama(), 37);
    sg::io::StateDict narrow;
    for (const auto& item : sg::model::model_state_dict(*model)) narrow.insert(item.key(), item.value().to(dtype));
    std::string dir = sg::test::temp_dir("sg-model");
    sg::io::write_hf_checkpoint(dir, sg::model::config_to_json(model->config()), narrow);
    sg::model::LoadedModel loaded = sg::model::load_model_dir(dir);
    for (const auto& item : sg::model::model_state_dict(*loaded.model)) {
      EXPECT_EQ(item.value().scalar_type(), torch::kFloat);
      EXPECT_TRUE(torch::equal(item.value(), narrow[item.key()].to(torch::kFloat))) << item.key();
    }
  }
}

TEST(Model, Gpt2LoadsNamesWithoutPrefixAndSkipsMaskBuffers) {
  auto model = random_model(tiny_gpt2(), 17);
  sg::io::StateDict stripped;
  for (const auto& item : sg::model::model_state_dict(*model)) {
    std::string name = item.key().substr(std::string("transformer.").size());
    stripped.insert(name, item.value());
  }
  stripped.insert("h.0.attn.bias", torch::ones({1, 1, 64, 64}).tril());
  auto other = sg::model::create_model(tiny_gpt2());
  sg::model::load_model_weights(*other, stripped, "test");
  torch::NoGradGuard no_grad;
  torch::Tensor tokens = torch::randint(0, 300, {1, 6}, torch::kLong);
  EXPECT_EQ(max_abs_diff(model->forward(tokens), other->forward(tokens)), 0.0);
}

TEST(Model, LoadWeightsNamesMissingWrongShapeAndUnexpectedTensors) {
  auto model = random_model(tiny_llama(), 19);
  auto sd = sg::model::model_state_dict(*model);
  sg::io::StateDict missing, wrong_shape, unexpected;
  for (const auto& item : sd) {
    if (item.key() != "model.norm.weight") missing.insert(item.key(), item.value());
    wrong_shape.insert(item.key(), item.key() == "model.norm.weight" ? torch::ones({31}) : item.value());
    unexpected.insert(item.key(), item.value());
  }
  unexpected.insert("model.layers.0.mlp.extra.weight", torch::ones({2}));
  auto target = sg::model::create_model(tiny_llama());
  EXPECT_NE(error_of([&] { sg::model::load_model_weights(*target, missing, "ckpt"); }).find("missing tensor \"model.norm.weight\""), std::string::npos);
  EXPECT_NE(error_of([&] { sg::model::load_model_weights(*target, wrong_shape, "ckpt"); }).find("has shape"), std::string::npos);
  EXPECT_NE(error_of([&] { sg::model::load_model_weights(*target, unexpected, "ckpt"); }).find("unexpected tensor"), std::string::npos);
}

TEST(Model, TokenIdsOutsideTheVocabularyAreErrors) {
  for (const ModelConfig& config : {tiny_llama(), tiny_gpt2()}) {
    auto model = random_model(config, 41);
    torch::NoGradGuard no_grad;
    EXPECT_NE(error_of([&] { model->forward(torch::tensor({{1, 300}}, torch::kLong)); })
                  .find("token id 300 is outside the vocabulary of 300"), std::string::npos);
    EXPECT_NE(error_of([&] { model->forward(torch::tensor({{-1, 2}}, torch::kLong)); }).find("token id -1"),
              std::string::npos);
  }
}

TEST(Config, UnknownArchitectureAndBadFieldsAreErrors) {
  EXPECT_NE(error_of([] { sg::model::config_from_json({{"model_type", "bert"}}, "cfg.json"); })
                .find("cfg.json: unknown architecture"), std::string::npos);
  nlohmann::json bad = {{"model_type", "llama"}, {"vocab_size", 10}, {"hidden_size", 32},
                        {"intermediate_size", 8}, {"num_hidden_layers", 1}, {"num_attention_heads", 4},
                        {"num_key_value_heads", 3}};
  EXPECT_NE(error_of([&] { sg::model::config_from_json(bad, "cfg.json"); }).find("not a multiple"), std::string::npos);
  bad["num_key_value_heads"] = 2;
  bad.erase("vocab_size");
  EXPECT_NE(error_of([&] { sg::model::config_from_json(bad, "cfg.json"); }).find("lacks \"vocab_size\""), std::string::npos);
}

TEST(Config, JsonRoundTripKeepsFieldsAndUnknownKeys) {
  ModelConfig config = tiny_llama(true);
  config.original["custom_key"] = "kept";
  ModelConfig again = sg::model::config_from_json(sg::model::config_to_json(config), "again");
  EXPECT_EQ(again.model_type, "qwen2");
  EXPECT_TRUE(again.attention_qkv_bias);
  EXPECT_FALSE(again.attention_out_bias);
  EXPECT_EQ(again.num_kv_heads, 2);
  EXPECT_EQ(again.head_dim, 8);
  EXPECT_EQ(again.original["custom_key"], "kept");
}

TEST(Rope, PermutedRowsTurnInterleavedRopeIntoRotateHalf) {
  // Closed form: rotating interleaved pairs (x[2i], x[2i+1]) by angle p*f_i (llama2.c, Meta) equals
  // rotate-half RoPE applied after reordering each head's rows as [evens..., odds...].
  const int64_t heads = 2, D = 8, T = 5;
  torch::Tensor w = torch::randn({heads * D, 3}, torch::kDouble);
  torch::Tensor x = torch::randn({3}, torch::kDouble);
  torch::Tensor q_meta = torch::mv(w, x).view({heads, D});
  torch::Tensor q_hf = torch::mv(sg::io::permute_rope_rows(w, heads), x).view({1, heads, 1, D});
  ModelConfig config = tiny_llama(false);
  config.head_dim = D;
  sg::model::RopeTable table(sg::model::rope_inverse_frequencies(config));
  for (int64_t p = 0; p < T; ++p) {
    auto [cos, sin] = table.slice(p, 1, torch::kDouble, torch::kCPU);
    torch::Tensor rotated = sg::model::apply_rope(q_hf, cos, sin).view({heads, D});
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < D / 2; ++i) {
        double angle = p * std::pow(10000.0, -2.0 * i / D);
        double a = q_meta[h][2 * i].item<double>(), b = q_meta[h][2 * i + 1].item<double>();
        EXPECT_NEAR(rotated[h][i].item<double>(), a * std::cos(angle) - b * std::sin(angle), 1e-12);
        EXPECT_NEAR(rotated[h][i + D / 2].item<double>(), a * std::sin(angle) + b * std::cos(angle), 1e-12);
      }
    }
  }
}

TEST(Sampling, GreedyTopKAndTopPPickTheArgmax) {
  torch::Tensor logits = torch::tensor({0.1, 2.0, -1.0, 1.5});
  std::mt19937_64 rng(1);
  sg::model::SamplingOptions greedy;
  greedy.temperature = 0;
  EXPECT_EQ(sg::model::sample_token(logits, greedy, rng), 1);
  sg::model::SamplingOptions top1;
  top1.top_k = 1;
  sg::model::SamplingOptions tiny_p;
  tiny_p.top_p = 1e-6;
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(sg::model::sample_token(logits, top1, rng), 1);
    EXPECT_EQ(sg::model::sample_token(logits, tiny_p, rng), 1);
  }
}

TEST(Sampling, FrequenciesFollowTheDistribution) {
  // Closed form: p = (0.5, 0.3, 0.2); top-k 2 renormalises to (0.625, 0.375, 0); temperature 0.5
  // squares and renormalises: (25, 9, 4) / 38.
  torch::Tensor logits = torch::tensor({std::log(0.5), std::log(0.3), std::log(0.2)});
  struct Case { int64_t top_k; double top_p; double temperature; std::vector<double> expected; };
  std::vector<Case> cases = {{0, 1.0, 1.0, {0.5, 0.3, 0.2}},
                             {2, 1.0, 1.0, {0.625, 0.375, 0.0}},
                             {0, 0.75, 1.0, {0.625, 0.375, 0.0}},
                             {0, 1.0, 0.5, {25.0 / 38, 9.0 / 38, 4.0 / 38}}};
  for (const Case& c : cases) {
    sg::model::SamplingOptions o;
    o.top_k = c.top_k;
    o.top_p = c.top_p;
    o.temperature = c.temperature;
    std::mt19937_64 rng(123);
    std::vector<double> counts(3, 0);
    const int draws = 20000;
    for (int i = 0; i < draws; ++i) counts[sg::model::sample_token(logits, o, rng)] += 1;
    for (int k = 0; k < 3; ++k) EXPECT_NEAR(counts[k] / draws, c.expected[k], 0.015) << "case top_k=" << c.top_k;
  }
}

TEST(Sampling, SameSeedSameTokens) {
  auto model = random_model(tiny_llama(), 23);
  auto tokenizer = sg::io::make_byte_tokenizer();
  sg::model::SamplingOptions o;
  o.max_tokens = 20;
  o.seed = 99;
  auto a = sg::model::generate(*model, *tokenizer, "hello", o);
  auto b = sg::model::generate(*model, *tokenizer, "hello", o);
  EXPECT_EQ(a.generated_tokens, b.generated_tokens);
  EXPECT_EQ(a.generated_tokens.size(), 20u);
}

TEST(Generate, StopsAtTheContextAndRejectsLongPrompts) {
  ModelConfig config = tiny_llama();
  config.max_positions = 10;
  auto model = random_model(config, 29);
  auto tokenizer = sg::io::make_byte_tokenizer();
  sg::model::SamplingOptions o;
  o.max_tokens = 100;
  auto result = sg::model::generate(*model, *tokenizer, "abc", o);
  EXPECT_EQ(result.stop_reason, "context");
  EXPECT_EQ(result.prompt_tokens.size() + result.generated_tokens.size(), 11u);  // the last one needs no position
  std::string message = error_of([&] { sg::model::generate(*model, *tokenizer, "this prompt is too long", o); });
  EXPECT_NE(message.find("the prompt is 23 tokens but the model's context is 10"), std::string::npos) << message;
}

}  // namespace
