// safetensors: a validating, mmap-backed reader and an atomic 8-byte-aligned writer.
// Does not know about models; sharded checkpoints (model.safetensors.index.json) are here too.
//
// Reader contract: open() validates the whole header before any tensor is touched and throws
// sg::Error (one line naming the file and the problem) for anything a hostile or damaged file can
// get wrong. Tensors returned by get() are CPU tensors that view the mapping (zero-copy) when the
// data is aligned to the element size, else copies; the mapping is private copy-on-write, so
// writing to a returned tensor never changes the file. A zero-size tensor comes back as a fresh
// empty tensor (is_zero_copy false). get() of a BOOL tensor throws if a byte is neither 0 nor 1.
// A SafetensorsFile may be read from several threads at once.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/state_dict.h"

namespace sg::util {
class MappedFile;
}

namespace sg::io {

// Largest header accepted (the safetensors spec's own bound).
constexpr uint64_t kSafetensorsMaxHeaderBytes = 100ull * 1000 * 1000;

struct TensorEntry {
  std::string name;
  std::string dtype;           // as in the file: "F32", "BF16", ...
  at::ScalarType scalar_type;  // the LibTorch type for dtype
  std::vector<int64_t> shape;
  uint64_t begin = 0;          // byte offsets into the data section, [begin, end)
  uint64_t end = 0;
};

// "F32" -> at::kFloat etc.; throws for an unknown name.
at::ScalarType scalar_type_from_safetensors(const std::string& dtype);
// at::kFloat -> "F32"; throws for a type safetensors cannot hold.
std::string safetensors_dtype_name(at::ScalarType type);

class SafetensorsFile {
 public:
  // Maps and validates; throws sg::Error on any problem.
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const { return path_; }
  // Entries in data order (by begin offset).
  const std::vector<TensorEntry>& entries() const { return entries_; }
  bool contains(const std::string& name) const;
  const TensorEntry& entry(const std::string& name) const;  // throws if absent
  const Metadata& metadata() const { return metadata_; }
  // The tensor `name`; throws if absent.
  at::Tensor get(const std::string& name) const;
  // All tensors, in data order.
  StateDict load_all() const;
  // Whether get(name) is zero-copy.
  bool is_zero_copy(const std::string& name) const;

 private:
  const TensorEntry* find(const std::string& name) const;  // nullptr if absent
  uint8_t* data_of(const TensorEntry& entry) const;        // the entry's bytes in the mapping

  std::string path_;
  std::shared_ptr<util::MappedFile> mapped_;
  uint64_t data_start_ = 0;  // 8 + header length
  std::vector<TensorEntry> entries_;
  std::vector<size_t> index_by_name_order_;  // indices into entries_, sorted by name
  Metadata metadata_;
};

// Reads one .safetensors file whole (tensors in data order).
StateDict load_safetensors(const std::string& path, Metadata* metadata = nullptr);

// Writes tensors (any device/layout; made contiguous CPU, one at a time) atomically. The header is
// padded with spaces so the data section starts at a multiple of 8; the data is laid out by element
// size, largest first (stable: equal sizes keep the given order), so every tensor is aligned to its
// own element size without padding (the reader rejects holes). Reading the file back therefore
// yields that data order, not necessarily the given one. Throws for an empty name, the reserved
// name "__metadata__", an undefined tensor, or an unsupported dtype (a StateDict cannot hold a
// duplicate name).
void save_safetensors(const std::string& path, const StateDict& tensors,
                      const Metadata& metadata = {});

// The bytes save_safetensors would write (for tests and hashing).
std::string serialize_safetensors(const StateDict& tensors, const Metadata& metadata = {});

// Checkpoint weights in a directory: "model.safetensors", or the shards named by
// "model.safetensors.index.json" (validated: every shard exists, every listed tensor is in its
// shard, no tensor in two shards, no shard tensor missing from the index). model.safetensors wins
// when both are present, as in HF. Sharded tensors come in shard-name order, then data order; the
// shards' metadata is merged (a key with two different values throws). Throws if the directory has
// neither file.
StateDict load_safetensors_dir(const std::string& dir, Metadata* metadata = nullptr);

// Writes "model.safetensors", or, when the tensors exceed max_shard_bytes (> 0), shards
// "model-00001-of-0000N.safetensors" plus "model.safetensors.index.json" (HF layout, with
// metadata.total_size). Stale shards/index from an earlier save in the directory are removed.
void save_safetensors_dir(const std::string& dir, const StateDict& tensors,
                          const Metadata& metadata = {}, uint64_t max_shard_bytes = 0);

}  // namespace sg::io
