// DARE (Yu et al. 2024, "Language Models are Super Mario"): drop each delta entry with probability
// 1 - density and divide the kept ones by the density, then combine: dare_linear by task
// arithmetic's weighted sum, dare_ties by ties' sign election (mergekit's two DARE methods).
//
// The drop is a counter-based hash of (seed, input position, tensor name, flat index) — see merge.h
// for the formula — so a merge is reproducible for a seed whatever the thread count or chunking,
// and an independent implementation can recompute the mask.
#include <cmath>
#include <cstdint>
#include <string>

#include "compose/merge_method.h"

namespace sg::compose {

namespace {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t fnv1a64(const std::string& text) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

class DareMerger : public TensorMerger {
 public:
  explicit DareMerger(bool ties) : ties_(ties) {}

  void combine(const TensorJob& job, Chunk& chunk, float* out) const override {
    for (size_t i = 0; i < chunk.inputs.size(); ++i) {
      if (!job.deltas[i].absent()) dare_drop(job, i, chunk.begin, chunk.end, chunk.inputs[i]);
    }
    if (ties_) {
      combine_sign_consensus(job, chunk, out);
    } else {
      combine_weighted_sum(job, chunk, out);
    }
  }

 private:
  bool ties_;
};

// The drop over delta[0, n) for flat indices first, first + 1, ...: keep iff
// (splitmix64(stream + index) >> 40) < threshold, kept entries divided by `divisor` when rescale.
// The hash's 64-bit multiplies vectorize with AVX-512 (vpmullq) and, emulated, with AVX2; the
// results are the same bits on every path (integer hash, one IEEE division).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
void drop_kernel(float* __restrict delta, uint64_t first, uint64_t threshold, float divisor, bool rescale, int64_t n) {
  if (rescale) {
    for (int64_t j = 0; j < n; ++j) {
      const bool keep = (splitmix64(first + static_cast<uint64_t>(j)) >> 40) < threshold;
      delta[j] = keep ? delta[j] / divisor : 0.0f;
    }
  } else {
    for (int64_t j = 0; j < n; ++j) {
      const bool keep = (splitmix64(first + static_cast<uint64_t>(j)) >> 40) < threshold;
      delta[j] = keep ? delta[j] : 0.0f;
    }
  }
}

}  // namespace

void dare_drop(const TensorJob& job, size_t input, int64_t begin, int64_t end, float* delta) {
  const double density = job.densities[input];
  if (density >= 1) return;
  const uint64_t stream =
      splitmix64(splitmix64(job.options->seed) ^ splitmix64(fnv1a64(job.name) + static_cast<uint64_t>(input)));
  const uint64_t threshold = static_cast<uint64_t>(std::floor(density * 16777216.0));  // density * 2^24
  drop_kernel(delta, stream + static_cast<uint64_t>(begin), threshold, static_cast<float>(density),
              job.options->rescale, end - begin);
}

std::unique_ptr<TensorMerger> make_dare_linear_merger() { return std::make_unique<DareMerger>(false); }
std::unique_ptr<TensorMerger> make_dare_ties_merger() { return std::make_unique<DareMerger>(true); }

}  // namespace sg::compose
