// What every skill file shares (docs/formats.md, "Skill files"): the __metadata__ fields (format,
// version, kind, base_fingerprint, task, metrics, created, tool_version), opening a file and
// checking its header with one-line errors. Used by the sparse (skill.cpp) and the LoRA / dense
// (lora_skill.cpp) skill files; not a public API outside src/skills.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "io/state_dict.h"

namespace sg::skills {

constexpr const char* kSkillFormat = "skillgraft.skill";
constexpr const char* kSkillVersion = "1";

// The metadata of a new skill file: format, version, kind, base_fingerprint, task, metrics (dumped
// as a JSON string), created (UTC now, ISO-8601), tool_version. Callers add their own fields.
io::Metadata skill_file_metadata(const std::string& kind, const std::string& base_fingerprint,
                                 const std::string& task, const nlohmann::json& metrics);

// Opens a file as a skill file: what the safetensors reader refuses becomes "cannot read skill
// file: <its message>"; a file without format=skillgraft.skill is "not a skill file" (with a hint);
// another version is refused. Does not check the kind.
io::SafetensorsFile open_skill_file(const std::string& path);

// metadata[key], or throws naming the file ("skill file has no \"key\" in its __metadata__").
std::string skill_metadata_field(const std::string& path, const io::Metadata& metadata, const std::string& key);
// metadata[key] parsed as JSON (throws naming the file and key when it is not valid JSON).
nlohmann::json skill_metadata_json(const std::string& path, const io::Metadata& metadata, const std::string& key);

// The fields every skill file carries, read from its metadata after check_skill_kind:
// base_fingerprint (non-empty, else "the file is damaged"), task, metrics (parsed JSON).
struct SkillHeader {
  std::string base_fingerprint;
  std::string task;
  nlohmann::json metrics = nlohmann::json::object();
};
SkillHeader read_skill_header(const std::string& path, const io::Metadata& metadata);

// Throws "<path>: skill kind \"X\" is not a <kind> skill; hint: ..." unless the metadata says `kind`.
void check_skill_kind(const std::string& path, const io::Metadata& metadata, const std::string& kind);

// "[2, 3]"
std::string shape_text(const std::vector<int64_t>& shape);
int64_t numel_of(const std::vector<int64_t>& shape);
bool ends_with(const std::string& text, const std::string& suffix);

}  // namespace sg::skills
