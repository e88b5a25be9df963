// The skill library (src/library): add/list/show/rm/export round trips, filters, names, bad input,
// verify (corrupt, missing, orphan, stale temp), readers during a writer, two writers, export racing
// rm, and crash safety: a writer SIGKILLed at random moments never leaves a half entry.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ATen/Parallel.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <random>
#include <set>
#include <thread>

#include "io/safetensors.h"
#include "library/library.h"
#include "skills/lora_skill.h"
#include "library_test_util.h"
#include "test_env.h"
#include "test_util.h"
#include "util/file.h"
#include "util/sha256.h"

namespace {

namespace fs = std::filesystem;
using sg::library::AddOptions;
using sg::library::Entry;
using sg::library::EntryFilter;
using sg::library::Library;
using sg::test::error_of;
using sg::test::SkillFileFacts;

bool contains(const std::string& text, const std::string& needle) { return text.find(needle) != std::string::npos; }

class LibraryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    at::set_num_threads(1);
    root_ = sg::test::temp_dir("sg-library");
    lib_dir_ = root_ + "/lib";
  }
  SkillFileFacts skill(const std::string& stem, uint64_t seed, const std::string& task, uint64_t base_seed = 1) {
    return sg::test::make_test_skill(root_ + "/" + stem + ".safetensors", seed, task, base_seed);
  }
  std::string root_, lib_dir_;
};

