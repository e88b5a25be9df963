// Byte-level BPE (GPT-2, Llama-3): the regex pre-tokenizer (PCRE2; GPT-2's pattern or a
// tokenizer.json's), BPE by merge rank with a per-word cache, and the loaders for vocab.json +
// merges.txt and HF tokenizer.json (which hands byte_fallback files to tokenizer_sentencepiece.cpp).
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <nlohmann/json.hpp>

#include <array>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "io/tokenizer.h"
#include "io/tokenizer_internal.h"
#include "util/error.h"
#include "util/file.h"

namespace sg::io {

namespace {

// GPT-2's pattern with \s spelled out as JavaScript's \s (ECMAScript WhiteSpace + LineTerminator),
// so that we split exactly like the gpt-3-encoder npm package our parity test compares against.
// Differences from other GPT-2 implementations: Python's `regex` (OpenAI's encoder) and HF
// tokenizers count U+0085 (NEL) as \s and U+FEFF (BOM) as not; JS, and so we, the other way round.
// PCRE2's own UCP \s would also differ from JS on U+FEFF (and, depending on the version, U+0085).
// \p{L} / \p{N} follow PCRE2's Unicode tables (14.0 in PCRE2 10.42), which can differ from the JS
// engine's on code points assigned since.
constexpr char kJsSpace[] =
    R"(\t\n\x{0B}\f\r \x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}\x{FEFF})";

std::string gpt2_pattern() {
  const std::string space = kJsSpace;
  return R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^)" + space + R"(\p{L}\p{N}]+|[)" + space +
         "]+(?![^" + space + "])|[" + space + "]+";
}

std::string pcre2_error_text(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

// A compiled pre-tokenizer pattern, read-only after construction (pcre2_match is thread-safe on
// shared code when each call has its own match data). `source` names where the pattern is from.
class SplitRegex {
 public:
  SplitRegex(const std::string& pattern, const std::string& source) {
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(),
                          PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
    SG_CHECK(code_ != nullptr, source << ": PCRE2 cannot compile the pre-tokenizer pattern at offset "
                                      << error_offset << ": " << pcre2_error_text(error_code));
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // optional: the interpreter is the fallback
  }
  ~SplitRegex() { pcre2_code_free(code_); }
  SplitRegex(const SplitRegex&) = delete;
  SplitRegex& operator=(const SplitRegex&) = delete;
  const pcre2_code* code() const { return code_; }

 private:
  pcre2_code* code_ = nullptr;
};

// GPT-2's, built once per process.
const SplitRegex& gpt2_regex() {
  static const SplitRegex regex(gpt2_pattern(), "GPT-2 pre-tokenizer");
  return regex;
}

struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};

// Splits well-formed UTF-8 `run` by the pattern. Every code point matches some branch, so the
// words tile the run; the gap and empty-match branches only guard against losing bytes.
void split_valid_run(std::string_view run, const pcre2_code* code, pcre2_match_data* match_data,
                     std::vector<std::string_view>& words) {
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(run.data());
  size_t offset = 0;
  while (offset < run.size()) {
    int rc = pcre2_match(code, subject, run.size(), offset, PCRE2_NO_UTF_CHECK, match_data, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) {
      words.push_back(run.substr(offset));
      return;
    }
    SG_CHECK(rc >= 0, "pre-tokenizer: PCRE2 match failed: " << pcre2_error_text(rc));
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match_data);
    size_t start = ovector[0];
    size_t end = ovector[1];
    if (start > offset) words.push_back(run.substr(offset, start - offset));
    if (end == start) end = start + detail::utf8_sequence_length(run, start);
    words.push_back(run.substr(start, end - start));
    offset = end;
  }
}

std::vector<std::string_view> pretokenize_views(std::string_view text, const SplitRegex& regex) {
  std::vector<std::string_view> words;
  if (text.empty()) return words;
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> match_data(
      pcre2_match_data_create_from_pattern(regex.code(), nullptr));
  SG_CHECK(match_data != nullptr, "pre-tokenizer: out of memory");
  size_t run_start = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t length = detail::utf8_sequence_length(text, pos);
    if (length > 0) {
      pos += length;
      continue;
    }
    if (pos > run_start)
      split_valid_run(text.substr(run_start, pos - run_start), regex.code(), match_data.get(), words);
    words.push_back(text.substr(pos, 1));  // an ill-formed byte is a word of its own
    run_start = ++pos;
  }
  if (pos > run_start)
    split_valid_run(text.substr(run_start, pos - run_start), regex.code(), match_data.get(), words);
  return words;
}

