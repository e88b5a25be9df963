// HF checkpoint directories at the file level: config.json (as JSON) + safetensors weights,
// sharded or not. Knows nothing of architectures (model/ interprets the config).
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "io/state_dict.h"

namespace sg::io {

// Parses a JSON file; errors name the file and the position of a syntax error.
nlohmann::json read_json_file(const std::string& path);
// Writes JSON (indented) atomically.
void write_json_file(const std::string& path, const nlohmann::json& json);

struct HfCheckpoint {
  std::string dir;
  nlohmann::json config;
  StateDict weights;  // views of the mapped files where aligned (see safetensors.h)
};

// Reads DIR/config.json and DIR's safetensors weights. Errors name the directory or file and say
// what is missing (with a hint for a PyTorch-pickle-only checkpoint).
HfCheckpoint read_hf_checkpoint(const std::string& dir);

// Writes DIR/config.json and the weights (HF metadata {"format": "pt"}), creating DIR.
void write_hf_checkpoint(const std::string& dir, const nlohmann::json& config, const StateDict& weights,
                         uint64_t max_shard_bytes = 0);

}  // namespace sg::io
