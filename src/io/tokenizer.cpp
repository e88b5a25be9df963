// Tokenizers: load_tokenizer() dispatch, our skillgraft_tokenizer.json header, the byte
// tokenizer, and the UTF-8 / JSON helpers and BPE merge loop the other kinds share
// (tokenizer_internal.h).
#include "io/tokenizer.h"

#include <nlohmann/json.hpp>

#include <queue>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "io/tokenizer_internal.h"
#include "util/error.h"
#include "util/file.h"

namespace sg::io {

namespace detail {

size_t utf8_sequence_length(std::string_view text, size_t pos) {
  const size_t n = text.size();
  auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  auto continuation = [&](size_t i) { return i < n && (byte(i) & 0xC0) == 0x80; };
  const uint8_t lead = byte(pos);
  if (lead < 0x80) return 1;
  if (lead < 0xC2) return 0;  // a continuation byte, or C0/C1 (always overlong)
  if (lead < 0xE0) return continuation(pos + 1) ? 2 : 0;
  if (lead < 0xF0) {
    if (pos + 1 >= n) return 0;
    const uint8_t second = byte(pos + 1);
    // E0 needs A0..BF (else overlong); ED needs 80..9F (else a surrogate).
    if (lead == 0xE0 && second < 0xA0) return 0;
    if (lead == 0xED && second > 0x9F) return 0;
    return continuation(pos + 1) && continuation(pos + 2) ? 3 : 0;
  }
  if (lead < 0xF5) {
    if (pos + 1 >= n) return 0;
    const uint8_t second = byte(pos + 1);
    // F0 needs 90..BF (else overlong); F4 needs 80..8F (else above U+10FFFF).
    if (lead == 0xF0 && second < 0x90) return 0;
    if (lead == 0xF4 && second > 0x8F) return 0;
    return continuation(pos + 1) && continuation(pos + 2) && continuation(pos + 3) ? 4 : 0;
  }
  return 0;
}

bool is_valid_utf8(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t length = utf8_sequence_length(text, pos);
    if (length == 0) return false;
    pos += length;
  }
  return true;
}

void append_utf8(std::string& out, uint32_t code_point) {
  if (code_point < 0x80) {
    out += static_cast<char>(code_point);
  } else if (code_point < 0x800) {
    out += static_cast<char>(0xC0 | (code_point >> 6));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  } else if (code_point < 0x10000) {
    out += static_cast<char>(0xE0 | (code_point >> 12));
    out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (code_point >> 18));
    out += static_cast<char>(0x80 | ((code_point >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  }
}

std::vector<uint32_t> utf8_code_points(std::string_view text) {
  std::vector<uint32_t> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t length = utf8_sequence_length(text, pos);
    SG_CHECK(length > 0, "ill-formed UTF-8 at byte " << pos);
    uint32_t lead = static_cast<uint8_t>(text[pos]);
    uint32_t code_point = length == 1   ? lead
                          : length == 2 ? lead & 0x1F
                          : length == 3 ? lead & 0x0F
                                        : lead & 0x07;
    for (size_t i = 1; i < length; ++i) {
      code_point = (code_point << 6) | (static_cast<uint8_t>(text[pos + i]) & 0x3F);
    }
    out.push_back(code_point);
    pos += length;
  }
  return out;
}

nlohmann::json read_json_file(const std::string& path) {
  std::string text = util::read_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    SG_FAIL(path << ": not valid JSON (" << e.what() << ")");
  }
}

const nlohmann::json& json_member(const nlohmann::json& object, const std::string& key,
                                  const std::string& path, const std::string& where) {
  SG_CHECK(object.is_object(), path << ": " << where << " must be a JSON object");
  auto it = object.find(key);
  SG_CHECK(it != object.end(), path << ": " << where << ": missing \"" << key << "\"");
  return *it;
}

const nlohmann::json& json_member_or_null(const nlohmann::json& object, const std::string& key) {
  static const nlohmann::json null_value;
  if (!object.is_object()) return null_value;
  auto it = object.find(key);
  return it == object.end() ? null_value : *it;
}

int64_t json_int(const nlohmann::json& value, const std::string& path, const std::string& what) {
  SG_CHECK(value.is_number_integer(), path << ": " << what << " must be an integer, got " << value.dump());
  if (value.is_number_unsigned()) {
    uint64_t unsigned_value = value.get<uint64_t>();
    SG_CHECK(unsigned_value <= static_cast<uint64_t>(INT64_MAX),
             path << ": " << what << " is too large: " << unsigned_value);
  }
  return value.get<int64_t>();
}

std::string json_string(const nlohmann::json& value, const std::string& path, const std::string& what) {
  SG_CHECK(value.is_string(), path << ": " << what << " must be a string, got " << value.dump());
  return value.get<std::string>();
}

std::vector<std::string> tokens_by_id(const std::vector<std::pair<std::string, int64_t>>& entries,
                                      const std::string& path) {
  std::vector<std::string> tokens(entries.size());
  std::vector<bool> seen(entries.size(), false);
  for (const auto& [token, id] : entries) {
    SG_CHECK(id >= 0 && id < static_cast<int64_t>(entries.size()),
             path << ": token \"" << token << "\" has id " << id << ", outside 0.." << entries.size() - 1
                  << "; hint: ids must number the " << entries.size() << " tokens from 0 without gaps");
    SG_CHECK(!seen[id],
             path << ": id " << id << " is given to both \"" << tokens[id] << "\" and \"" << token << "\"");
    seen[id] = true;
    tokens[id] = token;
  }
  return tokens;
}

std::vector<std::pair<std::string, int64_t>> vocab_entries(const nlohmann::json& vocab,
                                                           const std::string& path,
                                                           const std::string& where) {
  SG_CHECK(vocab.is_object(), path << ": " << where << " must be a JSON object of token -> id");
  std::vector<std::pair<std::string, int64_t>> entries;
  entries.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    entries.emplace_back(it.key(), json_int(it.value(), path, where + "[\"" + it.key() + "\"]"));
  }
  return entries;
}

