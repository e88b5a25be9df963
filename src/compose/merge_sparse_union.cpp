// sparse_union: several sparse grafts applied at once. Where one input has an entry the element
// gets its delta as is (so one skill alone is exactly its graft); where several overlap, the rule
// decides: mean (weight-weighted mean of their deltas), magnitude (the largest |delta|, the earlier
// input on a tie) or weight (the larger-weight input, the earlier on a tie). Then lambda scales it.
#include <cmath>

#include "compose/merge_method.h"

namespace sg::compose {

namespace {

class SparseUnionMerger : public TensorMerger {
 public:
  Fill fill() const override { return Fill::kDeltasAndCoverage; }

  void combine(const TensorJob& job, Chunk& chunk, float* out) const override {
    const int64_t n = chunk.size();
    const size_t inputs = chunk.inputs.size();
    const OverlapRule rule = job.options->overlap;
    const double lambda = job.options->lambda;
    for (int64_t j = 0; j < n; ++j) {
      int count = 0;
      size_t chosen = 0;
      double weighted = 0, weights = 0;
      for (size_t i = 0; i < inputs; ++i) {
        if (job.deltas[i].absent() || !chunk.covered[i][j]) continue;
        const float d = chunk.inputs[i][j];
        if (count == 0) {
          chosen = i;
        } else if (rule == OverlapRule::kMagnitude) {
          if (std::abs(d) > std::abs(chunk.inputs[chosen][j])) chosen = i;
        } else if (rule == OverlapRule::kWeight) {
          if (job.weights[i] > job.weights[chosen]) chosen = i;
        }
        weighted += job.weights[i] * d;
        weights += job.weights[i];
        ++count;
      }
      float delta = 0.0f;
      if (count == 1 || (count > 1 && rule != OverlapRule::kMean)) {
        delta = chunk.inputs[chosen][j];
      } else if (count > 1) {
        delta = static_cast<float>(weighted / weights);
      }
      out[j] = lambda == 1.0 ? chunk.base[j] + delta : chunk.base[j] + static_cast<float>(lambda * delta);
    }
  }
};

}  // namespace

std::unique_ptr<TensorMerger> make_sparse_union_merger() { return std::make_unique<SparseUnionMerger>(); }

}  // namespace sg::compose
