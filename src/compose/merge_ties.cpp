// ties (TIES-Merging, Yadav et al. 2023, as mergekit runs it): trim each delta to its top-k
// magnitudes per tensor, elect each element's sign as the sign of the weighted sum of the trimmed
// deltas, sum the weighted entries that agree and divide by their weights (normalize, the default).
// The sign election and disjoint sum are also dare_ties' combine step.
//
// The k-th largest magnitude is found without sorting, by radix selection on the float bits (for
// non-negative floats the bit pattern orders like the value): a histogram of the top 16 bits of
// |delta| over a sample of the chunks (every 8th) guesses the bin holding the k-th, and a window of
// bins around it.
//
// One pass (large tensors whose window holds few entries, the usual case): the merge itself runs
// with every entry above an input's window kept and every entry below it dropped, counting the
// entries above and recording each position where some input's entry falls inside its window
// (index, base value, every input's delta). After the pass the recorded window entries give each
// exact threshold (and, when the k-th falls among equal magnitudes, the cut index: the lowest
// indices are kept), and the recorded positions are merged again with the exact trims into the
// whole-tensor output. The inputs are read once after the sample.
//
// Otherwise (a small tensor, a crowded window, a sample that missed the k-th, or SG_TIES_EXACT=1 in
// the environment): one full pass counts the elements above the window and histograms the window by
// its low 16 bits, which gives the exact threshold; a miss costs an exact pass over the top 16 bits
// and a second window pass; ties at the threshold cost a pass that finds the cut; then the merge.
// Both ways give the same bits.
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "compose/merge_method.h"
#include "util/error.h"
#include "util/file.h"

namespace sg::compose {

namespace {

constexpr int kHighBins = 1 << 15;  // |x| has a zero sign bit: bits >> 16 < 2^15
constexpr int kLowBins = 1 << 16;
// Sampling: every kSampleStride-th chunk, for tensors of at least kSampleMinElements; the window is
// the sampled bin +- kWindowMargin high bins (a high bin is 1/128 of an octave of magnitudes).
constexpr int64_t kSampleStride = 8;
constexpr int64_t kSampleMinElements = 64 * kChunkElements;
constexpr int kWindowMargin = 1;
// One pass is taken when the sample says at most this share of positions falls inside a window.
constexpr double kOnePassMaxCrowding = 0.05;

// Calls f(j) for each j in [0, n) with flags[j] != 0, in order; flags holds whole 8-byte words
// past n (zero there). Few set: it skips by words and visits only the set bytes.
template <typename F>
inline void for_each_flagged(const uint8_t* flags, int64_t n, F&& f) {
  for (int64_t q = 0; q < n; q += 8) {
    uint64_t word;
    std::memcpy(&word, flags + q, sizeof word);
    while (word != 0) {
      f(q + __builtin_ctzll(word) / 8);
      word &= word - 1;
    }
  }
}

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
    for_each_flagged(flags, kBlock, [&](int64_t l) {
      const uint32_t bits = magnitude_bits(delta[j + l]);
      ++bins[((bits >> 16) - first) * kLowBins + (bits & 0xffffu)];
    });
  }
}

// flags[j] |= (magnitude bits of delta[j] in [low, high)); adds the entries at or above `high` to
// *above and those in [low, high) to *inside.
SG_MERGE_KERNEL void flag_window(const float* __restrict delta, uint32_t low, uint32_t high, uint8_t* __restrict flags,
                                 int64_t n, int64_t* above, int64_t* inside) {
  int64_t up = 0, in = 0;
  for (int64_t j = 0; j < n; ++j) {
    uint32_t bits;
    std::memcpy(&bits, delta + j, sizeof bits);
    bits &= 0x7fffffffu;
    const bool is_up = bits >= high;
    const bool is_in = bits >= low && !is_up;
    up += is_up;
    in += is_in;
    flags[j] |= is_in;
  }
  *above += up;
  *inside += in;
}

