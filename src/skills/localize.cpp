#include "skills/localize.h"

#include "skills/graft_util.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <regex>

#include "train/trainer.h"
#include "util/error.h"
#include "util/log.h"
#include "util/regex.h"

namespace sg::skills {

struct GraftOptimizer::State {
  model::CausalLM& work;
  const io::StateDict& base;
  const io::StateDict& finetuned;
  const std::vector<data::EncodedSequence>& examples;
  LocalizeOptions options;
  FlatLayout layout;
  io::StateDict weights;  // the work model's tensors (shared storage)
  int64_t k = 0;
  bool sigmoid = false;
  torch::Tensor scores;      // (N)
  torch::Tensor scratch;     // (N): ∂L/∂γ
  torch::Tensor scratch2;    // (N): σ(S − b) and γ for graft-sigmoid; √v̂ for adam
  torch::Tensor velocity;    // (N): the normalized steps' momentum (nsgd with momentum > 0)
  torch::Tensor adam_m, adam_v;  // (N) each, --score-optimizer adam only
  int64_t adam_t = 0;
  torch::Tensor movement_mask;  // graft-sigmoid: top-k |δ|, sorted flat indices
  torch::Tensor current;        // the hard mask of the current scores (undefined: scores changed)
  torch::Tensor written;        // the hard mask work holds exactly (undefined: something else)
  train::EpochOrder order;
  int64_t step = 0;

  State(model::CausalLM& work_model, const io::StateDict& base_weights, const io::StateDict& finetuned_weights,
        const std::vector<data::EncodedSequence>& train_examples, const LocalizeOptions& localize_options)
      : work(work_model),
        base(base_weights),
        finetuned(finetuned_weights),
        examples(train_examples),
        options(localize_options),
        layout(candidate_names(base_weights, finetuned_weights, localize_options.exclude), base_weights),
        weights(model::model_state_dict(work_model)),
        order(static_cast<int64_t>(train_examples.size()), localize_options.seed) {
    k = std::max<int64_t>(1, std::llround(options.fraction * static_cast<double>(layout.total)));
    for (const auto& item : weights) item.value().set_requires_grad(false);
    for (const std::string& name : layout.names) weights[name].set_requires_grad(true);
    torch::NoGradGuard no_grad;
    for (const auto& item : base) weights[item.key()].copy_(item.value());
    written = torch::empty({0}, torch::kLong);
  }

  // The step's learning rate: options.lr, or with options.decay a cosine from it to 0 over the
  // steps, so the mask settles instead of churning at the end.
  double lr_now() const {
    if (!options.decay || options.steps <= 0) return options.lr;
    const double progress = static_cast<double>(step) / static_cast<double>(options.steps);
    return options.lr * 0.5 * (1 + std::cos(M_PI * std::min(1.0, progress)));
  }

  // scratch[t] = |δ_t| for every candidate tensor t.
  void movement_into(torch::Tensor& flat) const {
    for (size_t t = 0; t < layout.names.size(); ++t) {
      torch::Tensor target = layout.slice(flat, t);
      torch::abs_out(target, delta_of(base, finetuned, layout.names[t]));
    }
  }

  // scratch2 = γ = σ(S − b), mirrored (1 − σ) on the movement mask: the relaxed mask.
  void relaxed_into_scratch2() {
    scratch2.copy_(scores).sub_(options.sigmoid_bias).sigmoid_();
    scratch2.index_copy_(0, movement_mask, 1 - scratch2.index_select(0, movement_mask));
  }

