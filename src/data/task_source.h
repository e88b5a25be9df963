// Where a task comes from on the command line: a built-in task name or a task directory.
#pragma once

#include <string>

#include "data/builtin_tasks.h"
#include "data/task_file.h"

namespace sg::data {

struct LoadedTask {
  std::string name;    // the built-in name, or the directory's last component
  std::string kind;    // "elicited" / "built" for built-in tasks, "custom" for directories
  std::string metric;  // "exact_match" (completion examples) or "choice_accuracy" (choice examples)
  TaskSplits splits;
};

// `spec` is a built-in task name (generated with `options`) or a directory holding
// train/validation/test.jsonl. Throws for a name that is neither, listing the built-in names.
LoadedTask load_task(const std::string& spec, const BuiltinTaskOptions& options);

// The examples of split "train", "validation" or "test"; throws for another name.
const std::vector<Example>& task_split(const LoadedTask& task, const std::string& split);

// The examples a run validates on: the first max_examples (0: all) of the validation split, or of
// the train split for a task without one.
std::vector<Example> validation_examples(const LoadedTask& task, int64_t max_examples);

}  // namespace sg::data
