#include "library/catalog.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "util/error.h"
#include "util/file.h"

namespace sg::library {

namespace {

// A writer waits this long for another writer's transaction before giving up.
constexpr int kBusyTimeoutMs = 30000;

constexpr const char* kSchema = R"sql(
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE skills (
  id TEXT PRIMARY KEY NOT NULL,
  name TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL,
  base_fingerprint TEXT NOT NULL,
  task TEXT NOT NULL,
  metrics TEXT NOT NULL,
  parameter_count INTEGER NOT NULL,
  file_bytes INTEGER NOT NULL,
  created TEXT NOT NULL,
  provenance TEXT NOT NULL
);
CREATE INDEX skills_by_base ON skills (base_fingerprint);
CREATE INDEX skills_by_task ON skills (task);
)sql";

constexpr const char* kColumns =
    "id, name, kind, base_fingerprint, task, metrics, parameter_count, file_bytes, created, provenance";

// A prepared statement, finalized on destruction.
class Statement {
 public:
  Statement(sqlite3* db, const std::string& sql, const std::string& path) : db_(db), path_(path) {
    int rc = sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt_, nullptr);
    SG_CHECK(rc == SQLITE_OK, path << ": catalog query failed (" << sqlite3_errmsg(db)
                                   << "); hint: is this a skillgraft library catalog?");
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  void bind(int index, const std::string& value) {
    check(sqlite3_bind_text(stmt_, index, value.c_str(), static_cast<int>(value.size()), SQLITE_TRANSIENT));
  }
  void bind(int index, int64_t value) { check(sqlite3_bind_int64(stmt_, index, value)); }
  // True while a row is available.
  bool step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    check(rc == SQLITE_DONE ? SQLITE_OK : rc);
    return false;
  }
  std::string text(int column) const {
    const unsigned char* value = sqlite3_column_text(stmt_, column);
    return value == nullptr ? "" : std::string(reinterpret_cast<const char*>(value),
                                               static_cast<size_t>(sqlite3_column_bytes(stmt_, column)));
  }
  int64_t integer(int column) const { return sqlite3_column_int64(stmt_, column); }

 private:
  void check(int rc) {
    SG_CHECK(rc == SQLITE_OK, path_ << ": catalog error (" << sqlite3_errmsg(db_)
                                    << (rc == SQLITE_BUSY ? "; hint: another writer holds the library for too long"
                                                          : "")
                                    << ")");
  }
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  std::string path_;
};

nlohmann::json parse_json_column(const std::string& text, const std::string& what, const std::string& path) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception&) {
    SG_FAIL(path << ": catalog column " << what << " is not valid JSON; hint: the catalog is damaged");
  }
}

Entry read_entry(const Statement& row, const std::string& path) {
  Entry entry;
  entry.id = row.text(0);
  entry.name = row.text(1);
  entry.kind = row.text(2);
  entry.base_fingerprint = row.text(3);
  entry.task = row.text(4);
  entry.metrics = parse_json_column(row.text(5), "metrics", path);
  entry.parameter_count = row.integer(6);
  entry.file_bytes = row.integer(7);
  entry.created = row.text(8);
  entry.provenance = parse_json_column(row.text(9), "provenance", path);
  return entry;
}

void exec_on(sqlite3* db, const std::string& sql, const std::string& path) {
  char* message = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &message);
  std::string why = message != nullptr ? message : sqlite3_errstr(rc);
  sqlite3_free(message);
  SG_CHECK(rc == SQLITE_OK, path << ": catalog error (" << why << ")");
}

}  // namespace

nlohmann::json Entry::to_json() const {
  return {{"id", id},
          {"name", name},
          {"kind", kind},
          {"base_fingerprint", base_fingerprint},
          {"task", task},
          {"metrics", metrics},
          {"parameter_count", parameter_count},
          {"file_bytes", file_bytes},
          {"created", created},
          {"provenance", provenance}};
}