SG_MERGE_KERNEL int64_t count_flags(const uint8_t* __restrict flags, int64_t n) {
  int64_t count = 0;
  for (int64_t j = 0; j < n; ++j) count += flags[j];
  return count;
}

// Keeps the entries whose magnitude bits are at least `high`.
SG_MERGE_KERNEL void keep_bits_at_least(float* __restrict delta, uint32_t high, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    uint32_t bits;
    std::memcpy(&bits, delta + j, sizeof bits);
    delta[j] = (bits & 0x7fffffffu) >= high ? delta[j] : 0.0f;
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
    one_pass_ = false;
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
    // guesses b and a window of bins around it. Then either the merge runs in one pass, recording
    // the window's entries (when the sample says they are few), or one full pass counts the
    // elements above the window and histograms the window's low bits, which gives the exact
    // threshold when the k-th is in the window. Where it is not (or the tensor is too small to
    // sample), an exact pass over the high bits finds b and a window of b alone follows.
    std::vector<int> window_low(inputs, 0), window_high(inputs, -1);
    std::vector<bool> unresolved = selecting;
    if (job.numel >= kSampleMinElements) {
      std::vector<std::vector<int64_t>> high(inputs);
      for (size_t i = 0; i < inputs; ++i) {
        if (selecting[i]) high[i].assign(kHighBins, 0);
      }
      histogram_pass(job, selecting, high, count_high_bins, kSampleStride);
      double crowding = 0;  // the expected share of positions recorded by one pass (at most)
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
        int64_t inside = 0;
        for (int b = window_low[i]; b <= window_high[i]; ++b) inside += high[i][b];
        crowding += sampled > 0 ? static_cast<double>(inside) / sampled : 1.0;
      }
      // A recorded position costs an index, a base value and every input's delta; one pass is taken
      // when the records are expected to stay under half the tensor's float32 size (they may grow to
      // twice the sample's figure before the exact passes take over) and 5% of positions.
      const double entry_bytes = 12.0 + 4.0 * static_cast<double>(inputs);
      const double limit = std::min(kOnePassMaxCrowding, 2.0 / entry_bytes);
      if (!force_exact() && crowding <= limit) {
        begin_one_pass(job, selecting, window_low, window_high, crowding);
        return;
      }
      window_pass(job, selecting, window_low, window_high, unresolved);
    }
    resolve_exactly(job, selecting, unresolved);
  }

  // After a window pass: an exact pass over the high bits for the inputs still `unresolved` (and a
  // window pass of the bin found), then the cuts of the `selecting` inputs whose k-th falls among
  // equal magnitudes.
  void resolve_exactly(const TensorJob& job, const std::vector<bool>& selecting, std::vector<bool>& unresolved) {
    const size_t inputs = job.deltas.size();
    std::vector<int> window_low(inputs, 0), window_high(inputs, -1);
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

  bool whole_tensor(const TensorJob&) const override { return one_pass_; }
  int64_t extra_passes() const override { return passes_; }

  void combine(const TensorJob& job, Chunk& chunk, float* out) const override {
    if (one_pass_) {
      combine_one_pass(job, chunk, out);
      return;
    }
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

  bool finish(const TensorJob& job, float* out) override {
    if (!one_pass_) return true;
    one_pass_ = false;
    const size_t inputs = job.deltas.size();
    std::vector<int64_t> above(inputs, 0), inside(inputs, 0);
    for (const Record& r : records_) {
      for (size_t i = 0; i < inputs; ++i) {
        above[i] += r.above[i];
        inside[i] += r.inside[i];
      }
    }
    bool found = !overflow_.load();
    for (size_t i = 0; i < inputs; ++i) {
      if (one_pass_inputs_[i]) found = found && above[i] < trims_[i].k && above[i] + inside[i] >= trims_[i].k;
    }
    if (!found) {
      // The sample missed (or the window was more crowded than the sample said): the exact
      // passes, then the merge again.
      release_records();
      std::vector<bool> unresolved = one_pass_inputs_;
      window_pass(job, one_pass_inputs_, window_low_, window_high_, unresolved);
      resolve_exactly(job, one_pass_inputs_, unresolved);
      return false;
    }
    thresholds_from_records(above, inside);
    // The recorded positions, merged again with the exact trims, in batches of a chunk; each
    // thread's records in parallel (they hold distinct positions).
    at::parallel_for(0, static_cast<int64_t>(records_.size()), 1, [&](int64_t first, int64_t last) {
      ChunkBatch batch(inputs);
      auto flush = [&]() {
        Chunk chunk;
        chunk.begin = 0;
        chunk.end = batch.size;
        chunk.base = batch.base.data();
        chunk.scratch = batch.scratch.data();
        for (size_t i = 0; i < inputs; ++i) chunk.inputs.push_back(batch.values[i].data());
        combine_sign_consensus(job, chunk, batch.out.data());
        for (int64_t e = 0; e < batch.size; ++e) out[batch.index[e]] = batch.out[e];
        batch.size = 0;
      };
      for (int64_t t = first; t < last; ++t) {
        const Record& r = records_[static_cast<size_t>(t)];
        for (size_t e = 0; e < r.index.size(); ++e) {
          const int64_t index = r.index[e];
          batch.index[batch.size] = index;
          batch.base[batch.size] = r.base[e];
          for (size_t i = 0; i < inputs; ++i) {
            const float value = r.values[e * inputs + i];
            batch.values[i][batch.size] = kept(trims_[i], value, index) ? value : 0.0f;
          }
          if (++batch.size == kChunkElements) flush();
        }
      }
      if (batch.size > 0) flush();
    });
    release_records();
    return true;
  }

 private:
  // What one thread recorded in a one-pass merge.
  struct Record {
    std::vector<int64_t> index;   // positions with some input's entry in its window
    std::vector<float> base;      // the base there
    std::vector<float> values;    // every input's delta there (inputs per position)
    std::vector<int64_t> above;   // per input: entries above its window
    std::vector<int64_t> inside;  // per input: entries inside it
    std::vector<uint8_t> flags;   // a chunk's "some input inside its window"
  };

  struct ChunkBatch {
    explicit ChunkBatch(size_t inputs)
        : index(kChunkElements), base(kChunkElements), out(kChunkElements), scratch(3 * kChunkElements),
          values(inputs, std::vector<float>(kChunkElements, 0.0f)) {}
    int64_t size = 0;
    std::vector<int64_t> index;
    std::vector<float> base, out;
    std::vector<double> scratch;
    std::vector<std::vector<float>> values;
  };

  static bool force_exact() { return util::env_flag("SG_TIES_EXACT"); }

  // Whether a trimmed input keeps `value` at flat index `index` (the exact trim).
  static bool kept(const Trim& trim, float value, int64_t index) {
    if (!trim.active) return true;
    if (trim.keep_none) return false;
    const uint32_t bits = magnitude_bits(value);
    return bits > trim.threshold || (bits == trim.threshold && index < trim.cut);
  }

  void begin_one_pass(const TensorJob& job, const std::vector<bool>& selecting, const std::vector<int>& low,
                      const std::vector<int>& high, double crowding) {
    const size_t inputs = job.deltas.size();
    one_pass_ = true;
    one_pass_inputs_ = selecting;
    window_low_ = low;
    window_high_ = high;
    low_bits_.assign(inputs, 0);
    high_bits_.assign(inputs, 0);
    for (size_t i = 0; i < inputs; ++i) {
      if (!selecting[i]) continue;
      low_bits_[i] = static_cast<uint32_t>(low[i]) << 16;
      high_bits_[i] = static_cast<uint32_t>(high[i] + 1) << 16;  // 2^31 past the top bin: nothing is above
    }
    // Twice the sampled crowding, and some slack for small tensors: past it, the exact passes.
    record_limit_ = static_cast<int64_t>(2 * crowding * static_cast<double>(job.numel)) + 4 * kChunkElements;
    recorded_.store(0);
    overflow_.store(false);
    records_.assign(static_cast<size_t>(at::get_num_threads()), Record());
    for (Record& r : records_) {
      r.above.assign(inputs, 0);
      r.inside.assign(inputs, 0);
      r.flags.assign(kChunkElements, 0);
    }
  }

  void release_records() {
    records_.clear();
    records_.shrink_to_fit();
  }

  void combine_one_pass(const TensorJob& job, Chunk& chunk, float* out) const {
    const int64_t n = chunk.size();
    const size_t inputs = trims_.size();
    const int thread = at::get_thread_num();
    SG_CHECK(thread >= 0 && thread < static_cast<int>(records_.size()),
             "thread " << thread << " of " << records_.size() << "; hint: internal error");
    Record& r = records_[thread];
    uint8_t* flags = r.flags.data();
    std::fill(flags, flags + kChunkElements, uint8_t{0});
    for (size_t i = 0; i < inputs; ++i) {
      if (one_pass_inputs_[i]) flag_window(chunk.inputs[i], low_bits_[i], high_bits_[i], flags, n, &r.above[i], &r.inside[i]);
    }
    const int64_t flagged = count_flags(flags, n);
    if (flagged > 0 && !overflow_.load(std::memory_order_relaxed)) {
      if (recorded_.fetch_add(flagged, std::memory_order_relaxed) + flagged > record_limit_) {
        overflow_.store(true, std::memory_order_relaxed);
      } else {
        // The flagged positions (flags is zero past n, up to a whole chunk).
        size_t at = r.index.size();
        r.index.resize(at + flagged);
        r.base.resize(at + flagged);
        r.values.resize((at + flagged) * inputs);
        for_each_flagged(flags, n, [&](int64_t j) {
          r.index[at] = chunk.begin + j;
          r.base[at] = chunk.base[j];
          for (size_t i = 0; i < inputs; ++i) r.values[at * inputs + i] = chunk.inputs[i][j];
          ++at;
        });
      }
    }
    // Provisionally: above the window kept, inside and below dropped (the recorded positions are
    // merged again in finish()).
    for (size_t i = 0; i < inputs; ++i) {
      const Trim& trim = trims_[i];
      if (!trim.active) continue;
      if (trim.keep_none) {
        std::fill(chunk.inputs[i], chunk.inputs[i] + n, 0.0f);
      } else {
        keep_bits_at_least(chunk.inputs[i], high_bits_[i], n);
      }
    }
    combine_sign_consensus(job, chunk, out);
  }

  // The exact thresholds and cuts of the one-pass inputs from the recorded window entries
  // (`above[i]` entries of input i lie above its window, `inside[i]` in it, and its k-th is among
  // the latter).
  void thresholds_from_records(const std::vector<int64_t>& above, const std::vector<int64_t>& inside) {
    const size_t inputs = trims_.size();
    // Each input in parallel.
    at::parallel_for(0, static_cast<int64_t>(inputs), 1, [&](int64_t first, int64_t last) {
      for (int64_t input = first; input < last; ++input) {
        if (one_pass_inputs_[static_cast<size_t>(input)]) threshold_from_records(static_cast<size_t>(input), above, inside);
      }
    });
  }

  // Input i's exact threshold and cut from the recorded entries inside its window.
  void threshold_from_records(size_t i, const std::vector<int64_t>& above, const std::vector<int64_t>& inside) {
    const size_t inputs = trims_.size();
    Trim& trim = trims_[i];
    std::vector<uint32_t> window;
    window.reserve(static_cast<size_t>(inside[i]));
    for (const Record& r : records_) {
      for (size_t e = 0; e < r.index.size(); ++e) {
        const uint32_t b = magnitude_bits(r.values[e * inputs + i]);
        if (b >= low_bits_[i] && b < high_bits_[i]) window.push_back(b);
      }
    }
    SG_CHECK(static_cast<int64_t>(window.size()) == inside[i],
             "ties: " << window.size() << " recorded window entries, " << inside[i] << " counted; hint: internal error");
    const int64_t rank = trim.k - above[i];  // 1-based, among the window's entries, largest first
    std::nth_element(window.begin(), window.begin() + (rank - 1), window.end(), std::greater<uint32_t>());
    trim.threshold = window[static_cast<size_t>(rank - 1)];
    int64_t greater = 0, equal = 0;
    for (uint32_t b : window) {
      greater += b > trim.threshold;
      equal += b == trim.threshold;
    }
    const int64_t take = rank - greater;  // of the `equal` entries at the threshold
    trim.need = take < equal && trim.threshold != 0 ? take : 0;
    trim.cut = std::numeric_limits<int64_t>::max();
    if (trim.need == 0) return;
    std::vector<int64_t> at_threshold;
    for (const Record& r : records_) {
      for (size_t e = 0; e < r.index.size(); ++e) {
        if (magnitude_bits(r.values[e * inputs + i]) == trim.threshold) at_threshold.push_back(r.index[e]);
      }
    }
    std::sort(at_threshold.begin(), at_threshold.end());
    trim.cut = at_threshold[static_cast<size_t>(trim.need - 1)] + 1;
  }

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
    if (stride == 1) ++passes_;
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
    ++passes_;
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
  int64_t passes_ = 0;       // full passes of prepare/finish (histograms, windows, cuts) so far
  // One pass (see the top of the file): the inputs selected by it, their windows (high bins and
  // magnitude bits [low, high)), and what the threads record.
  bool one_pass_ = false;
  std::vector<bool> one_pass_inputs_;
  std::vector<int> window_low_, window_high_;
  std::vector<uint32_t> low_bits_, high_bits_;
  int64_t record_limit_ = 0;
  mutable std::atomic<int64_t> recorded_{0};
  mutable std::atomic<bool> overflow_{false};
  mutable std::vector<Record> records_;
};

}  // namespace

