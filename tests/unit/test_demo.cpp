// skillgraft demo --quick end to end: the results.json contract, every specialist clearly above
// the base on its own task (the criterion recomputed here from the raw scores), and the matrix
// agreeing with a separate `skillgraft eval` of a saved specialist.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <set>

#include "io/safetensors.h"
#include "test_env.h"

namespace sg::test {
namespace {

using sg::test::read_json;
// The positions of a skill file, as "tensor name" -> set of flat indices, read straight from the file.
std::map<std::string, std::set<int64_t>> skill_positions(const std::string& path) {
  std::map<std::string, std::set<int64_t>> positions;
  for (const auto& item : io::load_safetensors(path)) {
    const std::string& key = item.key();
    const std::string suffix = ".idx";
    if (key.size() <= suffix.size() || key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    if (key.find(".restore") != std::string::npos) continue;
    const torch::Tensor idx = item.value().contiguous();
    const int64_t* data = idx.data_ptr<int64_t>();
    positions[key.substr(0, key.size() - suffix.size())].insert(data, data + idx.numel());
  }
  return positions;
}

int64_t count(const std::map<std::string, std::set<int64_t>>& positions) {
  int64_t total = 0;
  for (const auto& item : positions) total += static_cast<int64_t>(item.second.size());
  return total;
}

TEST(DemoQuick, EverySpecialistBeatsTheBaseOnItsOwnTask) {
  const std::string out = temp_dir("demo");
  CommandResult run = run_command(shell_quote(binary()) + " demo --quick --threads 1 --out " + shell_quote(out));
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

  // Localization: every specialist's skill holds exactly 1% of the base's parameters (counted from
  // the base's own file), its scores are fractions, and the recovery is (graft - base) / (ft - base).
  int64_t parameters = 0;
  for (const auto& item : io::load_safetensors(out + "/base/model.safetensors")) parameters += item.value().numel();
  const int64_t budget = std::llround(0.01 * static_cast<double>(parameters));
  std::map<std::string, std::map<std::string, std::set<int64_t>>> positions;
  for (const auto& task : tasks) {
    const std::string name = task.at("name");
    ASSERT_TRUE(task.contains("graft")) << name;
    EXPECT_DOUBLE_EQ(task.at("graft_fraction").get<double>(), 0.01) << name;
    for (const char* field : {"graft", "movement", "saliency", "random"}) {
      EXPECT_GE(task.at(field).get<double>(), 0.0) << name << " " << field;
      EXPECT_LE(task.at(field).get<double>(), 1.0) << name << " " << field;
    }
    const double base = task.at("base"), finetuned = task.at("finetuned"), graft = task.at("graft");
    EXPECT_NEAR(task.at("recovery").get<double>(), (graft - base) / (finetuned - base), 1e-9) << name;
    positions[name] = skill_positions(out + "/skills/" + name + ".safetensors");
    EXPECT_EQ(count(positions[name]), budget) << name;
    for (const auto& where : task.at("where").at("per_tensor").items()) {
      EXPECT_EQ(static_cast<int64_t>(positions[name][where.key()].size()), where.value().at("selected").get<int64_t>())
          << name << " " << where.key();
    }
  }

  // Grafting the saved country_code skill onto the base with the graft verb and scoring it with the
  // eval verb gives the demo's graft score.
  for (const auto& task : tasks) {
    if (task.at("name") != "country_code") continue;
    CommandResult graft = run_command(shell_quote(binary()) + " graft --quiet --base " + shell_quote(out + "/base") +
                                      " --skill " + shell_quote(out + "/skills/country_code.safetensors") + " --out " +
                                      shell_quote(out + "/grafted"));
    ASSERT_EQ(graft.exit_code, 0) << graft.output;
    CommandResult eval = run_command(shell_quote(binary()) + " eval --threads 1 --quiet --model " +
                                     shell_quote(out + "/grafted") + " --task " + shell_quote(out + "/tasks/country_code") +
                                     " --json " + shell_quote(out + "/graft_eval.json"));
    ASSERT_EQ(eval.exit_code, 0) << eval.output;
    EXPECT_DOUBLE_EQ(read_json(out + "/graft_eval.json").at("score").get<double>(), task.at("graft").get<double>());
  }

  // Overlap: the Jaccard index of every pair recomputed from the skill files' indices.
  const auto& overlap = results.at("overlap");
  const std::vector<std::string> overlap_tasks = overlap.at("tasks");
  ASSERT_EQ(overlap_tasks.size(), tasks.size());
  for (size_t a = 0; a < overlap_tasks.size(); ++a) {
    for (size_t b = 0; b < overlap_tasks.size(); ++b) {
      int64_t shared = 0, either = 0;
      std::set<std::string> names;
      for (const auto& item : positions[overlap_tasks[a]]) names.insert(item.first);
      for (const auto& item : positions[overlap_tasks[b]]) names.insert(item.first);
      for (const std::string& name : names) {
        std::set<int64_t> u = positions[overlap_tasks[a]][name];
        const std::set<int64_t>& other = positions[overlap_tasks[b]][name];
        for (int64_t i : other) shared += u.count(i);
        u.insert(other.begin(), other.end());
        either += static_cast<int64_t>(u.size());
      }
      EXPECT_NEAR(overlap.at("jaccard")[a][b].get<double>(), static_cast<double>(shared) / static_cast<double>(either),
                  1e-12)
          << overlap_tasks[a] << " / " << overlap_tasks[b];
    }
  }

  // Removal: one row per task of the multi-task model; the drops are the score differences.
  const auto& removal = results.at("removal");
  const auto& before = removal.at("scores");
  ASSERT_EQ(removal.at("rows").size(), removal.at("tasks").size());
  ASSERT_EQ(removal.at("learned_rows").size(), removal.at("tasks").size());
  for (const char* group : {"rows", "learned_rows"}) {
    for (const auto& row : removal.at(group)) {
      const std::string removed = row.at("removed");
      EXPECT_NEAR(row.at("target_drop").get<double>(),
                  before.at(removed).get<double>() - row.at("scores").at(removed).get<double>(), 1e-12);
      double others = 0;
      for (const auto& task : removal.at("tasks")) {
        if (task != removed) others += before.at(task).get<double>() - row.at("scores").at(task).get<double>();
      }
      EXPECT_NEAR(row.at("others_mean_drop").get<double>(), others / static_cast<double>(removal.at("tasks").size() - 1),
                  1e-12);
    }
  }

  // Neurons of the multi-task model: every task has a set, and each set's IoU with itself is 1.
  const auto& neurons = results.at("neurons");
  ASSERT_EQ(neurons.at("tasks"), removal.at("tasks"));
  for (size_t t = 0; t < neurons.at("tasks").size(); ++t) {
    EXPECT_GT(neurons.at("per_task").at(neurons.at("tasks")[t].get<std::string>()).at("total").get<int64_t>(), 0);
    EXPECT_DOUBLE_EQ(neurons.at("iou_mean")[t][t].get<double>(), 1.0);
  }

  // The library: one entry per task, each id the SHA-256 of that task's skill file (hashlib's), and
  // the library verb's verify agrees.
  const auto& library = results.at("library");
  EXPECT_EQ(library.at("entries").get<int64_t>(), static_cast<int64_t>(tasks.size()));
  EXPECT_TRUE(library.at("ok").get<bool>());
  for (const auto& task : tasks) {
    const std::string name = task.at("name");
    CommandResult hash = run_command(python() + " -c \"import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],'rb')"
                                                ".read()).hexdigest())\" " +
                                     shell_quote(out + "/skills/" + name + ".safetensors"));
    ASSERT_EQ(hash.exit_code, 0) << hash.output;
    EXPECT_EQ(hash.output.substr(0, 64), library.at("ids").at(name).get<std::string>()) << name;
  }
  CommandResult verify = run_command(shell_quote(binary()) + " library verify --lib " + shell_quote(out + "/library"));
  EXPECT_EQ(verify.exit_code, 0) << verify.output;

  // The merge table: every method, normalized recomputed from the scores; merging the country_code
  // graft alone by task arithmetic (the merge verb) and scoring it (the eval verb) gives its graft score.
  const auto& specialists = results.at("merge_specialists");
  std::set<std::string> methods;
  for (const auto& row : results.at("merge")) {
    methods.insert(row.at("method").get<std::string>());
    double sum = 0;
    int n = 0;
    for (const auto& item : row.at("scores").items()) {
      const double specialist = specialists.at(item.key()).get<double>();
      if (specialist <= 0) continue;
      sum += item.value().get<double>() / specialist;
      ++n;
    }
    ASSERT_GT(n, 0);
    EXPECT_NEAR(row.at("normalized").get<double>(), sum / n, 1e-9) << row.dump();
  }
  for (const char* method : {"linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "sparse_union", "stitch"}) {
    EXPECT_TRUE(methods.count(method)) << method;
  }
  // stitch: the model it wrote, scored by the eval verb on the same test examples, gives its row's
  // scores; learning the masks on the train splits beats every merge method that uses no data.
  for (const auto& row : results.at("merge")) {
    if (row.at("method") != "stitch") continue;
    for (const auto& item : row.at("scores").items()) {
      const std::string json = out + "/stitch_eval_" + item.key() + ".json";
      CommandResult eval = run_command(shell_quote(binary()) + " eval --threads 1 --quiet --model " +
                                       shell_quote(row.at("out_dir").get<std::string>()) + " --task " +
                                       shell_quote(out + "/tasks/" + item.key()) + " --max-examples " +
                                       std::to_string(results.at("merge_max_examples").get<int64_t>()) + " --json " +
                                       shell_quote(json));
      ASSERT_EQ(eval.exit_code, 0) << eval.output;
      EXPECT_DOUBLE_EQ(read_json(json).at("score").get<double>(), item.value().get<double>()) << item.key();
    }
    for (const auto& other : results.at("merge")) {
      if (other.at("method") == "stitch") continue;
      EXPECT_GT(row.at("normalized").get<double>(), other.at("normalized").get<double>()) << other.dump();
    }
  }
  for (const auto& task : tasks) {
    if (task.at("name") != "country_code") continue;
    CommandResult merge = run_command(shell_quote(binary()) + " merge --quiet --threads 1 --method task_arithmetic --base " +
                                      shell_quote(out + "/base") + " --skills " +
                                      shell_quote(out + "/skills/country_code.safetensors") + " --out " +
                                      shell_quote(out + "/merged_one"));
    ASSERT_EQ(merge.exit_code, 0) << merge.output;
    CommandResult eval = run_command(shell_quote(binary()) + " eval --threads 1 --quiet --model " +
                                     shell_quote(out + "/merged_one") + " --task " +
                                     shell_quote(out + "/tasks/country_code") + " --json " +
                                     shell_quote(out + "/merged_eval.json"));
    ASSERT_EQ(eval.exit_code, 0) << eval.output;
    EXPECT_DOUBLE_EQ(read_json(out + "/merged_eval.json").at("score").get<double>(), task.at("graft").get<double>());
  }

  // The report beside results.json: one self-contained page with its charts.
  std::ifstream report_file(out + "/report.html");
  ASSERT_TRUE(report_file.good());
  const std::string report((std::istreambuf_iterator<char>(report_file)), std::istreambuf_iterator<char>());
  EXPECT_NE(report.find("<svg"), std::string::npos);
  EXPECT_EQ(report.find("http"), std::string::npos);
  EXPECT_NE(report.find("country_code"), std::string::npos);
}

}  // namespace
}  // namespace sg::test
