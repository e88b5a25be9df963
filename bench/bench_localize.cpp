// Localization cost benchmark: one graft optimisation step (skills::GraftOptimizer::step, what
// one iteration of localize()'s loop does) against one fine-tuning step (train::train, one step:
// forward, backward, clip, SGD momentum 0.9) on the same batch and the same model, and the memory
// localization holds. bench/localize.sh runs it; each run prints one JSON line.
//
//   --measure time     median seconds of --reps steps of each, alternating, after --warmup each
//   --measure memory   peak RSS increase (VmHWM, reset through /proc/self/clear_refs) over the
//                      RSS before, in units of the model's float32 size, of one --phase:
//                        localize  skills::localize, graft, --steps steps, no validation
//                        backward  --steps forward + backward passes on the batch (the .grad and
//                                  activations any gradient step holds)
//                        finetune  train::train, --steps steps (adds the optimizer's momentum)
//                        optimizer constructing skills::GraftOptimizer (also prints the (N)
//                                  vectors it holds, held_models)
//                      Each phase runs in its own process, so no phase reuses another's heap.
//
// The batch: the first --batch training examples of built-in task --task, encoded with the
// llama2.c tokenizer --tokenizer; both the fine-tune and the graft draw every step from these
// --batch examples only, so every step sees the same batch (in another order). The "fine-tuned"
// model is the base plus seeded Gaussian noise (--noise); localization works the same on any δ.
#include <malloc.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "bench_util.h"
#include "data/batching.h"
#include "data/task_source.h"
#include "io/llama2c.h"
#include "io/tokenizer.h"
#include "model/causal_lm.h"
#include "skills/localize.h"
#include "train/trainer.h"
#include "util/error.h"
#include "util/log.h"
#include "util/threads.h"

namespace {

using sg::bench::median;
using sg::bench::now_seconds;
using sg::bench::reset_peak_rss;
using sg::bench::status_bytes;

struct Options {
  std::string llama2c_path, config, tokenizer = "data/models/tok512.bin", task = "opposite";
  std::string measure = "time", phase = "localize";
  int64_t batch = 128, reps = 7, warmup = 2, threads = 0, steps = 3;
  double fraction = 0.01, noise = 1e-3;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    SG_CHECK(i + 1 < argc, flag << " needs a value");
    std::string value = argv[++i];
    if (flag == "--llama2c") o.llama2c_path = value;
    else if (flag == "--config") o.config = value;
    else if (flag == "--tokenizer") o.tokenizer = value;
    else if (flag == "--task") o.task = value;
    else if (flag == "--measure") o.measure = value;
    else if (flag == "--phase") o.phase = value;
    else if (flag == "--batch") o.batch = std::stoll(value);
    else if (flag == "--reps") o.reps = std::stoll(value);
    else if (flag == "--warmup") o.warmup = std::stoll(value);
    else if (flag == "--steps") o.steps = std::stoll(value);
    else if (flag == "--threads") o.threads = std::stoll(value);
    else if (flag == "--fraction") o.fraction = std::stod(value);
    else if (flag == "--noise") o.noise = std::stod(value);
    else SG_FAIL("unknown flag " << flag << "; flags: --llama2c FILE.bin | --config JSON, --tokenizer, --task, "
                                   "--measure time|memory, --phase localize|backward|finetune, --batch, --reps, "
                                   "--warmup, --steps, --threads, --fraction, --noise");
  }
  SG_CHECK(!o.llama2c_path.empty() || !o.config.empty(), "give --llama2c FILE or --config JSON");
  SG_CHECK(o.measure == "time" || o.measure == "memory", "--measure is time or memory");
  SG_CHECK(o.batch >= 1 && o.reps >= 1 && o.warmup >= 0 && o.steps >= 1, "--batch, --reps, --steps >= 1, --warmup >= 0");
  return o;
}

