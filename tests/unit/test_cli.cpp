// CLI tests: every verb's --help, and each bad input gives one clear line and a non-zero exit.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <fstream>

#include "io/tokenizer.h"
#include "model/causal_lm.h"
#include "test_env.h"
#include "util/file.h"

namespace {

using sg::test::run_command;
using sg::test::shell_quote;
using sg::test::expect_one_line_error;




// A tiny random Llama with a context of `context` positions, saved with `tokenizer`.
std::string tiny_model_dir(int64_t vocab, int64_t context, const sg::io::Tokenizer& tokenizer) {
  nlohmann::json j = {{"model_type", "llama"}, {"vocab_size", vocab}, {"hidden_size", 16},
                      {"intermediate_size", 24}, {"num_hidden_layers", 1}, {"num_attention_heads", 2},
                      {"max_position_embeddings", context}};
  auto model = sg::model::create_model(sg::model::config_from_json(j, "test"));
  std::string dir = sg::test::temp_dir("sg-cli");
  sg::model::save_model_dir(dir, *model, &tokenizer);
  return dir;
}

TEST(Cli, EveryVerbHasHelp) {
  for (const std::string verb : {"convert", "generate", "inspect", "tasks list", "tasks make"}) {
    auto r = run_command(sg::test::sg_command(verb + " --help"));
    EXPECT_EQ(r.exit_code, 0) << verb;
    EXPECT_NE(r.output.find("usage: skillgraft " + verb), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("--threads"), std::string::npos) << r.output;
  }
  auto r = run_command(sg::test::sg_command("--help"));
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("generate"), std::string::npos);
}

TEST(Cli, UnknownVerbAndFlag) {
  expect_one_line_error("frobnicate", {"unknown verb \"frobnicate\""});
  expect_one_line_error("generate --model x --colour red", {"unknown flag --colour", "--help"});
  expect_one_line_error("generate --model x --max-tokens ten", {"--max-tokens expects an integer"});
  expect_one_line_error("generate --prompt hi", {"missing --model"});
}

TEST(Cli, ConvertThenGenerateGreedy) {
  std::string dir = sg::test::converted_stories260k();
  auto r = run_command(sg::test::sg_command("generate --quiet --model " + shell_quote(dir) +
                              " --prompt 'Once upon a time' --temperature 0 --max-tokens 30"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.rfind("Once upon a time", 0), 0u) << r.output;
  EXPECT_GT(r.output.size(), std::string("Once upon a time").size() + 40) << r.output;
}

TEST(Cli, MissingFile) {
  std::string out = sg::test::temp_dir("sg-cli") + "/o";
  expect_one_line_error("convert --from llama2c /no/such/model.bin --tokenizer " + shell_quote(sg::test::data_model("tok512.bin")) +
                            " --out " + out,
                        {"/no/such/model.bin", "cannot open"});
  expect_one_line_error("generate --model /no/such/dir --prompt hi", {"/no/such/dir", "no such checkpoint directory"});
}

TEST(Cli, TruncatedLlama2cCheckpoint) {
  std::string dir = sg::test::temp_dir("sg-cli");
  std::string whole = sg::util::read_file(sg::test::data_model("stories260K.bin"));
  sg::util::write_file_atomic(dir + "/cut.bin", whole.substr(0, whole.size() / 2));
  expect_one_line_error("convert --from llama2c " + dir + "/cut.bin --tokenizer " + shell_quote(sg::test::data_model("tok512.bin")) +
                            " --out " + dir + "/o",
                        {dir + "/cut.bin", "truncated"});
  EXPECT_FALSE(sg::util::file_exists(dir + "/o/model.safetensors"));  // nothing half-written
}

TEST(Cli, TruncatedSafetensorsInModelDir) {
  std::string src = sg::test::converted_stories260k();
  std::string dir = sg::test::temp_dir("sg-cli");
  std::string weights = sg::util::read_file(src + "/model.safetensors");
  sg::util::write_file_atomic(dir + "/model.safetensors", weights.substr(0, weights.size() - 100));
  sg::util::write_file_atomic(dir + "/config.json", sg::util::read_file(src + "/config.json"));
  expect_one_line_error("generate --model " + dir + " --prompt hi", {dir + "/model.safetensors"});
}

TEST(Cli, UnknownArchitecture) {
  std::string src = sg::test::converted_stories260k();
  std::string dir = sg::test::temp_dir("sg-cli");
  sg::util::write_file_atomic(dir + "/model.safetensors", sg::util::read_file(src + "/model.safetensors"));
  sg::util::write_file_atomic(dir + "/config.json", R"({"model_type": "bert", "vocab_size": 512})");
  expect_one_line_error("generate --model " + dir + " --prompt hi", {dir + "/config.json", "unknown architecture", "bert"});
}

TEST(Cli, TokenizerDoesNotMatchVocabulary) {
  auto bytes = sg::io::make_byte_tokenizer();  // 256 tokens
  std::string dir = tiny_model_dir(/*vocab=*/100, /*context=*/64, *bytes);
  expect_one_line_error("generate --model " + dir + " --prompt hi",
                        {dir + "/skillgraft_tokenizer.json", "256 tokens", "vocabulary has 100"});
}

TEST(Cli, PromptLongerThanContext) {
  auto bytes = sg::io::make_byte_tokenizer();
  std::string dir = tiny_model_dir(/*vocab=*/256, /*context=*/16, *bytes);
  expect_one_line_error("generate --model " + dir + " --prompt 'a prompt of forty characters, more or les'",
                        {"the prompt is 41 tokens", "context is 16 tokens"});
}

TEST(Cli, InspectAndJsonOutput) {
  std::string dir = sg::test::converted_stories260k();
  std::string json_path = sg::test::temp_dir("sg-cli") + "/inspect.json";
  auto r = run_command(sg::test::sg_command("inspect --quiet " + shell_quote(dir) + " --json " + json_path));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("model.layers.4.mlp.down_proj.weight"), std::string::npos);
  auto json = nlohmann::json::parse(sg::util::read_file(json_path));
  EXPECT_EQ(json["parameters"].get<int64_t>(), 260032);  // the llama2.c header's dims: 64*512 + 5*(...) + 64
  auto file = run_command(sg::test::sg_command("inspect " + shell_quote(dir + "/model.safetensors")));
  EXPECT_EQ(file.exit_code, 0);
  EXPECT_NE(file.output.find("metadata format = pt"), std::string::npos) << file.output;
}

}  // namespace
