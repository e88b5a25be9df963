// ties (TIES-Merging, Yadav et al. 2023, as mergekit runs it): trim each delta to its top-k
// magnitudes per tensor, elect each element's sign as the sign of the weighted sum of the trimmed
// deltas, sum the weighted entries that agree and divide by their weights (normalize, the default).
// The sign election and disjoint sum are also dare_ties' combine step.
//
// The k-th largest magnitude is found without sorting, by radix selection on the float bits (for
// non-negative floats the bit pattern orders like the value): pass 1 counts the top 16 bits of
// |delta| over the whole tensor, pass 2 the low 16 bits inside the bin holding the k-th, which gives
// the exact threshold t and how many elements equal it. When the k-th falls among equal magnitudes
// (common in bf16 weights), the lowest flat indices are kept: a third pass finds the cut index.
// Every pass reads all inputs at once, streamed by slab like the combine.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "compose/merge_method.h"
#include "util/error.h"

namespace sg::compose {

namespace {

constexpr int kHighBins = 1 << 15;  // |x| has a zero sign bit: bits >> 16 < 2^15
constexpr int kLowBins = 1 << 16;

inline uint32_t magnitude_bits(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits & 0x7fffffffu;
}

// Which entries of one input's delta a tensor keeps.
struct Trim {
  bool active = false;   // trimming at all (density < 1, touched, k < numel)
  bool keep_none = false;
  int64_t k = 0;
  uint32_t threshold = 0;  // bits of the k-th largest magnitude
  int64_t cut = std::numeric_limits<int64_t>::max();  // elements equal to the threshold are kept below this index
  // selection state
  int high_bin = 0;
  int64_t above = 0;  // count strictly above the current bin / threshold
  int64_t need = 0;   // how many to take from the current bin
};

class TiesMerger : public TensorMerger {
 public:
  void prepare(const TensorJob& job) override {
    const size_t inputs = job.deltas.size();
    trims_.assign(inputs, Trim());
    std::vector<bool> selecting(inputs, false);
    bool any = false;
    for (size_t i = 0; i < inputs; ++i) {
      if (job.deltas[i].absent() || job.densities[i] >= 1) continue;
      Trim& trim = trims_[i];
      trim.k = static_cast<int64_t>(std::floor(job.densities[i] * static_cast<double>(job.numel)));
      if (trim.k >= job.numel) continue;
      trim.active = true;
      if (trim.k <= 0) {
        trim.keep_none = true;
        continue;
      }
      selecting[i] = true;
      any = true;
    }
    if (!any) return;

    // Pass 1: histogram of the high 16 bits.
    std::vector<std::vector<int64_t>> high(inputs);
    for (size_t i = 0; i < inputs; ++i) {
      if (selecting[i]) high[i].assign(kHighBins, 0);
    }
    histogram_pass(job, selecting, high, [](size_t, uint32_t bits) -> int { return static_cast<int>(bits >> 16); });
    for (size_t i = 0; i < inputs; ++i) {
      if (!selecting[i]) continue;
      Trim& trim = trims_[i];
      int64_t above = 0;
      int bin = kHighBins - 1;
      while (above + high[i][bin] < trim.k) above += high[i][bin--];
      trim.high_bin = bin;
      trim.above = above;
      trim.need = trim.k - above;
    }

    // Pass 2: histogram of the low 16 bits inside each input's bin.
    std::vector<std::vector<int64_t>> low(inputs);
    for (size_t i = 0; i < inputs; ++i) {
      if (selecting[i]) low[i].assign(kLowBins, 0);
    }
    histogram_pass(job, selecting, low, [this](size_t i, uint32_t bits) -> int {
      return static_cast<int>(bits >> 16) == trims_[i].high_bin ? static_cast<int>(bits & 0xffffu) : -1;
    });
    std::vector<bool> cutting(inputs, false);
    bool any_cut = false;
    for (size_t i = 0; i < inputs; ++i) {
      if (!selecting[i]) continue;
      Trim& trim = trims_[i];
      int64_t above = 0;
      int bin = kLowBins - 1;
      while (above + low[i][bin] < trim.need) above += low[i][bin--];
      trim.threshold = (static_cast<uint32_t>(trim.high_bin) << 16) | static_cast<uint32_t>(bin);
      const int64_t take = trim.need - above;  // of the low[i][bin] elements equal to the threshold
      // Zeros add nothing wherever they are kept, so ties at 0 need no cut.
      if (take < low[i][bin] && trim.threshold != 0) {
        trim.need = take;
        cutting[i] = true;
        any_cut = true;
      }
    }
    if (any_cut) find_cuts(job, cutting);
  }

