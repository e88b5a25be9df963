#include "data/task_file.h"

#include <nlohmann/json.hpp>

#include <sstream>

#include "util/error.h"
#include "util/file.h"

namespace sg::data {

namespace {

std::string string_field(const nlohmann::json& line, const char* key, const std::string& where) {
  auto it = line.find(key);
  SG_CHECK(it != line.end(), where << ": missing \"" << key << "\"; hint: each line is {\"prompt\", \"completion\"} "
                                   << "or {\"prompt\", \"choices\": [...], \"label\": i}");
  SG_CHECK(it->is_string(), where << ": \"" << key << "\" must be a string, got " << it->dump());
  return it->get<std::string>();
}

Example parse_example(const std::string& text, const std::string& where) {
  nlohmann::json line;
  try {
    line = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    SG_FAIL(where << ": not valid JSON (column " << e.byte << "); hint: one JSON object per line");
  }
  SG_CHECK(line.is_object(), where << ": expected a JSON object, got " << line.type_name());
  Example example;
  example.prompt = string_field(line, "prompt", where);
  if (!line.contains("choices")) {
    example.completion = string_field(line, "completion", where);
    return example;
  }
  const nlohmann::json& choices = line["choices"];
  SG_CHECK(choices.is_array(), where << ": \"choices\" must be a list of strings");
  SG_CHECK(!choices.empty(), where << ": \"choices\" is empty; hint: a choice task needs at least one choice");
  for (const auto& choice : choices) {
    SG_CHECK(choice.is_string(), where << ": every choice must be a string, got " << choice.dump());
    example.choices.push_back(choice.get<std::string>());
  }
  auto label = line.find("label");
  SG_CHECK(label != line.end(), where << ": missing \"label\" (the index of the right choice)");
  SG_CHECK(label->is_number_integer(), where << ": \"label\" must be an integer, got " << label->dump());
  example.label = label->get<int64_t>();
  SG_CHECK(example.label >= 0 && example.label < static_cast<int64_t>(example.choices.size()),
           where << ": label " << example.label << " is out of range for " << example.choices.size() << " choices");
  return example;
}

}  // namespace

std::vector<Example> read_task_file(const std::string& path) {
  std::istringstream in(util::read_file(path));
  std::vector<Example> examples;
  std::string text;
  int64_t line_number = 0;
  while (std::getline(in, text)) {
    ++line_number;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(line_number);
    examples.push_back(parse_example(text, where));
    SG_CHECK(examples.front().is_choice() == examples.back().is_choice(),
             where << ": mixes generation and choice examples; hint: keep one kind per task file");
  }
  return examples;
}

void write_task_file(const std::string& path, const std::vector<Example>& examples) {
  std::string out;
  for (const Example& e : examples) {
    nlohmann::json line = {{"prompt", e.prompt}};
    if (e.is_choice()) {
      line["choices"] = e.choices;
      line["label"] = e.label;
    } else {
      line["completion"] = e.completion;
    }
    out += line.dump() + "\n";
  }
  util::write_file_atomic(path, out);
}

TaskSplits read_task_dir(const std::string& dir) {
  SG_CHECK(util::is_directory(dir), dir << ": no such task directory; hint: make one with `skillgraft tasks make`");
  TaskSplits splits;
  std::vector<Example>* targets[] = {&splits.train, &splits.validation, &splits.test};
  for (int i = 0; i < 3; ++i) {
    std::string path = util::join_path(dir, std::string(kSplitNames[i]) + ".jsonl");
    SG_CHECK(util::file_exists(path), dir << ": missing " << kSplitNames[i]
                                          << ".jsonl; hint: a task directory holds train, validation and test splits");
    *targets[i] = read_task_file(path);
  }
  return splits;
}

void write_task_dir(const std::string& dir, const TaskSplits& splits) {
  util::make_directories(dir);
  const std::vector<Example>* sources[] = {&splits.train, &splits.validation, &splits.test};
  for (int i = 0; i < 3; ++i) {
    write_task_file(util::join_path(dir, std::string(kSplitNames[i]) + ".jsonl"), *sources[i]);
  }
}

}  // namespace sg::data
