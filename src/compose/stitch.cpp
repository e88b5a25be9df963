#include "compose/stitch.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>

#include "skills/graft_util.h"
#include "skills/localize.h"
#include "train/trainer.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/log.h"

namespace sg::compose {

namespace {

// The merged weights of the current masks: θ_base + Σ_i γ_i ⊙ δ_i, summed in float64.
class StitchWriter {
 public:
  StitchWriter(io::StateDict& weights, const io::StateDict& base, const std::vector<const io::StateDict*>& inputs,
               const skills::FlatLayout& layout)
      : weights_(weights), base_(base), inputs_(inputs), layout_(layout) {}

  void write(const std::vector<torch::Tensor>& masks) const {
    torch::NoGradGuard no_grad;
    for (size_t t = 0; t < layout_.names.size(); ++t) {
      const std::string& name = layout_.names[t];
      torch::Tensor target = weights_[name];
      torch::Tensor sum = base_[name].to(torch::kDouble).reshape({-1}).clone();
      for (size_t i = 0; i < inputs_.size(); ++i) {
        const torch::Tensor local = layout_.local(masks[i], t);
        if (local.numel() == 0) continue;
        sum.index_add_(0, local, skills::delta_of(base_, *inputs_[i], name).index_select(0, local).to(torch::kDouble));
      }
      target.copy_(sum.to(target.scalar_type()).reshape(target.sizes()));
    }
  }

  // Input i alone, whole: θ_base + δ_i.
  void write_alone(size_t i) const {
    torch::NoGradGuard no_grad;
    for (const std::string& name : layout_.names) {
      torch::Tensor target = weights_[name];
      target.copy_((*inputs_[i])[name]);
    }
  }