std::shared_ptr<sg::model::CausalLM> build_base(const Options& o) {
  if (!o.llama2c_path.empty()) {
    sg::io::Llama2cModel imported = sg::io::read_llama2c(o.llama2c_path);
    return sg::model::create_model_from_weights(sg::model::config_from_json(imported.config, o.llama2c_path),
                                                imported.weights, o.llama2c_path);
  }
  torch::manual_seed(0);
  auto model = sg::model::create_model(sg::model::config_from_json(nlohmann::json::parse(o.config), "--config"));
  torch::NoGradGuard no_grad;
  for (const auto& item : sg::model::model_state_dict(*model)) {
    if (item.key().find("norm.weight") == std::string::npos) item.value().normal_(0.0, 0.02);
  }
  return model;
}

std::shared_ptr<sg::model::CausalLM> copy_model(const sg::model::CausalLM& model) {
  return sg::model::create_model_from_weights(model.config(), sg::model::model_state_dict(model), "copy");
}

sg::train::TrainOptions one_sgd_step(const Options& o) {
  sg::train::TrainOptions options;
  options.optimizer.kind = sg::train::OptimizerKind::kSgd;
  options.optimizer.momentum = 0.9;
  options.lr = 0.01;
  options.min_lr_ratio = 1.0;
  options.steps = 1;
  options.batch_size = o.batch;
  options.clip = 1.0;
  options.eval_every = 0;
  options.checkpoint_every = 0;
  options.target_score = 2.0;
  return options;
}

