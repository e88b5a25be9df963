// skillgraft remove on a real (short) stories260K fine-tune: a removal at fraction 1 resets every
// parameter, so the output is the base bit for bit; at 1% the output differs from the model only
// at the budget's positions, each of which holds the base's value; the reported scores are those
// `skillgraft eval` gives the output; bad inputs fail with one line.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>

#include "io/safetensors.h"
#include "test_env.h"

namespace {

using sg::test::read_json;
using sg::test::run_command;
using sg::test::sg_command;
using sg::test::shell_quote;

// stories260K and its short opposite fine-tune (once per process).
const sg::test::OppositeFixture& fixture() {
  static const sg::test::OppositeFixture f = sg::test::opposite_fixture("sg-remove");
  return f;
}

nlohmann::json remove(const std::string& name, const std::string& flags) {
  const sg::test::OppositeFixture& f = fixture();
  const std::string json = f.dir + "/" + name + ".json";
  auto r = run_command(sg_command("remove --quiet --threads 1 --model " + shell_quote(f.finetuned) + " --base " +
                                  shell_quote(f.base) + " --task opposite --keep sentiment --eval-examples 10 --out " +
                                  shell_quote(f.dir + "/" + name) + " --json " + shell_quote(json) + " " + flags));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return read_json(json);
}

TEST(RemoveCli, RemovalAtFractionOneIsTheBase) {
  const nlohmann::json result = remove("all", "--fraction 1 --steps 0");
  EXPECT_EQ(result.at("selected"), result.at("candidates"));
  const auto base = sg::io::load_safetensors_dir(fixture().base);
  const auto out = sg::io::load_safetensors_dir(fixture().dir + "/all");
  ASSERT_EQ(base.size(), out.size());
  for (const auto& item : base) EXPECT_TRUE(item.value().equal(out[item.key()])) << item.key();
}

TEST(RemoveCli, OnlyTheBudgetIsResetToTheBase) {
  const nlohmann::json result = remove("some", "--fraction 0.01 --steps 3 --eval-every 1 --batch-size 8");
  const int64_t candidates = result.at("candidates");
  const int64_t budget = std::llround(0.01 * static_cast<double>(candidates));
  EXPECT_EQ(result.at("selected").get<int64_t>(), budget);
  const auto base = sg::io::load_safetensors_dir(fixture().base);
  const auto model = sg::io::load_safetensors_dir(fixture().finetuned);
  const auto out = sg::io::load_safetensors_dir(fixture().dir + "/some");
  int64_t changed = 0;
  for (const auto& item : model) {
    const at::Tensor& m = item.value();
    const at::Tensor& o = out[item.key()];
    const at::Tensor& b = base[item.key()];
    const at::Tensor differs = m.ne(o);
    changed += differs.sum().item<int64_t>();
    // Wherever the output left the model, it holds the base's value.
    EXPECT_TRUE(o.masked_select(differs).equal(b.masked_select(differs))) << item.key();
  }
  EXPECT_GT(changed, 0);
  EXPECT_LE(changed, budget);
  // The reported scores after the removal are the output model's.
  for (const char* task : {"opposite", "sentiment"}) {
    const std::string json = fixture().dir + "/eval_" + task + ".json";
    auto r = run_command(sg_command("eval --quiet --threads 1 --model " + shell_quote(fixture().dir + "/some") +
                                    " --task " + task + " --json " + shell_quote(json)));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_DOUBLE_EQ(read_json(json).at("score").get<double>(), result.at("after").at(task).get<double>()) << task;
  }
  EXPECT_NEAR(result.at("target_drop").get<double>(),
              result.at("before").at("opposite").get<double>() - result.at("after").at("opposite").get<double>(), 1e-12);
}

TEST(RemoveCli, BadInputsFailWithOneLine) {
  const sg::test::OppositeFixture& f = fixture();
  const std::string models = "remove --model " + shell_quote(f.finetuned) + " --base " + shell_quote(f.base) +
                             " --out " + shell_quote(f.dir + "/bad");
  sg::test::expect_one_line_error(models + " --task opposite --keep sentiment --fraction 0", {"--fraction", "(0, 1]"});
  sg::test::expect_one_line_error(models + " --task opposite --keep opposite", {"--keep", "hint"});
  sg::test::expect_one_line_error(models + " --task opposite --keep ,", {"--keep", "hint"});
  sg::test::expect_one_line_error(models + " --task opposite --keep no_such_task", {"no_such_task"});
  sg::test::expect_one_line_error("remove --model " + shell_quote(f.finetuned) + " --base " +
                                      shell_quote(f.dir + "/nowhere") + " --out " + shell_quote(f.dir + "/bad") +
                                      " --task opposite --keep sentiment",
                                  {"nowhere"});
}

}  // namespace