std::string byte_level_string(std::string_view bytes) {
  const auto& table = detail::gpt2_byte_to_code_point();
  std::string out;
  for (char c : bytes) detail::append_utf8(out, table[static_cast<uint8_t>(c)]);
  return out;
}

// The bytes a byte-level string stands for, or false when it holds a code point outside
// bytes_to_unicode() (an added token such as "<|im_start|> x" whose text is literal).
bool byte_level_bytes(const std::string& token, std::string& bytes) {
  static const std::unordered_map<uint32_t, uint8_t> decoder = [] {
    std::unordered_map<uint32_t, uint8_t> map;
    const auto& table = detail::gpt2_byte_to_code_point();
    for (int b = 0; b < 256; ++b) map.emplace(table[b], static_cast<uint8_t>(b));
    return map;
  }();
  if (!detail::is_valid_utf8(token)) return false;
  bytes.clear();
  for (uint32_t code_point : detail::utf8_code_points(token)) {
    auto it = decoder.find(code_point);
    if (it == decoder.end()) return false;
    bytes += static_cast<char>(it->second);
  }
  return true;
}

struct Gpt2Vocab {
  std::vector<std::string> tokens;  // by id, as written in the vocabulary
  std::vector<bool> literal;        // added tokens: their text is the bytes, not byte-level
  std::vector<std::pair<std::string, std::string>> merges;  // by rank
  // Where merge i came from, for error messages ("merges.txt:12").
  std::function<std::string(size_t)> merge_origin;
  // The pre-tokenizer regex (tokenizer.json's Split); empty: GPT-2's.
  std::string split_pattern;
  // HF's ignore_merges: a word that is a token as a whole is that token, whatever the merges say.
  bool ignore_merges = false;
};

struct MergeRule {
  int32_t rank;
  int32_t merged_id;
};

