#include "model/causal_lm.h"

#include <torch/torch.h>

#include <cstdio>
#include <set>

#include "io/hf_checkpoint.h"
#include "model/gpt2.h"
#include "model/layers.h"
#include "model/llama.h"
#include "util/error.h"
#include "util/file.h"

namespace sg::model {

namespace {

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

// The model's name for a checkpoint tensor, or "" for a known non-parameter to skip.
std::string canonical_name(const ModelConfig& config, const std::string& name) {
  if (config.architecture == Architecture::kGpt2) {
    // Causal-mask buffers that older GPT-2 checkpoints store.
    if (ends_with(name, ".attn.bias") || ends_with(name, ".attn.masked_bias")) return "";
    if (name == "lm_head.weight") return "";  // tied to wte
    if (!starts_with(name, "transformer.")) return "transformer." + name;
    return name;
  }
  if (ends_with(name, ".rotary_emb.inv_freq")) return "";  // older Llama checkpoints store it
  if (name == "lm_head.weight" && config.tie_word_embeddings) return "";
  return name;
}

const char* kTokenizerFiles[] = {"skillgraft_tokenizer.json", "tokenizer.json", "vocab.json"};

}  // namespace

KVCache CausalLM::make_cache(int64_t batch, int64_t capacity) const {
  SG_CHECK(capacity > 0 && capacity <= config_.max_positions,
           "KV cache capacity " << capacity << " is outside 1.." << config_.max_positions
                                << " (the model's context)");
  torch::Tensor reference = parameters().front();
  KVCache cache;
  for (int64_t i = 0; i < config_.num_layers; ++i) {
    cache.keys.push_back(torch::empty({batch, config_.num_kv_heads, capacity, config_.head_dim},
                                      reference.options().requires_grad(false)));
    cache.values.push_back(torch::empty_like(cache.keys.back()));
  }
  return cache;
}

int64_t CausalLM::check_forward_input(const torch::Tensor& tokens, const KVCache* cache) const {
  SG_CHECK(tokens.dim() == 2, "forward: tokens must be (B, T), got " << tokens.dim() << " dims");
  SG_CHECK(tokens.scalar_type() == torch::kLong, "forward: tokens must be int64, got " << tokens.scalar_type());
  const int64_t past = cache != nullptr ? cache->length : 0;
  SG_CHECK(past + tokens.size(1) <= config_.max_positions,
           "forward: " << past + tokens.size(1) << " positions exceed the model's context of "
                       << config_.max_positions << "; hint: shorten the input");
  if (tokens.numel() > 0) {
    const int64_t low = tokens.min().item<int64_t>(), high = tokens.max().item<int64_t>();
    SG_CHECK(low >= 0 && high < config_.vocab_size,
             "forward: token id " << (low < 0 ? low : high) << " is outside the vocabulary of "
                                  << config_.vocab_size << "; hint: does the tokenizer belong to this model?");
  }
  return past;
}

std::shared_ptr<CausalLM> create_model(const ModelConfig& config) {
  if (config.architecture == Architecture::kGpt2) return std::make_shared<Gpt2LMHeadModel>(config);
  return std::make_shared<LlamaForCausalLM>(config);
}

std::shared_ptr<CausalLM> create_model_from_weights(const ModelConfig& config, const io::StateDict& weights,
                                                    const std::string& source) {
  std::shared_ptr<CausalLM> model;
  {
    SkipWeightInit skip;
    model = create_model(config);
  }
  load_model_weights(*model, weights, source);
  return model;
}

io::StateDict model_state_dict(const CausalLM& model) { return model.named_parameters(true); }

void load_model_weights(CausalLM& model, const io::StateDict& weights, const std::string& source) {
  const ModelConfig& config = model.config();
  io::StateDict parameters = model.named_parameters(true);
  std::set<std::string> loaded;
  torch::NoGradGuard no_grad;
  for (const auto& item : weights) {
    std::string name = canonical_name(config, item.key());
    if (name.empty()) continue;
    torch::Tensor* parameter = parameters.find(name);
    if (parameter == nullptr) {
      SG_CHECK(!(name == "lm_head.weight" && config.architecture == Architecture::kLlama),
               source << ": has lm_head.weight but config.json says tie_word_embeddings; "
                         "hint: set tie_word_embeddings to false");
      SG_FAIL(source << ": unexpected tensor \"" << item.key() << "\" for a "
                     << config.model_type << " model of this config; hint: maybe a different "
                     << "architecture, or config.json does not match the weights?");
    }
    const torch::Tensor& value = item.value();
    SG_CHECK(value.sizes() == parameter->sizes(),
             source << ": tensor \"" << item.key() << "\" has shape " << value.sizes()
                    << " but the config implies " << parameter->sizes()
                    << "; hint: does config.json belong to these weights?");
    SG_CHECK(at::isFloatingType(value.scalar_type()),
             source << ": tensor \"" << item.key() << "\" has non-float dtype "
                    << value.scalar_type() << "; hint: quantized checkpoints are not supported");
    if (value.scalar_type() == parameter->scalar_type() && value.is_contiguous() &&
        value.device() == parameter->device()) {
      parameter->set_data(value);  // zero-copy: the mapping is private copy-on-write
    } else {
      parameter->copy_(value);
    }
    loaded.insert(name);
  }
  for (const auto& item : parameters) {
    SG_CHECK(loaded.count(item.key()) == 1,
             source << ": missing tensor \"" << item.key() << "\" (" << loaded.size() << " of "
                    << parameters.size() << " parameters found); hint: is a shard missing, or is "
                    << "this checkpoint of another architecture?");
  }
}

LoadedModel load_model_dir(const std::string& dir) {
  io::HfCheckpoint checkpoint = io::read_hf_checkpoint(dir);
  LoadedModel loaded;
  std::string config_path = util::join_path(dir, "config.json");
  loaded.config = config_from_json(checkpoint.config, config_path);
  if (loaded.config.architecture == Architecture::kLlama && !loaded.config.tie_word_embeddings &&
      !checkpoint.weights.contains("lm_head.weight") &&
      !checkpoint.config.contains("tie_word_embeddings")) {
    loaded.config.tie_word_embeddings = true;  // older configs leave tying implicit
  }
  loaded.model = create_model_from_weights(loaded.config, checkpoint.weights, dir);
  loaded.model->eval();
  for (const char* name : kTokenizerFiles) {
    if (!util::file_exists(util::join_path(dir, name))) continue;
    loaded.tokenizer = io::load_tokenizer(dir);
    SG_CHECK(loaded.tokenizer->vocab_size() <= loaded.config.vocab_size,
             util::join_path(dir, name) << ": tokenizer has " << loaded.tokenizer->vocab_size()
                                        << " tokens but the model's vocabulary has "
                                        << loaded.config.vocab_size
                                        << "; hint: this tokenizer belongs to another model");
    break;
  }
  return loaded;
}

void save_model_dir(const std::string& dir, const CausalLM& model, const io::Tokenizer* tokenizer,
                    uint64_t max_shard_bytes) {
  io::write_hf_checkpoint(dir, config_to_json(model.config()), model_state_dict(model), max_shard_bytes);
  if (tokenizer == nullptr) return;
  // A tokenizer file left from an earlier save could take precedence over the one written now.
  for (const char* name : {"skillgraft_tokenizer.json", "tokenizer.json", "vocab.json", "merges.txt"}) {
    std::remove(util::join_path(dir, name).c_str());
  }
  tokenizer->save(dir);
}

}  // namespace sg::model
