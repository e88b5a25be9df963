// Built-in tasks: small train/validation/test sets generated from a seed (arithmetic, string
// edits, word lists) or from data the machine already has (gettext catalogues, iso-codes).
// Generation only; reading and writing task files is task_file.h.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "data/task_file.h"

namespace sg::data {

struct BuiltinTaskInfo {
  std::string name;
  std::string kind;    // "elicited" (a base model may already know it) or "built" (a skill to add)
  std::string metric;  // "exact_match" or "choice_accuracy"
  std::string source;  // where the examples come from
  std::string description;
};

// Every built-in task, in a fixed order.
const std::vector<BuiltinTaskInfo>& builtin_tasks();

struct BuiltinTaskOptions {
  uint64_t seed = 0;
  int64_t train_size = 400;  // validation and test get train_size / 4 each
  std::string locale_dir = "/usr/share/locale";               // langid
  std::string iso_codes_dir = "/usr/share/iso-codes/json";    // country_code, currency
};

// Generates task `name`; the same name, options and machine data give identical splits.
// Throws sg::Error for an unknown name (listing the names), a train_size below 4 or larger than
// the task can supply without repeating, and missing system data (with the package to install).
TaskSplits make_builtin_task(const std::string& name, const BuiltinTaskOptions& options);

// A uniform integer in [0, n) by rejection, so the same seed gives the same value with every
// standard library (std::uniform_int_distribution's algorithm is unspecified). n must be > 0.
uint64_t uniform_below(std::mt19937_64& rng, uint64_t n);

}  // namespace sg::data
