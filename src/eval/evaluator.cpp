#include "eval/evaluator.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <numeric>

#include "data/batching.h"
#include "eval/metrics.h"
#include "util/error.h"

namespace sg::eval {

namespace {

// Logits a forward may produce at once (B * T * V floats, 256 MiB): bounds memory for large
// vocabularies and long sequences, whatever batch_size asks for.
constexpr int64_t kMaxLogitElements = int64_t{1} << 26;
constexpr int kCalibrationBins = 15;

// Puts the model in eval mode and restores its previous mode on scope exit (the trainer
// evaluates mid-training).
class EvalModeGuard {
 public:
  explicit EvalModeGuard(model::CausalLM& model) : model_(model), was_training_(model.is_training()) {
    model_.eval();
  }
  ~EvalModeGuard() { model_.train(was_training_); }
  EvalModeGuard(const EvalModeGuard&) = delete;
  EvalModeGuard& operator=(const EvalModeGuard&) = delete;

 private:
  model::CausalLM& model_;
  bool was_training_;
};

torch::Device model_device(const model::CausalLM& model) {
  for (const torch::Tensor& p : model.parameters()) return p.device();
  return torch::kCPU;
}

// Rows of `row_length` tokens that fit in one forward: batch_size, fewer when the logits
// would pass kMaxLogitElements, at least one.
int64_t rows_per_forward(int64_t batch_size, int64_t row_length, int64_t vocab) {
  const int64_t by_memory = kMaxLogitElements / std::max<int64_t>(row_length * vocab, 1);
  return std::max<int64_t>(1, std::min(batch_size, by_memory));
}

// The sum of each sequence's completion-token log-probabilities, teacher-forced. Sequences are
// sorted by length and scored in right-padded batches (padding sits after every real token,
// so causal attention never lets it change a real position).
std::vector<double> completion_log_likelihoods(model::CausalLM& model,
                                               const std::vector<const data::EncodedSequence*>& sequences,
                                               int64_t batch_size, torch::Device device) {
  const int64_t vocab = model.config().vocab_size;
  std::vector<size_t> order(sequences.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return sequences[a]->tokens.size() < sequences[b]->tokens.size();
  });
  std::vector<double> result(sequences.size(), 0.0);
  size_t begin = 0;
  while (begin < order.size()) {
    // Ascending lengths: the chunk's last sequence sets its width.
    size_t end = begin + 1;
    while (end < order.size()) {
      const int64_t width = static_cast<int64_t>(sequences[order[end]]->tokens.size()) - 1;
      if (static_cast<int64_t>(end - begin + 1) > rows_per_forward(batch_size, width, vocab)) break;
      ++end;
    }
    std::vector<const data::EncodedSequence*> chunk;
    for (size_t i = begin; i < end; ++i) chunk.push_back(sequences[order[i]]);
    data::Batch batch = data::make_batch(chunk, model.config().max_positions);
    torch::Tensor logits = model.forward(batch.inputs.to(device));  // (B, T, V)
    const int64_t B = logits.size(0), T = logits.size(1);
    torch::Tensor nll = torch::nn::functional::cross_entropy(
        logits.reshape({B * T, -1}).to(torch::kFloat), batch.targets.to(device).reshape({B * T}),
        torch::nn::functional::CrossEntropyFuncOptions().ignore_index(data::kIgnoreTarget).reduction(torch::kNone));
    torch::Tensor sums = nll.view({B, T}).sum(1).to(torch::kCPU, torch::kDouble).contiguous();
    const double* s = sums.data_ptr<double>();
    for (size_t i = begin; i < end; ++i) result[order[i]] = -s[i - begin];
    begin = end;
  }
  return result;
}

// The last UTF-8 character of `text` (its last byte where the bytes are not valid UTF-8).
std::string last_character(const std::string& text) {
  if (text.empty()) return "";
  size_t i = text.size() - 1;
  while (i > 0 && text.size() - i < 4 && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) --i;
  const unsigned char lead = static_cast<unsigned char>(text[i]);
  if (i + 1 < text.size() && (lead & 0xC0) != 0xC0) return text.substr(text.size() - 1);
  return text.substr(i);
}

struct GenerationRow {
  size_t example = 0;
  std::vector<int64_t> prompt;
  int64_t max_new_tokens = 0;
  std::string stop;  // the expected completion's last character
};

// Greedy decoding of rows whose prompts all have the same length, with one KV cache.
// Writes each row's predicted text into predictions[row.example].predicted.
void decode_greedy(model::CausalLM& model, const io::Tokenizer& tokenizer, const std::vector<GenerationRow>& rows,
                   torch::Device device, std::vector<ExamplePrediction>& predictions) {
  const model::ModelConfig& config = model.config();
  const int64_t B = static_cast<int64_t>(rows.size());
  const int64_t L = static_cast<int64_t>(rows[0].prompt.size());
  SG_CHECK(L <= config.max_positions, "a prompt is " << L << " tokens but the model's context is "
                                                     << config.max_positions << " tokens; hint: shorten the prompt");
  int64_t steps = 0;
  std::vector<int64_t> flat;
  flat.reserve(static_cast<size_t>(B * L));
  for (const GenerationRow& row : rows) {
    steps = std::max(steps, row.max_new_tokens);
    flat.insert(flat.end(), row.prompt.begin(), row.prompt.end());
  }
  if (steps == 0) return;
  model::KVCache cache = model.make_cache(B, std::max<int64_t>(1, std::min(config.max_positions, L + steps)));
  torch::Tensor input = torch::tensor(flat, torch::kLong).view({B, L}).to(device);
  torch::Tensor logits = model.forward(input, &cache).select(1, L - 1);  // (B, V)

  std::vector<bool> done(static_cast<size_t>(B), false);
  std::vector<int64_t> previous(static_cast<size_t>(B)), generated(static_cast<size_t>(B), 0);
  std::vector<std::string> text(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) previous[static_cast<size_t>(b)] = rows[static_cast<size_t>(b)].prompt.back();
  const int64_t eos = tokenizer.eos_id();
  for (int64_t step = 0; step < steps; ++step) {
    torch::Tensor next = logits.argmax(-1);  // (B); finished rows keep decoding, ignored
    torch::Tensor next_cpu = next.to(torch::kCPU).contiguous();
    const int64_t* ids = next_cpu.data_ptr<int64_t>();
    bool all_done = true;
    for (size_t b = 0; b < static_cast<size_t>(B); ++b) {
      if (done[b]) continue;
      const GenerationRow& row = rows[b];
      const int64_t id = ids[b];
      if (eos >= 0 && id == eos) {
        done[b] = true;
        continue;
      }
      std::string& t = text[b];
      const size_t old_size = t.size();
      t += id < tokenizer.vocab_size() ? tokenizer.token_bytes(previous[b], id) : "";
      previous[b] = id;
      ++generated[b];
      // The earliest stop in the new bytes (a multi-byte stop may have begun in earlier ones).
      size_t cut = std::string::npos;
      const size_t newline = t.find('\n', old_size);
      if (newline != std::string::npos) cut = newline + 1;
      if (!row.stop.empty()) {
        const size_t from = old_size >= row.stop.size() - 1 ? old_size - (row.stop.size() - 1) : 0;
        const size_t found = t.find(row.stop, from);
        if (found != std::string::npos) cut = std::min(cut, found + row.stop.size());
      }
      if (cut != std::string::npos) {
        t.resize(cut);
        done[b] = true;
      } else if (generated[b] >= row.max_new_tokens) {
        done[b] = true;
      }
      all_done = all_done && done[b];
    }
    if (all_done || step + 1 == steps || cache.length >= config.max_positions) break;
    logits = model.forward(next.view({B, 1}), &cache).select(1, 0);
  }
  for (size_t b = 0; b < static_cast<size_t>(B); ++b) predictions[rows[b].example].predicted = std::move(text[b]);
}

void evaluate_generation(model::CausalLM& model, const io::Tokenizer& tokenizer,
                         const std::vector<data::Example>& examples, const EvalOptions& options,
                         torch::Device device, EvalResult& result) {
  std::vector<data::EncodedSequence> targets;
  targets.reserve(examples.size());
  // Rows grouped by prompt length: equal lengths need no padding and share a KV cache.
  std::map<int64_t, std::vector<GenerationRow>> by_length;
  for (size_t i = 0; i < examples.size(); ++i) {
    const data::Example& example = examples[i];
    targets.push_back(data::encode_for_training(tokenizer, example));
    GenerationRow row;
    row.example = i;
    row.prompt = io::prompt_tokens(tokenizer, example.prompt);
    row.max_new_tokens =
        options.max_new_tokens > 0 ? options.max_new_tokens : targets.back().completion_length() + 4;
    row.stop = last_character(example.completion);
    by_length[static_cast<int64_t>(row.prompt.size())].push_back(std::move(row));
    ExamplePrediction& prediction = result.predictions[i];
    prediction.prompt = example.prompt;
    prediction.expected = example.completion;
  }
  for (auto& [length, rows] : by_length) {
    const int64_t chunk = rows_per_forward(options.batch_size, length, model.config().vocab_size);
    for (size_t begin = 0; begin < rows.size(); begin += static_cast<size_t>(chunk)) {
      const size_t end = std::min(rows.size(), begin + static_cast<size_t>(chunk));
      std::vector<GenerationRow> batch(rows.begin() + static_cast<std::ptrdiff_t>(begin),
                                       rows.begin() + static_cast<std::ptrdiff_t>(end));
      decode_greedy(model, tokenizer, batch, device, result.predictions);
    }
  }
  int64_t correct = 0;
  for (ExamplePrediction& prediction : result.predictions) {
    prediction.correct = exact_match(prediction.predicted, prediction.expected);
    correct += prediction.correct ? 1 : 0;
  }
  result.score = static_cast<double>(correct) / static_cast<double>(examples.size());

  std::vector<const data::EncodedSequence*> pointers;
  int64_t token_count = 0;
  for (const data::EncodedSequence& sequence : targets) {
    pointers.push_back(&sequence);
    token_count += sequence.completion_length();
  }
  const std::vector<double> log_likelihoods = completion_log_likelihoods(model, pointers, options.batch_size, device);
  result.loss = -std::accumulate(log_likelihoods.begin(), log_likelihoods.end(), 0.0) / static_cast<double>(token_count);
}

void evaluate_choices(model::CausalLM& model, const io::Tokenizer& tokenizer, const std::vector<data::Example>& examples,
                      const EvalOptions& options, torch::Device device, EvalResult& result) {
  std::vector<std::vector<data::EncodedSequence>> encoded;
  encoded.reserve(examples.size());
  std::vector<const data::EncodedSequence*> pointers;
  for (const data::Example& example : examples) {
    encoded.push_back(data::encode_choices(tokenizer, example));
    for (const data::EncodedSequence& sequence : encoded.back()) pointers.push_back(&sequence);
  }
  const std::vector<double> scores = completion_log_likelihoods(model, pointers, options.batch_size, device);

  // The correct choice's sequence is exactly the one encode_for_training gives, so the loss
  // comes from the same forward passes.
  double correct_log_likelihood = 0;
  int64_t token_count = 0, correct = 0;
  std::vector<double> confidences;
  std::vector<bool> correctness;
  size_t offset = 0;
  for (size_t i = 0; i < examples.size(); ++i) {
    const data::Example& example = examples[i];
    const size_t choices = example.choices.size();
    const double* s = scores.data() + offset;
    const size_t best = static_cast<size_t>(std::max_element(s, s + choices) - s);  // first on ties
    double normaliser = 0;
    for (size_t c = 0; c < choices; ++c) normaliser += std::exp(s[c] - s[best]);
    const size_t label = static_cast<size_t>(example.label);
    correct_log_likelihood += s[label];
    token_count += encoded[i][label].completion_length();

    ExamplePrediction& prediction = result.predictions[i];
    prediction.prompt = example.prompt;
    prediction.expected = example.choices[label];
    prediction.predicted = example.choices[best];
    prediction.correct = best == label;
    prediction.confidence = 1.0 / normaliser;
    correct += prediction.correct ? 1 : 0;
    confidences.push_back(prediction.confidence);
    correctness.push_back(prediction.correct);
    offset += choices;
  }
  result.score = static_cast<double>(correct) / static_cast<double>(examples.size());
  result.loss = -correct_log_likelihood / static_cast<double>(token_count);
  result.ece = expected_calibration_error(confidences, correctness, kCalibrationBins);
}

}  // namespace

