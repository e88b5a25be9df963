// skillgraft convert: llama2.c checkpoint (or an HF directory) -> HF model directory.
#include <torch/torch.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/flags.h"
#include "io/hf_checkpoint.h"
#include "io/llama2c.h"
#include "io/tokenizer.h"
#include "model/causal_lm.h"
#include "util/error.h"
#include "util/log.h"

namespace sg::cli {

nlohmann::json convert_llama2c(const std::string& model_path, const std::string& tokenizer_path,
                               const std::string& out_dir, uint64_t max_shard_bytes) {
  io::Llama2cModel source = io::read_llama2c(model_path);
  auto tokenizer = io::load_llama2c_tokenizer(tokenizer_path, source.header.vocab_size);
  // Load into a model first: a checkpoint that does not make a working model is never written.
  model::ModelConfig config = model::config_from_json(source.config, model_path);
  auto model = model::create_model_from_weights(config, source.weights, model_path);
  model::save_model_dir(out_dir, *model, tokenizer.get(), max_shard_bytes);
  return {{"parameters", model::parameter_count(config)}, {"llama2c_version", source.header.version}};
}

int run_convert(const std::vector<std::string>& args) {
  std::string from, input, tokenizer_path, out;
  int64_t max_shard_mb = 0;
  CommonOptions common;
  FlagSet flags("convert", "skillgraft convert --from llama2c MODEL.bin --tokenizer TOK.bin --out DIR",
                "Converts a checkpoint into an HF model directory (config.json, model.safetensors,\n"
                "tokenizer) that every other verb reads and Python's HF libraries load.\n"
                "--from llama2c reads a llama2.c .bin (float32, legacy or version 1) and its\n"
                "tokenizer.bin; --from hf re-saves an HF directory (e.g. to shard it).");
  flags.add_string("from", &from, "source format: llama2c or hf", true);
  flags.add_positional("INPUT", &input, "the checkpoint: a llama2.c .bin, or an HF directory");
  flags.add_string("tokenizer", &tokenizer_path, "llama2.c tokenizer.bin (required for --from llama2c)");
  flags.add_string("out", &out, "output model directory (created if missing)", true);
  flags.add_int("max-shard-mb", &max_shard_mb, "shard the weights into files of at most this many MB (0 = one file)");
  flags.add_common(&common.threads, &common.json_path, &common.quiet);
  if (!flags.parse(args)) return 0;
  apply_common(common);
  SG_CHECK(max_shard_mb >= 0, "--max-shard-mb must be >= 0, got " << max_shard_mb);
  const uint64_t shard_bytes = static_cast<uint64_t>(max_shard_mb) * 1000 * 1000;

  nlohmann::json result = {{"out", out}, {"from", from}};
  if (from == "llama2c") {
    SG_CHECK(!tokenizer_path.empty(), "--from llama2c needs --tokenizer TOK.bin (llama2.c's tokenizer.bin); "
                                      "hint: data/models/tok512.bin goes with stories260K.bin");
    result.update(convert_llama2c(input, tokenizer_path, out, shard_bytes));
  } else if (from == "hf") {
    model::LoadedModel loaded = model::load_model_dir(input);
    model::save_model_dir(out, *loaded.model, loaded.tokenizer.get(), shard_bytes);
    result["parameters"] = model::parameter_count(loaded.config);
  } else {
    SG_FAIL("--from must be llama2c or hf, got \"" << from << "\"");
  }
  util::log_info("wrote " + out + " (" + std::to_string(result["parameters"].get<int64_t>()) + " parameters)");
  write_json_output(common, result);
  return 0;
}

}  // namespace sg::cli
