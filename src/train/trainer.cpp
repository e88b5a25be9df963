#include "train/trainer.h"

#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>

#include "data/builtin_tasks.h"
#include "train/checkpoint.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/log.h"

namespace sg::train {

namespace {

using Clock = std::chrono::steady_clock;

std::string format_duration(double seconds) {
  const auto total = static_cast<long long>(std::max(0.0, seconds) + 0.5);
  char text[32];
  if (total >= 3600) {
    std::snprintf(text, sizeof text, "%lld:%02lld:%02lld", total / 3600, total / 60 % 60, total % 60);
  } else {
    std::snprintf(text, sizeof text, "%lld:%02lld", total / 60, total % 60);
  }
  return text;
}

// The progress line on stderr: redrawn in place on a terminal, every ~10% and at evaluations
// otherwise.
class TrainProgress {
 public:
  explicit TrainProgress(int64_t total_steps) : total_(total_steps), tty_(::isatty(STDERR_FILENO) == 1) {}
  void update(int64_t step, double loss, double lr, double tokens_per_second, double eta_seconds,
              const std::string& eval_text, bool force) {
    if (util::is_quiet()) return;
    const int64_t decile = 10 * step / std::max<int64_t>(total_, 1);
    if (!tty_ && !force && decile == last_decile_) return;
    last_decile_ = decile;
    std::fprintf(stderr, "%sstep %lld/%lld | loss %.4f | lr %.3g | %.0f tok/s | %s%sETA %s%s", tty_ ? "\r\033[K" : "",
                 static_cast<long long>(step), static_cast<long long>(total_), loss, lr, tokens_per_second,
                 eval_text.c_str(), eval_text.empty() ? "" : " | ", format_duration(eta_seconds).c_str(),
                 tty_ ? "" : "\n");
    std::fflush(stderr);
    drawn_ = true;
  }
  void finish() {
    if (tty_ && drawn_ && !util::is_quiet()) std::fprintf(stderr, "\n");
    drawn_ = false;
  }

