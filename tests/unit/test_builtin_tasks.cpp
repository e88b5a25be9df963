// Built-in tasks and the .mo parser: determinism from the seed, the disjointness each task
// promises, answers checked against closed forms, hand-built .mo files, and the tasks CLI verb.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>

#include "data/builtin_tasks.h"
#include "data/mo_file.h"
#include "test_env.h"
#include "util/error.h"
#include "util/file.h"

namespace {

using sg::data::BuiltinTaskOptions;
using sg::data::Example;
using sg::data::TaskSplits;
using sg::test::run_command;
using sg::test::shell_quote;

bool have_iso_codes() { return sg::util::is_directory("/usr/share/iso-codes/json"); }

std::vector<std::string> task_names() {
  std::vector<std::string> names;
  for (const auto& info : sg::data::builtin_tasks()) names.push_back(info.name);
  return names;
}

// Tasks this machine can generate (iso-codes may be missing on a bare machine).
std::vector<std::string> available_tasks() {
  std::vector<std::string> names;
  for (const std::string& name : task_names()) {
    if ((name == "country_code" || name == "currency") && !have_iso_codes()) continue;
    names.push_back(name);
  }
  return names;
}

TaskSplits make(const std::string& name, uint64_t seed, int64_t n = 40) {
  BuiltinTaskOptions options;
  options.seed = seed;
  options.train_size = n;
  return sg::data::make_builtin_task(name, options);
}

std::set<std::string> prompts(const std::vector<Example>& examples) {
  std::set<std::string> out;
  for (const Example& e : examples) out.insert(e.prompt);
  return out;
}

bool disjoint(const std::set<std::string>& a, const std::set<std::string>& b) {
  for (const std::string& x : a) {
    if (b.count(x)) return false;
  }
  return true;
}

std::string dir_bytes(const std::string& dir) {
  std::string all;
  for (const char* split : sg::data::kSplitNames) all += sg::util::read_file(dir + "/" + split + ".jsonl") + "\n--\n";
  return all;
}

TEST(BuiltinTasks, SameSeedSameFilesDifferentSeedDifferent) {
  for (const std::string& name : available_tasks()) {
    std::string a = sg::test::temp_dir("sg-tasks"), b = sg::test::temp_dir("sg-tasks"), c = sg::test::temp_dir("sg-tasks");
    sg::data::write_task_dir(a, make(name, 7));
    sg::data::write_task_dir(b, make(name, 7));
    sg::data::write_task_dir(c, make(name, 8));
    EXPECT_EQ(dir_bytes(a), dir_bytes(b)) << name;
    EXPECT_NE(dir_bytes(a), dir_bytes(c)) << name;
  }
}

TEST(BuiltinTasks, SplitSizesAnswersAndLabels) {
  for (const std::string& name : available_tasks()) {
    TaskSplits s = make(name, 1, 40);
    EXPECT_EQ(s.train.size(), 40u) << name;
    EXPECT_EQ(s.validation.size(), 10u) << name;
    EXPECT_EQ(s.test.size(), 10u) << name;
    for (const auto* split : {&s.train, &s.validation, &s.test}) {
      for (const Example& e : *split) {
        EXPECT_FALSE(e.prompt.empty()) << name;
        if (e.is_choice()) {
          EXPECT_GE(e.label, 0) << name;
          EXPECT_LT(e.label, static_cast<int64_t>(e.choices.size())) << name;
          for (const std::string& choice : e.choices) EXPECT_EQ(choice.back(), '.') << name << ": " << choice;
        } else {
          ASSERT_GE(e.completion.size(), 3u) << name;
          EXPECT_EQ(e.completion.front(), ' ') << name;
          EXPECT_EQ(e.completion.back(), '.') << name << ": " << e.completion;
        }
      }
    }
  }
}

TEST(BuiltinTasks, TestPromptsDisjointFromTrainWherePromised) {
  for (const std::string name : {"sentiment", "add", "reverse", "sort", "langid"}) {
    TaskSplits s = make(name, 3, 200);
    EXPECT_TRUE(disjoint(prompts(s.train), prompts(s.test))) << name;
    EXPECT_TRUE(disjoint(prompts(s.train), prompts(s.validation))) << name;
  }
}

TEST(BuiltinTasks, SentimentTestUsesHeldOutNames) {
  TaskSplits s = make("sentiment", 5, 400);
  auto first_word = [](const std::string& prompt) { return prompt.substr(0, prompt.find(' ')); };
  std::set<std::string> train_names;
  for (const Example& e : s.train) train_names.insert(first_word(e.prompt));
  for (const Example& e : s.test) EXPECT_EQ(train_names.count(first_word(e.prompt)), 0u) << e.prompt;
  std::set<int64_t> labels;
  for (const Example& e : s.train) labels.insert(e.label);
  EXPECT_EQ(labels, (std::set<int64_t>{0, 1}));
}

TEST(BuiltinTasks, AddAnswersAreTheSums) {
  TaskSplits s = make("add", 11, 400);
  for (const auto* split : {&s.train, &s.validation, &s.test}) {
    for (const Example& e : *split) {
      int a = -1, b = -1;
      ASSERT_EQ(std::sscanf(e.prompt.c_str(), "%d + %d =", &a, &b), 2) << e.prompt;
      EXPECT_TRUE(a >= 0 && a < 100 && b >= 0 && b < 100) << e.prompt;
      EXPECT_EQ(e.completion, " " + std::to_string(a + b) + ".") << e.prompt;
    }
  }
}

// The word between `prefix` and the trailing ':'.
std::string word_of(const std::string& prompt, const std::string& prefix) {
  EXPECT_EQ(prompt.compare(0, prefix.size(), prefix), 0) << prompt;
  EXPECT_EQ(prompt.back(), ':') << prompt;
  return prompt.substr(prefix.size(), prompt.size() - prefix.size() - 1);
}

TEST(BuiltinTasks, ReverseAndSortAnswers) {
  for (const Example& e : make("reverse", 2, 100).train) {
    std::string word = word_of(e.prompt, "Reverse "), expected;
    EXPECT_TRUE(word.size() >= 3 && word.size() <= 6) << word;
    for (size_t i = word.size(); i-- > 0;) expected += word[i];
    EXPECT_EQ(e.completion, " " + expected + ".");
  }
  for (const Example& e : make("sort", 2, 100).train) {
    std::string word = word_of(e.prompt, "Sort "), expected;
    // Counting sort over the alphabet: independent of std::sort.
    for (char c = 'a'; c <= 'z'; ++c) expected += std::string(std::count(word.begin(), word.end(), c), c);
    EXPECT_EQ(expected.size(), word.size()) << word;
    EXPECT_EQ(e.completion, " " + expected + ".");
  }
}

TEST(BuiltinTasks, OppositeIsSymmetricWithOneAnswerPerPrompt) {
  TaskSplits s = make("opposite", 0, 400);
  std::map<std::string, std::string> answer;  // word -> opposite
  const std::string prefix = "The opposite of ";
  for (const Example& e : s.train) {
    ASSERT_EQ(e.prompt.compare(0, prefix.size(), prefix), 0) << e.prompt;
    std::string word = e.prompt.substr(prefix.size(), e.prompt.size() - prefix.size() - 3);
    std::string opposite = e.completion.substr(1, e.completion.size() - 2);
    auto [it, inserted] = answer.emplace(word, opposite);
    EXPECT_EQ(it->second, opposite) << word;
  }
  EXPECT_GE(answer.size(), 100u);
  for (const auto& [word, opposite] : answer) {
    if (answer.count(opposite)) EXPECT_EQ(answer[opposite], word) << word;
  }
  // Memorised facts: test asks about words train has seen.
  for (const Example& e : s.test) EXPECT_EQ(prompts(s.train).count(e.prompt), 1u) << e.prompt;
}

TEST(BuiltinTasks, IsoCodeFacts) {
  if (!have_iso_codes()) GTEST_SKIP() << "iso-codes not installed (scripts/setup.sh)";
  auto has = [](const TaskSplits& s, const std::string& prompt, const std::string& completion) {
    for (const Example& e : s.train) {
      if (e.prompt == prompt) return e.completion == completion;
    }
    return false;
  };
  EXPECT_TRUE(has(make("country_code", 0, 400), "The code of France is", " FR."));
  EXPECT_TRUE(has(make("currency", 0, 400), "The code of UAE Dirham is", " AED."));
}

TEST(BuiltinTasks, MissingIsoCodesIsAClearError) {
  BuiltinTaskOptions options;
  options.iso_codes_dir = "/nonexistent/iso-codes/json";
  try {
    sg::data::make_builtin_task("currency", options);
    FAIL() << "expected an error";
  } catch (const sg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("install iso-codes (scripts/setup.sh)"), std::string::npos) << e.what();
  }
}

