#include "model/layers.h"

#include <torch/torch.h>

#include "model/fused_ops.h"

namespace sg::model {

namespace {
thread_local bool t_skip_weight_init = false;
}

SkipWeightInit::SkipWeightInit() : previous_(t_skip_weight_init) { t_skip_weight_init = true; }
SkipWeightInit::~SkipWeightInit() { t_skip_weight_init = previous_; }
bool SkipWeightInit::active() { return t_skip_weight_init; }

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool has_bias) {
  weight = register_parameter("weight", torch::empty({out_features, in_features}));
  if (has_bias) bias = register_parameter("bias", torch::zeros({out_features}));
  if (SkipWeightInit::active()) return;
  double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  torch::NoGradGuard no_grad;
  weight.uniform_(-bound, bound);
}

torch::Tensor LoraPair::delta(const torch::Tensor& x) const {
  return torch::linear(torch::linear(x, A), B) * scale;
}

torch::Tensor LoraPair::delta_weight() const { return torch::mm(B, A) * scale; }

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  torch::Tensor out = torch::linear(x, weight, bias);
  if (!lora.attached()) return out;
  return out + lora.delta(x);
}

Conv1DImpl::Conv1DImpl(int64_t in_features, int64_t out_features) {
  weight = register_parameter("weight", torch::empty({in_features, out_features}));
  bias = register_parameter("bias", torch::zeros({out_features}));
  if (SkipWeightInit::active()) return;
  torch::NoGradGuard no_grad;
  weight.normal_(0.0, 0.02);
}

torch::Tensor Conv1DImpl::forward(const torch::Tensor& x) {
  auto sizes = x.sizes().vec();
  sizes.back() = weight.size(1);
  torch::Tensor out = torch::addmm(bias, x.reshape({-1, x.size(-1)}), weight).view(sizes);
  if (!lora.attached()) return out;
  return out + lora.delta(x);
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_in) : eps(eps_in) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  if (fused_ops_apply(x)) return fused_rms_norm(x, weight, eps);
  torch::Tensor x32 = x.scalar_type() == torch::kFloat ? x : x.to(torch::kFloat);
  torch::Tensor normed = x32 * torch::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * normed.to(x.scalar_type());
}

LayerNormImpl::LayerNormImpl(int64_t dim, double eps_in) : eps(eps_in) {
  weight = register_parameter("weight", torch::ones({dim}));
  bias = register_parameter("bias", torch::zeros({dim}));
}

torch::Tensor LayerNormImpl::forward(const torch::Tensor& x) {
  return torch::layer_norm(x, {weight.size(0)}, weight, bias, eps);
}

}  // namespace sg::model