sg::skills::LocalizeOptions graft_options(const Options& o) {
  sg::skills::LocalizeOptions options;
  options.method = sg::skills::LocalizeMethod::kGraft;
  options.fraction = o.fraction;
  options.batch_size = o.batch;
  options.steps = o.steps;
  options.eval_every = o.steps;
  return options;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Options o = parse(argc, argv);
    const int threads = sg::util::set_threads(static_cast<int>(o.threads));
    sg::util::set_quiet(true);
    std::shared_ptr<sg::model::CausalLM> base = build_base(o);
    const sg::model::ModelConfig& config = base->config();
    std::shared_ptr<sg::model::CausalLM> finetuned = copy_model(*base);
    {
      torch::NoGradGuard no_grad;
      at::Generator generator = at::detail::createCPUGenerator(1);
      for (const auto& item : sg::model::model_state_dict(*finetuned)) {
        item.value().add_(torch::randn(item.value().sizes(), generator), o.noise);
      }
    }
    std::shared_ptr<sg::model::CausalLM> work = copy_model(*base);
    const sg::io::StateDict base_weights = sg::model::model_state_dict(*base);
    const sg::io::StateDict finetuned_weights = sg::model::model_state_dict(*finetuned);

    std::unique_ptr<sg::io::Tokenizer> tokenizer = sg::io::load_llama2c_tokenizer(o.tokenizer, 512);
    const sg::data::LoadedTask task = sg::data::load_task(o.task, sg::data::BuiltinTaskOptions{});
    std::vector<sg::data::EncodedSequence> examples = sg::data::encode_for_training(*tokenizer, task.splits.train);
    SG_CHECK(static_cast<int64_t>(examples.size()) >= o.batch,
             "task " << o.task << " has " << examples.size() << " training examples, fewer than --batch " << o.batch);
    examples.resize(static_cast<size_t>(o.batch));
    int64_t tokens = 0;
    for (const auto& e : examples) tokens += static_cast<int64_t>(e.tokens.size());
    const int64_t params = sg::model::parameter_count(config);
    const double model_bytes = 4.0 * static_cast<double>(params);
    const sg::train::TrainOptions train_options = one_sgd_step(o);

    if (o.measure == "memory") {
      int64_t held = 0;
      auto run_phase = [&]() {
        if (o.phase == "localize") {
          sg::skills::localize(*work, base_weights, finetuned_weights, examples, graft_options(o), nullptr);
        } else if (o.phase == "backward") {
          work->train();
          sg::io::StateDict weights = sg::model::model_state_dict(*work);
          for (const auto& item : weights) item.value().set_requires_grad(true);
          std::vector<const sg::data::EncodedSequence*> sequences;
          for (const auto& e : examples) sequences.push_back(&e);
          sg::data::Batch batch = sg::data::make_batch(sequences, config.max_positions);
          for (int64_t s = 0; s < o.steps; ++s) {
            for (const auto& item : weights) {
              if (item.value().grad().defined()) item.value().mutable_grad().zero_();
            }
            (sg::train::batch_loss_sum(*work, batch) / static_cast<double>(batch.target_count)).backward();
          }
          for (const auto& item : weights) item.value().mutable_grad() = torch::Tensor();
        } else if (o.phase == "finetune") {
          sg::io::StateDict trainable = sg::model::model_state_dict(*work);
          for (const auto& item : trainable) item.value().set_requires_grad(true);
          sg::train::TrainOptions steps = train_options;
          steps.steps = o.steps;
          sg::train::train(*work, trainable, examples, steps, {});
          for (const auto& item : trainable) item.value().mutable_grad() = torch::Tensor();
        } else if (o.phase == "optimizer") {
          // The graft optimizer's own (N) vectors, as it counts them.
          sg::skills::GraftOptimizer graft(*work, base_weights, finetuned_weights, examples, graft_options(o));
          held = graft.buffer_bytes();
        } else {
          SG_FAIL("--phase is localize, backward, finetune or optimizer");
        }
      };
      // A first run pages in the library code it uses (counted in RSS) and sizes the heap; its
      // memory is freed and returned, then the second run is measured.
      run_phase();
      malloc_trim(0);
      const int64_t rss_before = status_bytes("VmRSS");
      reset_peak_rss();
      run_phase();
      const int64_t peak = status_bytes("VmHWM");
      std::printf("{\"mode\": \"memory\", \"phase\": \"%s\", \"params\": %lld, \"model_mb\": %.2f, \"rss_before_mb\": %.2f, "
                  "\"peak_increase_mb\": %.2f, \"peak_increase_models\": %.3f, \"held_models\": %.3f, \"batch\": %lld, "
                  "\"tokens\": %lld, \"threads\": %d}\n",
                  o.phase.c_str(), static_cast<long long>(params), model_bytes / 1e6, rss_before / 1e6,
                  (peak - rss_before) / 1e6, (peak - rss_before) / model_bytes, held / model_bytes,
                  static_cast<long long>(o.batch), static_cast<long long>(tokens), threads);
      return 0;
    }

    // Timing: the fine-tune trains its own copy of the base; the graft optimises on `work`.
    std::shared_ptr<sg::model::CausalLM> trained = copy_model(*base);
    sg::io::StateDict trainable = sg::model::model_state_dict(*trained);
    for (const auto& item : trainable) item.value().set_requires_grad(true);
    sg::skills::LocalizeOptions localize_options = graft_options(o);
    sg::skills::GraftOptimizer graft(*work, base_weights, finetuned_weights, examples, localize_options);
    std::vector<double> finetune_times, graft_times;
    for (int64_t r = 0; r < o.warmup + o.reps; ++r) {
      // Alternating, so drift on a shared machine hits both.
      const double finetune_seconds = sg::train::train(*trained, trainable, examples, train_options, {}).seconds;
      const double start = now_seconds();
      graft.step();
      const double graft_seconds = now_seconds() - start;
      if (r < o.warmup) continue;
      finetune_times.push_back(finetune_seconds);
      graft_times.push_back(graft_seconds);
    }
    auto list = [](const std::vector<double>& values) {
      std::string text;
      for (double v : values) text += (text.empty() ? "" : ", ") + std::to_string(v);
      return text;
    };
    const double finetune = median(finetune_times), graft_step = median(graft_times);
    std::printf("{\"mode\": \"time\", \"params\": %lld, \"candidates\": %lld, \"budget\": %lld, \"batch\": %lld, "
                "\"tokens\": %lld, \"finetune_s\": %.6f, \"graft_s\": %.6f, \"ratio\": %.3f, \"held_models\": %.3f, "
                "\"finetune_times\": [%s], \"graft_times\": [%s], \"threads\": %d}\n",
                static_cast<long long>(params), static_cast<long long>(graft.candidates()),
                static_cast<long long>(graft.budget()), static_cast<long long>(o.batch), static_cast<long long>(tokens),
                finetune, graft_step, graft_step / finetune, graft.buffer_bytes() / model_bytes,
                list(finetune_times).c_str(), list(graft_times).c_str(), threads);
    return 0;
  } catch (const std::exception& e) {
    std::string what = e.what();
    std::fprintf(stderr, "bench_localize: error: %s\n", what.substr(0, what.find('\n')).c_str());
    return 1;
  }
}
