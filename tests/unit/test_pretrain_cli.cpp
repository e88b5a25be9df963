// skillgraft pretrain from the command line: a tiny model learns a small repetitive corpus (its
// held-out loss falls far below the uniform predictor's ln(V)), the result is a loadable model
// directory, and bad corpora fail with one line.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>

#include "test_env.h"

namespace {

using sg::test::run_command;
using sg::test::sg_command;
using sg::test::shell_quote;

std::string write_corpus(const std::string& dir, int documents) {
  const std::string path = dir + "/corpus.txt";
  std::ofstream out(path);
  const char* names[] = {"Lily", "Tom", "Sam", "Mia"};
  const char* things[] = {"ball", "cat", "tree", "cake"};
  for (int i = 0; i < documents; ++i) {
    out << names[i % 4] << " had a " << things[(i / 4) % 4] << ". " << names[i % 4] << " liked the "
        << things[(i / 4) % 4] << " very much.\n\n";
  }
  return path;
}

TEST(PretrainCli, TinyModelLearnsACorpusAndSavesALoadableModel) {
  const std::string dir = sg::test::temp_dir("sg-pretrain");
  const std::string corpus = write_corpus(dir, 400);
  const std::string out = dir + "/model";
  auto run = run_command(sg_command("pretrain --quiet --threads 1 --corpus " + shell_quote(corpus) + " --out " +
                                    shell_quote(out) + " --config tiny --block 64 --batch-size 8 --steps 120 "
                                    "--eval-every 40 --json " + shell_quote(dir + "/result.json")));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  std::ifstream in(dir + "/result.json");
  const nlohmann::json result = nlohmann::json::parse(in);
  const double uniform_loss = std::log(512.0);  // tok512: a model that knows nothing
  EXPECT_LT(result.at("best_validation_loss").get<double>(), 0.5 * uniform_loss) << result.dump();
  EXPECT_GT(result.at("validation_blocks").get<int64_t>(), 0);

  auto generated = run_command(sg_command("generate --quiet --threads 1 --model " + shell_quote(out) +
                                          " --prompt Lily --temperature 0 --max-tokens 12"));
  ASSERT_EQ(generated.exit_code, 0) << generated.output;
  EXPECT_NE(generated.output.find("had a"), std::string::npos) << generated.output;
}

TEST(PretrainCli, BadCorporaFailWithOneLine) {
  const std::string dir = sg::test::temp_dir("sg-pretrain-bad");
  sg::test::expect_one_line_error("pretrain --corpus " + shell_quote(dir + "/missing.txt") + " --out " +
                                      shell_quote(dir + "/o1"),
                                  {"missing.txt", "does not exist"});
  const std::string small = write_corpus(dir, 1);
  sg::test::expect_one_line_error("pretrain --corpus " + shell_quote(small) + " --out " + shell_quote(dir + "/o2"),
                                  {"less than one block", "hint"});
  sg::test::expect_one_line_error("pretrain --corpus " + shell_quote(small) + " --out " + shell_quote(dir + "/o3") +
                                      " --config nosuch.json",
                                  {"nosuch.json"});
}

}  // namespace
