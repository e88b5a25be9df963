// Reference checks: tiny random Llama-family and GPT-2 checkpoints written by an independent
// Python script (tests/reference/make_model_refs.py) — our logits, loss and every parameter's
// gradient must match its float64 reference within 1e-4 relative; what we save must load in Python.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <fstream>

#include "io/hf_checkpoint.h"
#include "io/safetensors.h"
#include "model/causal_lm.h"
#include "test_env.h"
#include "util/file.h"

namespace {

constexpr double kTolerance = 1e-4;  // relative to the reference tensor's largest magnitude

double relative_difference(const torch::Tensor& ours, const torch::Tensor& reference, double* max_abs) {
  torch::Tensor diff = (ours.to(torch::kDouble) - reference.to(torch::kDouble)).abs();
  *max_abs = diff.max().item<double>();
  double scale = reference.abs().max().item<double>();
  return scale > 0 ? *max_abs / scale : *max_abs;
}

class ReferenceModel : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceModel, LogitsLossAndGradientsMatchPython) {
  const std::string name = GetParam();
  const std::string refdir = sg::test::refdata_dir() + "/models";
  sg::model::LoadedModel loaded = sg::model::load_model_dir(refdir + "/" + name);
  sg::io::StateDict ref = sg::io::load_safetensors(refdir + "/" + name + ".reference.safetensors");
  auto& model = *loaded.model;
  model.train();
  model.zero_grad();
  torch::Tensor ids = ref["input_ids"];
  torch::Tensor logits = model.forward(ids);
  const int64_t V = logits.size(-1);
  torch::Tensor loss = torch::nn::functional::cross_entropy(
      logits.narrow(1, 0, ids.size(1) - 1).reshape({-1, V}), ids.narrow(1, 1, ids.size(1) - 1).reshape({-1}));
  loss.backward();

  nlohmann::json report = {{"model", name}};
  std::printf("%-55s %12s %12s\n", (name + ": tensor").c_str(), "max |diff|", "relative");
  double max_abs = 0;
  double rel = relative_difference(logits.detach(), ref["logits"], &max_abs);
  std::printf("%-55s %12.3e %12.3e\n", "logits", max_abs, rel);
  report["logits"] = {{"max_abs", max_abs}, {"relative", rel}};
  EXPECT_LE(rel, kTolerance) << "logits";
  rel = relative_difference(loss.detach(), ref["loss"], &max_abs);
  std::printf("%-55s %12.3e %12.3e\n", "loss", max_abs, rel);
  report["loss"] = {{"max_abs", max_abs}, {"relative", rel}};
  EXPECT_LE(rel, kTolerance) << "loss";

  // Every parameter has a reference gradient and matches it; checkpoints without GPT-2's
  // "transformer." prefix name the same tensors without it.
  const bool no_prefix = name == "gpt2_noprefix";
  int64_t compared = 0;
  double worst = 0;
  for (const auto& item : model.named_parameters()) {
    std::string ref_name = "grad." + (no_prefix ? item.key().substr(std::string("transformer.").size()) : item.key());
    ASSERT_TRUE(ref.contains(ref_name)) << "no reference gradient for " << item.key();
    ASSERT_TRUE(item.value().grad().defined()) << "no gradient for " << item.key();
    rel = relative_difference(item.value().grad(), ref[ref_name], &max_abs);
    std::printf("%-55s %12.3e %12.3e\n", ("grad " + item.key()).c_str(), max_abs, rel);
    report["gradients"][item.key()] = {{"max_abs", max_abs}, {"relative", rel}};
    EXPECT_LE(rel, kTolerance) << "gradient of " << item.key();
    worst = std::max(worst, rel);
    ++compared;
  }
  int64_t reference_gradients = 0;
  for (const auto& item : ref) reference_gradients += item.key().rfind("grad.", 0) == 0;
  EXPECT_EQ(compared, reference_gradients);
  report["worst_gradient_relative"] = worst;
  sg::io::write_json_file(sg::test::refdata_dir() + "/report_" + name + ".json", report);
}

TEST_P(ReferenceModel, SavedDirectoryLoadsInPython) {
  const std::string name = GetParam();
  const std::string refdir = sg::test::refdata_dir() + "/models";
  sg::model::LoadedModel loaded = sg::model::load_model_dir(refdir + "/" + name);
  std::string out = sg::test::temp_dir("sg-ref") + "/" + name;
  sg::model::save_model_dir(out, *loaded.model, nullptr, name == "llama_tied" ? 30000 : 0);
  auto result = sg::test::run_command(sg::test::python() + " " + sg::test::source_dir() +
                                      "/tests/reference/check_saved_model.py --dir " + out + " --reference " +
                                      refdir + "/" + name + ".reference.safetensors");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  std::printf("%s", result.output.c_str());
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, ReferenceModel,
                         ::testing::Values("llama_gqa_bias", "llama_tied", "llama_headdim", "gpt2", "gpt2_noprefix"));

}  // namespace
