// task_arithmetic: theta = base + lambda * sum w_i delta_i (mergekit's default: no normalize; with
// normalize the sum is divided by sum w_i). Also the combine step of dare_linear.
#include <algorithm>
#include <cmath>

#include "compose/merge_method.h"

namespace sg::compose {

namespace {

// sum[j] += w * x[j]
SG_MERGE_KERNEL void accumulate(double* __restrict sum, const float* __restrict x, double w, int64_t n) {
  for (int64_t j = 0; j < n; ++j) sum[j] += w * x[j];
}

// out[j] = base[j] + float(sum[j] * scale)
SG_MERGE_KERNEL void add_scaled(float* __restrict out, const float* __restrict base, const double* __restrict sum,
                                double scale, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] = base[j] + static_cast<float>(sum[j] * scale);
}

}  // namespace

void combine_weighted_sum(const TensorJob& job, const Chunk& chunk, float* out) {
  const int64_t n = chunk.size();
  double* sum = chunk.scratch;
  std::fill(sum, sum + n, 0.0);
  double weight_sum = 0;
  for (size_t i = 0; i < chunk.inputs.size(); ++i) {
    weight_sum += job.weights[i];  // an absent input still counts (its delta is 0)
    if (!job.deltas[i].absent()) accumulate(sum, chunk.inputs[i], job.weights[i], n);
  }
  if (std::abs(weight_sum) < 1e-8) weight_sum = 1;  // mergekit's guard
  const double lambda = job.options->lambda;
  // lambda / divisor in one factor: with normalize off it is lambda itself, so lambda = 1 and one
  // input of weight 1 give base + delta exactly (what grafting the input gives).
  const double scale = job.normalize ? lambda / weight_sum : lambda;
  add_scaled(out, chunk.base, sum, scale, n);
}

namespace {

class TaskArithmeticMerger : public TensorMerger {
 public:
  void combine(const TensorJob& job, Chunk& chunk, float* out) const override { combine_weighted_sum(job, chunk, out); }
};

}  // namespace

std::unique_ptr<TensorMerger> make_task_arithmetic_merger() { return std::make_unique<TaskArithmeticMerger>(); }

}  // namespace sg::compose
