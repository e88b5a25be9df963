// The CLI's verbs. Each parses its own flags (FlagSet), calls the library and prints results;
// each returns the process exit code and lets sg::Error propagate to main().
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "data/task_source.h"

namespace sg::cli {

int run_convert(const std::vector<std::string>& args);
int run_demo(const std::vector<std::string>& args);
int run_eval(const std::vector<std::string>& args);
int run_extract(const std::vector<std::string>& args);
int run_finetune(const std::vector<std::string>& args);
int run_generate(const std::vector<std::string>& args);
int run_graft(const std::vector<std::string>& args);
int run_localize(const std::vector<std::string>& args);
int run_remove(const std::vector<std::string>& args);
int run_merge(const std::vector<std::string>& args);
int run_neurons(const std::vector<std::string>& args);
int run_pretrain(const std::vector<std::string>& args);
int run_inspect(const std::vector<std::string>& args);
int run_library(const std::vector<std::string>& args);
int run_report(const std::vector<std::string>& args);
int run_tasks(const std::vector<std::string>& args);

// llama2.c MODEL.bin + tokenizer.bin -> an HF model directory (convert --from llama2c; the demo's
// base). Returns {"parameters", "llama2c_version"}.
nlohmann::json convert_llama2c(const std::string& model_path, const std::string& tokenizer_path,
                               const std::string& out_dir, uint64_t max_shard_bytes = 0);

// The neurons verb's study (see its --help) on loaded tasks: the JSON of `skillgraft neurons --json`.
// base_dir ("" = model_dir) writes the general text, unless reference names a corpus.
nlohmann::json neuron_study(const std::string& model_dir, const std::string& base_dir, const std::string& reference,
                            const std::vector<data::LoadedTask>& tasks, double coverage, int64_t examples);

// Flags every verb has.
struct CommonOptions {
  int64_t threads = 0;
  std::string json_path;
  bool quiet = false;
};
// Applies --threads and --quiet; call right after parsing.
void apply_common(const CommonOptions& options);
// Writes --json output (atomically) when a path was given.
void write_json_output(const CommonOptions& options, const nlohmann::json& result);

}  // namespace sg::cli
