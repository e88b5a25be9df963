// skillgraft inspect: what a safetensors file or a model directory holds.
#include <torch/torch.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/flags.h"
#include "io/safetensors.h"
#include "model/causal_lm.h"
#include "util/error.h"
#include "util/file.h"

namespace sg::cli {

namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

nlohmann::json inspect_file(const std::string& path) {
  io::SafetensorsFile file = io::SafetensorsFile::open(path);
  nlohmann::json tensors = nlohmann::json::array();
  std::printf("%s\n", path.c_str());
  for (const auto& [key, value] : file.metadata()) std::printf("  metadata %s = %s\n", key.c_str(), value.c_str());
  for (const io::TensorEntry& e : file.entries()) {
    std::printf("  %-60s %-5s %-20s %llu bytes\n", e.name.c_str(), e.dtype.c_str(), shape_text(e.shape).c_str(),
                static_cast<unsigned long long>(e.end - e.begin));
    tensors.push_back({{"name", e.name}, {"dtype", e.dtype}, {"shape", e.shape}, {"bytes", e.end - e.begin}});
  }
  return {{"path", path}, {"metadata", file.metadata()}, {"tensors", tensors}};
}

nlohmann::json inspect_model(const std::string& dir) {
  model::LoadedModel loaded = model::load_model_dir(dir);
  const model::ModelConfig& c = loaded.config;
  std::printf("%s: %s, %lld parameters\n", dir.c_str(), c.model_type.c_str(),
              static_cast<long long>(model::parameter_count(c)));
  std::printf("  hidden %lld, layers %lld, heads %lld (kv %lld, head_dim %lld), ffn %lld, vocab %lld, context %lld\n",
              static_cast<long long>(c.hidden_size), static_cast<long long>(c.num_layers),
              static_cast<long long>(c.num_heads), static_cast<long long>(c.num_kv_heads),
              static_cast<long long>(c.head_dim), static_cast<long long>(c.intermediate_size),
              static_cast<long long>(c.vocab_size), static_cast<long long>(c.max_positions));
  std::printf("  tokenizer: %s\n", loaded.tokenizer ? loaded.tokenizer->kind().c_str() : "none");
  nlohmann::json tensors = nlohmann::json::array();
  for (const auto& item : model::model_state_dict(*loaded.model)) {
    std::printf("  %-60s %s\n", item.key().c_str(), shape_text(item.value().sizes().vec()).c_str());
    tensors.push_back({{"name", item.key()}, {"shape", item.value().sizes().vec()}});
  }
  return {{"path", dir},
          {"model_type", c.model_type},
          {"parameters", model::parameter_count(c)},
          {"tokenizer", loaded.tokenizer ? loaded.tokenizer->kind() : "none"},
          {"tensors", tensors}};
}

}  // namespace

int run_inspect(const std::vector<std::string>& args) {
  std::string path;
  CommonOptions common;
  FlagSet flags("inspect", "skillgraft inspect PATH",
                "Lists what a .safetensors file holds (metadata, tensor names, dtypes, shapes),\n"
                "or loads a model directory and prints its configuration and parameters.");
  flags.add_positional("PATH", &path, "a .safetensors file or a model directory");
  flags.add_common(&common.threads, &common.json_path, &common.quiet);
  if (!flags.parse(args)) return 0;
  apply_common(common);
  nlohmann::json result = util::is_directory(path) ? inspect_model(path) : inspect_file(path);
  write_json_output(common, result);
  return 0;
}

}  // namespace sg::cli
