// The demo's library and merge studies: every specialist's graft kept in a skill library (added,
// then verified), and one model holding all the skills by each merge method, from the specialists'
// full deltas and from their grafts, scored on every task next to the specialists; plus every pair
// of tasks merged alone, to see whether the grafts' overlap predicts what merging costs.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "data/task_source.h"

namespace sg::cli {

// Adds the skill files to the library at `library_dir` (created if missing) and verifies it:
// {dir, entries, added, verified, ok, ids: {task: id}}. Throws when verify finds a problem.
nlohmann::json library_study(const std::string& library_dir, const std::vector<std::string>& tasks,
                             const std::vector<std::string>& skill_paths);

struct MergeStudyTask {
  const data::LoadedTask* task = nullptr;
  std::string specialist_dir;  // the full fine-tune (its delta is the "full" input)
  std::string skill_path;      // its graft (the "graft" input)
};

struct MergeStudyOptions {
  int64_t max_examples = 0;  // test examples scored per task (0: all)
  // stitch (masks learned on the train splits) of the full deltas; 0 steps: not run.
  double stitch_fraction = 0.3;
  int64_t stitch_steps = 0;
  std::string stitch_out;    // where the stitched model is written ("" : not written)
  bool pairs = true;         // also merge every pair of tasks (task_arithmetic, full deltas)
  uint64_t seed = 0;         // DARE's drops
};

// {"max_examples", "specialists": {task: score}, "merge": [{method, input, options, scores: {task:
// score}, normalized, seconds}] (stitch's row also: validation, best_step, out_dir), "best": {method, input, normalized}, "pairs": [{tasks, jaccard,
// normalized, cost}], "pairs_correlation"}. normalized = mean over tasks of merged / specialist
// score (specialists scored on the same examples). `jaccard` (the demo's overlap matrix, task order
// of `tasks`) labels the pairs.
nlohmann::json merge_study(const std::string& base_dir, const std::vector<MergeStudyTask>& tasks,
                           const nlohmann::json& overlap, const MergeStudyOptions& options);

}  // namespace sg::cli
