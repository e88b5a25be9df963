// skillgraft neurons on the converted stories260K: the JSON has the documented shape and agrees
// with itself (counts with the index lists, the IoU matrices with the sets they come from, the
// drops with the scores), a larger coverage gives supersets, --reference is used, and bad inputs
// fail with one line.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <set>

#include "test_env.h"

namespace {

using sg::test::read_json;
using sg::test::run_command;
using sg::test::sg_command;
using sg::test::shell_quote;

const std::vector<std::string> kTasks = {"add", "opposite"};

const std::string& work_dir() {
  static const std::string dir = sg::test::temp_dir("sg-neurons");
  return dir;
}

nlohmann::json neurons(const std::string& name, const std::string& flags) {
  const std::string json = work_dir() + "/" + name + ".json";
  auto r = run_command(sg_command("neurons --quiet --threads 1 --model " + shell_quote(sg::test::converted_stories260k()) +
                                  " --tasks add,opposite --examples 6 --json " + shell_quote(json) + " " + flags));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  // One printed line per task.
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 2) << r.output;
  EXPECT_NE(r.output.find("add: neurons per layer"), std::string::npos) << r.output;
  return read_json(json);
}

// |a ∩ b| / |a ∪ b|, 1 for two empty sets, computed here from the JSON's lists.
double set_iou(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  std::set<int64_t> sa(a.begin(), a.end()), sb(b.begin(), b.end()), all = sa;
  all.insert(b.begin(), b.end());
  if (all.empty()) return 1.0;
  int64_t common = 0;
  for (int64_t n : sa) common += sb.count(n);
  return static_cast<double>(common) / static_cast<double>(all.size());
}

const nlohmann::json& default_run() {
  static const nlohmann::json j = neurons("default", "");
  return j;
}

TEST(NeuronsCli, JsonHasTheDocumentedShape) {
  const nlohmann::json& j = default_run();
  // stories260K: 5 layers, FFN width 172 (its config.json).
  EXPECT_EQ(j.at("model"), sg::test::converted_stories260k());
  EXPECT_DOUBLE_EQ(j.at("coverage").get<double>(), 0.5);
  EXPECT_EQ(j.at("layers"), 5);
  EXPECT_EQ(j.at("intermediate_size"), 172);
  EXPECT_EQ(j.at("reference"), "generations");
  EXPECT_EQ(j.at("tasks"), nlohmann::json(kTasks));
  const size_t T = kTasks.size(), L = 5;
  for (const std::string& task : kTasks) {
    const nlohmann::json& p = j.at("per_task").at(task);
    ASSERT_EQ(p.at("per_layer").size(), L);
    ASSERT_EQ(p.at("neurons").size(), L);
    int64_t total = 0;
    for (size_t l = 0; l < L; ++l) {
      const std::vector<int64_t> ids = p.at("neurons")[l];
      EXPECT_EQ(p.at("per_layer")[l].get<int64_t>(), static_cast<int64_t>(ids.size()));
      EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
      EXPECT_EQ(std::set<int64_t>(ids.begin(), ids.end()).size(), ids.size());
      for (int64_t n : ids) EXPECT_TRUE(n >= 0 && n < 172) << n;
      total += static_cast<int64_t>(ids.size());
    }
    EXPECT_EQ(p.at("total").get<int64_t>(), total);
    EXPECT_GT(total, 0) << task;
    // A set holding half of a layer's standout mass is a strict part of the layer.
    EXPECT_LT(total, static_cast<int64_t>(L) * 172) << task;
    const double score = p.at("score");
    EXPECT_TRUE(score >= 0 && score <= 1);
    EXPECT_DOUBLE_EQ(p.at("target_drop").get<double>(), score - p.at("ablated_scores").at(task).get<double>());
    double others = 0;
    for (const std::string& other : kTasks) {
      ASSERT_TRUE(p.at("ablated_scores").contains(other));
      if (other == task) continue;
      others += j.at("per_task").at(other).at("score").get<double>() - p.at("ablated_scores").at(other).get<double>();
    }
    EXPECT_NEAR(p.at("others_mean_drop").get<double>(), others / static_cast<double>(T - 1), 1e-12);
    EXPECT_TRUE(p.at("random_control_drop").is_number());
    // The loss always moves when neurons carrying the answer are zeroed.
    EXPECT_GT(p.at("target_loss_increase").get<double>(), 0) << task;
  }
  // IoU: per layer a T x T matrix, recomputed here from the sets.
  ASSERT_EQ(j.at("iou").size(), L);
  std::vector<std::vector<double>> mean(T, std::vector<double>(T, 0.0));
  for (size_t l = 0; l < L; ++l) {
    ASSERT_EQ(j.at("iou")[l].size(), T);
    for (size_t a = 0; a < T; ++a) {
      ASSERT_EQ(j.at("iou")[l][a].size(), T);
      for (size_t b = 0; b < T; ++b) {
        const double expected = set_iou(j.at("per_task").at(kTasks[a]).at("neurons")[l],
                                        j.at("per_task").at(kTasks[b]).at("neurons")[l]);
        EXPECT_NEAR(j.at("iou")[l][a][b].get<double>(), expected, 1e-12) << l << " " << a << " " << b;
        mean[a][b] += expected / static_cast<double>(L);
      }
      EXPECT_DOUBLE_EQ(j.at("iou")[l][a][a].get<double>(), 1.0);
    }
  }
  for (size_t a = 0; a < T; ++a) {
    for (size_t b = 0; b < T; ++b) EXPECT_NEAR(j.at("iou_mean")[a][b].get<double>(), mean[a][b], 1e-12);
  }
}

