// The skill library's catalog: one SQLite file (WAL mode, so readers never wait for a writer) with a
// row per skill. Only rows: blobs and the order of blob and row steps are library.h's business.
// One Catalog is one SQLite connection: use it from one thread at a time (open one per thread).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

struct sqlite3;

namespace sg::library {

// The catalog's schema version (table schema_version); a catalog of another version is refused.
constexpr int kCatalogSchemaVersion = 1;

// One skill in the library.
struct Entry {
  std::string id;                // sha256 hex of the skill file's bytes (the blob's name)
  std::string name;              // unique in the library
  std::string kind;              // sparse | lora | dense | neurons
  std::string base_fingerprint;  // the base model the skill was made from
  std::string task;
  nlohmann::json metrics = nlohmann::json::object();
  int64_t parameter_count = 0;
  int64_t file_bytes = 0;
  std::string created;  // when it was added, UTC ISO 8601
  nlohmann::json provenance = nlohmann::json::object();  // {"command", "inputs": [...], ...}

  nlohmann::json to_json() const;
};

// Empty fields match everything; base_fingerprint and id filters also match a prefix.
struct EntryFilter {
  std::string base_fingerprint;
  std::string task;
  std::string kind;
};

class Catalog {
 public:
  // Creates a new catalog file atomically (built under a temp name, then renamed): WAL mode, the
  // schema and its version. Throws if `path` exists.
  static void create(const std::string& path);
  // Opens an existing catalog read-write (busy_timeout set); throws naming the path when it is
  // missing, not SQLite, or not a skillgraft catalog of this schema version.
  explicit Catalog(const std::string& path);
  ~Catalog();
  Catalog(const Catalog&) = delete;
  Catalog& operator=(const Catalog&) = delete;

  const std::string& path() const { return path_; }

  // BEGIN IMMEDIATE (takes SQLite's write lock, waiting up to the busy timeout) ... COMMIT; rolled
  // back when destroyed uncommitted.
  class Transaction {
   public:
    explicit Transaction(Catalog& catalog);
    ~Transaction();
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    void commit();

   private:
    Catalog& catalog_;
    bool done_ = false;
  };

  // Inside a Transaction. insert throws for a duplicate id or name (callers check first for a
  // friendlier message).
  void insert(const Entry& entry);
  bool remove(const std::string& id);

  std::optional<Entry> find_by_id(const std::string& id);
  std::optional<Entry> find_by_name(const std::string& name);
  std::vector<Entry> find_by_id_prefix(const std::string& prefix);
  // Sorted by name.
  std::vector<Entry> list(const EntryFilter& filter = {});
  std::vector<std::string> ids();
  int64_t count();
  // PRAGMA quick_check: "ok" or SQLite's first complaint.
  std::string quick_check();

 private:
  void exec(const std::string& sql);
  std::vector<Entry> query(const std::string& sql, const std::vector<std::string>& args);
  std::string path_;
  sqlite3* db_ = nullptr;
};

}  // namespace sg::library