namespace {

constexpr int kConsensusBlock = 8;   // elements whose sums stay in registers (one vector of 8 doubles)
constexpr int kMaxBlockInputs = 64;  // inputs the block kernel takes (more: the plain loops)

// GCC/Clang vector extensions: lowered to whatever the clone's target has (one AVX-512 register,
// two AVX2 ones, four SSE2 ones); lane by lane the same IEEE operations as scalar code.
typedef double Doubles __attribute__((vector_size(8 * sizeof(double))));
typedef float Floats __attribute__((vector_size(8 * sizeof(float))));

// The sign election and disjoint sum of `inputs` deltas x[i] with weights w[i] over the block of
// kConsensusBlock elements at `at`, in float64, each element's operations in the order of the
// plain loops below:
//   elected = 0; elected += w_i x_i (i in order); sign = elected >= 0 ? +1 : -1
//   agree_i = w_i x_i * sign > 0; sum += agree_i ? w_i x_i : 0; divisor += agree_i ? w_i : 0
// The block's sums stay in registers: each delta is read twice from L1 and no double array is
// written.
template <bool kNormalize>
__attribute__((always_inline)) inline void consensus_block(float* __restrict out, const float* __restrict base,
                                                           const float* const* x, const double* w, int inputs,
                                                           int64_t at, double lambda) {
  const Doubles zero = {0, 0, 0, 0, 0, 0, 0, 0};
  const Doubles one = zero + 1.0;
  Doubles elected = zero;
  for (int i = 0; i < inputs; ++i) {
    Floats xi;
    std::memcpy(&xi, x[i] + at, sizeof xi);
    elected += w[i] * __builtin_convertvector(xi, Doubles);
  }
  const Doubles sign = elected >= zero ? one : -one;
  Doubles sum = zero, divisor = zero;
  for (int i = 0; i < inputs; ++i) {
    Floats xi;
    std::memcpy(&xi, x[i] + at, sizeof xi);
    const Doubles weighted = w[i] * __builtin_convertvector(xi, Doubles);
    const auto agree = weighted * sign > zero;
    sum += agree ? weighted : zero;
    divisor += agree ? zero + w[i] : zero;
  }
  Doubles merged;
  if (kNormalize) {
    const Doubles d = divisor == zero ? one : divisor;
    merged = sum / d * lambda;
  } else {
    merged = sum * lambda;
  }
  Floats b;
  std::memcpy(&b, base + at, sizeof b);
  const Floats result = b + __builtin_convertvector(merged, Floats);
  std::memcpy(out + at, &result, sizeof result);
}

// The same over [0, n) in whole blocks (n a multiple of kConsensusBlock).
SG_MERGE_KERNEL void consensus_blocks(float* __restrict out, const float* __restrict base, const float* const* x,
                                      const double* w, int inputs, double lambda, bool normalize, int64_t n) {
  if (normalize) {
    for (int64_t at = 0; at < n; at += kConsensusBlock) consensus_block<true>(out, base, x, w, inputs, at, lambda);
  } else {
    for (int64_t at = 0; at < n; at += kConsensusBlock) consensus_block<false>(out, base, x, w, inputs, at, lambda);
  }
}

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

// The plain loops over arrays in chunk.scratch, for [begin, begin + n).
void consensus_arrays(const TensorJob& job, const Chunk& chunk, int64_t begin, int64_t n, float* out) {
  double* elected = chunk.scratch;
  double* sum = chunk.scratch + kChunkElements;
  double* divisor = chunk.scratch + 2 * kChunkElements;
  std::fill(elected, elected + n, 0.0);
  for (size_t i = 0; i < chunk.inputs.size(); ++i) {
    if (!job.deltas[i].absent()) accumulate(elected, chunk.inputs[i] + begin, job.weights[i], n);
  }
  sign_of(elected, n);
  std::fill(sum, sum + n, 0.0);
  std::fill(divisor, divisor + n, 0.0);
  for (size_t i = 0; i < chunk.inputs.size(); ++i) {
    if (!job.deltas[i].absent()) add_agreeing(sum, divisor, elected, chunk.inputs[i] + begin, job.weights[i], n);
  }
  if (job.normalize) {
    finish_normalized(out + begin, chunk.base + begin, sum, divisor, job.options->lambda, n);
  } else {
    finish_sum(out + begin, chunk.base + begin, sum, job.options->lambda, n);
  }
}

}  // namespace

void combine_sign_consensus(const TensorJob& job, const Chunk& chunk, float* out) {
  const int64_t n = chunk.size();
  const float* x[kMaxBlockInputs];
  double w[kMaxBlockInputs];
  int inputs = 0;
  for (size_t i = 0; i < chunk.inputs.size(); ++i) {
    if (job.deltas[i].absent()) continue;
    if (inputs == kMaxBlockInputs) {
      inputs = -1;  // too many for the block kernel's arrays: the plain loops
      break;
    }
    x[inputs] = chunk.inputs[i];
    w[inputs] = job.weights[i];
    ++inputs;
  }
  const int64_t blocked = inputs < 0 ? 0 : n / kConsensusBlock * kConsensusBlock;
  if (blocked > 0) consensus_blocks(out, chunk.base, x, w, inputs, job.options->lambda, job.normalize, blocked);
  if (blocked < n) consensus_arrays(job, chunk, blocked, n - blocked, out);
}

std::unique_ptr<TensorMerger> make_ties_merger() { return std::make_unique<TiesMerger>(); }

}  // namespace sg::compose