bool split_merge(const std::string& line, std::pair<std::string, std::string>& merge) {
  size_t space = line.find(' ');
  if (space == std::string::npos || space == 0 || space + 1 == line.size()) return false;
  if (line.find(' ', space + 1) != std::string::npos) return false;
  merge = {line.substr(0, space), line.substr(space + 1)};
  return true;
}

HfBpeVocab read_hf_bpe_vocab(const nlohmann::json& root, const std::string& path) {
  const nlohmann::json& model = json_member(root, "model", path, "top level");
  std::vector<std::pair<std::string, int64_t>> entries =
      vocab_entries(json_member(model, "vocab", path, "\"model\""), path, "model.vocab");
  const size_t model_vocab_size = entries.size();
  auto added = root.find("added_tokens");
  if (added != root.end() && !added->is_null()) {
    SG_CHECK(added->is_array(), path << ": \"added_tokens\" must be an array");
    std::unordered_map<int64_t, std::string> model_tokens;
    for (const auto& [token, id] : entries) model_tokens.emplace(id, token);
    for (size_t i = 0; i < added->size(); ++i) {
      const std::string where = "added_tokens[" + std::to_string(i) + "]";
      const nlohmann::json& entry = (*added)[i];
      int64_t id = json_int(json_member(entry, "id", path, where), path, where + ".id");
      std::string content = json_string(json_member(entry, "content", path, where), path, where + ".content");
      auto existing = model_tokens.find(id);
      if (existing != model_tokens.end()) {
        SG_CHECK(existing->second == content, path << ": " << where << " gives id " << id << " to \""
                                                   << content << "\" but model.vocab gives it to \""
                                                   << existing->second << "\"");
        continue;
      }
      model_tokens.emplace(id, content);
      entries.emplace_back(content, id);
    }
  }
  HfBpeVocab vocab;
  vocab.tokens = tokens_by_id(entries, path);
  // Added tokens not in model.vocab carry their text as it is (HF: "content").
  vocab.added.assign(vocab.tokens.size(), false);
  for (size_t i = model_vocab_size; i < entries.size(); ++i) vocab.added[entries[i].second] = true;

  const nlohmann::json& merges = json_member(model, "merges", path, "\"model\"");
  SG_CHECK(merges.is_array(), path << ": model.merges must be an array");
  vocab.merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const nlohmann::json& merge = merges[i];
    std::pair<std::string, std::string> parts;
    if (merge.is_string()) {
      SG_CHECK(split_merge(merge.get<std::string>(), parts), path << ": model.merges[" << i << "] is \""
                                                                  << merge.get<std::string>()
                                                                  << "\", expected \"<left> <right>\"");
    } else {
      SG_CHECK(merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string(),
               path << ": model.merges[" << i << "] is " << merge.dump()
                    << ", expected \"<left> <right>\" or [\"<left>\", \"<right>\"]");
      parts = {merge[0].get<std::string>(), merge[1].get<std::string>()};
    }
    vocab.merges.push_back(std::move(parts));
  }
  return vocab;
}

