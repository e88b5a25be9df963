#include "skills/skill_file.h"

#include <chrono>
#include <ctime>

#include "util/error.h"

#ifndef SKILLGRAFT_VERSION
#define SKILLGRAFT_VERSION "unknown"
#endif

namespace sg::skills {

namespace {

std::string utc_now_iso8601() {
  std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

}  // namespace

io::Metadata skill_file_metadata(const std::string& kind, const std::string& base_fingerprint,
                                 const std::string& task, const nlohmann::json& metrics) {
  return {
      {"format", kSkillFormat},
      {"version", kSkillVersion},
      {"kind", kind},
      {"base_fingerprint", base_fingerprint},
      {"task", task},
      {"metrics", metrics.dump()},
      {"created", utc_now_iso8601()},
      {"tool_version", SKILLGRAFT_VERSION},
  };
}

io::SafetensorsFile open_skill_file(const std::string& path) {
  io::SafetensorsFile file = [&] {
    try {
      return io::SafetensorsFile::open(path);
    } catch (const sg::Error& e) {
      SG_FAIL("cannot read skill file: " << e.what());
    }
  }();
  const io::Metadata& metadata = file.metadata();
  auto format = metadata.find("format");
  SG_CHECK(format != metadata.end() && format->second == kSkillFormat,
           path << ": not a skill file (its __metadata__ has no format=" << kSkillFormat
                << "); hint: a skill file comes from skillgraft localize or extract; a model directory is not a skill");
  const std::string version = skill_metadata_field(path, metadata, "version");
  SG_CHECK(version == kSkillVersion, path << ": skill file version \"" << version
                                          << "\" is not supported (this tool reads version " << kSkillVersion
                                          << "); hint: use the skillgraft that wrote it");
  return file;
}

std::string skill_metadata_field(const std::string& path, const io::Metadata& metadata, const std::string& key) {
  auto it = metadata.find(key);
  SG_CHECK(it != metadata.end(), path << ": skill file has no \"" << key
                                      << "\" in its __metadata__; hint: the file is damaged or was not written by skillgraft");
  return it->second;
}

nlohmann::json skill_metadata_json(const std::string& path, const io::Metadata& metadata, const std::string& key) {
  const std::string text = skill_metadata_field(path, metadata, key);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception&) {
    SG_FAIL(path << ": \"" << key << "\" in __metadata__ is not valid JSON; hint: the file is damaged");
  }
}

SkillHeader read_skill_header(const std::string& path, const io::Metadata& metadata) {
  SkillHeader header;
  header.base_fingerprint = skill_metadata_field(path, metadata, "base_fingerprint");
  SG_CHECK(!header.base_fingerprint.empty(), path << ": empty base_fingerprint; hint: the file is damaged");
  header.task = skill_metadata_field(path, metadata, "task");
  header.metrics = skill_metadata_json(path, metadata, "metrics");
  return header;
}

void check_skill_kind(const std::string& path, const io::Metadata& metadata, const std::string& kind) {
  const std::string found = skill_metadata_field(path, metadata, "kind");
  SG_CHECK(found == kind, path << ": skill kind \"" << found << "\" is not a " << kind
                               << " skill; hint: load it as kind=" << found
                               << " (skillgraft inspect FILE says what a skill file holds)");
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace sg::skills
