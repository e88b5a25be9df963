#include "train/pretrain.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "io/fingerprint.h"
#include "io/hf_checkpoint.h"
#include "train/checkpoint.h"
#include "util/error.h"
#include "util/file.h"
#include "util/log.h"

namespace sg::train {

namespace {

model::ModelConfig named_config(const std::string& name) {
  model::ModelConfig config;
  config.architecture = model::Architecture::kLlama;
  config.model_type = "llama";
  config.max_positions = 512;
  config.tie_word_embeddings = true;
  if (name == "tiny") {
    config.hidden_size = 64;
    config.intermediate_size = 172;
    config.num_layers = 5;
    config.num_heads = 8;
    config.num_kv_heads = 4;
  } else {
    config.hidden_size = 288;
    config.intermediate_size = 768;
    config.num_layers = 6;
    config.num_heads = 6;
    config.num_kv_heads = 6;
  }
  config.head_dim = config.hidden_size / config.num_heads;
  return config;
}

// Splits text into documents at blank lines.
std::vector<std::string> documents_of(const std::string& text) {
  std::vector<std::string> documents;
  std::string current;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(start, end - start);
    if (line.find_first_not_of(" \t\r") == std::string::npos) {
      if (!current.empty()) documents.push_back(current);
      current.clear();
    } else {
      current += current.empty() ? line : "\n" + line;
    }
    start = end + 1;
  }
  if (!current.empty()) documents.push_back(current);
  return documents;
}

}  // namespace

model::ModelConfig pretrain_config(const std::string& spec, int64_t vocab_size, int64_t bos_id, int64_t eos_id) {
  model::ModelConfig config;
  if (spec == "tiny" || spec == "small") {
    config = named_config(spec);
    config.vocab_size = vocab_size;
    config.bos_token_id = bos_id;
    config.eos_token_id = eos_id;
    config.original = model::config_to_json(config);
    config = model::config_from_json(config.original, spec);
  } else {
    SG_CHECK(util::file_exists(spec), "--config '" << spec << "' is neither tiny, small nor a config.json file");
    config = model::config_from_json(io::read_json_file(spec), spec);
  }
  SG_CHECK(config.vocab_size >= vocab_size, "--config " << spec << ": vocab_size " << config.vocab_size
                                                        << " is smaller than the tokenizer's " << vocab_size
                                                        << "; hint: set vocab_size to at least " << vocab_size);
  return config;
}

std::vector<data::EncodedSequence> corpus_blocks(const io::Tokenizer& tokenizer, const std::vector<std::string>& files,
                                                 int64_t block_length) {
  SG_CHECK(!files.empty(), "--corpus needs at least one text file");
  SG_CHECK(block_length >= 2, "--block must be >= 2, got " << block_length);
  std::vector<int64_t> stream;
  for (const std::string& file : files) {
    for (const std::string& document : documents_of(util::read_file(file))) {
      if (tokenizer.bos_id() >= 0) stream.push_back(tokenizer.bos_id());
      const std::vector<int64_t> ids = tokenizer.encode(document);
      stream.insert(stream.end(), ids.begin(), ids.end());
    }
  }
  const auto span = static_cast<size_t>(block_length + 1);
  SG_CHECK(stream.size() >= span, "the corpus (" << files.size() << " file(s), first " << files.front() << ") is "
                                                 << stream.size() << " tokens, less than one block of " << span
                                                 << "; hint: give more text or a smaller --block");
  std::vector<data::EncodedSequence> blocks;
  for (size_t start = 0; start + span <= stream.size(); start += span) {
    data::EncodedSequence block;
    block.tokens.assign(stream.begin() + static_cast<std::ptrdiff_t>(start),
                        stream.begin() + static_cast<std::ptrdiff_t>(start + span));
    block.completion_start = 1;
    blocks.push_back(std::move(block));
  }
  return blocks;
}

double mean_loss(model::CausalLM& model, const std::vector<data::EncodedSequence>& sequences, int64_t batch_size) {
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  double total = 0;
  int64_t count = 0;
  for (size_t start = 0; start < sequences.size(); start += static_cast<size_t>(batch_size)) {
    std::vector<const data::EncodedSequence*> chunk;
    for (size_t i = start; i < std::min(sequences.size(), start + static_cast<size_t>(batch_size)); ++i) {
      chunk.push_back(&sequences[i]);
    }
    data::Batch batch = data::make_batch(chunk, model.config().max_positions);
    total += batch_loss_sum(model, batch).item<double>();
    count += batch.target_count;
  }
  model.train(was_training);
  return count > 0 ? total / static_cast<double>(count) : 0;
}