  void combine(const TensorJob& job, Chunk& chunk, float* out) const override {
    const int64_t n = chunk.size();
    for (size_t i = 0; i < trims_.size(); ++i) {
      const Trim& trim = trims_[i];
      if (!trim.active) continue;
      float* __restrict delta = chunk.inputs[i];
      if (trim.keep_none) {
        std::fill(delta, delta + n, 0.0f);
        continue;
      }
      // Keep |delta| > t, and |delta| == t below the cut index (as float compares, which
      // vectorize; for non-negative floats they order like the bits).
      float t;
      std::memcpy(&t, &trim.threshold, sizeof t);
      const int64_t cut = std::clamp<int64_t>(trim.cut - chunk.begin, 0, n);  // in chunk coordinates
      for (int64_t j = 0; j < cut; ++j) delta[j] = std::fabs(delta[j]) >= t ? delta[j] : 0.0f;
      for (int64_t j = cut; j < n; ++j) delta[j] = std::fabs(delta[j]) > t ? delta[j] : 0.0f;
    }
    combine_sign_consensus(job, chunk, out);
  }

 private:
  // One pass over every selecting input: counts[i][bin_of(i, bits)]++ (a bin < 0 is skipped).
  // Each thread counts into its own histograms (allocated once per pass), summed at the end.
  template <typename BinOf>
  void histogram_pass(const TensorJob& job, const std::vector<bool>& selecting,
                      std::vector<std::vector<int64_t>>& counts, BinOf bin_of) {
    const int threads = at::get_num_threads();
    std::vector<std::vector<std::vector<int64_t>>> per_thread(threads);
    for (auto& local : per_thread) {
      local.resize(counts.size());
      for (size_t i = 0; i < counts.size(); ++i) local[i].assign(counts[i].size(), 0);
    }
    for_each_slab(job, [&](int64_t slab_begin, int64_t slab_end) {
      parallel_chunks(slab_begin, slab_end, [&](int64_t begin, int64_t end) {
        const int thread = at::get_thread_num();
        SG_CHECK(thread >= 0 && thread < threads, "thread " << thread << " of " << threads << "; hint: internal error");
        std::vector<std::vector<int64_t>>& local = per_thread[thread];
        ChunkReader reader(job, Fill::kDeltas, selecting);
        for (int64_t c = begin; c < end; c += kChunkElements) {
          Chunk& chunk = reader.read(c, std::min(c + kChunkElements, end));
          for (size_t i = 0; i < counts.size(); ++i) {
            if (!selecting[i]) continue;
            const float* __restrict delta = chunk.inputs[i];
            int64_t* __restrict bins = local[i].data();
            for (int64_t j = 0, n = chunk.size(); j < n; ++j) {
              const int bin = bin_of(i, magnitude_bits(delta[j]));
              if (bin >= 0) ++bins[bin];
            }
          }
        }
      });
    });
    for (const auto& local : per_thread) {
      for (size_t i = 0; i < counts.size(); ++i) {
        for (size_t b = 0; b < counts[i].size(); ++b) counts[i][b] += local[i][b];
      }
    }
  }

