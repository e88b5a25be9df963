// skillgraft eval from the command line: help, the summary line and --json fields on stories260K,
// and one clear line for each bad input.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <fstream>

#include "io/tokenizer.h"
#include "model/causal_lm.h"
#include "test_env.h"

namespace {

using sg::test::read_json;
using sg::test::run_command;
using sg::test::shell_quote;
using sg::test::expect_one_line_error;




TEST(EvalCli, Help) {
  auto r = run_command(sg::test::sg_command("eval --help"));
  EXPECT_EQ(r.exit_code, 0);
  for (const char* needle : {"usage: skillgraft eval", "--model", "--adapter", "--task", "--split", "--max-examples",
                             "--batch-size", "--seed", "--show", "--threads", "--json"}) {
    EXPECT_NE(r.output.find(needle), std::string::npos) << needle << " in:\n" << r.output;
  }
  EXPECT_NE(run_command(sg::test::sg_command("--help")).output.find("eval"), std::string::npos);
}

TEST(EvalCli, GenerationTaskSummaryAndJson) {
  const std::string dir = sg::test::converted_stories260k();
  const std::string json = sg::test::temp_dir("sg-eval-cli") + "/add.json";
  auto r = run_command(sg::test::sg_command("eval --quiet --model " + shell_quote(dir) + " --task add --n 40 --show 2 --json " +
                              shell_quote(json)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("task=add split=test metric=exact_match score="), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("n=10 loss="), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("ece=n/a"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\"prompt\":"), std::string::npos) << "--show prints predictions:\n" << r.output;
  nlohmann::json j = read_json(json);
  for (const char* key : {"task", "kind", "split", "metric", "score", "n", "loss", "ece", "seconds", "model", "adapter",
                          "predictions"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["task"], "add");
  EXPECT_EQ(j["kind"], "built");
  EXPECT_EQ(j["split"], "test");
  EXPECT_EQ(j["metric"], "exact_match");
  EXPECT_EQ(j["n"], 10);
  EXPECT_TRUE(j["ece"].is_null());
  EXPECT_TRUE(j["adapter"].is_null());
  EXPECT_GT(j["loss"].get<double>(), 0);
  ASSERT_EQ(j["predictions"].size(), 10u);
  for (const char* key : {"prompt", "expected", "predicted", "correct"}) EXPECT_TRUE(j["predictions"][0].contains(key));
}

TEST(EvalCli, ChoiceTaskHasEce) {
  const std::string dir = sg::test::converted_stories260k();
  const std::string json = sg::test::temp_dir("sg-eval-cli") + "/sentiment.json";
  auto r = run_command(sg::test::sg_command("eval --quiet --model " + shell_quote(dir) +
                              " --task sentiment --n 40 --split validation --max-examples 7 --json " + shell_quote(json)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("task=sentiment split=validation metric=choice_accuracy"), std::string::npos) << r.output;
  nlohmann::json j = read_json(json);
  EXPECT_EQ(j["n"], 7);
  EXPECT_TRUE(j["ece"].is_number());
  EXPECT_GE(j["score"].get<double>(), 0.0);
  EXPECT_LE(j["score"].get<double>(), 1.0);
}

TEST(EvalCli, BadInputsAreOneClearLine) {
  const std::string dir = sg::test::converted_stories260k();
  expect_one_line_error("eval --model " + shell_quote(dir) + " --task nosuchtask", {"nosuchtask"});
  expect_one_line_error("eval --task add", {"missing --model"});
  expect_one_line_error("eval --model " + shell_quote(dir) + " --task add --split dev", {"dev"});
  expect_one_line_error("eval --model " + shell_quote(dir) + " --task add --batch-size 0", {"--batch-size"});

  // A directory with a config but no weights.
  const std::string no_weights = sg::test::temp_dir("sg-eval-cli");
  {
    std::ifstream in(dir + "/config.json");
    std::ofstream out(no_weights + "/config.json");
    out << in.rdbuf();
  }
  expect_one_line_error("eval --model " + shell_quote(no_weights) + " --task add", {no_weights});

  // Weights but no tokenizer.
  nlohmann::json config = {{"model_type", "llama"}, {"vocab_size", 300}, {"hidden_size", 16},
                           {"intermediate_size", 24}, {"num_hidden_layers", 1}, {"num_attention_heads", 2},
                           {"max_position_embeddings", 64}};
  auto model = sg::model::create_model(sg::model::config_from_json(config, "test"));
  const std::string no_tokenizer = sg::test::temp_dir("sg-eval-cli");
  sg::model::save_model_dir(no_tokenizer, *model, nullptr);
  expect_one_line_error("eval --model " + shell_quote(no_tokenizer) + " --task add", {"has no tokenizer"});

  expect_one_line_error("eval --model " + shell_quote(dir) + " --task add --adapter /nonexistent/adapter",
                        {"/nonexistent/adapter"});
}

}  // namespace
