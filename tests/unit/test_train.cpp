// Trainer building blocks on hand-computed cases: SGD/AdamW updates (torch.optim semantics),
// optimizer state round trips, global gradient clipping, the warmup + cosine schedule,
// completion-only batches, the seeded epoch order, and parameter selection for --mode select.
#include <gtest/gtest.h>

#include "test_util.h"
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <set>

#include "data/batching.h"
#include "io/tokenizer.h"
#include "model/causal_lm.h"
#include "model/config.h"
#include "train/finetune.h"
#include "train/optimizer.h"
#include "train/trainer.h"
#include "util/error.h"

namespace {

using sg::test::error_of;

using sg::io::StateDict;
using sg::train::Optimizer;
using sg::train::OptimizerKind;
using sg::train::OptimizerOptions;

torch::Tensor dvec(std::vector<double> values) {
  return torch::tensor(values, torch::kDouble).set_requires_grad(true);
}

void set_grad(const torch::Tensor& param, std::vector<double> values) {
  param.mutable_grad() = torch::tensor(values, torch::kDouble);
}

std::vector<double> values_of(const torch::Tensor& t) {
  torch::Tensor c = t.detach().to(torch::kDouble).contiguous().reshape({-1});
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

void expect_values(const torch::Tensor& t, const std::vector<double>& expected, double tolerance, const char* what) {
  const std::vector<double> got = values_of(t);
  ASSERT_EQ(got.size(), expected.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], expected[i], tolerance) << what << "[" << i << "]";
}

// ---- optimizer ----

TEST(TrainOptimizer, SgdMomentumTwoStepsByHand) {
  // torch.optim.SGD(momentum=0.9, lr=0.1): buf1 = g1; buf2 = 0.9 buf1 + g2; p -= lr buf.
  torch::Tensor p = dvec({1.0, -2.0});
  StateDict params;
  params.insert("p", p);
  OptimizerOptions options;
  options.kind = OptimizerKind::kSgd;
  options.momentum = 0.9;
  Optimizer optimizer(params, options);
  set_grad(p, {0.5, 1.0});
  optimizer.step(0.1);
  expect_values(p, {0.95, -2.1}, 1e-12, "after step 1");
  set_grad(p, {-1.0, 2.0});
  optimizer.step(0.1);
  // buf2 = (0.45 - 1.0, 0.9 + 2.0) = (-0.55, 2.9)
  expect_values(p, {0.95 + 0.055, -2.1 - 0.29}, 1e-12, "after step 2");
  EXPECT_EQ(optimizer.steps_taken(), 2);
  expect_values(optimizer.state().find("p.momentum_buffer")->clone(), {-0.55, 2.9}, 1e-12, "buffer");
}

TEST(TrainOptimizer, SgdWeightDecayIsAddedToTheGradient) {
  torch::Tensor p = dvec({1.0, -2.0});
  StateDict params;
  params.insert("p", p);
  OptimizerOptions options;
  options.kind = OptimizerKind::kSgd;
  options.momentum = 0;
  options.weight_decay = 0.1;
  Optimizer optimizer(params, options);
  set_grad(p, {0.5, 1.0});
  optimizer.step(0.1);
  // g' = g + 0.1 p = (0.6, 0.8)
  expect_values(p, {1.0 - 0.06, -2.0 - 0.08}, 1e-12, "one step");
  // With momentum as well: the decayed gradient goes into the buffer (torch.optim.SGD).
  torch::Tensor q = dvec({2.0});
  StateDict qparams;
  qparams.insert("q", q);
  options.momentum = 0.5;
  Optimizer with_momentum(qparams, options);
  set_grad(q, {1.0});
  with_momentum.step(1.0);  // g' = 1 + 0.2 = 1.2; buf = 1.2; q = 0.8
  expect_values(q, {0.8}, 1e-12, "momentum step 1");
  set_grad(q, {1.0});
  with_momentum.step(1.0);  // g' = 1 + 0.08 = 1.08; buf = 0.6 + 1.08 = 1.68; q = 0.8 - 1.68
  expect_values(q, {0.8 - 1.68}, 1e-12, "momentum step 2");
}

TEST(TrainOptimizer, SgdSkipsParametersWithoutGradient) {
  torch::Tensor a = dvec({1.0}), b = dvec({3.0});
  StateDict params;
  params.insert("a", a);
  params.insert("b", b);
  Optimizer optimizer(params, OptimizerOptions{});
  set_grad(a, {1.0});
  optimizer.step(0.5);
  expect_values(a, {0.5}, 1e-12, "a");
  expect_values(b, {3.0}, 0, "b");
}

// The torch.optim.AdamW update of one scalar, written out.
struct ScalarAdamW {
  double p, m = 0, v = 0, lr, wd, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  int t = 0;
  void step(double g) {
    ++t;
    p *= 1 - lr * wd;
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g * g;
    const double m_hat = m / (1 - std::pow(b1, t));
    const double v_hat = v / (1 - std::pow(b2, t));
    p -= lr * m_hat / (std::sqrt(v_hat) + eps);
  }
};

TEST(TrainOptimizer, AdamWTwoStepsByHand) {
  const double lr = 0.01, wd = 0.1;
  torch::Tensor p = dvec({1.0, -0.5, 0.0});
  StateDict params;
  params.insert("p", p);
  OptimizerOptions options;
  options.kind = OptimizerKind::kAdamW;
  options.weight_decay = wd;
  Optimizer optimizer(params, options);
  std::vector<ScalarAdamW> ref = {{1.0, 0, 0, lr, wd}, {-0.5, 0, 0, lr, wd}, {0.0, 0, 0, lr, wd}};
  const std::vector<std::vector<double>> grads = {{0.2, -3.0, 1e-3}, {-0.1, 1.0, 2e-3}};
  for (const auto& g : grads) {
    set_grad(p, g);
    optimizer.step(lr);
    for (size_t i = 0; i < ref.size(); ++i) ref[i].step(g[i]);
  }
  expect_values(p, {ref[0].p, ref[1].p, ref[2].p}, 1e-12, "AdamW");
  // First step by hand: m_hat = g, v_hat = g^2, so p1 = p0 (1 - lr wd) - lr sign(g) (up to eps).
  torch::Tensor q = dvec({1.0});
  StateDict qparams;
  qparams.insert("q", q);
  Optimizer single(qparams, options);
  set_grad(q, {0.2});
  single.step(lr);
  expect_values(q, {1.0 * (1 - 0.001) - 0.01 * 0.2 / (0.2 + 1e-8)}, 1e-12, "AdamW step 1");
}

// Runs `first` steps on one optimizer, moves its state (through a copy, as a checkpoint would)
// into a fresh optimizer over a copy of the parameters, and runs `second` more steps on both.
void expect_state_round_trip(OptimizerKind kind) {
  torch::manual_seed(3);
  torch::Tensor w = torch::randn({3, 4}).set_requires_grad(true);
  torch::Tensor b = torch::randn({4}).set_requires_grad(true);
  StateDict params;
  params.insert("w", w);
  params.insert("b", b);
  OptimizerOptions options;
  options.kind = kind;
  options.weight_decay = 0.01;
  Optimizer uninterrupted(params, options);
  auto grads_of_step = [](int step, const torch::Tensor& t) {
    return torch::sin(torch::arange(t.numel(), torch::kFloat).reshape(t.sizes()) * (0.3 + step));
  };
  auto run_step = [&](Optimizer& optimizer, int step) {
    for (const auto& item : optimizer.parameters()) item.value().mutable_grad() = grads_of_step(step, item.value());
    optimizer.step(0.05);
  };
  for (int step = 0; step < 3; ++step) run_step(uninterrupted, step);

  StateDict saved;
  for (const auto& item : uninterrupted.state()) saved.insert(item.key(), item.value().clone());
  StateDict resumed_params;
  for (const auto& item : params) resumed_params.insert(item.key(), item.value().detach().clone().set_requires_grad(true));
  Optimizer resumed(resumed_params, options);
  resumed.load_state(saved, "test");
  EXPECT_EQ(resumed.steps_taken(), 3);
  for (int step = 3; step < 6; ++step) {
    run_step(uninterrupted, step);
    run_step(resumed, step);
  }
  for (const auto& item : params) {
    EXPECT_TRUE(torch::equal(item.value(), resumed_params[item.key()])) << item.key();
  }
}

TEST(TrainOptimizer, StateRoundTripContinuesBitExactSgd) { expect_state_round_trip(OptimizerKind::kSgd); }
TEST(TrainOptimizer, StateRoundTripContinuesBitExactAdamW) { expect_state_round_trip(OptimizerKind::kAdamW); }

TEST(TrainOptimizer, LoadStateWithMissingKeyThrows) {
  torch::Tensor p = dvec({1.0});
  StateDict params;
  params.insert("p", p);
  OptimizerOptions options;
  options.kind = OptimizerKind::kAdamW;
  Optimizer optimizer(params, options);
  StateDict state = optimizer.state();
  StateDict partial;
  for (const auto& item : state) {
    if (item.key() != "p.exp_avg_sq") partial.insert(item.key(), item.value());
  }
  Optimizer fresh(params, options);
  const std::string message = error_of([&] { fresh.load_state(partial, "ckpt/optimizer.safetensors"); });
  EXPECT_NE(message.find("ckpt/optimizer.safetensors"), std::string::npos) << message;
  EXPECT_NE(message.find("p.exp_avg_sq"), std::string::npos) << message;
  // SGD state loaded into AdamW: the moments are missing.
  Optimizer sgd(params, OptimizerOptions{});
  EXPECT_NE(error_of([&] { fresh.load_state(sgd.state(), "sgd"); }).find("exp_avg"), std::string::npos);
  EXPECT_EQ(sg::train::optimizer_kind_from_name("adamw"), OptimizerKind::kAdamW);
  EXPECT_THROW(sg::train::optimizer_kind_from_name("adam"), sg::Error);
}

// ---- clipping and schedule ----

TEST(TrainClip, GlobalNormOverTensorsAndScalingOnlyAboveMax) {
  torch::Tensor a = dvec({3.0, 4.0});        // norm 5
  torch::Tensor b = dvec({12.0});            // norm 12: global sqrt(25 + 144) = 13
  torch::Tensor c = dvec({100.0});           // no gradient: not counted
  StateDict params;
  params.insert("a", a);
  params.insert("b", b);
  params.insert("c", c);
  set_grad(a, {3.0, 4.0});
  set_grad(b, {12.0});
  EXPECT_NEAR(sg::train::clip_grad_norm(params, 26.0), 13.0, 1e-12);
  expect_values(a.grad(), {3.0, 4.0}, 0, "below max: unchanged");
  EXPECT_NEAR(sg::train::clip_grad_norm(params, 0.0), 13.0, 1e-12);
  expect_values(a.grad(), {3.0, 4.0}, 0, "max 0: off");
  EXPECT_NEAR(sg::train::clip_grad_norm(params, 6.5), 13.0, 1e-12);
  // Scaled by 6.5 / 13 (the library adds 1e-6 to the norm, like torch's clip_grad_norm_).
  expect_values(a.grad(), {1.5, 2.0}, 1e-6, "a clipped");
  expect_values(b.grad(), {6.0}, 1e-6, "b clipped");
  EXPECT_NEAR(sg::train::clip_grad_norm(params, 100.0), 6.5, 1e-6);
  EXPECT_FALSE(c.grad().defined());
}

TEST(TrainSchedule, WarmupThenCosineByClosedForm) {
  sg::train::ScheduleOptions s;
  s.warmup_steps = 4;
  s.total_steps = 14;  // cosine over steps 4..14
  s.min_lr_ratio = 0.1;
  const double lr = 2.0;
  EXPECT_NEAR(sg::train::scheduled_lr(lr, 0, s), 2.0 * 1 / 4, 1e-12);
  EXPECT_NEAR(sg::train::scheduled_lr(lr, 1, s), 2.0 * 2 / 4, 1e-12);
  EXPECT_NEAR(sg::train::scheduled_lr(lr, 3, s), 2.0, 1e-12);
  EXPECT_NEAR(sg::train::scheduled_lr(lr, 4, s), 2.0, 1e-12);                         // cosine start
  EXPECT_NEAR(sg::train::scheduled_lr(lr, 9, s), 2.0 * (0.1 + 0.9 * 0.5), 1e-12);     // midpoint
  const double quarter = 0.5 * (1 + std::cos(M_PI * 0.2));                             // step 6: 2/10
  EXPECT_NEAR(sg::train::scheduled_lr(lr, 6, s), 2.0 * (0.1 + 0.9 * quarter), 1e-12);
  EXPECT_NEAR(sg::train::scheduled_lr(lr, 14, s), 2.0 * 0.1, 1e-12);                  // end
  EXPECT_NEAR(sg::train::scheduled_lr(lr, 40, s), 2.0 * 0.1, 1e-12);                  // past the end
  sg::train::ScheduleOptions plain;
  plain.total_steps = 10;
  EXPECT_NEAR(sg::train::scheduled_lr(1.0, 0, plain), 1.0, 1e-12);
  EXPECT_NEAR(sg::train::scheduled_lr(1.0, 5, plain), 0.5, 1e-12);
  EXPECT_NEAR(sg::train::scheduled_lr(1.0, 10, plain), 0.0, 1e-12);
}

// ---- batches ----

TEST(TrainBatch, TargetsOnlyOnCompletionTokensWithPadding) {
  sg::data::EncodedSequence first{{1, 2, 3, 4, 5}, 3};  // completion: 4 5
  sg::data::EncodedSequence second{{7, 8, 9}, 1};       // completion: 8 9
  sg::data::Batch batch = sg::data::make_batch({&first, &second}, 10);
  ASSERT_EQ(batch.inputs.sizes(), (std::vector<int64_t>{2, 4}));
  ASSERT_EQ(batch.targets.sizes(), (std::vector<int64_t>{2, 4}));
  const torch::Tensor inputs = torch::tensor({1, 2, 3, 4, 7, 8, 0, 0}, torch::kLong).reshape({2, 4});
  const torch::Tensor targets = torch::tensor({-100, -100, 4, 5, 8, 9, -100, -100}, torch::kLong).reshape({2, 4});
  EXPECT_TRUE(torch::equal(batch.inputs, inputs)) << batch.inputs;
  EXPECT_TRUE(torch::equal(batch.targets, targets)) << batch.targets;
  EXPECT_EQ(batch.target_count, 4);
  EXPECT_EQ(batch.inputs.scalar_type(), torch::kLong);
}

TEST(TrainBatch, TooLongSequenceThrowsNamingLengthAndLimit) {
  sg::data::EncodedSequence sequence{{1, 2, 3, 4, 5}, 2};
  EXPECT_NO_THROW(sg::data::make_batch({&sequence}, 4));  // 4 positions + the last predicted token
  const std::string message = error_of([&] { sg::data::make_batch({&sequence}, 3); });
  EXPECT_NE(message.find("5"), std::string::npos) << message;
  EXPECT_NE(message.find("3"), std::string::npos) << message;
}

TEST(TrainBatch, EncodeCompletionOnByteTokenizer) {
  auto tokenizer = sg::io::make_byte_tokenizer();
  sg::data::EncodedSequence s = sg::data::encode_completion(*tokenizer, "ab", " c.");
  EXPECT_EQ(s.tokens, (std::vector<int64_t>{'a', 'b', ' ', 'c', '.'}));
  EXPECT_EQ(s.completion_start, 2);
  EXPECT_EQ(s.completion_length(), 3);
  EXPECT_THROW(sg::data::encode_completion(*tokenizer, "ab", ""), sg::Error);
}

// ---- epoch order ----

TEST(TrainOrder, EveryEpochIsAPermutationAndSeedsDecide) {
  const int64_t count = 7, batch = 3;  // epochs do not align with micro-batches
  auto positions = [&](uint64_t seed) {
    std::vector<int64_t> all;
    for (int64_t mb = 0; mb < 7; ++mb) {  // 21 positions = 3 epochs
      auto indices = sg::train::micro_batch_indices(count, batch, mb, seed);
      EXPECT_EQ(static_cast<int64_t>(indices.size()), batch);
      all.insert(all.end(), indices.begin(), indices.end());
    }
    return all;
  };
  const std::vector<int64_t> a = positions(5);
  std::vector<int64_t> identity(count);
  for (int64_t i = 0; i < count; ++i) identity[static_cast<size_t>(i)] = i;
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    std::vector<int64_t> chunk(a.begin() + epoch * count, a.begin() + (epoch + 1) * count);
    std::sort(chunk.begin(), chunk.end());
    EXPECT_EQ(chunk, identity) << "epoch " << epoch;
  }
  EXPECT_EQ(positions(5), a);
  EXPECT_NE(positions(6), a);
  // Epochs are reshuffled, not repeated (7! orders: equal by chance with probability ~2e-4).
  EXPECT_FALSE(std::equal(a.begin(), a.begin() + count, a.begin() + count));
}