TEST(BuiltinTasks, BadNamesAndSizesAreErrors) {
  try {
    make("nope", 0);
    FAIL() << "expected an error";
  } catch (const sg::Error& e) {
    std::string what = e.what();
    for (const std::string& name : task_names()) EXPECT_NE(what.find(name), std::string::npos) << what;
  }
  EXPECT_THROW(make("add", 0, 3), sg::Error);
  EXPECT_THROW(make("add", 0, 9000), sg::Error);  // only 10,000 distinct pairs for 13,500 examples
}

TEST(BuiltinTasks, UniformBelowStaysInRange) {
  std::mt19937_64 rng(1);
  std::vector<int> counts(7, 0);
  for (int i = 0; i < 7000; ++i) ++counts[sg::data::uniform_below(rng, 7)];
  for (int c : counts) EXPECT_GT(c, 800);
  EXPECT_EQ(sg::data::uniform_below(rng, 1), 0u);
}

// ---- .mo files, built by hand ----

void put_word(std::string& out, uint32_t w, bool big_endian) {
  for (int i = 0; i < 4; ++i) {
    int shift = big_endian ? 24 - 8 * i : 8 * i;
    out += static_cast<char>((w >> shift) & 0xff);
  }
}

// Header (7 words), originals table, translations table, then the strings each NUL-terminated.
std::string build_mo(const std::vector<std::pair<std::string, std::string>>& entries, bool big_endian) {
  uint32_t n = static_cast<uint32_t>(entries.size());
  uint32_t originals = 28, translations = 28 + 8 * n, strings = 28 + 16 * n;
  std::string head, tables_o, tables_t, data;
  for (uint32_t w : {0x950412deu, 0u, n, originals, translations, 0u, 0u}) put_word(head, w, big_endian);
  for (const auto& [id, str] : entries) {
    put_word(tables_o, static_cast<uint32_t>(id.size()), big_endian);
    put_word(tables_o, strings + static_cast<uint32_t>(data.size()), big_endian);
    data += id + '\0';
  }
  for (const auto& [id, str] : entries) {
    put_word(tables_t, static_cast<uint32_t>(str.size()), big_endian);
    put_word(tables_t, strings + static_cast<uint32_t>(data.size()), big_endian);
    data += str + '\0';
  }
  return head + tables_o + tables_t + data;
}

