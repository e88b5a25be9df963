// skillgraft library: every subcommand through the executable (help, tables, --json, exit codes,
// byte-exact export, verify failing on a corrupt blob) and its one-line errors for bad input.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include <filesystem>

#include "io/fingerprint.h"
#include "library_test_util.h"
#include "model/causal_lm.h"
#include "skills/lora_skill.h"
#include "test_env.h"
#include "util/file.h"

namespace {

namespace fs = std::filesystem;
using sg::test::run_command;
using sg::test::sg_command;
using sg::test::shell_quote;

bool contains(const std::string& text, const std::string& needle) { return text.find(needle) != std::string::npos; }

using sg::test::read_json;

class LibraryCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    at::set_num_threads(1);
    root_ = sg::test::temp_dir("sg-library-cli");
    lib_ = shell_quote(root_ + "/lib");
  }
  sg::test::CommandResult library(const std::string& args) {
    return run_command(sg_command("library " + args + " --threads 1"));
  }
  std::string root_, lib_;
};

TEST_F(LibraryCliTest, HelpForTheVerbAndEverySubcommand) {
  sg::test::CommandResult r = run_command(sg_command("library --help"));
  EXPECT_EQ(r.exit_code, 0);
  for (const char* sub : {"init", "add", "import", "list", "show", "rm", "verify", "export"}) {
    EXPECT_TRUE(contains(r.output, std::string("  ") + sub)) << sub;
    sg::test::CommandResult help = run_command(sg_command(std::string("library ") + sub + " --help"));
    EXPECT_EQ(help.exit_code, 0) << sub;
    EXPECT_TRUE(contains(help.output, std::string("skillgraft library ") + sub)) << help.output;
    EXPECT_TRUE(contains(help.output, "--lib")) << help.output;
    EXPECT_TRUE(contains(help.output, "--json")) << help.output;
  }
  sg::test::expect_one_line_error("library frobnicate --lib x", {"unknown subcommand", "frobnicate"}, true);
  r = run_command(sg_command("--help"));
  EXPECT_TRUE(contains(r.output, "library")) << r.output;
}

