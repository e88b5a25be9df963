// What a merge reads: the base checkpoint, and its inputs — fine-tuned checkpoints, sparse skills,
// LoRA skills, dense skills — each seen, per base tensor, as its delta theta_i - theta_base (float32)
// or as absent (a skill that does not touch the tensor). A LoRA weight's delta (scale * B A) is
// formed when its tensor is merged, one tensor at a time. Checkpoints are read by mmap, tensor by
// tensor; nothing loads every tensor's data at once, and release() hands a processed range's pages
// back so a merge's resident memory stays a few tensors' worth, whatever the model size.
//
// Every input is checked against the base when opened: a checkpoint must hold exactly the base's
// tensor names with the base's shapes, a skill must carry the base's fingerprint and name only base
// tensors with their shapes. Errors name the input and the tensor, with a hint.
//
// Thread safety: after opening, every const member may be called from several threads at once
// (fingerprint() is computed once under a lock).
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "io/state_dict.h"

namespace sg::io {
class SafetensorsFile;
}
namespace sg::skills {
struct SparseSkill;
struct LoraSkill;
struct DenseSkill;
}  // namespace sg::skills

namespace sg::compose {

enum class InputKind { kCheckpoint, kSparse, kLora, kDense };
std::string input_kind_name(InputKind kind);  // "checkpoint", "sparse", "lora", "dense"

// The safetensors files of a checkpoint directory, opened by mmap: model.safetensors, or the shards
// of model.safetensors.index.json. Tensors come back as zero-copy views of the mapping.
class CheckpointFiles {
 public:
  static std::shared_ptr<CheckpointFiles> open(const std::string& dir);
  const std::string& dir() const { return dir_; }
  // Tensor names with (dtype, shape), in file order (shard by shard).
  const std::vector<std::string>& names() const { return names_; }
  bool contains(const std::string& name) const { return file_of_.count(name) > 0; }
  std::vector<int64_t> shape(const std::string& name) const;
  at::ScalarType dtype(const std::string& name) const;
  at::Tensor get(const std::string& name) const;  // a view of the mapping (or a copy if misaligned)
  // Drops the mapped pages wholly inside flat elements [begin, end) of `name` from this process
  // (MADV_DONTNEED on the private, never-written mapping: a later read faults them back in from
  // the page cache). No-op for a tensor that get() returns as a copy.
  void release(const std::string& name, int64_t begin, int64_t end) const;

 private:
  std::string dir_;
  std::vector<std::shared_ptr<io::SafetensorsFile>> files_;
  std::map<std::string, size_t> file_of_;  // name -> index into files_
  std::vector<std::string> names_;
};

// The base model: a checkpoint directory (mmap) or weights in memory.
class MergeBase {
 public:
  // DIR/config.json + DIR's safetensors. Throws naming DIR for a missing or damaged checkpoint.
  static std::shared_ptr<MergeBase> open(const std::string& dir);
  // Weights in memory (e.g. a loaded model's model_state_dict); config may be null.
  static std::shared_ptr<MergeBase> from_state_dict(io::StateDict weights, nlohmann::json config = nullptr);

  const std::string& dir() const { return dir_; }  // "" in memory
  const nlohmann::json& config() const { return config_; }
  const io::StateDict& tensors() const { return tensors_; }  // views, in file order
  // io::state_dict_fingerprint of the weights in file order; computed on first use (a full pass).
  const std::string& fingerprint() const;
  // Whether a skill made for `fingerprint` belongs to this base. Tries file order first; a skill
  // is fingerprinted over the model's parameter order, which for a checkpoint skillgraft did not
  // write can differ, so a mismatch is re-checked over model::load_model_dir's order.
  bool matches_fingerprint(const std::string& fingerprint) const;
  void release(const std::string& name, int64_t begin, int64_t end) const;