class Gpt2Tokenizer final : public Tokenizer {
 public:
  Gpt2Tokenizer(Gpt2Vocab vocab, const std::string& source)
      : tokens_(std::move(vocab.tokens)),
        merges_(std::move(vocab.merges)),
        split_pattern_(std::move(vocab.split_pattern)),
        ignore_merges_(vocab.ignore_merges) {
    if (split_pattern_.empty()) {
      regex_ = std::shared_ptr<const SplitRegex>(&gpt2_regex(), [](const SplitRegex*) {});
    } else {
      regex_ = std::make_shared<const SplitRegex>(split_pattern_, source);
    }
    SG_CHECK(!tokens_.empty(), source << ": the vocabulary is empty");
    SG_CHECK(tokens_.size() <= INT32_MAX, source << ": the vocabulary is too large");
    token_bytes_.resize(tokens_.size());
    literal_.assign(tokens_.size(), false);
    byte_level_.assign(tokens_.size(), false);
    std::vector<bool>& byte_level = byte_level_;
    for (size_t id = 0; id < tokens_.size(); ++id) {
      ids_by_string_.emplace(tokens_[id], static_cast<int32_t>(id));
      literal_[id] = id < vocab.literal.size() && vocab.literal[id];
      byte_level[id] = !literal_[id] && byte_level_bytes(tokens_[id], token_bytes_[id]);
      if (!byte_level[id]) token_bytes_[id] = tokens_[id];
    }
    const auto& table = detail::gpt2_byte_to_code_point();
    for (int b = 0; b < 256; ++b) {
      std::string name;
      detail::append_utf8(name, table[b]);
      auto it = ids_by_string_.find(name);
      SG_CHECK(it != ids_by_string_.end() && byte_level[it->second],
               source << ": no token for byte " << b << " (\"" << name
                      << "\"); hint: not a byte-level BPE vocabulary (GPT-2 style)");
      byte_ids_[b] = it->second;
    }
    for (size_t rank = 0; rank < merges_.size(); ++rank) {
      const auto& [left, right] = merges_[rank];
      auto origin = [&] { return vocab.merge_origin ? vocab.merge_origin(rank) : source; };
      auto left_it = ids_by_string_.find(left);
      auto right_it = ids_by_string_.find(right);
      auto merged_it = ids_by_string_.find(left + right);
      SG_CHECK(left_it != ids_by_string_.end(), origin() << ": merge \"" << left << " " << right << "\": \""
                                                         << left << "\" is not in the vocabulary");
      SG_CHECK(right_it != ids_by_string_.end(), origin() << ": merge \"" << left << " " << right << "\": \""
                                                          << right << "\" is not in the vocabulary");
      SG_CHECK(merged_it != ids_by_string_.end(), origin() << ": merge \"" << left << " " << right << "\": \""
                                                           << left + right << "\" is not in the vocabulary");
      SG_CHECK(
          byte_level[left_it->second] && byte_level[right_it->second],
          origin() << ": merge \"" << left << " " << right << "\" names a token that is not byte-level text");
      // A repeated pair takes its later rank, as in OpenAI's encoder.py (a dict built in order).
      merge_rules_[detail::bpe_pair_key(left_it->second, right_it->second)] = {static_cast<int32_t>(rank),
                                                                               merged_it->second};
    }
    // Llama-3 names its own; GPT-2 and Qwen2 use <|endoftext|> for both.
    auto id_of = [&](const char* token) -> int64_t {
      auto it = ids_by_string_.find(token);
      return it == ids_by_string_.end() ? -1 : it->second;
    };
    bos_id_ = id_of("<|begin_of_text|>");
    eos_id_ = id_of("<|end_of_text|>");
    if (bos_id_ < 0) bos_id_ = id_of("<|endoftext|>");
    if (eos_id_ < 0) eos_id_ = id_of("<|endoftext|>");
  }
  Gpt2Tokenizer(const Gpt2Tokenizer&) = delete;
  Gpt2Tokenizer& operator=(const Gpt2Tokenizer&) = delete;

  std::string kind() const override { return "gpt2_bpe"; }
  int64_t vocab_size() const override { return static_cast<int64_t>(tokens_.size()); }
  int64_t bos_id() const override { return bos_id_; }
  int64_t eos_id() const override { return eos_id_; }

  // Special tokens such as <|endoftext|> in the text are encoded as plain text, as the npm
  // package and OpenAI's encoder.py do: user text cannot inject control tokens.
  std::vector<int64_t> encode(const std::string& text) const override {
    std::vector<int64_t> ids;
    for (std::string_view word : pretokenize_views(text, *regex_)) encode_word(word, ids);
    return ids;
  }

  std::string decode(const std::vector<int64_t>& ids) const override {
    std::string text;
    for (int64_t id : ids) {
      detail::check_token_id(id, vocab_size(), "gpt2_bpe");
      text += token_bytes_[id];
    }
    return text;
  }

  std::string token_bytes(int64_t previous, int64_t id) const override {
    detail::check_token_id(id, vocab_size(), "gpt2_bpe");
    return token_bytes_[id];
  }

  void save(const std::string& dir) const override;

 private:
  void encode_word(std::string_view word, std::vector<int64_t>& ids) const;
  std::vector<int32_t> bpe(std::string_view word) const;
  void save_tokenizer_json(const std::string& dir) const;

  std::vector<std::string> tokens_;
  std::vector<std::pair<std::string, std::string>> merges_;
  std::vector<std::string> token_bytes_;  // what each id decodes to
  std::unordered_map<std::string, int32_t> ids_by_string_;
  std::unordered_map<uint64_t, MergeRule> merge_rules_;
  std::array<int32_t, 256> byte_ids_{};
  std::vector<bool> literal_;     // added tokens whose text is the bytes
  std::vector<bool> byte_level_;  // tokens whose string is byte-level text
  std::string split_pattern_;     // empty: GPT-2's
  std::shared_ptr<const SplitRegex> regex_;
  bool ignore_merges_ = false;
  int64_t bos_id_ = -1;
  int64_t eos_id_ = -1;

