#include "data/batching.h"

#include <torch/torch.h>

#include <algorithm>

#include "util/error.h"

namespace sg::data {

EncodedSequence encode_completion(const io::Tokenizer& tokenizer, const std::string& prompt,
                                  const std::string& completion) {
  const std::vector<int64_t> prompt_ids = io::prompt_tokens(tokenizer, prompt);
  EncodedSequence sequence;
  sequence.tokens = io::prompt_tokens(tokenizer, prompt + completion);
  const size_t limit = std::min(prompt_ids.size(), sequence.tokens.size());
  size_t common = 0;
  while (common < limit && prompt_ids[common] == sequence.tokens[common]) ++common;
  // The first token always stays context, so there is something to predict from.
  sequence.completion_start = static_cast<int64_t>(std::max<size_t>(common, 1));
  SG_CHECK(sequence.completion_length() > 0,
           "the completion \"" << completion << "\" of prompt \"" << prompt
                               << "\" adds no token; hint: give every example a non-empty completion");
  return sequence;
}

EncodedSequence encode_for_training(const io::Tokenizer& tokenizer, const Example& example) {
  if (example.is_choice()) {
    return encode_completion(tokenizer, example.prompt, example.choices.at(static_cast<size_t>(example.label)));
  }
  return encode_completion(tokenizer, example.prompt, example.completion);
}

std::vector<EncodedSequence> encode_for_training(const io::Tokenizer& tokenizer, const std::vector<Example>& examples) {
  std::vector<EncodedSequence> sequences;
  sequences.reserve(examples.size());
  for (const Example& example : examples) sequences.push_back(encode_for_training(tokenizer, example));
  return sequences;
}

std::vector<EncodedSequence> encode_choices(const io::Tokenizer& tokenizer, const Example& example) {
  std::vector<EncodedSequence> sequences;
  sequences.reserve(example.choices.size());
  for (const std::string& choice : example.choices) {
    sequences.push_back(encode_completion(tokenizer, example.prompt, choice));
  }
  return sequences;
}

Batch make_batch(const std::vector<const EncodedSequence*>& sequences, int64_t max_positions) {
  SG_CHECK(!sequences.empty(), "make_batch: no sequences");
  int64_t longest = 0;
  for (const EncodedSequence* sequence : sequences) {
    const int64_t length = static_cast<int64_t>(sequence->tokens.size());
    SG_CHECK(length - 1 <= max_positions,
             "an example is " << length << " tokens but the model's context is " << max_positions
                              << " tokens; hint: shorten the prompt or use a model with a longer context");
    longest = std::max(longest, length);
  }
  const int64_t batch = static_cast<int64_t>(sequences.size());
  const int64_t steps = std::max<int64_t>(longest - 1, 1);
  Batch result;
  result.inputs = torch::zeros({batch, steps}, torch::kLong);
  result.targets = torch::full({batch, steps}, kIgnoreTarget, torch::kLong);
  auto inputs = result.inputs.accessor<int64_t, 2>();
  auto targets = result.targets.accessor<int64_t, 2>();
  for (int64_t b = 0; b < batch; ++b) {
    const EncodedSequence& sequence = *sequences[static_cast<size_t>(b)];
    const int64_t length = static_cast<int64_t>(sequence.tokens.size());
    for (int64_t t = 0; t + 1 < length; ++t) {
      inputs[b][t] = sequence.tokens[static_cast<size_t>(t)];
      if (t + 1 >= sequence.completion_start) {
        targets[b][t] = sequence.tokens[static_cast<size_t>(t + 1)];
        ++result.target_count;
      }
    }
    if (length == 1) inputs[b][0] = sequence.tokens[0];
  }
  return result;
}

}  // namespace sg::data
