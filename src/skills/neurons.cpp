#include "skills/neurons.h"

#include <torch/torch.h>

#include <algorithm>
#include <fstream>
#include <numeric>
#include <random>

#include "data/batching.h"
#include "data/builtin_tasks.h"
#include "model/generate.h"
#include "util/error.h"
#include "util/file.h"

namespace sg::skills {

namespace {

// Restores the model's train/eval mode and clears its FFN hook, also on a throw.
class HookScope {
 public:
  explicit HookScope(model::CausalLM& model) : model_(model), was_training_(model.is_training()) {}
  ~HookScope() {
    model_.ffn_hook = nullptr;
    model_.train(was_training_);
  }
  HookScope(const HookScope&) = delete;
  HookScope& operator=(const HookScope&) = delete;

 private:
  model::CausalLM& model_;
  bool was_training_;
};

torch::Device model_device(const model::CausalLM& model) {
  const auto parameters = model.parameters();
  return parameters.empty() ? torch::Device(torch::kCPU) : parameters.front().device();
}

}  // namespace

NeuronActivations mean_ffn_activations(model::CausalLM& model, const std::vector<MeasuredSequence>& sequences,
                                       int64_t batch_size) {
  SG_CHECK(batch_size >= 1, "batch_size must be >= 1, got " << batch_size);
  SG_CHECK(!model.ffn_hook, "mean_ffn_activations: the model already has an FFN hook; hint: clear it first");
  const model::ModelConfig& config = model.config();
  const int64_t L = config.num_layers, I = config.intermediate_size;
  const torch::Device device = model_device(model);
  std::vector<torch::Tensor> sums(L);
  for (auto& sum : sums) sum = torch::zeros({I}, torch::TensorOptions().dtype(torch::kDouble).device(device));
  int64_t counted = 0;

  HookScope scope(model);
  model.eval();
  c10::InferenceMode inference;
  torch::Tensor weight;  // (B, T, 1): 1 at counted positions, 0 elsewhere (padding, uncounted prefix)
  model.ffn_hook = [&](int64_t layer, torch::Tensor& activation) {
    // activation: (B, T, I) -> (I) sum of |activation| over the counted positions
    sums[layer] += (activation.abs().to(torch::kDouble) * weight).sum(std::vector<int64_t>{0, 1});
  };
  for (size_t start = 0; start < sequences.size(); start += static_cast<size_t>(batch_size)) {
    const size_t end = std::min(sequences.size(), start + static_cast<size_t>(batch_size));
    int64_t T = 0;
    for (size_t i = start; i < end; ++i) {
      const int64_t length = static_cast<int64_t>(sequences[i].tokens.size());
      SG_CHECK(length <= config.max_positions, "a measured sequence has " << length << " tokens but the model's context is "
                                                                          << config.max_positions
                                                                          << "; hint: use shorter examples");
      T = std::max(T, length);
    }
    if (T == 0) continue;
    const int64_t B = static_cast<int64_t>(end - start);
    std::vector<int64_t> tokens(static_cast<size_t>(B * T), 0);
    std::vector<double> mask(static_cast<size_t>(B * T), 0.0);
    for (int64_t b = 0; b < B; ++b) {
      const MeasuredSequence& sequence = sequences[start + static_cast<size_t>(b)];
      const int64_t length = static_cast<int64_t>(sequence.tokens.size());
      for (int64_t t = 0; t < length; ++t) {
        tokens[static_cast<size_t>(b * T + t)] = sequence.tokens[static_cast<size_t>(t)];
        if (t >= sequence.first_counted) {
          mask[static_cast<size_t>(b * T + t)] = 1.0;
          ++counted;
        }
      }
    }
    // Right padding: under causal attention the real positions never see the padding after them.
    torch::Tensor input = torch::tensor(tokens, torch::kLong).view({B, T}).to(device);
    weight = torch::tensor(mask, torch::kDouble).view({B, T, 1}).to(device);
    model.forward(input);
  }
  SG_CHECK(counted > 0, "no positions to measure activations on; hint: the task or text has no tokens");
  NeuronActivations result;
  result.positions = counted;
  for (auto& sum : sums) result.mean_abs.push_back((sum / static_cast<double>(counted)).cpu());
  return result;
}

std::vector<MeasuredSequence> answer_sequences(const io::Tokenizer& tokenizer, const std::vector<data::Example>& examples,
                                               int64_t max_examples) {
  SG_CHECK(max_examples >= 0, "max_examples must be >= 0, got " << max_examples);
  const size_t n = max_examples == 0 ? examples.size() : std::min(examples.size(), static_cast<size_t>(max_examples));
  std::vector<MeasuredSequence> sequences;
  for (size_t i = 0; i < n; ++i) {
    data::EncodedSequence encoded = data::encode_for_training(tokenizer, examples[i]);
    // The position before each completion token predicts it; the last token predicts nothing.
    MeasuredSequence sequence;
    sequence.first_counted = encoded.completion_start - 1;
    encoded.tokens.pop_back();
    sequence.tokens = std::move(encoded.tokens);
    sequences.push_back(std::move(sequence));
  }
  return sequences;
}

std::vector<MeasuredSequence> generated_sequences(model::CausalLM& base, const io::Tokenizer& base_tokenizer,
                                                  const io::Tokenizer& tokenizer, int64_t samples, int64_t tokens,
                                                  uint64_t seed) {
  SG_CHECK(samples >= 1 && tokens >= 1, "general text needs samples >= 1 and tokens >= 1, got " << samples << " and "
                                                                                                 << tokens);
  model::SamplingOptions options;
  options.max_tokens = tokens;
  options.temperature = 1.0;  // greedy from BOS would write the same story every time
  std::vector<MeasuredSequence> sequences;
  for (int64_t i = 0; i < samples; ++i) {
    options.seed = seed + static_cast<uint64_t>(i);
    const model::GenerationResult generated = model::generate(base, base_tokenizer, "", options);
    if (generated.text.empty()) continue;
    MeasuredSequence sequence;
    sequence.tokens = io::prompt_tokens(tokenizer, generated.text);
    // Another tokenizer may cut the text finer; keep the promised length.
    const size_t limit = std::min(sequence.tokens.size(), generated.prompt_tokens.size() + static_cast<size_t>(tokens));
    sequence.tokens.resize(limit);
    sequences.push_back(std::move(sequence));
  }
  SG_CHECK(!sequences.empty(), "the base generated no text in " << samples
                                                                << " samples; hint: pass --reference FILE, a text corpus");
  return sequences;
}

std::vector<MeasuredSequence> reference_sequences(const std::string& path, const io::Tokenizer& tokenizer,
                                                  int64_t samples, int64_t tokens) {
  SG_CHECK(samples >= 1 && tokens >= 1, "general text needs samples >= 1 and tokens >= 1, got " << samples << " and "
                                                                                                 << tokens);
  constexpr const char* kHint = "hint: a plain-text corpus, or leave --reference out to use the base's generations";
  SG_CHECK(util::file_exists(path), "--reference " << path << ": no such file; " << kHint);
  SG_CHECK(!util::is_directory(path), "--reference " << path << ": is a directory, not a text file; " << kHint);
  SG_CHECK(std::ifstream(path).good(), "--reference " << path << ": cannot be read; " << kHint);
  std::string text = util::read_file(path);
  if (text.size() > kReferenceBytes) {
    text.resize(kReferenceBytes);
    while (!text.empty() && (static_cast<unsigned char>(text.back()) & 0xC0) == 0x80) text.pop_back();  // UTF-8 tail
    if (!text.empty() && static_cast<unsigned char>(text.back()) >= 0xC0) text.pop_back();
  }
  const std::vector<int64_t> ids = tokenizer.encode(text);
  SG_CHECK(!ids.empty(), "--reference " << path << ": the file has no text; hint: a plain-text corpus");
  const std::vector<int64_t> prefix = io::prompt_tokens(tokenizer, "");  // BOS, or the tokenizer's EOS separator
  std::vector<MeasuredSequence> sequences;
  for (size_t start = 0; start < ids.size() && static_cast<int64_t>(sequences.size()) < samples;
       start += static_cast<size_t>(tokens)) {
    const size_t end = std::min(ids.size(), start + static_cast<size_t>(tokens));
    MeasuredSequence sequence;
    sequence.tokens = prefix;
    sequence.tokens.insert(sequence.tokens.end(), ids.begin() + static_cast<std::ptrdiff_t>(start),
                           ids.begin() + static_cast<std::ptrdiff_t>(end));
    sequences.push_back(std::move(sequence));
  }
  return sequences;
}

at::Tensor standout(const at::Tensor& task_mean, const at::Tensor& general_mean) {
  SG_CHECK(task_mean.sizes() == general_mean.sizes(), "standout: task and general activations differ in shape");
  return (task_mean.to(torch::kDouble) - general_mean.to(torch::kDouble)).clamp_min(0.0);
}

std::vector<int64_t> coverage_set(const at::Tensor& standout_values, double coverage) {
  SG_CHECK(coverage > 0 && coverage <= 1, "--coverage must be in (0, 1], got " << coverage
                                                                              << "; hint: 0.5 keeps half the standout mass");
  SG_CHECK(standout_values.dim() == 1, "coverage_set needs a (I) standout vector");
  const torch::Tensor values = standout_values.to(torch::kDouble).contiguous().cpu();
  const double* s = values.data_ptr<double>();
  const int64_t n = values.numel();
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return s[a] > s[b]; });
  // The total is summed in the same order as the prefix sums, so that coverage 1 stops exactly at
  // the last neuron with a positive standout instead of missing it by a rounding difference.
  double total = 0;
  for (int64_t i : order) total += s[i];
  std::vector<int64_t> chosen;
  if (total <= 0) return chosen;
  const double target = coverage * total;
  double sum = 0;
  for (int64_t i : order) {
    if (sum >= target) break;
    sum += s[i];
    chosen.push_back(i);
  }
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

