// Fine-tuning throughput benchmark: full training of a model through train::train (SGD momentum
// 0.9, global clip 1.0, loss = cross-entropy sum over completion targets / target count) on seeded
// synthetic sequences of fixed length, and a square float32 sgemm for the machine's peak.
// Prints one JSON line (median repetition); bench/train.sh runs it beside the Python baseline
// (bench/train_py.py), which reads the initial weights and batches this binary writes (--dump).
//
// Work per token (stated, PaLM MFU convention): 6 * N + 12 * L * T * C FLOPs, where N counts the
// parameters that enter a matmul (all but the input embedding table; a tied table counts once, as
// the head), L layers, T = --seq, C = hidden size. The attention term counts the full T x T scores
// (no discount for the causal half), as PaLM does.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "bench_util.h"
#include "data/batching.h"
#include "io/llama2c.h"
#include "io/safetensors.h"
#include "model/causal_lm.h"
#include "train/trainer.h"
#include "util/error.h"
#include "util/log.h"
#include "util/threads.h"

namespace {

using sg::bench::median;
using sg::bench::now_seconds;

struct Options {
  std::string llama2c_path, config, dump_dir;
  int64_t batch = 16, seq = 128, steps = 10, warmup = 3, reps = 3, threads = 0, sgemm = 0;
  double lr = 0.05;
  uint64_t seed = 0;
  bool phases = false;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    SG_CHECK(i + 1 < argc, flag << " needs a value");
    std::string value = argv[++i];
    if (flag == "--llama2c") o.llama2c_path = value;
    else if (flag == "--config") o.config = value;
    else if (flag == "--dump") o.dump_dir = value;
    else if (flag == "--batch") o.batch = std::stoll(value);
    else if (flag == "--seq") o.seq = std::stoll(value);
    else if (flag == "--steps") o.steps = std::stoll(value);
    else if (flag == "--warmup") o.warmup = std::stoll(value);
    else if (flag == "--reps") o.reps = std::stoll(value);
    else if (flag == "--threads") o.threads = std::stoll(value);
    else if (flag == "--lr") o.lr = std::stod(value);
    else if (flag == "--seed") o.seed = std::stoull(value);
    else if (flag == "--sgemm") o.sgemm = std::stoll(value);
    else if (flag == "--phases") o.phases = value == "1";
    else SG_FAIL("unknown flag " << flag << "; flags: --llama2c FILE.bin | --config JSON|PATH.json | --sgemm N, "
                                   "--batch, --seq, --steps, --warmup, --reps, --lr, --seed, --threads, --dump DIR, --phases 1");
  }
  SG_CHECK(o.sgemm > 0 || !o.llama2c_path.empty() || !o.config.empty(), "give --llama2c FILE, --config JSON or --sgemm N");
  SG_CHECK(o.batch >= 1 && o.seq >= 1 && o.steps >= 1 && o.warmup >= 1 && o.reps >= 1,
           "--batch, --seq, --steps, --warmup and --reps must be >= 1");
  return o;
}

// n x n float32 torch::mm, median of 5 after one warmup: 2 n^3 FLOPs each.
int run_sgemm(const Options& o, int threads) {
  torch::manual_seed(0);
  torch::Tensor a = torch::randn({o.sgemm, o.sgemm}), b = torch::randn({o.sgemm, o.sgemm});
  torch::Tensor c = torch::mm(a, b);
  std::vector<double> times;
  for (int i = 0; i < 5; ++i) {
    double start = now_seconds();
    torch::mm_out(c, a, b);
    times.push_back(now_seconds() - start);
  }
  double seconds = median(times);
  double flops = 2.0 * static_cast<double>(o.sgemm) * static_cast<double>(o.sgemm) * static_cast<double>(o.sgemm);
  std::printf("{\"impl\": \"skillgraft\", \"mode\": \"sgemm\", \"n\": %lld, \"gflops\": %.2f, \"seconds\": %.6f, "
              "\"threads\": %d}\n",
              static_cast<long long>(o.sgemm), flops / seconds / 1e9, seconds, threads);
  return 0;
}