TEST_F(LibraryCliTest, InitAddListShowExportRmVerify) {
  sg::test::SkillFileFacts a = sg::test::make_test_skill(root_ + "/upper.safetensors", 1, "upper", 1);
  sg::test::SkillFileFacts b = sg::test::make_test_skill(root_ + "/reverse.safetensors", 2, "reverse", 1);
  sg::test::SkillFileFacts c = sg::test::make_test_skill(root_ + "/other-base.safetensors", 3, "upper", 2);
  std::vector<std::string> ids = sg::test::python_sha256({a.path, b.path, c.path});

  sg::test::CommandResult r = library("init --lib " + lib_ + " --json " + shell_quote(root_ + "/init.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_json(root_ + "/init.json")["created"], true);

  r = library("add --lib " + lib_ + " " + shell_quote(a.path) + " --json " + shell_quote(root_ + "/add.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "added upper")) << r.output;
  nlohmann::json added = read_json(root_ + "/add.json");
  EXPECT_EQ(added["id"], ids[0]);
  EXPECT_EQ(added["added"], true);
  EXPECT_EQ(added["parameter_count"], a.parameter_count);
  EXPECT_TRUE(contains(added["provenance"]["command"].get<std::string>(), "skillgraft library add --lib"));
  ASSERT_EQ(library("import --lib " + lib_ + " " + shell_quote(b.path) + " --name rev --task reverse-words").exit_code, 0);
  ASSERT_EQ(library("add --lib " + lib_ + " " + shell_quote(c.path)).exit_code, 0);
  r = library("add --lib " + lib_ + " " + shell_quote(a.path));
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "already in the library as upper")) << r.output;

  // list: a table, sorted by name; filters; --json.
  r = library("list --lib " + lib_ + " --json " + shell_quote(root_ + "/list.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "ID") && contains(r.output, "NAME") && contains(r.output, "BASE")) << r.output;
  // Rows by name: other-base (ids[2]), rev (ids[1]), upper (ids[0]).
  EXPECT_LT(r.output.find(ids[2].substr(0, 12)), r.output.find(ids[1].substr(0, 12))) << r.output;
  EXPECT_LT(r.output.find(ids[1].substr(0, 12)), r.output.find(ids[0].substr(0, 12))) << r.output;
  EXPECT_TRUE(contains(r.output, ids[0].substr(0, 12))) << r.output;
  EXPECT_TRUE(contains(r.output, "3 skills")) << r.output;
  nlohmann::json list = read_json(root_ + "/list.json");
  EXPECT_EQ(list["count"], 3);
  EXPECT_EQ(list["entries"][1]["task"], "reverse-words");
  library("list --lib " + lib_ + " --task upper --base " + a.base_fingerprint + " --json " + shell_quote(root_ + "/f.json"));
  nlohmann::json filtered = read_json(root_ + "/f.json");
  ASSERT_EQ(filtered["count"], 1);
  EXPECT_EQ(filtered["entries"][0]["name"], "upper");
  sg::test::expect_one_line_error("library list --lib " + lib_ + " --kind bogus", {"--kind", "bogus"}, true);

  // show by name and by id prefix.
  r = library("show --lib " + lib_ + " rev --json " + shell_quote(root_ + "/show.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "sha256 verified")) << r.output;
  nlohmann::json shown = read_json(root_ + "/show.json");
  EXPECT_EQ(shown["id"], ids[1]);
  EXPECT_EQ(shown["file_metadata"]["format"], "skillgraft.skill");

  // export: the exact bytes.
  r = library("export --lib " + lib_ + " upper --out " + shell_quote(root_ + "/out.safetensors"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(sg::test::read_bytes(root_ + "/out.safetensors"), sg::test::read_bytes(a.path));

  r = library("verify --lib " + lib_ + " --json " + shell_quote(root_ + "/verify.json"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "ok: 3 of 3 skills verified")) << r.output;
  EXPECT_EQ(read_json(root_ + "/verify.json")["ok"], true);

  // rm, then the name is unknown.
  r = library("rm --lib " + lib_ + " rev");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "removed rev")) << r.output;
  sg::test::expect_one_line_error("library show --lib " + lib_ + " rev", {"no skill named \"rev\""}, true);

  // A corrupt blob: verify exits 1 naming it; show and export refuse it.
  const std::string blob = root_ + "/lib/blobs/" + ids[0].substr(0, 2) + "/" + ids[0] + ".safetensors";
  std::string bytes = sg::test::read_bytes(blob);
  bytes[bytes.size() - 1] ^= 0x20;
  fs::permissions(blob, fs::perms::owner_write, fs::perm_options::add);  // blobs are read-only
  sg::test::write_bytes(blob, bytes);
  r = library("verify --lib " + lib_ + " --json " + shell_quote(root_ + "/verify.json"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "corrupt: upper")) << r.output;
  EXPECT_EQ(read_json(root_ + "/verify.json")["corrupt"].size(), 1u);
  sg::test::expect_one_line_error("library show --lib " + lib_ + " upper", {"corrupt", "upper"}, true);
  // An orphan too; --fix deletes the orphan, not the corrupt skill, so verify still fails.
  sg::test::write_bytes(root_ + "/lib/blobs/tmp/999-dead.tmp", "partial");
  r = library("verify --lib " + lib_ + " --fix");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "deleted:")) << r.output;
  EXPECT_FALSE(fs::exists(root_ + "/lib/blobs/tmp/999-dead.tmp"));
  // Re-adding the original repairs it.
  ASSERT_EQ(library("add --lib " + lib_ + " " + shell_quote(a.path)).exit_code, 0);
  EXPECT_EQ(library("verify --lib " + lib_).exit_code, 0);
}

TEST_F(LibraryCliTest, BadInputIsOneClearLine) {
  // Not a library.
  sg::test::expect_one_line_error("library list --lib " + shell_quote(root_ + "/nowhere"), {"not a skill library", "library init"},
                                  true);
  fs::create_directories(root_ + "/plain");
  sg::test::expect_one_line_error("library add --lib " + shell_quote(root_ + "/plain") + " x.safetensors",
                                  {"not a skill library", "library init"}, true);
  sg::test::expect_one_line_error("library verify", {"--lib"});
  ASSERT_EQ(library("init --lib " + lib_).exit_code, 0);
  // Not a skill file.
  sg::test::write_bytes(root_ + "/notes.txt", "just text");
  sg::test::expect_one_line_error("library add --lib " + lib_ + " " + shell_quote(root_ + "/notes.txt"),
                                  {"not a skill file", "notes.txt"});
  // A taken name; a bad name.
  sg::test::SkillFileFacts a = sg::test::make_test_skill(root_ + "/a.safetensors", 1, "upper");
  sg::test::SkillFileFacts b = sg::test::make_test_skill(root_ + "/b.safetensors", 2, "upper");
  ASSERT_EQ(library("add --lib " + lib_ + " " + shell_quote(a.path) + " --name shared").exit_code, 0);
  sg::test::expect_one_line_error("library add --lib " + lib_ + " " + shell_quote(b.path) + " --name shared",
                                  {"\"shared\" is taken", "--name"}, true);
  sg::test::expect_one_line_error("library add --lib " + lib_ + " " + shell_quote(b.path) + " --name 'a b'",
                                  {"skill name", "a b"}, true);
  sg::test::expect_one_line_error("library export --lib " + lib_ + " nosuch --out " + shell_quote(root_ + "/o.safetensors"),
                                  {"no skill named \"nosuch\""}, true);
}

// PEFT: an adapter written by Python (lora_skill_ref.py: rank_pattern, alpha_pattern, rslora, an F16
// pair, a ".default" key) is imported against stories260K, exported with --peft, and the export gives
// PEFT's deltas (Python's reading of the adapter); importing the export gives the same LoRA skill.
TEST_F(LibraryCliTest, PeftImportExportRoundTrip) {
  const std::string base = sg::test::converted_stories260k();
  const std::string script = sg::test::source_dir() + "/tests/reference/lora_skill_ref.py";
  const std::string python = shell_quote(sg::test::python());
  sg::test::CommandResult r = run_command(
      python + " -c " +
      shell_quote("import json,sys\nsys.path.insert(0,sys.argv[1])\nfrom pyref import st\n"
                  "t=st.load_file(sys.argv[2])\njson.dump({k:list(v.shape) for k,v in t.items()},open(sys.argv[3],'w'))") +
      " " + shell_quote(sg::test::source_dir() + "/tests/reference") + " " + shell_quote(base + "/model.safetensors") + " " +
      shell_quote(root_ + "/shapes.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command(python + " " + shell_quote(script) + " peft-write " + shell_quote(root_ + "/shapes.json") + " llama " +
                  shell_quote(root_ + "/adapter") + " " + shell_quote(root_ + "/expected.safetensors"));
  ASSERT_EQ(r.exit_code, 0) << r.output;

  ASSERT_EQ(library("init --lib " + lib_).exit_code, 0);
  r = library("import --lib " + lib_ + " --peft " + shell_quote(root_ + "/adapter") + " --base " + shell_quote(base) +
              " --name ad --task story --json " + shell_quote(root_ + "/import.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  nlohmann::json imported = read_json(root_ + "/import.json");
  EXPECT_EQ(imported["kind"], "lora");
  EXPECT_EQ(imported["task"], "story");
  {
    sg::model::LoadedModel model = sg::model::load_model_dir(base);
    EXPECT_EQ(imported["base_fingerprint"], sg::io::state_dict_fingerprint(sg::model::model_state_dict(*model.model)));
  }
  EXPECT_EQ(imported["provenance"]["inputs"].size(), 2u);

  r = library("export --lib " + lib_ + " ad --peft " + shell_quote(root_ + "/exported"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command(python + " " + shell_quote(script) + " peft-check " + shell_quote(root_ + "/exported") + " " +
                  shell_quote(root_ + "/expected.safetensors"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "ok 15")) << r.output;
  EXPECT_EQ(read_json(root_ + "/exported/adapter_config.json")["base_model_name_or_path"], "tiny-llama");

  // The export imported again: the same LoRA skill, bit for bit.
  r = library("import --lib " + lib_ + " --peft " + shell_quote(root_ + "/exported") + " --base " + shell_quote(base) +
              " --name ad2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_EQ(library("export --lib " + lib_ + " ad --out " + shell_quote(root_ + "/ad.safetensors")).exit_code, 0);
  ASSERT_EQ(library("export --lib " + lib_ + " ad2 --out " + shell_quote(root_ + "/ad2.safetensors")).exit_code, 0);
  sg::skills::LoraSkill first = sg::skills::load_lora_skill(root_ + "/ad.safetensors");
  sg::skills::LoraSkill second = sg::skills::load_lora_skill(root_ + "/ad2.safetensors");
  ASSERT_EQ(first.tensors.size(), 15u);
  ASSERT_EQ(second.tensors.size(), first.tensors.size());
  for (const auto& [name, tensor] : first.tensors) {
    ASSERT_TRUE(second.tensors.count(name)) << name;
    const auto& other = second.tensors.at(name);
    EXPECT_TRUE(tensor.a.equal(other.a) && tensor.b.equal(other.b)) << name;
    EXPECT_EQ(tensor.scale, other.scale) << name;
    EXPECT_EQ(tensor.shape, other.shape) << name;
  }
  EXPECT_EQ(first.base_fingerprint, second.base_fingerprint);

  // Wrong uses: --peft on a sparse skill; --peft without --base.
  sg::test::SkillFileFacts sparse = sg::test::make_test_skill(root_ + "/sparse.safetensors", 1, "upper");
  ASSERT_EQ(library("add --lib " + lib_ + " " + shell_quote(sparse.path)).exit_code, 0);
  sg::test::expect_one_line_error("library export --lib " + lib_ + " sparse --peft " + shell_quote(root_ + "/no"),
                                  {"sparse skill", "LoRA skills only"}, true);
  EXPECT_FALSE(fs::exists(root_ + "/no"));
  sg::test::expect_one_line_error("library import --lib " + lib_ + " --peft " + shell_quote(root_ + "/adapter"),
                                  {"--peft needs --base"}, true);
}

}  // namespace
