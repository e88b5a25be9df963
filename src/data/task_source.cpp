#include "data/task_source.h"

#include <sys/stat.h>

#include "util/error.h"

namespace sg::data {

namespace {

bool is_directory(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode);
}

std::string last_component(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string metric_of(const TaskSplits& splits) {
  for (const std::vector<Example>* split : {&splits.train, &splits.validation, &splits.test}) {
    if (!split->empty()) return split->front().is_choice() ? "choice_accuracy" : "exact_match";
  }
  return "exact_match";
}

}  // namespace

LoadedTask load_task(const std::string& spec, const BuiltinTaskOptions& options) {
  LoadedTask task;
  for (const BuiltinTaskInfo& info : builtin_tasks()) {
    if (info.name != spec) continue;
    task.name = info.name;
    task.kind = info.kind;
    task.metric = info.metric;
    task.splits = make_builtin_task(spec, options);
    return task;
  }
  if (!is_directory(spec)) {
    std::string names;
    for (const BuiltinTaskInfo& info : builtin_tasks()) names += (names.empty() ? "" : ", ") + info.name;
    SG_FAIL("unknown task '" << spec << "': not a built-in task name and not a directory; hint: built-in tasks are "
                             << names << ", or give a directory with train/validation/test.jsonl");
  }
  task.name = last_component(spec);
  task.kind = "custom";
  task.splits = read_task_dir(spec);
  task.metric = metric_of(task.splits);
  return task;
}

const std::vector<Example>& task_split(const LoadedTask& task, const std::string& split) {
  if (split == "train") return task.splits.train;
  if (split == "validation") return task.splits.validation;
  if (split == "test") return task.splits.test;
  SG_FAIL("unknown split '" << split << "'; hint: use train, validation or test");
}

std::vector<Example> validation_examples(const LoadedTask& task, int64_t max_examples) {
  SG_CHECK(max_examples >= 0, "--eval-examples must be >= 0, got " << max_examples);
  std::vector<Example> examples = task.splits.validation.empty() ? task.splits.train : task.splits.validation;
  if (max_examples > 0 && static_cast<int64_t>(examples.size()) > max_examples) {
    examples.resize(static_cast<size_t>(max_examples));
  }
  return examples;
}

}  // namespace sg::data