NeuronSets task_neuron_sets(const NeuronActivations& task, const NeuronActivations& general, double coverage) {
  SG_CHECK(task.mean_abs.size() == general.mean_abs.size(), "task and general activations differ in layer count");
  NeuronSets sets;
  for (size_t l = 0; l < task.mean_abs.size(); ++l) {
    sets.push_back(coverage_set(standout(task.mean_abs[l], general.mean_abs[l]), coverage));
  }
  return sets;
}

double iou(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  if (a.empty() && b.empty()) return 1.0;
  std::vector<int64_t> common;
  std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(common));
  const double unions = static_cast<double>(a.size() + b.size() - common.size());
  return static_cast<double>(common.size()) / unions;
}

NeuronSets random_neuron_sets(const NeuronSets& like, int64_t width, uint64_t seed) {
  std::mt19937_64 rng(seed);
  NeuronSets sets;
  for (const auto& layer : like) {
    const int64_t k = static_cast<int64_t>(layer.size());
    SG_CHECK(k <= width, "random_neuron_sets: " << k << " neurons asked of a layer of " << width);
    // A partial Fisher-Yates shuffle: the first k of a uniformly shuffled [0, width).
    std::vector<int64_t> pool(static_cast<size_t>(width));
    std::iota(pool.begin(), pool.end(), 0);
    for (int64_t i = 0; i < k; ++i) {
      const int64_t j = i + static_cast<int64_t>(data::uniform_below(rng, static_cast<uint64_t>(width - i)));
      std::swap(pool[static_cast<size_t>(i)], pool[static_cast<size_t>(j)]);
    }
    std::vector<int64_t> chosen(pool.begin(), pool.begin() + k);
    std::sort(chosen.begin(), chosen.end());
    sets.push_back(std::move(chosen));
  }
  return sets;
}

