// Inside the merge: what one merge method implements (a TensorMerger per tensor), and the chunked,
// parallel reading every method shares. Not a public header; merge.h is the interface.
//
// A tensor is processed in slabs of kSlabElements flat elements (after each, the inputs' mapped
// pages of the slab are released) and each slab in chunks of kChunkElements, in parallel: a chunk
// holds the base's values and every input's delta (or value) there as float32.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "compose/merge.h"
#include "compose/merge_input.h"

namespace sg::compose {

constexpr int64_t kChunkElements = 4096;  // a chunk's buffers stay in L2

// The elementwise kernels are compiled twice, for x86-64-v3 (AVX2) and the baseline, and the CPU
// picks at load time. sg_compose builds with -ffp-contract=off, so both give the same bits.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define SG_MERGE_KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SG_MERGE_KERNEL
#endif
constexpr int64_t kSlabElements = int64_t{1} << 20;

// One floating tensor being merged.
struct TensorJob {
  std::string name;
  at::Tensor base;  // the base's tensor (contiguous, floating)
  int64_t numel = 0;
  std::vector<TensorDelta> deltas;  // one per input, in input order
  std::vector<double> weights;
  std::vector<double> densities;    // resolved (options.density where the input had none)
  const MergeOptions* options = nullptr;
  const MergeBase* merge_base = nullptr;
  std::vector<const MergeInput*> inputs;
  // Whether normalize is on for this method (the option, else the method's default).
  bool normalize = false;
};

// Elements [begin, end): base[] and, per input, its delta (or theta_i when values were asked for)
// as float32. A method may rewrite inputs[] in place.
struct Chunk {
  int64_t begin = 0;
  int64_t end = 0;
  const float* base = nullptr;
  std::vector<float*> inputs;
  std::vector<const uint8_t*> covered;  // with Fill::kDeltasAndCoverage
  double* scratch = nullptr;  // 3 * kChunkElements doubles for the method's own use
  int64_t size() const { return end - begin; }
};

enum class Fill { kDeltas, kValues, kDeltasAndCoverage };

// Per-thread buffers that fill chunks of a job. `active` (empty: all) picks the inputs filled; the
// others are left unfilled (their pointers still valid).
class ChunkReader {
 public:
  ChunkReader(const TensorJob& job, Fill fill, std::vector<bool> active = {});
  Chunk& read(int64_t begin, int64_t end);

 private:
  const TensorJob& job_;
  Fill fill_;
  std::vector<bool> active_;
  std::vector<float> base_buffer_;
  std::vector<std::vector<float>> input_buffers_;
  std::vector<std::vector<uint8_t>> covered_buffers_;
  std::vector<double> scratch_;
  Chunk chunk_;
};

// Calls body(begin, end) for each slab of the job's tensor in order, then releases the slab's
// mapped pages of the base and every input.
void for_each_slab(const TensorJob& job, const std::function<void(int64_t begin, int64_t end)>& body);

// Runs body(begin, end) over [begin, end) in parallel, split at multiples of kChunkElements from
// `begin` (each call gets one contiguous range; it loops over its chunks itself).
void parallel_chunks(int64_t begin, int64_t end, const std::function<void(int64_t begin, int64_t end)>& body);

class TensorMerger {
 public:
  virtual ~TensorMerger() = default;
  // What the chunks passed to combine() hold.
  virtual Fill fill() const { return Fill::kDeltas; }
  // Whether the merge of a tensor no input touches is the base itself (then it is copied).
  virtual bool identity_when_untouched(const TensorJob& job) const { return true; }
  // Per-tensor work before combine (ties: the top-k thresholds). Called once per tensor, before any
  // combine of that tensor, from one thread.
  virtual void prepare(const TensorJob& job) {}
  // The merged values over the chunk into out[0, chunk.size()) (float32). Called from several
  // threads at once.
  virtual void combine(const TensorJob& job, Chunk& chunk, float* out) const = 0;
  // Whether the tensor (after prepare) is merged into one float32 buffer of the whole tensor
  // before any of it goes out: combine's outputs are then provisional until finish().
  virtual bool whole_tensor(const TensorJob& job) const { return false; }
  // After every chunk of a whole-tensor merge: completes out[0, numel) and returns true, or
  // returns false when every chunk must be combined again (the merger has changed its plan; it
  // must return true the next time).
  virtual bool finish(const TensorJob& job, float* out) { return true; }
  // Full reads of tensors' inputs the merger made on its own so far (prepare's passes).
  virtual int64_t extra_passes() const { return 0; }
};

std::unique_ptr<TensorMerger> make_linear_merger();
std::unique_ptr<TensorMerger> make_task_arithmetic_merger();
std::unique_ptr<TensorMerger> make_ties_merger();
std::unique_ptr<TensorMerger> make_dare_linear_merger();
std::unique_ptr<TensorMerger> make_dare_ties_merger();
std::unique_ptr<TensorMerger> make_sparse_union_merger();

// Shared kernels.
// out = base + lambda * m, m = sum_i w_i d_i (over chunk.inputs), / sum of all weights when
// normalize (a sum below 1e-8 in magnitude counts as 1, as in mergekit).
void combine_weighted_sum(const TensorJob& job, const Chunk& chunk, float* out);
// ties' sign election and disjoint sum over chunk.inputs (already trimmed or dropped):
// out = base + lambda * m, m = sum over agreeing w_i d_i [/ sum over agreeing w_i when normalize].
void combine_sign_consensus(const TensorJob& job, const Chunk& chunk, float* out);
// DARE: zeroes delta entries of input `input` dropped by the seeded hash (see merge.h), divides the
// kept ones by the density when rescale. No-op for density >= 1.
void dare_drop(const TensorJob& job, size_t input, int64_t begin, int64_t end, float* delta);

}  // namespace sg::compose