  // For each cutting input: the flat index just past the need-th element (in index order) equal to
  // the threshold. Counts per chunk in parallel, then scans the one chunk where the count is reached.
  void find_cuts(const TensorJob& job, const std::vector<bool>& cutting) {
    const size_t inputs = job.deltas.size();
    const int64_t chunks = (job.numel + kChunkElements - 1) / kChunkElements;
    std::vector<std::vector<int64_t>> per_chunk(inputs);
    for (size_t i = 0; i < inputs; ++i) {
      if (cutting[i]) per_chunk[i].assign(chunks, 0);
    }
    for_each_slab(job, [&](int64_t slab_begin, int64_t slab_end) {
      parallel_chunks(slab_begin, slab_end, [&](int64_t begin, int64_t end) {
        ChunkReader reader(job, Fill::kDeltas, cutting);
        for (int64_t c = begin; c < end; c += kChunkElements) {
          Chunk& chunk = reader.read(c, std::min(c + kChunkElements, end));
          for (size_t i = 0; i < inputs; ++i) {
            if (!cutting[i]) continue;
            int64_t count = 0;
            for (int64_t j = 0, n = chunk.size(); j < n; ++j) count += magnitude_bits(chunk.inputs[i][j]) == trims_[i].threshold;
            per_chunk[i][c / kChunkElements] = count;
          }
        }
      });
    });
    for (size_t i = 0; i < inputs; ++i) {
      if (!cutting[i]) continue;
      Trim& trim = trims_[i];
      int64_t seen = 0;
      int64_t c = 0;
      while (seen + per_chunk[i][c] < trim.need) seen += per_chunk[i][c++];
      std::vector<bool> only(inputs, false);
      only[i] = true;
      ChunkReader reader(job, Fill::kDeltas, only);
      const int64_t begin = c * kChunkElements;
      Chunk& chunk = reader.read(begin, std::min(begin + kChunkElements, job.numel));
      for (int64_t j = 0, n = chunk.size(); j < n; ++j) {
        if (magnitude_bits(chunk.inputs[i][j]) == trim.threshold && ++seen == trim.need) {
          trim.cut = begin + j + 1;
          break;
        }
      }
    }
  }

  std::vector<Trim> trims_;  // per input, for the tensor being merged
};

}  // namespace

void combine_sign_consensus(const TensorJob& job, const Chunk& chunk, float* out) {
  const int64_t n = chunk.size();
  double* __restrict elected = chunk.scratch;
  double* __restrict sum = chunk.scratch + kChunkElements;
  double* __restrict divisor = chunk.scratch + 2 * kChunkElements;
  std::fill(elected, elected + n, 0.0);
  for (size_t i = 0; i < chunk.inputs.size(); ++i) {
    if (job.deltas[i].absent()) continue;
    const double w = job.weights[i];
    const float* __restrict delta = chunk.inputs[i];
    for (int64_t j = 0; j < n; ++j) elected[j] += w * delta[j];
  }
  // The elected sign is + where the sum is >= 0 (elected[] becomes +-1); an entry agrees when its
  // weighted value has that sign: weighted * sign > 0 (so a zero entry never does).
  for (int64_t j = 0; j < n; ++j) elected[j] = elected[j] >= 0 ? 1.0 : -1.0;
  std::fill(sum, sum + n, 0.0);
  std::fill(divisor, divisor + n, 0.0);
  for (size_t i = 0; i < chunk.inputs.size(); ++i) {
    if (job.deltas[i].absent()) continue;
    const double w = job.weights[i];
    const float* __restrict delta = chunk.inputs[i];
    for (int64_t j = 0; j < n; ++j) {
      const double weighted = w * delta[j];
      const bool agree = weighted * elected[j] > 0;
      sum[j] += agree ? weighted : 0.0;
      divisor[j] += agree ? w : 0.0;
    }
  }
  const double lambda = job.options->lambda;
  const float* __restrict base = chunk.base;
  float* __restrict result = out;
  if (job.normalize) {
    for (int64_t j = 0; j < n; ++j) {
      const double d = divisor[j] == 0 ? 1.0 : divisor[j];
      result[j] = base[j] + static_cast<float>(sum[j] / d * lambda);
    }
  } else {
    for (int64_t j = 0; j < n; ++j) result[j] = base[j] + static_cast<float>(sum[j] * lambda);
  }
}

std::unique_ptr<TensorMerger> make_ties_merger() { return std::make_unique<TiesMerger>(); }

}  // namespace sg::compose