model::FfnHook ablation_hook(const NeuronSets& sets) {
  std::vector<torch::Tensor> indices;
  for (const auto& layer : sets) indices.push_back(torch::tensor(layer, torch::kLong));
  return [indices](int64_t layer, torch::Tensor& activation) {
    // activation: (B, T, I); the listed neurons of this layer set to 0 at every position
    if (layer < 0 || layer >= static_cast<int64_t>(indices.size()) || indices[layer].numel() == 0) return;
    activation.index_fill_(-1, indices[layer].to(activation.device()), 0.0);
  };
}

AblationResult run_ablations(model::CausalLM& model, const std::vector<NeuronSets>& sets, int64_t width,
                             uint64_t seed, const TaskMeasureFn& measure) {
  HookScope scope(model);
  const size_t tasks = sets.size();
  AblationResult result;
  model.ffn_hook = nullptr;
  for (size_t t = 0; t < tasks; ++t) result.intact.push_back(measure(model, t));
  for (size_t target = 0; target < tasks; ++target) {
    model.ffn_hook = ablation_hook(sets[target]);
    std::vector<TaskMeasure> row;
    for (size_t t = 0; t < tasks; ++t) row.push_back(measure(model, t));
    result.ablated.push_back(std::move(row));
    model.ffn_hook = ablation_hook(random_neuron_sets(sets[target], width, seed + target));
    result.random_control.push_back(measure(model, target));
    model.ffn_hook = nullptr;
  }
  return result;
}

}  // namespace sg::skills
