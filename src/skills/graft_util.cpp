#include "skills/graft_util.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>

#include "train/trainer.h"
#include "util/error.h"

namespace sg::skills {

FlatLayout::FlatLayout(const std::vector<std::string>& candidate, const io::StateDict& reference) : names(candidate) {
  for (const std::string& name : names) {
    offsets.push_back(total);
    total += reference[name].numel();
  }
  offsets.push_back(total);
}

torch::Tensor FlatLayout::slice(const torch::Tensor& flat, size_t t) const {
  return flat.narrow(0, offsets[t], offsets[t + 1] - offsets[t]);
}

torch::Tensor FlatLayout::local(const torch::Tensor& indices, size_t t) const {
  const int64_t* begin = indices.data_ptr<int64_t>();
  const int64_t* end = begin + indices.numel();
  const int64_t* first = std::lower_bound(begin, end, offsets[t]);
  const int64_t* last = std::lower_bound(first, end, offsets[t + 1]);
  return indices.narrow(0, first - begin, last - first) - offsets[t];
}

torch::Tensor FlatLayout::local_mask(const torch::Tensor& indices, size_t t, const torch::Tensor& shape_of) const {
  torch::Tensor mask = torch::zeros({shape_of.numel()}, torch::kBool);
  mask.index_fill_(0, local(indices, t), true);
  return mask.reshape(shape_of.sizes());
}

// δ of one tensor, float32, flat: computed where needed instead of kept.
torch::Tensor delta_of(const io::StateDict& base, const io::StateDict& finetuned, const std::string& name) {
  torch::NoGradGuard no_grad;  // the models' parameters may require grad
  return (finetuned[name].to(torch::kFloat) - base[name].to(torch::kFloat)).reshape({-1});
}

namespace {

// float -> uint32 whose unsigned order is the order torch::topk ranks by: -0 and +0 equal, every
// NaN above +inf.
uint32_t order_key(float value) {
  if (std::isnan(value)) return 0xFFFFFFFFu;
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  if ((bits & 0x7FFFFFFFu) == 0) bits = 0;
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

}  // namespace

torch::Tensor top_k_indices(const torch::Tensor& values, int64_t k) {
  SG_CHECK(values.dim() == 1 && values.scalar_type() == torch::kFloat && values.is_contiguous(),
           "top_k_indices needs a flat contiguous float32 vector");
  const int64_t n = values.numel();
  SG_CHECK(k >= 1 && k <= n, "top-k of " << n << " values with k " << k);
  const float* data = values.data_ptr<float>();
  std::vector<int64_t> high(65536, 0), low(65536, 0);
  for (int64_t i = 0; i < n; ++i) ++high[order_key(data[i]) >> 16];
  int64_t above = 0;  // entries above the k-th value's bucket, then above the k-th value
  uint32_t bucket = 65535;
  while (above + high[bucket] < k) above += high[bucket--];
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t key = order_key(data[i]);
    if ((key >> 16) == bucket) ++low[key & 0xFFFFu];
  }
  uint32_t lowest = 65535;
  while (above + low[lowest] < k) above += low[lowest--];
  const uint32_t threshold = (bucket << 16) | lowest;
  int64_t tied_wanted = k - above;
  torch::Tensor indices = torch::empty({k}, torch::kLong);
  int64_t* out = indices.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t key = order_key(data[i]);
    if (key > threshold || (key == threshold && tied_wanted-- > 0)) *out++ = i;
  }
  return indices;
}

void zero_gradients(io::StateDict& weights, const FlatLayout& layout) {
  for (const std::string& name : layout.names) {
    torch::Tensor grad = weights[name].mutable_grad();
    if (grad.defined()) grad.zero_();
  }
}

double loss_and_gradients(model::CausalLM& work, io::StateDict& weights, const FlatLayout& layout,
                          const std::vector<data::EncodedSequence>& examples, int64_t batch_size, int64_t step,
                          train::EpochOrder& order, bool accumulate, double scale, model::CausalLM* teacher) {
  if (!accumulate) zero_gradients(weights, layout);
  std::vector<const data::EncodedSequence*> sequences;
  const int64_t size = std::min<int64_t>(batch_size, static_cast<int64_t>(examples.size()));
  for (int64_t i = 0; i < size; ++i) {
    sequences.push_back(&examples[static_cast<size_t>(order.at(step * size + i))]);
  }
  data::Batch batch = data::make_batch(sequences, work.config().max_positions);
  const double targets = static_cast<double>(std::max<int64_t>(batch.target_count, 1));
  torch::Tensor loss;
  if (teacher == nullptr) {
    loss = train::batch_loss_sum(work, batch) / targets;
  } else {
    // KL(teacher || work) of the next-token distributions at the completion positions.
    torch::Tensor teacher_log_probs;
    {
      torch::NoGradGuard no_grad;
      teacher_log_probs = torch::log_softmax(teacher->forward(batch.inputs), -1);
    }
    const torch::Tensor log_probs = torch::log_softmax(work.forward(batch.inputs), -1);
    const torch::Tensor kl = (teacher_log_probs.exp() * (teacher_log_probs - log_probs)).sum(-1);
    loss = kl.masked_select(batch.targets.ne(data::kIgnoreTarget)).sum() / targets;
  }
  (scale == 1.0 ? loss : loss * scale).backward();
  return loss.item<double>();
}

void gradient_times_delta(torch::Tensor& flat, const io::StateDict& weights, const FlatLayout& layout,
                          const io::StateDict& base, const io::StateDict& finetuned) {
  for (size_t t = 0; t < layout.names.size(); ++t) {
    const std::string& name = layout.names[t];
    torch::Tensor target = layout.slice(flat, t);
    const torch::Tensor& grad = weights[name].grad();
    if (!grad.defined()) {
      target.zero_();
      continue;
    }
    torch::mul_out(target, grad.detach().to(torch::kFloat).reshape({-1}), delta_of(base, finetuned, name));
  }
}

torch::Tensor sorted_difference(const torch::Tensor& a, const torch::Tensor& b) {
  std::vector<int64_t> out;
  const int64_t* pa = a.data_ptr<int64_t>();
  const int64_t* pb = b.data_ptr<int64_t>();
  std::set_difference(pa, pa + a.numel(), pb, pb + b.numel(), std::back_inserter(out));
  return torch::tensor(out, torch::kLong);
}

}  // namespace sg::skills