TEST(NeuronsCli, LargerCoverageGivesSupersets) {
  const nlohmann::json& half = default_run();
  const nlohmann::json all = neurons("full", "--coverage 1");
  EXPECT_DOUBLE_EQ(all.at("coverage").get<double>(), 1.0);
  for (const std::string& task : kTasks) {
    EXPECT_GT(all.at("per_task").at(task).at("total").get<int64_t>(), half.at("per_task").at(task).at("total").get<int64_t>());
    for (size_t l = 0; l < 5; ++l) {
      const std::vector<int64_t> small = half.at("per_task").at(task).at("neurons")[l];
      const std::vector<int64_t> large = all.at("per_task").at(task).at("neurons")[l];
      EXPECT_TRUE(std::includes(large.begin(), large.end(), small.begin(), small.end())) << task << " layer " << l;
    }
  }
}

TEST(NeuronsCli, ReferenceCorpusIsTheGeneralText) {
  const std::string corpus = work_dir() + "/corpus.txt";
  {
    std::ofstream out(corpus);
    for (int i = 0; i < 40; ++i) out << "Once upon a time, there was a little girl named Lily. She liked to play in the park.\n";
  }
  const nlohmann::json j = neurons("reference", "--reference " + shell_quote(corpus));
  EXPECT_EQ(j.at("reference"), corpus);
  const nlohmann::json& generated = default_run();
  // Another general text gives other sets.
  bool differs = false;
  for (const std::string& task : kTasks) differs |= j.at("per_task").at(task).at("neurons") != generated.at("per_task").at(task).at("neurons");
  EXPECT_TRUE(differs);
}

TEST(NeuronsCli, BadInputsFailWithOneLine) {
  const std::string model = " --model " + shell_quote(sg::test::converted_stories260k());
  sg::test::expect_one_line_error("neurons" + model + " --tasks add,nosuchtask", {"nosuchtask", "built-in"}, true);
  sg::test::expect_one_line_error("neurons" + model + " --tasks ,", {"--tasks", "empty"}, true);
  sg::test::expect_one_line_error("neurons" + model + " --tasks add --coverage 0", {"--coverage", "(0, 1]"}, true);
  sg::test::expect_one_line_error("neurons" + model + " --tasks add --coverage 1.5", {"--coverage"}, true);
  sg::test::expect_one_line_error("neurons" + model + " --tasks add,add", {"twice"}, true);
  sg::test::expect_one_line_error("neurons" + model + " --tasks add --reference " + shell_quote(work_dir() + "/missing.txt"),
                                  {"--reference", "missing.txt"}, true);
  sg::test::expect_one_line_error("neurons" + model + " --tasks add --reference " + shell_quote(work_dir()),
                                  {"--reference", "directory"}, true);
  // The model's weights without its tokenizer.
  const std::string bare = work_dir() + "/bare";
  auto r = run_command("mkdir -p " + shell_quote(bare) + " && cp " + shell_quote(sg::test::converted_stories260k()) +
                       "/config.json " + shell_quote(sg::test::converted_stories260k()) + "/model.safetensors " +
                       shell_quote(bare));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  sg::test::expect_one_line_error("neurons --model " + shell_quote(bare) + " --tasks add", {"tokenizer"}, true);
}

TEST(NeuronsCli, HelpListsTheFlags) {
  auto r = run_command(sg_command("neurons --help"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const char* flag : {"--model", "--tasks", "--base", "--coverage", "--examples", "--reference", "--task-seed", "--json"}) {
    EXPECT_NE(r.output.find(flag), std::string::npos) << flag;
  }
}

}  // namespace
