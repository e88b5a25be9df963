#include "train/optimizer.h"

#include <torch/torch.h>

#include <cmath>

#include "util/error.h"

namespace sg::train {

OptimizerKind optimizer_kind_from_name(const std::string& name) {
  if (name == "sgd") return OptimizerKind::kSgd;
  if (name == "adamw") return OptimizerKind::kAdamW;
  SG_FAIL("unknown optimizer '" << name << "'; hint: use sgd or adamw");
}

std::string optimizer_kind_name(OptimizerKind kind) { return kind == OptimizerKind::kSgd ? "sgd" : "adamw"; }

Optimizer::Optimizer(io::StateDict parameters, OptimizerOptions options)
    : parameters_(std::move(parameters)), options_(options) {
  torch::NoGradGuard no_grad;
  for (const auto& item : parameters_) {
    first_moment_.push_back(torch::zeros_like(item.value()));
    second_moment_.push_back(options_.kind == OptimizerKind::kAdamW ? torch::zeros_like(item.value())
                                                                    : torch::Tensor());
  }
}

void Optimizer::step(double lr) {
  torch::NoGradGuard no_grad;
  ++steps_taken_;
  const double bias1 = 1 - std::pow(options_.beta1, static_cast<double>(steps_taken_));
  const double bias2 = 1 - std::pow(options_.beta2, static_cast<double>(steps_taken_));
  size_t i = 0;
  for (const auto& item : parameters_) {
    torch::Tensor param = item.value();
    torch::Tensor grad = param.grad();
    const size_t index = i++;
    if (!grad.defined()) continue;
    torch::Tensor& m = first_moment_[index];
    if (options_.kind == OptimizerKind::kSgd) {
      if (options_.weight_decay != 0) grad = grad.add(param, options_.weight_decay);
      if (options_.momentum != 0) {
        // torch.optim.SGD: the first step copies the gradient into the buffer.
        if (steps_taken_ == 1) {
          m.copy_(grad);
        } else {
          m.mul_(options_.momentum).add_(grad);
        }
        param.add_(m, -lr);
      } else {
        param.add_(grad, -lr);
      }
    } else {
      torch::Tensor& v = second_moment_[index];
      param.mul_(1 - lr * options_.weight_decay);
      m.mul_(options_.beta1).add_(grad, 1 - options_.beta1);
      v.mul_(options_.beta2).addcmul_(grad, grad, 1 - options_.beta2);
      torch::Tensor denominator = (v.sqrt() / std::sqrt(bias2)).add_(options_.eps);
      param.addcdiv_(m, denominator, -lr / bias1);
    }
  }
}

void Optimizer::zero_grad() {
  for (const auto& item : parameters_) {
    torch::Tensor grad = item.value().mutable_grad();
    if (grad.defined()) grad.zero_();
  }
}

io::StateDict Optimizer::state() const {
  io::StateDict state;
  size_t i = 0;
  for (const auto& item : parameters_) {
    if (options_.kind == OptimizerKind::kSgd) {
      state.insert(item.key() + ".momentum_buffer", first_moment_[i]);
    } else {
      state.insert(item.key() + ".exp_avg", first_moment_[i]);
      state.insert(item.key() + ".exp_avg_sq", second_moment_[i]);
    }
    ++i;
  }
  state.insert("optimizer.step", torch::tensor(steps_taken_, torch::kLong));
  return state;
}

void Optimizer::load_state(const io::StateDict& state, const std::string& source) {
  torch::NoGradGuard no_grad;
  auto restore = [&](const std::string& key, torch::Tensor& target) {
    const torch::Tensor* value = state.find(key);
    SG_CHECK(value != nullptr, source << ": optimizer state '" << key
                                      << "' is missing; hint: the checkpoint was made with another optimizer "
                                         "or other trainable parameters");
    SG_CHECK(value->sizes() == target.sizes(), source << ": optimizer state '" << key << "' has shape "
                                                      << value->sizes() << ", expected " << target.sizes());
    target.copy_(*value);
  };
  size_t i = 0;
  for (const auto& item : parameters_) {
    if (options_.kind == OptimizerKind::kSgd) {
      restore(item.key() + ".momentum_buffer", first_moment_[i]);
    } else {
      restore(item.key() + ".exp_avg", first_moment_[i]);
      restore(item.key() + ".exp_avg_sq", second_moment_[i]);
    }
    ++i;
  }
  const torch::Tensor* step = state.find("optimizer.step");
  SG_CHECK(step != nullptr && step->numel() == 1, source << ": optimizer state 'optimizer.step' is missing");
  steps_taken_ = step->to(torch::kLong).item<int64_t>();
}

double clip_grad_norm(const io::StateDict& parameters, double max_norm) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> norms;
  for (const auto& item : parameters) {
    const torch::Tensor& grad = item.value().grad();
    if (grad.defined()) norms.push_back(grad.norm(2).to(torch::kDouble));
  }
  if (norms.empty()) return 0;
  const double total = torch::stack(norms).norm(2).item<double>();
  if (max_norm > 0 && std::isfinite(total) && total > max_norm) {
    const double scale = max_norm / (total + 1e-6);
    for (const auto& item : parameters) {
      torch::Tensor grad = item.value().mutable_grad();
      if (grad.defined()) grad.mul_(scale);
    }
  }
  return total;
}

double scheduled_lr(double base_lr, int64_t step, const ScheduleOptions& schedule) {
  if (schedule.warmup_steps > 0 && step < schedule.warmup_steps) {
    return base_lr * static_cast<double>(step + 1) / static_cast<double>(schedule.warmup_steps);
  }
  const int64_t decay_steps = std::max<int64_t>(schedule.total_steps - schedule.warmup_steps, 1);
  const double progress =
      std::min(1.0, static_cast<double>(step - schedule.warmup_steps) / static_cast<double>(decay_steps));
  const double cosine = 0.5 * (1 + std::cos(M_PI * progress));
  return base_lr * (schedule.min_lr_ratio + (1 - schedule.min_lr_ratio) * cosine);
}

}  // namespace sg::train
