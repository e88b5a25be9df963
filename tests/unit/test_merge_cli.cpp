// The merge verb: flags and --config give the same model, --json, --help, and bad inputs (a skill of
// another base, a missing model, an unknown method, bad flags) each fail with one clear line.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "io/fingerprint.h"
#include "io/hf_checkpoint.h"
#include "io/safetensors.h"
#include "skills/skill.h"
#include "test_env.h"
#include "util/file.h"

namespace {

using sg::io::StateDict;
using sg::test::expect_one_line_error;
using sg::test::shell_quote;

StateDict random_weights(uint64_t seed, double scale, const StateDict* base = nullptr) {
  torch::manual_seed(seed);
  StateDict out;
  for (const char* name : {"model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight"}) {
    at::Tensor noise = torch::randn({12, 8}) * scale;
    out.insert(name, base ? (*base)[name] + noise : noise);
  }
  return out;
}

struct CliFiles {
  std::string root, base, a, b, skill, other_skill;
  StateDict base_weights;
};

const CliFiles& cli_files() {
  static CliFiles s = [] {
    CliFiles out;
    out.root = sg::test::temp_dir("sg-merge-cli");
    out.base_weights = random_weights(1, 0.1);
    out.base = out.root + "/base";
    sg::io::write_hf_checkpoint(out.base, {{"model_type", "llama"}}, out.base_weights);
    sg::util::write_file_atomic(out.base + "/tokenizer.json", "{}");
    out.a = out.root + "/a";
    sg::io::write_hf_checkpoint(out.a, {{"model_type", "llama"}}, random_weights(2, 0.01, &out.base_weights));
    out.b = out.root + "/b";
    sg::io::write_hf_checkpoint(out.b, {{"model_type", "llama"}}, random_weights(3, 0.01, &out.base_weights));
    StateDict ft = random_weights(4, 0.01, &out.base_weights);
    std::map<std::string, at::Tensor> mask;
    for (const auto& item : out.base_weights) mask[item.key()] = torch::rand(item.value().sizes()) < 0.3;
    out.skill = out.root + "/skill.safetensors";
    sg::skills::save_sparse_skill(out.skill, sg::skills::make_sparse_skill(out.base_weights, ft, mask, "t"));
    StateDict other = random_weights(5, 0.1);
    out.other_skill = out.root + "/other.safetensors";
    sg::skills::save_sparse_skill(out.other_skill,
                                  sg::skills::make_sparse_skill(other, random_weights(6, 0.01, &other), mask, "o"));
    return out;
  }();
  return s;
}

std::string merge_args(const std::string& rest) { return "merge --threads 1 " + rest; }

TEST(MergeCli, FlagsAndConfigGiveTheSameModelAndJson) {
  const CliFiles& s = cli_files();
  const std::string out1 = s.root + "/out-flags", out2 = s.root + "/out-config";
  auto r = sg::test::run_command(sg::test::sg_command(merge_args(
      "--base " + shell_quote(s.base) + " --skills " + shell_quote(s.a + "," + s.b + "," + s.skill) +
      " --method ties --weights 0.5,0.3,1 --densities 0.5,0.7,1 --lambda 0.9 --out " + shell_quote(out1) + " --json " +
      shell_quote(s.root + "/merge.json"))));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("merged 3 inputs by ties into " + out1 + ": 2 tensors (2 changed)"), std::string::npos) << r.output;
  const nlohmann::json json = sg::io::read_json_file(s.root + "/merge.json");
  EXPECT_EQ(json["method"], "ties");
  EXPECT_EQ(json["inputs"].size(), 3u);
  EXPECT_EQ(json["inputs"][2]["kind"], "sparse");
  EXPECT_EQ(json["inputs"][1]["density"], 0.7);
  EXPECT_GT(json["bytes_written"].get<double>(), 0);
  EXPECT_TRUE(sg::util::file_exists(out1 + "/config.json"));
  EXPECT_TRUE(sg::util::file_exists(out1 + "/tokenizer.json"));

