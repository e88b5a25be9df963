// skillgraft demo --quick end to end: the results.json contract, every specialist clearly above
// the base on its own task (the criterion recomputed here from the raw scores), and the matrix
// agreeing with a separate `skillgraft eval` of a saved specialist.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <set>

#include "test_env.h"

namespace sg::test {
namespace {

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return nlohmann::json::parse(in);
}

TEST(DemoQuick, EverySpecialistBeatsTheBaseOnItsOwnTask) {
  const std::string out = temp_dir("demo");
  CommandResult run = run_command(shell_quote(binary()) + " demo --quick --threads 2 --out " + shell_quote(out));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  nlohmann::json results = read_json(out + "/results.json");

  std::set<std::string> names;
  for (const auto& task : results.at("tasks")) names.insert(task.at("name").get<std::string>());
  for (const char* required : {"opposite", "sentiment", "country_code", "add"}) {
    EXPECT_TRUE(names.count(required)) << "quick demo lacks " << required;
  }
  const auto& tasks = results.at("tasks");
  const auto& matrix = results.at("matrix");
  ASSERT_EQ(matrix.size(), tasks.size());
  for (size_t i = 0; i < tasks.size(); ++i) {
    const auto& task = tasks[i];
    const std::string name = task.at("name");
    const std::string kind = task.at("kind");
    EXPECT_TRUE(kind == "elicited" || kind == "built") << name << ": kind " << kind;
    const std::string metric = task.at("metric");
    EXPECT_TRUE(metric == "exact_match" || metric == "choice_accuracy") << name;
    ASSERT_EQ(matrix[i].size(), tasks.size());
    const double base = task.at("base"), finetuned = task.at("finetuned");
    EXPECT_DOUBLE_EQ(matrix[i][i].get<double>(), finetuned) << name;
    EXPECT_DOUBLE_EQ(results.at("base").at("scores").at(name).get<double>(), base) << name;
    EXPECT_TRUE(finetuned >= 0.9 || finetuned >= base + 0.15)
        << name << ": specialist " << finetuned << " vs base " << base;
    for (const auto& score : matrix[i]) {
      EXPECT_GE(score.get<double>(), 0.0);
      EXPECT_LE(score.get<double>(), 1.0);
    }
  }

  // A saved specialist, evaluated by the eval verb on the demo's own task files, scores what the matrix says.
  for (size_t i = 0; i < tasks.size(); ++i) {
    if (tasks[i].at("name") != "country_code") continue;
    CommandResult eval = run_command(shell_quote(binary()) + " eval --threads 1 --quiet --model " +
                                     shell_quote(out + "/specialists/country_code") + " --task " +
                                     shell_quote(out + "/tasks/country_code") + " --json " + shell_quote(out + "/eval.json"));
    ASSERT_EQ(eval.exit_code, 0) << eval.output;
    EXPECT_DOUBLE_EQ(read_json(out + "/eval.json").at("score").get<double>(), matrix[i][i].get<double>());
  }
}

}  // namespace
}  // namespace sg::test