std::string python_out(const std::string& script, const std::string& arg) {
  sg::test::CommandResult r = sg::test::run_command(sg::test::shell_quote(sg::test::python()) + " -c " +
                                                    sg::test::shell_quote(script) + " " + sg::test::shell_quote(arg));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::string out = r.output;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

TEST_F(LibraryTest, InitOpenAndDirectoriesThatAreNotLibraries) {
  EXPECT_TRUE(contains(error_of([&] { Library::open(lib_dir_); }), "library init"));
  sg::util::make_directories(root_ + "/plain");
  std::string message = error_of([&] { Library::open(root_ + "/plain"); });
  EXPECT_TRUE(contains(message, "not a skill library")) << message;
  EXPECT_TRUE(contains(message, "hint: skillgraft library init")) << message;

  Library lib = Library::init(lib_dir_);
  EXPECT_EQ(lib.count(), 0);
  EXPECT_TRUE(Library::is_library(lib_dir_));
  EXPECT_TRUE(sg::util::is_directory(lib_dir_ + "/blobs/tmp"));
  // SQLite itself (Python's module) says: WAL mode, schema version 1, the skills table.
  EXPECT_EQ(python_out("import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nprint(c.execute('pragma journal_mode').fetchone()[0],"
                       "c.execute('select version from schema_version').fetchone()[0],"
                       "[r[1] for r in c.execute('pragma table_info(skills)')])",
                       lib_dir_ + "/catalog.sqlite"),
            "wal 1 ['id', 'name', 'kind', 'base_fingerprint', 'task', 'metrics', 'parameter_count', 'file_bytes', "
            "'created', 'provenance']");
  // init again: the same library, untouched.
  SkillFileFacts a = skill("a", 1, "upper");
  lib.add(a.path);
  EXPECT_EQ(Library::init(lib_dir_).count(), 1);

  // A catalog.sqlite that is not SQLite, and one of another schema version.
  sg::util::make_directories(root_ + "/fake/blobs");
  sg::test::write_bytes(root_ + "/fake/catalog.sqlite", "not a database at all, just some text bytes........");
  message = error_of([&] { Library::open(root_ + "/fake"); });
  EXPECT_TRUE(contains(message, "catalog.sqlite")) << message;
  python_out("import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nc.execute('update schema_version set version=99')\nc.commit()",
             lib_dir_ + "/catalog.sqlite");
  message = error_of([&] { Library::open(lib_dir_); });
  EXPECT_TRUE(contains(message, "schema version 99 is not supported")) << message;
}

TEST_F(LibraryTest, AddListShowRemoveExportRoundTrip) {
  Library lib = Library::init(lib_dir_);
  std::vector<SkillFileFacts> facts = {skill("upper-graft", 1, "upper"), skill("reverse-graft", 2, "reverse"),
                                       skill("copy-graft", 3, "copy")};
  std::vector<std::string> paths;
  for (const auto& f : facts) paths.push_back(f.path);
  std::vector<std::string> hashes = sg::test::python_sha256(paths);

  for (size_t i = 0; i < facts.size(); ++i) {
    AddOptions options;
    options.provenance = {{"command", "test add"}};
    sg::library::AddResult result = lib.add(facts[i].path, options);
    EXPECT_TRUE(result.added);
    const Entry& e = result.entry;
    EXPECT_EQ(e.id, hashes[i]);
    EXPECT_EQ(e.name, fs::path(facts[i].path).stem().string());  // the default name
    EXPECT_EQ(e.kind, "sparse");
    EXPECT_EQ(e.task, facts[i].task);
    EXPECT_EQ(e.base_fingerprint, facts[i].base_fingerprint);
    EXPECT_EQ(e.parameter_count, facts[i].parameter_count);
    EXPECT_EQ(e.file_bytes, static_cast<int64_t>(fs::file_size(facts[i].path)));
    EXPECT_TRUE(e.metrics.contains("nudged_elements"));  // the skill file's metrics
    EXPECT_EQ(e.provenance["command"], "test add");
    EXPECT_EQ(e.provenance["inputs"][0], fs::absolute(facts[i].path).lexically_normal().string());
    EXPECT_EQ(e.created.size(), 20u);  // 2025-01-02T03:04:05Z
    EXPECT_EQ(sg::test::read_bytes(lib_dir_ + "/blobs/" + hashes[i].substr(0, 2) + "/" + hashes[i] + ".safetensors"),
              sg::test::read_bytes(facts[i].path));
  }
  EXPECT_TRUE(fs::is_empty(lib_dir_ + "/blobs/tmp"));

  // list: sorted by name; a second connection sees the same rows.
  Library other = Library::open(lib_dir_);
  std::vector<Entry> all = other.list();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].name, "copy-graft");
  EXPECT_EQ(all[1].name, "reverse-graft");
  EXPECT_EQ(all[2].name, "upper-graft");
  EXPECT_EQ(all[2].to_json(), lib.find("upper-graft").to_json());

  // find by name, full id, id prefix; verified() re-hashes.
  EXPECT_EQ(lib.find(hashes[1]).name, "reverse-graft");
  EXPECT_EQ(lib.find(hashes[1].substr(0, 8)).name, "reverse-graft");
  std::string blob;
  EXPECT_EQ(lib.verified("copy-graft", &blob).id, hashes[2]);
  EXPECT_EQ(blob, lib_dir_ + "/blobs/" + hashes[2].substr(0, 2) + "/" + hashes[2] + ".safetensors");
  EXPECT_NO_THROW(sg::skills::load_sparse_skill(blob));
  std::string message = error_of([&] { lib.find("nope"); });
  EXPECT_TRUE(contains(message, "no skill named \"nope\"") && contains(message, "hint")) << message;

  // export: byte for byte.
  for (size_t i = 0; i < facts.size(); ++i) {
    const std::string out = root_ + "/out" + std::to_string(i) + ".safetensors";
    lib.export_file(hashes[i].substr(0, 10), out);
    EXPECT_EQ(sg::test::read_bytes(out), sg::test::read_bytes(facts[i].path));
  }

  // rm: the row, then the blob; the name is free again.
  Entry removed = lib.remove("reverse-graft");
  EXPECT_EQ(removed.id, hashes[1]);
  EXPECT_EQ(lib.count(), 2);
  EXPECT_FALSE(fs::exists(lib_dir_ + "/blobs/" + hashes[1].substr(0, 2) + "/" + hashes[1] + ".safetensors"));
  EXPECT_TRUE(contains(error_of([&] { lib.find("reverse-graft"); }), "no skill named"));
  EXPECT_TRUE(contains(error_of([&] { lib.remove("reverse-graft"); }), "no skill named"));
  EXPECT_TRUE(contains(error_of([&] { lib.export_file("reverse-graft", root_ + "/x.safetensors"); }), "no skill named"));
  EXPECT_FALSE(fs::exists(root_ + "/x.safetensors"));
  EXPECT_TRUE(lib.add(facts[1].path).added);
  EXPECT_EQ(lib.count(), 3);
  EXPECT_TRUE(lib.verify().ok());
}