PretrainResult pretrain(const PretrainOptions& options) {
  SG_CHECK(!options.out_dir.empty(), "--out is required: the directory for the pretrained model");
  SG_CHECK(options.validation_fraction >= 0 && options.validation_fraction < 1,
           "--validation-fraction must be in [0, 1), got " << options.validation_fraction);
  std::unique_ptr<io::Tokenizer> tokenizer;
  if (!options.tokenizer_dir.empty()) {
    tokenizer = options.tokenizer_dir == "byte" ? io::make_byte_tokenizer() : io::load_tokenizer(options.tokenizer_dir);
  } else {
    SG_CHECK(util::file_exists(options.default_tokenizer),
             "the embedded tokenizer " << options.default_tokenizer << " is missing; hint: pass --tokenizer MODEL_DIR");
    tokenizer = io::load_llama2c_tokenizer(options.default_tokenizer, 512);
  }
  PretrainResult result;
  result.config = pretrain_config(options.config, tokenizer->vocab_size(), tokenizer->bos_id(), tokenizer->eos_id());
  const int64_t block = std::min(options.block_length, result.config.max_positions);
  std::vector<data::EncodedSequence> blocks = corpus_blocks(*tokenizer, options.corpus, block);
  auto validation_count = static_cast<size_t>(std::llround(options.validation_fraction * static_cast<double>(blocks.size())));
  if (options.validation_fraction > 0 && blocks.size() > 1) validation_count = std::max<size_t>(validation_count, 1);
  std::vector<data::EncodedSequence> validation(blocks.end() - static_cast<std::ptrdiff_t>(validation_count), blocks.end());
  blocks.resize(blocks.size() - validation_count);
  result.train_blocks = static_cast<int64_t>(blocks.size());
  result.validation_blocks = static_cast<int64_t>(validation.size());

  torch::manual_seed(options.train.seed);
  std::shared_ptr<model::CausalLM> model = model::create_model(result.config);
  io::StateDict trainable = model::model_state_dict(*model);
  for (const auto& item : trainable) result.parameters += item.value().numel();
  uint64_t corpus_hash = 0;
  for (const data::EncodedSequence& sequence : blocks) {
    corpus_hash = io::hash_bytes(sequence.tokens.data(), sequence.tokens.size() * sizeof(int64_t), corpus_hash);
  }
  TrainOptions train_options = options.train;
  train_options.run_dir = options.out_dir;
  train_options.target_score = std::numeric_limits<double>::infinity();
  train_options.identity = {{"config", model::config_to_json(result.config)},
                            {"corpus_tokens_hash", std::to_string(corpus_hash)},
                            {"tokenizer", tokenizer->kind()},
                            {"optimizer", optimizer_kind_name(options.train.optimizer.kind)},
                            {"batch_size", options.train.batch_size},
                            {"grad_accum", options.train.grad_accum},
                            {"block", block},
                            {"seed", options.train.seed}};
  util::make_directories(options.out_dir);
  util::log_info("pretraining " + std::to_string(result.parameters) + " parameters on " +
                 std::to_string(blocks.size()) + " blocks of " + std::to_string(block) + " tokens (" +
                 std::to_string(validation.size()) + " held out)");
  const std::vector<data::EncodedSequence>& scored = validation.empty() ? blocks : validation;
  TrainHooks hooks;
  hooks.evaluate = [&]() { return -mean_loss(*model, scored, options.train.batch_size); };
  hooks.save_best = [&](int64_t, double) { model::save_model_dir(options.out_dir, *model, tokenizer.get()); };
  result.train = train(*model, trainable, blocks, train_options, hooks);
  result.best_validation_loss = -result.train.best_score;
  nlohmann::json record = {{"parameters", result.parameters},
                           {"config", model::config_to_json(result.config)},
                           {"train_blocks", result.train_blocks},
                           {"validation_blocks", result.validation_blocks},
                           {"best_validation_loss", result.best_validation_loss},
                           {"best_step", result.train.best_step},
                           {"steps", result.train.steps},
                           {"tokens_per_second", result.train.tokens_per_second},
                           {"log", result.train.log}};
  io::write_json_file(util::join_path(options.out_dir, "training.json"), record);
  remove_train_checkpoint(options.out_dir);
  return result;
}

}  // namespace sg::train
