// The evaluator on the real stories260K model: batched greedy decoding (prompts grouped by
// length, one KV cache per batch) gives exactly what model::generate gives one prompt at a time,
// cut by the stop rule; the model's train/eval mode survives a call; bad inputs throw.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>

#include "data/task_file.h"
#include "eval/evaluator.h"
#include "io/llama2c.h"
#include "io/tokenizer.h"
#include "model/causal_lm.h"
#include "model/generate.h"
#include "test_env.h"
#include "util/error.h"

namespace {

struct Stories {
  std::shared_ptr<sg::model::CausalLM> model;
  std::unique_ptr<sg::io::Tokenizer> tokenizer;
};

Stories& stories() {
  static Stories s = [] {
    const std::string models = sg::test::source_dir() + "/data/models/";
    sg::io::Llama2cModel source = sg::io::read_llama2c(models + "stories260K.bin");
    auto config = sg::model::config_from_json(source.config, "stories260K.bin");
    Stories result;
    result.model = sg::model::create_model_from_weights(config, source.weights, "stories260K.bin");
    result.tokenizer = sg::io::load_llama2c_tokenizer(models + "tok512.bin", source.header.vocab_size);
    return result;
  }();
  return s;
}

sg::data::Example generation_example(const std::string& prompt, const std::string& completion) {
  sg::data::Example e;
  e.prompt = prompt;
  e.completion = completion;
  return e;
}

// The text up to and including the first '.' or '\n' (all of it when there is neither).
std::string cut_at_stop(const std::string& text) {
  const size_t stop = text.find_first_of(".\n");
  return stop == std::string::npos ? text : text.substr(0, stop + 1);
}

TEST(Evaluator, BatchedGreedyEqualsGenerateOneAtATime) {
  Stories& s = stories();
  // Several prompts share a token length (one batch each), others stand alone.
  const std::vector<std::string> prompts = {
      "Once upon a time", "Once upon a day", "Lily went to the park", "Tom saw a big dog",
      "The cat", "The dog", "The sun", "One day, a little girl named Lily", "He was sad", "She was happy"};
  const int64_t max_new_tokens = 40;
  std::vector<sg::data::Example> examples;
  for (const auto& p : prompts) examples.push_back(generation_example(p, " it was fun."));
  int64_t distinct_lengths = 0;
  {
    std::set<size_t> lengths;
    for (const auto& p : prompts) lengths.insert(sg::io::prompt_tokens(*s.tokenizer, p).size());
    distinct_lengths = static_cast<int64_t>(lengths.size());
  }
  ASSERT_LT(distinct_lengths, static_cast<int64_t>(prompts.size())) << "no two prompts share a length";

  sg::model::SamplingOptions greedy;
  greedy.temperature = 0;
  greedy.max_tokens = max_new_tokens;
  for (int64_t batch_size : {64, 2, 1}) {
    sg::eval::EvalOptions options;
    options.batch_size = batch_size;
    options.max_new_tokens = max_new_tokens;
    auto result = sg::eval::evaluate(*s.model, *s.tokenizer, examples, options);
    ASSERT_EQ(result.predictions.size(), prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) {
      auto one = sg::model::generate(*s.model, *s.tokenizer, prompts[i], greedy);
      EXPECT_EQ(result.predictions[i].predicted, cut_at_stop(one.text))
          << "batch size " << batch_size << ", prompt \"" << prompts[i] << "\"";
      EXPECT_EQ(result.predictions[i].prompt, prompts[i]);
    }
  }
}

TEST(Evaluator, ExpectedCompletionTheModelGivesIsCorrect) {
  Stories& s = stories();
  sg::model::SamplingOptions greedy;
  greedy.temperature = 0;
  greedy.max_tokens = 40;
  const std::string answer = cut_at_stop(sg::model::generate(*s.model, *s.tokenizer, "Once upon a time", greedy).text);
  ASSERT_EQ(answer.back(), '.') << answer;
  auto result = sg::eval::evaluate(*s.model, *s.tokenizer,
                                   {generation_example("Once upon a time", answer),
                                    generation_example("Once upon a time", answer + " The end.")},
                                   {});
  EXPECT_TRUE(result.predictions[0].correct);
  EXPECT_FALSE(result.predictions[1].correct);
  EXPECT_DOUBLE_EQ(result.score, 0.5);
  EXPECT_GT(result.loss, 0);
}

TEST(Evaluator, RestoresTrainOrEvalMode) {
  Stories& s = stories();
  const std::vector<sg::data::Example> examples = {generation_example("The cat", " sat.")};
  s.model->train();
  sg::eval::evaluate(*s.model, *s.tokenizer, examples, {});
  EXPECT_TRUE(s.model->is_training());
  s.model->eval();
  sg::eval::evaluate(*s.model, *s.tokenizer, examples, {});
  EXPECT_FALSE(s.model->is_training());
  // Also when the call throws.
  s.model->train();
  sg::data::Example too_long = generation_example(std::string(5000, 'a'), " b.");
  EXPECT_THROW(sg::eval::evaluate(*s.model, *s.tokenizer, {too_long}, {}), sg::Error);
  EXPECT_TRUE(s.model->is_training());
}

TEST(Evaluator, MaxExamplesAndChoiceFields) {
  Stories& s = stories();
  sg::data::Example choice;
  choice.prompt = "Lily got a new puppy. She was";
  choice.choices = {" happy.", " sad.", " a."};
  choice.label = 0;
  std::vector<sg::data::Example> examples(5, choice);
  sg::eval::EvalOptions options;
  options.max_examples = 3;
  auto result = sg::eval::evaluate(*s.model, *s.tokenizer, examples, options);
  EXPECT_EQ(result.n, 3);
  EXPECT_EQ(result.predictions.size(), 3u);
  EXPECT_EQ(result.metric, "choice_accuracy");
  EXPECT_FALSE(std::isnan(result.ece));
  for (const auto& p : result.predictions) {
    EXPECT_GE(p.confidence, 1.0 / 3.0);
    EXPECT_LE(p.confidence, 1.0);
    EXPECT_EQ(p.expected, " happy.");
  }
}

TEST(Evaluator, BadInputsThrow) {
  Stories& s = stories();
  sg::data::Example choice;
  choice.prompt = "x";
  choice.choices = {" a.", " b."};
  choice.label = 1;
  const sg::data::Example generation = generation_example("x", " y.");
  EXPECT_THROW(sg::eval::evaluate(*s.model, *s.tokenizer, {}, {}), sg::Error);
  EXPECT_THROW(sg::eval::evaluate(*s.model, *s.tokenizer, {choice, generation}, {}), sg::Error);
  sg::eval::EvalOptions bad;
  bad.batch_size = 0;
  EXPECT_THROW(sg::eval::evaluate(*s.model, *s.tokenizer, {generation}, bad), sg::Error);
  EXPECT_THROW(sg::eval::evaluate(*s.model, *s.tokenizer, {generation_example("x", "")}, {}), sg::Error);
}

}  // namespace
