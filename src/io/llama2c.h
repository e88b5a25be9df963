// llama2.c checkpoints (.bin): the legacy float32 format (7-int header) and export version 1
// ("ak42" magic, float32), converted to HF Llama tensors and config. Version 2 (int8) is refused.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "io/state_dict.h"

namespace sg::io {

struct Llama2cHeader {
  int32_t dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0,
          seq_len = 0;
  bool shared_classifier = true;
  int version = 0;  // 0: legacy header, 1: "ak42" v1
};

struct Llama2cModel {
  Llama2cHeader header;
  nlohmann::json config;  // an HF LlamaForCausalLM config.json
  StateDict weights;      // HF names; q/k rows permuted from llama2.c's interleaved RoPE pairs
};

// Reads and validates a llama2.c checkpoint (sizes against the file length, header ranges).
Llama2cModel read_llama2c(const std::string& path);

// Reorders the rows of a q/k projection (heads * head_dim, in) from interleaved RoPE pairs
// (llama2.c, Meta) to HF's rotate-half halves: per head, even rows first, then odd rows.
at::Tensor permute_rope_rows(const at::Tensor& weight, int64_t num_heads);

}  // namespace sg::io
