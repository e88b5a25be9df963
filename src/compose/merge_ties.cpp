// ties (TIES-Merging, Yadav et al. 2023, as mergekit runs it): trim each delta to its top-k
// magnitudes per tensor, elect each element's sign as the sign of the weighted sum of the trimmed
// deltas, sum the weighted entries that agree and divide by their weights (normalize, the default).
// The sign election and disjoint sum are also dare_ties' combine step.
//
// The k-th largest magnitude is found without sorting, by radix selection on the float bits (for
// non-negative floats the bit pattern orders like the value): a histogram of the top 16 bits of
// |delta| over a sample of the chunks guesses the bin holding the k-th; one full pass counts the
// elements above a window of bins around the guess and histograms the window by its low 16 bits,
// which gives the exact threshold t and how many elements equal it. A guess that misses (or a tensor
// too small to sample) costs an exact pass over the top 16 bits and a second window pass. When the
// k-th falls among equal magnitudes (common in bf16 weights), the lowest flat indices are kept: a
// further pass finds the cut index. Every pass reads all inputs at once, streamed by slab like the
// combine, so a large tensor costs about 1.1 reads of its inputs before the combine.
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
// Sampling: every kSampleStride-th chunk, for tensors of at least kSampleMinElements; the window is
// the sampled bin +- kWindowMargin high bins (a high bin is 1/128 of an octave of magnitudes).
constexpr int64_t kSampleStride = 8;
constexpr int64_t kSampleMinElements = 64 * kChunkElements;
constexpr int kWindowMargin = 1;

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
  int64_t need = 0;  // > 0: keep only this many of the elements equal to the threshold (find the cut)
};

// How many magnitude_bits(delta[j]) >= bits (as int32: magnitudes have a zero sign bit).
SG_MERGE_KERNEL int64_t count_bits_at_least(const float* __restrict delta, int32_t bits, int64_t n) {
  int64_t count = 0;
  for (int64_t j = 0; j < n; ++j) {
    int32_t value;
    std::memcpy(&value, delta + j, sizeof value);
    count += (value & 0x7fffffff) >= bits;
  }
  return count;
}

// Histograms the entries of delta whose magnitude's high 16 bits lie in [first, first + span] by
// (high bin - first, low 16 bits) into bins. Few entries fall inside: a loop that vectorizes flags
// them per block of 32, and only the flagged ones are visited (by the set bytes of the flags).
SG_MERGE_KERNEL void histogram_window(const float* __restrict delta, uint32_t first, uint32_t span, int64_t n,
                                      int64_t* __restrict bins) {
  constexpr int64_t kBlock = 32;
  alignas(32) uint8_t flags[kBlock];
  for (int64_t j = 0; j < n; j += kBlock) {
    const int64_t m = std::min(kBlock, n - j);
    if (m == kBlock) {
      for (int64_t l = 0; l < kBlock; ++l) {
        int32_t value;
        std::memcpy(&value, delta + j + l, sizeof value);
        flags[l] = (static_cast<uint32_t>(value & 0x7fffffff) >> 16) - first <= span;
      }
    } else {
      for (int64_t l = 0; l < kBlock; ++l) flags[l] = l < m && (magnitude_bits(delta[j + l]) >> 16) - first <= span;
    }
    for (int64_t q = 0; q < kBlock; q += 8) {
      uint64_t word;
      std::memcpy(&word, flags + q, sizeof word);
      while (word != 0) {
        const int64_t l = q + __builtin_ctzll(word) / 8;
        word &= word - 1;
        const uint32_t bits = magnitude_bits(delta[j + l]);
        ++bins[((bits >> 16) - first) * kLowBins + (bits & 0xffffu)];
      }
    }
  }
}

SG_MERGE_KERNEL void keep_at_least(float* __restrict delta, float t, int64_t n) {
  for (int64_t j = 0; j < n; ++j) delta[j] = std::fabs(delta[j]) >= t ? delta[j] : 0.0f;
}

