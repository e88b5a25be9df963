#include "io/hf_checkpoint.h"

#include "io/safetensors.h"
#include "util/error.h"
#include "util/file.h"

namespace sg::io {

nlohmann::json read_json_file(const std::string& path) {
  std::string text = util::read_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    SG_FAIL(path << ": not valid JSON (byte " << e.byte << "); hint: is the file complete?");
  }
}

void write_json_file(const std::string& path, const nlohmann::json& json) {
  util::write_file_atomic(path, json.dump(2) + "\n");
}

HfCheckpoint read_hf_checkpoint(const std::string& dir) {
  SG_CHECK(util::file_exists(dir), dir << ": no such checkpoint directory; hint: check the path, "
                                          "or convert a llama2.c model with `skillgraft convert`");
  SG_CHECK(util::is_directory(dir), dir << ": expected a checkpoint directory (config.json + "
                                           "*.safetensors), got a file");
  std::string config_path = util::join_path(dir, "config.json");
  SG_CHECK(util::file_exists(config_path), dir << ": no config.json; hint: an HF checkpoint "
                                                  "directory holds config.json and model.safetensors");
  HfCheckpoint checkpoint;
  checkpoint.dir = dir;
  checkpoint.config = read_json_file(config_path);
  bool has_safetensors = util::file_exists(util::join_path(dir, "model.safetensors")) ||
                         util::file_exists(util::join_path(dir, "model.safetensors.index.json"));
  if (!has_safetensors) {
    bool has_pickle = util::file_exists(util::join_path(dir, "pytorch_model.bin")) ||
                      util::file_exists(util::join_path(dir, "pytorch_model.bin.index.json"));
    SG_CHECK(!has_pickle, dir << ": weights are PyTorch pickles (pytorch_model.bin), which skillgraft "
                                 "does not unpickle; hint: re-save in Python with "
                                 "model.save_pretrained(dir, safe_serialization=True)");
    SG_FAIL(dir << ": no model.safetensors or model.safetensors.index.json; hint: is the "
                   "checkpoint complete?");
  }
  checkpoint.weights = load_safetensors_dir(dir);
  return checkpoint;
}

void write_hf_checkpoint(const std::string& dir, const nlohmann::json& config, const StateDict& weights,
                         uint64_t max_shard_bytes) {
  util::make_directories(dir);
  save_safetensors_dir(dir, weights, {{"format", "pt"}}, max_shard_bytes);
  write_json_file(util::join_path(dir, "config.json"), config);
}

}  // namespace sg::io
