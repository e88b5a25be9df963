// GNU gettext .mo parser. Layout (all 32-bit words in the file's byte order):
//   0 magic 0x950412de, 4 revision, 8 N (strings), 12 O (offset of originals table),
//   16 T (offset of translations table); each table holds N pairs (length, offset).
#include "data/mo_file.h"

#include <cstdint>

#include "util/error.h"
#include "util/file.h"

namespace sg::data {

namespace {

constexpr uint32_t kMoMagic = 0x950412de;
constexpr uint64_t kMoHeaderBytes = 20;  // magic, revision, N, O, T (hash table fields unused)

class MoReader {
 public:
  MoReader(const std::string& bytes, const std::string& name) : bytes_(bytes), name_(name) {
    SG_CHECK(bytes.size() >= kMoHeaderBytes, name << ": not a .mo file: " << bytes.size()
                                                  << " bytes is shorter than the 20-byte header; hint: the file is truncated");
    uint32_t magic = word_le(0);
    if (magic == kMoMagic) {
      big_endian_ = false;
    } else if (swap(magic) == kMoMagic) {
      big_endian_ = true;
    } else {
      SG_FAIL(name << ": not a .mo file: bad magic 0x" << std::hex << magic << "; hint: expected a compiled gettext catalogue");
    }
  }

  uint32_t word(uint64_t offset) const {
    SG_CHECK(offset + 4 <= bytes_.size(), name_ << ": offset " << offset << " is past the end of the file ("
                                                << bytes_.size() << " bytes); hint: the file is truncated");
    uint32_t w = word_le(offset);
    return big_endian_ ? swap(w) : w;
  }

  // The string described by the (length, offset) pair at `entry`, cut at its first NUL (plural forms).
  std::string string_at(uint64_t entry, const char* table) const {
    uint64_t length = word(entry), offset = word(entry + 4);
    SG_CHECK(offset + length <= bytes_.size(), name_ << ": " << table << " string at offset " << offset << " with length "
                                                     << length << " runs past the end of the file (" << bytes_.size()
                                                     << " bytes); hint: the file is truncated or corrupt");
    std::string text = bytes_.substr(offset, length);
    size_t nul = text.find('\0');
    return nul == std::string::npos ? text : text.substr(0, nul);
  }

 private:
  uint32_t word_le(uint64_t offset) const {
    const auto* p = reinterpret_cast<const unsigned char*>(bytes_.data()) + offset;
    return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
  }
  static uint32_t swap(uint32_t w) {
    return (w >> 24) | ((w >> 8) & 0xff00u) | ((w << 8) & 0xff0000u) | (w << 24);
  }

  const std::string& bytes_;
  const std::string& name_;
  bool big_endian_ = false;
};

}  // namespace

std::vector<MoEntry> parse_mo(const std::string& bytes, const std::string& name) {
  MoReader reader(bytes, name);
  uint32_t revision = reader.word(4);
  SG_CHECK((revision >> 16) <= 1, name << ": unsupported .mo major revision " << (revision >> 16)
                                       << "; hint: only revisions 0 and 1 exist");
  uint64_t count = reader.word(8), originals = reader.word(12), translations = reader.word(16);
  for (uint64_t table : {originals, translations}) {
    SG_CHECK(table + 8 * count <= bytes.size(), name << ": string table at offset " << table << " with " << count
                                                     << " entries runs past the end of the file (" << bytes.size()
                                                     << " bytes); hint: the file is truncated or corrupt");
  }
  std::vector<MoEntry> entries;
  entries.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    MoEntry entry{reader.string_at(originals + 8 * i, "original"), reader.string_at(translations + 8 * i, "translated")};
    if (entry.msgid.empty()) continue;  // the header entry carries metadata, not a message
    entries.push_back(std::move(entry));
  }
  return entries;
}

std::vector<MoEntry> read_mo_file(const std::string& path) { return parse_mo(util::read_file(path), path); }

}  // namespace sg::data