// ---- parameter selection ----

std::shared_ptr<sg::model::CausalLM> tiny_llama() {
  nlohmann::json j = {{"model_type", "llama"},           {"vocab_size", 300},         {"hidden_size", 32},
                      {"intermediate_size", 40},         {"num_hidden_layers", 3},    {"num_attention_heads", 4},
                      {"num_key_value_heads", 2},        {"max_position_embeddings", 64},
                      {"rms_norm_eps", 1e-5},            {"rope_theta", 10000.0},     {"tie_word_embeddings", false}};
  return sg::model::create_model(sg::model::config_from_json(j, "test"));
}

std::set<std::string> as_set(const std::vector<std::string>& names) { return {names.begin(), names.end()}; }

TEST(TrainSelect, RegexAndLayerRangeSelectExactlyTheNames) {
  auto model = tiny_llama();
  std::set<std::string> mlp;
  for (int layer = 0; layer < 3; ++layer) {
    for (const char* proj : {"gate_proj", "up_proj", "down_proj"}) {
      mlp.insert("model.layers." + std::to_string(layer) + ".mlp." + proj + ".weight");
    }
  }
  EXPECT_EQ(as_set(sg::train::select_parameters(*model, "mlp", "")), mlp);

  std::set<std::string> layers_1_2;
  for (int layer = 1; layer <= 2; ++layer) {
    const std::string prefix = "model.layers." + std::to_string(layer) + ".";
    for (const char* name : {"input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                             "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
                             "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"}) {
      layers_1_2.insert(prefix + name);
    }
  }
  EXPECT_EQ(as_set(sg::train::select_parameters(*model, "", "1-2")), layers_1_2);
  EXPECT_EQ(as_set(sg::train::select_parameters(*model, "up_proj|o_proj", "2")),
            (std::set<std::string>{"model.layers.2.mlp.up_proj.weight", "model.layers.2.self_attn.o_proj.weight"}));
  EXPECT_EQ(as_set(sg::train::select_parameters(*model, "^lm_head|embed", "")),
            (std::set<std::string>{"lm_head.weight", "model.embed_tokens.weight"}));
}

TEST(TrainSelect, NothingMatchingOrBadRangeThrows) {
  auto model = tiny_llama();
  EXPECT_NE(error_of([&] { sg::train::select_parameters(*model, "nosuch", ""); }).find("selects no parameter"),
            std::string::npos);
  EXPECT_THROW(sg::train::select_parameters(*model, "", ""), sg::Error);
  EXPECT_THROW(sg::train::select_parameters(*model, "", "3"), sg::Error);    // layers are 0-2
  EXPECT_THROW(sg::train::select_parameters(*model, "", "2-1"), sg::Error);
  EXPECT_THROW(sg::train::select_parameters(*model, "", "one"), sg::Error);
  EXPECT_THROW(sg::train::select_parameters(*model, "(", ""), sg::Error);
}

}  // namespace
