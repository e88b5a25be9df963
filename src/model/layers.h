// Building blocks shared by the architectures: Linear ([out, in] weight, HF nn.Linear),
// Conv1D (GPT-2's [in, out] weight), RMSNorm, LayerNorm. Parameter names match HF's.
// Linear and Conv1D are the one place adapters (LoRA) hook into projections.
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

// An optional low-rank update of a projection: y = base(x) + scale * (x A^T) B^T, i.e.
// delta_W = scale * B A in [out, in] terms (PEFT's convention for both layer kinds).
//
// Contract: A and B are deliberately NOT registered with the module tree. named_parameters(),
// model_state_dict(), saved checkpoints and load_model_weights therefore see exactly the HF base
// tensors whether or not a pair is attached; the pair is reached through sg::model::lora_state_dict
// (model/lora.h), which is also what an optimizer trains. Consequences: module->to(device) and
// parameters()-based freezing do not touch the pair, so attach after moving the model (pairs are
// created on the base weight's device and dtype). Attached/removed through model/lora.h.
struct LoraPair {
  torch::Tensor A;  // (r, in)
  torch::Tensor B;  // (out, r)
  double scale = 0;
  bool attached() const { return A.defined(); }
  // x: (..., in) -> (..., out): scale * (x A^T) B^T
  torch::Tensor delta(const torch::Tensor& x) const;
  // scale * B A: (out, in)
  torch::Tensor delta_weight() const;
};

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias);
  // x: (..., in) -> (..., out); adds the LoRA update when one is attached
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;  // (out, in)
  torch::Tensor bias;    // (out) or undefined
  LoraPair lora;         // unregistered, see LoraPair
};
TORCH_MODULE(Linear);

// GPT-2's Conv1D: a linear layer whose weight is stored transposed, [in, out].
class Conv1DImpl : public torch::nn::Module {
 public:
  Conv1DImpl(int64_t in_features, int64_t out_features);
  // x: (..., in) -> (..., out); adds the LoRA update when one is attached
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;  // (in, out)
  torch::Tensor bias;    // (out)
  LoraPair lora;         // A (r, in), B (out, r) as for Linear; delta_W^T is added to weight on merge
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