void Catalog::create(const std::string& path) {
  SG_CHECK(!util::file_exists(path), path << ": already exists");
  const std::string temp = path + ".tmp." + std::to_string(::getpid());
  ::unlink(temp.c_str());
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(temp.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  if (rc != SQLITE_OK) {
    std::string why = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    SG_FAIL(temp << ": cannot create the catalog (" << why << "); hint: is the directory writable?");
  }
  try {
    exec_on(db, "PRAGMA journal_mode=WAL;", temp);
    exec_on(db, std::string("BEGIN;") + kSchema + "INSERT INTO schema_version VALUES (" +
                    std::to_string(kCatalogSchemaVersion) + ");COMMIT;",
            temp);
  } catch (...) {
    sqlite3_close(db);
    ::unlink(temp.c_str());
    throw;
  }
  // Closing the last connection checkpoints the WAL into the file and deletes it.
  SG_CHECK(sqlite3_close(db) == SQLITE_OK, temp << ": cannot close the new catalog");
  int fd = ::open(temp.c_str(), O_RDONLY | O_CLOEXEC);
  SG_CHECK(fd >= 0 && ::fsync(fd) == 0, temp << ": fsync failed (" << std::strerror(errno) << ")");
  ::close(fd);
  SG_CHECK(::rename(temp.c_str(), path.c_str()) == 0,
           path << ": cannot rename the new catalog into place (" << std::strerror(errno) << ")");
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  util::fsync_directory(parent.empty() ? "." : parent.string());
}

Catalog::Catalog(const std::string& path) : path_(path) {
  SG_CHECK(util::file_exists(path) && !util::is_directory(path), path << ": no catalog here");
  int rc = sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE, nullptr);
  if (rc != SQLITE_OK) {
    std::string why = db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    sqlite3_close(db_);
    db_ = nullptr;
    SG_FAIL(path << ": cannot open the catalog (" << why << ")");
  }
  try {
    sqlite3_busy_timeout(db_, kBusyTimeoutMs);
    // FULL: a committed add survives a power cut too, not only a killed process.
    exec("PRAGMA synchronous=FULL;");
    int version = -1;
    {
      Statement statement(db_, "SELECT version FROM schema_version", path_);
      if (statement.step()) version = static_cast<int>(statement.integer(0));
    }
    SG_CHECK(version == kCatalogSchemaVersion,
             path << ": catalog schema version " << version << " is not supported (this tool reads version "
                  << kCatalogSchemaVersion << "); hint: use the skillgraft that made the library");
  } catch (...) {
    sqlite3_close(db_);
    db_ = nullptr;
    throw;
  }
}

Catalog::~Catalog() {
  if (db_ != nullptr) sqlite3_close(db_);
}

void Catalog::exec(const std::string& sql) { exec_on(db_, sql, path_); }

Catalog::Transaction::Transaction(Catalog& catalog) : catalog_(catalog) { catalog_.exec("BEGIN IMMEDIATE;"); }

Catalog::Transaction::~Transaction() {
  if (!done_) sqlite3_exec(catalog_.db_, "ROLLBACK;", nullptr, nullptr, nullptr);
}

void Catalog::Transaction::commit() {
  SG_CHECK(!done_, catalog_.path_ << ": transaction committed twice");
  catalog_.exec("COMMIT;");
  done_ = true;
}

void Catalog::insert(const Entry& entry) {
  Statement statement(db_, std::string("INSERT INTO skills (") + kColumns + ") VALUES (?,?,?,?,?,?,?,?,?,?)", path_);
  statement.bind(1, entry.id);
  statement.bind(2, entry.name);
  statement.bind(3, entry.kind);
  statement.bind(4, entry.base_fingerprint);
  statement.bind(5, entry.task);
  statement.bind(6, entry.metrics.dump());
  statement.bind(7, entry.parameter_count);
  statement.bind(8, entry.file_bytes);
  statement.bind(9, entry.created);
  statement.bind(10, entry.provenance.dump());
  statement.step();
}

bool Catalog::remove(const std::string& id) {
  Statement statement(db_, "DELETE FROM skills WHERE id = ?", path_);
  statement.bind(1, id);
  statement.step();
  return sqlite3_changes(db_) > 0;
}

std::vector<Entry> Catalog::query(const std::string& sql, const std::vector<std::string>& args) {
  Statement statement(db_, sql, path_);
  for (size_t i = 0; i < args.size(); ++i) statement.bind(static_cast<int>(i + 1), args[i]);
  std::vector<Entry> entries;
  while (statement.step()) entries.push_back(read_entry(statement, path_));
  return entries;
}

std::optional<Entry> Catalog::find_by_id(const std::string& id) {
  auto rows = query(std::string("SELECT ") + kColumns + " FROM skills WHERE id = ?", {id});
  if (rows.empty()) return std::nullopt;
  return rows.front();
}

std::optional<Entry> Catalog::find_by_name(const std::string& name) {
  auto rows = query(std::string("SELECT ") + kColumns + " FROM skills WHERE name = ?", {name});
  if (rows.empty()) return std::nullopt;
  return rows.front();
}

std::vector<Entry> Catalog::find_by_id_prefix(const std::string& prefix) {
  return query(std::string("SELECT ") + kColumns + " FROM skills WHERE substr(id, 1, length(?1)) = ?1 ORDER BY id",
               {prefix});
}

std::vector<Entry> Catalog::list(const EntryFilter& filter) {
  return query(std::string("SELECT ") + kColumns +
                   " FROM skills WHERE (?1 = '' OR substr(base_fingerprint, 1, length(?1)) = ?1)"
                   " AND (?2 = '' OR task = ?2) AND (?3 = '' OR kind = ?3) ORDER BY name",
               {filter.base_fingerprint, filter.task, filter.kind});
}

std::vector<std::string> Catalog::ids() {
  Statement statement(db_, "SELECT id FROM skills ORDER BY id", path_);
  std::vector<std::string> out;
  while (statement.step()) out.push_back(statement.text(0));
  return out;
}

int64_t Catalog::count() {
  Statement statement(db_, "SELECT count(*) FROM skills", path_);
  SG_CHECK(statement.step(), path_ << ": count failed");
  return statement.integer(0);
}

std::string Catalog::quick_check() {
  Statement statement(db_, "PRAGMA quick_check", path_);
  std::string result = statement.step() ? statement.text(0) : "no answer";
  return result;
}

}  // namespace sg::library
