#include "train/checkpoint.h"

#include <unistd.h>

#include <filesystem>

#include "io/hf_checkpoint.h"
#include "io/safetensors.h"
#include "util/error.h"
#include "util/file.h"

namespace sg::train {

namespace {

namespace fs = std::filesystem;

constexpr const char* kFormat = "skillgraft.train_checkpoint";
constexpr int kVersion = 1;

std::string current_dir(const std::string& run_dir) { return util::join_path(run_dir, "checkpoint"); }
std::string previous_dir(const std::string& run_dir) { return util::join_path(run_dir, "checkpoint.old"); }

bool complete(const std::string& dir) {
  return util::file_exists(util::join_path(dir, "trainer_state.json")) &&
         util::file_exists(util::join_path(dir, "trainable.safetensors")) &&
         util::file_exists(util::join_path(dir, "optimizer.safetensors"));
}

}  // namespace

void save_train_checkpoint(const std::string& run_dir, const TrainCheckpoint& checkpoint) {
  util::make_directories(run_dir);
  const std::string staging = util::join_path(run_dir, "checkpoint.tmp." + std::to_string(::getpid()));
  fs::remove_all(staging);
  util::make_directories(staging);
  io::save_safetensors(util::join_path(staging, "trainable.safetensors"), checkpoint.trainable);
  io::save_safetensors(util::join_path(staging, "optimizer.safetensors"), checkpoint.optimizer);
  nlohmann::json state = checkpoint.state;
  state["format"] = kFormat;
  state["version"] = kVersion;
  // Written last: its presence marks the directory complete.
  io::write_json_file(util::join_path(staging, "trainer_state.json"), state);
  const std::string current = current_dir(run_dir), previous = previous_dir(run_dir);
  fs::remove_all(previous);
  if (fs::exists(current)) fs::rename(current, previous);
  fs::rename(staging, current);
  util::fsync_directory(run_dir);
  fs::remove_all(previous);
}

bool has_train_checkpoint(const std::string& run_dir) {
  return complete(current_dir(run_dir)) || complete(previous_dir(run_dir));
}

TrainCheckpoint load_train_checkpoint(const std::string& run_dir) {
  std::string dir = current_dir(run_dir);
  if (!complete(dir)) dir = previous_dir(run_dir);
  SG_CHECK(complete(dir), "--resume: " << run_dir
                                       << " holds no training checkpoint (checkpoint/trainer_state.json); hint: "
                                          "run without --resume to start, or give the --out of the interrupted run");
  TrainCheckpoint checkpoint;
  checkpoint.state = io::read_json_file(util::join_path(dir, "trainer_state.json"));
  SG_CHECK(checkpoint.state.is_object() && checkpoint.state.value("format", "") == kFormat,
           dir << "/trainer_state.json: not a skillgraft training checkpoint");
  SG_CHECK(checkpoint.state.value("version", 0) == kVersion,
           dir << "/trainer_state.json: version " << checkpoint.state.value("version", 0)
               << " is not supported (this build reads " << kVersion << ")");
  // Copies, not views: the files may be replaced while the tensors are in use.
  for (auto& item : io::load_safetensors(util::join_path(dir, "trainable.safetensors"))) {
    checkpoint.trainable.insert(item.key(), item.value().clone());
  }
  for (auto& item : io::load_safetensors(util::join_path(dir, "optimizer.safetensors"))) {
    checkpoint.optimizer.insert(item.key(), item.value().clone());
  }
  return checkpoint;
}

void remove_train_checkpoint(const std::string& run_dir) {
  fs::remove_all(current_dir(run_dir));
  fs::remove_all(previous_dir(run_dir));
}

}  // namespace sg::train
