// linear: the weighted average of the models, theta = sum w_i theta_i / sum w_i (normalize, the
// default) or sum w_i theta_i. Sums in float64; theta_i is each input's own value (a checkpoint's
// exactly, a skill's as base + delta), so averaging identical models returns them bit for bit.
#include <algorithm>

#include "compose/merge_method.h"

namespace sg::compose {

namespace {

class LinearMerger : public TensorMerger {
 public:
  Fill fill() const override { return Fill::kValues; }

  // Without normalize, untouched tensors come out as (sum w_i) * base, not the base.
  bool identity_when_untouched(const TensorJob& job) const override { return job.normalize; }

  void combine(const TensorJob& job, Chunk& chunk, float* out) const override {
    const int64_t n = chunk.size();
    double* __restrict sum = chunk.scratch;
    std::fill(sum, sum + n, 0.0);
    double weight_sum = 0;
    for (size_t i = 0; i < chunk.inputs.size(); ++i) {
      const double w = job.weights[i];
      const float* __restrict theta = chunk.inputs[i];
      weight_sum += w;
      for (int64_t j = 0; j < n; ++j) sum[j] += w * theta[j];
    }
    if (job.normalize) {
      for (int64_t j = 0; j < n; ++j) out[j] = static_cast<float>(sum[j] / weight_sum);
    } else {
      for (int64_t j = 0; j < n; ++j) out[j] = static_cast<float>(sum[j]);
    }
  }
};

}  // namespace

std::unique_ptr<TensorMerger> make_linear_merger() { return std::make_unique<LinearMerger>(); }

}  // namespace sg::compose