  // Words repeat a lot in text; their BPE result is cached. Bounded, and guarded for sharing
  // between threads (the only mutable state of a loaded tokenizer).
  static constexpr size_t kCacheMaxEntries = size_t{1} << 16;
  static constexpr size_t kCacheMaxWordBytes = 64;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

void Gpt2Tokenizer::encode_word(std::string_view word, std::vector<int64_t>& ids) const {
  if (word.size() == 1) {
    ids.push_back(byte_ids_[static_cast<uint8_t>(word[0])]);
    return;
  }
  if (ignore_merges_) {
    auto it = ids_by_string_.find(byte_level_string(word));
    if (it != ids_by_string_.end() && byte_level_[it->second]) {
      ids.push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() <= kCacheMaxWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(std::string(word));
    if (it != cache_.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> word_ids = bpe(word);
  ids.insert(ids.end(), word_ids.begin(), word_ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kCacheMaxEntries) cache_.clear();
    cache_.emplace(std::string(word), std::move(word_ids));
  }
}

// Lowest rank first, leftmost on ties. With a merges list in training order this equals
// encoder.py's "merge every occurrence of the best pair, repeat", in O(n log n) rather than O(n^2)
// for long words.
std::vector<int32_t> Gpt2Tokenizer::bpe(std::string_view word) const {
  std::vector<detail::BpeSymbol> symbols(word.size());
  for (size_t i = 0; i < word.size(); ++i) {
    symbols[i] = {i, 1, byte_ids_[static_cast<uint8_t>(word[i])], true};
  }
  auto lookup = [&](const detail::BpeSymbol& left, const detail::BpeSymbol& right, detail::BpeMerge& merge) {
    auto it = merge_rules_.find(detail::bpe_pair_key(left.id, right.id));
    if (it == merge_rules_.end()) return false;
    merge = {static_cast<double>(it->second.rank), it->second.merged_id};
    return true;
  };
  return detail::bpe_merge(std::move(symbols), lookup);
}

void Gpt2Tokenizer::save(const std::string& dir) const {
  // vocab.json + merges.txt cannot hold another regex or ignore_merges.
  if (!split_pattern_.empty() || ignore_merges_) {
    save_tokenizer_json(dir);
    return;
  }
  const std::string vocab_path = util::join_path(dir, "vocab.json");
  // Written by hand in id order: an ordered_json object looks keys up linearly.
  std::string vocab = "{";
  std::unordered_map<std::string, size_t> written;
  for (size_t id = 0; id < tokens_.size(); ++id) {
    // Literal (added) tokens are written byte-level, so they read back as the same bytes.
    std::string name = byte_level_string(token_bytes_[id]);
    auto [it, inserted] = written.emplace(name, id);
    SG_CHECK(inserted, vocab_path << ": cannot save: tokens " << it->second << " and " << id << " are both \""
                                  << name << "\"");
    if (id > 0) vocab += ", ";
    vocab += nlohmann::json(name).dump() + ": " + std::to_string(id);
  }
  vocab += "}";
  std::string merges = "#version: 0.2\n";
  for (const auto& [left, right] : merges_) merges += left + " " + right + "\n";
  util::make_directories(dir);
  util::write_file_atomic(vocab_path, vocab + "\n");
  util::write_file_atomic(util::join_path(dir, "merges.txt"), merges);
}

// A tokenizer.json that load_hf_tokenizer_json reads back as this tokenizer: model.vocab holds
// the tokens as read, added_tokens the literal ones.
void Gpt2Tokenizer::save_tokenizer_json(const std::string& dir) const {
  const std::string path = util::join_path(dir, "tokenizer.json");
  // model.vocab is written by hand in id order: an ordered_json object looks keys up linearly.
  std::string vocab = "{";
  nlohmann::ordered_json added = nlohmann::ordered_json::array();
  bool first = true;
  for (size_t id = 0; id < tokens_.size(); ++id) {
    if (literal_[id]) {
      added.push_back({{"id", id}, {"content", tokens_[id]}, {"special", true}});
      continue;
    }
    SG_CHECK(detail::is_valid_utf8(tokens_[id]), path << ": cannot save token " << id << ": not valid UTF-8");
    vocab += (first ? "" : ", ") + nlohmann::json(tokens_[id]).dump() + ": " + std::to_string(id);
    first = false;
  }
  vocab += "}";
  nlohmann::ordered_json byte_level = {{"type", "ByteLevel"},
                                       {"add_prefix_space", false},
                                       {"trim_offsets", true},
                                       {"use_regex", split_pattern_.empty()}};
  nlohmann::ordered_json root;
  root["version"] = "1.0";
  root["added_tokens"] = std::move(added);
  root["normalizer"] = nullptr;
  if (split_pattern_.empty()) {
    root["pre_tokenizer"] = byte_level;
  } else {
    nlohmann::ordered_json split = {{"type", "Split"},
                                    {"pattern", {{"Regex", split_pattern_}}},
                                    {"behavior", "Isolated"},
                                    {"invert", false}};
    root["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {split, byte_level}}};
  }
  root["decoder"] = {{"type", "ByteLevel"}};
  nlohmann::ordered_json merges = nlohmann::ordered_json::array();
  for (const auto& [left, right] : merges_) merges.push_back({left, right});
  // model.vocab goes last, so that the last occurrence of the placeholder is it even if a token
  // happens to spell it.
  constexpr char kVocabPlaceholder[] = "\"@vocab@\"";
  root["model"] = {{"type", "BPE"},
                   {"ignore_merges", ignore_merges_},
                   {"merges", std::move(merges)},
                   {"vocab", "@vocab@"}};
  std::string text = root.dump(1);
  text.replace(text.rfind(kVocabPlaceholder), sizeof(kVocabPlaceholder) - 1, vocab);
  util::make_directories(dir);
  util::write_file_atomic(path, text + "\n");
}

}  // namespace

namespace detail {

const std::array<uint32_t, 256>& gpt2_byte_to_code_point() {
  // Bytes that are printable Latin-1 stand for themselves; the rest take 256, 257, ... in order.
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      t[b] = printable ? b : next++;
    }
    return t;
  }();
  return table;
}

std::vector<std::string> gpt2_pretokenize(std::string_view text) {
  std::vector<std::string> words;
  for (std::string_view word : pretokenize_views(text, gpt2_regex())) words.emplace_back(word);
  return words;
}

}  // namespace detail

std::unique_ptr<Tokenizer> load_gpt2_tokenizer(const std::string& vocab_json, const std::string& merges_txt) {
  nlohmann::json vocab_root = detail::read_json_file(vocab_json);
  Gpt2Vocab vocab;
  vocab.tokens =
      detail::tokens_by_id(detail::vocab_entries(vocab_root, vocab_json, "the top level"), vocab_json);

  const std::string text = util::read_file(merges_txt);
  std::vector<size_t> lines;
  size_t line_number = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_number == 1 && line.rfind("#version", 0) == 0)) continue;
    std::pair<std::string, std::string> merge;
    SG_CHECK(detail::split_merge(line, merge), merges_txt << ":" << line_number
                                                          << ": expected \"<left> <right>\", got \"" << line
                                                          << "\"; hint: is this a BPE merges.txt?");
    vocab.merges.push_back(std::move(merge));
    lines.push_back(line_number);
  }
  vocab.merge_origin = [&](size_t rank) { return merges_txt + ":" + std::to_string(lines[rank]); };
  return std::make_unique<Gpt2Tokenizer>(std::move(vocab), vocab_json);
}

