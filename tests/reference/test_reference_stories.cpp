// Reference check on the real model: stories260K converted from llama2.c and loaded as an HF
// directory must reproduce, token for token, the greedy decoding of an independent NumPy
// implementation of llama2.c's run.c (tests/reference/llama2c_ref.py), and its logits at every
// position within 1e-4.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>

#include "io/llama2c.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "model/causal_lm.h"
#include "model/generate.h"
#include "test_env.h"

namespace {

constexpr double kLogitTolerance = 1e-4;

struct Stories {
  sg::model::LoadedModel loaded;
  sg::io::StateDict reference;
};

Stories& stories() {
  static Stories s = [] {
    const std::string models = sg::test::source_dir() + "/data/models/";
    sg::io::Llama2cModel source = sg::io::read_llama2c(models + "stories260K.bin");
    auto config = sg::model::config_from_json(source.config, "stories260K.bin");
    auto model = sg::model::create_model_from_weights(config, source.weights, "stories260K.bin");
    auto tokenizer = sg::io::load_llama2c_tokenizer(models + "tok512.bin", source.header.vocab_size);
    std::string dir = sg::test::temp_dir("sg-stories");
    sg::model::save_model_dir(dir, *model, tokenizer.get());  // the HF directory a user gets
    Stories result{sg::model::load_model_dir(dir),
                   sg::io::load_safetensors(sg::test::refdata_dir() + "/stories260K_greedy.safetensors")};
    return result;
  }();
  return s;
}

TEST(Stories260K, GreedyDecodingMatchesTheReferenceTokenForToken) {
  Stories& s = stories();
  torch::Tensor ref_tokens = s.reference["tokens"];  // BOS + 120 generated
  const int64_t steps = ref_tokens.size(0) - 1;
  sg::model::SamplingOptions greedy;
  greedy.temperature = 0;
  greedy.max_tokens = steps;
  auto result = sg::model::generate(*s.loaded.model, *s.loaded.tokenizer, "", greedy);
  ASSERT_EQ(result.prompt_tokens, std::vector<int64_t>{1});
  std::vector<int64_t> expected(ref_tokens.data_ptr<int64_t>() + 1, ref_tokens.data_ptr<int64_t>() + steps + 1);
  EXPECT_EQ(result.generated_tokens, expected);
  std::printf("greedy text: %s\n", result.text.c_str());
}

TEST(Stories260K, LogitsAtEveryPositionMatchTheReference) {
  Stories& s = stories();
  torch::Tensor ref_tokens = s.reference["tokens"];
  torch::Tensor ref_logits = s.reference["logits"];  // (steps, V): after feeding tokens[t]
  const int64_t steps = ref_logits.size(0);
  torch::NoGradGuard no_grad;
  torch::Tensor input = ref_tokens.narrow(0, 0, steps).unsqueeze(0);
  // One full forward, and the KV-cache path one token at a time: both must match.
  torch::Tensor full = s.loaded.model->forward(input).squeeze(0);
  sg::model::KVCache cache = s.loaded.model->make_cache(1, steps);
  std::vector<torch::Tensor> rows;
  for (int64_t t = 0; t < steps; ++t) rows.push_back(s.loaded.model->forward(input.narrow(1, t, 1), &cache).view({-1}));
  torch::Tensor cached = torch::stack(rows);
  double full_diff = (full.to(torch::kDouble) - ref_logits).abs().max().item<double>();
  double cached_diff = (cached.to(torch::kDouble) - ref_logits).abs().max().item<double>();
  std::printf("max |logit difference| over %lld positions: full forward %.3e, KV cache %.3e\n",
              static_cast<long long>(steps), full_diff, cached_diff);
  EXPECT_LE(full_diff, kLogitTolerance);
  EXPECT_LE(cached_diff, kLogitTolerance);
}

}  // namespace