std::string check_skillgraft_header(const nlohmann::json& root, const std::string& path) {
  SG_CHECK(root.is_object(), path << ": the top level must be a JSON object");
  std::string format = json_string(json_member(root, "format", path, "top level"), path, "\"format\"");
  SG_CHECK(format == kSkillgraftTokenizerFormat, path << ": \"format\" is \"" << format << "\", expected \""
                                                      << kSkillgraftTokenizerFormat
                                                      << "\"; hint: this is not a skillgraft tokenizer file");
  int64_t version = json_int(json_member(root, "version", path, "top level"), path, "\"version\"");
  SG_CHECK(version >= 1 && version <= kSkillgraftTokenizerVersion,
           path << ": unsupported version " << version << " (this build reads versions 1.."
                << kSkillgraftTokenizerVersion << "); hint: written by a newer skillgraft?");
  return json_string(json_member(root, "kind", path, "top level"), path, "\"kind\"");
}

std::vector<int32_t> bpe_merge(std::vector<BpeSymbol> symbols, const BpePairLookup& lookup) {
  if (symbols.empty()) return {};
  // Symbols stay in text order in a doubly linked list: a merged symbol absorbs its right
  // neighbour, so a smaller index is further left.
  const int32_t n = static_cast<int32_t>(symbols.size());
  std::vector<int32_t> prev(n);
  std::vector<int32_t> next(n);
  for (int32_t i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    double priority;
    int32_t left;
    int32_t right;
    size_t left_length;  // to detect candidates made stale by another merge
    size_t right_length;
    int32_t merged_id;
  };
  struct Order {
    bool operator()(const Candidate& a, const Candidate& b) const {
      if (a.priority != b.priority) return a.priority > b.priority;
      return a.left > b.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, Order> queue;
  auto push_candidate = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const BpeSymbol& a = symbols[left];
    const BpeSymbol& b = symbols[right];
    BpeMerge merge;
    if (!a.mergeable || !b.mergeable || !lookup(a, b, merge)) return;
    queue.push({merge.priority, left, right, a.length, b.length, merge.merged_id});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push_candidate(i, i + 1);
  while (!queue.empty()) {
    Candidate candidate = queue.top();
    queue.pop();
    BpeSymbol& left = symbols[candidate.left];
    BpeSymbol& right = symbols[candidate.right];
    if (left.length != candidate.left_length || right.length != candidate.right_length ||
        next[candidate.left] != candidate.right) {
      continue;
    }
    left.id = candidate.merged_id;
    left.length += right.length;
    next[candidate.left] = next[candidate.right];
    if (next[candidate.right] >= 0) prev[next[candidate.right]] = candidate.left;
    right.length = 0;
    push_candidate(prev[candidate.left], candidate.left);
    push_candidate(candidate.left, next[candidate.left]);
  }
  std::vector<int32_t> ids;
  for (int32_t i = 0; i >= 0; i = next[i]) ids.push_back(symbols[i].id);
  return ids;
}

void check_token_id(int64_t id, int64_t vocab_size, const char* kind) {
  SG_CHECK(id >= 0 && id < vocab_size,
           "token id " << id << " is out of range [0, " << vocab_size << ") of the " << kind
                       << " tokenizer; hint: ids from another model's tokenizer?");
}

}  // namespace detail

namespace {

constexpr int64_t kByteVocabSize = 256;

// Bytes 0..255 are ids 0..255. Needs no file; its saved form only records the kind.
class ByteTokenizer final : public Tokenizer {
 public:
  std::string kind() const override { return "byte"; }
  int64_t vocab_size() const override { return kByteVocabSize; }

  std::vector<int64_t> encode(const std::string& text) const override {
    std::vector<int64_t> ids;
    ids.reserve(text.size());
    for (char c : text) ids.push_back(static_cast<uint8_t>(c));
    return ids;
  }

  std::string decode(const std::vector<int64_t>& ids) const override {
    std::string text;
    text.reserve(ids.size());
    for (int64_t id : ids) {
      detail::check_token_id(id, kByteVocabSize, "byte");
      text += static_cast<char>(id);
    }
    return text;
  }

  std::string token_bytes(int64_t previous, int64_t id) const override {
    detail::check_token_id(id, kByteVocabSize, "byte");
    return std::string(1, static_cast<char>(id));
  }

  int64_t bos_id() const override { return -1; }
  int64_t eos_id() const override { return -1; }

  void save(const std::string& dir) const override {
    nlohmann::ordered_json root;
    root["format"] = detail::kSkillgraftTokenizerFormat;
    root["version"] = 1;
    root["kind"] = "byte";
    util::make_directories(dir);
    util::write_file_atomic(util::join_path(dir, detail::kSkillgraftTokenizerFile), root.dump(2) + "\n");
  }
};

}  // namespace

std::unique_ptr<Tokenizer> make_byte_tokenizer() { return std::make_unique<ByteTokenizer>(); }

std::unique_ptr<Tokenizer> load_skillgraft_tokenizer(const std::string& path) {
  nlohmann::json root = detail::read_json_file(path);
  std::string kind = detail::check_skillgraft_header(root, path);
  if (kind == "sentencepiece_bpe") return detail::sentencepiece_from_json(root, path);
  if (kind == "byte") return make_byte_tokenizer();
  SG_FAIL(path << ": unknown tokenizer kind \"" << kind
               << "\"; hint: skillgraft_tokenizer.json holds \"sentencepiece_bpe\" or \"byte\"");
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir) {
  SG_CHECK(util::is_directory(model_dir), model_dir << ": not a directory; hint: pass a model directory");
  std::string skillgraft_json = util::join_path(model_dir, detail::kSkillgraftTokenizerFile);
  if (util::file_exists(skillgraft_json)) return load_skillgraft_tokenizer(skillgraft_json);
  std::string hf_json = util::join_path(model_dir, "tokenizer.json");
  if (util::file_exists(hf_json)) return load_hf_tokenizer_json(hf_json);
  std::string vocab_json = util::join_path(model_dir, "vocab.json");
  std::string merges_txt = util::join_path(model_dir, "merges.txt");
  bool has_vocab = util::file_exists(vocab_json);
  bool has_merges = util::file_exists(merges_txt);
  if (has_vocab && has_merges) return load_gpt2_tokenizer(vocab_json, merges_txt);
  SG_FAIL(model_dir << ": no tokenizer found (looked for " << detail::kSkillgraftTokenizerFile
                    << ", tokenizer.json, vocab.json + merges.txt"
                    << (has_vocab ? "; vocab.json is there but merges.txt is not" : "")
                    << (has_merges ? "; merges.txt is there but vocab.json is not" : "")
                    << "); hint: copy the tokenizer files of the model into the directory");
}

std::vector<int64_t> prompt_tokens(const io::Tokenizer& tokenizer, const std::string& prompt) {
  std::vector<int64_t> ids;
  // SentencePiece models and byte-level ones with a BOS of their own (Llama 3's
  // <|begin_of_text|>) start with BOS; GPT-2, whose BOS is its EOS, does not.
  const bool adds_bos = tokenizer.kind() == "sentencepiece_bpe" || tokenizer.bos_id() != tokenizer.eos_id();
  if (adds_bos && tokenizer.bos_id() >= 0) ids.push_back(tokenizer.bos_id());
  std::vector<int64_t> text = tokenizer.encode(prompt);
  ids.insert(ids.end(), text.begin(), text.end());
  if (ids.empty() && tokenizer.eos_id() >= 0) ids.push_back(tokenizer.eos_id());
  SG_CHECK(!ids.empty(), "the prompt is empty and the tokenizer has no BOS/EOS token to start from; "
                         "hint: give a --prompt");
  return ids;
}

}  // namespace sg::io
