// LoRA and dense skills on tiny random Llama (qwen2, with 1-D biases) and GPT-2 (Conv1D) models:
// skill files round-trip bit for bit; apply adds scale B A (computed here in float64) and remove
// restores the base up to rounding; LoRA -> dense; SVD conversion reconstructs at full rank and
// matches Eckart-Young and numpy's energy rank (tests/reference/lora_skill_ref.py); PEFT adapters
// written by hand in Python import to the deltas PEFT's rules give, export -> import is bit-exact and
// Python reads the export back with PEFT's rules; bad adapters are one-line errors; the extract,
// graft and inspect verbs.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>

#include "io/fingerprint.h"
#include "io/hf_checkpoint.h"
#include "io/peft_adapter.h"
#include "io/safetensors.h"
#include "library/peft.h"
#include "model/causal_lm.h"
#include "skills/lora_convert.h"
#include "skills/lora_skill.h"
#include "skills/skill.h"
#include "test_env.h"
#include "test_util.h"
#include "util/error.h"
#include "util/file.h"

namespace {

using sg::io::StateDict;
using sg::skills::DenseSkill;
using sg::skills::LoraSkill;
using sg::skills::LoraTensorDelta;
using sg::test::error_of;
using sg::test::max_abs_diff;

sg::model::ModelConfig tiny_llama() {
  nlohmann::json j = {{"model_type", "qwen2"},     {"vocab_size", 300},         {"hidden_size", 32},
                      {"intermediate_size", 40},   {"num_hidden_layers", 2},    {"num_attention_heads", 4},
                      {"num_key_value_heads", 2},  {"max_position_embeddings", 64},
                      {"rms_norm_eps", 1e-5},      {"rope_theta", 10000.0},     {"tie_word_embeddings", false}};
  return sg::model::config_from_json(j, "test");
}

sg::model::ModelConfig tiny_gpt2(int64_t hidden = 32) {
  nlohmann::json j = {{"model_type", "gpt2"}, {"vocab_size", 300}, {"n_embd", hidden},
                      {"n_layer", 2},         {"n_head", 4},        {"n_positions", 64}};
  return sg::model::config_from_json(j, "test");
}

// A random model's weights, cloned (independent of the model).
StateDict random_weights(const sg::model::ModelConfig& config, uint64_t seed) {
  at::set_num_threads(1);
  torch::manual_seed(seed);
  auto model = sg::model::create_model(config);
  StateDict out;
  torch::NoGradGuard no_grad;
  for (const auto& item : sg::model::model_state_dict(*model)) {
    out.insert(item.key(), item.value().detach().clone().normal_(0.0, 0.3));
  }
  return out;
}

StateDict clone_dict(const StateDict& dict) {
  StateDict out;
  for (const auto& item : dict) out.insert(item.key(), item.value().detach().clone());
  return out;
}

bool bits_equal(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() &&
         torch::equal(a.contiguous().view(torch::kInt32), b.contiguous().view(torch::kInt32));
}

// A fine-tune: every 2-D weight moves by a rank-3 product plus small noise, 1-D tensors by noise.
StateDict low_rank_finetune(const StateDict& base, uint64_t seed) {
  torch::manual_seed(seed);
  StateDict ft;
  for (const auto& item : base) {
    at::Tensor b = item.value();
    at::Tensor delta = torch::randn_like(b) * 1e-3;
    if (b.dim() == 2) {
      delta += torch::mm(torch::randn({b.size(0), 3}), torch::randn({3, b.size(1)})) * 0.05;
    }
    ft.insert(item.key(), b + delta);
  }
  return ft;
}

// Random pairs on every 2-D projection (not embeddings), rank 1 + i % 3, varied scales.
LoraSkill random_lora(const StateDict& base, uint64_t seed) {
  torch::manual_seed(seed);
  LoraSkill skill;
  int i = 0;
  for (const auto& item : base) {
    const std::string& name = item.key();
    if (item.value().dim() != 2 || sg::skills::is_embedding_weight(name)) continue;
    LoraTensorDelta part;
    part.shape = item.value().sizes().vec();
    part.transposed = sg::skills::is_conv1d_weight(name);
    const int64_t out = part.transposed ? part.shape[1] : part.shape[0];
    const int64_t in = part.transposed ? part.shape[0] : part.shape[1];
    const int64_t rank = 1 + i % 3;
    part.a = torch::randn({rank, in}) * 0.2;
    part.b = torch::randn({out, rank}) * 0.2;
    part.scale = 0.3 + 0.25 * i;
    skill.tensors[name] = part;
    ++i;
  }
  skill.base_fingerprint = sg::io::state_dict_fingerprint(base);
  skill.task = "opposite";
  skill.metrics = {{"recovery", 0.5}};
  return skill;
}

// scale * B A in float64, transposed back to the stored layout: the test's own arithmetic.
at::Tensor expected_delta(const LoraTensorDelta& part) {
  at::Tensor d = torch::mm(part.b.to(torch::kDouble), part.a.to(torch::kDouble)) * part.scale;
  return part.transposed ? d.t() : d;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::string python_script() { return sg::test::source_dir() + "/tests/reference/lora_skill_ref.py"; }

// Runs the reference script; fails the test on a non-zero exit.
std::string run_python(const std::string& args) {
  auto r = sg::test::run_command(sg::test::shell_quote(sg::test::python()) + " " +
                                 sg::test::shell_quote(python_script()) + " " + args);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return r.output;
}

void expect_one_line(const std::string& message, const std::vector<std::string>& needles) {
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_NE(message.find("hint"), std::string::npos) << message;
  for (const auto& needle : needles) EXPECT_NE(message.find(needle), std::string::npos) << needle << " in: " << message;
}

// ---------------------------------------------------------------------------------------------

TEST(LoraSkillFile, SaveLoadRoundTripIsBitExact) {
  for (const auto& config : {tiny_llama(), tiny_gpt2()}) {
    const StateDict base = random_weights(config, 1);
    LoraSkill skill = random_lora(base, 2);
    skill.tensors.begin()->second.scale = 1.0 / 3.0;  // not a short decimal
    const std::string dir = sg::test::temp_dir("sg-lora-skill");
    sg::skills::save_lora_skill(dir + "/l.safetensors", skill);
    const LoraSkill loaded = sg::skills::load_lora_skill(dir + "/l.safetensors");
    EXPECT_EQ(loaded.base_fingerprint, skill.base_fingerprint);
    EXPECT_EQ(loaded.task, "opposite");
    EXPECT_EQ(loaded.metrics, skill.metrics);
    EXPECT_EQ(loaded.source, dir + "/l.safetensors");
    ASSERT_EQ(loaded.tensors.size(), skill.tensors.size());
    for (const auto& [name, part] : skill.tensors) {
      const LoraTensorDelta& got = loaded.tensors.at(name);
      EXPECT_TRUE(bits_equal(got.a, part.a)) << name;
      EXPECT_TRUE(bits_equal(got.b, part.b)) << name;
      EXPECT_EQ(got.scale, part.scale) << name;  // exact: JSON keeps every double
      EXPECT_EQ(got.shape, part.shape) << name;
      EXPECT_EQ(got.transposed, part.transposed) << name;
    }
    // Saving what was loaded gives the same bytes but for the creation time.
    sg::skills::save_lora_skill(dir + "/again.safetensors", loaded);
    EXPECT_EQ(sg::io::load_safetensors(dir + "/again.safetensors").size(), 2 * skill.tensors.size());

    DenseSkill dense = sg::skills::dense_skill_from_lora(skill);
    sg::skills::save_dense_skill(dir + "/d.safetensors", dense);
    const DenseSkill dense_loaded = sg::skills::load_dense_skill(dir + "/d.safetensors");
    ASSERT_EQ(dense_loaded.tensors.size(), dense.tensors.size());
    for (const auto& [name, delta] : dense.tensors) EXPECT_TRUE(bits_equal(dense_loaded.tensors.at(name), delta)) << name;
    EXPECT_EQ(dense_loaded.base_fingerprint, skill.base_fingerprint);
    EXPECT_EQ(dense_loaded.task, "opposite");
  }
}

TEST(LoraSkillFile, InfoOfEveryKindAndBadFiles) {
  const StateDict base = random_weights(tiny_llama(), 3);
  const LoraSkill lora = random_lora(base, 4);
  const std::string dir = sg::test::temp_dir("sg-lora-info");
  sg::skills::save_lora_skill(dir + "/l.safetensors", lora);
  int64_t lora_numbers = 0;
  for (const auto& item : lora.tensors) lora_numbers += item.second.a.numel() + item.second.b.numel();
  auto info = sg::skills::read_skill_file_info(dir + "/l.safetensors");
  EXPECT_EQ(info.kind, "lora");
  EXPECT_EQ(info.parameter_count, lora_numbers);
  EXPECT_EQ(info.base_fingerprint, lora.base_fingerprint);
  EXPECT_EQ(info.task, "opposite");
  EXPECT_EQ(info.metrics["recovery"], 0.5);
  EXPECT_EQ(info.file_bytes, static_cast<int64_t>(sg::util::read_file(dir + "/l.safetensors").size()));

  sg::skills::save_dense_skill(dir + "/d.safetensors", sg::skills::dense_skill_from_lora(lora));
  int64_t dense_numbers = 0;
  for (const auto& item : lora.tensors) dense_numbers += base[item.first].numel();
  info = sg::skills::read_skill_file_info(dir + "/d.safetensors");
  EXPECT_EQ(info.kind, "dense");
  EXPECT_EQ(info.parameter_count, dense_numbers);

  std::map<std::string, at::Tensor> mask;
  int64_t selected = 0;
  torch::manual_seed(5);
  for (const auto& item : base) {
    mask[item.key()] = torch::rand(item.value().sizes()) < 0.1;
    selected += mask[item.key()].sum().item<int64_t>();
  }
  sg::skills::save_sparse_skill(dir + "/s.safetensors",
                                sg::skills::make_sparse_skill(base, low_rank_finetune(base, 6), mask, "t"));
  info = sg::skills::read_skill_file_info(dir + "/s.safetensors");
  EXPECT_EQ(info.kind, "sparse");
  EXPECT_EQ(info.parameter_count, selected);

  // A neuron-set file, written by hand: its parameters are the neuron indices.
  StateDict neurons;
  neurons.insert("model.layers.0.neurons", torch::arange(5, torch::kInt32));
  neurons.insert("model.layers.1.neurons", torch::arange(3, torch::kInt32));
  sg::io::save_safetensors(dir + "/n.safetensors", neurons,
                           {{"format", "skillgraft.skill"}, {"version", "1"}, {"kind", "neurons"},
                            {"base_fingerprint", "x"}, {"task", "t"}, {"metrics", "{}"}});
  info = sg::skills::read_skill_file_info(dir + "/n.safetensors");
  EXPECT_EQ(info.kind, "neurons");
  EXPECT_EQ(info.parameter_count, 8);

  sg::io::save_safetensors(dir + "/plain.safetensors", base);
  expect_one_line(error_of([&] { sg::skills::read_skill_file_info(dir + "/plain.safetensors"); }), {"not a skill file"});
  expect_one_line(error_of([&] { sg::skills::load_lora_skill(dir + "/d.safetensors"); }),
                  {dir + "/d.safetensors", "skill kind \"dense\" is not a lora skill"});
  expect_one_line(error_of([&] { sg::skills::load_sparse_skill(dir + "/l.safetensors"); }),
                  {"skill kind \"lora\" is not a sparse skill"});
  const std::string bytes = sg::util::read_file(dir + "/l.safetensors");
  sg::util::write_file_atomic(dir + "/truncated.safetensors", bytes.substr(0, bytes.size() - 64));
  expect_one_line(error_of([&] { sg::skills::load_lora_skill(dir + "/truncated.safetensors"); }),
                  {"cannot read skill file", "truncated.safetensors"});

  // A lora_A without its lora_B, and a pair whose rank disagrees.
  sg::io::Metadata metadata = sg::io::SafetensorsFile::open(dir + "/l.safetensors").metadata();
  StateDict tensors = sg::io::load_safetensors(dir + "/l.safetensors");
  const std::string name = lora.tensors.begin()->first;
  StateDict lone;
  for (const auto& item : tensors)
    if (item.key() != name + ".lora_B") lone.insert(item.key(), item.value());
  sg::io::save_safetensors(dir + "/lone.safetensors", lone, metadata);
  expect_one_line(error_of([&] { sg::skills::load_lora_skill(dir + "/lone.safetensors"); }),
                  {"has no partner \"" + name + ".lora_B\""});
  StateDict bad_rank = clone_dict(tensors);
  bad_rank[name + ".lora_A"] = torch::zeros({7, tensors[name + ".lora_A"].size(1)});
  sg::io::save_safetensors(dir + "/rank.safetensors", bad_rank, metadata);
  expect_one_line(error_of([&] { sg::skills::load_lora_skill(dir + "/rank.safetensors"); }),
                  {"do not make a rank-r delta"});
}

TEST(LoraSkillApply, ApplyAddsScaledProductAndRemoveRestores) {
  for (const auto& config : {tiny_llama(), tiny_gpt2()}) {
    const StateDict base = random_weights(config, 7);
    const LoraSkill skill = random_lora(base, 8);
    StateDict weights = clone_dict(base);
    sg::skills::apply_lora_skill(weights, skill);
    for (const auto& item : base) {
      auto it = skill.tensors.find(item.key());
      at::Tensor want = item.value().to(torch::kDouble);
      if (it != skill.tensors.end()) want = want + expected_delta(it->second);
      // One float32 rounding of the delta and one of the sum.
      EXPECT_LT(max_abs_diff(weights[item.key()], want), 1e-6) << item.key();
      if (it == skill.tensors.end()) EXPECT_TRUE(bits_equal(weights[item.key()], item.value())) << item.key();
    }
    sg::skills::remove_lora_skill(weights, skill);
    for (const auto& item : base) EXPECT_LT(max_abs_diff(weights[item.key()], item.value()), 1e-6) << item.key();

    // The dense skill of the LoRA does the same.
    const DenseSkill dense = sg::skills::dense_skill_from_lora(skill);
    StateDict dense_weights = clone_dict(base);
    sg::skills::apply_dense_skill(dense_weights, dense);
    for (const auto& item : base) {
      auto it = skill.tensors.find(item.key());
      at::Tensor want = item.value().to(torch::kDouble);
      if (it != skill.tensors.end()) want = want + expected_delta(it->second);
      EXPECT_LT(max_abs_diff(dense_weights[item.key()], want), 1e-6) << item.key();
    }
    sg::skills::remove_dense_skill(dense_weights, dense);
    for (const auto& item : base) EXPECT_LT(max_abs_diff(dense_weights[item.key()], item.value()), 1e-6);
  }
}

TEST(LoraSkillApply, WrongBaseOrShapeChangesNothing) {
  const StateDict base = random_weights(tiny_llama(), 9);
  LoraSkill skill = random_lora(base, 10);
  skill.source = "my.skill";
  StateDict other = random_weights(tiny_llama(), 11);
  const StateDict before = clone_dict(other);
  expect_one_line(error_of([&] { sg::skills::apply_lora_skill(other, skill); }),
                  {"skill my.skill was made for base " + skill.base_fingerprint,
                   "this model is " + sg::io::state_dict_fingerprint(before)});
  StateDict gpt2 = random_weights(tiny_gpt2(), 12);
  expect_one_line(error_of([&] { sg::skills::apply_lora_skill(gpt2, skill, /*check_base=*/false); }),
                  {"the skill has tensor", "but the model does not"});
  // A tensor of another shape: the error comes before any weight moves.
  StateDict narrow = random_weights(tiny_gpt2(48), 13);
  LoraSkill gpt2_skill = random_lora(random_weights(tiny_gpt2(), 14), 15);
  const StateDict narrow_before = clone_dict(narrow);
  expect_one_line(error_of([&] { sg::skills::apply_lora_skill(narrow, gpt2_skill, false); }), {"in the model but"});
  for (const auto& item : narrow_before) EXPECT_TRUE(bits_equal(narrow[item.key()], item.value()));
  for (const auto& item : before) EXPECT_TRUE(bits_equal(other[item.key()], item.value()));
}

TEST(LoraConvert, LoraToDenseIsTheScaledProduct) {
  const StateDict base = random_weights(tiny_gpt2(), 16);
  const LoraSkill skill = random_lora(base, 17);
  sg::skills::ConversionReport report;
  const DenseSkill dense = sg::skills::dense_skill_from_lora(skill, &report);
  ASSERT_EQ(dense.tensors.size(), skill.tensors.size());
  for (const auto& [name, part] : skill.tensors) {
    const at::Tensor want = expected_delta(part);
    const at::Tensor& got = dense.tensors.at(name);
    EXPECT_EQ(got.sizes().vec(), part.shape) << name;
    EXPECT_EQ(got.scalar_type(), torch::kFloat);
    // float32 rounding of each element: |got - want| <= ulp/2 <= 2^-24 |want|.
    EXPECT_TRUE(((got.to(torch::kDouble) - want).abs() <= want.abs() * std::ldexp(1.0, -24)).all().item<bool>()) << name;
    EXPECT_TRUE(bits_equal(sg::skills::lora_dense_delta(part), got));
  }
  EXPECT_EQ(dense.base_fingerprint, skill.base_fingerprint);
  EXPECT_LT(report.relative_error(), 1e-7);
  EXPECT_EQ(report.uncarried_norm(), 0);
}

TEST(LoraConvert, FullRankReconstructsTheDeltaAndCountsWhatLoraCannotCarry) {
  for (const auto& config : {tiny_llama(), tiny_gpt2()}) {
    const StateDict base = random_weights(config, 18);
    const StateDict ft = low_rank_finetune(base, 19);
    sg::skills::LoraConversionOptions options;
    options.rule.rank = 1000;
    sg::skills::ConversionReport report;
    const LoraSkill skill = sg::skills::lora_skill_from_weights(base, ft, "t", options, &report);
    EXPECT_LT(report.relative_error(), 1e-5);
    EXPECT_EQ(skill.base_fingerprint, sg::io::state_dict_fingerprint(base));
    double uncarried_sq = 0, total_sq = 0;
    for (const auto& item : base) {
      const at::Tensor delta = ft[item.key()].to(torch::kDouble) - item.value().to(torch::kDouble);
      const double sq = delta.pow(2).sum().item<double>();
      total_sq += sq;
      const bool carried = item.value().dim() == 2 && !sg::skills::is_embedding_weight(item.key());
      EXPECT_EQ(skill.tensors.count(item.key()), carried ? 1u : 0u) << item.key();
      if (!carried) {
        uncarried_sq += sq;
        continue;
      }
      const LoraTensorDelta& part = skill.tensors.at(item.key());
      EXPECT_EQ(part.scale, 1.0);
      EXPECT_EQ(part.a.size(0), std::min(delta.size(0), delta.size(1))) << item.key();
      const double error = (expected_delta(part) - delta).norm().item<double>() / delta.norm().item<double>();
      EXPECT_LT(error, 1e-5) << item.key();
    }
    EXPECT_NEAR(report.uncarried_norm(), std::sqrt(uncarried_sq), 1e-9 * std::sqrt(total_sq));
    EXPECT_NEAR(report.delta_norm(), std::sqrt(total_sq), 1e-6 * std::sqrt(total_sq));
    EXPECT_GT(report.uncarried_norm(), 0);  // biases / norms / embeddings moved
    // An embedding named in the targets is carried.
    if (config.architecture == sg::model::Architecture::kGpt2) {
      options.targets = {"wte", "c_attn"};
    } else {
      options.targets = {"embed_tokens", "q_proj"};
    }
    const LoraSkill with_embedding = sg::skills::lora_skill_from_weights(base, ft, "t", options, &report);
    bool has_embedding = false;
    for (const auto& item : with_embedding.tensors) has_embedding |= sg::skills::is_embedding_weight(item.first);
    EXPECT_TRUE(has_embedding);
  }
}

TEST(LoraConvert, RankAndEnergyMatchEckartYoungAndNumpy) {
  if (!sg::util::file_exists(sg::test::python())) GTEST_SKIP() << sg::test::python() << " not found";
  // Both models' deltas as (out, in) float32 matrices for one Python run (their names differ).
  std::vector<std::pair<StateDict, StateDict>> models;
  StateDict deltas;
  for (const auto& config : {tiny_llama(), tiny_gpt2()}) {
    const StateDict base = random_weights(config, 20);
    const StateDict ft = low_rank_finetune(base, 21);
    for (const auto& item : base) {
      if (item.value().dim() != 2 || sg::skills::is_embedding_weight(item.key())) continue;
      at::Tensor d = (ft[item.key()] - item.value()).contiguous();
      if (sg::skills::is_conv1d_weight(item.key())) d = d.t().contiguous();
      deltas.insert(item.key(), d);
    }
    models.emplace_back(base, ft);
  }
  const std::string dir = sg::test::temp_dir("sg-lora-svd");
  sg::io::save_safetensors(dir + "/deltas.safetensors", deltas);
  run_python("svd " + dir + "/deltas.safetensors 1,2,3,5 0.5,0.9,0.999 " + dir + "/ref.json");
  const nlohmann::json ref = nlohmann::json::parse(sg::util::read_file(dir + "/ref.json"));
  for (const auto& [base, ft] : models) {
    for (int64_t rank : {1, 2, 3, 5}) {
      sg::skills::LoraConversionOptions options;
      options.rule.rank = rank;
      sg::skills::ConversionReport report;
      const LoraSkill skill = sg::skills::lora_skill_from_weights(base, ft, "t", options, &report);
      for (const auto& row : report.tensors) {
        if (!row.carried) continue;
        const double want = ref.at(row.name).at("eckart_young").at(std::to_string(rank)).get<double>();
        EXPECT_EQ(row.rank, rank) << row.name;
        // float32 storage of A and B adds ~1e-7 relative to ||delta||.
        EXPECT_NEAR(row.error_norm / row.delta_norm, want, 1e-5) << row.name << " rank " << rank;
      }
    }
    for (const char* energy : {"0.5", "0.9", "0.999"}) {
      sg::skills::LoraConversionOptions options;
      options.rule.energy = std::stod(energy);
      sg::skills::ConversionReport report;
      sg::skills::lora_skill_from_weights(base, ft, "t", options, &report);
      int checked = 0;
      for (const auto& row : report.tensors) {
        if (!row.carried) continue;
        const nlohmann::json& want = ref.at(row.name).at("energy").at(energy);
        // A share within rounding of the target is a tie either way may break; none is expected here.
        ASSERT_GT(want.at("margin").get<double>(), 1e-9) << row.name;
        EXPECT_EQ(row.rank, want.at("rank").get<int64_t>()) << row.name << " energy " << energy;
        ++checked;
      }
      EXPECT_GT(checked, 5);
      // max_rank caps the energy rule.
      options.rule.max_rank = 1;
      const LoraSkill capped = sg::skills::lora_skill_from_weights(base, ft, "t", options, &report);
      for (const auto& item : capped.tensors) EXPECT_EQ(item.second.a.size(0), 1);
    }
  }
}

TEST(LoraConvert, SparseSkillToDenseAndToLora) {
  const StateDict base = random_weights(tiny_llama(), 22);
  const StateDict ft = low_rank_finetune(base, 23);
  std::map<std::string, at::Tensor> mask;
  torch::manual_seed(24);
  for (const auto& item : base) mask[item.key()] = torch::rand(item.value().sizes()) < 0.3;
  const sg::skills::SparseSkill sparse = sg::skills::make_sparse_skill(base, ft, mask, "t");
  const DenseSkill dense = sg::skills::dense_skill_from_sparse(sparse);
  for (const auto& [name, part] : sparse.tensors) {
    at::Tensor want = torch::zeros({base[name].numel()});
    want.index_put_({part.indices}, part.delta);
    EXPECT_TRUE(bits_equal(dense.tensors.at(name), want.view(part.shape))) << name;
  }
  // The dense skill grafts exactly what the sparse one does.
  StateDict a = clone_dict(base), b = clone_dict(base);
  sg::skills::apply_sparse_skill(a, sparse);
  sg::skills::apply_dense_skill(b, dense);
  for (const auto& item : a) EXPECT_TRUE(bits_equal(item.value(), b[item.key()])) << item.key();

  sg::skills::LoraConversionOptions options;
  options.rule.rank = 1000;
  sg::skills::ConversionReport report;
  const LoraSkill lora = sg::skills::lora_skill_from_sparse(sparse, options, &report);
  EXPECT_LT(report.relative_error(), 1e-5);
  for (const auto& [name, part] : lora.tensors) {
    EXPECT_LT(max_abs_diff(expected_delta(part), dense.tensors.at(name)), 1e-5) << name;
  }
  EXPECT_EQ(lora.base_fingerprint, sparse.base_fingerprint);
  EXPECT_EQ(lora.metrics["conversion"]["from"], "sparse");

  options.rule = {};
  options.rule.rank = 2;
  options.rule.energy = 0.5;
  expect_one_line(error_of([&] { sg::skills::lora_skill_from_sparse(sparse, options); }), {"exactly one of"});
  options.rule = {};
  options.rule.rank = 2;
  options.targets = {"nope_proj"};
  expect_one_line(error_of([&] { sg::skills::lora_skill_from_sparse(sparse, options); }),
                  {"LoRA target 'nope_proj' matches no matrix", "q_proj"});
}

// ---------------------------------------------------------------------------------------------

// The base's weight shapes for the Python script.
std::string write_shapes(const StateDict& base, const std::string& dir) {
  nlohmann::json shapes = nlohmann::json::object();
  for (const auto& item : base) shapes[item.key()] = item.value().sizes().vec();
  write_text(dir + "/shapes.json", shapes.dump());
  return dir + "/shapes.json";
}

TEST(PeftAdapter, PatternKeysFollowPeft) {
  // (.*\.)?(key)$ from the start: a key matches whole dotted components at the end, as a regex.
  const std::vector<std::string> keys = {"proj", "layers\\.1\\..*v_proj", "v_proj", "q_proj"};
  EXPECT_EQ(sg::io::peft_pattern_index(keys, "model.layers.0.self_attn.q_proj", "t"), 3);
  EXPECT_EQ(sg::io::peft_pattern_index(keys, "model.layers.1.self_attn.v_proj", "t"), 1);
  EXPECT_EQ(sg::io::peft_pattern_index(keys, "model.layers.0.self_attn.v_proj", "t"), 2);
  EXPECT_EQ(sg::io::peft_pattern_index(keys, "proj", "t"), 0);
  EXPECT_EQ(sg::io::peft_pattern_index(keys, "model.k_proj", "t"), -1);
  EXPECT_EQ(sg::io::peft_pattern_index({"model.layers.0.self_attn.q_proj"}, "model.layers.0.self_attn.q_proj", "t"), 0);
  expect_one_line(error_of([&] { sg::io::peft_pattern_index({"q_proj("}, "q_proj", "rank_pattern"); }),
                  {"rank_pattern key \"q_proj(\" is not a valid regular expression"});
}

// The base of an architecture ("llama" or "gpt2") and the directory where Python wrote a PEFT adapter
// for it (DIR/adapter) and the deltas PEFT's rules give (DIR/expected.safetensors); once per process.
struct PythonAdapter {
  StateDict base;
  std::string dir;
};
const PythonAdapter& python_adapter(const std::string& arch) {
  static std::map<std::string, PythonAdapter> cache;
  auto it = cache.find(arch);
  if (it != cache.end()) return it->second;
  PythonAdapter made;
  made.base = random_weights(arch == "llama" ? tiny_llama() : tiny_gpt2(), 30);
  made.dir = sg::test::temp_dir("sg-peft");
  run_python("peft-write " + write_shapes(made.base, made.dir) + " " + arch + " " + made.dir + "/adapter " + made.dir +
             "/expected.safetensors");
  return cache[arch] = made;
}

TEST(PeftAdapter, ImportGivesTheDeltasOfPeftsRules) {
  if (!sg::util::file_exists(sg::test::python())) GTEST_SKIP() << sg::test::python() << " not found";
  for (const char* arch : {"llama", "gpt2"}) {
    const StateDict& base = python_adapter(arch).base;
    const std::string& dir = python_adapter(arch).dir;
    const std::string fingerprint = sg::io::state_dict_fingerprint(base);
    const LoraSkill skill = sg::library::import_peft_adapter(dir + "/adapter", base, fingerprint);
    const StateDict expected = sg::io::load_safetensors(dir + "/expected.safetensors");
    ASSERT_EQ(skill.tensors.size(), expected.size()) << arch;
    for (const auto& item : expected) {
      const LoraTensorDelta& part = skill.tensors.at(item.key());
      EXPECT_EQ(part.transposed, std::string(arch) == "gpt2") << item.key();
      EXPECT_EQ(part.shape, base[item.key()].sizes().vec());
      // A and B are exact (F16 and F32 -> float32), the scale PEFT's to the last bit or so.
      const double scale = item.value().abs().max().item<double>();
      EXPECT_LT(max_abs_diff(expected_delta(part), item.value()), 1e-13 * scale) << item.key();
      EXPECT_LT(max_abs_diff(sg::skills::lora_dense_delta(part), item.value()), 1e-6 * scale) << item.key();
    }
    EXPECT_EQ(skill.base_fingerprint, fingerprint);
    EXPECT_EQ(skill.source, dir + "/adapter");
    if (std::string(arch) == "llama") {
      // The ranks the overlapping patterns give (first match in the file's order).
      EXPECT_EQ(skill.tensors.at("model.layers.0.self_attn.v_proj.weight").a.size(0), 6);
      EXPECT_EQ(skill.tensors.at("model.layers.1.self_attn.v_proj.weight").a.size(0), 3);
      EXPECT_EQ(skill.tensors.at("model.layers.1.self_attn.q_proj.weight").a.size(0), 2);
      EXPECT_EQ(skill.tensors.at("model.layers.0.self_attn.q_proj.weight").a.size(0), 4);
      EXPECT_DOUBLE_EQ(skill.tensors.at("model.layers.0.self_attn.q_proj.weight").scale, 3 / std::sqrt(4.0));
      EXPECT_DOUBLE_EQ(skill.tensors.at("model.layers.1.mlp.down_proj.weight").scale, 5.5 / std::sqrt(4.0));
    }
    // Applying the imported skill adds the expected deltas.
    StateDict weights = clone_dict(base);
    sg::skills::apply_lora_skill(weights, skill);
    for (const auto& item : expected) {
      EXPECT_LT(max_abs_diff(weights[item.key()], base[item.key()].to(torch::kDouble) + item.value()), 1e-6) << item.key();
    }
  }
}

void expect_same_lora(const LoraSkill& a, const LoraSkill& b) {
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (const auto& [name, part] : a.tensors) {
    ASSERT_EQ(b.tensors.count(name), 1u) << name;
    const LoraTensorDelta& other = b.tensors.at(name);
    EXPECT_TRUE(bits_equal(part.a, other.a)) << name;
    EXPECT_TRUE(bits_equal(part.b, other.b)) << name;
    EXPECT_EQ(part.scale, other.scale) << name;
    EXPECT_EQ(part.shape, other.shape) << name;
    EXPECT_EQ(part.transposed, other.transposed) << name;
  }
}

TEST(PeftAdapter, ExportImportRoundTripIsBitExactAndPeftReadsIt) {
  if (!sg::util::file_exists(sg::test::python())) GTEST_SKIP() << sg::test::python() << " not found";
  std::string check_args;
  size_t adapters = 0;
  for (const char* arch : {"llama", "gpt2"}) {
    const StateDict& base = python_adapter(arch).base;
    const std::string& dir = python_adapter(arch).dir;
    const std::string fingerprint = sg::io::state_dict_fingerprint(base);
    // An imported adapter (rslora, patterns) and a converted skill (energy: ranks differ per tensor,
    // scale 1), each exported and imported back.
    const LoraSkill imported = sg::library::import_peft_adapter(dir + "/adapter", base, fingerprint);
    sg::skills::LoraConversionOptions options;
    options.rule.energy = 0.9;
    const LoraSkill converted = sg::skills::lora_skill_from_weights(base, low_rank_finetune(base, 32), "t", options);
    LoraSkill odd_scales = random_lora(base, 33);  // scales alpha / r of a PEFT config would give
    int i = 0;
    for (auto& item : odd_scales.tensors) item.second.scale = (7.0 + i++) / static_cast<double>(item.second.a.size(0));
    for (const LoraSkill* skill : std::vector<const LoraSkill*>{&imported, &converted, &odd_scales}) {
      const std::string out = sg::test::temp_dir("sg-peft-out") + "/adapter";
      sg::library::export_peft_adapter(out, *skill, "tiny");
      expect_same_lora(*skill, sg::library::import_peft_adapter(out, base, fingerprint));
      // Python, with PEFT's rules, reads the same deltas from the export (checked below, in one run).
      StateDict want;
      for (const auto& [name, part] : skill->tensors) want.insert(name, expected_delta(part).contiguous());
      sg::io::save_safetensors(out + "/../want.safetensors", want);
      check_args += " " + out + " " + out + "/../want.safetensors";
      ++adapters;
    }
    const nlohmann::json config = sg::io::read_json_file(dir + "/adapter/adapter_config.json");
    EXPECT_FALSE(config["rank_pattern"].empty());  // the Python adapter has patterns
  }
  const std::string checked = run_python("peft-check" + check_args);
  size_t ok_lines = 0;
  for (size_t at = checked.find("ok "); at != std::string::npos; at = checked.find("ok ", at + 1)) ++ok_lines;
  EXPECT_EQ(ok_lines, adapters) << checked;
  // An embedding cannot be exported.
  const StateDict base = random_weights(tiny_llama(), 34);
  LoraSkill with_embedding = random_lora(base, 35);
  LoraTensorDelta part;
  part.shape = base["model.embed_tokens.weight"].sizes().vec();
  part.a = torch::randn({2, part.shape[1]});
  part.b = torch::randn({part.shape[0], 2});
  with_embedding.tensors["model.embed_tokens.weight"] = part;
  expect_one_line(error_of([&] { sg::library::export_peft_adapter(sg::test::temp_dir("sg-peft-emb"), with_embedding, "x"); }),
                  {"model.embed_tokens.weight", "is an embedding"});
}

TEST(PeftAdapter, BadAdaptersAreOneLineErrorsNamingFileAndKey) {
  if (!sg::util::file_exists(sg::test::python())) GTEST_SKIP() << sg::test::python() << " not found";
  const StateDict& base = python_adapter("llama").base;
  const std::string fingerprint = sg::io::state_dict_fingerprint(base);
  const std::string dir = sg::test::temp_dir("sg-peft-bad");
  std::filesystem::copy(python_adapter("llama").dir + "/adapter", dir + "/good");
  const std::string config_text = sg::util::read_file(dir + "/good/adapter_config.json");
  const std::string weights_bytes = sg::util::read_file(dir + "/good/adapter_model.safetensors");
  const StateDict tensors = sg::io::load_safetensors(dir + "/good/adapter_model.safetensors");
  const std::string q0 = "base_model.model.model.layers.0.self_attn.q_proj";
  int n = 0;
  // A copy of the good adapter with edits; returns its directory.
  auto variant = [&](const std::function<void(nlohmann::ordered_json&, StateDict&)>& edit) {
    const std::string out = dir + "/v" + std::to_string(n++);
    sg::util::make_directories(out);
    nlohmann::ordered_json config = nlohmann::ordered_json::parse(config_text);
    StateDict t = clone_dict(tensors);
    edit(config, t);
    write_text(out + "/adapter_config.json", config.dump(2));
    sg::io::save_safetensors(out + "/adapter_model.safetensors", t, {{"format", "pt"}});
    return out;
  };
  auto import_error = [&](const std::string& adapter, const StateDict& weights) {
    return error_of([&] { sg::library::import_peft_adapter(adapter, weights, fingerprint); });
  };

  // A module the base does not have (layer 5 of a 2-layer model).
  std::string d = variant([&](auto&, StateDict& t) {
    t.insert("base_model.model.model.layers.5.self_attn.q_proj.lora_A.weight", t[q0 + ".lora_A.weight"].clone());
    t.insert("base_model.model.model.layers.5.self_attn.q_proj.lora_B.weight", t[q0 + ".lora_B.weight"].clone());
  });
  expect_one_line(import_error(d, base), {d + "/adapter_model.safetensors", "layers.5.self_attn.q_proj.lora_A.weight",
                                          "which the base does not have", "another base model"});
  // A shape that disagrees with the base.
  d = variant([&](auto&, StateDict& t) { t[q0 + ".lora_A.weight"] = torch::zeros({4, 31}); t[q0 + ".lora_A.weight"].zero_(); });
  expect_one_line(import_error(d, base), {q0 + ".lora_A.weight", "do not fit", "[4, 32]"});
  // A rank the pattern does not give (q_proj of layer 1 is rank 2 by rank_pattern).
  d = variant([&](nlohmann::ordered_json& c, StateDict&) { c["rank_pattern"]["model.layers.1.self_attn.q_proj"] = 5; });
  expect_one_line(import_error(d, base), {"layers.1.self_attn.q_proj.lora_A.weight\" has rank 2",
                                          "rank 5 (rank_pattern key \"model.layers.1.self_attn.q_proj\")"});
  // A without B.
  d = variant([&](auto&, StateDict& t) {
    StateDict out;
    for (const auto& item : t)
      if (item.key() != q0 + ".lora_B.weight") out.insert(item.key(), item.value());
    t = out;
  });
  expect_one_line(import_error(d, base), {q0 + ".lora_A.weight\" has no matching lora_B"});
  // Bias and DoRA keys, use_dora, bias "all", a module target_modules does not select, a bad pattern.
  d = variant([&](auto&, StateDict& t) { t.insert(q0 + ".lora_B.bias", torch::zeros({32})); });
  expect_one_line(import_error(d, base), {q0 + ".lora_B.bias", "is not a LoRA weight"});
  d = variant([&](auto&, StateDict& t) { t.insert(q0 + ".lora_magnitude_vector", torch::zeros({32})); });
  expect_one_line(import_error(d, base), {"lora_magnitude_vector", "DoRA"});
  d = variant([&](nlohmann::ordered_json& c, StateDict&) { c["use_dora"] = true; });
  expect_one_line(import_error(d, base), {"adapter_config.json", "use_dora"});
  d = variant([&](nlohmann::ordered_json& c, StateDict&) { c["bias"] = "all"; });
  expect_one_line(import_error(d, base), {"adapter_config.json", "bias is \"all\""});
  d = variant([&](nlohmann::ordered_json& c, StateDict&) { c["target_modules"] = {"q_proj", "v_proj"}; });
  expect_one_line(import_error(d, base), {"target_modules does not select \"model.layers.0.mlp.down_proj\""});
  d = variant([&](nlohmann::ordered_json& c, StateDict&) { c["alpha_pattern"]["(x"] = 2; });
  expect_one_line(import_error(d, base), {"alpha_pattern key \"(x\" is not a valid regular expression"});
  d = variant([&](nlohmann::ordered_json& c, StateDict&) { c.erase("r"); });
  expect_one_line(import_error(d, base), {"\"r\" (the LoRA rank, an integer) is missing"});
  // A truncated weights file.
  d = variant([&](auto&, StateDict&) {});
  sg::util::write_file_atomic(d + "/adapter_model.safetensors", weights_bytes.substr(0, weights_bytes.size() - 100));
  expect_one_line(import_error(d, base), {"cannot read the adapter weights", d + "/adapter_model.safetensors"});
  // Another base: a GPT-2 has no such modules; a wider Llama has other shapes.
  expect_one_line(import_error(dir + "/good", random_weights(tiny_gpt2(), 41)),
                  {"which the base does not have", "another base model"});
  nlohmann::json wide = {{"model_type", "qwen2"},     {"vocab_size", 300},         {"hidden_size", 48},
                         {"intermediate_size", 40},   {"num_hidden_layers", 2},    {"num_attention_heads", 4},
                         {"num_key_value_heads", 2},  {"max_position_embeddings", 64},
                         {"rms_norm_eps", 1e-5},      {"rope_theta", 10000.0},     {"tie_word_embeddings", false}};
  expect_one_line(import_error(dir + "/good", random_weights(sg::model::config_from_json(wide, "wide"), 42)),
                  {"do not fit", "another base model"});
  // Missing files.
  expect_one_line(import_error(dir + "/nowhere", base), {"adapter directory not found"});
  sg::util::make_directories(dir + "/empty");
  expect_one_line(import_error(dir + "/empty", base), {"adapter_config.json: missing"});
}

// ---------------------------------------------------------------------------------------------

TEST(LoraSkillCli, ExtractGraftRemoveInspect) {
  at::set_num_threads(1);
  const std::string base_dir = sg::test::converted_stories260k();
  sg::model::LoadedModel loaded = sg::model::load_model_dir(base_dir);
  const StateDict base = clone_dict(sg::model::model_state_dict(*loaded.model));
  // The fine-tune as a model directory: the base's weights moved by low-rank deltas.
  {
    const StateDict ft = low_rank_finetune(base, 50);
    StateDict weights = sg::model::model_state_dict(*loaded.model);
    torch::NoGradGuard no_grad;
    for (const auto& item : ft) weights[item.key()].copy_(item.value());
  }
  const std::string dir = sg::test::temp_dir("sg-extract");
  sg::model::save_model_dir(dir + "/ft", *loaded.model, loaded.tokenizer.get());
  auto q = sg::test::shell_quote;
  auto r = sg::test::run_command(sg::test::sg_command("extract --threads 1 --base " + q(base_dir) + " --finetuned " +
                                                      q(dir + "/ft") + " --to lora --rank 3 --out " + q(dir + "/l.safetensors") +
                                                      " --json " + q(dir + "/e.json")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("q_proj"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("relative error"), std::string::npos) << r.output;
  const nlohmann::json report = nlohmann::json::parse(sg::util::read_file(dir + "/e.json"));
  // Rank 3 carries a rank-3 change up to the small noise; norms and embeddings are not carried.
  EXPECT_LT(report["overall"]["relative_error"].get<double>(), 0.05) << report["overall"].dump();
  EXPECT_GT(report["overall"]["uncarried_fraction"].get<double>(), 0.0);
  EXPECT_EQ(report["task"], "ft");
  const LoraSkill skill = sg::skills::load_lora_skill(dir + "/l.safetensors");
  EXPECT_EQ(skill.base_fingerprint, sg::io::state_dict_fingerprint(base));
  for (const auto& item : skill.tensors) EXPECT_EQ(item.second.a.size(0), 3) << item.first;

  // graft adds scale B A; --remove takes it back out up to rounding.
  r = sg::test::run_command(sg::test::sg_command("graft --threads 1 --base " + q(base_dir) + " --skill " +
                                                 q(dir + "/l.safetensors") + " --out " + q(dir + "/grafted")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("grafted lora skill \"ft\""), std::string::npos) << r.output;
  const StateDict grafted = sg::io::load_safetensors_dir(dir + "/grafted");
  for (const auto& [name, part] : skill.tensors) {
    EXPECT_LT(max_abs_diff(grafted[name], base[name].to(torch::kDouble) + expected_delta(part)), 1e-6) << name;
  }
  r = sg::test::run_command(sg::test::sg_command("graft --threads 1 --remove --base " + q(dir + "/grafted") + " --skill " +
                                                 q(dir + "/l.safetensors") + " --out " + q(dir + "/restored")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const StateDict restored = sg::io::load_safetensors_dir(dir + "/restored");
  for (const auto& item : base) EXPECT_LT(max_abs_diff(restored[item.key()], item.value()), 1e-6) << item.key();
  sg::test::expect_one_line_error("graft --base " + q(dir + "/grafted") + " --skill " + q(dir + "/l.safetensors") +
                                      " --out " + q(dir + "/twice"),
                                  {"was made for base " + skill.base_fingerprint}, true);

  r = sg::test::run_command(sg::test::sg_command("inspect " + q(dir + "/l.safetensors") + " --json " + q(dir + "/i.json")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("lora skill for task \"ft\""), std::string::npos) << r.output;
  const nlohmann::json info = nlohmann::json::parse(sg::util::read_file(dir + "/i.json"));
  EXPECT_EQ(info["kind"], "lora");
  EXPECT_EQ(info["parameters"].get<int64_t>(), skill.parameter_count());

  // --to dense from the fine-tune, and from the LoRA skill; --energy.
  r = sg::test::run_command(sg::test::sg_command("extract --threads 1 --base " + q(base_dir) + " --finetuned " +
                                                 q(dir + "/ft") + " --to dense --task opposite --out " + q(dir + "/d.safetensors")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const DenseSkill dense = sg::skills::load_dense_skill(dir + "/d.safetensors");
  EXPECT_EQ(dense.task, "opposite");
  const sg::io::StateDict ft_weights = sg::io::load_safetensors_dir(dir + "/ft");
  for (const auto& item : base) {
    ASSERT_EQ(dense.tensors.count(item.key()), 1u) << item.key();
    EXPECT_TRUE(bits_equal(dense.tensors.at(item.key()), ft_weights[item.key()] - item.value())) << item.key();
  }
  r = sg::test::run_command(sg::test::sg_command("extract --threads 1 --base " + q(base_dir) + " --skill " +
                                                 q(dir + "/d.safetensors") + " --to lora --energy 0.9 --out " +
                                                 q(dir + "/e09.safetensors")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = sg::test::run_command(sg::test::sg_command("extract --threads 1 --base " + q(base_dir) + " --skill " +
                                                 q(dir + "/l.safetensors") + " --to dense --out " + q(dir + "/ld.safetensors")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const DenseSkill from_lora = sg::skills::load_dense_skill(dir + "/ld.safetensors");
  for (const auto& [name, part] : skill.tensors) EXPECT_TRUE(bits_equal(from_lora.tensors.at(name), sg::skills::lora_dense_delta(part)));

  // Bad invocations: one line each.
  sg::test::expect_one_line_error("extract --base " + q(base_dir) + " --finetuned " + q(dir + "/ft") +
                                      " --to lora --out " + q(dir + "/x.safetensors"),
                                  {"exactly one of --rank R and --energy E"}, true);
  sg::test::expect_one_line_error("extract --base " + q(base_dir) + " --finetuned " + q(dir + "/ft") + " --skill " +
                                      q(dir + "/l.safetensors") + " --to dense --out " + q(dir + "/x.safetensors"),
                                  {"exactly one of --finetuned and --skill"}, true);
  sg::test::expect_one_line_error("extract --base " + q(dir + "/grafted") + " --skill " + q(dir + "/l.safetensors") +
                                      " --to dense --out " + q(dir + "/x.safetensors"),
                                  {"was made for base"}, true);
  r = sg::test::run_command(sg::test::sg_command("extract --help"));
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("--energy"), std::string::npos);
}

}  // namespace
