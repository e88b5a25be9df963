// skillgraft library: keeps skills in a library directory (catalog.sqlite + content-addressed
// blobs): init, add/import, list, show, rm, verify, export. The work is in src/library/.
#include <stdlib.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/flags.h"
#include "io/fingerprint.h"
#include "io/safetensors.h"
#include "library/library.h"
#include "library/peft.h"
#include "model/causal_lm.h"
#include "skills/lora_skill.h"
#include "util/error.h"

namespace sg::cli {

namespace {

constexpr const char* kLibraryUsage =
    "usage: skillgraft library <subcommand> --lib DIR [options]   (skillgraft library <subcommand> --help for each)\n"
    "\n"
    "A skill library is a directory: catalog.sqlite (one row per skill: id = sha256 of the skill file,\n"
    "name, kind, base fingerprint, task, metrics, sizes, created, provenance) and the skill files as\n"
    "blobs/<2 hex>/<sha256>.safetensors. Adds and removals are crash-safe; readers work while a writer\n"
    "adds. A skill is named by its name, its id, or a unique id prefix (6+ hex digits).\n"
    "\n"
    "subcommands:\n"
    "  init     make DIR a skill library\n"
    "  add      add a skill file (FILE [--name N] [--task T])\n"
    "  import   add a skill file (as add), or a PEFT LoRA adapter (--peft DIR --base MODEL_DIR)\n"
    "  list     the skills as a table (--base FP, --task T, --kind K filter)\n"
    "  show     one skill's entry, after re-checking its file's hash\n"
    "  rm       remove a skill (its row, then its file)\n"
    "  verify   re-hash every file; report corrupt or missing files, orphans, stale temp files\n"
    "  export   write a skill's file out (--out FILE), byte for byte as added, or a LoRA skill as a\n"
    "           PEFT adapter (--peft DIR)\n";

std::string quoted_if_needed(const std::string& text) {
  if (!text.empty() && text.find_first_of(" \t\n'\"\\$`") == std::string::npos) return text;
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// The command as typed, for the entry's provenance.
std::string command_line(const std::string& subcommand, const std::vector<std::string>& args) {
  std::string line = "skillgraft library " + subcommand;
  for (const std::string& arg : args) line += " " + quoted_if_needed(arg);
  return line;
}

std::string short_id(const std::string& id) { return id.substr(0, 12); }

std::string absolute_path(const std::string& path) {
  std::error_code ec;
  std::filesystem::path absolute = std::filesystem::absolute(path, ec);
  return ec ? path : absolute.lexically_normal().string();
}

// A fresh private directory under the system temp dir, removed with everything in it on destruction.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "skillgraft-library-XXXXXX").string();
    SG_CHECK(::mkdtemp(pattern.data()) != nullptr, pattern << ": cannot create a temp directory; hint: set TMPDIR");
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  std::string file(const std::string& name) const { return (std::filesystem::path(path_) / name).string(); }

 private:
  std::string path_;
};

// A PEFT adapter directory -> a LoRA skill file (on the base model at base_dir) -> added.
library::AddResult import_peft(library::Library& lib, const std::string& peft_dir, const std::string& base_dir,
                               library::AddOptions options) {
  model::LoadedModel base = model::load_model_dir(base_dir);
  const io::StateDict weights = model::model_state_dict(*base.model);
  skills::LoraSkill skill = library::import_peft_adapter(peft_dir, weights, io::state_dict_fingerprint(weights));
  std::string dir_name = std::filesystem::path(peft_dir).lexically_normal().filename().string();
  if (dir_name.empty() || dir_name == ".") dir_name = std::filesystem::path(absolute_path(peft_dir)).filename().string();
  skill.task = options.task.empty() ? dir_name : options.task;
  if (options.name.empty()) {
    std::string name;
    for (char c : dir_name) name += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') ? c : '_';
    options.name = name.empty() || name[0] == '-' ? "peft-" + name : name;
  }
  options.provenance["inputs"] = {absolute_path(peft_dir), absolute_path(base_dir)};
  options.provenance["peft"] = skill.metrics.contains("peft") ? skill.metrics["peft"] : nlohmann::json();
  ScratchDir scratch;
  const std::string file = scratch.file(options.name + ".safetensors");
  skills::save_lora_skill(file, skill);
  return lib.add(file, options);
}

void print_entry_line(const char* verb, const library::Entry& entry) {
  std::printf("%s %s (%s, %s, task \"%s\", %lld parameters, %lld bytes)\n", verb, entry.name.c_str(),
              short_id(entry.id).c_str(), entry.kind.c_str(), entry.task.c_str(),
              static_cast<long long>(entry.parameter_count), static_cast<long long>(entry.file_bytes));
}

int run_library_init(const std::vector<std::string>& args) {
  std::string dir;
  CommonOptions common;
  FlagSet flags("library init", "skillgraft library init --lib DIR",
                "Makes DIR (created if missing) a skill library: catalog.sqlite (SQLite, WAL mode) and\n"
                "blobs/. An existing library is left as it is.");
  flags.add_string("lib", &dir, "the library directory", true);
  flags.add_common(&common.threads, &common.json_path, &common.quiet);
  if (!flags.parse(args)) return 0;
  apply_common(common);
  const bool existed = library::Library::is_library(dir);
  library::Library lib = library::Library::init(dir);
  const int64_t count = lib.count();
  if (existed) {
    std::printf("%s is already a skill library (%lld skills)\n", dir.c_str(), static_cast<long long>(count));
  } else {
    std::printf("made skill library %s\n", dir.c_str());
  }
  write_json_output(common, {{"library", dir}, {"created", !existed}, {"entries", count}});
  return 0;
}

int run_library_add(const std::string& subcommand, const std::vector<std::string>& args) {
  std::string dir, file, peft_dir, base_dir;
  library::AddOptions options;
  CommonOptions common;
  const bool is_import = subcommand == "import";
  FlagSet flags("library " + subcommand,
                is_import ? "skillgraft library import --lib DIR FILE [--name N] [--task T]\n"
                            "       skillgraft library import --lib DIR --peft ADAPTER_DIR --base MODEL_DIR [--name N] [--task T]"
                          : "skillgraft library add --lib DIR FILE [--name N] [--task T]",
                std::string("Adds a skill file (any kind: sparse, lora, dense, neurons) to the library. The file is\n"
                            "copied in, hashed (its sha256 is its id) and validated; the catalog row records kind, base\n"
                            "fingerprint, task and metrics from the file's header, sizes, the time and this command.\n"
                            "Adding bytes already in the library changes nothing and names the existing entry.") +
                    (is_import ? "\n\n--peft: a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors, with\n"
                                 "rank_pattern / alpha_pattern and rslora) is checked against the base model at --base\n"
                                 "(every module must exist there with fitting shapes), made a LoRA skill of that base and\n"
                                 "added; name and task default to the adapter directory's name."
                               : ""));
  flags.add_string("lib", &dir, "the library directory", true);
  flags.add_positional("FILE", &file, "the skill file (.safetensors)", /*required=*/!is_import);
  if (is_import) {
    flags.add_string("peft", &peft_dir, "a PEFT LoRA adapter directory to import (instead of FILE)");
    flags.add_string("base", &base_dir, "with --peft: the base model directory the adapter was trained on");
  }
  flags.add_string("name", &options.name,
                   "the entry's name, unique in the library (default: the file name without .safetensors)");
  flags.add_string("task", &options.task, "the task to record (default: the task in the skill file)");
  flags.add_common(&common.threads, &common.json_path, &common.quiet);
  if (!flags.parse(args)) return 0;
  apply_common(common);
  if (is_import) {
    SG_CHECK(file.empty() != peft_dir.empty(),
             (file.empty() ? "nothing to import" : "give either FILE or --peft, not both")
                 << "; hint: skillgraft library import --lib DIR FILE, or --peft ADAPTER_DIR --base MODEL_DIR");
    SG_CHECK(peft_dir.empty() || !base_dir.empty(),
             "--peft needs --base MODEL_DIR (the base model the adapter was trained on); hint: skillgraft library import --help");
    SG_CHECK(base_dir.empty() || !peft_dir.empty(), "--base is only for --peft; hint: a skill file records its base itself");
  }
  library::Library lib = library::Library::open(dir);
  options.provenance = {{"command", command_line(subcommand, args)}};
  library::AddResult result = peft_dir.empty() ? lib.add(file, options) : import_peft(lib, peft_dir, base_dir, options);
  print_entry_line(result.added ? "added" : "already in the library as", result.entry);
  nlohmann::json out = result.entry.to_json();
  out["added"] = result.added;
  out["library"] = dir;
  write_json_output(common, out);
  return 0;
}

std::string human_bytes(int64_t bytes) {
  char text[32];
  if (bytes < 10 * 1024) {
    std::snprintf(text, sizeof(text), "%lld B", static_cast<long long>(bytes));
  } else if (bytes < 10 * 1024 * 1024) {
    std::snprintf(text, sizeof(text), "%.1f KiB", static_cast<double>(bytes) / 1024.0);
  } else {
    std::snprintf(text, sizeof(text), "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  }
  return text;
}

int run_library_list(const std::vector<std::string>& args) {
  std::string dir;
  library::EntryFilter filter;
  CommonOptions common;
  FlagSet flags("library list", "skillgraft library list --lib DIR [--base FP] [--task T] [--kind K]",
                "Lists the library's skills as a table (id prefix, name, kind, task, base fingerprint,\n"
                "parameters, file size, when added), sorted by name; --json OUT writes every field.");
  flags.add_string("lib", &dir, "the library directory", true);
  flags.add_string("base", &filter.base_fingerprint, "only skills of this base fingerprint (or a prefix of it)");
  flags.add_string("task", &filter.task, "only skills of this task");
  flags.add_string("kind", &filter.kind, "only skills of this kind: sparse, lora, dense, neurons");
  flags.add_common(&common.threads, &common.json_path, &common.quiet);
  if (!flags.parse(args)) return 0;
  apply_common(common);
  SG_CHECK(filter.kind.empty() || filter.kind == "sparse" || filter.kind == "lora" || filter.kind == "dense" ||
               filter.kind == "neurons",
           "--kind \"" << filter.kind << "\" is not a skill kind; hint: sparse, lora, dense or neurons");
  library::Library lib = library::Library::open(dir);
  std::vector<library::Entry> entries = lib.list(filter);

  std::vector<std::vector<std::string>> rows = {{"ID", "NAME", "KIND", "TASK", "BASE", "PARAMS", "SIZE", "ADDED"}};
  for (const library::Entry& entry : entries) {
    rows.push_back({short_id(entry.id), entry.name, entry.kind, entry.task, entry.base_fingerprint,
                    std::to_string(entry.parameter_count), human_bytes(entry.file_bytes), entry.created});
  }
  std::vector<size_t> widths(rows.front().size(), 0);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      const bool right = i == 5 || i == 6;  // numbers
      std::string pad(widths[i] - row[i].size(), ' ');
      line += (i ? "  " : "") + (right ? pad + row[i] : row[i] + (i + 1 < row.size() ? pad : ""));
    }
    std::printf("%s\n", line.c_str());
  }
  std::printf("%zu skill%s\n", entries.size(), entries.size() == 1 ? "" : "s");
  nlohmann::json list = nlohmann::json::array();
  for (const library::Entry& entry : entries) list.push_back(entry.to_json());
  write_json_output(common, {{"library", dir}, {"count", entries.size()}, {"entries", list}});
  return 0;
}

int run_library_show(const std::vector<std::string>& args) {
  std::string dir, key;
  CommonOptions common;
  FlagSet flags("library show", "skillgraft library show --lib DIR ID|NAME",
                "Shows one skill's catalog entry and its file (tensors, header), after re-hashing the file:\n"
                "a corrupt or missing file is an error.");
  flags.add_string("lib", &dir, "the library directory", true);
  flags.add_positional("ID|NAME", &key, "the skill's name, id or unique id prefix");
  flags.add_common(&common.threads, &common.json_path, &common.quiet);
  if (!flags.parse(args)) return 0;
  apply_common(common);
  library::Library lib = library::Library::open(dir);
  std::string blob_path;
  library::Entry entry = lib.verified(key, &blob_path);
  io::SafetensorsFile file = io::SafetensorsFile::open(blob_path);
  std::printf("id:               %s (sha256 verified)\n", entry.id.c_str());
  std::printf("name:             %s\n", entry.name.c_str());
  std::printf("kind:             %s\n", entry.kind.c_str());
  std::printf("task:             %s\n", entry.task.c_str());
  std::printf("base fingerprint: %s\n", entry.base_fingerprint.c_str());
  std::printf("parameters:       %lld\n", static_cast<long long>(entry.parameter_count));
  std::printf("file:             %s (%lld bytes, %zu tensors)\n", blob_path.c_str(),
              static_cast<long long>(entry.file_bytes), file.entries().size());
  std::printf("added:            %s\n", entry.created.c_str());
  std::printf("metrics:          %s\n", entry.metrics.dump().c_str());
  std::printf("provenance:       %s\n", entry.provenance.dump().c_str());
  nlohmann::json out = entry.to_json();
  out["blob"] = blob_path;
  out["tensors"] = file.entries().size();
  out["file_metadata"] = file.metadata();
  write_json_output(common, out);
  return 0;
}

int run_library_rm(const std::vector<std::string>& args) {
  std::string dir, key;
  CommonOptions common;
  FlagSet flags("library rm", "skillgraft library rm --lib DIR ID|NAME",
                "Removes a skill: its catalog row (one transaction), then its file.");
  flags.add_string("lib", &dir, "the library directory", true);
  flags.add_positional("ID|NAME", &key, "the skill's name, id or unique id prefix");
  flags.add_common(&common.threads, &common.json_path, &common.quiet);
  if (!flags.parse(args)) return 0;
  apply_common(common);
  library::Library lib = library::Library::open(dir);
  library::Entry entry = lib.remove(key);
  print_entry_line("removed", entry);
  write_json_output(common, {{"library", dir}, {"removed", entry.to_json()}});
  return 0;
}

int run_library_verify(const std::vector<std::string>& args) {
  std::string dir;
  bool fix = false;
  CommonOptions common;
  FlagSet flags("library verify", "skillgraft library verify --lib DIR [--fix]",
                "Re-hashes every skill file against its id and checks the catalog. Reports corrupt files\n"
                "(hash or size differs), missing files (a row without its file), orphans (files without a\n"
                "row, e.g. left by a writer killed mid-add) and stale temp files. Exits 1 if anything is\n"
                "wrong. --fix deletes orphans and stale temp files (never a skill with a row: re-add the\n"
                "original file to repair a corrupt one, or rm it).");
  flags.add_string("lib", &dir, "the library directory", true);
  flags.add_bool("fix", &fix, "delete orphans and stale temp files");
  flags.add_common(&common.threads, &common.json_path, &common.quiet);
  if (!flags.parse(args)) return 0;
  apply_common(common);
  library::Library lib = library::Library::open(dir);
  library::VerifyReport report = lib.verify(fix);
  for (const auto& bad : report.corrupt) {
    std::printf("corrupt: %s (%s) %s: %s\n", bad.name.c_str(), short_id(bad.id).c_str(), bad.path.c_str(),
                bad.detail.c_str());
  }
  for (const auto& bad : report.missing) {
    std::printf("missing: %s (%s) %s\n", bad.name.c_str(), short_id(bad.id).c_str(), bad.path.c_str());
  }
  for (const auto& path : report.orphans) std::printf("orphan: %s\n", path.c_str());
  for (const auto& path : report.stale_temps) std::printf("stale temp file: %s\n", path.c_str());
  for (const auto& path : report.removed) std::printf("deleted: %s\n", path.c_str());
  if (report.catalog_check != "ok") std::printf("catalog: %s\n", report.catalog_check.c_str());
  std::printf("%s: %lld of %lld skills verified; %zu corrupt, %zu missing, %zu orphans, %zu stale temp files%s\n",
              report.ok() ? "ok" : "PROBLEMS", static_cast<long long>(report.verified),
              static_cast<long long>(report.entries), report.corrupt.size(), report.missing.size(),
              report.orphans.size(), report.stale_temps.size(),
              fix ? (", " + std::to_string(report.removed.size()) + " deleted").c_str() : "");
  write_json_output(common, report.to_json());
  return report.ok() ? 0 : 1;
}

int run_library_export(const std::vector<std::string>& args) {
  std::string dir, key, out, peft_dir, base_model;
  CommonOptions common;
  FlagSet flags("library export",
                "skillgraft library export --lib DIR ID|NAME --out FILE\n"
                "       skillgraft library export --lib DIR ID|NAME --peft ADAPTER_DIR [--base-model NAME]",
                "Writes a skill's file, byte for byte as it was added (its hash checked while copying; a\n"
                "corrupt file, or a skill removed meanwhile, writes nothing). --peft writes a LoRA skill as a\n"
                "PEFT adapter directory (adapter_config.json + adapter_model.safetensors) that PEFT loads\n"
                "and `import --peft` reads back identically.");
  flags.add_string("lib", &dir, "the library directory", true);
  flags.add_positional("ID|NAME", &key, "the skill's name, id or unique id prefix");
  flags.add_string("out", &out, "the skill file to write (atomically)");
  flags.add_string("peft", &peft_dir, "instead: the PEFT adapter directory to write (LoRA skills only)");
  flags.add_string("base-model", &base_model,
                   "with --peft: base_model_name_or_path for adapter_config.json (default: the one the skill was "
                   "imported with, if any)");
  flags.add_common(&common.threads, &common.json_path, &common.quiet);
  if (!flags.parse(args)) return 0;
  apply_common(common);
  SG_CHECK(out.empty() != peft_dir.empty(), (out.empty() ? "nowhere to export to" : "give either --out or --peft, not both")
                                                << "; hint: --out FILE (the skill file) or --peft DIR (a PEFT adapter)");
  SG_CHECK(base_model.empty() || !peft_dir.empty(), "--base-model is only for --peft");
  library::Library lib = library::Library::open(dir);
  library::Entry entry;
  if (peft_dir.empty()) {
    entry = lib.export_file(key, out);
    print_entry_line(("exported to " + out + ":").c_str(), entry);
  } else {
    entry = lib.find(key);
    SG_CHECK(entry.kind == "lora", "skill \"" << entry.name << "\" is a " << entry.kind
                                               << " skill; --peft exports LoRA skills only; hint: skillgraft extract "
                                                  "makes a LoRA skill from a sparse or dense one, or use --out");
    // A verified private copy: what is exported is what was added, even if it is removed meanwhile.
    ScratchDir scratch;
    const std::string copy = scratch.file("skill.safetensors");
    entry = lib.export_file(entry.id, copy);
    const nlohmann::json& peft = entry.metrics.contains("peft") ? entry.metrics["peft"] : nlohmann::json();
    if (!flags.given("base-model") && peft.is_object() && peft.contains("base_model_name_or_path") &&
        peft["base_model_name_or_path"].is_string()) {
      base_model = peft["base_model_name_or_path"].get<std::string>();
    }
    library::export_peft_adapter(peft_dir, skills::load_lora_skill(copy), base_model);
    print_entry_line(("exported as a PEFT adapter to " + peft_dir + ":").c_str(), entry);
  }
  write_json_output(common, {{"library", dir}, {"out", peft_dir.empty() ? out : peft_dir}, {"format", peft_dir.empty() ? "skill" : "peft"},
                             {"entry", entry.to_json()}});
  return 0;
}

}  // namespace

int run_library(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::fputs(kLibraryUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  const std::string subcommand = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (subcommand == "init") return run_library_init(rest);
  if (subcommand == "add" || subcommand == "import") return run_library_add(subcommand, rest);
  if (subcommand == "list") return run_library_list(rest);
  if (subcommand == "show") return run_library_show(rest);
  if (subcommand == "rm") return run_library_rm(rest);
  if (subcommand == "verify") return run_library_verify(rest);
  if (subcommand == "export") return run_library_export(rest);
  SG_FAIL("unknown subcommand \"" << subcommand
                                  << "\"; hint: init, add, import, list, show, rm, verify, export (skillgraft library --help)");
}

}  // namespace sg::cli
