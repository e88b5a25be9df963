// skillgraft tasks: list the built-in tasks, or write one as a task directory.
#include <cstdio>

#include "cli/commands.h"
#include "cli/flags.h"
#include "data/builtin_tasks.h"
#include "util/error.h"

namespace sg::cli {

namespace {

const char* const kTasksUsage =
    "usage: skillgraft tasks list [options]\n"
    "       skillgraft tasks make NAME --out DIR [--seed S] [--n N] [options]\n\n"
    "Built-in tasks: `list` prints each task's name, kind, metric, source and description;\n"
    "`make` writes NAME's train/validation/test.jsonl into DIR. skillgraft tasks list --help\n"
    "and skillgraft tasks make --help describe each.\n";

int run_tasks_list(const std::vector<std::string>& args) {
  CommonOptions common;
  FlagSet flags("tasks list", "skillgraft tasks list [options]",
                "Lists the built-in tasks: name, kind (elicited: a base model may know it; built: a skill\n"
                "to add), metric, where the examples come from, and what a task looks like.");
  flags.add_common(&common.threads, &common.json_path, &common.quiet);
  if (!flags.parse(args)) return 0;
  apply_common(common);
  nlohmann::json tasks = nlohmann::json::array();
  for (const data::BuiltinTaskInfo& info : data::builtin_tasks()) {
    std::printf("%-13s %-9s %-16s %-38s %s\n", info.name.c_str(), info.kind.c_str(), info.metric.c_str(),
                info.source.c_str(), info.description.c_str());
    tasks.push_back({{"name", info.name},
                     {"kind", info.kind},
                     {"metric", info.metric},
                     {"source", info.source},
                     {"description", info.description}});
  }
  write_json_output(common, {{"tasks", tasks}});
  return 0;
}

int run_tasks_make(const std::vector<std::string>& args) {
  std::string name, out_dir;
  int64_t seed = 0, train_size = 400;
  CommonOptions common;
  FlagSet flags("tasks make", "skillgraft tasks make NAME --out DIR [options]",
                "Writes built-in task NAME as DIR/train.jsonl, validation.jsonl and test.jsonl. The\n"
                "same NAME, --seed and --n give identical files (skillgraft tasks list shows the names).");
  flags.add_positional("NAME", &name, "a built-in task name");
  flags.add_string("out", &out_dir, "the task directory to write (created if missing)", true);
  flags.add_int("seed", &seed, "random seed");
  flags.add_int("n", &train_size, "train examples; validation and test get n/4 each");
  flags.add_common(&common.threads, &common.json_path, &common.quiet);
  if (!flags.parse(args)) return 0;
  apply_common(common);
  SG_CHECK(seed >= 0, "--seed must be >= 0, got " << seed);
  data::BuiltinTaskOptions options;
  options.seed = static_cast<uint64_t>(seed);
  options.train_size = train_size;
  data::TaskSplits splits = data::make_builtin_task(name, options);
  data::write_task_dir(out_dir, splits);
  std::printf("wrote %s to %s: train %zu, validation %zu, test %zu\n", name.c_str(), out_dir.c_str(),
              splits.train.size(), splits.validation.size(), splits.test.size());
  write_json_output(common, {{"task", name},
                             {"out", out_dir},
                             {"seed", seed},
                             {"train", splits.train.size()},
                             {"validation", splits.validation.size()},
                             {"test", splits.test.size()}});
  return 0;
}

}  // namespace

int run_tasks(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::fputs(kTasksUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "list") return run_tasks_list(rest);
  if (args[0] == "make") return run_tasks_make(rest);
  SG_FAIL("unknown subcommand \"" << args[0] << "\"; hint: skillgraft tasks list or skillgraft tasks make NAME --out DIR");
}

}  // namespace sg::cli
