// The skill library: a directory holding catalog.sqlite (one row per skill, catalog.h) and the skill
// files as content-addressed blobs (blob_store.h). Keeps skills safely: a process killed at any
// instant leaves the library in its old or its new state, never with a half entry.
//
// Layout: DIR/catalog.sqlite (+ -wal, -shm), DIR/blobs/<2 hex>/<sha256>.safetensors, DIR/blobs/tmp/
// (writers' temp files), DIR/lock (the writers' lock, an flock).
//
// Crash safety. add: copy + hash into a locked temp file, fsync (killed: a stale temp file) ->
// take the write lock -> rename to the blob path, fsync the directory (killed: an orphan blob) ->
// insert the row in one transaction (killed: SQLite rolls it back; an orphan blob). rm: under the
// write lock, delete the row in one transaction (killed: nothing changed) -> unlink the blob
// (killed: an orphan blob). So every row always has its complete blob; the leftovers of a killed
// writer are garbage that `verify` reports and `verify --fix` deletes.
//
// Concurrency. Readers (list, show, export) take no lock and work while a writer adds (SQLite WAL).
// Writers (add, rm, verify's orphan scan) serialise on DIR/lock, released by the kernel if the
// holder dies. A Library object is one SQLite connection: one thread at a time; open one per thread.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "library/blob_store.h"
#include "library/catalog.h"

namespace sg::library {

struct AddOptions {
  std::string name;  // "" = the file's name without .safetensors (or "<task>-<id prefix>")
  std::string task;  // "" = the task in the skill file's header
  // Recorded as the entry's provenance: {"command": "...", "inputs": [...]} (inputs default to the
  // absolute path of the added file).
  nlohmann::json provenance = nlohmann::json::object();
};

struct AddResult {
  Entry entry;
  bool added = true;  // false: the same bytes were already in the library (entry is that row)
};

// What verify found. Problems: corrupt (hash or size differs), missing (row without blob), a catalog
// that fails SQLite's quick_check. Garbage (a killed writer's leftovers, or foreign files): orphans
// (files under blobs/ without a row) and stale temp files. ok() when there is neither.
struct VerifyReport {
  std::string library;
  int64_t entries = 0;   // rows checked
  int64_t verified = 0;  // rows whose blob hashed right
  struct Bad {
    std::string id, name, path, detail;
  };
  std::vector<Bad> corrupt;
  std::vector<Bad> missing;
  std::vector<std::string> orphans;
  std::vector<std::string> stale_temps;
  std::vector<std::string> removed;  // with fix: the garbage deleted
  std::string catalog_check = "ok";
  bool ok() const;
  // No row lost or damaged (garbage allowed).
  bool entries_ok() const;
  nlohmann::json to_json() const;
};

class Library {
 public:
  // Makes DIR a library (creating DIR if missing) and opens it; an existing library is just opened.
  // Throws if DIR holds a catalog.sqlite that is not a skillgraft catalog.
  static Library init(const std::string& dir);
  // Opens an existing library; throws "not a skill library; hint: skillgraft library init" otherwise.
  static Library open(const std::string& dir);
  static bool is_library(const std::string& dir);

  Library(Library&&) noexcept;
  Library& operator=(Library&&) noexcept;
  ~Library();

  const std::string& dir() const { return dir_; }

  // Adds a skill file (any kind; validated: a file that is not a skillgraft skill throws). Adding
  // bytes already present returns that entry (added=false) and rewrites its blob (repairing a corrupt
  // one). Throws for a name another entry has.
  AddResult add(const std::string& file, const AddOptions& options = {});
  // Sorted by name.
  std::vector<Entry> list(const EntryFilter& filter = {});
  int64_t count();
  // By full id, exact name, or unique id prefix (>= 6 hex digits); throws for an unknown or
  // ambiguous one, naming the library.
  Entry find(const std::string& id_or_name);
  // find() plus re-hashing its blob: throws for a missing or corrupt blob. *blob_path (if given):
  // where the verified file is (read-only; do not modify).
  Entry verified(const std::string& id_or_name, std::string* blob_path = nullptr);
  // Deletes the row, then the blob. Returns the removed entry.
  Entry remove(const std::string& id_or_name);
  // Writes the skill file to out_path (atomically), checking its hash while copying: the output is
  // the exact bytes added, or nothing (a corrupt blob or a concurrent rm throws, writing nothing).
  Entry export_file(const std::string& id_or_name, const std::string& out_path);
  // Re-hashes every blob and looks for orphans and stale temp files; fix deletes the garbage
  // (never a row or a blob with a row).
  VerifyReport verify(bool fix = false);

  BlobStore& blobs() { return *blobs_; }
  Catalog& catalog() { return *catalog_; }

 private:
  Library(std::string dir);
  std::string dir_;
  std::unique_ptr<BlobStore> blobs_;
  std::unique_ptr<Catalog> catalog_;
};

// Names: 1-128 characters from letters, digits and "._-+:@", not starting with '-', and not 64
// hex digits (that reads as an id). Throws saying so.
void check_entry_name(const std::string& name);

}  // namespace sg::library
