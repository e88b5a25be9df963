// GNU gettext .mo catalogues: the (msgid, msgstr) pairs of one compiled message catalogue.
// Reads only; knows nothing about languages or tasks.
#pragma once

#include <string>
#include <vector>

namespace sg::data {

struct MoEntry {
  std::string msgid;   // the original (English) string; a plural entry's singular form
  std::string msgstr;  // its translation; a plural entry's first form
};

// Parses the bytes of a .mo file (magic 0x950412de in either byte order, major revision 0 or 1).
// The header entry (empty msgid) is skipped; plural forms keep only the first string of each side.
// Every table offset and string extent is checked against the size: a bad one throws sg::Error
// naming `name` (the file path, for messages).
std::vector<MoEntry> parse_mo(const std::string& bytes, const std::string& name);

// Reads and parses a .mo file.
std::vector<MoEntry> read_mo_file(const std::string& path);

}  // namespace sg::data
