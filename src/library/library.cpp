#include "library/library.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <set>
#include <thread>

#include "io/safetensors.h"
#include "skills/lora_skill.h"
#include "skills/skill.h"
#include "util/error.h"
#include "util/file.h"
#include "util/sha256.h"

namespace sg::library {

namespace {

constexpr const char* kCatalogName = "catalog.sqlite";
constexpr const char* kBlobsName = "blobs";
constexpr const char* kLockName = "lock";
// A writer waits this long for another to release the library's lock.
constexpr double kLockTimeoutSeconds = 60;
constexpr size_t kMinIdPrefix = 6;

std::string utc_now_iso8601() {
  std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

std::string absolute_path(const std::string& path) {
  std::error_code ec;
  std::filesystem::path absolute = std::filesystem::absolute(path, ec);
  return ec ? path : absolute.lexically_normal().string();
}

// The library's writer lock: an exclusive flock on DIR/lock, polled until kLockTimeoutSeconds. The
// kernel drops it when the holder dies, so a killed writer never leaves the library locked.
class WriteLock {
 public:
  explicit WriteLock(const std::string& dir) {
    const std::string path = util::join_path(dir, kLockName);
    fd_ = FileHandle(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (!fd_.valid()) fd_ = FileHandle(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    SG_CHECK(fd_.valid(), path << ": cannot open the library's lock file (" << std::strerror(errno)
                               << "); hint: is the library writable?");
    auto start = std::chrono::steady_clock::now();
    int sleep_ms = 1;
    while (::flock(fd_.get(), LOCK_EX | LOCK_NB) != 0) {
      SG_CHECK(errno == EWOULDBLOCK || errno == EINTR, path << ": cannot lock (" << std::strerror(errno) << ")");
      double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      SG_CHECK(waited < kLockTimeoutSeconds,
               dir << ": another skillgraft process has held the library's write lock for " << kLockTimeoutSeconds
                   << " s; hint: wait for it to finish, or look for a hung skillgraft process");
      std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
      sleep_ms = std::min(sleep_ms * 2, 50);
    }
  }  // the handle's close releases the lock

 private:
  FileHandle fd_;
};

// The header facts of a skill file (kind, base, task, metrics, parameter count) after validating the
// whole file with its kind's loader (neuron sets: the header). Throws for a file that is not a
// skillgraft skill.
skills::SkillFileInfo read_and_validate_skill(const std::string& path) {
  try {
    io::SafetensorsFile::open(path);
  } catch (const sg::Error& e) {
    SG_FAIL("not a skill file: " << e.what());
  }
  skills::SkillFileInfo info = skills::read_skill_file_info(path);
  if (info.kind == "sparse") {
    skills::load_sparse_skill(path);  // partners, sorted in-range indices, dtypes
  } else if (info.kind == "lora") {
    skills::load_lora_skill(path);  // pairs, ranks, shapes, scales
  } else if (info.kind == "dense") {
    skills::load_dense_skill(path);
  }
  return info;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string catalog_path(const std::string& dir) { return util::join_path(dir, kCatalogName); }
std::string blobs_path(const std::string& dir) { return util::join_path(dir, kBlobsName); }

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  if (from.empty()) return text;
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

std::string default_name(const std::string& file, const std::string& task, const std::string& id) {
  std::string stem = std::filesystem::path(file).filename().string();
  if (ends_with(stem, ".safetensors")) stem.resize(stem.size() - std::string(".safetensors").size());
  try {
    check_entry_name(stem);
    return stem;
  } catch (const sg::Error&) {
  }
  std::string cleaned;
  for (char c : task) cleaned += (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-') ? c : '_';
  if (cleaned.empty()) cleaned = "skill";
  return cleaned.substr(0, 100) + "-" + id.substr(0, 12);
}

}  // namespace

bool VerifyReport::entries_ok() const { return corrupt.empty() && missing.empty() && catalog_check == "ok"; }

bool VerifyReport::ok() const { return entries_ok() && orphans.empty() && stale_temps.empty(); }

nlohmann::json VerifyReport::to_json() const {
  auto bad_json = [](const std::vector<Bad>& list) {
    nlohmann::json out = nlohmann::json::array();
    for (const Bad& bad : list) out.push_back({{"id", bad.id}, {"name", bad.name}, {"path", bad.path}, {"detail", bad.detail}});
    return out;
  };
  return {{"library", library},     {"ok", ok()},
          {"entries", entries},     {"verified", verified},
          {"corrupt", bad_json(corrupt)}, {"missing", bad_json(missing)},
          {"orphans", orphans},     {"stale_temps", stale_temps},
          {"removed", removed},     {"catalog_check", catalog_check}};
}

void check_entry_name(const std::string& name) {
  SG_CHECK(!name.empty() && name.size() <= 128, "skill name \"" << name << "\" must have 1 to 128 characters");
  for (char c : name) {
    SG_CHECK(std::isalnum(static_cast<unsigned char>(c)) || std::strchr("._-+:@", c) != nullptr,
             "skill name \"" << name << "\" has the character '" << c
                             << "'; hint: use letters, digits and . _ - + : @");
  }
  SG_CHECK(name[0] != '-', "skill name \"" << name << "\" starts with '-'; hint: pick another name");
  SG_CHECK(!util::is_sha256_hex(name), "skill name \"" << name << "\" reads as an id; hint: pick another name");
}

Library::Library(std::string dir) : dir_(std::move(dir)) {}
Library::Library(Library&&) noexcept = default;
Library& Library::operator=(Library&&) noexcept = default;
Library::~Library() = default;

bool Library::is_library(const std::string& dir) {
  return util::is_directory(dir) && util::file_exists(catalog_path(dir)) && util::is_directory(blobs_path(dir));
}

Library Library::init(const std::string& dir) {
  SG_CHECK(!util::file_exists(dir) || util::is_directory(dir), dir << ": exists and is not a directory; hint: pick a new path");
  util::make_directories(dir);
  BlobStore::create(blobs_path(dir));
  if (!util::file_exists(catalog_path(dir))) {
    // Creates DIR/lock (never replaced: a writer's flock must stay on the one file). Two inits at
    // once: one creates the catalog, the other sees it.
    WriteLock lock(dir);
    if (!util::file_exists(catalog_path(dir))) Catalog::create(catalog_path(dir));
  }
  return open(dir);
}

Library Library::open(const std::string& dir) {
  SG_CHECK(util::is_directory(dir), dir << ": no such directory, not a skill library; hint: skillgraft library init --lib " << dir);
  SG_CHECK(is_library(dir), dir << ": not a skill library (no " << kCatalogName << " and " << kBlobsName
                                << "/); hint: skillgraft library init --lib " << dir);
  Library library(dir);
  library.catalog_ = std::make_unique<Catalog>(catalog_path(dir));
  library.blobs_ = std::make_unique<BlobStore>(blobs_path(dir));
  return library;
}

AddResult Library::add(const std::string& file, const AddOptions& options) {
  if (!options.name.empty()) check_entry_name(options.name);
  // Hash and validate the copy that will be stored, not the source (which might change meanwhile).
  std::unique_ptr<StagedBlob> staged = blobs_->stage(file);
  skills::SkillFileInfo header;
  try {
    header = read_and_validate_skill(staged->temp_path());
  } catch (const sg::Error& e) {
    throw sg::Error(replace_all(e.what(), staged->temp_path(), file));
  }
  Entry entry;
  entry.id = staged->id();
  entry.name = options.name.empty() ? default_name(file, header.task, entry.id) : options.name;
  entry.kind = header.kind;
  entry.base_fingerprint = header.base_fingerprint;
  entry.task = options.task.empty() ? header.task : options.task;
  entry.metrics = header.metrics;
  entry.parameter_count = header.parameter_count;
  entry.file_bytes = staged->bytes();
  entry.created = utc_now_iso8601();
  entry.provenance = options.provenance.is_object() ? options.provenance : nlohmann::json::object();
  if (!entry.provenance.contains("inputs")) entry.provenance["inputs"] = {absolute_path(file)};

  WriteLock lock(dir_);
  std::optional<Entry> existing = catalog_->find_by_id(entry.id);
  if (!existing) {
    std::optional<Entry> clash = catalog_->find_by_name(entry.name);
    SG_CHECK(!clash, dir_ << ": the name \"" << entry.name << "\" is taken by skill " << clash->id.substr(0, 12)
                          << " (" << clash->kind << ", task \"" << clash->task
                          << "\"); hint: pick another with --name, or skillgraft library rm " << entry.name << " first");
  }
  blobs_->publish(*staged);  // same id, same bytes: also repairs a corrupt copy
  if (existing) return {*existing, false};
  Catalog::Transaction transaction(*catalog_);
  catalog_->insert(entry);
  transaction.commit();
  return {entry, true};
}

std::vector<Entry> Library::list(const EntryFilter& filter) { return catalog_->list(filter); }

int64_t Library::count() { return catalog_->count(); }

Entry Library::find(const std::string& id_or_name) {
  SG_CHECK(!id_or_name.empty(), "empty skill id or name; hint: skillgraft library list --lib " << dir_);
  if (util::is_sha256_hex(id_or_name)) {
    if (auto entry = catalog_->find_by_id(id_or_name)) return *entry;
  }
  if (auto entry = catalog_->find_by_name(id_or_name)) return *entry;
  bool hex = id_or_name.size() >= kMinIdPrefix && id_or_name.size() < 64;
  for (char c : id_or_name) hex = hex && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
  if (hex) {
    std::vector<Entry> matches = catalog_->find_by_id_prefix(id_or_name);
    SG_CHECK(matches.size() <= 1, dir_ << ": id prefix \"" << id_or_name << "\" matches " << matches.size()
                                       << " skills; hint: give more digits of the id");
    if (matches.size() == 1) return matches.front();
  }
  SG_FAIL(dir_ << ": no skill named \"" << id_or_name << "\" or with that id in the library; hint: skillgraft library list --lib "
               << dir_);
}

Entry Library::verified(const std::string& id_or_name, std::string* blob_path) {
  Entry entry = find(id_or_name);
  const std::string path = blobs_->path_of(entry.id);
  FileHandle fd = blobs_->open_blob(entry.id);
  SG_CHECK(fd.valid(), path << ": the blob of skill \"" << entry.name
                            << "\" is missing; hint: skillgraft library verify --lib " << dir_
                            << "; add the original file again to restore it");
  int64_t bytes = 0;
  const std::string actual = hash_stream(fd.get(), path, nullptr, &bytes);
  SG_CHECK(actual == entry.id, path << ": the blob of skill \"" << entry.name
                                    << "\" is corrupt (its sha256 is " << actual.substr(0, 12)
                                    << "..., not its id); refusing to use it; hint: skillgraft library verify --lib "
                                    << dir_ << "; add the original file again to repair it");
  if (blob_path != nullptr) *blob_path = path;
  return entry;
}

Entry Library::remove(const std::string& id_or_name) {
  WriteLock lock(dir_);
  Entry entry = find(id_or_name);
  Catalog::Transaction transaction(*catalog_);
  catalog_->remove(entry.id);
  transaction.commit();
  blobs_->remove(entry.id);
  return entry;
}

Entry Library::export_file(const std::string& id_or_name, const std::string& out_path) {
  Entry entry = find(id_or_name);
  const std::string path = blobs_->path_of(entry.id);
  // Pin the bytes first (an open file survives unlink), then make sure the row still exists: a
  // concurrent rm either came before (we refuse) or its unlink cannot touch what we read.
  FileHandle fd = blobs_->open_blob(entry.id);
  const bool still_there = catalog_->find_by_id(entry.id).has_value();
  SG_CHECK(still_there, dir_ << ": skill \"" << entry.name << "\" was removed from the library while being exported; "
                             << "nothing written; hint: skillgraft library list --lib " << dir_);
  SG_CHECK(fd.valid(), path << ": the blob of skill \"" << entry.name
                            << "\" is missing; nothing written; hint: skillgraft library verify --lib " << dir_);
  util::AtomicFileWriter writer(out_path);
  int64_t bytes = 0;
  const std::string actual =
      hash_stream(fd.get(), path, [&](const char* data, size_t size) { writer.write(data, size); }, &bytes);
  SG_CHECK(actual == entry.id, path << ": the blob of skill \"" << entry.name
                                    << "\" is corrupt (its sha256 is " << actual.substr(0, 12)
                                    << "..., not its id); nothing written; hint: skillgraft library verify --lib "
                                    << dir_ << "; add the original file again to repair it");
  writer.commit();
  return entry;
}

VerifyReport Library::verify(bool fix) {
  VerifyReport report;
  report.library = dir_;
  report.catalog_check = catalog_->quick_check();
  // Hash without the write lock (writers keep going); a row that vanished meanwhile was removed.
  for (const Entry& entry : catalog_->list()) {
    const std::string path = blobs_->path_of(entry.id);
    FileHandle fd = blobs_->open_blob(entry.id);
    if (!fd.valid()) {
      if (catalog_->find_by_id(entry.id)) {
        ++report.entries;
        report.missing.push_back({entry.id, entry.name, path, "no blob file"});
      }
      continue;
    }
    ++report.entries;
    int64_t bytes = 0;
    const std::string actual = hash_stream(fd.get(), path, nullptr, &bytes);
    if (actual != entry.id) {
      report.corrupt.push_back({entry.id, entry.name, path, "sha256 " + actual});
    } else if (bytes != entry.file_bytes) {
      report.corrupt.push_back({entry.id, entry.name, path,
                                std::to_string(bytes) + " bytes, catalog says " + std::to_string(entry.file_bytes)});
    } else {
      ++report.verified;
    }
  }
  // Orphans: under the write lock, so a writer's blob between its rename and its row is not one.
  WriteLock lock(dir_);
  std::vector<std::string> ids = catalog_->ids();
  std::set<std::string> known(ids.begin(), ids.end());
  for (const BlobFile& file : blobs_->list_files()) {
    if (!file.id.empty() && known.count(file.id)) continue;
    report.orphans.push_back(file.path);
  }
  report.stale_temps = blobs_->stale_temps();
  if (fix) {
    for (const std::string& path : report.orphans) {
      std::error_code ec;
      if (std::filesystem::is_regular_file(path, ec) && ::unlink(path.c_str()) == 0) report.removed.push_back(path);
    }
    for (const std::string& path : report.stale_temps) {
      if (blobs_->remove_stale_temp(path)) report.removed.push_back(path);
    }
    std::set<std::string> touched_dirs;
    for (const std::string& path : report.removed) touched_dirs.insert(std::filesystem::path(path).parent_path().string());
    for (const std::string& touched : touched_dirs) util::fsync_directory(touched);
    // What was deleted is no longer wrong; what could not be deleted (a directory) still is.
    std::set<std::string> gone(report.removed.begin(), report.removed.end());
    auto still = [&](std::vector<std::string>& list) {
      std::vector<std::string> kept;
      for (const std::string& path : list) {
        if (!gone.count(path)) kept.push_back(path);
      }
      list = kept;
    };
    still(report.orphans);
    still(report.stale_temps);
  }
  return report;
}

}  // namespace sg::library