TEST_F(LibraryTest, SameBytesAreOneEntryAndNamesAreUnique) {
  Library lib = Library::init(lib_dir_);
  SkillFileFacts a = skill("a", 1, "upper");
  SkillFileFacts b = skill("b", 2, "upper");
  AddOptions named;
  named.name = "first";
  EXPECT_TRUE(lib.add(a.path, named).added);
  // The same bytes again (under another file name and asked name): the existing entry.
  fs::copy_file(a.path, root_ + "/a-copy.safetensors");
  named.name = "second";
  sg::library::AddResult again = lib.add(root_ + "/a-copy.safetensors", named);
  EXPECT_FALSE(again.added);
  EXPECT_EQ(again.entry.name, "first");
  EXPECT_EQ(lib.count(), 1);
  // A taken name: refused, and nothing left behind.
  named.name = "first";
  std::string message = error_of([&] { lib.add(b.path, named); });
  EXPECT_TRUE(contains(message, "the name \"first\" is taken") && contains(message, "hint")) << message;
  EXPECT_EQ(lib.count(), 1);
  EXPECT_TRUE(lib.verify().ok());
  // Names: bad characters, an id-looking name; --task overrides the file's task.
  for (const std::string& bad : {std::string("has space"), std::string("-dash"), std::string(64, 'a'), std::string("")}) {
    named.name = bad;
    if (bad.empty()) continue;  // "" means the default name
    EXPECT_TRUE(contains(error_of([&] { lib.add(b.path, named); }), "skill name")) << bad;
  }
  named.name = "b-renamed";
  named.task = "other-task";
  Entry e = lib.add(b.path, named).entry;
  EXPECT_EQ(e.task, "other-task");
  EXPECT_EQ(lib.list({"", "other-task", ""}).size(), 1u);
  // A file named by its hash (an exported blob) gets "<task>-<id prefix>".
  SkillFileFacts c = skill("c", 3, "copy");
  const std::string hash = sg::test::python_sha256({c.path})[0];
  fs::copy_file(c.path, root_ + "/" + hash + ".safetensors");
  EXPECT_EQ(lib.add(root_ + "/" + hash + ".safetensors").entry.name, "copy-" + hash.substr(0, 12));
}

