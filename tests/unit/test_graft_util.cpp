// The learned-mask helpers (skills/graft_util): the distillation loss equals LibTorch's own kl_div
// (log targets) over the completion positions, with its gradient, and is zero where the teacher is
// the model itself; the label loss is the completion tokens' mean cross-entropy.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "io/llama2c.h"
#include "model/causal_lm.h"
#include "skills/graft_util.h"
#include "test_env.h"
#include "train/trainer.h"

namespace {

using sg::io::StateDict;

std::shared_ptr<sg::model::CausalLM> stories(uint64_t noise_seed, double noise) {
  const std::string path = sg::test::data_model("stories260K.bin");
  sg::io::Llama2cModel source = sg::io::read_llama2c(path);
  const sg::model::ModelConfig config = sg::model::config_from_json(source.config, path);
  auto model = sg::model::create_model_from_weights(config, source.weights, path);
  if (noise > 0) {
    torch::manual_seed(noise_seed);
    torch::NoGradGuard no_grad;
    for (const auto& item : sg::model::model_state_dict(*model)) item.value().add_(torch::randn_like(item.value()) * noise);
  }
  return model;
}

std::vector<sg::data::EncodedSequence> sequences() {
  std::vector<sg::data::EncodedSequence> out;
  for (int i = 0; i < 6; ++i) {
    sg::data::EncodedSequence s;
    for (int t = 0; t < 7 + i % 3; ++t) s.tokens.push_back(1 + (37 * i + 11 * t) % 500);
    s.completion_start = 4 + i % 2;
    out.push_back(s);
  }
  return out;
}

// Every tensor of `weights` trainable, laid out in order.
sg::skills::FlatLayout trainable_layout(const StateDict& weights) {
  std::vector<std::string> names;
  for (const auto& item : weights) {
    item.value().set_requires_grad(true);
    names.push_back(item.key());
  }
  return sg::skills::FlatLayout(names, weights);
}

TEST(GraftUtil, DistillationLossIsKlDivOverTheCompletionPositions) {
  auto work = stories(1, 0.02);
  auto teacher = stories(2, 0.02);
  StateDict weights = sg::model::model_state_dict(*work);
  const sg::skills::FlatLayout layout = trainable_layout(weights);
  const auto examples = sequences();
  sg::train::EpochOrder order(static_cast<int64_t>(examples.size()), 0);
  const double loss = sg::skills::loss_and_gradients(*work, weights, layout, examples, 6, 0, order, false, 1.0,
                                                     teacher.get());
  std::map<std::string, at::Tensor> grads;
  for (const auto& item : weights) grads[item.key()] = item.value().grad().clone();

  // The same batch (one epoch's order over all 6 examples) through torch::kl_div.
  std::vector<const sg::data::EncodedSequence*> batch_of;
  sg::train::EpochOrder again(static_cast<int64_t>(examples.size()), 0);
  for (int64_t i = 0; i < 6; ++i) batch_of.push_back(&examples[static_cast<size_t>(again.at(i))]);
  const sg::data::Batch batch = sg::data::make_batch(batch_of, work->config().max_positions);
  for (const auto& item : weights) item.value().mutable_grad().zero_();
  at::Tensor teacher_log;
  {
    torch::NoGradGuard no_grad;
    teacher_log = torch::log_softmax(teacher->forward(batch.inputs), -1);
  }
  const at::Tensor student_log = torch::log_softmax(work->forward(batch.inputs), -1);
  const at::Tensor keep = batch.targets.ne(sg::data::kIgnoreTarget);
  const int64_t vocab = student_log.size(-1);
  const at::Tensor expected = torch::kl_div(student_log.index({keep}).reshape({-1, vocab}),
                                            teacher_log.index({keep}).reshape({-1, vocab}), at::Reduction::Sum,
                                            /*log_target=*/true) /
                              static_cast<double>(batch.target_count);
  expected.backward();
  EXPECT_NEAR(loss, expected.item<double>(), 1e-6 * std::max(1.0, expected.item<double>()));
  EXPECT_GT(loss, 0);
  for (const auto& item : weights) {
    const at::Tensor reference = item.value().grad();
    EXPECT_TRUE(torch::allclose(grads[item.key()], reference, 1e-4, 1e-7)) << item.key();
  }
}

TEST(GraftUtil, DistillationFromItselfIsZero) {
  auto work = stories(1, 0.02);
  StateDict weights = sg::model::model_state_dict(*work);
  const sg::skills::FlatLayout layout = trainable_layout(weights);
  const auto examples = sequences();
  sg::train::EpochOrder order(static_cast<int64_t>(examples.size()), 0);
  EXPECT_NEAR(sg::skills::loss_and_gradients(*work, weights, layout, examples, 6, 0, order, false, 1.0, work.get()), 0.0,
              1e-7);
  const double labels = sg::skills::loss_and_gradients(*work, weights, layout, examples, 6, 0, order);
  EXPECT_GT(labels, 0.5);  // the cross-entropy of tokens the model did not learn
}

}  // namespace
