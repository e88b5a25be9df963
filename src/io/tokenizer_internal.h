// Private to src/io: what the tokenizer kinds share (UTF-8 scanning, JSON field access, the BPE
// merge loop, the skillgraft_tokenizer.json constants) and the constructors load_tokenizer() dispatches to.
// Not part of the public API; tests include it to check the pieces on their own.
#pragma once

#include <nlohmann/json.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "io/tokenizer.h"

namespace sg::io::detail {

constexpr char kSkillgraftTokenizerFile[] = "skillgraft_tokenizer.json";
constexpr char kSkillgraftTokenizerFormat[] = "skillgraft.tokenizer";
// Version 2 adds "merges" (sentencepiece_bpe merging by rank); files without them are written as
// version 1, which older builds read.
constexpr int64_t kSkillgraftTokenizerVersion = 2;

// ---- UTF-8 ----

// Length (1..4) of the well-formed UTF-8 sequence starting at text[pos], or 0 when none starts
// there. Well-formed as in RFC 3629 / Unicode table 3-7: no overlong forms, no surrogates
// (U+D800..U+DFFF), nothing above U+10FFFF, no truncated sequences.
size_t utf8_sequence_length(std::string_view text, size_t pos);
bool is_valid_utf8(std::string_view text);
void append_utf8(std::string& out, uint32_t code_point);
// Decodes well-formed UTF-8 (checked by the caller) into code points.
std::vector<uint32_t> utf8_code_points(std::string_view text);

// ---- JSON ----

// Parses a whole JSON file; throws naming the file on a read or syntax error.
nlohmann::json read_json_file(const std::string& path);
// The member `key` of object `object`; throws "<path>: <where>: missing "<key>"" when absent.
const nlohmann::json& json_member(const nlohmann::json& object, const std::string& key,
                                  const std::string& path, const std::string& where);
// The member `key` of `object`, or null when `object` is not an object or has no such member.
// For optional fields compared with ==, which never throws.
const nlohmann::json& json_member_or_null(const nlohmann::json& object, const std::string& key);
int64_t json_int(const nlohmann::json& value, const std::string& path, const std::string& what);
std::string json_string(const nlohmann::json& value, const std::string& path, const std::string& what);

// ---- Vocabularies and merges as HF files write them ----

// Orders (token, id) pairs into a table by id; ids must be exactly 0..N-1 (else throws).
std::vector<std::string> tokens_by_id(const std::vector<std::pair<std::string, int64_t>>& entries,
                                      const std::string& path);
// The entries of a JSON object token -> id (vocab.json, tokenizer.json's model.vocab).
std::vector<std::pair<std::string, int64_t>> vocab_entries(const nlohmann::json& vocab,
                                                           const std::string& path, const std::string& where);
// "a b" -> {a, b}; false unless exactly two non-empty parts.
bool split_merge(const std::string& line, std::pair<std::string, std::string>& merge);

// The vocabulary and merges of an HF tokenizer.json whose model.type is "BPE".
struct HfBpeVocab {
  std::vector<std::string> tokens;  // by id: model.vocab, then added_tokens that are not in it
  std::vector<bool> added;          // by id: an added token not in model.vocab (its text is literal)
  std::vector<std::pair<std::string, std::string>> merges;  // model.merges, by rank
};
HfBpeVocab read_hf_bpe_vocab(const nlohmann::json& root, const std::string& path);

// Checks format and version (1..kSkillgraftTokenizerVersion) and returns the kind of a
// skillgraft_tokenizer.json root object.
std::string check_skillgraft_header(const nlohmann::json& root, const std::string& path);

// ---- Tokenizer ids ----

// Throws unless 0 <= id < vocab_size, naming the kind.
void check_token_id(int64_t id, int64_t vocab_size, const char* kind);

// ---- BPE merging ----

// The key of a pair of token ids in a merge table.
inline uint64_t bpe_pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// One symbol of a word being merged: a span of the word and the token it currently is.
struct BpeSymbol {
  size_t start;   // byte offset in the word
  size_t length;  // bytes
  int32_t id;
  bool mergeable = true;  // false: never merges (SentencePiece byte-fallback pieces)
};

// What merging two adjacent symbols gives. Lower priority merges first (GPT-2: the merge rank;
// SentencePiece: minus the merged piece's score).
struct BpeMerge {
  double priority;
  int32_t merged_id;
};

// Sets `merge` and returns true when `left` followed by `right` merges; false when it does not.
using BpePairLookup = std::function<bool(const BpeSymbol& left, const BpeSymbol& right, BpeMerge& merge)>;

// Merges adjacent mergeable symbols, the lowest priority first and the leftmost pair on ties,
// until no pair merges; returns the ids left, in text order. O(n log n): each merge pushes at
// most two candidates onto a heap, and candidates made stale by another merge are skipped.
std::vector<int32_t> bpe_merge(std::vector<BpeSymbol> symbols, const BpePairLookup& lookup);

// ---- SentencePiece-style BPE (tokenizer_sentencepiece.cpp) ----

struct SentencePieceModel {
  // Piece bytes as text produces them: a space is ' ', never U+2581 ("▁"). Byte-fallback pieces
  // are named "<0xNN>" (uppercase hex).
  std::vector<std::string> pieces;
  std::vector<float> scores;
  int64_t bos_id = -1;
  int64_t eos_id = -1;
  int64_t unk_id = -1;
  bool add_dummy_prefix = true;
  // true: pairs merge by rank in `merges` (HF tokenizer.json); false: by the merged piece's score
  // (SentencePiece, llama2.c). Merges name pieces as `pieces` does (' ' for a space).
  bool merge_by_rank = false;
  std::vector<std::pair<std::string, std::string>> merges;
};

// Validates the model (every error names `source`) and builds the tokenizer.
std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(SentencePieceModel model, const std::string& source);
// The kind-specific part of a skillgraft_tokenizer.json whose kind is "sentencepiece_bpe".
std::unique_ptr<Tokenizer> sentencepiece_from_json(const nlohmann::json& root, const std::string& path);
// An HF tokenizer.json of a Llama-2 / Mistral style BPE with byte_fallback (throws naming what
// does not fit that form).
std::unique_ptr<Tokenizer> sentencepiece_from_hf_json(const nlohmann::json& root, const std::string& path);

// ---- GPT-2 byte-level BPE (tokenizer_gpt2.cpp) ----

// GPT-2's bytes_to_unicode(): the printable code point that stands for each byte in vocab and
// merges strings.
const std::array<uint32_t, 256>& gpt2_byte_to_code_point();
// The GPT-2 pre-tokenizer: splits text into the words BPE runs on. Well-formed UTF-8 runs are
// split by GPT-2's regex; every byte of ill-formed UTF-8 becomes a word of its own. The words
// concatenate back to `text` exactly.
std::vector<std::string> gpt2_pretokenize(std::string_view text);

}  // namespace sg::io::detail
