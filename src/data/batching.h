// Task examples as token sequences with the span that carries the loss, and padded batches of
// them for training and scoring. Tokenization only; no model here.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "data/task_file.h"
#include "io/tokenizer.h"

namespace sg::data {

// prompt (with BOS where the tokenizer adds one) followed by the completion. Tokens at
// positions >= completion_start are the completion: the loss is taken on predicting them.
struct EncodedSequence {
  std::vector<int64_t> tokens;
  int64_t completion_start = 0;
  int64_t completion_length() const { return static_cast<int64_t>(tokens.size()) - completion_start; }
};

// The prompt and completion tokenized together (so the completion's tokens are the ones the
// model would produce after the prompt), split where the prompt's own tokens end. Where the
// tokenizer merges across that boundary, the completion starts at the first token that differs.
// Throws when the completion adds no token.
EncodedSequence encode_completion(const io::Tokenizer& tokenizer, const std::string& prompt,
                                  const std::string& completion);

// The sequence an example is trained on: its completion, or its correct choice.
EncodedSequence encode_for_training(const io::Tokenizer& tokenizer, const Example& example);

// encode_for_training over a whole split.
std::vector<EncodedSequence> encode_for_training(const io::Tokenizer& tokenizer, const std::vector<Example>& examples);

// One sequence per choice of a choice example.
std::vector<EncodedSequence> encode_choices(const io::Tokenizer& tokenizer, const Example& example);

// Next-token prediction over padded sequences.
struct Batch {
  at::Tensor inputs;   // (B, T) int64: tokens[0 .. T-1], padded with 0
  at::Tensor targets;  // (B, T) int64: the next token where it is a completion token, else -100
  int64_t target_count = 0;  // targets that are not -100
};
constexpr int64_t kIgnoreTarget = -100;

// T = longest sequence - 1. Throws when a sequence is longer than max_positions + 1 (the model's
// context plus the predicted last token), naming its length and the limit.
Batch make_batch(const std::vector<const EncodedSequence*>& sequences, int64_t max_positions);

}  // namespace sg::data
