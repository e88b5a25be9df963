// Forward-throughput benchmark: prefill (B x T tokens, logits for every position) and batch-1
// decode with the KV cache, for a model directory or a random model of a given config.
// Prints one JSON line (median repetition); bench/forward.sh runs it beside the Python baseline and prints ratios.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>

#include "bench_util.h"
#include "io/hf_checkpoint.h"
#include "model/causal_lm.h"
#include "util/error.h"
#include "util/threads.h"

namespace {

using sg::bench::now_seconds;

struct Options {
  std::string model_dir, config_json, mode = "prefill";
  int64_t batch = 8, seq = 256, tokens = 256, iters = 5, warmup = 2, threads = 0;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    SG_CHECK(i + 1 < argc, flag << " needs a value");
    std::string value = argv[++i];
    if (flag == "--model") o.model_dir = value;
    else if (flag == "--config") o.config_json = value;
    else if (flag == "--mode") o.mode = value;
    else if (flag == "--batch") o.batch = std::stoll(value);
    else if (flag == "--seq") o.seq = std::stoll(value);
    else if (flag == "--tokens") o.tokens = std::stoll(value);
    else if (flag == "--iters") o.iters = std::stoll(value);
    else if (flag == "--warmup") o.warmup = std::stoll(value);
    else if (flag == "--threads") o.threads = std::stoll(value);
    else SG_FAIL("unknown flag " << flag << "; flags: --model DIR | --config JSON, --mode prefill|decode, "
                                   "--batch, --seq, --tokens, --iters, --warmup, --threads");
  }
  SG_CHECK(!o.model_dir.empty() || !o.config_json.empty(), "give --model DIR or --config JSON");
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Options o = parse(argc, argv);
    int threads = sg::util::set_threads(static_cast<int>(o.threads));
    std::shared_ptr<sg::model::CausalLM> model;
    if (!o.model_dir.empty()) {
      model = sg::model::load_model_dir(o.model_dir).model;
    } else {
      torch::manual_seed(0);
      model = sg::model::create_model(sg::model::config_from_json(nlohmann::json::parse(o.config_json), "--config"));
    }
    model->eval();
    c10::InferenceMode inference;
    const auto& config = model->config();
    double tokens_per_iter = 0;
    std::function<void()> step;
    torch::Tensor prefill_tokens = torch::randint(0, config.vocab_size, {o.batch, o.seq}, torch::kLong);
    if (o.mode == "prefill") {
      tokens_per_iter = static_cast<double>(o.batch * o.seq);
      step = [&] { model->forward(prefill_tokens); };
    } else if (o.mode == "decode") {
      tokens_per_iter = static_cast<double>(o.tokens);
      step = [&] {
        sg::model::KVCache cache = model->make_cache(1, o.tokens);
        torch::Tensor token = torch::ones({1, 1}, torch::kLong);
        for (int64_t t = 0; t < o.tokens; ++t) {
          torch::Tensor logits = model->forward(token, &cache);
          token = logits.select(1, 0).argmax(-1, true);
        }
      };
    } else {
      SG_FAIL("--mode must be prefill or decode");
    }
    for (int64_t i = 0; i < o.warmup; ++i) step();
    // The median repetition: robust to a noisy neighbour on a shared machine.
    std::vector<double> times;
    for (int64_t i = 0; i < o.iters; ++i) {
      double start = now_seconds();
      step();
      times.push_back(now_seconds() - start);
    }
    std::sort(times.begin(), times.end());
    double seconds = times[times.size() / 2];
    std::printf("{\"impl\": \"skillgraft\", \"mode\": \"%s\", \"tokens_per_s\": %.1f, \"seconds\": %.6f, "
                "\"params\": %lld, \"threads\": %d}\n",
                o.mode.c_str(), tokens_per_iter / seconds, seconds,
                static_cast<long long>(sg::model::parameter_count(config)), threads);
    return 0;
  } catch (const std::exception& e) {
    std::string what = e.what();
    std::fprintf(stderr, "bench_forward: error: %s\n", what.substr(0, what.find('\n')).c_str());
    return 1;
  }
}