TEST_F(LibraryTest, ListFilters) {
  Library lib = Library::init(lib_dir_);
  SkillFileFacts a = skill("a", 1, "upper", /*base_seed=*/1);
  SkillFileFacts b = skill("b", 2, "reverse", /*base_seed=*/1);
  SkillFileFacts c = skill("c", 3, "upper", /*base_seed=*/2);
  ASSERT_NE(a.base_fingerprint, c.base_fingerprint);
  for (const auto& f : {a, b, c}) lib.add(f.path);
  auto names = [&](const EntryFilter& filter) {
    std::vector<std::string> out;
    for (const Entry& e : lib.list(filter)) out.push_back(e.name);
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(names({}), (V{"a", "b", "c"}));
  EXPECT_EQ(names({a.base_fingerprint, "", ""}), (V{"a", "b"}));
  EXPECT_EQ(names({c.base_fingerprint.substr(0, 6), "", ""}), (V{"c"}));
  EXPECT_EQ(names({"", "upper", ""}), (V{"a", "c"}));
  EXPECT_EQ(names({a.base_fingerprint, "upper", ""}), (V{"a"}));
  EXPECT_EQ(names({"", "", "sparse"}), (V{"a", "b", "c"}));
  EXPECT_EQ(names({"", "", "lora"}), V{});
  EXPECT_EQ(names({"", "nope", ""}), V{});
}

// LoRA and dense skill files go in too, their kind and parameter count from the header.
TEST_F(LibraryTest, AddsLoraAndDenseSkills) {
  Library lib = Library::init(lib_dir_);
  SkillFileFacts sparse = skill("sparse", 1, "upper");
  at::manual_seed(3);
  sg::skills::LoraSkill lora;
  lora.base_fingerprint = sparse.base_fingerprint;
  lora.task = "upper";
  lora.tensors["model.layers.0.mlp.up_proj.weight"] = {at::randn({2, 8}), at::randn({16, 2}), 0.5, {16, 8}, false};
  sg::skills::save_lora_skill(root_ + "/lora.safetensors", lora);
  sg::skills::DenseSkill dense;
  dense.base_fingerprint = sparse.base_fingerprint;
  dense.task = "upper";
  dense.tensors["model.layers.0.mlp.up_proj.weight"] = at::randn({16, 8});
  sg::skills::save_dense_skill(root_ + "/dense.safetensors", dense);
  lib.add(sparse.path);
  Entry lora_entry = lib.add(root_ + "/lora.safetensors").entry;
  Entry dense_entry = lib.add(root_ + "/dense.safetensors").entry;
  EXPECT_EQ(lora_entry.kind, "lora");
  EXPECT_EQ(lora_entry.parameter_count, 2 * 8 + 16 * 2);
  EXPECT_EQ(dense_entry.kind, "dense");
  EXPECT_EQ(dense_entry.parameter_count, 16 * 8);
  EXPECT_EQ(lib.list({"", "", "lora"}).size(), 1u);
  EXPECT_EQ(lib.list({sparse.base_fingerprint, "upper", ""}).size(), 3u);
  sg::skills::LoraSkill back = sg::skills::load_lora_skill(lib.blobs().path_of(lora_entry.id));
  EXPECT_TRUE(back.tensors.at("model.layers.0.mlp.up_proj.weight").b.equal(lora.tensors.at("model.layers.0.mlp.up_proj.weight").b));
  EXPECT_TRUE(lib.verify().ok());
}

TEST_F(LibraryTest, RefusesFilesThatAreNotSkills) {
  Library lib = Library::init(lib_dir_);
  // A safetensors file without skill metadata, a text file, a missing file, a directory.
  sg::io::StateDict tensors;
  tensors.insert("w", at::ones({2, 2}));
  sg::io::save_safetensors(root_ + "/plain.safetensors", tensors);
  sg::test::write_bytes(root_ + "/text.safetensors", "hello, not a safetensors file");
  for (const std::string& path : {root_ + "/plain.safetensors", root_ + "/text.safetensors"}) {
    std::string message = error_of([&] { lib.add(path); });
    EXPECT_TRUE(contains(message, "not a skill file")) << message;
    EXPECT_TRUE(contains(message, path)) << message;           // the user's path,
    EXPECT_FALSE(contains(message, "blobs/tmp")) << message;  // not the temp copy's
  }
  EXPECT_TRUE(contains(error_of([&] { lib.add(root_ + "/missing.safetensors"); }), "cannot open"));
  EXPECT_TRUE(contains(error_of([&] { lib.add(root_); }), "is a directory"));
  // A skill file whose sparse data is damaged (indices past the tensor's end): validated on add.
  SkillFileFacts a = skill("a", 1, "upper");
  sg::io::Metadata metadata;
  sg::io::StateDict file = sg::io::load_safetensors(a.path, &metadata);
  sg::io::StateDict damaged;
  for (const auto& item : file) {
    at::Tensor value = item.value().clone();
    if (item.key() == "model.norm.weight.idx") value[-1] = 1000;
    damaged.insert(item.key(), value);
  }
  sg::io::save_safetensors(root_ + "/damaged.safetensors", damaged, metadata);
  EXPECT_NE(error_of([&] { lib.add(root_ + "/damaged.safetensors"); }), "(no error)");
  EXPECT_EQ(lib.count(), 0);
  EXPECT_TRUE(fs::is_empty(lib_dir_ + "/blobs/tmp"));
  EXPECT_TRUE(lib.verify().ok());  // no orphan, no temp file left
}

TEST_F(LibraryTest, VerifyFindsCorruptMissingOrphansAndStaleTempsAndUseRefusesCorrupt) {
  Library lib = Library::init(lib_dir_);
  SkillFileFacts a = skill("a", 1, "upper");
  SkillFileFacts b = skill("b", 2, "reverse");
  Entry ea = lib.add(a.path).entry;
  Entry eb = lib.add(b.path).entry;
  sg::library::VerifyReport report = lib.verify();
  EXPECT_TRUE(report.ok());
  EXPECT_EQ(report.entries, 2);
  EXPECT_EQ(report.verified, 2);

  // Flip one byte of a's blob (in the data section, so the file still parses).
  const std::string blob_a = lib.blobs().path_of(ea.id);
  std::string bytes = sg::test::read_bytes(blob_a);
  bytes[bytes.size() - 3] ^= 0x01;
  EXPECT_EQ(fs::status(blob_a).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);  // blobs are read-only
  fs::permissions(blob_a, fs::perms::owner_write, fs::perm_options::add);
  sg::test::write_bytes(blob_a, bytes);
  report = lib.verify();
  EXPECT_FALSE(report.ok());
  ASSERT_EQ(report.corrupt.size(), 1u);
  EXPECT_EQ(report.corrupt[0].name, "a");
  EXPECT_EQ(report.verified, 1);
  std::string message = error_of([&] { lib.verified("a"); });
  EXPECT_TRUE(contains(message, "corrupt") && contains(message, "hint")) << message;
  message = error_of([&] { lib.export_file("a", root_ + "/out.safetensors"); });
  EXPECT_TRUE(contains(message, "corrupt") && contains(message, "nothing written")) << message;
  EXPECT_FALSE(fs::exists(root_ + "/out.safetensors"));
  // Adding the original again repairs the blob.
  EXPECT_FALSE(lib.add(a.path).added);
  EXPECT_TRUE(lib.verify().ok());

  // A blob deleted behind the library's back: missing.
  fs::remove(lib.blobs().path_of(eb.id));
  report = lib.verify();
  ASSERT_EQ(report.missing.size(), 1u);
  EXPECT_EQ(report.missing[0].name, "b");
  EXPECT_FALSE(report.ok());
  EXPECT_TRUE(contains(error_of([&] { lib.verified("b"); }), "missing"));
  lib.add(b.path);

  // Orphans (a blob without a row; a foreign file) and a stale temp file (nobody holds its lock).
  const std::string orphan_id = std::string(64, 'e');
  sg::util::make_directories(lib_dir_ + "/blobs/ee");
  fs::copy_file(a.path, lib_dir_ + "/blobs/ee/" + orphan_id + ".safetensors");
  sg::test::write_bytes(lib_dir_ + "/blobs/ee/notes.txt", "x");
  sg::test::write_bytes(lib_dir_ + "/blobs/tmp/123-abc.tmp", "half a skill");
  report = lib.verify();
  EXPECT_TRUE(report.entries_ok());
  EXPECT_FALSE(report.ok());
  EXPECT_EQ(report.orphans.size(), 2u);
  EXPECT_EQ(report.stale_temps.size(), 1u);
  EXPECT_EQ(report.to_json()["ok"], false);
  report = lib.verify(/*fix=*/true);
  EXPECT_EQ(report.removed.size(), 3u);
  EXPECT_TRUE(report.ok());
  EXPECT_TRUE(lib.verify().ok());
  EXPECT_EQ(lib.count(), 2);
  EXPECT_EQ(sg::test::read_bytes(lib.blobs().path_of(ea.id)), sg::test::read_bytes(a.path));
}

TEST_F(LibraryTest, ReadersWorkWhileAWriterAdds) {
  Library::init(lib_dir_);
  std::vector<SkillFileFacts> facts;
  for (int i = 0; i < 24; ++i) facts.push_back(skill("s" + std::to_string(i), 100 + i, "task" + std::to_string(i % 3)));
  std::atomic<bool> writer_done{false};
  std::string writer_error;
  std::thread writer([&] {
    try {
      Library lib = Library::open(lib_dir_);
      for (const auto& f : facts) lib.add(f.path);
    } catch (const std::exception& e) {
      writer_error = e.what();
    }
    writer_done = true;
  });
  Library reader = Library::open(lib_dir_);
  int64_t last_count = 0, reads = 0, exports = 0;
  while (!writer_done || reads == 0) {
    std::vector<Entry> entries = reader.list();
    if (static_cast<int64_t>(entries.size()) < last_count) {  // rows only ever appear, whole
      ADD_FAILURE() << "a reader saw the count go from " << last_count << " to " << entries.size();
      break;
    }
    last_count = static_cast<int64_t>(entries.size());
    ++reads;
    if (!entries.empty()) {
      const Entry& e = entries[static_cast<size_t>(reads) % entries.size()];
      const std::string out = root_ + "/read.safetensors";
      reader.export_file(e.id, out);
      EXPECT_EQ(sg::util::sha256_file(out), e.id);
      ++exports;
    }
  }
  writer.join();
  EXPECT_EQ(writer_error, "");
  EXPECT_EQ(reader.count(), 24);
  EXPECT_GT(reads, 1);
  EXPECT_TRUE(reader.verify().ok());
  std::printf("reader: %lld lists and %lld verified exports while the writer added 24 skills\n",
              static_cast<long long>(reads), static_cast<long long>(exports));
}

TEST_F(LibraryTest, TwoWritersSerialize) {
  Library::init(lib_dir_);
  std::vector<SkillFileFacts> facts;
  for (int i = 0; i < 20; ++i) facts.push_back(skill("s" + std::to_string(i), 200 + i, "t"));
  std::string errors[2];
  auto write_half = [&](int half) {
    try {
      Library lib = Library::open(lib_dir_);
      for (size_t i = static_cast<size_t>(half); i < facts.size(); i += 2) lib.add(facts[i].path);
    } catch (const std::exception& e) {
      errors[half] = e.what();
    }
  };
  std::thread first(write_half, 0), second(write_half, 1);
  first.join();
  second.join();
  EXPECT_EQ(errors[0], "");
  EXPECT_EQ(errors[1], "");
  Library lib = Library::open(lib_dir_);
  EXPECT_EQ(lib.count(), 20);
  EXPECT_TRUE(lib.verify().ok());
}

// rm while export runs: the export either completes with the exact bytes or fails saying the skill
// is gone (and writes nothing); never a wrong or partial file.
TEST_F(LibraryTest, ExportRacingRemoveGivesRightBytesOrAClearError) {
  Library lib = Library::init(lib_dir_);
  std::mt19937 rng(5);
  int completed = 0, refused = 0;
  for (int round = 0; round < 20; ++round) {
    SkillFileFacts f = skill("r" + std::to_string(round), 300 + round, "t");
    const std::string original = sg::test::read_bytes(f.path);
    Entry e = lib.add(f.path).entry;
    std::atomic<bool> stop{false};
    std::vector<std::string> outcomes;
    std::thread exporter([&] {
      Library reader = Library::open(lib_dir_);
      for (int i = 0; !stop; ++i) {
        const std::string out = root_ + "/race" + std::to_string(i % 2) + ".safetensors";
        fs::remove(out);
        std::string message = error_of([&] { reader.export_file(e.name, out); });
        if (message == "(no error)") {
          outcomes.push_back(sg::test::read_bytes(out) == original ? "ok" : "WRONG BYTES");
        } else {
          outcomes.push_back(contains(message, "was removed") || contains(message, "no skill named") ? "refused"
                                                                                                     : "BAD ERROR: " + message);
          if (fs::exists(out)) outcomes.push_back("WROTE A FILE ON ERROR");
          break;
        }
      }
    });
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
    lib.remove(e.id);
    stop = true;
    exporter.join();
    for (const std::string& outcome : outcomes) {
      EXPECT_TRUE(outcome == "ok" || outcome == "refused") << outcome;
      completed += outcome == "ok";
      refused += outcome == "refused";
    }
  }
  EXPECT_GT(completed, 0);
  EXPECT_TRUE(lib.verify().ok());
  std::printf("export racing rm: %d completed exports (exact bytes), %d refused\n", completed, refused);
}

// The crash test's writer, run in a forked child: adds pool files and removes entries in a loop that
// never ends (the parent SIGKILLs it). Writes one byte to ready_fd once the library is open.
[[noreturn]] void writer_loop(const std::string& lib_dir, uint64_t seed, const std::vector<std::string>& files,
                              int ready_fd) {
  try {
    Library library = Library::open(lib_dir);
    std::mt19937_64 rng(seed);
    if (::write(ready_fd, "r", 1) != 1) ::_exit(4);
    for (uint64_t op = 0;; ++op) {
      if (rng() % 3 == 0) {
        std::vector<Entry> entries = library.list();
        if (!entries.empty()) library.remove(entries[rng() % entries.size()].id);
      } else {
        AddOptions options;
        options.name = "w" + std::to_string(seed) + "-" + std::to_string(op);
        library.add(files[rng() % files.size()], options);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "writer: %s\n", e.what());
  }
  ::_exit(3);  // never exit(): the parent's temp directories must survive
}

int thread_count() {
  int n = 0;
  for ([[maybe_unused]] const auto& task : fs::directory_iterator("/proc/self/task")) ++n;
  return n;
}

// The crash test: a writer process (adding and removing in a loop) is SIGKILLed at a random moment,
// many times; after every kill the library opens and every row has its blob with the right hash
// and the file's own facts (no half entry). The leftovers (a stale temp file, an orphan blob) are
// garbage that verify reports and verify --fix deletes.
TEST_F(LibraryTest, WriterKilledAtRandomMomentsNeverLeavesAHalfEntry) {
  Library::init(lib_dir_);
  std::vector<SkillFileFacts> pool;
  std::vector<std::string> pool_paths;
  for (int i = 0; i < 30; ++i) {
    pool.push_back(skill("p" + std::to_string(i), 400 + i, "task" + std::to_string(i % 4)));
    pool_paths.push_back(pool.back().path);
  }
  std::vector<std::string> pool_ids = sg::test::python_sha256(pool_paths);
  std::map<std::string, SkillFileFacts> by_id;
  for (size_t i = 0; i < pool.size(); ++i) by_id[pool_ids[i]] = pool[i];
  // fork() without exec is safe only with no other thread (one holding a lock would leave it held).
  ASSERT_EQ(thread_count(), 1);

  constexpr int kKills = 100;
  std::mt19937 rng(2024);
  int with_stale_temp = 0, with_orphan = 0, clean = 0;
  std::set<int64_t> counts_seen;
  for (int kill = 0; kill < kKills; ++kill) {
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(ready[0]);
      writer_loop(lib_dir_, static_cast<uint64_t>(kill), pool_paths, ready[1]);
    }
    ::close(ready[1]);
    char byte = 0;
    const bool started = ::read(ready[0], &byte, 1) == 1;
    ::close(ready[0]);
    if (started) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 30000));
    ::kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(started) << "the writer did not start";
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the writer stopped by itself (an error?)";

    Library lib = Library::open(lib_dir_);
    sg::library::VerifyReport report = lib.verify();
    EXPECT_TRUE(report.entries_ok()) << "after kill " << kill << ": " << report.to_json().dump();
    for (const Entry& e : lib.list()) {
      ASSERT_TRUE(by_id.count(e.id)) << "a row whose id is no pool file's hash: " << e.id;
      const SkillFileFacts& f = by_id[e.id];
      EXPECT_EQ(e.kind, "sparse");
      EXPECT_EQ(e.task, f.task);
      EXPECT_EQ(e.base_fingerprint, f.base_fingerprint);
      EXPECT_EQ(e.parameter_count, f.parameter_count);
      EXPECT_EQ(e.file_bytes, static_cast<int64_t>(fs::file_size(f.path)));
      EXPECT_EQ(sg::util::sha256_file(lib.blobs().path_of(e.id)), e.id);
    }
    counts_seen.insert(lib.count());
    with_stale_temp += !report.stale_temps.empty();
    with_orphan += !report.orphans.empty();
    clean += report.ok();
    // Clear the garbage so the next kill's leftovers are its own.
    sg::library::VerifyReport fixed = lib.verify(/*fix=*/true);
    EXPECT_TRUE(fixed.ok()) << fixed.to_json().dump();
  }
  Library lib = Library::open(lib_dir_);
  EXPECT_TRUE(lib.verify().ok());
  EXPECT_GT(counts_seen.size(), 1u) << "the writer never changed the library between kills";
  std::printf("%d kills: %d left a stale temp file, %d an orphan blob, %d nothing; %zu distinct entry counts\n",
              kKills, with_stale_temp, with_orphan, clean, counts_seen.size());
}

}  // namespace