 private:
  io::StateDict& weights_;
  const io::StateDict& base_;
  const std::vector<const io::StateDict*>& inputs_;
  const skills::FlatLayout& layout_;
};

}  // namespace

StitchResult stitch(model::CausalLM& work, const io::StateDict& base, const std::vector<const io::StateDict*>& inputs,
                    const std::vector<StitchTask>& tasks, const StitchOptions& options, model::CausalLM* teacher) {
  SG_CHECK(!inputs.empty(), "stitch needs at least one input; hint: one fine-tune or skill per task");
  SG_CHECK(inputs.size() == tasks.size(), "stitch got " << inputs.size() << " inputs and " << tasks.size()
                                                        << " tasks; hint: name one task per input, in the same order");
  SG_CHECK(options.fraction > 0 && options.fraction <= 1,
           "--fraction must be in (0, 1], got " << options.fraction << "; hint: 0.05 keeps 5% of each delta");
  SG_CHECK(options.steps >= 0, "--steps must be >= 0, got " << options.steps);
  SG_CHECK(options.batch_size >= 1, "--batch-size must be >= 1, got " << options.batch_size);
  SG_CHECK(options.eval_every >= 1, "--eval-every must be >= 1, got " << options.eval_every);
  SG_CHECK(std::isfinite(options.lr) && options.lr > 0, "--lr must be > 0, got " << options.lr);
  SG_CHECK(options.momentum >= 0 && options.momentum < 1, "--momentum must be in [0, 1), got " << options.momentum);
  for (const StitchTask& task : tasks) {
    SG_CHECK(task.train != nullptr && !task.train->empty(),
             "task " << task.name << " has no training examples; hint: stitch learns its masks from the train splits");
    SG_CHECK(static_cast<bool>(task.validate), "task " << task.name << " has no validation scorer");
  }
  const auto start = std::chrono::steady_clock::now();
  // Every input must be the base's architecture; the candidates are the base's tensors minus --exclude.
  for (const io::StateDict* input : inputs) skills::candidate_names(base, *input, "");
  const skills::FlatLayout layout(skills::candidate_names(base, *inputs[0], options.exclude), base);
  const int64_t k = std::max<int64_t>(1, std::llround(options.fraction * static_cast<double>(layout.total)));
  const size_t count = inputs.size();

  io::StateDict weights = model::model_state_dict(work);
  {
    torch::NoGradGuard no_grad;
    for (const auto& item : weights) {
      item.value().set_requires_grad(false);
      item.value().copy_(base[item.key()]);
    }
  }
  for (const std::string& name : layout.names) weights[name].set_requires_grad(true);
  const StitchWriter writer(weights, base, inputs, layout);

  StitchResult result;
  result.budget = k;
  result.candidates = layout.total;
  // Each input alone on its own task: the divisor of its normalized score.
  for (size_t i = 0; i < count; ++i) {
    writer.write_alone(i);
    result.alone.push_back(tasks[i].validate(work));
  }

  // Scores scaled so each input's k-th largest |δ| is 1: the first masks are the movement masks.
  std::vector<torch::Tensor> scores(count), masks(count), best_masks;
  for (size_t i = 0; i < count; ++i) {
    scores[i] = torch::empty({layout.total});
    for (size_t t = 0; t < layout.names.size(); ++t) {
      torch::Tensor target = layout.slice(scores[i], t);
      torch::abs_out(target, skills::delta_of(base, *inputs[i], layout.names[t]));
    }
    const torch::Tensor top = skills::top_k_indices(scores[i], k);
    const double kth = scores[i].index_select(0, top).min().item<double>();
    scores[i].div_(kth > 0 ? kth : 1.0);
  }
  std::vector<train::EpochOrder> orders;
  for (size_t i = 0; i < count; ++i) {
    orders.emplace_back(static_cast<int64_t>(tasks[i].train->size()), options.seed + i);
  }
  std::vector<torch::Tensor> velocity(count);
  if (options.momentum > 0) {
    for (torch::Tensor& v : velocity) v = torch::zeros({layout.total});
  }
  torch::Tensor grad = torch::empty({layout.total});
  torch::Tensor squared = torch::empty({layout.total});

  // Each task's share of the loss: after every validation, the tasks furthest below their input
  // alone weigh most (0.1 + the shortfall, scaled to a mean of 1), so the effort goes where the
  // merged model still falls short instead of polishing the tasks it already holds.
  std::vector<double> loss_weights(count, 1.0);
  io::StateDict teacher_weights;
  if (teacher != nullptr) {
    teacher_weights = model::model_state_dict(*teacher);
    for (const auto& item : teacher_weights) item.value().set_requires_grad(false);
  }
  result.best_normalized = -std::numeric_limits<double>::infinity();
  double recent_loss = std::nan("");
  for (int64_t step = 0; step <= options.steps; ++step) {
    for (size_t i = 0; i < count; ++i) masks[i] = skills::top_k_indices(scores[i], k);
    writer.write(masks);
    if (step % options.eval_every == 0 || step == options.steps) {
      std::vector<double> values;
      double normalized = 0, weight_sum = 0;
      for (size_t i = 0; i < count; ++i) {
        values.push_back(tasks[i].validate(work));
        const double relative = result.alone[i] > 0 ? values[i] / result.alone[i] : values[i];
        normalized += relative / static_cast<double>(count);
        loss_weights[i] = options.balance ? 0.1 + std::max(0.0, 1.0 - relative) : 1.0;
        weight_sum += loss_weights[i];
      }
      for (double& weight : loss_weights) weight *= static_cast<double>(count) / weight_sum;
      if (normalized > result.best_normalized) {
        result.best_normalized = normalized;
        result.best_step = step;
        result.validation = values;
        best_masks = masks;
      }
      std::string each;
      for (size_t i = 0; i < count; ++i) {
        char text[64];
        std::snprintf(text, sizeof(text), "%s%s %.3f", i > 0 ? ", " : "", tasks[i].name.c_str(), values[i]);
        each += text;
      }
      util::log_info("stitch step " + std::to_string(step) + "/" + std::to_string(options.steps) + ": train loss " +
                     std::to_string(recent_loss) + ", validation normalized " + std::to_string(normalized) + " (" +
                     each + "; best " + std::to_string(result.best_normalized) + " at step " +
                     std::to_string(result.best_step) + ")");
    }
    if (step == options.steps) break;
    // L = mean over tasks of each task's mean completion loss, its gradient accumulated in .grad.
    recent_loss = 0;
    for (size_t i = 0; i < count; ++i) {
      if (teacher != nullptr) {
        torch::NoGradGuard no_grad;
        for (const auto& item : teacher_weights) item.value().copy_((*inputs[i])[item.key()]);
      }
      recent_loss += skills::loss_and_gradients(work, weights, layout, *tasks[i].train, options.batch_size, step,
                                                orders[i], /*accumulate=*/i > 0,
                                                loss_weights[i] / static_cast<double>(count), teacher) /
                     static_cast<double>(count);
    }
    for (size_t i = 0; i < count; ++i) {
      skills::gradient_times_delta(grad, weights, layout, base, *inputs[i]);
      torch::pow_out(squared, grad, 2);
      const double rms = squared.mean().sqrt().item<double>();
      if (rms <= 0) continue;
      if (options.momentum > 0) {
        velocity[i].mul_(options.momentum).add_(grad, 1.0 / rms);
        scores[i].add_(velocity[i], -options.lr);
      } else {
        scores[i].add_(grad, -options.lr / rms);
      }
    }
  }

  writer.write(best_masks);
  for (const auto& item : weights) {
    item.value().set_requires_grad(false);
    item.value().mutable_grad() = torch::Tensor();
  }
  for (size_t i = 0; i < count; ++i) {
    std::map<std::string, at::Tensor> split;
    for (size_t t = 0; t < layout.names.size(); ++t) {
      split[layout.names[t]] = layout.local_mask(best_masks[i], t, base[layout.names[t]]);
    }
    result.masks.push_back(std::move(split));
  }
  result.seconds = util::seconds_since(start);
  return result;
}

}  // namespace sg::compose
