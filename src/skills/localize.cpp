#include "skills/localize.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <regex>

#include "train/trainer.h"
#include "util/error.h"
#include "util/log.h"
#include "util/regex.h"

namespace sg::skills {

namespace {

// The candidate tensors laid end to end: one flat vector of N values.
struct FlatLayout {
  std::vector<std::string> names;
  std::vector<int64_t> offsets;
  int64_t total = 0;

  FlatLayout(const std::vector<std::string>& candidate, const io::StateDict& reference) : names(candidate) {
    for (const std::string& name : names) {
      offsets.push_back(total);
      total += reference[name].numel();
    }
  }
  // (N) float32 copy of the named tensors (or of their gradients).
  torch::Tensor flatten(const io::StateDict& tensors, bool gradients = false) const {
    std::vector<torch::Tensor> pieces;
    for (const std::string& name : names) {
      torch::Tensor value = gradients ? tensors[name].grad() : tensors[name];
      if (!value.defined()) value = torch::zeros_like(tensors[name]);
      pieces.push_back(value.detach().to(torch::kFloat).reshape({-1}));
    }
    return torch::cat(pieces);
  }
  std::map<std::string, torch::Tensor> split_mask(const torch::Tensor& flat, const io::StateDict& reference) const {
    std::map<std::string, torch::Tensor> mask;
    for (size_t i = 0; i < names.size(); ++i) {
      const torch::Tensor& shape_of = reference[names[i]];
      mask[names[i]] = flat.narrow(0, offsets[i], shape_of.numel()).reshape(shape_of.sizes()).clone();
    }
    return mask;
  }
};

// Exactly k ones at the k largest scores (ties broken by topk's order).
torch::Tensor top_k_mask(const torch::Tensor& scores, int64_t k) {
  torch::Tensor indices = std::get<1>(scores.topk(k, /*dim=*/0, /*largest=*/true, /*sorted=*/false));
  torch::Tensor mask = torch::zeros(scores.sizes(), torch::kBool);
  mask.index_fill_(0, indices, true);
  return mask;
}

// Writes base + weight ⊙ delta (flat) into the work model's candidate tensors.
void write_flat_graft(io::StateDict& work, const FlatLayout& layout, const torch::Tensor& base_flat,
                      const torch::Tensor& delta_flat, const torch::Tensor& weight_flat) {
  torch::NoGradGuard no_grad;
  torch::Tensor grafted = base_flat + weight_flat.to(torch::kFloat) * delta_flat;
  for (size_t i = 0; i < layout.names.size(); ++i) {
    torch::Tensor target = work[layout.names[i]];
    target.copy_(grafted.narrow(0, layout.offsets[i], target.numel()).reshape(target.sizes()));
  }
}

// Mean completion loss of one batch of training examples; leaves ∂L/∂θ in the work model.
double loss_and_gradients(model::CausalLM& work, io::StateDict& weights, const FlatLayout& layout,
                          const std::vector<data::EncodedSequence>& examples, int64_t batch_size, int64_t step,
                          train::EpochOrder& order) {
  for (const std::string& name : layout.names) {
    torch::Tensor grad = weights[name].mutable_grad();
    if (grad.defined()) grad.zero_();
  }
  std::vector<const data::EncodedSequence*> sequences;
  const int64_t size = std::min<int64_t>(batch_size, static_cast<int64_t>(examples.size()));
  for (int64_t i = 0; i < size; ++i) {
    sequences.push_back(&examples[static_cast<size_t>(order.at(step * size + i))]);
  }
  data::Batch batch = data::make_batch(sequences, work.config().max_positions);
  torch::Tensor loss = train::batch_loss_sum(work, batch) / static_cast<double>(std::max<int64_t>(batch.target_count, 1));
  loss.backward();
  return loss.item<double>();
}

struct AdamState {
  torch::Tensor m, v;
  int64_t t = 0;
  void step(torch::Tensor& parameter, const torch::Tensor& grad, double lr) {
    if (!m.defined()) {
      m = torch::zeros_like(parameter);
      v = torch::zeros_like(parameter);
    }
    ++t;
    m.mul_(0.9).add_(grad, 0.1);
    v.mul_(0.999).addcmul_(grad, grad, 0.001);
    const double bias1 = 1 - std::pow(0.9, static_cast<double>(t));
    const double bias2 = 1 - std::pow(0.999, static_cast<double>(t));
    parameter.addcdiv_(m, (v / bias2).sqrt_().add_(1e-8), -lr / bias1);
  }
};

}  // namespace

LocalizeMethod localize_method_from_name(const std::string& name) {
  if (name == "graft") return LocalizeMethod::kGraft;
  if (name == "graft-sigmoid") return LocalizeMethod::kGraftSigmoid;
  if (name == "movement") return LocalizeMethod::kMovement;
  if (name == "saliency") return LocalizeMethod::kSaliency;
  if (name == "random") return LocalizeMethod::kRandom;
  SG_FAIL("unknown --method '" << name << "'; hint: use graft, graft-sigmoid, movement, saliency or random");
}

ScoreOptimizer score_optimizer_from_name(const std::string& name) {
  if (name == "nsgd") return ScoreOptimizer::kNormalizedSgd;
  if (name == "adam") return ScoreOptimizer::kAdam;
  SG_FAIL("unknown --score-optimizer '" << name << "'; hint: use nsgd (normalized gradient descent) or adam");
}

double default_score_lr(ScoreOptimizer optimizer) { return optimizer == ScoreOptimizer::kAdam ? 0.02 : 0.5; }

std::string localize_method_name(LocalizeMethod method) {
  switch (method) {
    case LocalizeMethod::kGraft: return "graft";
    case LocalizeMethod::kGraftSigmoid: return "graft-sigmoid";
    case LocalizeMethod::kMovement: return "movement";
    case LocalizeMethod::kSaliency: return "saliency";
    case LocalizeMethod::kRandom: return "random";
  }
  return "graft";
}

std::vector<std::string> candidate_names(const io::StateDict& base, const io::StateDict& finetuned,
                                         const std::string& exclude) {
  SG_CHECK(base.size() == finetuned.size(),
           "the base has " << base.size() << " tensors and the fine-tuned model " << finetuned.size()
                           << "; hint: both must be the same architecture (the fine-tune of this base)");
  const std::regex pattern = exclude.empty() ? std::regex() : util::compile_flag_regex("--exclude", exclude);
  std::vector<std::string> names;
  for (const auto& item : base) {
    const torch::Tensor* other = finetuned.find(item.key());
    SG_CHECK(other != nullptr, "the fine-tuned model has no tensor " << item.key()
                                                                     << "; hint: it must be a fine-tune of this base");
    SG_CHECK(other->sizes() == item.value().sizes(),
             item.key() << " is " << item.value().sizes() << " in the base but " << other->sizes()
                        << " in the fine-tuned model; hint: both must have the same architecture and shapes");
    if (!exclude.empty() && std::regex_search(item.key(), pattern)) continue;
    names.push_back(item.key());
  }
  SG_CHECK(!names.empty(), "--exclude '" << exclude << "' leaves no candidate parameter");
  return names;
}

void write_graft(io::StateDict& weights, const io::StateDict& base, const io::StateDict& finetuned,
                 const std::map<std::string, at::Tensor>& mask) {
  torch::NoGradGuard no_grad;
  for (const auto& item : base) {
    torch::Tensor target = weights[item.key()];
    auto selected = mask.find(item.key());
    if (selected == mask.end()) {
      target.copy_(item.value());
    } else {
      target.copy_(torch::where(selected->second, finetuned[item.key()], item.value()));
    }
  }
}

LocalizeResult localize(model::CausalLM& work, const io::StateDict& base, const io::StateDict& finetuned,
                        const std::vector<data::EncodedSequence>& examples, const LocalizeOptions& options,
                        const GraftScore& score) {
  SG_CHECK(options.fraction > 0 && options.fraction <= 1,
           "--fraction must be in (0, 1], got " << options.fraction << "; hint: 0.01 grafts 1% of the parameters");
  SG_CHECK(options.steps >= 0, "--steps must be >= 0, got " << options.steps);
  SG_CHECK(options.batch_size >= 1, "--batch-size must be >= 1, got " << options.batch_size);
  SG_CHECK(options.eval_every >= 1, "--eval-every must be >= 1, got " << options.eval_every);
  const bool needs_examples = options.method != LocalizeMethod::kMovement && options.method != LocalizeMethod::kRandom;
  SG_CHECK(!needs_examples || !examples.empty(),
           "the task has no training examples; hint: " << localize_method_name(options.method)
                                                       << " learns from the train split");
  const auto start = std::chrono::steady_clock::now();
  const std::vector<std::string> names = candidate_names(base, finetuned, options.exclude);
  const FlatLayout layout(names, base);
  LocalizeResult result;
  result.candidates = layout.total;
  const int64_t k = std::max<int64_t>(1, std::llround(options.fraction * static_cast<double>(layout.total)));

  train::EpochOrder order(static_cast<int64_t>(examples.size()), options.seed);
  io::StateDict weights = model::model_state_dict(work);
  for (const auto& item : weights) item.value().set_requires_grad(false);
  for (const std::string& name : names) weights[name].set_requires_grad(true);

  const torch::Tensor base_flat = layout.flatten(base);
  const torch::Tensor delta_flat = layout.flatten(finetuned) - base_flat;
  const torch::Tensor movement = delta_flat.abs();
  torch::Tensor best_mask;
  {
    torch::NoGradGuard no_grad;
    for (const auto& item : base) weights[item.key()].copy_(item.value());
  }

  if (options.method == LocalizeMethod::kMovement) {
    best_mask = top_k_mask(movement, k);
  } else if (options.method == LocalizeMethod::kRandom) {
    torch::Generator generator = at::detail::createCPUGenerator(options.seed);
    best_mask = top_k_mask(torch::rand({layout.total}, generator), k);
  } else if (options.method == LocalizeMethod::kSaliency) {
    // |δ ⊙ ∂L/∂θ| at the fine-tuned model, gradients summed over up to 4 batches.
    write_flat_graft(weights, layout, base_flat, delta_flat, torch::ones({layout.total}));
    torch::Tensor saliency = torch::zeros({layout.total});
    const int64_t batches = std::min<int64_t>(4, (static_cast<int64_t>(examples.size()) + options.batch_size - 1) /
                                                     options.batch_size);
    for (int64_t b = 0; b < batches; ++b) {
      loss_and_gradients(work, weights, layout, examples, options.batch_size, b, order);
      saliency += layout.flatten(weights, /*gradients=*/true);
    }
    best_mask = top_k_mask((saliency * delta_flat).abs(), k);
  } else {
    const bool sigmoid = options.method == LocalizeMethod::kGraftSigmoid;
    const torch::Tensor movement_mask = top_k_mask(movement, k).to(torch::kFloat);
    torch::Tensor scores;
    if (sigmoid) {
      torch::Generator generator = at::detail::createCPUGenerator(options.seed);
      scores = torch::rand({layout.total}, generator);
    } else {
      // Scaled so the k-th largest movement is 1: the first mask is the movement mask.
      const double kth = std::get<0>(movement.topk(k)).min().item<double>();
      scores = movement / (kth > 0 ? kth : 1.0);
    }
    auto relaxed = [&]() {
      torch::Tensor s = torch::sigmoid(scores - options.sigmoid_bias);
      return movement_mask + (1 - 2 * movement_mask) * s;
    };
    auto hard_mask = [&]() { return sigmoid ? top_k_mask(relaxed(), k) : top_k_mask(scores, k); };
    AdamState adam;
    result.best_validation = -std::numeric_limits<double>::infinity();
    double recent_loss = std::nan("");
    for (int64_t step = 0; step <= options.steps; ++step) {
      const bool evaluate = step % options.eval_every == 0 || step == options.steps;
      if (evaluate && score) {
        torch::Tensor mask = hard_mask();
        write_flat_graft(weights, layout, base_flat, delta_flat, mask);
        const double value = score(work);
        if (value > result.best_validation) {
          result.best_validation = value;
          result.best_step = step;
          best_mask = mask;
        }
        util::log_info(localize_method_name(options.method) + " step " + std::to_string(step) + "/" +
                       std::to_string(options.steps) + ": train loss " + std::to_string(recent_loss) +
                       ", validation " + std::to_string(value) + " (best " +
                       std::to_string(result.best_validation) + " at step " + std::to_string(result.best_step) + ")");
      }
      if (step == options.steps) break;
      // Forward at the hard mask (graft) or the relaxed one (graft-sigmoid); ∂L/∂γ = ∂L/∂θ ⊙ δ.
      const torch::Tensor gamma = sigmoid ? relaxed() : hard_mask().to(torch::kFloat);
      write_flat_graft(weights, layout, base_flat, delta_flat, gamma);
      recent_loss = loss_and_gradients(work, weights, layout, examples, options.batch_size, step, order);
      torch::Tensor grad = layout.flatten(weights, /*gradients=*/true) * delta_flat;
      if (sigmoid) {
        torch::Tensor s = torch::sigmoid(scores - options.sigmoid_bias);
        grad = grad * (1 - 2 * movement_mask) * s * (1 - s);
      }
      if (options.score_optimizer == ScoreOptimizer::kAdam) {
        adam.step(scores, grad, options.lr);
      } else {
        // Normalized gradient descent: the step is the gradient over its root mean square, so
        // elements move in proportion to their evidence (Adam moves every element by about lr,
        // and the many with only noise churn through the top-k).
        const double rms = grad.pow(2).mean().sqrt().item<double>();
        if (rms > 0) scores.add_(grad, -options.lr / rms);
      }
    }
    if (!best_mask.defined()) best_mask = hard_mask();
    if (sigmoid) result.relaxed_mass = relaxed().sum().item<double>() / static_cast<double>(k);
  }
  write_flat_graft(weights, layout, base_flat, delta_flat, best_mask);
  for (const auto& item : weights) item.value().set_requires_grad(false);
  result.mask = layout.split_mask(best_mask, base);
  result.selected = best_mask.sum().item<int64_t>();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace sg::skills
