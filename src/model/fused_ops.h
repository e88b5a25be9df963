// Fused CPU kernels for inference: RMSNorm, rotary embedding, SwiGLU in one pass each instead of
// 5-6 LibTorch ops. Used only when no gradient is recorded and the inputs are contiguous float32
// CPU tensors (fused_ops_apply); the composite LibTorch expressions stay the training path and
// the reference these kernels are tested against.
#pragma once

#include <ATen/core/Tensor.h>

namespace sg::model {

// Whether the fused kernels may replace the composite ops for these tensors.
bool fused_ops_apply(const at::Tensor& x);

// x: (..., C), weight: (C) -> (..., C); x * rsqrt(mean(x^2) + eps) * weight
at::Tensor fused_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// x: (B, T, H, D) contiguous, cos/sin: (T, D) -> (B, T, H, D): rotate-half RoPE times `scale`.
at::Tensor fused_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, double scale);

// gate, up: (..., F) -> (..., F); silu(gate) * up
at::Tensor fused_swiglu(const at::Tensor& gate, const at::Tensor& up);

}  // namespace sg::model
