// skillgraft generate: text from a model directory, streamed to stdout.
#include <torch/torch.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/flags.h"
#include "model/causal_lm.h"
#include "model/generate.h"
#include "util/error.h"
#include "util/log.h"

namespace sg::cli {

int run_generate(const std::vector<std::string>& args) {
  std::string model_dir, prompt;
  model::SamplingOptions sampling;
  sampling.temperature = 0.8;
  sampling.top_p = 0.9;
  sampling.seed = 42;
  int64_t max_tokens = sampling.max_tokens, top_k = 0, seed = 42;
  CommonOptions common;
  FlagSet flags("generate", "skillgraft generate --model DIR --prompt TEXT [options]",
                "Generates text from a model directory with a KV cache. The prompt is printed,\n"
                "then the continuation as it is produced. Greedy when --temperature is 0.");
  flags.add_string("model", &model_dir, "HF model directory (config.json + model.safetensors + tokenizer)", true);
  flags.add_string("prompt", &prompt, "text to continue (may be empty: start from BOS)");
  flags.add_int("max-tokens", &max_tokens, "most tokens to generate");
  flags.add_double("temperature", &sampling.temperature, "sampling temperature; 0 = greedy");
  flags.add_int("top-k", &top_k, "sample among the k most likely tokens (0 = off)");
  flags.add_double("top-p", &sampling.top_p, "nucleus sampling: smallest set of tokens with this much mass (1 = off)");
  flags.add_int("seed", &seed, "random seed (same seed, same output)");
  flags.add_common(&common.threads, &common.json_path, &common.quiet);
  if (!flags.parse(args)) return 0;
  apply_common(common);
  sampling.max_tokens = max_tokens;
  sampling.top_k = top_k;
  sampling.seed = static_cast<uint64_t>(seed);
  model::validate_sampling(sampling);

  model::LoadedModel loaded = model::load_model_dir(model_dir);
  SG_CHECK(loaded.tokenizer != nullptr,
           model_dir << ": has no tokenizer (skillgraft_tokenizer.json, tokenizer.json or vocab.json + "
                        "merges.txt); hint: convert the model with its tokenizer");
  std::fputs(prompt.c_str(), stdout);
  std::fflush(stdout);
  model::GenerationResult result = model::generate(
      *loaded.model, *loaded.tokenizer, prompt, sampling, [](const std::string& piece) {
        std::fputs(piece.c_str(), stdout);
        std::fflush(stdout);
      });
  std::fputs("\n", stdout);
  const double decode_rate =
      result.decode_seconds > 0 ? static_cast<double>(result.generated_tokens.size()) / result.decode_seconds : 0;
  char line[200];
  std::snprintf(line, sizeof(line), "%zu prompt tokens in %.3f s, %zu generated at %.1f tokens/s (stop: %s)",
                result.prompt_tokens.size(), result.prefill_seconds, result.generated_tokens.size(),
                decode_rate, result.stop_reason.c_str());
  util::log_info(line);
  write_json_output(common, {{"model", model_dir},
                             {"prompt", prompt},
                             {"prompt_tokens", result.prompt_tokens},
                             {"generated_tokens", result.generated_tokens},
                             {"text", result.text},
                             {"stop_reason", result.stop_reason},
                             {"prefill_seconds", result.prefill_seconds},
                             {"decode_seconds", result.decode_seconds},
                             {"decode_tokens_per_second", decode_rate},
                             {"sampling",
                              {{"temperature", sampling.temperature},
                               {"top_k", sampling.top_k},
                               {"top_p", sampling.top_p},
                               {"seed", seed},
                               {"max_tokens", sampling.max_tokens}}}});
  return 0;
}

}  // namespace sg::cli
