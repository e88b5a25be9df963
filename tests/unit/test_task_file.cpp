// Task files: round trips, and one clear file:line error for each kind of bad line.
#include <gtest/gtest.h>

#include "data/task_file.h"
#include "test_env.h"
#include "util/error.h"
#include "util/file.h"

namespace {

std::string write_temp(const std::string& text) {
  std::string path = sg::test::temp_dir("sg-task") + "/task.jsonl";
  sg::util::write_file_atomic(path, text);
  return path;
}

std::string error_reading(const std::string& text, std::string* path_out = nullptr) {
  std::string path = write_temp(text);
  if (path_out != nullptr) *path_out = path;
  try {
    sg::data::read_task_file(path);
  } catch (const sg::Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(TaskFile, ReadsBothKindsAndSkipsBlankLines) {
  auto gen = sg::data::read_task_file(write_temp(
      "{\"prompt\": \"The opposite of big is\", \"completion\": \" small.\"}\n\n"
      "{\"prompt\": \"2+2=\", \"completion\": \"4.\"}\n"));
  ASSERT_EQ(gen.size(), 2u);
  EXPECT_EQ(gen[0].prompt, "The opposite of big is");
  EXPECT_EQ(gen[0].completion, " small.");
  EXPECT_FALSE(gen[1].is_choice());
  auto choice = sg::data::read_task_file(
      write_temp("{\"prompt\": \"She smiled. She was\", \"choices\": [\" happy.\", \" sad.\"], \"label\": 0}\n"));
  ASSERT_EQ(choice.size(), 1u);
  EXPECT_TRUE(choice[0].is_choice());
  EXPECT_EQ(choice[0].choices[1], " sad.");
  EXPECT_EQ(choice[0].label, 0);
}

TEST(TaskFile, BadLinesNameFileAndLine) {
  std::string path;
  std::string good = "{\"prompt\": \"a\", \"completion\": \"b\"}\n";
  struct Case { std::string second_line; std::string needle; };
  std::vector<Case> cases = {
      {"{\"prompt\": \"a\", \"completion\": }", "not valid JSON"},
      {"[1, 2]", "expected a JSON object"},
      {"{\"completion\": \"b\"}", "missing \"prompt\""},
      {"{\"prompt\": \"a\"}", "missing \"completion\""},
      {"{\"prompt\": 3, \"completion\": \"b\"}", "\"prompt\" must be a string"},
  };
  for (const Case& c : cases) {
    std::string message = error_reading(good + c.second_line + "\n", &path);
    EXPECT_EQ(message.rfind(path + ":2: ", 0), 0u) << message;
    EXPECT_NE(message.find(c.needle), std::string::npos) << message;
  }
  std::string choice = "{\"prompt\": \"p\", \"choices\": [\"x\", \"y\"], \"label\": 1}\n";
  std::vector<Case> choice_cases = {
      {"{\"prompt\": \"p\", \"choices\": [], \"label\": 0}", "\"choices\" is empty"},
      {"{\"prompt\": \"p\", \"choices\": [\"x\"], \"label\": 1}", "label 1 is out of range for 1 choices"},
      {"{\"prompt\": \"p\", \"choices\": [\"x\"], \"label\": -1}", "label -1 is out of range"},
      {"{\"prompt\": \"p\", \"choices\": [\"x\"]}", "missing \"label\""},
      {"{\"prompt\": \"p\", \"choices\": [\"x\", 2], \"label\": 0}", "every choice must be a string"},
      {"{\"prompt\": \"p\", \"completion\": \"c\"}", "mixes generation and choice"},
  };
  for (const Case& c : choice_cases) {
    std::string message = error_reading(choice + c.second_line + "\n", &path);
    EXPECT_EQ(message.rfind(path + ":2: ", 0), 0u) << message;
    EXPECT_NE(message.find(c.needle), std::string::npos) << message;
  }
}

TEST(TaskFile, DirectoryRoundTripAndMissingSplit) {
  sg::data::TaskSplits splits;
  splits.train = {{"p1", " c1.", {}, -1}, {"unicode ✓ \"quoted\"\n", "x", {}, -1}};
  splits.validation = {{"p2", " c2.", {}, -1}};
  splits.test = {{"p3", "", {" a", " b"}, 1}};
  std::string dir = sg::test::temp_dir("sg-task") + "/task";
  sg::data::write_task_dir(dir, splits);
  sg::data::TaskSplits back = sg::data::read_task_dir(dir);
  ASSERT_EQ(back.train.size(), 2u);
  EXPECT_EQ(back.train[1].prompt, "unicode ✓ \"quoted\"\n");
  EXPECT_EQ(back.test[0].choices, (std::vector<std::string>{" a", " b"}));
  EXPECT_EQ(back.test[0].label, 1);
  // Writing what was read gives the same bytes.
  std::string again = sg::test::temp_dir("sg-task") + "/task";
  sg::data::write_task_dir(again, back);
  EXPECT_EQ(sg::util::read_file(dir + "/train.jsonl"), sg::util::read_file(again + "/train.jsonl"));
  std::remove((dir + "/validation.jsonl").c_str());
  try {
    sg::data::read_task_dir(dir);
    FAIL() << "expected an error";
  } catch (const sg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing validation.jsonl"), std::string::npos) << e.what();
  }
}

}  // namespace
