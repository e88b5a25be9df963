#include "cli/removal_runs.h"

#include <torch/torch.h>

#include <algorithm>

#include "data/batching.h"
#include "eval/evaluator.h"
#include "util/error.h"

namespace sg::cli {

skills::LocalizeResult learn_task_removal(const model::LoadedModel& base, const model::LoadedModel& model,
                                          model::CausalLM& work, const data::LoadedTask& forget,
                                          const std::vector<data::LoadedTask>& keep,
                                          const skills::RemovalOptions& options, int64_t eval_examples) {
  SG_CHECK(model.tokenizer != nullptr, "the model has no tokenizer; hint: removal evaluates the tasks with it");
  SG_CHECK(!keep.empty(), "no task to keep; hint: name the other skills the model holds (--keep)");
  const io::Tokenizer& tokenizer = *model.tokenizer;
  const std::vector<data::EncodedSequence> forget_examples = data::encode_for_training(tokenizer, forget.splits.train);
  size_t largest = 0;
  for (const data::LoadedTask& task : keep) largest = std::max(largest, task.splits.train.size());
  const size_t count = std::min<size_t>(2000, largest);
  std::vector<data::EncodedSequence> keep_examples;
  std::vector<std::vector<data::Example>> keep_validation;
  for (const data::LoadedTask& task : keep) {
    SG_CHECK(!task.splits.train.empty(), "task " << task.name << " has no training examples; hint: keep tasks need a train split");
    const std::vector<data::EncodedSequence> encoded = data::encode_for_training(tokenizer, task.splits.train);
    for (size_t i = 0; i < count; ++i) keep_examples.push_back(encoded[i % encoded.size()]);
    keep_validation.push_back(data::validation_examples(task, eval_examples));
  }
  const std::vector<data::Example> forget_validation = data::validation_examples(forget, eval_examples);
  const eval::EvalOptions eval_options;
  const skills::GraftScore score = [&](model::CausalLM& candidate) {
    double kept = 0;
    for (const std::vector<data::Example>& examples : keep_validation) {
      kept += eval::evaluate(candidate, tokenizer, examples, eval_options).score;
    }
    kept /= static_cast<double>(keep_validation.size());
    return kept - eval::evaluate(candidate, tokenizer, forget_validation, eval_options).score;
  };
  return skills::learn_removal(work, *base.model, *model.model, forget_examples, keep_examples, options, score);
}

nlohmann::json test_scores(model::CausalLM& model, const io::Tokenizer& tokenizer,
                           const std::vector<data::LoadedTask>& tasks) {
  nlohmann::json scores = nlohmann::json::object();
  for (const data::LoadedTask& task : tasks) {
    scores[task.name] = eval::evaluate(model, tokenizer, task.splits.test, eval::EvalOptions()).score;
  }
  return scores;
}

nlohmann::json removal_row(const nlohmann::json& before, const nlohmann::json& after, const std::string& removed) {
  double others = 0;
  int64_t count = 0;
  for (const auto& item : before.items()) {
    if (item.key() == removed) continue;
    others += item.value().get<double>() - after.at(item.key()).get<double>();
    ++count;
  }
  return {{"removed", removed},
          {"scores", after},
          {"target_drop", before.at(removed).get<double>() - after.at(removed).get<double>()},
          {"others_mean_drop", count > 0 ? others / static_cast<double>(count) : 0.0}};
}

}  // namespace sg::cli