  // work = θ_base + γ ⊙ δ for the continuous γ in scratch2.
  void write_relaxed() {
    torch::NoGradGuard no_grad;
    for (size_t t = 0; t < layout.names.size(); ++t) {
      const std::string& name = layout.names[t];
      torch::Tensor target = weights[name];
      const torch::Tensor base_flat = base[name].to(torch::kFloat).reshape({-1});
      target.copy_((base_flat + layout.slice(scratch2, t) * delta_of(base, finetuned, name)).reshape(target.sizes()));
    }
    written = torch::Tensor();
  }
};

GraftOptimizer::GraftOptimizer(model::CausalLM& work, const io::StateDict& base, const io::StateDict& finetuned,
                               const std::vector<data::EncodedSequence>& examples, const LocalizeOptions& options)
    : state_(std::make_unique<State>(work, base, finetuned, examples, options)) {
  State& s = *state_;
  SG_CHECK(!examples.empty(), "the task has no training examples; hint: graft learns from the train split");
  s.sigmoid = options.method == LocalizeMethod::kGraftSigmoid;
  const int64_t n = s.layout.total;
  s.scores = torch::empty({n});
  s.scratch = torch::empty({n});
  if (s.sigmoid || options.score_optimizer == ScoreOptimizer::kAdam) s.scratch2 = torch::empty({n});
  // graft-sigmoid keeps plain steps (its third vector is σ).
  if (!s.sigmoid && options.score_optimizer == ScoreOptimizer::kNormalizedSgd && options.momentum > 0) {
    s.velocity = torch::zeros({n});
  }
  if (s.sigmoid) {
    s.movement_into(s.scratch);
    s.movement_mask = top_k_indices(s.scratch, s.k);
    torch::Generator generator = at::detail::createCPUGenerator(options.seed);
    s.scores = torch::rand({n}, generator);
  } else {
    // Scaled so the k-th largest movement is 1: the first mask is the movement mask.
    s.movement_into(s.scores);
    const torch::Tensor top = top_k_indices(s.scores, s.k);
    const double kth = s.scores.index_select(0, top).min().item<double>();
    s.scores.div_(kth > 0 ? kth : 1.0);
  }
  if (options.score_optimizer == ScoreOptimizer::kAdam) {
    s.adam_m = torch::zeros({n});
    s.adam_v = torch::zeros({n});
  }
}

GraftOptimizer::~GraftOptimizer() = default;

int64_t GraftOptimizer::candidates() const { return state_->layout.total; }
int64_t GraftOptimizer::budget() const { return state_->k; }

int64_t GraftOptimizer::buffer_bytes() const {
  int64_t bytes = 0;
  for (const torch::Tensor* t :
       {&state_->scores, &state_->scratch, &state_->scratch2, &state_->velocity, &state_->adam_m, &state_->adam_v}) {
    if (t->defined()) bytes += t->numel() * static_cast<int64_t>(t->element_size());
  }
  return bytes;
}

at::Tensor GraftOptimizer::mask() {
  State& s = *state_;
  if (!s.current.defined()) {
    if (s.sigmoid) {
      s.relaxed_into_scratch2();
      s.current = top_k_indices(s.scratch2, s.k);
    } else {
      s.current = top_k_indices(s.scores, s.k);
    }
  }
  return s.current;
}

void GraftOptimizer::write(const at::Tensor& mask) {
  State& s = *state_;
  torch::NoGradGuard no_grad;
  if (s.written.defined()) {
    // Only the entries that change: exact values, so no drift however many steps.
    const torch::Tensor added = sorted_difference(mask, s.written);
    const torch::Tensor removed = sorted_difference(s.written, mask);
    for (size_t t = 0; t < s.layout.names.size(); ++t) {
      const std::string& name = s.layout.names[t];
      torch::Tensor target = s.weights[name].view({-1});
      for (const auto& [indices, source] : {std::make_pair(added, &s.finetuned), std::make_pair(removed, &s.base)}) {
        const torch::Tensor local = s.layout.local(indices, t);
        if (local.numel() == 0) continue;
        target.index_copy_(0, local, (*source)[name].reshape({-1}).index_select(0, local).to(target.dtype()));
      }
    }
  } else {
    for (size_t t = 0; t < s.layout.names.size(); ++t) {
      const std::string& name = s.layout.names[t];
      torch::Tensor target = s.weights[name];
      target.copy_(torch::where(s.layout.local_mask(mask, t, target), s.finetuned[name], s.base[name]));
    }
  }
  s.written = mask;
}

std::map<std::string, at::Tensor> GraftOptimizer::split(const at::Tensor& mask) const {
  std::map<std::string, at::Tensor> out;
  for (size_t t = 0; t < state_->layout.names.size(); ++t) {
    const std::string& name = state_->layout.names[t];
    out[name] = state_->layout.local_mask(mask, t, state_->base[name]);
  }
  return out;
}

double GraftOptimizer::relaxed_mass() {
  State& s = *state_;
  if (!s.sigmoid) return 0;
  s.relaxed_into_scratch2();
  return s.scratch2.sum().item<double>() / static_cast<double>(s.k);
}

double GraftOptimizer::step() {
  State& s = *state_;
  // Forward at the hard mask (graft) or the relaxed one (graft-sigmoid); ∂L/∂γ = ∂L/∂θ ⊙ δ.
  if (s.sigmoid) {
    s.relaxed_into_scratch2();
    s.write_relaxed();
  } else {
    write(mask());
  }
  double loss;
  if (s.options.loss) {
    zero_gradients(s.weights, s.layout);
    loss = s.options.loss(s.work, s.step);
  } else {
    loss = loss_and_gradients(s.work, s.weights, s.layout, s.examples, s.options.batch_size, s.step, s.order);
  }
  ++s.step;
  torch::Tensor& grad = s.scratch;
  gradient_times_delta(grad, s.weights, s.layout, s.base, s.finetuned);
  if (s.sigmoid) {
    // dγ/dS = ±σ(1 − σ), negative on the movement mask (γ = 1 − σ there); scratch2 holds σ
    // (relaxed_into_scratch2 mirrored it on the mask: undo that first).
    s.scratch2.copy_(s.scores).sub_(s.options.sigmoid_bias).sigmoid_();
    grad.index_copy_(0, s.movement_mask, grad.index_select(0, s.movement_mask).neg());
    grad.mul_(s.scratch2);
    s.scratch2.neg_().add_(1);
    grad.mul_(s.scratch2);
  }
  if (s.options.score_optimizer == ScoreOptimizer::kAdam) {
    ++s.adam_t;
    s.adam_m.mul_(0.9).add_(grad, 0.1);
    s.adam_v.mul_(0.999).addcmul_(grad, grad, 0.001);
    const double bias1 = 1 - std::pow(0.9, static_cast<double>(s.adam_t));
    const double bias2 = 1 - std::pow(0.999, static_cast<double>(s.adam_t));
    torch::div_out(s.scratch2, s.adam_v, bias2);
    s.scores.addcdiv_(s.adam_m, s.scratch2.sqrt_().add_(1e-8), -s.options.lr / bias1);
  } else {
    // Normalized gradient descent: the step is the gradient over its root mean square, so
    // elements move in proportion to their evidence (Adam moves every element by about lr,
    // and the many with only noise churn through the top-k).
    // With momentum, the normalized steps are averaged (heavy ball): an element keeps moving while
    // its evidence keeps pointing the same way, and batch noise averages out.
    const double rms = grad.norm().item<double>() / std::sqrt(static_cast<double>(grad.numel()));
    if (rms > 0) {
      if (s.velocity.defined()) {
        s.velocity.mul_(s.options.momentum).add_(grad, 1.0 / rms);
        s.scores.add_(s.velocity, -s.lr_now());
      } else {
        s.scores.add_(grad, -s.lr_now() / rms);
      }
    }
  }
  s.current = torch::Tensor();
  return loss;
}

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

double default_score_lr(ScoreOptimizer optimizer) { return optimizer == ScoreOptimizer::kAdam ? 0.02 : 0.1; }

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
  LocalizeResult result;
  torch::Tensor best_mask;  // sorted flat indices
  std::map<std::string, at::Tensor> mask;
  if (options.method == LocalizeMethod::kGraft || options.method == LocalizeMethod::kGraftSigmoid) {
    GraftOptimizer graft(work, base, finetuned, examples, options);
    result.best_validation = -std::numeric_limits<double>::infinity();
    double recent_loss = std::nan("");
    for (int64_t step = 0; step <= options.steps; ++step) {
      const bool evaluate = step % options.eval_every == 0 || step == options.steps;
      if (evaluate && score) {
        const torch::Tensor current = graft.mask();
        graft.write(current);
        const double value = score(work);
        if (value > result.best_validation) {
          result.best_validation = value;
          result.best_step = step;
          best_mask = current;
        }
        util::log_info(localize_method_name(options.method) + " step " + std::to_string(step) + "/" +
                       std::to_string(options.steps) + ": train loss " + std::to_string(recent_loss) +
                       ", validation " + std::to_string(value) + " (best " +
                       std::to_string(result.best_validation) + " at step " + std::to_string(result.best_step) + ")");
      }
      if (step == options.steps) break;
      recent_loss = graft.step();
    }
    if (!best_mask.defined()) best_mask = graft.mask();
    if (options.method == LocalizeMethod::kGraftSigmoid) result.relaxed_mass = graft.relaxed_mass();
    graft.write(best_mask);
    result.candidates = graft.candidates();
    mask = graft.split(best_mask);
  } else {
    // The baselines need one (N) vector: the values they rank.
    const FlatLayout layout(candidate_names(base, finetuned, options.exclude), base);
    const int64_t k = std::max<int64_t>(1, std::llround(options.fraction * static_cast<double>(layout.total)));
    io::StateDict weights = model::model_state_dict(work);
    for (const auto& item : weights) item.value().set_requires_grad(false);
    torch::Tensor ranked;
    if (options.method == LocalizeMethod::kMovement) {
      ranked = torch::empty({layout.total});
      for (size_t t = 0; t < layout.names.size(); ++t) {
        torch::Tensor target = layout.slice(ranked, t);
        torch::abs_out(target, delta_of(base, finetuned, layout.names[t]));
      }
    } else if (options.method == LocalizeMethod::kRandom) {
      torch::Generator generator = at::detail::createCPUGenerator(options.seed);
      ranked = torch::rand({layout.total}, generator);
    } else {
      // |δ ⊙ ∂L/∂θ| at the fine-tuned model, gradients summed over up to 4 batches (in .grad).
      {
        torch::NoGradGuard no_grad;
        for (const auto& item : finetuned) weights[item.key()].copy_(item.value());
      }
      for (const std::string& name : layout.names) weights[name].set_requires_grad(true);
      train::EpochOrder order(static_cast<int64_t>(examples.size()), options.seed);
      const int64_t batches = std::min<int64_t>(4, (static_cast<int64_t>(examples.size()) + options.batch_size - 1) /
                                                       options.batch_size);
      ranked = torch::empty({layout.total});
      for (int64_t b = 0; b < batches; ++b) {
        loss_and_gradients(work, weights, layout, examples, options.batch_size, b, order, /*accumulate=*/b > 0);
      }
      gradient_times_delta(ranked, weights, layout, base, finetuned);
      ranked.abs_();
    }
    best_mask = top_k_indices(ranked, k);
    ranked = torch::Tensor();
    result.candidates = layout.total;
    torch::NoGradGuard no_grad;
    for (const auto& item : base) weights[item.key()].copy_(item.value());
    for (size_t t = 0; t < layout.names.size(); ++t) {
      const std::string& name = layout.names[t];
      mask[name] = layout.local_mask(best_mask, t, base[name]);
      weights[name].copy_(torch::where(mask[name], finetuned[name], base[name]));
    }
  }
  for (const auto& item : model::model_state_dict(work)) {
    item.value().set_requires_grad(false);
    item.value().mutable_grad() = torch::Tensor();  // a model's worth of memory, needed no more
  }
  result.mask = std::move(mask);
  result.selected = best_mask.numel();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace sg::skills
