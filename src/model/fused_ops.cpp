#include "model/fused_ops.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cmath>

namespace sg::model {

namespace {
// Rows per task: small tensors (batch-1 decode) stay on one thread, where thread hand-off costs
// more than the work.
int64_t grain_rows(int64_t row_length) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(row_length, 1)); }
}  // namespace

bool fused_ops_apply(const at::Tensor& x) {
  return !at::GradMode::is_enabled() && x.device().is_cpu() && x.scalar_type() == at::kFloat &&
         x.is_contiguous();
}

at::Tensor fused_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const int64_t C = x.size(-1), rows = x.numel() / C;
  at::Tensor w = weight.to(at::kFloat).contiguous();
  at::Tensor out = at::empty_like(x);
  const float* in = x.data_ptr<float>();
  const float* scale = w.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, rows, grain_rows(C), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* row = in + r * C;
      float* out_row = dst + r * C;
      float sum = 0;
      for (int64_t c = 0; c < C; ++c) sum += row[c] * row[c];
      const float inv = 1.0f / std::sqrt(sum / static_cast<float>(C) + static_cast<float>(eps));
      for (int64_t c = 0; c < C; ++c) out_row[c] = row[c] * inv * scale[c];
    }
  });
  return out;
}

at::Tensor fused_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, double scale) {
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3), half = D / 2;
  at::Tensor c = cos.to(at::kFloat).contiguous(), s = sin.to(at::kFloat).contiguous();
  at::Tensor out = at::empty_like(x);
  const float* in = x.data_ptr<float>();
  const float* cos_table = c.data_ptr<float>();
  const float* sin_table = s.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const float k = static_cast<float>(scale);
  at::parallel_for(0, B * T, grain_rows(H * D), [&](int64_t begin, int64_t end) {
    for (int64_t bt = begin; bt < end; ++bt) {
      const int64_t t = bt % T;
      const float* cos_row = cos_table + t * D;
      const float* sin_row = sin_table + t * D;
      for (int64_t h = 0; h < H; ++h) {
        const float* v = in + (bt * H + h) * D;
        float* o = dst + (bt * H + h) * D;
        for (int64_t i = 0; i < half; ++i) {
          o[i] = k * (v[i] * cos_row[i] - v[i + half] * sin_row[i]);
          o[i + half] = k * (v[i + half] * cos_row[i + half] + v[i] * sin_row[i + half]);
        }
      }
    }
  });
  return out;
}

at::Tensor fused_swiglu(const at::Tensor& gate, const at::Tensor& up) {
  at::Tensor out = at::empty_like(gate);
  const int64_t n = gate.numel();
  const float* g = gate.data_ptr<float>();
  const float* u = up.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, n, 16384, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) dst[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  });
  return out;
}

}  // namespace sg::model
