// Reference check of the evaluator: on a tiny random Llama over bytes, choice scores, predictions,
// confidences, accuracy, ECE, loss and greedy continuations must match an independent float64
// PyTorch computation (tests/reference/eval_ref.py), at every batch size.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>

#include "data/task_file.h"
#include "eval/evaluator.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "model/causal_lm.h"
#include "test_env.h"

namespace {

constexpr double kTolerance = 1e-4;

struct Reference {
  sg::model::LoadedModel loaded;
  std::unique_ptr<sg::io::Tokenizer> tokenizer = sg::io::make_byte_tokenizer();
  std::vector<sg::data::Example> generation, choice;
  sg::io::StateDict expected;
};

std::string bytes(const nlohmann::json& list) {
  std::string s;
  for (const auto& b : list) s.push_back(static_cast<char>(b.get<int>()));
  return s;
}

Reference& reference() {
  static Reference r = [] {
    const std::string dir = sg::test::refdata_dir() + "/eval";
    Reference ref;
    ref.loaded = sg::model::load_model_dir(dir + "/model");
    std::ifstream in(dir + "/examples.json");
    nlohmann::json j = nlohmann::json::parse(in);
    for (const auto& e : j["generation"]) {
      sg::data::Example example;
      example.prompt = bytes(e["prompt"]);
      example.completion = bytes(e["completion"]);
      ref.generation.push_back(example);
    }
    for (const auto& e : j["choice"]) {
      sg::data::Example example;
      example.prompt = bytes(e["prompt"]);
      for (const auto& c : e["choices"]) example.choices.push_back(bytes(c));
      example.label = e["label"].get<int64_t>();
      ref.choice.push_back(example);
    }
    ref.expected = sg::io::load_safetensors(dir + "/expected.safetensors");
    return ref;
  }();
  return r;
}

double scalar(const Reference& r, const std::string& name) { return r.expected[name].item<double>(); }

TEST(EvalReference, ChoiceScoresMatch) {
  Reference& r = reference();
  torch::Tensor scores = r.expected["choice_scores"];
  // Each choice alone as a generation example: its loss is -score / its token count.
  double largest = 0;
  for (size_t i = 0; i < r.choice.size(); ++i) {
    for (size_t c = 0; c < r.choice[i].choices.size(); ++c) {
      sg::data::Example single;
      single.prompt = r.choice[i].prompt;
      single.completion = r.choice[i].choices[c];
      auto result = sg::eval::evaluate(*r.loaded.model, *r.tokenizer, {single}, {});
      const double score = -result.loss * static_cast<double>(single.completion.size());
      const double want = scores[static_cast<int64_t>(i)][static_cast<int64_t>(c)].item<double>();
      largest = std::max(largest, std::abs(score - want));
      EXPECT_NEAR(score, want, kTolerance) << "example " << i << " choice " << c;
    }
  }
  std::printf("largest |choice score difference| %.3e\n", largest);
}

TEST(EvalReference, ChoicePredictionsAccuracyLossAndEce) {
  Reference& r = reference();
  torch::Tensor pred = r.expected["choice_pred"];
  torch::Tensor confidence = r.expected["choice_confidence"];
  for (int64_t batch_size : {64, 3, 1}) {
    sg::eval::EvalOptions options;
    options.batch_size = batch_size;
    auto result = sg::eval::evaluate(*r.loaded.model, *r.tokenizer, r.choice, options);
    SCOPED_TRACE("batch size " + std::to_string(batch_size));
    EXPECT_EQ(result.metric, "choice_accuracy");
    ASSERT_EQ(result.n, static_cast<int64_t>(r.choice.size()));
    for (size_t i = 0; i < r.choice.size(); ++i) {
      const auto& p = result.predictions[i];
      const int64_t want = pred[static_cast<int64_t>(i)].item<int64_t>();
      EXPECT_EQ(p.predicted, r.choice[i].choices[static_cast<size_t>(want)]) << "example " << i;
      EXPECT_EQ(p.expected, r.choice[i].choices[static_cast<size_t>(r.choice[i].label)]);
      EXPECT_EQ(p.correct, want == r.choice[i].label);
      EXPECT_NEAR(p.confidence, confidence[static_cast<int64_t>(i)].item<double>(), kTolerance);
    }
    EXPECT_DOUBLE_EQ(result.score, scalar(r, "choice_accuracy"));
    EXPECT_NEAR(result.loss, scalar(r, "choice_loss"), kTolerance);
    EXPECT_NEAR(result.ece, scalar(r, "choice_ece"), kTolerance);
  }
}

TEST(EvalReference, GreedyContinuationsAccuracyAndLoss) {
  Reference& r = reference();
  torch::Tensor tokens = r.expected["greedy_tokens"];
  torch::Tensor correct = r.expected["gen_correct"];
  for (int64_t batch_size : {64, 2, 1}) {
    sg::eval::EvalOptions options;
    options.batch_size = batch_size;
    auto result = sg::eval::evaluate(*r.loaded.model, *r.tokenizer, r.generation, options);
    SCOPED_TRACE("batch size " + std::to_string(batch_size));
    EXPECT_EQ(result.metric, "exact_match");
    EXPECT_TRUE(std::isnan(result.ece));
    ASSERT_EQ(result.n, static_cast<int64_t>(r.generation.size()));
    for (size_t i = 0; i < r.generation.size(); ++i) {
      std::string want;
      for (int64_t t = 0; t < tokens.size(1); ++t) {
        const int64_t id = tokens[static_cast<int64_t>(i)][t].item<int64_t>();
        if (id >= 0) want.push_back(static_cast<char>(id));
      }
      EXPECT_EQ(result.predictions[i].predicted, want) << "example " << i;
      EXPECT_EQ(result.predictions[i].correct, correct[static_cast<int64_t>(i)].item<int64_t>() == 1);
      EXPECT_TRUE(std::isnan(result.predictions[i].confidence));
    }
    EXPECT_DOUBLE_EQ(result.score, scalar(r, "gen_accuracy"));
    EXPECT_NEAR(result.loss, scalar(r, "gen_loss"), kTolerance);
  }
}

}  // namespace
