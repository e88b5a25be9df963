// Training checkpoints for --resume: the trainable tensors, the optimizer state and the trainer's
// position, in DIR/checkpoint/. Written as a new directory that replaces the old one by rename, so
// a crash at any moment leaves one complete checkpoint (DIR/checkpoint or DIR/checkpoint.old).
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "io/state_dict.h"

namespace sg::train {

struct TrainCheckpoint {
  io::StateDict trainable;  // the trained tensors by name
  io::StateDict optimizer;  // Optimizer::state()
  nlohmann::json state;     // step, best score, fingerprint, metrics log ...
};

// Writes `checkpoint` as run_dir/checkpoint (replacing the previous one).
void save_train_checkpoint(const std::string& run_dir, const TrainCheckpoint& checkpoint);

// Whether run_dir holds a checkpoint (complete, or the previous one kept during a replace).
bool has_train_checkpoint(const std::string& run_dir);

// Reads the checkpoint of run_dir; throws naming the directory when there is none or it is damaged.
TrainCheckpoint load_train_checkpoint(const std::string& run_dir);

// Removes run_dir's checkpoint (after a run completes).
void remove_train_checkpoint(const std::string& run_dir);

}  // namespace sg::train
