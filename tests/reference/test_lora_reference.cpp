// LoRA against an independent reference: the test writes a tiny model directory and a PEFT
// adapter with nonzero B, tests/reference/lora_ref.py checks the adapter's layout, folds
// W + scale * B @ A into the weights itself in float64 and computes the logits with its own model;
// every C++ forward path (no-grad, grad, KV cache, loaded adapter, merged) must match.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>

#include "io/safetensors.h"
#include "model/causal_lm.h"
#include "model/lora.h"
#include "test_env.h"

namespace {

using sg::model::CausalLM;
using sg::model::LoraOptions;
using sg::model::ModelConfig;

// float32 forward against float64 reference, relative to the largest logit.
constexpr double kTolerance = 1e-5;

ModelConfig tiny_config(bool gpt2) {
  nlohmann::json j;
  if (gpt2) {
    j = {{"model_type", "gpt2"}, {"vocab_size", 90}, {"n_embd", 32}, {"n_layer", 2}, {"n_head", 4}, {"n_positions", 32}};
  } else {
    j = {{"model_type", "qwen2"},    {"vocab_size", 90},          {"hidden_size", 32},
         {"intermediate_size", 40},  {"num_hidden_layers", 2},    {"num_attention_heads", 4},
         {"num_key_value_heads", 2}, {"max_position_embeddings", 32},
         {"rms_norm_eps", 1e-6},     {"rope_theta", 10000.0},     {"tie_word_embeddings", false}};
  }
  return sg::model::config_from_json(j, "test");
}

std::shared_ptr<CausalLM> random_model(const ModelConfig& config) {
  torch::manual_seed(11);
  auto model = sg::model::create_model(config);
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.normal_(0.0, 0.2);
  model->eval();
  return model;
}

double relative_difference(const torch::Tensor& actual, const torch::Tensor& expected) {
  const torch::Tensor e = expected.to(torch::kDouble);
  const double max_abs = (actual.to(torch::kDouble) - e).abs().max().item<double>();
  return max_abs / e.abs().max().item<double>();
}

class LoraReference : public ::testing::TestWithParam<bool> {};

TEST_P(LoraReference, EveryForwardPathMatchesThePythonMerge) {
  const bool gpt2 = GetParam();
  const ModelConfig config = tiny_config(gpt2);
  LoraOptions options;
  options.rank = 3;
  options.alpha = 6;
  options.rslora = gpt2;  // the Python side reads use_rslora from the config
  options.seed = 4;
  options.targets = gpt2 ? std::vector<std::string>{"c_attn", "c_proj", "c_fc"}
                         : std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj",
                                                    "gate_proj", "up_proj", "down_proj", "lm_head"};
  auto model = random_model(config);
  const std::string root = sg::test::temp_dir("sg-lora-ref");
  sg::model::save_model_dir(root + "/model", *model, nullptr);
  sg::model::attach_lora(*model, options);
  {
    torch::manual_seed(12);
    torch::NoGradGuard no_grad;
    for (auto& item : sg::model::lora_state_dict(*model)) item.value().normal_(0.0, 0.3);
  }
  sg::model::save_lora_adapter(root + "/adapter", *model, options, "tiny");
  torch::manual_seed(13);
  const torch::Tensor tokens = torch::randint(0, config.vocab_size, {2, 11}, torch::kLong);
  sg::io::StateDict inputs;
  inputs.insert("input_ids", tokens);
  sg::io::save_safetensors(root + "/inputs.safetensors", inputs);

  auto result = sg::test::run_command(sg::test::python() + " " + sg::test::source_dir() +
                                      "/tests/reference/lora_ref.py --model " + root + "/model --adapter " +
                                      root + "/adapter --inputs " + root + "/inputs.safetensors --out " + root +
                                      "/expected.safetensors");
  std::printf("%s", result.output.c_str());
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const torch::Tensor expected = sg::io::load_safetensors(root + "/expected.safetensors")["logits"];
  ASSERT_EQ(expected.sizes(), torch::IntArrayRef({2, 11, config.vocab_size}));
  {
    // Without the adapter the logits differ clearly, so the comparison below tests the adapter.
    torch::NoGradGuard no_grad;
    EXPECT_GT(relative_difference(random_model(config)->forward(tokens), expected), 1e-2);
  }

  std::vector<std::pair<std::string, torch::Tensor>> paths;
  paths.emplace_back("grad mode", model->forward(tokens).detach());
  {
    torch::NoGradGuard no_grad;
    paths.emplace_back("no-grad (fused)", model->forward(tokens));
    sg::model::KVCache cache = model->make_cache(2, 11);
    std::vector<torch::Tensor> pieces = {model->forward(tokens.narrow(1, 0, 5), &cache)};
    for (int64_t t = 5; t < 11; ++t) pieces.push_back(model->forward(tokens.narrow(1, t, 1), &cache));
    paths.emplace_back("KV cache decode", torch::cat(pieces, 1));
    auto loaded = sg::model::load_model_dir(root + "/model").model;
    sg::model::load_lora_adapter(*loaded, root + "/adapter");
    paths.emplace_back("loaded adapter", loaded->forward(tokens));
    sg::model::merge_lora(*loaded);
    paths.emplace_back("merged", loaded->forward(tokens));
  }
  for (const auto& [name, logits] : paths) {
    const double rel = relative_difference(logits, expected);
    std::printf("%-6s %-18s logits max relative difference %.3e\n", gpt2 ? "gpt2" : "llama", name.c_str(), rel);
    EXPECT_LE(rel, kTolerance) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Lora, LoraReference, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Gpt2" : "Llama"; });

}  // namespace
