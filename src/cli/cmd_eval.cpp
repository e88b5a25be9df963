// skillgraft eval: score a model directory (optionally with a PEFT LoRA adapter) on a task split.
#include <cmath>
#include <cstdio>

#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/train_flags.h"
#include "data/task_source.h"
#include "eval/evaluator.h"
#include "model/causal_lm.h"
#include "model/lora.h"
#include "util/error.h"
#include "util/log.h"

namespace sg::cli {

namespace {

// Predictions --json keeps (all of them are counted in the score).
constexpr size_t kJsonPredictions = 20;

nlohmann::json number_or_null(double value) { return std::isnan(value) ? nlohmann::json(nullptr) : nlohmann::json(value); }

// Generated text may stop inside a UTF-8 character (or a byte-fallback token may be invalid on
// its own): JSON gets U+FFFD there instead of failing to serialise.
std::string valid_utf8(const std::string& text) {
  const std::string quoted = nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return nlohmann::json::parse(quoted).get<std::string>();
}

nlohmann::json prediction_json(const eval::ExamplePrediction& p) {
  return {{"prompt", valid_utf8(p.prompt)},
          {"expected", valid_utf8(p.expected)},
          {"predicted", valid_utf8(p.predicted)},
          {"correct", p.correct}};
}

}  // namespace

int run_eval(const std::vector<std::string>& args) {
  std::string model_dir, adapter_dir, task_spec, split = "test";
  int64_t max_examples = 0, batch_size = 64, max_new_tokens = 0, show = 0;
  TaskFlags task_flags;
  CommonOptions common;
  FlagSet flags("eval", "skillgraft eval --model DIR --task TASK [options]",
                "Scores a model on a task split: exact match of greedy continuations (generation tasks)\n"
                "or accuracy of log-likelihood choice scoring plus calibration (ECE, choice tasks), and\n"
                "the teacher-forced loss on the expected completions. Prints one summary line.");
  flags.add_string("model", &model_dir, "HF model directory (config.json + model.safetensors + tokenizer)", true);
  flags.add_string("adapter", &adapter_dir, "PEFT LoRA adapter directory to attach first (optional)");
  flags.add_string("task", &task_spec, "a built-in task name (skillgraft tasks list) or a task directory", true);
  flags.add_string("split", &split, "train, validation or test");
  flags.add_int("max-examples", &max_examples, "evaluate only the first N examples (0 = all)");
  flags.add_int("batch-size", &batch_size, "rows per forward pass");
  flags.add_int("max-new-tokens", &max_new_tokens, "greedy tokens per example (0 = the expected completion's + 4)");
  add_task_flags(flags, &task_flags, "seed", "built-in tasks: the seed they are generated from");
  flags.add_int("show", &show, "print the first N predictions");
  flags.add_common(&common.threads, &common.json_path, &common.quiet);
  if (!flags.parse(args)) return 0;
  apply_common(common);
  SG_CHECK(show >= 0, "--show must be >= 0, got " << show);

  // The task first: a misspelt task name fails before a model is loaded.
  const data::LoadedTask task = load_task_from_flags(task_spec, task_flags, "seed");
  const std::vector<data::Example>& examples = data::task_split(task, split);

  model::LoadedModel loaded = model::load_model_dir(model_dir);
  SG_CHECK(loaded.tokenizer != nullptr,
           model_dir << ": has no tokenizer (skillgraft_tokenizer.json, tokenizer.json or vocab.json + "
                        "merges.txt); hint: convert the model with its tokenizer");
  if (!adapter_dir.empty()) model::load_lora_adapter(*loaded.model, adapter_dir);

  eval::EvalOptions options;
  options.max_examples = max_examples;
  options.batch_size = batch_size;
  options.max_new_tokens = max_new_tokens;
  const eval::EvalResult result = eval::evaluate(*loaded.model, *loaded.tokenizer, examples, options);

  for (size_t i = 0; i < result.predictions.size() && i < static_cast<size_t>(show); ++i) {
    const eval::ExamplePrediction& p = result.predictions[i];
    nlohmann::json line = prediction_json(p);
    line.erase("correct");
    std::printf("%s %s\n", p.correct ? "ok   " : "wrong", line.dump().c_str());
  }
  char ece[32] = "n/a";
  if (!std::isnan(result.ece)) std::snprintf(ece, sizeof(ece), "%.4f", result.ece);
  std::printf("task=%s split=%s metric=%s score=%.4f n=%lld loss=%.4f ece=%s\n", task.name.c_str(), split.c_str(),
              result.metric.c_str(), result.score, static_cast<long long>(result.n), result.loss, ece);
  char timing[160];
  std::snprintf(timing, sizeof(timing), "%lld examples in %.3f s (%.1f examples/s)", static_cast<long long>(result.n),
                result.seconds, result.seconds > 0 ? static_cast<double>(result.n) / result.seconds : 0.0);
  util::log_info(timing);

  if (!common.json_path.empty()) {
    nlohmann::json predictions = nlohmann::json::array();
    for (size_t i = 0; i < result.predictions.size() && i < kJsonPredictions; ++i) {
      predictions.push_back(prediction_json(result.predictions[i]));
    }
    write_json_output(common, {{"task", task.name},
                               {"kind", task.kind},
                               {"split", split},
                               {"metric", result.metric},
                               {"score", result.score},
                               {"n", result.n},
                               {"loss", number_or_null(result.loss)},
                               {"ece", number_or_null(result.ece)},
                               {"seconds", result.seconds},
                               {"model", model_dir},
                               {"adapter", adapter_dir.empty() ? nlohmann::json(nullptr) : nlohmann::json(adapter_dir)},
                               {"predictions", predictions}});
  }
  return 0;
}

}  // namespace sg::cli