 private:
  int64_t total_;
  bool tty_;
  int64_t last_decile_ = -1;
  bool drawn_ = false;
};

void check_options(const TrainOptions& o) {
  SG_CHECK(o.steps >= 1, "--steps must be >= 1, got " << o.steps);
  SG_CHECK(o.batch_size >= 1, "--batch-size must be >= 1, got " << o.batch_size);
  SG_CHECK(o.grad_accum >= 1, "--grad-accum must be >= 1, got " << o.grad_accum);
  SG_CHECK(o.lr > 0 && std::isfinite(o.lr), "--lr must be > 0, got " << o.lr);
  SG_CHECK(o.warmup_steps >= 0, "--warmup must be >= 0, got " << o.warmup_steps);
  SG_CHECK(o.min_lr_ratio >= 0 && o.min_lr_ratio <= 1, "--min-lr-ratio must be in [0, 1], got " << o.min_lr_ratio);
  SG_CHECK(o.eval_every >= 0, "--eval-every must be >= 0, got " << o.eval_every);
  SG_CHECK(o.checkpoint_every >= 0, "--checkpoint-every must be >= 0, got " << o.checkpoint_every);
  SG_CHECK(o.optimizer.momentum >= 0 && o.optimizer.momentum < 1, "--momentum must be in [0, 1), got "
                                                                      << o.optimizer.momentum);
  SG_CHECK(o.optimizer.weight_decay >= 0, "--weight-decay must be >= 0, got " << o.optimizer.weight_decay);
  SG_CHECK(!o.resume || !o.run_dir.empty(), "--resume needs the run directory (--out) of the interrupted run");
}

// Describes the first difference between two identities, for the resume error.
std::string first_difference(const nlohmann::json& saved, const nlohmann::json& now) {
  for (auto it = now.begin(); it != now.end(); ++it) {
    if (!saved.contains(it.key())) return it.key() + " (missing in the checkpoint)";
    if (saved[it.key()] != it.value()) {
      return it.key() + " (checkpoint: " + saved[it.key()].dump() + ", now: " + it.value().dump() + ")";
    }
  }
  return "a field the checkpoint has and this run does not";
}

}  // namespace

int64_t EpochOrder::at(int64_t position) {
  const int64_t epoch = position / count_;
  if (epoch != epoch_) shuffle(epoch);
  return order_[static_cast<size_t>(position % count_)];
}

void EpochOrder::shuffle(int64_t epoch) {
  order_.resize(static_cast<size_t>(count_));
  for (int64_t i = 0; i < count_; ++i) order_[static_cast<size_t>(i)] = i;
  std::mt19937_64 rng(seed_ * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(epoch) + 1);
  for (int64_t i = count_ - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(data::uniform_below(rng, static_cast<uint64_t>(i + 1)));
    std::swap(order_[static_cast<size_t>(i)], order_[static_cast<size_t>(j)]);
  }
  epoch_ = epoch;
}

at::Tensor batch_loss_sum(model::CausalLM& model, const data::Batch& batch) {
  // inputs: (B, T) -> logits (B, T, V)
  torch::Tensor logits = model.forward(batch.inputs);
  return torch::nn::functional::cross_entropy(
      logits.reshape({-1, model.config().vocab_size}), batch.targets.reshape({-1}),
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(data::kIgnoreTarget).reduction(torch::kSum));
}

std::vector<int64_t> micro_batch_indices(int64_t example_count, int64_t batch_size, int64_t micro_batch,
                                         uint64_t seed) {
  EpochOrder order(example_count, seed);
  std::vector<int64_t> indices;
  for (int64_t i = 0; i < batch_size; ++i) indices.push_back(order.at(micro_batch * batch_size + i));
  return indices;
}

TrainResult train(model::CausalLM& model, const io::StateDict& trainable,
                  const std::vector<data::EncodedSequence>& examples, const TrainOptions& options,
                  const TrainHooks& hooks) {
  check_options(options);
  SG_CHECK(!examples.empty(), "no training examples; hint: the task's train split is empty");
  SG_CHECK(!trainable.is_empty(), "no trainable parameters");
  const int64_t max_positions = model.config().max_positions;
  Optimizer optimizer(trainable, options.optimizer);
  ScheduleOptions schedule{options.warmup_steps, options.steps, options.min_lr_ratio};

  TrainResult result;
  result.best_score = -std::numeric_limits<double>::infinity();
  int64_t start_step = 0;
  if (options.resume) {
    TrainCheckpoint checkpoint = load_train_checkpoint(options.run_dir);
    const nlohmann::json saved = checkpoint.state.value("identity", nlohmann::json::object());
    SG_CHECK(saved == options.identity,
             "--resume: the checkpoint in " << options.run_dir << " was made by another run: "
                                            << first_difference(saved, options.identity)
                                            << "; hint: resume with the same base model, task and mode, or start "
                                               "a new run in another --out directory");
    torch::NoGradGuard no_grad;
    for (const auto& item : trainable) {
      const torch::Tensor* saved_tensor = checkpoint.trainable.find(item.key());
      SG_CHECK(saved_tensor != nullptr && saved_tensor->sizes() == item.value().sizes(),
               "--resume: the checkpoint in " << options.run_dir << " has no tensor '" << item.key()
                                              << "' of shape " << item.value().sizes()
                                              << "; hint: it was made from another model or mode");
      item.value().copy_(*saved_tensor);
    }
    optimizer.load_state(checkpoint.optimizer, options.run_dir + "/checkpoint/optimizer.safetensors");
    start_step = checkpoint.state.at("step").get<int64_t>();
    if (checkpoint.state.value("best_score", nlohmann::json()).is_number()) {
      result.best_score = checkpoint.state["best_score"].get<double>();
    }
    result.best_step = checkpoint.state.value("best_step", int64_t{0});
    result.log = checkpoint.state.value("log", nlohmann::json::array());
    result.resumed = true;
    util::log_info("resuming from step " + std::to_string(start_step) + " of " + std::to_string(options.steps));
  }

  EpochOrder order(static_cast<int64_t>(examples.size()), options.seed);
  TrainProgress progress(options.steps);
  model.train();
  double train_seconds = 0;
  double last_loss = 0;
  std::string eval_text;
  result.stop_reason = "steps";
  int64_t step = start_step;
  while (step < options.steps) {
    const auto step_start = Clock::now();
    // Build the step's micro-batches first: the loss is the mean over all their completion tokens.
    std::vector<data::Batch> batches;
    int64_t step_targets = 0, step_tokens = 0;
    for (int64_t k = 0; k < options.grad_accum; ++k) {
      const int64_t micro_batch = step * options.grad_accum + k;
      std::vector<const data::EncodedSequence*> sequences;
      for (int64_t i = 0; i < options.batch_size; ++i) {
        const int64_t index = order.at(micro_batch * options.batch_size + i);
        sequences.push_back(&examples[static_cast<size_t>(index)]);
        step_tokens += static_cast<int64_t>(examples[static_cast<size_t>(index)].tokens.size()) - 1;
      }
      batches.push_back(data::make_batch(sequences, max_positions));
      step_targets += batches.back().target_count;
    }
    SG_CHECK(step_targets > 0, "step " << step + 1 << " has no completion tokens to learn");
    optimizer.zero_grad();
    double loss_sum = 0;
    for (const data::Batch& batch : batches) {
      torch::Tensor loss = batch_loss_sum(model, batch);
      loss_sum += loss.item<double>();
      (loss / static_cast<double>(step_targets)).backward();
    }
    const double mean_loss = loss_sum / static_cast<double>(step_targets);
    const double grad_norm = clip_grad_norm(trainable, options.clip);
    const double lr = scheduled_lr(options.lr, step, schedule);
    SG_CHECK(std::isfinite(mean_loss) && std::isfinite(grad_norm),
             "training diverged at step " << step + 1 << ": loss " << mean_loss << ", gradient norm " << grad_norm
                                          << " (lr " << lr << "); the last good checkpoint and best model in "
                                          << (options.run_dir.empty() ? "--out" : options.run_dir)
                                          << " are kept; hint: lower --lr or keep --clip on");
    optimizer.step(lr);
    ++step;
    last_loss = mean_loss;
    result.tokens += step_tokens;
    train_seconds += util::seconds_since(step_start);
    result.log.push_back({{"step", step}, {"loss", mean_loss}, {"lr", lr}, {"grad_norm", grad_norm}});

    const bool last = step == options.steps;
    const bool eval_due = last || (options.eval_every > 0 && step % options.eval_every == 0);
    bool reached_target = false;
    if (eval_due) {
      const double score = hooks.evaluate ? hooks.evaluate() : -mean_loss;
      model.train();
      result.log.push_back({{"step", step}, {"eval", score}});
      if (score > result.best_score) {
        result.best_score = score;
        result.best_step = step;
        if (hooks.save_best) hooks.save_best(step, score);
      }
      char text[96];
      std::snprintf(text, sizeof text, "val %.3f (best %.3f @%lld)", score, result.best_score,
                    static_cast<long long>(result.best_step));
      eval_text = text;
      reached_target = score >= options.target_score;
    }
    const double rate = train_seconds > 0 ? static_cast<double>(result.tokens) / train_seconds : 0;
    const double eta = train_seconds / static_cast<double>(step - start_step) * static_cast<double>(options.steps - step);
    progress.update(step, mean_loss, lr, rate, eta, eval_text, eval_due);
    if (reached_target && !last) {
      result.stop_reason = "target_score";
      break;
    }
    const bool checkpoint_due = options.checkpoint_every > 0 && step % options.checkpoint_every == 0 && !last;
    if (checkpoint_due && !options.run_dir.empty()) {
      TrainCheckpoint checkpoint;
      checkpoint.trainable = trainable;
      checkpoint.optimizer = optimizer.state();
      checkpoint.state = {{"step", step},          {"best_score", std::isfinite(result.best_score) ? nlohmann::json(result.best_score) : nlohmann::json()},
                          {"best_step", result.best_step}, {"identity", options.identity},
                          {"log", result.log}};
      save_train_checkpoint(options.run_dir, checkpoint);
    }
  }
  progress.finish();
  result.steps = step;
  result.final_loss = last_loss;
  result.seconds = train_seconds;
  result.tokens_per_second = train_seconds > 0 ? static_cast<double>(result.tokens) / train_seconds : 0;
  return result;
}

}  // namespace sg::train
