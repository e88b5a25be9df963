#include "train/finetune.h"

#include <torch/torch.h>

#include <regex>

#include "io/fingerprint.h"
#include "io/hf_checkpoint.h"
#include "model/config.h"
#include "train/checkpoint.h"
#include "util/error.h"
#include "util/file.h"
#include "util/log.h"
#include "util/regex.h"

namespace sg::train {

namespace {

// Parses "A-B" or "A" into an inclusive range.
std::pair<int64_t, int64_t> parse_layer_range(const std::string& text, int64_t layer_count) {
  static const std::regex pattern(R"(^\s*(\d+)\s*(?:-\s*(\d+))?\s*$)");
  std::smatch match;
  SG_CHECK(std::regex_match(text, match, pattern),
           "--layers '" << text << "' is not a range; hint: write A-B (e.g. 2-3) or a single layer A");
  const int64_t first = std::stoll(match[1].str());
  const int64_t last = match[2].matched ? std::stoll(match[2].str()) : first;
  SG_CHECK(first <= last && last < layer_count, "--layers " << text << " is outside the model's layers 0-"
                                                            << layer_count - 1 << "; hint: A <= B < "
                                                            << layer_count);
  return {first, last};
}

// The layer index of an HF parameter name ("model.layers.3.mlp..." / "transformer.h.3...."), or -1.
int64_t layer_of(const std::string& name) {
  static const std::regex pattern(R"((?:^|\.)(?:layers|h)\.(\d+)\.)");
  std::smatch match;
  if (!std::regex_search(name, match, pattern)) return -1;
  return std::stoll(match[1].str());
}

int64_t count_elements(const io::StateDict& tensors) {
  int64_t total = 0;
  for (const auto& item : tensors) total += item.value().numel();
  return total;
}

}  // namespace

FinetuneMode finetune_mode_from_name(const std::string& name) {
  if (name == "full") return FinetuneMode::kFull;
  if (name == "lora") return FinetuneMode::kLora;
  if (name == "select") return FinetuneMode::kSelect;
  SG_FAIL("unknown --mode '" << name << "'; hint: use full, lora or select");
}

std::string finetune_mode_name(FinetuneMode mode) {
  switch (mode) {
    case FinetuneMode::kFull: return "full";
    case FinetuneMode::kLora: return "lora";
    case FinetuneMode::kSelect: return "select";
  }
  return "full";
}

std::vector<std::string> select_parameters(const model::CausalLM& model, const std::string& regex,
                                           const std::string& layers) {
  SG_CHECK(!regex.empty() || !layers.empty(),
           "--mode select needs --params REGEX and/or --layers A-B; hint: e.g. --params 'mlp' or --layers 2-3");
  const std::regex pattern = regex.empty() ? std::regex() : util::compile_flag_regex("--params", regex);
  std::pair<int64_t, int64_t> range{-1, -1};
  if (!layers.empty()) range = parse_layer_range(layers, model.config().num_layers);
  std::vector<std::string> selected;
  for (const auto& item : model_state_dict(model)) {
    const std::string& name = item.key();
    if (!regex.empty() && !std::regex_search(name, pattern)) continue;
    if (!layers.empty()) {
      const int64_t layer = layer_of(name);
      if (layer < range.first || layer > range.second) continue;
    }
    selected.push_back(name);
  }
  SG_CHECK(!selected.empty(), "--params '" << regex << "'" << (layers.empty() ? "" : " with --layers " + layers)
                                           << " selects no parameter; hint: names look like "
                                           << model_state_dict(model).begin()->key()
                                           << " (skillgraft inspect --model DIR lists them)");
  return selected;
}

nlohmann::json FinetuneResult::to_json() const {
  return {{"steps", train.steps},
          {"best_score", train.best_score},
          {"best_step", train.best_step},
          {"stop_reason", train.stop_reason},
          {"final_loss", train.final_loss},
          {"tokens", train.tokens},
          {"train_seconds", train.seconds},
          {"tokens_per_second", train.tokens_per_second},
          {"resumed", train.resumed},
          {"trainable_parameters", trainable_parameters},
          {"total_parameters", total_parameters},
          {"trainable_tensors", trainable.size()},
          {"base_fingerprint", base_fingerprint}};
}

FinetuneResult finetune(const FinetuneOptions& options, const data::LoadedTask& task, const ScoreFunction& score) {
  SG_CHECK(!options.out_dir.empty(), "--out is required: the directory for the fine-tuned model");
  SG_CHECK(options.eval_examples >= 0, "--eval-examples must be >= 0, got " << options.eval_examples);
  model::LoadedModel base = model::load_model_dir(options.base_dir);
  SG_CHECK(base.tokenizer != nullptr, options.base_dir << " has no tokenizer; hint: fine-tuning needs one to "
                                                          "encode the task (convert with --tokenizer)");
  model::CausalLM& model = *base.model;
  FinetuneResult result;
  const io::StateDict base_weights = model_state_dict(model);
  result.base_fingerprint = io::state_dict_fingerprint(base_weights);
  result.total_parameters = count_elements(base_weights);
  SG_CHECK(!options.train.resume || has_train_checkpoint(options.out_dir),
           "--resume: " << options.out_dir << " holds no training checkpoint; hint: run without --resume to start");

  for (const auto& item : base_weights) item.value().set_requires_grad(false);
  io::StateDict trainable;
  if (options.mode == FinetuneMode::kFull) {
    trainable = base_weights;
  } else if (options.mode == FinetuneMode::kSelect) {
    for (const std::string& name : select_parameters(model, options.select_params, options.select_layers)) {
      trainable.insert(name, base_weights[name]);
    }
  } else {
    model::attach_lora(model, options.lora);
    trainable = model::lora_state_dict(model);
  }
  for (const auto& item : trainable) {
    item.value().set_requires_grad(true);
    result.trainable.push_back(item.key());
  }
  result.trainable_parameters = count_elements(trainable);

  const std::vector<data::EncodedSequence> examples = data::encode_for_training(*base.tokenizer, task.splits.train);
  const std::vector<data::Example> validation = data::validation_examples(task, options.eval_examples);

  TrainOptions train_options = options.train;
  train_options.run_dir = options.out_dir;
  train_options.identity = {{"base_fingerprint", result.base_fingerprint},
                            {"config", model::config_to_json(model.config())},
                            {"task", task.name},
                            {"train_examples", task.splits.train.size()},
                            {"mode", finetune_mode_name(options.mode)},
                            {"trainable", result.trainable},
                            {"optimizer", optimizer_kind_name(options.train.optimizer.kind)},
                            {"batch_size", options.train.batch_size},
                            {"grad_accum", options.train.grad_accum},
                            {"seed", options.train.seed}};
  util::make_directories(options.out_dir);
  util::log_info("fine-tuning " + finetune_mode_name(options.mode) + " on " + task.name + ": " +
                 std::to_string(result.trainable_parameters) + " of " + std::to_string(result.total_parameters) +
                 " parameters trainable, " + std::to_string(examples.size()) + " examples, " +
                 std::to_string(options.train.steps) + " steps");

  TrainHooks hooks;
  hooks.evaluate = [&]() { return score(model, *base.tokenizer, validation); };
  hooks.save_best = [&](int64_t, double) {
    if (options.mode == FinetuneMode::kLora) {
      model::save_lora_adapter(options.out_dir, model, options.lora, options.base_dir);
    } else {
      model::save_model_dir(options.out_dir, model, base.tokenizer.get());
    }
  };
  result.train = train(model, trainable, examples, train_options, hooks);

  nlohmann::json record = result.to_json();
  record["task"] = task.name;
  record["mode"] = finetune_mode_name(options.mode);
  record["base"] = options.base_dir;
  record["log"] = result.train.log;
  io::write_json_file(util::join_path(options.out_dir, "training.json"), record);
  remove_train_checkpoint(options.out_dir);
  return result;
}

}  // namespace sg::train