SG_MERGE_KERNEL void keep_above(float* __restrict delta, float t, int64_t n) {
  for (int64_t j = 0; j < n; ++j) delta[j] = std::fabs(delta[j]) > t ? delta[j] : 0.0f;
}

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

    // The k-th largest magnitude lies in some high bin b. A sample (every kSampleStride-th chunk)
    // guesses b; one full pass then counts the elements above a window of bins around the guess
    // and histograms the window's low bits, which gives the exact threshold when the k-th is in
    // the window. Where it is not (or the tensor is too small to sample), an exact pass over the
    // high bits finds b and a window of b alone follows.
    std::vector<int> window_low(inputs, 0), window_high(inputs, -1);
    std::vector<bool> unresolved = selecting;
    if (job.numel >= kSampleMinElements) {
      std::vector<std::vector<int64_t>> high(inputs);
      for (size_t i = 0; i < inputs; ++i) {
        if (selecting[i]) high[i].assign(kHighBins, 0);
      }
      histogram_pass(job, selecting, high, count_high_bins, kSampleStride);
      for (size_t i = 0; i < inputs; ++i) {
        if (!selecting[i]) continue;
        int64_t sampled = 0;
        for (int64_t count : high[i]) sampled += count;
        const double k_sampled = static_cast<double>(trims_[i].k) * sampled / job.numel;
        int64_t above = 0;
        int bin = kHighBins - 1;
        while (bin > 0 && above + high[i][bin] < k_sampled) above += high[i][bin--];
        window_low[i] = std::max(0, bin - kWindowMargin);
        window_high[i] = std::min(kHighBins - 1, bin + kWindowMargin);
      }
      window_pass(job, selecting, window_low, window_high, unresolved);
    }
    if (std::any_of(unresolved.begin(), unresolved.end(), [](bool b) { return b; })) {
      std::vector<std::vector<int64_t>> high(inputs);
      for (size_t i = 0; i < inputs; ++i) {
        if (unresolved[i]) high[i].assign(kHighBins, 0);
      }
      histogram_pass(job, unresolved, high, count_high_bins, 1);
      for (size_t i = 0; i < inputs; ++i) {
        if (!unresolved[i]) continue;
        int64_t above = 0;
        int bin = kHighBins - 1;
        while (above + high[i][bin] < trims_[i].k) above += high[i][bin--];
        window_low[i] = window_high[i] = bin;
      }
      std::vector<bool> left = unresolved;
      window_pass(job, left, window_low, window_high, unresolved);
      SG_CHECK(std::none_of(unresolved.begin(), unresolved.end(), [](bool b) { return b; }),
               "ties: the top-k threshold of \"" << job.name << "\" was not found; hint: internal error");
    }
    std::vector<bool> cutting(inputs, false);
    bool any_cut = false;
    for (size_t i = 0; i < inputs; ++i) {
      if (selecting[i] && trims_[i].need > 0) {
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
      keep_at_least(delta, t, cut);
      keep_above(delta + cut, t, n - cut);
    }
    combine_sign_consensus(job, chunk, out);
  }

 private:
  // One pass over the inputs in `active` (resolved ones are cleared from `active`): counts the
  // elements above each input's window of high bins [low, high] and histograms the window by
  // (high bin, low 16 bits). Where the k-th largest falls inside, sets the threshold and, when the
  // k-th is one of several equal magnitudes, need = how many of them to keep (else 0).
  void window_pass(const TensorJob& job, const std::vector<bool>& selecting, const std::vector<int>& low,
                   const std::vector<int>& high, std::vector<bool>& active) {
    const size_t inputs = job.deltas.size();
    std::vector<std::vector<int64_t>> counts(inputs);
    for (size_t i = 0; i < inputs; ++i) {
      // (bins in the window) x 65536, then one slot for "above the window".
      if (selecting[i]) counts[i].assign(static_cast<size_t>(high[i] - low[i] + 1) * kLowBins + 1, 0);
    }
    histogram_pass(
        job, selecting, counts,
        [&](size_t i, const float* __restrict delta, int64_t n, int64_t* __restrict bins) {
          // "Above the window" and the window itself, each by a loop that vectorizes.
          const uint32_t first = static_cast<uint32_t>(low[i]), last = static_cast<uint32_t>(high[i]);
          if (last + 1 < static_cast<uint32_t>(kHighBins)) {
            bins[(last - first + 1) * kLowBins] += count_bits_at_least(delta, static_cast<int32_t>((last + 1) << 16), n);
          }
          histogram_window(delta, first, last - first, n, bins);
        },
        1);
    for (size_t i = 0; i < inputs; ++i) {
      if (!selecting[i]) continue;
      Trim& trim = trims_[i];
      const std::vector<int64_t>& c = counts[i];
      int64_t above = c.back();
      int64_t inside = 0;
      for (size_t b = 0; b + 1 < c.size(); ++b) inside += c[b];
      if (above >= trim.k || above + inside < trim.k) continue;  // the k-th is outside the window
      int64_t index = static_cast<int64_t>(c.size()) - 2;
      while (above + c[index] < trim.k) above += c[index--];
      trim.threshold = (static_cast<uint32_t>(low[i] + index / kLowBins) << 16) | static_cast<uint32_t>(index % kLowBins);
      const int64_t take = trim.k - above;  // of the c[index] elements equal to the threshold
      // Zeros add nothing wherever they are kept, so ties at 0 need no cut.
      trim.need = take < c[index] && trim.threshold != 0 ? take : 0;
      active[i] = false;
    }
  }

  // counts[bits >> 16]++ over one chunk of one input's delta.
  static void count_high_bins(size_t, const float* __restrict delta, int64_t n, int64_t* __restrict bins) {
    for (int64_t j = 0; j < n; ++j) ++bins[magnitude_bits(delta[j]) >> 16];
  }

  // One pass over every selecting input, over every stride-th chunk: count(i, delta, n, bins) adds
  // a chunk of input i into its histogram. Each thread counts into its own histograms (allocated
  // once per pass), summed at the end.
  template <typename Count>
  void histogram_pass(const TensorJob& job, const std::vector<bool>& selecting,
                      std::vector<std::vector<int64_t>>& counts, Count count, int64_t stride) {
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
          if ((c / kChunkElements) % stride != 0) continue;
          Chunk& chunk = reader.read(c, std::min(c + kChunkElements, end));
          for (size_t i = 0; i < counts.size(); ++i) {
            if (selecting[i]) count(i, chunk.inputs[i], chunk.size(), local[i].data());
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

namespace {

// elected[j] += w * delta[j]
SG_MERGE_KERNEL void accumulate(double* __restrict elected, const float* __restrict delta, double w, int64_t n) {
  for (int64_t j = 0; j < n; ++j) elected[j] += w * delta[j];
}

// The elected sign is + where the sum is >= 0 (elected[] becomes +-1).
SG_MERGE_KERNEL void sign_of(double* __restrict elected, int64_t n) {
  for (int64_t j = 0; j < n; ++j) elected[j] = elected[j] >= 0 ? 1.0 : -1.0;
}

// An entry agrees when its weighted value has the elected sign: weighted * sign > 0 (so a zero
// entry never does); agreeing entries add to sum, their weights to divisor.
SG_MERGE_KERNEL void add_agreeing(double* __restrict sum, double* __restrict divisor, const double* __restrict elected,
                                  const float* __restrict delta, double w, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const double weighted = w * delta[j];
    const bool agree = weighted * elected[j] > 0;
    sum[j] += agree ? weighted : 0.0;
    divisor[j] += agree ? w : 0.0;
  }
}

SG_MERGE_KERNEL void finish_normalized(float* __restrict out, const float* __restrict base, const double* __restrict sum,
                                       const double* __restrict divisor, double lambda, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const double d = divisor[j] == 0 ? 1.0 : divisor[j];
    out[j] = base[j] + static_cast<float>(sum[j] / d * lambda);
  }
}

SG_MERGE_KERNEL void finish_sum(float* __restrict out, const float* __restrict base, const double* __restrict sum,
                                double lambda, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] = base[j] + static_cast<float>(sum[j] * lambda);
}

}  // namespace

void combine_sign_consensus(const TensorJob& job, const Chunk& chunk, float* out) {
  const int64_t n = chunk.size();
  double* elected = chunk.scratch;
  double* sum = chunk.scratch + kChunkElements;
  double* divisor = chunk.scratch + 2 * kChunkElements;
  std::fill(elected, elected + n, 0.0);
  for (size_t i = 0; i < chunk.inputs.size(); ++i) {
    if (!job.deltas[i].absent()) accumulate(elected, chunk.inputs[i], job.weights[i], n);
  }
  sign_of(elected, n);
  std::fill(sum, sum + n, 0.0);
  std::fill(divisor, divisor + n, 0.0);
  for (size_t i = 0; i < chunk.inputs.size(); ++i) {
    if (!job.deltas[i].absent()) add_agreeing(sum, divisor, elected, chunk.inputs[i], job.weights[i], n);
  }
  if (job.normalize) {
    finish_normalized(out, chunk.base, sum, divisor, job.options->lambda, n);
  } else {
    finish_sum(out, chunk.base, sum, job.options->lambda, n);
  }
}

std::unique_ptr<TensorMerger> make_ties_merger() { return std::make_unique<TiesMerger>(); }

}  // namespace sg::compose
