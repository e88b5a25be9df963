#include "model/generate.h"

#include <torch/torch.h>

#include <chrono>

#include "util/clock.h"
#include "util/error.h"

namespace sg::model {

namespace {

}  // namespace

void validate_sampling(const SamplingOptions& o) {
  SG_CHECK(o.max_tokens >= 0, "--max-tokens must be >= 0, got " << o.max_tokens);
  SG_CHECK(o.temperature >= 0, "--temperature must be >= 0, got " << o.temperature
                                                                  << "; hint: 0 is greedy decoding");
  SG_CHECK(o.top_k >= 0, "--top-k must be >= 0 (0 = off), got " << o.top_k);
  SG_CHECK(o.top_p > 0 && o.top_p <= 1, "--top-p must be in (0, 1], got " << o.top_p);
}

int64_t sample_token(const at::Tensor& logits, const SamplingOptions& o, std::mt19937_64& rng) {
  torch::Tensor row = logits.to(torch::kFloat).reshape({-1});
  if (o.temperature == 0) return row.argmax().item<int64_t>();
  torch::Tensor scaled = row / o.temperature;
  // Candidates in descending order; top-k and top-p cut the tail.
  torch::Tensor sorted_logits, sorted_ids;
  std::tie(sorted_logits, sorted_ids) = scaled.sort(/*dim=*/-1, /*descending=*/true);
  int64_t keep = sorted_logits.size(0);
  if (o.top_k > 0) keep = std::min(keep, o.top_k);
  torch::Tensor probs = torch::softmax(sorted_logits.narrow(0, 0, keep), -1).to(torch::kDouble);
  if (o.top_p < 1) {
    // Smallest prefix whose mass reaches top_p (always at least one token).
    torch::Tensor cumulative = probs.cumsum(0);
    int64_t below = (cumulative < o.top_p).sum().item<int64_t>();
    keep = std::min<int64_t>(keep, below + 1);
    probs = probs.narrow(0, 0, keep);
  }
  auto p = probs.accessor<double, 1>();
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) total += p[i];
  double draw = std::uniform_real_distribution<double>(0.0, total)(rng);
  int64_t chosen = keep - 1;
  double running = 0;
  for (int64_t i = 0; i < keep; ++i) {
    running += p[i];
    if (draw < running) {
      chosen = i;
      break;
    }
  }
  return sorted_ids[chosen].item<int64_t>();
}

GenerationResult generate(CausalLM& model, const io::Tokenizer& tokenizer, const std::string& prompt,
                          const SamplingOptions& options,
                          const std::function<void(const std::string&)>& on_text) {
  validate_sampling(options);
  c10::InferenceMode inference;
  const ModelConfig& config = model.config();
  GenerationResult result;
  result.prompt_tokens = io::prompt_tokens(tokenizer, prompt);
  const int64_t prompt_length = static_cast<int64_t>(result.prompt_tokens.size());
  SG_CHECK(prompt_length <= config.max_positions,
           "the prompt is " << prompt_length << " tokens but the model's context is "
                            << config.max_positions << " tokens; hint: shorten the prompt");
  for (int64_t id : result.prompt_tokens) {
    SG_CHECK(id < config.vocab_size, "token id " << id << " is outside the model's vocabulary of "
                                                 << config.vocab_size);
  }
  const int64_t capacity = std::min(config.max_positions, prompt_length + options.max_tokens);
  KVCache cache = model.make_cache(1, std::max<int64_t>(capacity, 1));
  std::mt19937_64 rng(options.seed);

  auto start = std::chrono::steady_clock::now();
  torch::Tensor input = torch::tensor(result.prompt_tokens, torch::kLong).unsqueeze(0);
  torch::Tensor logits = model.forward(input, &cache).select(1, prompt_length - 1);  // (1, V)
  result.prefill_seconds = util::seconds_since(start);

  start = std::chrono::steady_clock::now();
  result.stop_reason = "max_tokens";
  int64_t previous = result.prompt_tokens.back();
  for (int64_t step = 0; step < options.max_tokens; ++step) {
    int64_t next = sample_token(logits, options, rng);
    if (next == tokenizer.eos_id() && tokenizer.eos_id() >= 0) {
      result.stop_reason = "eos";
      break;
    }
    result.generated_tokens.push_back(next);
    std::string piece = next < tokenizer.vocab_size() ? tokenizer.token_bytes(previous, next) : "";
    result.text += piece;
    if (on_text) on_text(piece);
    previous = next;
    if (cache.length >= config.max_positions) {
      result.stop_reason = "context";
      break;
    }
    if (step + 1 == options.max_tokens) break;
    torch::Tensor step_input = torch::full({1, 1}, next, torch::kLong);
    logits = model.forward(step_input, &cache).select(1, 0);
  }
  result.decode_seconds = util::seconds_since(start);
  return result;
}

}  // namespace sg::model