const std::vector<std::pair<std::string, std::string>> kMoEntries = {
    {"", "Content-Type: text/plain; charset=UTF-8\n"},
    {"Open", "Öffnen"},
    {std::string("File") + '\0' + "Files", std::string("Datei") + '\0' + "Dateien"},
};

TEST(MoFile, ParsesBothByteOrders) {
  for (bool big_endian : {false, true}) {
    auto entries = sg::data::parse_mo(build_mo(kMoEntries, big_endian), "hand.mo");
    ASSERT_EQ(entries.size(), 2u) << big_endian;
    EXPECT_EQ(entries[0].msgid, "Open");
    EXPECT_EQ(entries[0].msgstr, "Öffnen");
    EXPECT_EQ(entries[1].msgid, "File");
    EXPECT_EQ(entries[1].msgstr, "Datei");
  }
}

TEST(MoFile, TruncatedAndBadFilesNameTheFile) {
  std::string bytes = build_mo(kMoEntries, false);
  for (size_t keep : {size_t(10), size_t(40), bytes.size() - 5}) {
    try {
      sg::data::parse_mo(bytes.substr(0, keep), "/x/de/cut.mo");
      FAIL() << "expected an error for " << keep << " bytes";
    } catch (const sg::Error& e) {
      EXPECT_NE(std::string(e.what()).find("/x/de/cut.mo"), std::string::npos) << e.what();
    }
  }
  std::string bad = bytes;
  bad[0] = 'X';
  EXPECT_THROW(sg::data::parse_mo(bad, "bad.mo"), sg::Error);
  std::string dir = sg::test::temp_dir("sg-mo");
  sg::util::write_file_atomic(dir + "/cut.mo", bytes.substr(0, bytes.size() - 5));
  try {
    sg::data::read_mo_file(dir + "/cut.mo");
    FAIL() << "expected an error";
  } catch (const sg::Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir + "/cut.mo"), std::string::npos) << e.what();
  }
}

