// Task files: JSONL, one example per line — {"prompt", "completion"} (generation) or
// {"prompt", "choices": [...], "label": i} (choice) — and task directories holding the splits
// train.jsonl / validation.jsonl / test.jsonl. Every bad line is an error naming file:line.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sg::data {

struct Example {
  std::string prompt;
  std::string completion;            // generation examples
  std::vector<std::string> choices;  // choice examples (then completion is empty)
  int64_t label = -1;                // index into choices
  bool is_choice() const { return !choices.empty(); }
};

// Reads a JSONL task file. Blank lines are skipped; a file may not mix the two kinds.
// Throws sg::Error "FILE:LINE: what was wrong; hint: ..." for bad JSON, a missing or mistyped
// field, empty choices, a label out of range.
std::vector<Example> read_task_file(const std::string& path);

// Writes examples as JSONL, atomically.
void write_task_file(const std::string& path, const std::vector<Example>& examples);

struct TaskSplits {
  std::vector<Example> train, validation, test;
};

constexpr const char* kSplitNames[] = {"train", "validation", "test"};

// Reads DIR/train.jsonl, DIR/validation.jsonl, DIR/test.jsonl (a missing split is an error
// naming the directory and the file).
TaskSplits read_task_dir(const std::string& dir);
// Writes the three splits into DIR (created if missing).
void write_task_dir(const std::string& dir, const TaskSplits& splits);

}  // namespace sg::data
