// LoRA unit tests: exact identities (B = 0 changes nothing, save/load is bit-exact, detach restores
// the base), merge against the unmerged forward, a hand-computed single-layer case, gradients, the
// state dict staying HF-only, and error messages. The Python reference check is
// tests/reference/test_lora_reference.cpp.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>

#include "io/hf_checkpoint.h"
#include "io/safetensors.h"
#include "model/causal_lm.h"
#include "model/layers.h"
#include "model/lora.h"
#include "test_env.h"
#include "test_util.h"
#include "util/error.h"
#include "util/file.h"

namespace {

using sg::test::error_of;
using sg::test::max_abs_diff;

using sg::model::CausalLM;
using sg::model::LoraOptions;
using sg::model::ModelConfig;

ModelConfig tiny_llama() {
  nlohmann::json j = {{"model_type", "qwen2"},          {"vocab_size", 300},         {"hidden_size", 32},
                      {"intermediate_size", 40},        {"num_hidden_layers", 2},    {"num_attention_heads", 4},
                      {"num_key_value_heads", 2},       {"max_position_embeddings", 64},
                      {"rms_norm_eps", 1e-5},           {"rope_theta", 10000.0},     {"tie_word_embeddings", false}};
  return sg::model::config_from_json(j, "test");
}

ModelConfig tiny_gpt2(int64_t hidden = 32) {
  nlohmann::json j = {{"model_type", "gpt2"}, {"vocab_size", 300}, {"n_embd", hidden},
                      {"n_layer", 2},         {"n_head", 4},        {"n_positions", 64}};
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

LoraOptions options_for(const ModelConfig& config) {
  LoraOptions options;
  options.rank = 4;
  options.alpha = 8;
  options.seed = 5;
  if (config.architecture == sg::model::Architecture::kGpt2) {
    options.targets = {"c_attn", "attn.c_proj", "mlp.c_fc"};
  } else {
    options.targets = {"q_proj", "v_proj", "down_proj", "lm_head"};
  }
  return options;
}

// Gives every pair a nonzero B so the adapter changes the output.
void randomize_pairs(CausalLM& model, uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard no_grad;
  for (auto& item : sg::model::lora_state_dict(model)) item.value().normal_(0.0, 0.2);
}

torch::Tensor tokens_for(const ModelConfig& config) {
  torch::manual_seed(99);
  return torch::randint(0, config.vocab_size, {2, 10}, torch::kLong);
}

torch::Tensor logits_of(CausalLM& model, const torch::Tensor& tokens) {
  torch::NoGradGuard no_grad;
  return model.forward(tokens);
}

// Prefill 4 positions, then decode one token at a time through the KV cache.
torch::Tensor cached_logits_of(CausalLM& model, const torch::Tensor& tokens) {
  torch::NoGradGuard no_grad;
  sg::model::KVCache cache = model.make_cache(tokens.size(0), tokens.size(1));
  std::vector<torch::Tensor> pieces = {model.forward(tokens.narrow(1, 0, 4), &cache)};
  for (int64_t t = 4; t < tokens.size(1); ++t) pieces.push_back(model.forward(tokens.narrow(1, t, 1), &cache));
  return torch::cat(pieces, 1);
}

std::vector<std::string> keys_of(const sg::io::StateDict& dict) { return dict.keys(); }

class LoraBothArchitectures : public ::testing::TestWithParam<bool> {
 protected:
  ModelConfig config() const { return GetParam() ? tiny_gpt2() : tiny_llama(); }
};

TEST_P(LoraBothArchitectures, ZeroBChangesNothingInEveryForwardPath) {
  const ModelConfig c = config();
  auto model = random_model(c, 1);
  const torch::Tensor tokens = tokens_for(c);
  const torch::Tensor base = logits_of(*model, tokens);
  const torch::Tensor base_cached = cached_logits_of(*model, tokens);
  const torch::Tensor base_grad_mode = model->forward(tokens).detach();

  auto attached = sg::model::attach_lora(*model, options_for(c));
  EXPECT_EQ(attached.size(), c.architecture == sg::model::Architecture::kGpt2 ? 6u : 7u);
  EXPECT_TRUE(std::is_sorted(attached.begin(), attached.end()));
  EXPECT_TRUE(sg::model::has_lora(*model));
  EXPECT_TRUE(torch::equal(logits_of(*model, tokens), base));
  EXPECT_TRUE(torch::equal(cached_logits_of(*model, tokens), base_cached));
  EXPECT_TRUE(torch::equal(model->forward(tokens).detach(), base_grad_mode));
}

TEST_P(LoraBothArchitectures, StateDictStaysHfOnlyAndCheckpointsIgnorePairs) {
  const ModelConfig c = config();
  auto model = random_model(c, 1);
  const auto before = keys_of(sg::model::model_state_dict(*model));
  sg::model::attach_lora(*model, options_for(c));
  EXPECT_EQ(keys_of(sg::model::model_state_dict(*model)), before);
  for (const auto& key : keys_of(sg::model::model_state_dict(*model))) EXPECT_EQ(key.find("lora"), std::string::npos);
  // Strict loading of plain base weights into a model with pairs attached does not complain.
  auto other = random_model(c, 2);
  sg::model::load_model_weights(*model, sg::model::model_state_dict(*other), "other");
  EXPECT_TRUE(sg::model::has_lora(*model));
  // A saved model directory holds only the base tensors.
  const std::string dir = sg::test::temp_dir("sg-lora");
  sg::model::save_model_dir(dir, *model, nullptr);
  EXPECT_EQ(keys_of(sg::io::load_safetensors_dir(dir)).size(), before.size());
}

TEST_P(LoraBothArchitectures, SaveLoadIntoFreshModelIsBitExact) {
  const ModelConfig c = config();
  LoraOptions options = options_for(c);
  options.rslora = GetParam();
  options.dropout = 0.05;
  auto model = random_model(c, 1);
  sg::model::attach_lora(*model, options);
  randomize_pairs(*model, 3);
  const torch::Tensor tokens = tokens_for(c);
  const torch::Tensor adapted = logits_of(*model, tokens);
  ASSERT_GT(max_abs_diff(adapted, logits_of(*random_model(c, 1), tokens)), 1e-3);

  const std::string dir = sg::test::temp_dir("sg-lora") + "/adapter";
  sg::model::save_lora_adapter(dir, *model, options, "tiny-base");
  nlohmann::json config = sg::io::read_json_file(dir + "/adapter_config.json");
  EXPECT_EQ(config["peft_type"], "LORA");
  EXPECT_EQ(config["task_type"], "CAUSAL_LM");
  EXPECT_EQ(config["r"], 4);
  EXPECT_EQ(config["lora_alpha"], 8);
  EXPECT_EQ(config["target_modules"], nlohmann::json(options.targets));
  EXPECT_EQ(config["use_rslora"], options.rslora);
  EXPECT_EQ(config["fan_in_fan_out"], c.architecture == sg::model::Architecture::kGpt2);
  EXPECT_EQ(config["base_model_name_or_path"], "tiny-base");
  EXPECT_EQ(config["bias"], "none");
  EXPECT_EQ(config["inference_mode"], true);
  EXPECT_DOUBLE_EQ(config["lora_dropout"].get<double>(), 0.05);

  auto fresh = random_model(c, 1);
  LoraOptions read = sg::model::load_lora_adapter(*fresh, dir);
  EXPECT_EQ(read.rank, 4);
  EXPECT_EQ(read.alpha, 8);
  EXPECT_EQ(read.rslora, options.rslora);
  EXPECT_EQ(read.targets, options.targets);
  EXPECT_TRUE(torch::equal(logits_of(*fresh, tokens), adapted));
  EXPECT_TRUE(torch::equal(cached_logits_of(*fresh, tokens), cached_logits_of(*model, tokens)));
  EXPECT_EQ(keys_of(sg::model::lora_state_dict(*fresh)), keys_of(sg::model::lora_state_dict(*model)));
}

TEST_P(LoraBothArchitectures, MergeMatchesUnmergedAndDetachRestoresTheBase) {
  const ModelConfig c = config();
  const torch::Tensor tokens = tokens_for(c);
  auto model = random_model(c, 1);
  const torch::Tensor base = logits_of(*model, tokens);
  const auto base_weights = sg::model::model_state_dict(*random_model(c, 1));
  sg::model::attach_lora(*model, options_for(c));
  randomize_pairs(*model, 3);
  const torch::Tensor adapted = logits_of(*model, tokens);

  auto merged = random_model(c, 1);
  sg::model::attach_lora(*merged, options_for(c));
  randomize_pairs(*merged, 3);
  sg::model::merge_lora(*merged);
  EXPECT_FALSE(sg::model::has_lora(*merged));
  const double diff = max_abs_diff(logits_of(*merged, tokens), adapted);
  std::printf("merged vs unmerged logits: max abs diff %.3e (logits scale %.2f)\n", diff,
              adapted.abs().max().item<double>());
  EXPECT_LE(diff, 1e-5 * std::max(1.0, adapted.abs().max().item<double>()));
  EXPECT_GT(max_abs_diff(logits_of(*merged, tokens), base), 1e-3);

  sg::model::detach_lora(*model);
  EXPECT_FALSE(sg::model::has_lora(*model));
  EXPECT_TRUE(torch::equal(logits_of(*model, tokens), base));
  for (const auto& item : sg::model::model_state_dict(*model)) {
    EXPECT_TRUE(torch::equal(item.value(), base_weights[item.key()])) << item.key();
  }
}

TEST_P(LoraBothArchitectures, GradientsReachThePairsAndNotFrozenBaseWeights) {
  const ModelConfig c = config();
  auto model = random_model(c, 1);
  model->train();
  for (auto& p : model->parameters()) p.requires_grad_(false);  // what the trainer does
  sg::model::attach_lora(*model, options_for(c));
  randomize_pairs(*model, 3);
  const torch::Tensor tokens = tokens_for(c);
  torch::Tensor loss = model->forward(tokens).logsumexp(-1).mean();
  loss.backward();
  sg::io::StateDict pairs = sg::model::lora_state_dict(*model);
  for (const auto& item : pairs) {
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    EXPECT_GT(item.value().grad().abs().sum().item<double>(), 0.0) << item.key();
  }
  for (const auto& item : sg::model::model_state_dict(*model)) {
    EXPECT_FALSE(item.value().grad().defined()) << item.key();
  }
  // An optimizer over the map trains the model's own pairs.
  const torch::Tensor before = logits_of(*model, tokens);
  std::vector<torch::Tensor> leaves;
  for (const auto& item : pairs) leaves.push_back(item.value());
  torch::optim::SGD sgd(leaves, torch::optim::SGDOptions(0.1));
  sgd.step();
  EXPECT_GT(max_abs_diff(logits_of(*model, tokens), before), 1e-4);
}

TEST_P(LoraBothArchitectures, KeysWithDefaultAdapterSegmentLoad) {
  const ModelConfig c = config();
  auto model = random_model(c, 1);
  sg::model::attach_lora(*model, options_for(c));
  randomize_pairs(*model, 3);
  const std::string dir = sg::test::temp_dir("sg-lora");
  sg::model::save_lora_adapter(dir, *model, options_for(c), "tiny");
  sg::io::StateDict renamed;
  for (const auto& item : sg::io::load_safetensors(dir + "/adapter_model.safetensors")) {
    std::string key = item.key();
    key.insert(key.size() - std::string(".weight").size(), ".default");
    renamed.insert(key, item.value().clone());
  }
  sg::io::save_safetensors(dir + "/adapter_model.safetensors", renamed);
  auto fresh = random_model(c, 1);
  sg::model::load_lora_adapter(*fresh, dir);
  const torch::Tensor tokens = tokens_for(c);
  EXPECT_TRUE(torch::equal(logits_of(*fresh, tokens), logits_of(*model, tokens)));
}

INSTANTIATE_TEST_SUITE_P(Lora, LoraBothArchitectures, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Gpt2" : "Llama"; });

// One layer by hand: W = [[1, 2], [3, 4], [5, 6]] (out 3, in 2), b = [1, 0, -1], A = [[1, -1]],
// B = [[2], [0], [1]], alpha 3, r 1 -> scale 3. x = [1, 2]: Wx + b = [6, 11, 16]; A x = -1;
// scale * B * (-1) = [-6, 0, -3] -> [0, 11, 13]. With rslora and r = 4, alpha 4: scale 2.
TEST(LoraLayers, HandComputedLinearAndConv1D) {
  sg::model::Linear linear(2, 3, true);
  sg::model::Conv1D conv(2, 3);
  {
    torch::NoGradGuard no_grad;
    linear->weight.copy_(torch::tensor({{1.f, 2.f}, {3.f, 4.f}, {5.f, 6.f}}));
    linear->bias.copy_(torch::tensor({1.f, 0.f, -1.f}));
    conv->weight.copy_(linear->weight.t());
    conv->bias.copy_(linear->bias);
  }
  for (sg::model::LoraPair* pair : {&linear->lora, &conv->lora}) {
    pair->A = torch::tensor({{1.f, -1.f}});
    pair->B = torch::tensor({{2.f}, {0.f}, {1.f}});
    pair->scale = 3;
  }
  const torch::Tensor x = torch::tensor({{1.f, 2.f}});
  const torch::Tensor expected = torch::tensor({{0.f, 11.f, 13.f}});
  EXPECT_TRUE(torch::equal(linear(x), expected)) << linear(x);
  EXPECT_TRUE(torch::equal(conv(x), expected)) << conv(x);

  LoraOptions rs;
  rs.rank = 4;
  rs.alpha = 4;
  rs.rslora = true;
  EXPECT_DOUBLE_EQ(sg::model::lora_scale(rs), 2.0);
  rs.rslora = false;
  EXPECT_DOUBLE_EQ(sg::model::lora_scale(rs), 1.0);
}

TEST(Lora, AttachIsSeededAndInitialisesLikePeft) {
  const ModelConfig c = tiny_llama();
  auto a = random_model(c, 1), b = random_model(c, 1);
  LoraOptions options = options_for(c);
  sg::model::attach_lora(*a, options);
  sg::model::attach_lora(*b, options);
  const auto pa = sg::model::lora_state_dict(*a), pb = sg::model::lora_state_dict(*b);
  ASSERT_EQ(pa.size(), 14u);
  const std::vector<std::string> keys = pa.keys();
  EXPECT_TRUE(std::is_sorted(keys.begin(), keys.end()));
  EXPECT_EQ(keys.front(), "base_model.model.lm_head.lora_A.weight");
  for (const auto& item : pa) {
    EXPECT_TRUE(torch::equal(item.value(), pb[item.key()])) << item.key();
    EXPECT_TRUE(item.value().requires_grad());
  }
  const torch::Tensor q_a = pa["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"];
  EXPECT_EQ(q_a.sizes(), torch::IntArrayRef({4, 32}));
  EXPECT_LE(q_a.abs().max().item<double>(), 1.0 / std::sqrt(32.0));
  EXPECT_GT(q_a.abs().max().item<double>(), 0.5 / std::sqrt(32.0));
  EXPECT_EQ(pa["base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"].sizes(), torch::IntArrayRef({32, 4}));
  EXPECT_EQ(pa["base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"].abs().max().item<double>(), 0.0);

  auto other_seed = random_model(c, 1);
  options.seed = 6;
  sg::model::attach_lora(*other_seed, options);
  EXPECT_FALSE(torch::equal(sg::model::lora_state_dict(*other_seed)[keys[0]], pa[keys[0]]));
}

TEST(Lora, AttachErrors) {
  const ModelConfig c = tiny_llama();
  auto model = random_model(c, 1);
  LoraOptions options = options_for(c);
  options.targets = {"q_proj", "foo"};
  std::string error = error_of([&] { sg::model::attach_lora(*model, options); });
  EXPECT_NE(error.find("LoRA target 'foo' matches no module"), std::string::npos) << error;
  EXPECT_NE(error.find("q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head"), std::string::npos)
      << error;
  EXPECT_FALSE(sg::model::has_lora(*model));  // nothing attached on error
  options.targets = {"proj"};  // a suffix must be a whole name segment
  EXPECT_NE(error_of([&] { sg::model::attach_lora(*model, options); }).find("matches no module"), std::string::npos);
  options.targets = {};
  EXPECT_NE(error_of([&] { sg::model::attach_lora(*model, options); }).find("no LoRA targets"), std::string::npos);
  options.targets = {"q_proj"};
  options.rank = 0;
  EXPECT_NE(error_of([&] { sg::model::attach_lora(*model, options); }).find("rank 0"), std::string::npos);
  options.rank = 2;
  sg::model::attach_lora(*model, options);
  error = error_of([&] { sg::model::attach_lora(*model, options); });
  EXPECT_NE(error.find("already attached"), std::string::npos) << error;
  error = error_of([&] { sg::model::save_lora_adapter(sg::test::temp_dir("sg-lora"), *model, options_for(c), "x"); });
  EXPECT_NE(error.find("rank-2 pair but the options say r=4"), std::string::npos) << error;
  auto bare = random_model(c, 1);
  error = error_of([&] { sg::model::save_lora_adapter(sg::test::temp_dir("sg-lora"), *bare, options, "x"); });
  EXPECT_NE(error.find("no LoRA pairs"), std::string::npos) << error;
}

TEST(Lora, LoadErrorsNameTheFileKeyAndHint) {
  auto expect_error = [](const std::function<void()>& f, const std::string& fragment) {
    std::string error = error_of(f);
    EXPECT_NE(error.find(fragment), std::string::npos) << error;
    EXPECT_EQ(error.find('\n'), std::string::npos) << error;
  };
  // An adapter for GPT-2 of hidden size 48 does not fit hidden size 32.
  auto wide = random_model(tiny_gpt2(48), 1);
  sg::model::attach_lora(*wide, options_for(tiny_gpt2()));
  const std::string wide_dir = sg::test::temp_dir("sg-lora");
  sg::model::save_lora_adapter(wide_dir, *wide, options_for(tiny_gpt2()), "wide");
  auto narrow = random_model(tiny_gpt2(), 1);
  expect_error([&] { sg::model::load_lora_adapter(*narrow, wide_dir); }, "has shape [4, 48] but transformer.h.0.attn.c_attn with r=4 needs [4, 32]");
  EXPECT_FALSE(sg::model::has_lora(*narrow));

  // A GPT-2 adapter on a Llama model names modules that do not exist.
  auto llama = random_model(tiny_llama(), 1);
  expect_error([&] { sg::model::load_lora_adapter(*llama, wide_dir); }, "maybe the adapter was made for another base model?");
  expect_error([&] { sg::model::load_lora_adapter(*llama, wide_dir); }, "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight");

  // Missing files and fields.
  const std::string empty = sg::test::temp_dir("sg-lora");
  expect_error([&] { sg::model::load_lora_adapter(*narrow, empty); }, "adapter_config.json: missing");
  auto gpt2 = random_model(tiny_gpt2(), 1);
  sg::model::attach_lora(*gpt2, options_for(tiny_gpt2()));
  const std::string dir = sg::test::temp_dir("sg-lora");
  sg::model::save_lora_adapter(dir, *gpt2, options_for(tiny_gpt2()), "tiny");
  nlohmann::json config = sg::io::read_json_file(dir + "/adapter_config.json");
  nlohmann::json no_r = config;
  no_r.erase("r");
  sg::io::write_json_file(dir + "/adapter_config.json", no_r);
  expect_error([&] { sg::model::load_lora_adapter(*narrow, dir); }, "\"r\" (the LoRA rank, an integer) is missing");
  nlohmann::json no_alpha = config;
  no_alpha.erase("lora_alpha");
  sg::io::write_json_file(dir + "/adapter_config.json", no_alpha);
  expect_error([&] { sg::model::load_lora_adapter(*narrow, dir); }, "\"lora_alpha\" (a number) is missing");
  nlohmann::json other_rank = config;
  other_rank["r"] = 2;
  sg::io::write_json_file(dir + "/adapter_config.json", other_rank);
  expect_error([&] { sg::model::load_lora_adapter(*narrow, dir); }, "with r=2 needs [2, 32]");
  sg::io::write_json_file(dir + "/adapter_config.json", config);

  // A lone lora_A, and a non-LoRA key.
  sg::io::StateDict tensors = sg::io::load_safetensors(dir + "/adapter_model.safetensors");
  sg::io::StateDict lone;
  lone.insert("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight", torch::zeros({4, 32}));
  sg::io::save_safetensors(dir + "/adapter_model.safetensors", lone);
  expect_error([&] { sg::model::load_lora_adapter(*narrow, dir); }, "has no matching lora_B");
  lone.insert("base_model.model.transformer.h.0.attn.c_attn.bias", torch::zeros({96}));
  sg::io::save_safetensors(dir + "/adapter_model.safetensors", lone);
  expect_error([&] { sg::model::load_lora_adapter(*narrow, dir); }, "is not a LoRA weight");
  std::remove((dir + "/adapter_model.safetensors").c_str());
  expect_error([&] { sg::model::load_lora_adapter(*narrow, dir); }, "adapter_model.safetensors: missing");
  EXPECT_FALSE(sg::model::has_lora(*narrow));

  // Loading onto a model that already has a pair there.
  sg::io::save_safetensors(dir + "/adapter_model.safetensors", tensors);
  expect_error([&] { sg::model::load_lora_adapter(*gpt2, dir); }, "already has a LoRA pair");
}

}  // namespace
