// skillgraft inspect: what a safetensors file or a model directory holds.
#include <torch/torch.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/flags.h"
#include "io/safetensors.h"
#include "model/causal_lm.h"
#include "skills/lora_skill.h"
#include "skills/skill.h"
#include "util/error.h"
#include "util/file.h"

namespace sg::cli {

namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

// A skill file: what it is for and where its parameters are (per layer, per tensor kind).
nlohmann::json inspect_skill(const std::string& path, const io::Metadata& metadata) {
  skills::SparseSkill skill = skills::load_sparse_skill(path);
  nlohmann::json description = skills::describe_sparse_skill(skill);
  auto meta = [&](const char* key) {
    auto it = metadata.find(key);
    return it == metadata.end() ? std::string() : it->second;
  };
  std::printf("%s: %s skill for task \"%s\"\n", path.c_str(), meta("kind").c_str(), skill.task.c_str());
  std::printf("  base fingerprint %s\n", skill.base_fingerprint.c_str());
  std::printf("  created %s by skillgraft %s\n", meta("created").c_str(), meta("tool_version").c_str());
  std::printf("  metrics %s\n", skill.metrics.dump().c_str());
  std::printf("  %lld selected parameters in %zu tensors\n", static_cast<long long>(skill.parameter_count()),
              skill.tensors.size());
  const auto& per_layer = description["per_layer"];
  for (size_t layer = 0; layer < per_layer.size(); ++layer) {
    std::printf("  layer %-3zu %lld\n", layer, static_cast<long long>(per_layer[layer].get<int64_t>()));
  }
  std::printf("  outside layers %lld\n", static_cast<long long>(description["outside_layers"].get<int64_t>()));
  for (const auto& item : description["per_kind"].items()) {
    std::printf("  kind %-20s %lld\n", item.key().c_str(), static_cast<long long>(item.value().get<int64_t>()));
  }
  description["path"] = path;
  description["created"] = meta("created");
  description["tool_version"] = meta("tool_version");
  return description;
}

// A lora or dense skill file: what it is for, and per tensor its rank and scale (lora) or norm.
nlohmann::json inspect_delta_skill(const std::string& path, const io::Metadata& metadata, const std::string& kind) {
  nlohmann::json description = kind == "lora" ? skills::describe_lora_skill(skills::load_lora_skill(path))
                                              : skills::describe_dense_skill(skills::load_dense_skill(path));
  auto meta = [&](const char* key) {
    auto it = metadata.find(key);
    return it == metadata.end() ? std::string() : it->second;
  };
  std::printf("%s: %s skill for task \"%s\"\n", path.c_str(), kind.c_str(), meta("task").c_str());
  std::printf("  base fingerprint %s\n", meta("base_fingerprint").c_str());
  std::printf("  created %s by skillgraft %s\n", meta("created").c_str(), meta("tool_version").c_str());
  std::printf("  metrics %s\n", description["metrics"].dump().c_str());
  std::printf("  %lld stored parameters in %lld tensors\n", static_cast<long long>(description["parameters"].get<int64_t>()),
              static_cast<long long>(description["tensors"].get<int64_t>()));
  for (const auto& item : description["per_tensor"].items()) {
    const nlohmann::json& t = item.value();
    if (kind == "lora") {
      std::printf("  %-60s %-14s rank %-4lld scale %.6g%s\n", item.key().c_str(),
                  shape_text(t["shape"].get<std::vector<int64_t>>()).c_str(), static_cast<long long>(t["rank"].get<int64_t>()),
                  t["scale"].get<double>(), t["transposed"].get<bool>() ? " (Conv1D)" : "");
    } else {
      std::printf("  %-60s %-14s norm %.6g\n", item.key().c_str(), shape_text(t["shape"].get<std::vector<int64_t>>()).c_str(),
                  t["norm"].get<double>());
    }
  }
  for (const auto& item : description["per_kind"].items()) {
    std::printf("  kind %-20s %lld\n", item.key().c_str(), static_cast<long long>(item.value().get<int64_t>()));
  }
  description["path"] = path;
  description["created"] = meta("created");
  description["tool_version"] = meta("tool_version");
  return description;
}

nlohmann::json inspect_file(const std::string& path) {
  io::SafetensorsFile file = io::SafetensorsFile::open(path);
  if (skills::is_skill_metadata(file.metadata())) {
    auto kind = file.metadata().find("kind");
    if (kind != file.metadata().end() && (kind->second == "lora" || kind->second == "dense")) {
      return inspect_delta_skill(path, file.metadata(), kind->second);
    }
    return inspect_skill(path, file.metadata());
  }
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
                "or loads a model directory and prints its configuration and parameters.\n"
                "A skill file (format=skillgraft.skill) is validated and summarised: kind, base\n"
                "fingerprint, task, metrics, selected parameters per layer and per tensor kind\n"
                "(sparse), or per tensor its rank and scale (lora) or norm (dense).");
  flags.add_positional("PATH", &path, "a .safetensors file, a skill file or a model directory");
  flags.add_common(&common.threads, &common.json_path, &common.quiet);
  if (!flags.parse(args)) return 0;
  apply_common(common);
  nlohmann::json result = util::is_directory(path) ? inspect_model(path) : inspect_file(path);
  write_json_output(common, result);
  return 0;
}

}  // namespace sg::cli
