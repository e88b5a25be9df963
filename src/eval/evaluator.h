// The evaluator: runs a model over task examples and scores it — exact match of greedy
// continuations (generation examples) or accuracy and calibration of log-likelihood choice
// scoring (choice examples) — plus the teacher-forced loss on the expected completions.
// Works for every architecture and tokenizer kind. Like the model, one thread at a time.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "data/task_file.h"
#include "io/tokenizer.h"
#include "model/causal_lm.h"

namespace sg::eval {

struct EvalOptions {
  int64_t max_examples = 0;    // 0: all
  int64_t batch_size = 64;     // rows per forward (greedy decoding and scoring)
  int64_t max_new_tokens = 0;  // 0: the expected completion's token count + 4
};

struct ExamplePrediction {
  std::string prompt, expected, predicted;
  bool correct = false;
  double confidence = std::numeric_limits<double>::quiet_NaN();  // choice examples; NaN otherwise
};

struct EvalResult {
  std::string metric;  // "exact_match" or "choice_accuracy"
  double score = 0;    // fraction correct
  int64_t n = 0;
  // Mean negative log-likelihood per completion token (the correct choice's for choice
  // examples), teacher-forced: summed over every token, divided by the token count.
  double loss = 0;
  double ece = std::numeric_limits<double>::quiet_NaN();  // choice examples only (15 bins)
  std::vector<ExamplePrediction> predictions;              // one per example, in input order
  double seconds = 0;
};

// Evaluates the first max_examples examples (all of one kind) under inference mode with the model
// in eval mode; the model's train/eval mode is restored afterwards, also when this throws.
//
// Generation: greedy decoding from io::prompt_tokens(prompt). A row stops at EOS, after the
// first generated token that completes a '\n' or the expected completion's last (UTF-8)
// character, or at max_new_tokens; `predicted` is the generated text cut right after that
// character, correct = exact_match(predicted, completion). Prompts of equal token length are
// decoded together, batch_size rows and one KV cache per batch, without padding.
// Choice: each choice's score is the sum of its tokens' log-probabilities after the prompt
// (right-padded batches); the prediction is the argmax (first on ties), confidence the softmax
// of the scores at the prediction; score = accuracy, plus ECE.
//
// Throws sg::Error for no examples, mixed kinds, bad options, a sequence longer than the
// model's context, or a completion that adds no token.
EvalResult evaluate(model::CausalLM& model, const io::Tokenizer& tokenizer,
                    const std::vector<data::Example>& examples, const EvalOptions& options);

}  // namespace sg::eval
