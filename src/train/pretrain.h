// Pretraining a base model from text files with the shared trainer: the corpus is tokenized into
// one stream (BOS before each document), cut into fixed-length blocks, and the model learns every
// next token; the best model by held-out loss is kept.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "data/batching.h"
#include "io/tokenizer.h"
#include "model/causal_lm.h"
#include "model/config.h"
#include "train/trainer.h"

namespace sg::train {

// "tiny" (stories260K's shape: C 64, 5 layers, 8 heads, 4 KV heads) or "small" (C 288, 6
// layers, 6 heads), with the tokenizer's vocabulary; anything else is read as a config.json path.
model::ModelConfig pretrain_config(const std::string& spec, int64_t vocab_size, int64_t bos_id, int64_t eos_id);

// Documents are separated by blank lines. Each becomes BOS (when the tokenizer has one) + its
// tokens; the stream is cut into blocks of block_length + 1 tokens (the last partial block is
// dropped). Throws when the files yield no full block, naming the files and the token count.
std::vector<data::EncodedSequence> corpus_blocks(const io::Tokenizer& tokenizer, const std::vector<std::string>& files,
                                                 int64_t block_length);

struct PretrainOptions {
  std::vector<std::string> corpus;
  std::string config = "tiny";
  std::string tokenizer_dir;       // a model directory whose tokenizer to use; empty: the embedded tok512
  std::string default_tokenizer;   // path of tok512.bin (the embedded default)
  std::string out_dir;
  int64_t block_length = 256;      // tokens per training sequence (capped by the context)
  double validation_fraction = 0.05;
  TrainOptions train;              // run_dir and identity are filled in
};

struct PretrainResult {
  TrainResult train;
  model::ModelConfig config;
  int64_t parameters = 0;
  int64_t train_blocks = 0, validation_blocks = 0;
  double best_validation_loss = 0;
};

// Trains a fresh model; writes the best (lowest validation loss) to out_dir as an HF model
// directory with its tokenizer, plus training.json.
PretrainResult pretrain(const PretrainOptions& options);

// Mean next-token loss of the model over the sequences' completion tokens (no gradients).
double mean_loss(model::CausalLM& model, const std::vector<data::EncodedSequence>& sequences, int64_t batch_size);

}  // namespace sg::train
