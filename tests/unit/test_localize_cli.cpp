// skillgraft localize identities on a real (short) stories260K fine-tune: a graft at fraction 1 is
// the fine-tuned model (same test score and loss); the learned mask with zero optimisation steps is
// the movement mask; every method selects exactly the budget; mismatched models and bad fractions
// fail with one line.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fstream>

#include "io/safetensors.h"
#include "test_env.h"

namespace {

using sg::test::read_json;
using sg::test::run_command;
using sg::test::sg_command;
using sg::test::shell_quote;

// stories260K and its short opposite fine-tune (once per process).
const sg::test::OppositeFixture& fixture() {
  static const sg::test::OppositeFixture f = sg::test::opposite_fixture("sg-localize");
  return f;
}

nlohmann::json localize(const std::string& name, const std::string& flags) {
  const sg::test::OppositeFixture& f = fixture();
  const std::string json = f.dir + "/" + name + ".json";
  auto r = run_command(sg_command("localize --quiet --threads 1 --base " + shell_quote(f.base) + " --finetuned " +
                                  shell_quote(f.finetuned) + " --task opposite --eval-examples 20 --out " +
                                  shell_quote(f.dir + "/" + name + ".safetensors") + " --json " + shell_quote(json) +
                                  " " + flags));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return read_json(json).at("runs").at(0);
}

TEST(LocalizeCli, GraftAtFractionOneIsTheFinetunedModel) {
  for (const char* method : {"movement", "random"}) {
    nlohmann::json run = localize(std::string("full_") + method, std::string("--fraction 1 --method ") + method);
    EXPECT_EQ(run.at("selected"), run.at("candidates"));
    EXPECT_DOUBLE_EQ(run.at("graft").get<double>(), run.at("finetuned").get<double>());
    EXPECT_NEAR(run.at("loss_graft").get<double>(), run.at("loss_finetuned").get<double>(), 1e-6);
  }
}

TEST(LocalizeCli, LearnedMaskWithZeroStepsIsTheMovementMask) {
  nlohmann::json movement = localize("movement", "--fraction 0.01 --method movement");
  nlohmann::json graft = localize("graft0", "--fraction 0.01 --method graft --steps 0");
  EXPECT_DOUBLE_EQ(graft.at("graft").get<double>(), movement.at("graft").get<double>());
  EXPECT_DOUBLE_EQ(graft.at("loss_graft").get<double>(), movement.at("loss_graft").get<double>());
  const auto a = sg::io::load_safetensors(fixture().dir + "/movement.safetensors");
  const auto b = sg::io::load_safetensors(fixture().dir + "/graft0.safetensors");
  ASSERT_EQ(a.size(), b.size());
  for (const auto& item : a) {
    if (item.key().size() > 4 && item.key().substr(item.key().size() - 4) == ".idx") {
      EXPECT_TRUE(item.value().equal(b[item.key()])) << item.key();
    }
  }
}

TEST(LocalizeCli, EveryMethodSelectsExactlyTheBudget) {
  for (const char* method : {"movement", "random", "saliency", "graft", "graft-sigmoid"}) {
    nlohmann::json run = localize(std::string("budget_") + method,
                                  std::string("--fraction 0.005 --steps 3 --eval-every 1 --batch-size 16 --method ") + method);
    const int64_t candidates = run.at("candidates");
    EXPECT_EQ(run.at("selected").get<int64_t>(), std::llround(0.005 * static_cast<double>(candidates))) << method;
  }
}

TEST(LocalizeCli, BadInputsFailWithOneLine) {
  const sg::test::OppositeFixture& f = fixture();
  const std::string common = " --task opposite --out " + shell_quote(f.dir + "/bad.safetensors");
  sg::test::expect_one_line_error("localize --base " + shell_quote(f.base) + " --finetuned " + shell_quote(f.finetuned) +
                                      common + " --fraction 0",
                                  {"--fraction", "(0, 1]"});
  sg::test::expect_one_line_error("localize --base " + shell_quote(f.base) + " --finetuned " + shell_quote(f.finetuned) +
                                      common + " --fraction 1.5",
                                  {"--fraction"});
  // A model of another shape: a tiny pretrained model with the byte tokenizer is not stories260K's fine-tune.
  const std::string corpus = f.dir + "/corpus.txt";
  std::ofstream(corpus) << std::string(4000, 'a');
  auto r = run_command(sg_command("pretrain --quiet --threads 1 --tokenizer byte --corpus " + shell_quote(corpus) +
                                  " --steps 1 --block 16 --out " + shell_quote(f.dir + "/other")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  sg::test::expect_one_line_error("localize --base " + shell_quote(f.base) + " --finetuned " +
                                      shell_quote(f.dir + "/other") + common,
                                  {"hint", "architecture"});
}

}  // namespace
