// Helpers for the skill library tests: small random sparse skill files (the skills API on random
// state dicts) and sha256 from Python's hashlib (an independent reference for ids).
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "io/fingerprint.h"
#include "skills/skill.h"
#include "test_env.h"

namespace sg::test {

struct SkillFileFacts {
  std::string path;
  std::string task;
  std::string base_fingerprint;
  int64_t parameter_count = 0;  // selected positions, counted from the mask
};

// A random base (seeded by base_seed: skills of one base share it) and fine-tune (seed), a mask of
// about `fraction` of the positions, saved as a sparse skill file.
inline SkillFileFacts make_test_skill(const std::string& path, uint64_t seed, const std::string& task,
                                      uint64_t base_seed = 1, double fraction = 0.3) {
  at::manual_seed(base_seed);
  io::StateDict base;
  base.insert("model.layers.0.mlp.up_proj.weight", at::randn({16, 8}));
  base.insert("model.norm.weight", at::randn({8}));
  at::manual_seed(seed * 7919 + 13);
  io::StateDict finetuned;
  std::map<std::string, at::Tensor> mask;
  int64_t selected = 0;
  for (const auto& item : base) {
    finetuned.insert(item.key(), item.value() + 0.1 * at::randn_like(item.value()));
    at::Tensor chosen = at::rand_like(item.value()) < fraction;
    selected += chosen.sum().item<int64_t>();
    mask[item.key()] = chosen;
  }
  skills::SparseSkill skill = skills::make_sparse_skill(base, finetuned, mask, task);
  skills::save_sparse_skill(path, skill);
  return {path, task, io::state_dict_fingerprint(base), selected};
}

// sha256 hex of each file, by /usr/bin/python3 hashlib.
inline std::vector<std::string> python_sha256(const std::vector<std::string>& paths) {
  std::string command = shell_quote(python()) + " -c " +
                        shell_quote("import hashlib,sys\nfor p in sys.argv[1:]: print(hashlib.sha256(open(p,'rb').read()).hexdigest())");
  for (const std::string& path : paths) command += " " + shell_quote(path);
  CommandResult result = run_command(command);
  EXPECT_EQ(result.exit_code, 0) << result.output;
  std::vector<std::string> hashes;
  std::istringstream lines(result.output);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty()) hashes.push_back(line);
  }
  EXPECT_EQ(hashes.size(), paths.size()) << result.output;
  return hashes;
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

}  // namespace sg::test