TEST(MoFile, LangidNeedsSixLanguages) {
  std::string root = sg::test::temp_dir("sg-locale");
  for (const std::string lang : {"de", "fr"}) {
    sg::util::make_directories(root + "/" + lang + "/LC_MESSAGES");
    sg::util::write_file_atomic(root + "/" + lang + "/LC_MESSAGES/app.mo", build_mo(kMoEntries, false));
  }
  BuiltinTaskOptions options;
  options.locale_dir = root;
  try {
    sg::data::make_builtin_task("langid", options);
    FAIL() << "expected an error";
  } catch (const sg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("at least 6"), std::string::npos) << e.what();
  }
}

// ---- the CLI verb ----

std::string sg_cmd(const std::string& args) { return shell_quote(sg::test::binary()) + " " + args; }

size_t line_count(const std::string& path) {
  std::string text = sg::util::read_file(path);
  return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
}

TEST(TasksCli, ListShowsEveryTask) {
  std::string json_path = sg::test::temp_dir("sg-tasks-cli") + "/tasks.json";
  auto r = run_command(sg_cmd("tasks list --json " + shell_quote(json_path)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const std::string& name : task_names()) EXPECT_NE(r.output.find(name), std::string::npos) << r.output;
  nlohmann::json j = nlohmann::json::parse(sg::util::read_file(json_path));
  ASSERT_EQ(j["tasks"].size(), task_names().size());
  EXPECT_EQ(j["tasks"][0]["name"], "opposite");
  EXPECT_EQ(j["tasks"][0]["kind"], "elicited");
  EXPECT_EQ(j["tasks"][0]["metric"], "exact_match");
}

TEST(TasksCli, MakeWritesTheSplitsDeterministically) {
  std::string a = sg::test::temp_dir("sg-tasks-cli") + "/a", b = sg::test::temp_dir("sg-tasks-cli") + "/b";
  for (const std::string& dir : {a, b}) {
    auto r = run_command(sg_cmd("tasks make add --out " + shell_quote(dir) + " --seed 3 --n 8 --quiet"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  EXPECT_EQ(line_count(a + "/train.jsonl"), 8u);
  EXPECT_EQ(line_count(a + "/validation.jsonl"), 2u);
  EXPECT_EQ(line_count(a + "/test.jsonl"), 2u);
  EXPECT_EQ(dir_bytes(a), dir_bytes(b));
  // The CLI writes what the library generates.
  std::string c = sg::test::temp_dir("sg-tasks-cli");
  sg::data::write_task_dir(c, make("add", 3, 8));
  EXPECT_EQ(dir_bytes(a), dir_bytes(c));
}

TEST(TasksCli, UnknownTaskIsOneLineListingTheNames) {
  std::string dir = sg::test::temp_dir("sg-tasks-cli");
  auto r = run_command(sg_cmd("tasks make frobnicate --out " + shell_quote(dir)));
  EXPECT_NE(r.exit_code, 0);
  std::string out = r.output;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 0) << r.output;
  EXPECT_NE(out.find("frobnicate"), std::string::npos) << out;
  for (const std::string& name : task_names()) EXPECT_NE(out.find(name), std::string::npos) << out;
}

TEST(TasksCli, HelpAndBadSubcommand) {
  EXPECT_EQ(run_command(sg_cmd("tasks --help")).exit_code, 0);
  auto r = run_command(sg_cmd("tasks make --help"));
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("--seed"), std::string::npos) << r.output;
  EXPECT_NE(run_command(sg_cmd("tasks frob")).exit_code, 0);
}

}  // namespace
