// skillgraft finetune from the command line on stories260K: a run killed with SIGKILL and resumed
// ends with the same bytes as an uninterrupted one; LoRA adapters evaluate to the recorded best
// score; select mode changes only the selected tensors; one clear line for each bad input.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "io/safetensors.h"
#include "test_env.h"

extern char** environ;

namespace {

using sg::test::read_json;
using sg::test::run_command;
using sg::test::shell_quote;

// Every finetune error names what was wrong and carries a hint.
void expect_error_with_hint(const std::string& args, const std::vector<std::string>& needles) {
  sg::test::expect_one_line_error(args, needles, /*require_hint=*/true);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

bool exists(const std::string& path) { return std::filesystem::exists(path); }



std::string finetune_args(const std::string& out, const std::string& rest) {
  return "finetune --quiet --threads 1 --base " + shell_quote(sg::test::converted_stories260k()) + " --out " + shell_quote(out) + " " + rest;
}

// Splits a command line of plain words (no quoting needed: temp paths have no spaces).
std::vector<std::string> words(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream stream(text);
  std::string word;
  while (stream >> word) out.push_back(word);
  return out;
}

// Starts `skillgraft <args>` as a child (output to log_path), waits until its checkpoint reaches
// `min_step`, and kills it with SIGKILL. Returns false (with a failure) when the run exits first.
bool run_and_kill_at_checkpoint(const std::string& out, const std::string& args, int64_t min_step,
                                const std::string& log_path) {
  std::vector<std::string> argv_strings = words(args);
  argv_strings.insert(argv_strings.begin(), sg::test::binary());
  std::vector<char*> argv;
  for (auto& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  EXPECT_EQ(spawned, 0) << std::strerror(spawned);
  if (spawned != 0) return false;

  const std::string state_path = out + "/checkpoint/trainer_state.json";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int64_t seen_step = -1;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      ADD_FAILURE() << "the run exited by itself (status " << status << ") before its checkpoint reached step "
                    << min_step << " (last seen " << seen_step << "):\n"
                    << read_file(log_path);
      return false;
    }
    if (exists(state_path)) {
      try {
        seen_step = read_json(state_path).at("step").get<int64_t>();
      } catch (const std::exception&) {
        // Replaced between exists() and the read: look again.
      }
      if (seen_step >= min_step) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(::kill(pid, SIGKILL), 0);
  int status = 0;
  EXPECT_EQ(::waitpid(pid, &status, 0), pid);
  // Killed, not finished: the run did not exit on its own.
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
  EXPECT_GE(seen_step, min_step) << "timed out waiting for the checkpoint";
  return seen_step >= min_step && WIFSIGNALED(status);
}

bool same_bytes(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  torch::Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.numel() * ca.element_size()) == 0;
}

TEST(FinetuneCli, Help) {
  auto r = run_command(sg::test::sg_command("finetune --help"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const char* needle : {"usage: skillgraft finetune", "--mode", "--resume", "--base", "--task", "--out",
                             "--rank", "--targets", "--params", "--checkpoint-every", "--threads"}) {
    EXPECT_NE(r.output.find(needle), std::string::npos) << needle << " in:\n" << r.output;
  }
}

// The key property: SIGKILL at any checkpoint + --resume == an uninterrupted run, byte for byte.
TEST(FinetuneCli, ResumeAfterSigkillGivesIdenticalWeights) {
  const std::string root = sg::test::temp_dir("sg-finetune-resume");
  const std::string common =
      "--mode full --task opposite --steps 300 --eval-every 0 --checkpoint-every 20 --target-score 2";
  const std::string out_a = root + "/a", out_b = root + "/b";

  auto a = run_command(sg::test::sg_command(finetune_args(out_a, common + " --json " + root + "/a.json")));
  ASSERT_EQ(a.exit_code, 0) << a.output;
  EXPECT_FALSE(read_json(root + "/a.json")["resumed"].get<bool>());

  // Not --quiet: the resumed run's log line is checked below.
  const std::string b_args = "finetune --threads 1 --base " + sg::test::converted_stories260k() + " --out " + out_b + " " + common;
  ASSERT_TRUE(run_and_kill_at_checkpoint(out_b, b_args, 40, root + "/b-first.log"));
  EXPECT_FALSE(exists(out_b + "/training.json")) << "the killed run must not have finished";
  EXPECT_FALSE(exists(out_b + "/model.safetensors")) << "no evaluation before the end: no best model yet";
  const int64_t killed_at = read_json(out_b + "/checkpoint/trainer_state.json")["step"].get<int64_t>();
  EXPECT_LT(killed_at, 300);

  auto b = run_command(sg::test::sg_command(b_args + " --resume --json " + root + "/b.json"));
  ASSERT_EQ(b.exit_code, 0) << b.output;
  EXPECT_NE(b.output.find("resuming from step " + std::to_string(killed_at)), std::string::npos) << b.output;
  const nlohmann::json b_json = read_json(root + "/b.json");
  EXPECT_TRUE(b_json["resumed"].get<bool>());
  EXPECT_EQ(b_json["steps"], 300);
  EXPECT_EQ(read_json(out_b + "/training.json")["steps"], 300);
  EXPECT_FALSE(exists(out_b + "/checkpoint")) << "the checkpoint is removed once the run completes";

  const std::string weights_a = read_file(out_a + "/model.safetensors");
  const std::string weights_b = read_file(out_b + "/model.safetensors");
  ASSERT_FALSE(weights_a.empty());
  EXPECT_TRUE(weights_a == weights_b) << "resumed weights differ from the uninterrupted run's";
  EXPECT_FALSE(weights_a == read_file(sg::test::converted_stories260k() + "/model.safetensors")) << "training changed nothing";
  EXPECT_EQ(read_json(root + "/a.json")["best_score"], b_json["best_score"]);
}

TEST(FinetuneCli, ResumeWithAnotherConfigIsAnError) {
  const std::string root = sg::test::temp_dir("sg-finetune-mismatch");
  const std::string out = root + "/run";
  const std::string args = "finetune --quiet --threads 1 --base " + sg::test::converted_stories260k() + " --out " + out +
                           " --mode full --task opposite --steps 100000 --eval-every 0 --checkpoint-every 2";
  ASSERT_TRUE(run_and_kill_at_checkpoint(out, args, 2, root + "/first.log"));
  expect_error_with_hint(finetune_args(out, "--task opposite --mode select --params mlp --resume"),
                        {"checkpoint", "another run", "mode"});
  expect_error_with_hint(finetune_args(out, "--task add --mode full --resume"), {"checkpoint", "another run", "task"});
  // The checkpoint survives the refused resumes.
  EXPECT_TRUE(exists(out + "/checkpoint/trainer_state.json"));
}

TEST(FinetuneCli, LoraAdapterEvaluatesToTheRecordedBestScore) {
  const std::string root = sg::test::temp_dir("sg-finetune-lora");
  const std::string out = root + "/adapter";
  const std::string base_bytes = read_file(sg::test::converted_stories260k() + "/model.safetensors");
  auto r = run_command(sg::test::sg_command(finetune_args(out, "--mode lora --rank 4 --alpha 8 --targets q_proj,v_proj --task "
                                                 "opposite --steps 100 --eval-every 25 --eval-examples 40 "
                                                 "--target-score 2 --lr 0.2")));
  ASSERT_EQ(r.exit_code, 0) << r.output;

  const nlohmann::json config = read_json(out + "/adapter_config.json");
  EXPECT_EQ(config["r"], 4);
  EXPECT_DOUBLE_EQ(config["lora_alpha"].get<double>(), 8.0);
  std::vector<std::string> targets = config["target_modules"].get<std::vector<std::string>>();
  std::sort(targets.begin(), targets.end());
  EXPECT_EQ(targets, (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_FALSE(exists(out + "/model.safetensors")) << "LoRA writes an adapter, not a model";

  const sg::io::StateDict adapter = sg::io::load_safetensors(out + "/adapter_model.safetensors");
  const sg::io::StateDict base = sg::io::load_safetensors(sg::test::converted_stories260k() + "/model.safetensors");
  std::set<std::string> expected_keys;
  for (const auto& item : base) {
    static const std::regex projection(R"(^(model\.layers\.\d+\.self_attn\.(q|v)_proj)\.weight$)");
    std::smatch match;
    if (!std::regex_match(item.key(), match, projection)) continue;
    const std::string module = match[1].str();
    expected_keys.insert("base_model.model." + module + ".lora_A.weight");
    expected_keys.insert("base_model.model." + module + ".lora_B.weight");
    const torch::Tensor* lora_a = adapter.find("base_model.model." + module + ".lora_A.weight");
    const torch::Tensor* lora_b = adapter.find("base_model.model." + module + ".lora_B.weight");
    ASSERT_TRUE(lora_a != nullptr && lora_b != nullptr) << module;
    EXPECT_EQ(lora_a->sizes(), (std::vector<int64_t>{4, item.value().size(1)})) << module;
    EXPECT_EQ(lora_b->sizes(), (std::vector<int64_t>{item.value().size(0), 4})) << module;
  }
  ASSERT_FALSE(expected_keys.empty());
  std::set<std::string> keys;
  for (const auto& item : adapter) keys.insert(item.key());
  EXPECT_EQ(keys, expected_keys);
  bool b_trained = false;
  for (const auto& item : adapter) {
    if (item.key().find("lora_B") != std::string::npos) b_trained |= item.value().abs().max().item<double>() > 0;
  }
  EXPECT_TRUE(b_trained) << "B starts at 0 and must have moved";

  // The trainer scored the first --eval-examples validation examples; eval on them reproduces it.
  const nlohmann::json training = read_json(out + "/training.json");
  const double best = training["best_score"].get<double>();
  // Guards against a vacuous 0 == 0 comparison: at this lr stories260K gets a few of the 40 right.
  EXPECT_GT(best, 0) << "no validation example learned; the score comparison below proves little";
  const std::string json = root + "/eval.json";
  auto e = run_command(sg::test::sg_command("eval --quiet --threads 1 --model " + shell_quote(sg::test::converted_stories260k()) + " --adapter " +
                              shell_quote(out) + " --task opposite --split validation --max-examples 40 --json " +
                              shell_quote(json)));
  ASSERT_EQ(e.exit_code, 0) << e.output;
  const nlohmann::json eval = read_json(json);
  EXPECT_EQ(eval["n"], 40);
  EXPECT_EQ(eval["score"].get<double>(), best) << "eval of the saved adapter vs the best score in training.json";
  EXPECT_TRUE(base_bytes == read_file(sg::test::converted_stories260k() + "/model.safetensors")) << "the base weights were modified";
}

TEST(FinetuneCli, SelectModeChangesOnlySelectedTensors) {
  const std::string root = sg::test::temp_dir("sg-finetune-select");
  const std::string out = root + "/select";
  auto r = run_command(sg::test::sg_command(finetune_args(out, "--mode select --params mlp --task opposite --steps 30 "
                                                 "--eval-every 0 --checkpoint-every 0 --target-score 2")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const sg::io::StateDict base = sg::io::load_safetensors(sg::test::converted_stories260k() + "/model.safetensors");
  const sg::io::StateDict tuned = sg::io::load_safetensors(out + "/model.safetensors");
  ASSERT_EQ(base.size(), tuned.size());
  int mlp_tensors = 0, mlp_changed = 0, other_tensors = 0;
  for (const auto& item : base) {
    const torch::Tensor* after = tuned.find(item.key());
    ASSERT_NE(after, nullptr) << item.key();
    const bool same = same_bytes(item.value(), *after);
    if (item.key().find("mlp") != std::string::npos) {
      ++mlp_tensors;
      mlp_changed += same ? 0 : 1;
    } else {
      ++other_tensors;
      EXPECT_TRUE(same) << item.key() << " is not selected but changed";
    }
  }
  EXPECT_GT(mlp_tensors, 0);
  EXPECT_GT(other_tensors, 0);
  EXPECT_GE(mlp_changed, 1);
  EXPECT_EQ(read_json(out + "/training.json")["trainable_tensors"], mlp_tensors);
}

TEST(FinetuneCli, BadInputsGiveOneLineWithAHint) {
  const std::string root = sg::test::temp_dir("sg-finetune-bad");
  expect_error_with_hint(finetune_args(root + "/o1", "--task nosuchtask"), {"unknown task 'nosuchtask'"});

  const std::string task = root + "/mytask";
  std::filesystem::create_directories(task);
  {
    std::ofstream(task + "/train.jsonl") << "{\"prompt\": \"a\", \"completion\": \" b\"}\n{\"prompt\": \"a\"\n";
    std::ofstream(task + "/validation.jsonl") << "{\"prompt\": \"a\", \"completion\": \" b\"}\n";
    std::ofstream(task + "/test.jsonl") << "{\"prompt\": \"a\", \"completion\": \" b\"}\n";
  }
  expect_error_with_hint(finetune_args(root + "/o2", "--task " + task), {"train.jsonl:2"});

  const std::string no_weights = root + "/config-only";
  std::filesystem::create_directories(no_weights);
  std::filesystem::copy_file(sg::test::converted_stories260k() + "/config.json", no_weights + "/config.json");
  expect_error_with_hint("finetune --quiet --threads 1 --base " + no_weights + " --out " + root +
                            "/o3 --task opposite --steps 2",
                        {no_weights});

  expect_error_with_hint(finetune_args(root + "/o4", "--task opposite --mode lora --targets nosuch --steps 2"),
                        {"nosuch"});

  const std::string empty = root + "/empty";
  std::filesystem::create_directories(empty);
  expect_error_with_hint(finetune_args(empty, "--task opposite --resume"), {"--resume", "no training checkpoint"});
}

TEST(FinetuneCli, DivergenceStopsAndKeepsAFiniteCheckpoint) {
  const std::string out = sg::test::temp_dir("sg-finetune-nan") + "/run";
  expect_error_with_hint(finetune_args(out, "--task opposite --lr 1e6 --clip 0 --checkpoint-every 1 --steps 50"),
                        {"diverged"});
  const std::string checkpoint = out + "/checkpoint";
  ASSERT_TRUE(exists(checkpoint + "/trainer_state.json"));
  ASSERT_TRUE(exists(checkpoint + "/optimizer.safetensors"));
  ASSERT_TRUE(exists(checkpoint + "/trainable.safetensors"));
  EXPECT_GE(read_json(checkpoint + "/trainer_state.json")["step"].get<int64_t>(), 1);
  const sg::io::StateDict trainable = sg::io::load_safetensors(checkpoint + "/trainable.safetensors");
  EXPECT_FALSE(trainable.is_empty());
  for (const auto& item : trainable) {
    EXPECT_TRUE(torch::isfinite(item.value()).all().item<bool>()) << item.key() << " is not finite";
  }
  EXPECT_FALSE(exists(out + "/training.json"));
}

}  // namespace
