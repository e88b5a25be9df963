// skillgraft pretrain: train a base model of your own from text files.
#include <cstdio>

#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/train_flags.h"
#include "train/pretrain.h"
#include "util/error.h"
#include "util/file.h"

namespace sg::cli {

int run_pretrain(const std::vector<std::string>& args) {
  std::string corpus, config = "tiny", tokenizer_dir, out_dir;
  int64_t block = 256;
  double validation_fraction = 0.05;
  TrainFlags train_flags;
  train_flags.optimizer = "adamw";  // from scratch, AdamW converges far faster than SGD
  train_flags.steps = 1000;
  train_flags.batch_size = 8;
  train_flags.eval_every = 100;
  train_flags.checkpoint_every = 100;
  CommonOptions common;
  FlagSet flags("pretrain", "skillgraft pretrain --corpus FILE[,FILE...] --out DIR [options]",
                "Trains a fresh Llama-architecture model on text files (documents separated by blank lines),\n"
                "learning every next token. The best model by held-out loss is kept in --out as an HF model\n"
                "directory with its tokenizer; --resume continues an interrupted run exactly.");
  flags.add_string("corpus", &corpus, "text files, comma-separated", true);
  flags.add_string("out", &out_dir, "output directory", true);
  flags.add_string("config", &config, "tiny (260K-style), small (C 288, 6 layers) or a config.json path");
  flags.add_string("tokenizer", &tokenizer_dir, "model directory whose tokenizer to use, or 'byte'; default: tok512");
  flags.add_int("block", &block, "tokens per training sequence (capped at the context)");
  flags.add_double("validation-fraction", &validation_fraction, "share of blocks held out for the validation loss");
  add_train_flags(flags, &train_flags);
  flags.add_common(&common.threads, &common.json_path, &common.quiet);
  if (!flags.parse(args)) return 0;
  apply_common(common);

  train::PretrainOptions options;
  options.corpus = split_comma_list(corpus);
  for (const std::string& file : options.corpus) {
    SG_CHECK(util::file_exists(file), "--corpus: " << file << " does not exist");
  }
  options.config = config;
  options.tokenizer_dir = tokenizer_dir;
  options.default_tokenizer = util::join_path(default_data_dir(), "models/tok512.bin");
  options.out_dir = out_dir;
  options.block_length = block;
  options.validation_fraction = validation_fraction;
  options.train = to_train_options(train_flags);
  train::PretrainResult result = train::pretrain(options);
  std::printf("pretrained %lld parameters: best validation loss %.4f at step %lld of %lld; %.0f tokens/s -> %s\n",
              static_cast<long long>(result.parameters), result.best_validation_loss,
              static_cast<long long>(result.train.best_step), static_cast<long long>(result.train.steps),
              result.train.tokens_per_second, out_dir.c_str());
  write_json_output(common, {{"out", out_dir},
                             {"parameters", result.parameters},
                             {"best_validation_loss", result.best_validation_loss},
                             {"best_step", result.train.best_step},
                             {"steps", result.train.steps},
                             {"train_blocks", result.train_blocks},
                             {"validation_blocks", result.validation_blocks},
                             {"tokens_per_second", result.train.tokens_per_second},
                             {"log", result.train.log}});
  return 0;
}

}  // namespace sg::cli
