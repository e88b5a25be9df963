// Task neurons: the FFN neurons whose activation on a task's inputs stands out against general
// text, the smallest set per layer that covers a share of that excess, the overlap (IoU) of the
// sets between tasks, and ablation (zeroing a set through the model's FFN hook) to measure what
// each set carries. Scoring a task is the caller's (a callback), so this file needs no evaluator.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/task_file.h"
#include "io/tokenizer.h"
#include "model/causal_lm.h"

namespace sg::skills {

// A token sequence of which the positions >= first_counted are measured (all positions see the
// whole prefix through attention; only the counted ones enter the mean).
struct MeasuredSequence {
  std::vector<int64_t> tokens;
  int64_t first_counted = 0;
};

// Neuron indices per layer, each list sorted ascending.
using NeuronSets = std::vector<std::vector<int64_t>>;

// mean_abs[l]: (I) float64, the mean |activation| of each FFN neuron of layer l over the counted
// positions of every sequence.
struct NeuronActivations {
  std::vector<at::Tensor> mean_abs;
  int64_t positions = 0;
};

// Runs the model over `sequences` (right-padded batches of batch_size, under inference mode,
// in eval mode, restored afterwards) with a recording FFN hook. Throws when no position is counted
// or a sequence is longer than the model's context. The model's own ffn_hook must be empty.
NeuronActivations mean_ffn_activations(model::CausalLM& model, const std::vector<MeasuredSequence>& sequences,
                                       int64_t batch_size = 32);

// A task's inputs as measured sequences: each example's prompt + completion (its correct choice for
// choice examples), counting the positions that predict the completion (the prompt's last token
// through the completion's second-to-last): where the model is producing the task's answer.
// The first max_examples examples (0: all).
std::vector<MeasuredSequence> answer_sequences(const io::Tokenizer& tokenizer, const std::vector<data::Example>& examples,
                                               int64_t max_examples);

// General text the base writes unprompted: `samples` generations from BOS (temperature 1, seeds
// seed, seed + 1, ...) of up to `tokens` tokens, decoded with the base's tokenizer and re-encoded
// with `tokenizer` (the measured model's; cut to BOS + `tokens`), every position counted. Throws
// when nothing was generated.
std::vector<MeasuredSequence> generated_sequences(model::CausalLM& base, const io::Tokenizer& base_tokenizer,
                                                  const io::Tokenizer& tokenizer, int64_t samples, int64_t tokens,
                                                  uint64_t seed);

// General text from a plain-text corpus: its first kReferenceBytes bytes tokenized, cut into up to
// `samples` windows of `tokens` tokens, each after BOS (where the tokenizer has one), every position
// counted. Throws for an unreadable file or one with no tokens, naming --reference.
constexpr size_t kReferenceBytes = 1 << 20;
std::vector<MeasuredSequence> reference_sequences(const std::string& path, const io::Tokenizer& tokenizer,
                                                  int64_t samples, int64_t tokens);

// s(n) = max(0, task(n) − general(n)): how much more a neuron fires on the task than on general
// text, in the activation's own units. A difference rather than a ratio: a ratio ranks neurons that
// are near zero everywhere as high as the ones that carry the task, and the difference's mass is
// what zeroing the neuron removes from the FFN's input to its output projection.
at::Tensor standout(const at::Tensor& task_mean, const at::Tensor& general_mean);

// The smallest set of neurons, taken by descending standout (ties: lower index first), whose
// standout sum reaches coverage × the total standout; sorted ascending. Empty when the total is 0.
// coverage in (0, 1]; standout: (I), >= 0.
std::vector<int64_t> coverage_set(const at::Tensor& standout, double coverage);

// The sets of one task, per layer: coverage_set(standout(task[l], general[l])).
NeuronSets task_neuron_sets(const NeuronActivations& task, const NeuronActivations& general, double coverage);

// |a ∩ b| / |a ∪ b| of two sorted index lists; 1 when both are empty (the sets are identical).
double iou(const std::vector<int64_t>& a, const std::vector<int64_t>& b);

// For each layer, as many distinct neurons as like[l] has, drawn uniformly from [0, width) with
// the seed (the same on every platform); sorted ascending.
NeuronSets random_neuron_sets(const NeuronSets& like, int64_t width, uint64_t seed);

// An FFN hook that zeroes the given neurons of each layer (layers past sets.size(): none).
model::FfnHook ablation_hook(const NeuronSets& sets);

// What a task scores on the model as it is when called: score (higher is better) and loss.
struct TaskMeasure {
  double score = 0;
  double loss = 0;
};
using TaskMeasureFn = std::function<TaskMeasure(model::CausalLM& model, size_t task)>;

struct AblationResult {
  std::vector<TaskMeasure> intact;                 // [task], no ablation
  std::vector<std::vector<TaskMeasure>> ablated;   // [target][task], the target's sets zeroed
  std::vector<TaskMeasure> random_control;         // [target], on the target, random sets of its sizes zeroed
};

// For each target t: every task measured with sets[t] zeroed, and the target measured with
// random_neuron_sets(sets[t], width, seed + t) zeroed. The model's ffn_hook is cleared on return
// (also when measuring throws).
AblationResult run_ablations(model::CausalLM& model, const std::vector<NeuronSets>& sets, int64_t width,
                             uint64_t seed, const TaskMeasureFn& measure);

}  // namespace sg::skills
