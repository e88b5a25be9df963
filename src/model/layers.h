// Building blocks shared by the architectures: Linear ([out, in] weight, HF nn.Linear),
// Conv1D (GPT-2's [in, out] weight), RMSNorm, LayerNorm. Parameter names match HF's.
// Linear is the one place later adapters (LoRA) hook into projections.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

namespace sg::model {

// While one is alive on this thread, new Linear and Conv1D layers leave their weights
// uninitialised: a model about to receive checkpoint weights skips the random fill, and the
// untouched allocations cost no memory before the loaded tensors replace them.
class SkipWeightInit {
 public:
  SkipWeightInit();
  ~SkipWeightInit();
  SkipWeightInit(const SkipWeightInit&) = delete;
  SkipWeightInit& operator=(const SkipWeightInit&) = delete;
  static bool active();

 private:
  bool previous_;
};

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias);
  // x: (..., in) -> (..., out)
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;  // (out, in)
  torch::Tensor bias;    // (out) or undefined
};
TORCH_MODULE(Linear);

// GPT-2's Conv1D: a linear layer whose weight is stored transposed, [in, out].
class Conv1DImpl : public torch::nn::Module {
 public:
  Conv1DImpl(int64_t in_features, int64_t out_features);
  // x: (..., in) -> (..., out)
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;  // (in, out)
  torch::Tensor bias;    // (out)
};
TORCH_MODULE(Conv1D);

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  // x: (..., C) -> (..., C); x * rsqrt(mean(x^2) + eps) * weight, computed in float32
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

class LayerNormImpl : public torch::nn::Module {
 public:
  LayerNormImpl(int64_t dim, double eps);
  // x: (..., C) -> (..., C)
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;
  torch::Tensor bias;
  double eps;
};
TORCH_MODULE(LayerNorm);

}  // namespace sg::model