std::string config_text(const std::string& value) {
  if (!value.empty() && value[0] == '{') return value;
  std::ifstream in(value);
  SG_CHECK(in.good(), "cannot read --config file " << value);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::shared_ptr<sg::model::CausalLM> build_model(const Options& o) {
  if (!o.llama2c_path.empty()) {
    sg::io::Llama2cModel imported = sg::io::read_llama2c(o.llama2c_path);
    return sg::model::create_model_from_weights(sg::model::config_from_json(imported.config, o.llama2c_path),
                                                imported.weights, o.llama2c_path);
  }
  torch::manual_seed(static_cast<int64_t>(o.seed));
  auto model = sg::model::create_model(sg::model::config_from_json(nlohmann::json::parse(config_text(o.config)), "--config"));
  // N(0, 0.02) as bench/forward_py.py does: the default N(0, 1) embedding, tied as the head, starts
  // training at a loss near 500.
  torch::NoGradGuard no_grad;
  for (const auto& item : sg::model::model_state_dict(*model)) {
    if (item.key().find("norm.weight") == std::string::npos) item.value().normal_(0.0, 0.02);
  }
  return model;
}

// Parameters that enter a matmul: everything but the input embedding table, plus the head
// (which is that table again when tied).
int64_t matmul_parameter_count(sg::model::CausalLM& model) {
  const sg::model::ModelConfig& config = model.config();
  int64_t count = 0;
  for (const auto& item : sg::model::model_state_dict(model)) {
    if (item.key() != "model.embed_tokens.weight" && item.key() != "transformer.wte.weight") count += item.value().numel();
  }
  if (config.tie_word_embeddings) count += config.vocab_size * config.hidden_size;
  return count;
}

// The trainer's step taken apart with the same library calls, each phase timed (median over
// --steps steps, after --warmup): where a step's time goes.
void print_phases(sg::model::CausalLM& model, const sg::io::StateDict& trainable,
                  const std::vector<sg::data::EncodedSequence>& examples, const Options& o) {
  sg::train::OptimizerOptions sgd;
  sg::train::Optimizer optimizer(trainable, sgd);
  const char* names[] = {"make_batch", "forward", "loss", "backward", "clip_grad_norm", "optimizer_step", "zero_grad"};
  std::vector<std::vector<double>> times(7);
  model.train();
  for (int64_t s = 0; s < o.warmup + o.steps; ++s) {
    std::vector<double> marks{now_seconds()};
    std::vector<const sg::data::EncodedSequence*> sequences;
    for (int64_t i = 0; i < o.batch; ++i) sequences.push_back(&examples[static_cast<size_t>((s % o.steps) * o.batch + i)]);
    sg::data::Batch batch = sg::data::make_batch(sequences, model.config().max_positions);
    marks.push_back(now_seconds());
    torch::Tensor logits = model.forward(batch.inputs);
    marks.push_back(now_seconds());
    torch::Tensor loss = torch::nn::functional::cross_entropy(
        logits.reshape({-1, model.config().vocab_size}), batch.targets.reshape({-1}),
        torch::nn::functional::CrossEntropyFuncOptions().ignore_index(sg::data::kIgnoreTarget).reduction(torch::kSum));
    loss.item<double>();
    marks.push_back(now_seconds());
    (loss / static_cast<double>(batch.target_count)).backward();
    marks.push_back(now_seconds());
    sg::train::clip_grad_norm(trainable, 1.0);
    marks.push_back(now_seconds());
    optimizer.step(o.lr);
    marks.push_back(now_seconds());
    optimizer.zero_grad();
    marks.push_back(now_seconds());
    if (s < o.warmup) continue;
    for (size_t k = 0; k < 7; ++k) times[k].push_back(marks[k + 1] - marks[k]);
  }
  std::string fields;
  for (size_t k = 0; k < 7; ++k) {
    char text[64];
    std::snprintf(text, sizeof text, "%s\"%s\": %.6f", k ? ", " : "", names[k], median(times[k]));
    fields += text;
  }
  std::printf("{\"impl\": \"skillgraft\", \"mode\": \"phases\", %s}\n", fields.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Options o = parse(argc, argv);
    int threads = sg::util::set_threads(static_cast<int>(o.threads));
    if (o.sgemm > 0) return run_sgemm(o, threads);
    sg::util::set_quiet(true);
    std::shared_ptr<sg::model::CausalLM> model = build_model(o);
    const sg::model::ModelConfig& config = model->config();
    SG_CHECK(o.seq <= config.max_positions, "--seq " << o.seq << " exceeds the model's context " << config.max_positions);

    // One epoch of batch * steps sequences of seq + 1 seeded tokens; completion = all but the first.
    const int64_t count = o.batch * o.steps;
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(o.seed + 1);
    torch::Tensor tokens = torch::randint(0, config.vocab_size, {count, o.seq + 1}, generator, torch::kLong);
    std::vector<sg::data::EncodedSequence> examples(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) {
      const int64_t* row = tokens[i].data_ptr<int64_t>();
      examples[static_cast<size_t>(i)].tokens.assign(row, row + o.seq + 1);
      examples[static_cast<size_t>(i)].completion_start = 1;
    }
    sg::io::StateDict trainable = sg::model::model_state_dict(*model);
    for (const auto& item : trainable) item.value().set_requires_grad(true);

    if (o.phases) {
      print_phases(*model, trainable, examples, o);
      return 0;
    }
    if (!o.dump_dir.empty()) {
      // The batches in the order train::train consumes them, (steps, B, seq + 1), and the initial
      // weights, so the Python baseline trains on exactly the same thing.
      std::filesystem::create_directories(o.dump_dir);
      std::vector<torch::Tensor> steps;
      for (int64_t s = 0; s < o.steps; ++s) {
        std::vector<int64_t> indices = sg::train::micro_batch_indices(count, o.batch, s, o.seed);
        steps.push_back(tokens.index_select(0, torch::tensor(indices, torch::kLong)));
      }
      sg::io::StateDict batches;
      batches.insert("tokens", torch::stack(steps));
      sg::io::save_safetensors(o.dump_dir + "/batches.safetensors", batches);
      sg::model::save_model_dir(o.dump_dir + "/initial", *model, nullptr);
    }

    sg::train::TrainOptions options;
    options.optimizer.kind = sg::train::OptimizerKind::kSgd;
    options.optimizer.momentum = 0.9;
    options.lr = o.lr;
    options.min_lr_ratio = 1.0;  // a constant learning rate: no schedule to mirror in Python
    options.batch_size = o.batch;
    options.clip = 1.0;
    options.eval_every = 0;
    options.checkpoint_every = 0;
    options.target_score = 2.0;
    options.seed = o.seed;

    // Warmup: its losses, from the initial weights, are the ones Python must reproduce.
    options.steps = o.warmup;
    sg::train::TrainResult warm = sg::train::train(*model, trainable, examples, options, {});
    std::string losses;
    for (const auto& entry : warm.log) {
      if (!entry.contains("loss")) continue;
      char text[32];
      std::snprintf(text, sizeof text, "%s%.9g", losses.empty() ? "" : ", ", entry["loss"].get<double>());
      losses += text;
    }

    // Each repetition trains --steps steps from a fresh optimizer (the weights carry on); its rate
    // is the trainer's own: non-padding tokens / training time.
    options.steps = o.steps;
    std::vector<double> rates;
    for (int64_t r = 0; r < o.reps; ++r) {
      rates.push_back(sg::train::train(*model, trainable, examples, options, {}).tokens_per_second);
    }
    const double tokens_per_s = median(rates);
    const int64_t n_matmul = matmul_parameter_count(*model);
    const double flops_per_token = 6.0 * static_cast<double>(n_matmul) +
                                   12.0 * static_cast<double>(config.num_layers * o.seq * config.hidden_size);
    std::printf("{\"impl\": \"skillgraft\", \"mode\": \"train\", \"tokens_per_s\": %.1f, \"gflops\": %.3f, "
                "\"flops_per_token\": %.0f, \"params\": %lld, \"matmul_params\": %lld, \"batch\": %lld, "
                "\"seq\": %lld, \"steps\": %lld, \"threads\": %d, \"losses\": [%s]}\n",
                tokens_per_s, tokens_per_s * flops_per_token / 1e9, flops_per_token,
                static_cast<long long>(sg::model::parameter_count(config)), static_cast<long long>(n_matmul),
                static_cast<long long>(o.batch), static_cast<long long>(o.seq), static_cast<long long>(o.steps),
                threads, losses.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::string what = e.what();
    std::fprintf(stderr, "bench_train: error: %s\n", what.substr(0, what.find('\n')).c_str());
    return 1;
  }
}