EvalResult evaluate(model::CausalLM& model, const io::Tokenizer& tokenizer, const std::vector<data::Example>& examples,
                    const EvalOptions& options) {
  SG_CHECK(options.max_examples >= 0, "--max-examples must be >= 0 (0 = all), got " << options.max_examples);
  SG_CHECK(options.batch_size >= 1, "--batch-size must be >= 1, got " << options.batch_size);
  SG_CHECK(options.max_new_tokens >= 0,
           "--max-new-tokens must be >= 0 (0 = the expected completion's length + 4), got " << options.max_new_tokens);
  const size_t n = options.max_examples > 0 ? std::min(examples.size(), static_cast<size_t>(options.max_examples))
                                            : examples.size();
  SG_CHECK(n > 0, "no examples to evaluate; hint: check the task's split");
  const std::vector<data::Example> selected(examples.begin(), examples.begin() + static_cast<std::ptrdiff_t>(n));
  const bool choice = selected[0].is_choice();
  for (const data::Example& example : selected) {
    SG_CHECK(example.is_choice() == choice,
             "the examples mix choice and generation examples; hint: evaluate each kind separately");
  }

  const auto start = std::chrono::steady_clock::now();
  // NoGradGuard rather than InferenceMode: tensors the model builds lazily during the forward
  // (the RoPE table) must stay usable by autograd when training resumes.
  torch::NoGradGuard no_grad;
  EvalModeGuard eval_mode(model);
  const torch::Device device = model_device(model);
  EvalResult result;
  result.n = static_cast<int64_t>(n);
  result.predictions.resize(n);
  if (choice) {
    result.metric = "choice_accuracy";
    evaluate_choices(model, tokenizer, selected, options, device, result);
  } else {
    result.metric = "exact_match";
    evaluate_generation(model, tokenizer, selected, options, device, result);
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace sg::eval
