// merge --method stitch on short stories260K fine-tunes: one input at fraction 1 is that input; zero
// steps give base + the sum of each input's movement mask (top-k of |delta|, recomputed here with
// torch::topk); the written model is the one validation scored (eval reproduces the reported
// score); every mask holds exactly its budget; bad inputs fail with one line.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <fstream>

#include "io/safetensors.h"
#include "test_env.h"

namespace {

using sg::test::read_json;
using sg::io::StateDict;
using sg::test::expect_one_line_error;
using sg::test::run_command;
using sg::test::sg_command;
using sg::test::shell_quote;

struct Fixture {
  std::string dir, base, opposite, country;
};

// stories260K fine-tuned for a few steps on opposite and on country_code (once per process).
const Fixture& fixture() {
  static Fixture f;
  if (f.dir.empty()) {
    f.dir = sg::test::temp_dir("sg-stitch");
    f.base = sg::test::converted_stories260k();
    f.opposite = f.dir + "/opposite";
    f.country = f.dir + "/country";
    for (const auto& [task, out] : {std::make_pair("opposite", f.opposite), std::make_pair("country_code", f.country)}) {
      auto r = run_command(sg_command("finetune --quiet --threads 1 --base " + shell_quote(f.base) + " --task " + task +
                                      " --steps 30 --eval-every 0 --out " + shell_quote(out)));
      EXPECT_EQ(r.exit_code, 0) << r.output;
    }
  }
  return f;
}

StateDict weights_of(const std::string& dir) { return sg::io::load_safetensors(dir + "/model.safetensors"); }

// Runs the stitch and returns its --json.
nlohmann::json stitch(const std::string& name, const std::string& skills, const std::string& tasks,
                      const std::string& flags) {
  const Fixture& f = fixture();
  const std::string json = f.dir + "/" + name + ".json";
  auto r = run_command(sg_command("merge --quiet --threads 1 --method stitch --base " + shell_quote(f.base) +
                                  " --skills " + skills + " --tasks " + tasks + " --out " +
                                  shell_quote(f.dir + "/" + name) + " --json " + shell_quote(json) + " " + flags));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return read_json(json);
}

// base + the top-k |delta| entries of each input (k = round(fraction * N) over all tensors), in float64.
StateDict movement_sum(const StateDict& base, const std::vector<StateDict>& inputs, double fraction) {
  int64_t total = 0;
  for (const auto& item : base) total += item.value().numel();
  const int64_t k = std::llround(fraction * static_cast<double>(total));
  StateDict out;
  for (const auto& item : base) out.insert(item.key(), item.value().to(torch::kDouble).clone());
  for (const StateDict& input : inputs) {
    std::vector<at::Tensor> deltas;
    for (const auto& item : base) deltas.push_back((input[item.key()] - item.value()).reshape({-1}));
    const at::Tensor flat = torch::cat(deltas);
    const at::Tensor top = std::get<1>(flat.abs().topk(k));
    at::Tensor kept = torch::zeros_like(flat);
    kept.index_copy_(0, top, flat.index_select(0, top));
    int64_t offset = 0;
    for (const auto& item : base) {
      const int64_t n = item.value().numel();
      out[item.key()].add_(kept.narrow(0, offset, n).reshape(item.value().sizes()).to(torch::kDouble));
      offset += n;
    }
  }
  for (const auto& item : base) out[item.key()] = out[item.key()].to(torch::kFloat);
  return out;
}

void expect_equal_weights(const StateDict& actual, const StateDict& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (const auto& item : expected) {
    ASSERT_TRUE(actual.contains(item.key())) << item.key();
    EXPECT_TRUE(actual[item.key()].equal(item.value()))
        << item.key() << ": max diff " << (actual[item.key()] - item.value()).abs().max().item<double>();
  }
}

TEST(StitchCli, OneInputAtFractionOneIsThatInput) {
  const Fixture& f = fixture();
  nlohmann::json out = stitch("whole", shell_quote(f.opposite), "opposite", "--fraction 1 --steps 0 --eval-examples 10");
  EXPECT_EQ(out.at("budget"), out.at("candidates"));
  EXPECT_DOUBLE_EQ(out.at("tasks").at(0).at("stitched").get<double>(), out.at("tasks").at(0).at("alone").get<double>());
  const StateDict base = weights_of(f.base);
  expect_equal_weights(weights_of(f.dir + "/whole"), movement_sum(base, {weights_of(f.opposite)}, 1.0));
}

TEST(StitchCli, ZeroStepsIsTheSumOfTheMovementMasks) {
  const Fixture& f = fixture();
  nlohmann::json out = stitch("zero", shell_quote(f.opposite) + "," + shell_quote(f.country), "opposite,country_code",
                              "--fraction 0.02 --steps 0 --eval-examples 10");
  const int64_t candidates = out.at("candidates");
  EXPECT_EQ(out.at("budget").get<int64_t>(), std::llround(0.02 * static_cast<double>(candidates)));
  expect_equal_weights(weights_of(f.dir + "/zero"),
                       movement_sum(weights_of(f.base), {weights_of(f.opposite), weights_of(f.country)}, 0.02));
}

TEST(StitchCli, TheWrittenModelIsTheOneValidationScored) {
  const Fixture& f = fixture();
  nlohmann::json out = stitch("learned", shell_quote(f.opposite) + "," + shell_quote(f.country),
                              "opposite,country_code", "--fraction 0.02 --steps 4 --eval-every 2 --batch-size 8 --eval-examples 0");
  EXPECT_LE(out.at("best_step").get<int64_t>(), 4);
  for (const nlohmann::json& task : out.at("tasks")) {
    const std::string json = f.dir + "/eval_" + task.at("task").get<std::string>() + ".json";
    auto r = run_command(sg_command("eval --quiet --threads 1 --model " + shell_quote(f.dir + "/learned") + " --task " +
                                    task.at("task").get<std::string>() + " --split validation --json " + shell_quote(json)));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_DOUBLE_EQ(read_json(json).at("score").get<double>(), task.at("stitched").get<double>()) << task.dump();
  }
}

TEST(StitchCli, BadInputsFailWithOneLine) {
  const Fixture& f = fixture();
  const std::string base = "merge --method stitch --base " + shell_quote(f.base) + " --out " + shell_quote(f.dir + "/bad");
  const std::string two = " --skills " + shell_quote(f.opposite) + "," + shell_quote(f.country);
  expect_one_line_error(base + two, {"--tasks"});
  expect_one_line_error(base + two + " --tasks opposite", {"--tasks", "2 inputs"});
  expect_one_line_error(base + two + " --tasks opposite,country_code --fraction 0", {"--fraction", "(0, 1]"});
  expect_one_line_error(base + two + " --tasks opposite,country_code --density 0.5", {"--density", "stitch"});
  expect_one_line_error(base + two + " --tasks opposite,country_code --momentum 1", {"--momentum", "[0, 1)"});
  expect_one_line_error(base + two + " --tasks opposite,country_code --weights 1,2", {"--weights", "stitch"});
  expect_one_line_error(base + two + " --tasks opposite,no_such_task", {"no_such_task"});
  expect_one_line_error("merge --method ties --base " + shell_quote(f.base) + two + " --tasks opposite,country_code --out " +
                            shell_quote(f.dir + "/bad"),
                        {"--tasks", "stitch"});
}

}  // namespace
