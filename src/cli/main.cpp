// skillgraft's entry point: dispatches to a verb and turns errors into one line + exit code.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "io/hf_checkpoint.h"
#include "util/error.h"
#include "util/log.h"
#include "util/threads.h"

namespace {

struct Verb {
  const char* name;
  int (*run)(const std::vector<std::string>&);
  const char* summary;
};

const Verb kVerbs[] = {
    {"convert", sg::cli::run_convert, "convert a llama2.c checkpoint into an HF model directory"},
    {"demo", sg::cli::run_demo, "the whole path on the embedded base: tasks, specialists, evaluation matrix"},
    {"eval", sg::cli::run_eval, "score a model (and adapter) on a task: exact match or choice accuracy, loss, ECE"},
    {"extract", sg::cli::run_extract, "convert a fine-tune or a skill into a LoRA (truncated SVD) or dense skill"},
    {"finetune", sg::cli::run_finetune, "teach a base model a task: full, LoRA (PEFT adapter) or selected parameters"},
    {"generate", sg::cli::run_generate, "generate text from a model directory"},
    {"graft", sg::cli::run_graft, "apply a skill file (sparse, lora, dense) to its base model, or remove it (--remove)"},
    {"inspect", sg::cli::run_inspect, "list the tensors and metadata of a safetensors file or model"},
    {"library", sg::cli::run_library, "keep skills in a library: init, add, list, show, rm, verify, export, import"},
    {"localize", sg::cli::run_localize, "find the few parameters that carry a fine-tuned skill; write the skill file"},
    {"remove", sg::cli::run_remove, "take one skill out of a multi-skill model, keeping the others"},
    {"merge", sg::cli::run_merge, "merge checkpoints and skills of one base into one model (ties, dare, task arithmetic...)"},
    {"neurons", sg::cli::run_neurons, "per task, the FFN neurons that stand out, their overlap, and ablating them"},
    {"pretrain", sg::cli::run_pretrain, "train a base model of your own from text files"},
    {"report", sg::cli::run_report, "render the demo's results.json as one self-contained HTML page (SVG charts)"},
    {"tasks", sg::cli::run_tasks, "list the built-in tasks, or write one as a task directory"},
};

void print_usage(FILE* out) {
  std::fprintf(out, "usage: skillgraft <verb> [options]   (skillgraft <verb> --help for each)\n\nverbs:\n");
  for (const Verb& verb : kVerbs) std::fprintf(out, "  %-10s %s\n", verb.name, verb.summary);
  std::fprintf(out, "  %-10s %s\n", "version", "print the version");
}

}  // namespace

namespace sg::cli {

void apply_common(const CommonOptions& options) {
  SG_CHECK(options.threads >= 0, "--threads must be >= 0 (0 = one per core), got " << options.threads);
  util::set_quiet(options.quiet);
  util::set_threads(static_cast<int>(options.threads));
}

void write_json_output(const CommonOptions& options, const nlohmann::json& result) {
  if (!options.json_path.empty()) io::write_json_file(options.json_path, result);
}

}  // namespace sg::cli

int main(int argc, char** argv) {
  if (argc < 2) {
    print_usage(stderr);
    return 2;
  }
  std::string verb_name = argv[1];
  if (verb_name == "--help" || verb_name == "-h" || verb_name == "help") {
    print_usage(stdout);
    return 0;
  }
  if (verb_name == "version" || verb_name == "--version") {
    std::printf("skillgraft %s\n", SKILLGRAFT_VERSION);
    return 0;
  }
  std::vector<std::string> args(argv + 2, argv + argc);
  for (const Verb& verb : kVerbs) {
    if (verb_name != verb.name) continue;
    try {
      sg::util::set_threads(0);
      return verb.run(args);
    } catch (const sg::Error& e) {
      std::fprintf(stderr, "skillgraft %s: error: %s\n", verb.name, e.what());
      return 1;
    } catch (const std::exception& e) {
      // LibTorch errors carry a multi-line backtrace: keep only the first line.
      std::string what = e.what();
      std::fprintf(stderr, "skillgraft %s: internal error: %s\n", verb.name,
                   what.substr(0, what.find('\n')).c_str());
      return 1;
    }
  }
  std::fprintf(stderr, "skillgraft: unknown verb \"%s\"; hint: skillgraft --help lists the verbs\n",
               verb_name.c_str());
  return 2;
}
