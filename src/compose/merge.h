// Merging many inputs (fine-tuned checkpoints, sparse / LoRA / dense skills) into one model over a
// shared base, by the methods mergekit users know — linear, task_arithmetic, ties, dare_linear,
// dare_ties — and sparse_union (several sparse grafts at once, overlaps resolved by a rule).
// Streams tensor by tensor and chunk by chunk over the base's tensors: an input's values are read by
// mmap a slab at a time and handed back after, the output is written chunk by chunk at its place in
// the file, so memory stays a few megabytes per input however large the model (a LoRA input adds
// its one dense delta of the tensor being merged); chunks run on all LibTorch threads
// (at::set_num_threads / --threads).
//
// Semantics (theta = merged, b = base, delta_i = theta_i - b in float32, w_i = weight, lambda):
//   linear           theta = sum w_i theta_i / sum w_i  (normalize on, the default; off: no divide).
//                    The base is not one of the averaged models unless listed as an input.
//   task_arithmetic  theta = b + lambda * sum w_i delta_i  (normalize off by default; on: / sum w_i).
//   ties             delta_i trimmed to its top-k magnitudes per tensor, k = floor(density_i * numel)
//                    (ties at the k-th magnitude broken by lower flat index first); sign elected per
//                    element as sign(sum w_i trimmed_i) (mergekit's "sum" method; 0 counts as +);
//                    kept: the entries whose weighted sign sign(w_i trimmed_i) equals it (zeros never);
//                    merged = sum over kept w_i trimmed_i / sum over kept w_i (a divisor of 0 becomes
//                    1; normalize on by default, off: no divide); theta = b + lambda * merged.
//   dare_linear      each delta_i entry dropped with probability 1 - density_i, kept ones divided by
//                    density_i (rescale, default on), then task_arithmetic's sum (normalize off).
//   dare_ties        the same drop, then ties' sign election and kept sum (normalize off by default,
//                    as in mergekit).
//   sparse_union     theta = b + lambda * u, where u at an element is the delta of the one input that
//                    has an entry there (a sparse skill's stored positions; other inputs: nonzero
//                    deltas), and where several do, by --overlap: mean (the weight-weighted mean of
//                    their deltas), magnitude (the largest |delta|; the earlier input on a tie) or
//                    weight (the larger-weight input; the earlier one on a tie). Weights must be > 0.
// These follow mergekit's generalized task arithmetic (merge_methods/generalized_task_arithmetic.py,
// sparsify.py): per-tensor magnitude top-k, "sum" sign consensus on weighted deltas, divisor over the
// kept weights, lambda after normalisation, DARE's 1/density rescale. Differences: sums are in
// float64 (mergekit: the tensor's dtype); density < 1 on a tensor where floor(density * numel) = 0
// drops that input's delta there (mergekit refuses); an input absent from a tensor (a skill that
// does not touch it) has delta 0 there but still counts in normalize's sum of weights.
//
// DARE's randomness is a counter-based hash, so it does not depend on threads or chunking: element
// j of input i (0-based, in input order) in tensor `name` is kept iff
//   (splitmix64(stream + j) >> 40) < floor(density_i * 2^24),
//   stream = splitmix64(splitmix64(seed) ^ splitmix64(fnv1a64(name) + i)),
// with splitmix64 and 64-bit FNV-1a as usually defined (see merge_dare.cpp).
//
// Non-floating tensors (integer buffers) are copied from the base. Tensors no input touches are the
// base's. The output dtype of floating tensors is the base's unless MergeOptions::dtype says.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "compose/merge_input.h"
#include "io/state_dict.h"

namespace sg::compose {

enum class MergeMethod { kLinear, kTaskArithmetic, kTies, kDareLinear, kDareTies, kSparseUnion };
// "linear" -> kLinear, ...; throws listing the methods for an unknown name.
MergeMethod parse_merge_method(const std::string& name);
std::string merge_method_name(MergeMethod method);
// "linear, task_arithmetic, ties, dare_linear, dare_ties, sparse_union"
std::string merge_method_list();

enum class OverlapRule { kMean, kMagnitude, kWeight };
OverlapRule parse_overlap_rule(const std::string& name);  // mean | magnitude | weight
std::string overlap_rule_name(OverlapRule rule);

struct MergeOptions {
  MergeMethod method = MergeMethod::kTaskArithmetic;
  double lambda = 1.0;   // scale of the merged delta (not linear)
  double density = 1.0; // default density for inputs without their own (ties, dare_*), in (0, 1]
  int normalize = -1;    // -1: the method's default (linear, ties: 1; the others: 0); 0 or 1
  bool rescale = true;   // dare_*: divide kept entries by the density
  uint64_t seed = 0;     // dare_*
  OverlapRule overlap = OverlapRule::kMean;  // sparse_union
  std::string dtype;     // output dtype of floating tensors: "" (the base's), float32, bfloat16, float16
};

// One input of a merge by path, with its parameters.
struct MergeInputSpec {
  std::string path;      // checkpoint directory or skill file
  double weight = 1.0;
  double density = -1;   // < 0: MergeOptions::density
};

struct MergeSpec {
  std::string base;  // the base checkpoint directory
  std::vector<MergeInputSpec> inputs;
  MergeOptions options;
};

// An opened input with its parameters (in-memory inputs: MergeInput::from_*).
struct WeightedInput {
  MergeInput input;
  double weight = 1.0;
  double density = -1;
};

struct MergeReport {
  std::string method;
  std::string out_dir;       // "" for an in-memory merge
  nlohmann::json inputs = nlohmann::json::array();  // [{path, kind, weight, density}]
  int64_t tensors = 0;       // tensors written
  int64_t merged_tensors = 0;  // tensors some input changed
  int64_t elements = 0;      // floating elements merged
  uint64_t bytes_read = 0;   // base + input tensor bytes read (once each; extra passes not counted)
  int64_t extra_passes = 0;  // full reads of a tensor's inputs besides the merge's own (ties' top-k search)
  uint64_t bytes_written = 0;  // output tensor bytes
  double seconds = 0;        // the merge, writing and fsync included
  double commit_seconds = 0;  // of which the final fsync + rename of the checkpoint (disk-bound)
  int threads = 1;
  bool direct_io = false;    // the checkpoint went to disk around the page cache (O_DIRECT)
  nlohmann::json to_json() const;
};

// Checks the options against the method and the inputs' parameters (throws with a hint): density in
// (0, 1] and only for ties/dare_*, lambda only for task-vector methods, finite weights, positive
// weights for sparse_union, a nonzero weight sum for normalized linear, a known dtype.
void validate_merge(const MergeOptions& options, const std::vector<double>& weights,
                    const std::vector<double>& densities);

// Opens the base and every input (checked against the base) and merges them.
// To a checkpoint directory: config.json and the tokenizer files copied from the base, the weights
// written streaming and atomically as model.safetensors (stale shards of an earlier save removed).
MergeReport merge_to_checkpoint(const MergeSpec& spec, const std::string& out_dir);
// Into memory: the merged weights in the base's order (fresh tensors), e.g. to score them.
io::StateDict merge_to_state_dict(const MergeSpec& spec, MergeReport* report = nullptr);

// The same over inputs already opened (from files or from memory).
io::StateDict merge_inputs(std::shared_ptr<const MergeBase> base, const std::vector<WeightedInput>& inputs,
                           const MergeOptions& options, MergeReport* report = nullptr);
MergeReport merge_inputs_to_checkpoint(std::shared_ptr<const MergeBase> base, const std::vector<WeightedInput>& inputs,
                                       const MergeOptions& options, const std::string& out_dir);

}  // namespace sg::compose
