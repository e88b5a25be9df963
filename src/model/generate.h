// Text generation: prefill the prompt into a KV cache, then sample token by token (greedy at
// temperature 0; else temperature, top-k, top-p), seeded and reproducible.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "io/tokenizer.h"
#include "model/causal_lm.h"

namespace sg::model {

struct SamplingOptions {
  int64_t max_tokens = 256;
  double temperature = 1.0;  // 0: greedy
  int64_t top_k = 0;         // 0: off
  double top_p = 1.0;        // 1: off
  uint64_t seed = 0;
};

// Checks the options' ranges; throws sg::Error naming the flag.
void validate_sampling(const SamplingOptions& options);

// The next token from logits (V) under the options, drawing from `rng`.
int64_t sample_token(const at::Tensor& logits, const SamplingOptions& options, std::mt19937_64& rng);

struct GenerationResult {
  std::vector<int64_t> prompt_tokens;     // including BOS where the tokenizer adds one
  std::vector<int64_t> generated_tokens;
  std::string text;                       // the generated text only
  std::string stop_reason;                // "eos", "max_tokens", "context"
  double prefill_seconds = 0;
  double decode_seconds = 0;
};

// Generates from `prompt`. `on_text` (optional) receives each new piece of text as it is decoded.
// Throws when the prompt alone is longer than the model's context.
GenerationResult generate(CausalLM& model, const io::Tokenizer& tokenizer, const std::string& prompt,
                          const SamplingOptions& options,
                          const std::function<void(const std::string&)>& on_text = nullptr);

}  // namespace sg::model
