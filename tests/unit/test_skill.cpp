// Sparse skills on stories260K: file round trip, apply/remove exactness, grafting at the full mask
// equals the fine-tuned model, bad files, and the graft / inspect verbs.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <regex>

#include "io/fingerprint.h"
#include "io/llama2c.h"
#include "io/safetensors.h"
#include "model/causal_lm.h"
#include "model/config.h"
#include "skills/skill.h"
#include "test_env.h"
#include "test_util.h"
#include "util/file.h"

namespace {

using sg::io::StateDict;
using sg::skills::SparseSkill;
using sg::test::error_of;
using Mask = std::map<std::string, at::Tensor>;

StateDict clone_dict(const StateDict& dict) {
  StateDict out;
  for (const auto& item : dict) out.insert(item.key(), item.value().detach().clone());
  return out;
}

// Bitwise equality (-0.0 differs from +0.0).
bool bits_equal(const at::Tensor& a, const at::Tensor& b) {
  return torch::equal(a.contiguous().view(torch::kInt32), b.contiguous().view(torch::kInt32));
}

struct Stories {
  sg::model::ModelConfig config;
  StateDict weights;
};

const Stories& stories() {
  static Stories s = [] {
    std::string path = sg::test::data_model("stories260K.bin");
    sg::io::Llama2cModel source = sg::io::read_llama2c(path);
    Stories out;
    out.config = sg::model::config_from_json(source.config, path);
    auto model = sg::model::create_model_from_weights(out.config, source.weights, path);
    out.weights = clone_dict(sg::model::model_state_dict(*model));
    return out;
  }();
  return s;
}

// A fine-tune that moves each weight by a relative amount |eps| < 0.5 (ft within a factor of 2 of
// the base, so ft - b is exact in float32 and every element must round-trip).
StateDict relative_finetune(const StateDict& base, uint64_t seed) {
  torch::manual_seed(seed);
  StateDict ft;
  for (const auto& item : base) {
    at::Tensor b = item.value();
    at::Tensor eps = (torch::randn_like(b) * 1e-2).clamp(-0.45, 0.45);
    at::Tensor big = torch::rand_like(b) < 0.01;  // a few large moves
    eps = torch::where(big, torch::rand_like(b) * 0.9 - 0.45, eps);
    ft.insert(item.key(), b * (1 + eps));
  }
  return ft;
}

// An additive fine-tune as SGD makes it: small absolute deltas, some large ones, on a base where
// some weights were set near zero. Not every element can round-trip (see skill.cpp).
void additive_finetune(const StateDict& stories_base, uint64_t seed, StateDict* base, StateDict* ft) {
  torch::manual_seed(seed);
  *base = StateDict();
  *ft = StateDict();
  for (const auto& item : stories_base) {
    at::Tensor b = item.value().clone();
    at::Tensor tiny = torch::rand_like(b) < 0.01;
    b = torch::where(tiny, torch::randn_like(b) * 1e-7, b);
    at::Tensor d = torch::randn_like(b) * 1e-3;
    at::Tensor big = torch::rand_like(b) < 0.01;
    d = torch::where(big, torch::randn_like(b) * 0.2, d);
    base->insert(item.key(), b);
    ft->insert(item.key(), b + d);
  }
}

Mask random_mask(const StateDict& base, double fraction, uint64_t seed) {
  torch::manual_seed(seed);
  Mask mask;
  for (const auto& item : base) mask[item.key()] = torch::rand(item.value().sizes()) < fraction;
  return mask;
}

Mask full_mask(const StateDict& base) {
  Mask mask;
  for (const auto& item : base) mask[item.key()] = torch::ones(item.value().sizes(), torch::kBool);
  return mask;
}

int64_t count_mismatches(const StateDict& a, const StateDict& b) {
  int64_t n = 0;
  for (const auto& item : a) {
    n += (item.value().view(torch::kInt32) != b[item.key()].view(torch::kInt32)).sum().item<int64_t>();
  }
  return n;
}

TEST(SparseSkill, SaveLoadRoundTripIsExact) {
  const StateDict& base = stories().weights;
  StateDict ft = relative_finetune(base, 1);
  SparseSkill skill = sg::skills::make_sparse_skill(base, ft, random_mask(base, 0.05, 2), "opposite");
  skill.metrics["recovery"] = 0.93;
  std::string path = sg::test::temp_dir("sg-skill") + "/skill.safetensors";
  sg::skills::save_sparse_skill(path, skill);
  SparseSkill loaded = sg::skills::load_sparse_skill(path);
  EXPECT_EQ(loaded.base_fingerprint, sg::io::state_dict_fingerprint(base));
  EXPECT_EQ(loaded.task, "opposite");
  EXPECT_EQ(loaded.metrics, skill.metrics);
  EXPECT_EQ(loaded.source, path);
  ASSERT_EQ(loaded.tensors.size(), skill.tensors.size());
  for (const auto& [name, part] : skill.tensors) {
    const auto& other = loaded.tensors.at(name);
    EXPECT_TRUE(torch::equal(other.indices, part.indices)) << name;
    EXPECT_TRUE(bits_equal(other.delta, part.delta)) << name;
    EXPECT_EQ(other.shape, part.shape) << name;
  }
  EXPECT_EQ(loaded.parameter_count(), skill.parameter_count());
  sg::io::SafetensorsFile file = sg::io::SafetensorsFile::open(path);
  EXPECT_EQ(file.metadata().at("format"), "skillgraft.skill");
  EXPECT_EQ(file.metadata().at("kind"), "sparse");
  EXPECT_EQ(file.metadata().at("version"), "1");
  EXPECT_TRUE(std::regex_match(file.metadata().at("created"),
                               std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")));
  const std::string first = skill.tensors.begin()->first;
  EXPECT_EQ(file.entry(first + ".idx").dtype, "I64");
  EXPECT_EQ(file.entry(first + ".delta").dtype, "F32");
  EXPECT_EQ(nlohmann::json::parse(file.metadata().at("shapes"))[first].get<std::vector<int64_t>>(),
            skill.tensors.at(first).shape);
}

TEST(SparseSkill, ApplyThenRemoveRestoresBaseBitForBit) {
  const StateDict& base = stories().weights;
  StateDict ft = relative_finetune(base, 3);
  Mask mask = random_mask(base, 0.3, 4);
  SparseSkill skill = sg::skills::make_sparse_skill(base, ft, mask, "t");
  EXPECT_EQ(skill.metrics["inexact_elements"].get<int64_t>(), 0);
  StateDict weights = clone_dict(base);
  sg::skills::apply_sparse_skill(weights, skill);
  for (const auto& item : base) {
    const std::string& name = item.key();
    at::Tensor m = mask[name];
    at::Tensor got = weights[name];
    // Unmasked positions keep the base exactly; masked ones are the fine-tuned value to 1 ulp.
    EXPECT_TRUE(bits_equal(got.masked_select(~m), item.value().masked_select(~m))) << name;
    at::Tensor want = ft[name].masked_select(m);
    at::Tensor have = got.masked_select(m);
    at::Tensor low = torch::nextafter(want, torch::full_like(want, -INFINITY));
    at::Tensor high = torch::nextafter(want, torch::full_like(want, INFINITY));
    EXPECT_TRUE(((have >= low) & (have <= high)).all().item<bool>()) << name;
  }
  sg::skills::remove_sparse_skill(weights, skill);
  for (const auto& item : base) EXPECT_TRUE(bits_equal(weights[item.key()], item.value())) << item.key();
}

TEST(SparseSkill, AdditiveFineTuneRemovesBitForBitThroughRestoreEntries) {
  StateDict base, ft;
  additive_finetune(stories().weights, 5, &base, &ft);
  Mask mask = full_mask(base);
  SparseSkill skill = sg::skills::make_sparse_skill(base, ft, mask, "t");
  const int64_t inexact = skill.metrics["inexact_elements"].get<int64_t>();
  const int64_t nudged = skill.metrics["nudged_elements"].get<int64_t>();
  // Which elements cannot round-trip, counted independently: those where the base is more than
  // a factor of 2 away from ft (ft - b inexact) and the float32 identity fails for plain ft - b.
  int64_t failing_plain = 0, outside_factor_two = 0;
  for (const auto& item : base) {
    at::Tensor b = item.value(), f = ft[item.key()];
    at::Tensor d = f - b;
    failing_plain += ((b + d - d).view(torch::kInt32) != b.view(torch::kInt32)).sum().item<int64_t>();
    outside_factor_two += (~((f.abs() <= 2 * b.abs()) & (b.abs() <= 2 * f.abs()) & (b * f > 0))).sum().item<int64_t>();
  }
  std::printf("additive fine-tune, %lld elements: %lld fail plain, %lld nudged, %lld inexact, %lld outside factor 2\n",
              static_cast<long long>(skill.parameter_count()), static_cast<long long>(failing_plain),
              static_cast<long long>(nudged), static_cast<long long>(inexact),
              static_cast<long long>(outside_factor_two));
  EXPECT_EQ(nudged + inexact, failing_plain);
  EXPECT_LE(failing_plain, outside_factor_two);
  EXPECT_GT(inexact, 0) << "the case should exercise the restore entries";
  // The elements float32 cannot undo are stored with their base values; removal is exact, also
  // after a save/load round trip of the skill file.
  int64_t restore_entries = 0;
  for (const auto& [name, part] : skill.tensors) {
    if (part.restore_indices.defined()) restore_entries += part.restore_indices.numel();
  }
  EXPECT_EQ(restore_entries, inexact);
  const std::string path = sg::test::temp_dir("sg-skill-restore") + "/skill.safetensors";
  sg::skills::save_sparse_skill(path, skill);
  SparseSkill loaded = sg::skills::load_sparse_skill(path);
  for (const SparseSkill* which : {&skill, &loaded}) {
    StateDict weights = clone_dict(base);
    sg::skills::apply_sparse_skill(weights, *which);
    EXPECT_GT(count_mismatches(weights, base), 0);
    sg::skills::remove_sparse_skill(weights, *which);
    EXPECT_EQ(count_mismatches(weights, base), 0);
  }
}

TEST(SparseSkill, FullMaskGraftEqualsFineTunedLogits) {
  const Stories& s = stories();
  StateDict ft = relative_finetune(s.weights, 7);
  SparseSkill skill = sg::skills::make_sparse_skill(s.weights, ft, full_mask(s.weights), "t");
  // The model takes the tensors it is given: hand it a copy, or the graft would change s.weights.
  auto grafted = sg::model::create_model_from_weights(s.config, clone_dict(s.weights), "base");
  auto finetuned = sg::model::create_model_from_weights(s.config, ft, "ft");
  StateDict live = sg::model::model_state_dict(*grafted);
  sg::skills::apply_sparse_skill(live, skill);  // views of the model's parameters: changes the model
  torch::NoGradGuard no_grad;
  torch::manual_seed(8);
  at::Tensor tokens = torch::randint(0, s.config.vocab_size, {2, 32}, torch::kInt64);
  at::Tensor a = grafted->forward(tokens), b = finetuned->forward(tokens);
  double diff = sg::test::max_abs_diff(a, b);
  EXPECT_LE(diff, 1e-6) << "largest logit difference " << diff;
  EXPECT_GT(sg::test::max_abs_diff(a, sg::model::create_model_from_weights(s.config, s.weights, "b")->forward(tokens)),
            1e-3);
}

TEST(SparseSkill, ApplyingToAnotherBaseIsAnErrorAndChangesNothing) {
  const StateDict& base = stories().weights;
  SparseSkill skill = sg::skills::make_sparse_skill(base, relative_finetune(base, 9), random_mask(base, 0.1, 10), "t");
  skill.source = "my.skill";
  StateDict other = clone_dict(base);
  other["model.norm.weight"].view({-1})[0] += 1.0f;
  StateDict before = clone_dict(other);
  std::string message = error_of([&] { sg::skills::apply_sparse_skill(other, skill); });
  EXPECT_NE(message.find("skill my.skill was made for base " + skill.base_fingerprint), std::string::npos) << message;
  EXPECT_NE(message.find("this model is " + sg::io::state_dict_fingerprint(before)), std::string::npos) << message;
  EXPECT_NE(message.find("hint"), std::string::npos) << message;
  EXPECT_EQ(count_mismatches(other, before), 0);
  // A tensor of another shape: an error before anything is written.
  StateDict wrong = clone_dict(base);
  wrong["model.norm.weight"] = torch::zeros({3});
  StateDict wrong_before = clone_dict(wrong);
  message = error_of([&] { sg::skills::remove_sparse_skill(wrong, skill); });
  EXPECT_NE(message.find("model.norm.weight"), std::string::npos) << message;
  EXPECT_EQ(count_mismatches(wrong, wrong_before), 0);
}

// Writes a skill file's tensors with some edit, keeping the metadata.
std::string rewrite(const std::string& good, const std::string& name,
                    const std::function<void(StateDict&)>& edit) {
  sg::io::Metadata metadata;
  StateDict tensors = sg::io::load_safetensors(good, &metadata);
  StateDict copy = clone_dict(tensors);
  edit(copy);
  std::string path = sg::test::temp_dir("sg-skill-bad") + "/" + name;
  sg::io::save_safetensors(path, copy, metadata);
  return path;
}

void expect_load_error(const std::string& path, const std::string& needle) {
  std::string message = error_of([&] { sg::skills::load_sparse_skill(path); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find(needle), std::string::npos) << message;
  EXPECT_NE(message.find("hint"), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
}

TEST(SparseSkill, BadFilesAreOneLineErrorsNamingTheFile) {
  const StateDict& base = stories().weights;
  SparseSkill skill = sg::skills::make_sparse_skill(base, relative_finetune(base, 11), random_mask(base, 0.1, 12), "t");
  std::string dir = sg::test::temp_dir("sg-skill-files");
  std::string good = dir + "/good.safetensors";
  sg::skills::save_sparse_skill(good, skill);
  std::string name = skill.tensors.begin()->first;

  std::string bytes = sg::util::read_file(good);
  std::string truncated = dir + "/truncated.safetensors";
  sg::util::write_file_atomic(truncated, bytes.substr(0, bytes.size() - 100));
  expect_load_error(truncated, "truncated");

  expect_load_error(rewrite(good, "unsorted.safetensors",
                            [&](StateDict& t) { t[name + ".idx"] = t[name + ".idx"].flip(0).contiguous(); }),
                    "not sorted");
  expect_load_error(rewrite(good, "duplicate.safetensors",
                            [&](StateDict& t) { t[name + ".idx"][1] = t[name + ".idx"][0].item<int64_t>(); }),
                    "without duplicates");
  expect_load_error(rewrite(good, "range.safetensors",
                            [&](StateDict& t) { t[name + ".idx"][-1] = int64_t{1} << 40; }),
                    "outside");
  expect_load_error(rewrite(good, "partner.safetensors",
                            [&](StateDict& t) {
                              StateDict out;
                              for (const auto& item : t)
                                if (item.key() != name + ".delta") out.insert(item.key(), item.value());
                              t = out;
                            }),
                    "has no partner \"" + name + ".delta\"");
  expect_load_error(rewrite(good, "length.safetensors",
                            [&](StateDict& t) { t[name + ".delta"] = t[name + ".delta"].slice(0, 1).contiguous(); }),
                    "values");
  expect_load_error(rewrite(good, "dtype.safetensors",
                            [&](StateDict& t) { t[name + ".delta"] = t[name + ".delta"].to(torch::kDouble); }),
                    "expected F32");
  std::string plain = dir + "/plain.safetensors";
  sg::io::save_safetensors(plain, base);
  expect_load_error(plain, "not a skill file");
}

// Selected parameters per layer counted from the mask by name, independently of skill.cpp.
std::vector<int64_t> per_layer_counts(const Mask& mask, int64_t num_layers) {
  std::vector<int64_t> counts(num_layers, 0);
  for (int64_t layer = 0; layer < num_layers; ++layer) {
    std::string prefix = "model.layers." + std::to_string(layer) + ".";
    for (const auto& [name, m] : mask)
      if (name.rfind(prefix, 0) == 0) counts[layer] += m.sum().item<int64_t>();
  }
  return counts;
}

TEST(SparseSkillCli, GraftThenRemoveGivesTheBaseFileAndInspectCountsPerLayer) {
  std::string base_dir = sg::test::converted_stories260k();
  ASSERT_TRUE(sg::util::file_exists(base_dir + "/model.safetensors"));
  sg::model::LoadedModel loaded = sg::model::load_model_dir(base_dir);
  StateDict base = clone_dict(sg::model::model_state_dict(*loaded.model));
  Mask mask = random_mask(base, 0.02, 13);
  SparseSkill skill = sg::skills::make_sparse_skill(base, relative_finetune(base, 14), mask, "opposite");
  std::string dir = sg::test::temp_dir("sg-skill-cli");
  std::string skill_path = dir + "/opposite.safetensors";
  sg::skills::save_sparse_skill(skill_path, skill);

  auto q = sg::test::shell_quote;
  auto r = sg::test::run_command(sg::test::sg_command("graft --base " + q(base_dir) + " --skill " + q(skill_path) +
                                                      " --out " + q(dir + "/grafted") + " --json " + q(dir + "/g.json")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("grafted skill \"opposite\""), std::string::npos) << r.output;
  EXPECT_NE(sg::util::read_file(dir + "/grafted/model.safetensors"), sg::util::read_file(base_dir + "/model.safetensors"));
  r = sg::test::run_command(sg::test::sg_command("graft --remove --base " + q(dir + "/grafted") + " --skill " +
                                                 q(skill_path) + " --out " + q(dir + "/restored")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(sg::util::read_file(dir + "/restored/model.safetensors") ==
              sg::util::read_file(base_dir + "/model.safetensors"));
  EXPECT_TRUE(sg::util::file_exists(dir + "/restored/config.json"));

  // Grafting twice: the grafted model is not the skill's base.
  sg::test::expect_one_line_error("graft --base " + q(dir + "/grafted") + " --skill " + q(skill_path) + " --out " +
                                      q(dir + "/twice"),
                                  {skill_path, "was made for base " + skill.base_fingerprint}, true);
  sg::test::expect_one_line_error("graft --base " + q(base_dir) + " --skill " + q(base_dir + "/model.safetensors") +
                                      " --out " + q(dir + "/x"),
                                  {"not a skill file"}, true);

  r = sg::test::run_command(sg::test::sg_command("inspect " + q(skill_path) + " --json " + q(dir + "/i.json")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("sparse skill for task \"opposite\""), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(skill.base_fingerprint), std::string::npos) << r.output;
  std::vector<int64_t> counts = per_layer_counts(mask, loaded.config.num_layers);
  for (size_t layer = 0; layer < counts.size(); ++layer) {
    char line[64];
    std::snprintf(line, sizeof(line), "layer %-3zu %lld\n", layer, static_cast<long long>(counts[layer]));
    EXPECT_NE(r.output.find(line), std::string::npos) << line << r.output;
  }
  auto info = nlohmann::json::parse(sg::util::read_file(dir + "/i.json"));
  EXPECT_EQ(info["per_layer"].get<std::vector<int64_t>>(), counts);
  EXPECT_EQ(info["per_kind"].value("embed_tokens", int64_t{0}), mask.at("model.embed_tokens.weight").sum().item<int64_t>());
  EXPECT_EQ(info["per_kind"].value("norm", int64_t{0}), mask.at("model.norm.weight").sum().item<int64_t>());
  int64_t q_proj = 0;
  for (int64_t l = 0; l < loaded.config.num_layers; ++l)
    q_proj += mask.at("model.layers." + std::to_string(l) + ".self_attn.q_proj.weight").sum().item<int64_t>();
  EXPECT_EQ(info["per_kind"].value("q_proj", int64_t{0}), q_proj);

  r = sg::test::run_command(sg::test::sg_command("graft --help"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("--remove"), std::string::npos) << r.output;
}

}  // namespace