  sg::util::write_file_atomic(s.root + "/merge.yaml",
                              "merge_method: ties\nbase_model: base\nmodels:\n"
                              "  - model: a\n    parameters: {weight: 0.5, density: 0.5}\n"
                              "  - model: b\n    parameters: {weight: 0.3, density: 0.7}\n"
                              "  - model: skill.safetensors\n    parameters: {weight: 1}\n"
                              "parameters: {lambda: 0.9}\n");
  r = sg::test::run_command(sg::test::sg_command(
      merge_args("--config " + shell_quote(s.root + "/merge.yaml") + " --out " + shell_quote(out2))));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(sg::util::read_file(out1 + "/model.safetensors"), sg::util::read_file(out2 + "/model.safetensors"));
  EXPECT_TRUE(json["direct_io"].is_boolean());
  // Through the page cache instead of O_DIRECT: the same bytes, and the report says so.
  const std::string out3 = s.root + "/out-buffered";
  r = sg::test::run_command("SG_NO_DIRECT_IO=1 " + sg::test::sg_command(merge_args(
      "--config " + shell_quote(s.root + "/merge.yaml") + " --out " + shell_quote(out3) + " --json " +
      shell_quote(s.root + "/merge3.json"))));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(sg::util::read_file(out1 + "/model.safetensors"), sg::util::read_file(out3 + "/model.safetensors"));
  EXPECT_EQ(sg::io::read_json_file(s.root + "/merge3.json")["direct_io"], false);
  const StateDict m1 = sg::io::load_safetensors_dir(out1), m2 = sg::io::load_safetensors_dir(out2);
  for (const auto& item : m1) EXPECT_TRUE(torch::equal(item.value(), m2[item.key()])) << item.key();
}

TEST(MergeCli, HelpListsTheMethods) {
  auto r = sg::test::run_command(sg::test::sg_command("merge --help"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* needle : {"--config", "--skills", "task_arithmetic", "dare_ties", "sparse_union", "--overlap", "--json"}) {
    EXPECT_NE(r.output.find(needle), std::string::npos) << needle;
  }
}

TEST(MergeCli, BadInputsFailWithOneClearLine) {
  const CliFiles& s = cli_files();
  const std::string out = " --out " + shell_quote(s.root + "/bad-out");
  const std::string base = "--base " + shell_quote(s.base);
  expect_one_line_error(merge_args(base + " --skills " + shell_quote(s.other_skill) + " --method task_arithmetic" + out),
                        {s.other_skill, "made for base fingerprint"}, true);
  expect_one_line_error(merge_args(base + " --skills " + shell_quote(s.root + "/missing") + " --method ties" + out),
                        {s.root + "/missing", "no such file or directory"}, true);
  expect_one_line_error(merge_args(base + " --skills " + shell_quote(s.a) + " --method slerp" + out),
                        {"unknown merge method \"slerp\"", "task_arithmetic"}, true);
  expect_one_line_error(merge_args(base + " --skills " + shell_quote(s.a + "," + s.b) + " --method linear --weights 1" + out),
                        {"--weights has 1 values for 2 inputs"}, true);
  expect_one_line_error(merge_args(base + " --skills " + shell_quote(s.a) + " --method ties --weights x" + out),
                        {"--weights: 'x' is not a number"}, true);
  expect_one_line_error(merge_args(base + " --skills " + shell_quote(s.a) + " --method sparse_union --overlap max" + out),
                        {"unknown overlap rule \"max\""}, true);
  expect_one_line_error(merge_args(base + " --skills " + shell_quote(s.a) + out), {"--method is required"}, true);
  expect_one_line_error(merge_args("--config " + shell_quote(s.root + "/merge.yaml") + " --method ties" + out),
                        {"--method cannot be combined with --config"}, true);
  sg::util::write_file_atomic(s.root + "/unknown.yaml", "merge_method: model_stock\nbase_model: base\nmodels:\n  - model: a\n");
  expect_one_line_error(merge_args("--config " + shell_quote(s.root + "/unknown.yaml") + out),
                        {s.root + "/unknown.yaml:1: merge_method", "unknown merge method \"model_stock\""}, true);
  sg::util::write_file_atomic(s.root + "/missing.yaml", "merge_method: ties\nbase_model: base\nmodels:\n  - model: gone\n");
  expect_one_line_error(merge_args("--config " + shell_quote(s.root + "/missing.yaml") + out),
                        {s.root + "/missing.yaml:4: models[0].model", "does not exist"}, true);
  EXPECT_FALSE(sg::util::file_exists(s.root + "/bad-out/model.safetensors"));
}

}  // namespace