std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::string& path) {
  const nlohmann::json root = detail::read_json_file(path);
  const std::string hint =
      "; hint: tokenizer.json loads for byte-level BPE (GPT-2, Llama-3) and byte_fallback BPE (Llama-2); "
      "see docs/formats.md, Tokenizers";
  const nlohmann::json& model = detail::json_member(root, "model", path, "top level");
  const std::string type =
      detail::json_string(detail::json_member(model, "type", path, "\"model\""), path, "model.type");
  SG_CHECK(type == "BPE", path << ": model.type is \"" << type << "\", expected \"BPE\"" << hint);

  // Everything that would make this tokenizer behave differently from GPT-2's is refused, not ignored.
  auto is_set = [](const nlohmann::json& object, const char* key) {
    auto it = object.find(key);
    return it != object.end() && !it->is_null() && *it != false && *it != "";
  };
  // Llama-2 / Mistral: SentencePiece-style BPE with "<0xNN>" byte pieces.
  if (is_set(model, "byte_fallback")) return detail::sentencepiece_from_hf_json(root, path);
  SG_CHECK(!is_set(model, "continuing_subword_prefix") && !is_set(model, "end_of_word_suffix"),
           path << ": model has a subword prefix/suffix" << hint);
  SG_CHECK(!is_set(root, "normalizer"), path << ": has a normalizer" << hint);
  auto type_of = [](const nlohmann::json& object) {
    return object.is_object() && object.contains("type") ? object["type"].dump() : std::string("none");
  };
  // GPT-2: ByteLevel with its own regex. Llama-3: Sequence[Split(regex), ByteLevel(use_regex=false)].
  const nlohmann::json& pre_tokenizer = detail::json_member(root, "pre_tokenizer", path, "top level");
  const nlohmann::json* byte_level = &pre_tokenizer;
  std::string split_pattern;
  if (type_of(pre_tokenizer) == "\"Sequence\"") {
    const nlohmann::json& steps = detail::json_member(pre_tokenizer, "pretokenizers", path, "pre_tokenizer");
    SG_CHECK(steps.is_array() && steps.size() == 2 && type_of(steps[0]) == "\"Split\"",
             path << ": pre_tokenizer is a Sequence other than [Split, ByteLevel]" << hint);
    const nlohmann::json& split = steps[0];
    const nlohmann::json& pattern = detail::json_member(split, "pattern", path, "pre_tokenizer Split");
    SG_CHECK(pattern.is_object() && pattern.contains("Regex"), path << ": pre_tokenizer Split pattern is "
                                                                    << pattern.dump()
                                                                    << ", expected {\"Regex\": ...}" << hint);
    split_pattern = detail::json_string(pattern["Regex"], path, "pre_tokenizer Split pattern.Regex");
    SG_CHECK(!split_pattern.empty(), path << ": pre_tokenizer Split pattern.Regex is empty" << hint);
    SG_CHECK(detail::json_member_or_null(split, "behavior") == "Isolated" &&
                 (detail::json_member_or_null(split, "invert").is_null() ||
                  detail::json_member_or_null(split, "invert") == false),
             path << ": pre_tokenizer Split must have behavior \"Isolated\" and invert false" << hint);
    byte_level = &steps[1];
    SG_CHECK(type_of(*byte_level) == "\"ByteLevel\"", path << ": pre_tokenizer Sequence ends in "
                                                           << type_of(*byte_level)
                                                           << ", expected \"ByteLevel\"" << hint);
    SG_CHECK(detail::json_member_or_null(*byte_level, "use_regex") == false,
             path << ": pre_tokenizer ByteLevel after a Split must have use_regex false" << hint);
  } else {
    SG_CHECK(type_of(pre_tokenizer) == "\"ByteLevel\"",
             path << ": pre_tokenizer is " << type_of(pre_tokenizer) << ", expected \"ByteLevel\"" << hint);
    SG_CHECK((detail::json_member_or_null(*byte_level, "use_regex").is_null() ||
              detail::json_member_or_null(*byte_level, "use_regex") == true),
             path << ": pre_tokenizer.use_regex is false" << hint);
  }
  SG_CHECK(!is_set(*byte_level, "add_prefix_space"),
           path << ": pre_tokenizer.add_prefix_space is set" << hint);

  detail::HfBpeVocab hf = detail::read_hf_bpe_vocab(root, path);
  Gpt2Vocab vocab;
  vocab.tokens = std::move(hf.tokens);
  vocab.literal = std::move(hf.added);
  vocab.merges = std::move(hf.merges);
  vocab.split_pattern = std::move(split_pattern);
  vocab.ignore_merges = is_set(model, "ignore_merges");
  vocab.merge_origin = [&](size_t rank) { return path + ": model.merges[" + std::to_string(rank) + "]"; };
  return std::make_unique<Gpt2Tokenizer>(std::move(vocab), path);
}

}  // namespace sg::io