 private:
  std::string dir_;
  nlohmann::json config_;
  io::StateDict tensors_;
  std::shared_ptr<CheckpointFiles> files_;  // null in memory
  mutable std::mutex fingerprint_mutex_;
  mutable std::string fingerprint_;
  mutable std::string model_order_fingerprint_;
};

// One input's view of one base tensor: how to produce its delta over any range of flat elements.
struct TensorDelta {
  enum class Form {
    kAbsent,  // the input leaves this tensor as the base has it (delta 0)
    kValues,  // `values` is theta_i (any floating dtype, the base's shape): delta = theta_i - theta_base
    kDense,   // `dense` is the delta itself (float32, contiguous)
    kSparse,  // delta `sparse_delta` at sorted flat `sparse_indices` (int64), 0 elsewhere
  };
  Form form = Form::kAbsent;
  at::Tensor values;
  at::Tensor dense;
  at::Tensor sparse_indices;
  at::Tensor sparse_delta;

  bool absent() const { return form == Form::kAbsent; }
  // out[j - begin] = delta at flat element j, for j in [begin, end); base[] holds the base's values
  // there as float32 (what a kValues delta is taken against).
  void fill_delta(int64_t begin, int64_t end, const float* base, float* out) const;
  // out = theta_i over [begin, end): kValues reads the input's own values (exactly, not base +
  // delta); the others add their delta to base[].
  void fill_values(int64_t begin, int64_t end, const float* base, float* out) const;
  // covered[j - begin] = 1 where the input has an entry: a sparse skill's stored positions, else
  // where the delta is nonzero. delta[] is what fill_delta gave for the same range.
  void fill_coverage(int64_t begin, int64_t end, const float* delta, uint8_t* covered) const;
};

class MergeInput {
 public:
  // Opens PATH by what it is: a directory is a checkpoint (config.json + safetensors); a file is a
  // skill file whose metadata says its kind (sparse, lora, dense; neurons cannot be merged).
  // Checks it against `base` (see the top of the file).
  static MergeInput open(const std::string& path, std::shared_ptr<const MergeBase> base);
  // In memory. `label` names the input in messages. Skills are checked against the base's
  // fingerprint unless check_base is false.
  static MergeInput from_state_dict(io::StateDict weights, std::shared_ptr<const MergeBase> base,
                                    const std::string& label);
  static MergeInput from_sparse_skill(skills::SparseSkill skill, std::shared_ptr<const MergeBase> base,
                                      bool check_base = true);
  static MergeInput from_lora_skill(skills::LoraSkill skill, std::shared_ptr<const MergeBase> base,
                                    bool check_base = true);
  static MergeInput from_dense_skill(skills::DenseSkill skill, std::shared_ptr<const MergeBase> base,
                                     bool check_base = true);

  InputKind kind() const { return kind_; }
  const std::string& label() const { return label_; }  // the path, or the label/task given
  // Whether it changes base tensor `name` at all.
  bool touches(const std::string& name) const;
  // Its delta over base tensor `name`. A LoRA weight's delta (scale * B A) is computed here, once
  // per call: keep the result while the tensor is merged, drop it after.
  TensorDelta tensor(const std::string& name) const;
  // The whole delta of `name` as float32 (undefined when absent): for tests and small models.
  at::Tensor delta(const std::string& name) const;
  // Drops mapped pages of [begin, end) of `name` (see CheckpointFiles::release).
  void release(const std::string& name, int64_t begin, int64_t end) const;

 private:
  InputKind kind_ = InputKind::kCheckpoint;
  std::string label_;
  std::shared_ptr<const MergeBase> base_;
  io::StateDict weights_;                   // kCheckpoint: theta_i (views)
  std::shared_ptr<CheckpointFiles> files_;  // kCheckpoint from a directory
  std::shared_ptr<const skills::SparseSkill> sparse_;
  std::shared_ptr<const skills::LoraSkill> lora_;
  std::shared_ptr<const skills::DenseSkill> dense_;
};

// float32 copy of flat elements [begin, end) of a contiguous floating tensor (F32, BF16, F16, F64).
void read_as_float(const at::Tensor& tensor, int64_t begin, int64_t end, float* out);

}  // namespace sg::compose
