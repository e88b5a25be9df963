// SentencePiece-style BPE with byte fallback, merging by score as llama2.c's run.c does or by rank
// as HF tokenizers does: the tokenizer, the llama2.c tokenizer.bin loader, our
// skillgraft_tokenizer.json form, and Llama-2-style HF tokenizer.json.
#include <nlohmann/json.hpp>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/tokenizer.h"
#include "io/tokenizer_internal.h"
#include "util/error.h"
#include "util/file.h"

namespace sg::io {

namespace {

// SentencePiece writes a space as U+2581; run.c's tokenizer.bin and our pieces in memory use ' '.
constexpr std::string_view kSentencePieceSpace = "\xE2\x96\x81";

std::string byte_piece_name(int byte) {
  char name[8];
  std::snprintf(name, sizeof(name), "<0x%02X>", byte);
  return name;
}

// The byte a piece named "<0xNN>" stands for, or -1.
int byte_piece_value(const std::string& piece) {
  if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>') return -1;
  int value = 0;
  for (int i = 3; i < 5; ++i) {
    char c = piece[i];
    int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

std::string replace_all(std::string text, std::string_view from, std::string_view to) {
  size_t pos = 0;
  while ((pos = text.find(from, pos)) != std::string::npos) {
    text.replace(pos, from.size(), to);
    pos += to.size();
  }
  return text;
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(detail::SentencePieceModel model, const std::string& source)
      : model_(std::move(model)) {
    const int64_t vocab = static_cast<int64_t>(model_.pieces.size());
    SG_CHECK(vocab > 0, source << ": the vocabulary is empty");
    SG_CHECK(vocab <= INT32_MAX, source << ": vocabulary of " << vocab << " pieces is too large");
    SG_CHECK(model_.scores.size() == model_.pieces.size(),
             source << ": " << model_.pieces.size() << " pieces but " << model_.scores.size() << " scores");
    for (int64_t id : {model_.bos_id, model_.eos_id, model_.unk_id}) {
      SG_CHECK(id >= -1 && id < vocab,
               source << ": special token id " << id << " is outside the vocabulary of " << vocab);
    }
    for (size_t i = 0; i < model_.scores.size(); ++i) {
      SG_CHECK(std::isfinite(model_.scores[i]),
               source << ": piece " << i << " has a non-finite score " << model_.scores[i]);
    }

    byte_piece_ids_.fill(-1);
    token_text_.resize(model_.pieces.size());
    for (size_t i = 0; i < model_.pieces.size(); ++i) {
      const std::string& piece = model_.pieces[i];
      const int64_t id = static_cast<int64_t>(i);
      int byte = byte_piece_value(piece);
      if (id == model_.bos_id || id == model_.eos_id) {
        continue;  // control tokens decode to nothing
      }
      if (byte >= 0) {
        token_text_[i] = std::string(1, static_cast<char>(byte));
        if (byte_piece_ids_[byte] < 0) byte_piece_ids_[byte] = static_cast<int32_t>(i);
        continue;  // text never merges into a byte piece: "<0x41>" in the text stays literal
      }
      token_text_[i] = piece;
      // The unknown piece is not text either; the first of duplicate pieces wins.
      if (id != model_.unk_id && !piece.empty()) text_piece_ids_.emplace(piece, static_cast<int32_t>(i));
    }
    if (model_.merge_by_rank) build_merge_rules(source);
    for (int byte = 0; byte < 256; ++byte) {
      SG_CHECK(byte_piece_ids_[byte] >= 0, source << ": no byte-fallback piece " << byte_piece_name(byte)
                                                  << "; hint: sentencepiece_bpe needs all 256 pieces "
                                                     "<0x00>..<0xFF> so that any byte string can be encoded");
    }
  }
  SentencePieceTokenizer(const SentencePieceTokenizer&) = delete;
  SentencePieceTokenizer& operator=(const SentencePieceTokenizer&) = delete;

  std::string kind() const override { return "sentencepiece_bpe"; }
  int64_t vocab_size() const override { return static_cast<int64_t>(model_.pieces.size()); }
  int64_t bos_id() const override { return model_.bos_id; }
  int64_t eos_id() const override { return model_.eos_id; }

  std::vector<int64_t> encode(const std::string& text) const override;

  std::string decode(const std::vector<int64_t>& ids) const override {
    std::string text;
    int64_t previous = -1;
    for (int64_t id : ids) {
      text += token_bytes(previous, id);
      previous = id;
    }
    return text;
  }

  // run.c's rule: a token's leading space is the dummy prefix when it starts the text or
  // follows BOS, and is dropped there.
  std::string token_bytes(int64_t previous, int64_t id) const override {
    detail::check_token_id(id, vocab_size(), "sentencepiece_bpe");
    if (previous != -1) detail::check_token_id(previous, vocab_size(), "sentencepiece_bpe");
    const std::string& bytes = token_text_[id];
    bool starts_text = previous == -1 || (model_.bos_id >= 0 && previous == model_.bos_id);
    if (model_.add_dummy_prefix && starts_text && !bytes.empty() && bytes[0] == ' ') return bytes.substr(1);
    return bytes;
  }

  void save(const std::string& dir) const override;

 private:
  struct MergeRule {
    int32_t rank;
    int32_t merged_id;
  };

  // Merges name text pieces; a repeated pair takes its later rank, as in HF tokenizers.
  void build_merge_rules(const std::string& source) {
    for (size_t rank = 0; rank < model_.merges.size(); ++rank) {
      const auto& [left, right] = model_.merges[rank];
      int32_t ids[3];
      const std::string parts[3] = {left, right, left + right};
      for (int i = 0; i < 3; ++i) {
        auto it = text_piece_ids_.find(parts[i]);
        SG_CHECK(it != text_piece_ids_.end(), source << ": merge " << rank << " (\"" << left << "\" + \""
                                                     << right << "\"): \"" << parts[i]
                                                     << "\" is not a text piece of the vocabulary");
        ids[i] = it->second;
      }
      SG_CHECK(rank <= INT32_MAX, source << ": too many merges");
      merge_rules_[detail::bpe_pair_key(ids[0], ids[1])] = {static_cast<int32_t>(rank), ids[2]};
    }
  }

  detail::SentencePieceModel model_;
  std::vector<std::string> token_text_;  // what each id decodes to
  // Pieces that text can produce (no control or byte pieces); keys view model_.pieces.
  std::unordered_map<std::string_view, int32_t> text_piece_ids_;
  std::array<int32_t, 256> byte_piece_ids_;
  std::unordered_map<uint64_t, MergeRule> merge_rules_;  // merge_by_rank only
};

// Pieces merge by score, the highest first (leftmost on ties), as run.c does, or by merge rank,
// the lowest first, as HF tokenizers does; byte-fallback symbols never merge: their piece names
// are not their bytes.
std::vector<int64_t> SentencePieceTokenizer::encode(const std::string& text) const {
  if (text.empty()) return {};
  const std::string input = model_.add_dummy_prefix ? " " + text : text;
  const std::string_view view(input);

  std::vector<detail::BpeSymbol> symbols;
  symbols.reserve(input.size());
  size_t pos = 0;
  while (pos < input.size()) {
    size_t length = detail::utf8_sequence_length(view, pos);
    if (length > 0) {
      auto it = text_piece_ids_.find(view.substr(pos, length));
      if (it != text_piece_ids_.end()) {
        symbols.push_back({pos, length, it->second, true});
        pos += length;
        continue;
      }
    } else {
      length = 1;  // an ill-formed byte stands alone
    }
    for (size_t i = 0; i < length; ++i) {
      symbols.push_back({pos + i, 1, byte_piece_ids_[static_cast<uint8_t>(input[pos + i])], false});
    }
    pos += length;
  }

  auto lookup_rank = [&](const detail::BpeSymbol& left, const detail::BpeSymbol& right,
                         detail::BpeMerge& merge) {
    auto it = merge_rules_.find(detail::bpe_pair_key(left.id, right.id));
    if (it == merge_rules_.end()) return false;
    merge = {static_cast<double>(it->second.rank), it->second.merged_id};
    return true;
  };
  auto lookup_score = [&](const detail::BpeSymbol& left, const detail::BpeSymbol& right,
                          detail::BpeMerge& merge) {
    auto it = text_piece_ids_.find(view.substr(left.start, left.length + right.length));
    if (it == text_piece_ids_.end()) return false;
    merge = {-static_cast<double>(model_.scores[it->second]), it->second};
    return true;
  };
  std::vector<int32_t> merged = model_.merge_by_rank ? detail::bpe_merge(std::move(symbols), lookup_rank)
                                                     : detail::bpe_merge(std::move(symbols), lookup_score);
  return std::vector<int64_t>(merged.begin(), merged.end());
}

void SentencePieceTokenizer::save(const std::string& dir) const {
  const std::string path = util::join_path(dir, detail::kSkillgraftTokenizerFile);
  nlohmann::ordered_json pieces = nlohmann::ordered_json::array();
  for (size_t i = 0; i < model_.pieces.size(); ++i) {
    const std::string& piece = model_.pieces[i];
    SG_CHECK(detail::is_valid_utf8(piece),
             path << ": cannot save piece " << i << ": it is not valid UTF-8, which JSON cannot hold");
    SG_CHECK(piece.find(kSentencePieceSpace) == std::string::npos,
             path << ": cannot save piece " << i
                  << ": it holds a literal U+2581, which the file uses for a space");
    pieces.push_back(replace_all(piece, " ", kSentencePieceSpace));
  }
  nlohmann::ordered_json merges = nlohmann::ordered_json::array();
  for (const auto& [left, right] : model_.merges) {
    merges.push_back(
        {replace_all(left, " ", kSentencePieceSpace), replace_all(right, " ", kSentencePieceSpace)});
  }
  nlohmann::ordered_json root;
  root["format"] = detail::kSkillgraftTokenizerFormat;
  root["version"] = model_.merge_by_rank ? 2 : 1;
  root["kind"] = "sentencepiece_bpe";
  root["pieces"] = std::move(pieces);
  root["scores"] = model_.scores;
  root["bos_id"] = model_.bos_id;
  root["eos_id"] = model_.eos_id;
  root["unk_id"] = model_.unk_id;
  root["add_dummy_prefix"] = model_.add_dummy_prefix;
  if (model_.merge_by_rank) root["merges"] = std::move(merges);
  util::make_directories(dir);
  util::write_file_atomic(path, root.dump(1) + "\n");
}

// Bounds-checked little-endian reads from a whole tokenizer.bin.
class BinReader {
 public:
  BinReader(const std::string& path, const std::string& data) : path_(path), data_(data) {}
  size_t offset() const { return offset_; }
  size_t remaining() const { return data_.size() - offset_; }
  template <typename T>
  T read(const char* what, int64_t token) {
    T value;
    SG_CHECK(remaining() >= sizeof(T), path_ << ": truncated: file ends at byte " << data_.size()
                                             << " inside " << what
                                             << (token >= 0 ? " of token " + std::to_string(token) : "")
                                             << "; hint: re-export or re-download the tokenizer");
    std::memcpy(&value, data_.data() + offset_, sizeof(T));
    offset_ += sizeof(T);
    return value;
  }
  std::string read_bytes(size_t length) {
    std::string bytes = data_.substr(offset_, length);
    offset_ += length;
    return bytes;
  }

 private:
  const std::string& path_;
  const std::string& data_;
  size_t offset_ = 0;
};

}  // namespace

namespace detail {

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(SentencePieceModel model, const std::string& source) {
  return std::make_unique<SentencePieceTokenizer>(std::move(model), source);
}

std::unique_ptr<Tokenizer> sentencepiece_from_json(const nlohmann::json& root, const std::string& path) {
  const nlohmann::json& pieces = json_member(root, "pieces", path, "top level");
  const nlohmann::json& scores = json_member(root, "scores", path, "top level");
  SG_CHECK(pieces.is_array(), path << ": \"pieces\" must be an array of strings");
  SG_CHECK(scores.is_array(), path << ": \"scores\" must be an array of numbers");
  SG_CHECK(pieces.size() == scores.size(), path << ": \"pieces\" has " << pieces.size()
                                                << " entries but \"scores\" has " << scores.size()
                                                << "; hint: the file is damaged");
  SentencePieceModel model;
  model.pieces.reserve(pieces.size());
  model.scores.reserve(scores.size());
  for (size_t i = 0; i < pieces.size(); ++i) {
    std::string piece = json_string(pieces[i], path, "pieces[" + std::to_string(i) + "]");
    model.pieces.push_back(replace_all(std::move(piece), kSentencePieceSpace, " "));
    SG_CHECK(scores[i].is_number(),
             path << ": scores[" << i << "] must be a number, got " << scores[i].dump());
    model.scores.push_back(scores[i].get<float>());
  }
  model.bos_id = json_int(json_member(root, "bos_id", path, "top level"), path, "\"bos_id\"");
  model.eos_id = json_int(json_member(root, "eos_id", path, "top level"), path, "\"eos_id\"");
  model.unk_id = json_int(json_member(root, "unk_id", path, "top level"), path, "\"unk_id\"");
  const nlohmann::json& prefix = json_member(root, "add_dummy_prefix", path, "top level");
  SG_CHECK(prefix.is_boolean(), path << ": \"add_dummy_prefix\" must be true or false");
  model.add_dummy_prefix = prefix.get<bool>();
  auto merges = root.find("merges");
  if (merges != root.end()) {
    SG_CHECK(root["version"] == 2, path << ": \"merges\" needs version 2");
    SG_CHECK(merges->is_array(), path << ": \"merges\" must be an array of [left, right] pairs");
    model.merge_by_rank = true;
    for (size_t i = 0; i < merges->size(); ++i) {
      const nlohmann::json& merge = (*merges)[i];
      SG_CHECK(merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string(),
               path << ": merges[" << i << "] is " << merge.dump() << ", expected [\"<left>\", \"<right>\"]");
      model.merges.emplace_back(replace_all(merge[0].get<std::string>(), kSentencePieceSpace, " "),
                                replace_all(merge[1].get<std::string>(), kSentencePieceSpace, " "));
    }
  }
  return make_sentencepiece_tokenizer(std::move(model), path);
}

// The normalizer / pre_tokenizer forms that mean "spaces are U+2581, with or without one in
// front": Sequence[Prepend("▁"), Replace(" ", "▁")] (Llama-2, Mistral, TinyLlama), or a
// Metaspace pre_tokenizer that does not split (newer conversions). Returns add_dummy_prefix.
bool hf_sentencepiece_prefix(const nlohmann::json& root, const std::string& path, const std::string& hint) {
  const std::string space(kSentencePieceSpace);
  auto normalizer = root.find("normalizer");
  auto pre_tokenizer = root.find("pre_tokenizer");
  const bool has_normalizer = normalizer != root.end() && !normalizer->is_null();
  const bool has_pre_tokenizer = pre_tokenizer != root.end() && !pre_tokenizer->is_null();
  auto type_of = [](const nlohmann::json& object) {
    return object.is_object() && object.contains("type") ? object["type"].dump() : std::string("none");
  };
  if (has_normalizer) {
    SG_CHECK(!has_pre_tokenizer, path << ": has both a normalizer and a pre_tokenizer ("
                                      << type_of(*pre_tokenizer) << ")" << hint);
    std::vector<nlohmann::json> steps;
    if (type_of(*normalizer) == "\"Sequence\"") {
      const nlohmann::json& list = json_member(*normalizer, "normalizers", path, "normalizer");
      SG_CHECK(list.is_array(), path << ": normalizer.normalizers must be an array");
      steps.assign(list.begin(), list.end());
    } else {
      steps.push_back(*normalizer);
    }
    bool prepend = false;
    size_t i = 0;
    if (i < steps.size() && type_of(steps[i]) == "\"Prepend\"") {
      SG_CHECK(json_member_or_null(steps[i], "prepend") == space,
               path << ": normalizer Prepend adds " << json_member_or_null(steps[i], "prepend").dump()
                    << ", expected \"\u2581\"" << hint);
      prepend = true;
      ++i;
    }
    const bool replaces_spaces =
        i < steps.size() && type_of(steps[i]) == "\"Replace\"" &&
        json_member_or_null(steps[i], "pattern") == nlohmann::json{{"String", " "}} &&
        json_member_or_null(steps[i], "content") == space;
    SG_CHECK(replaces_spaces && i + 1 == steps.size(),
             path << ": the normalizer is " << normalizer->dump()
                  << ", expected Sequence[Prepend(\"\u2581\"), Replace(\" \", \"\u2581\")]" << hint);
    return prepend;
  }
  SG_CHECK(has_pre_tokenizer && type_of(*pre_tokenizer) == "\"Metaspace\"",
           path << ": pre_tokenizer is " << (has_pre_tokenizer ? type_of(*pre_tokenizer) : "none")
                << " and there is no normalizer; expected a Metaspace pre_tokenizer or a Prepend/Replace "
                   "normalizer"
                << hint);
  SG_CHECK(json_member_or_null(*pre_tokenizer, "replacement") == space,
           path << ": pre_tokenizer.replacement must be \"\u2581\"" << hint);
  SG_CHECK(json_member_or_null(*pre_tokenizer, "split").is_null() ||
               json_member_or_null(*pre_tokenizer, "split") == false,
           path << ": pre_tokenizer Metaspace splits words at spaces (\"split\": true), which is not "
                   "supported"
                << hint);
  if (pre_tokenizer->contains("prepend_scheme")) {
    const std::string scheme =
        json_string((*pre_tokenizer)["prepend_scheme"], path, "pre_tokenizer.prepend_scheme");
    SG_CHECK(scheme == "always" || scheme == "first" || scheme == "never",
             path << ": pre_tokenizer.prepend_scheme is \"" << scheme << "\"" << hint);
    return scheme != "never";
  }
  const nlohmann::json& add_prefix_space = json_member_or_null(*pre_tokenizer, "add_prefix_space");
  SG_CHECK(add_prefix_space.is_null() || add_prefix_space.is_boolean(),
           path << ": pre_tokenizer.add_prefix_space must be true or false" << hint);
  return add_prefix_space.is_null() || add_prefix_space.get<bool>();
}

std::unique_ptr<Tokenizer> sentencepiece_from_hf_json(const nlohmann::json& root, const std::string& path) {
  const std::string hint =
      "; hint: a byte_fallback BPE tokenizer.json loads in the Llama-2 form (docs/formats.md, Tokenizers)";
  const nlohmann::json& model = json_member(root, "model", path, "top level");
  auto is_set = [](const nlohmann::json& object, const char* key) {
    auto it = object.find(key);
    return it != object.end() && !it->is_null() && *it != false && *it != "";
  };
  SG_CHECK(!is_set(model, "continuing_subword_prefix") && !is_set(model, "end_of_word_suffix"),
           path << ": model has a subword prefix/suffix" << hint);
  SG_CHECK(!is_set(model, "ignore_merges"), path << ": model.ignore_merges is set" << hint);
  const bool add_dummy_prefix = hf_sentencepiece_prefix(root, path, hint);

  HfBpeVocab vocab = read_hf_bpe_vocab(root, path);
  SentencePieceModel sp;
  sp.pieces.reserve(vocab.tokens.size());
  for (size_t id = 0; id < vocab.tokens.size(); ++id) {
    // Added tokens are their text as it is; model pieces spell a space "▁".
    sp.pieces.push_back(vocab.added[id] ? vocab.tokens[id]
                                        : replace_all(vocab.tokens[id], kSentencePieceSpace, " "));
  }
  sp.scores.assign(sp.pieces.size(), 0.0f);  // unused: merges go by rank
  auto id_of = [&](const std::string& piece) -> int64_t {
    for (size_t id = 0; id < sp.pieces.size(); ++id) {
      if (sp.pieces[id] == piece) return static_cast<int64_t>(id);
    }
    return -1;
  };
  sp.bos_id = id_of("<s>");
  sp.eos_id = id_of("</s>");
  auto unk = model.find("unk_token");
  sp.unk_id = unk != model.end() && unk->is_string() ? id_of(unk->get<std::string>()) : -1;
  sp.add_dummy_prefix = add_dummy_prefix;
  sp.merge_by_rank = true;
  sp.merges.reserve(vocab.merges.size());
  for (const auto& [left, right] : vocab.merges) {
    sp.merges.emplace_back(replace_all(left, kSentencePieceSpace, " "),
                           replace_all(right, kSentencePieceSpace, " "));
  }
  return make_sentencepiece_tokenizer(std::move(sp), path);
}

}  // namespace detail

std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::string& path, int64_t vocab_size) {
  // A tokenizer.bin carries no count; the model header's vocab_size says how many tokens follow.
  constexpr int64_t kMaxVocab = int64_t{1} << 24;
  SG_CHECK(vocab_size > 0 && vocab_size <= kMaxVocab,
           path << ": vocab_size " << vocab_size << " is out of range (1.." << kMaxVocab << ")");
  const std::string data = util::read_file(path);
  BinReader reader(path, data);
  const int32_t max_token_length = reader.read<int32_t>("the header (max_token_length)", -1);
  SG_CHECK(max_token_length > 0 && static_cast<size_t>(max_token_length) <= data.size(),
           path << ": max_token_length " << max_token_length << " is impossible for a file of " << data.size()
                << " bytes; hint: not a llama2.c tokenizer.bin");

  detail::SentencePieceModel model;
  model.pieces.reserve(vocab_size);
  model.scores.reserve(vocab_size);
  for (int64_t token = 0; token < vocab_size; ++token) {
    SG_CHECK(reader.remaining() > 0, path << ": holds " << token << " tokens but the model's vocab_size is "
                                          << vocab_size << "; hint: this tokenizer belongs to another model");
    const float score = reader.read<float>("the score", token);
    const int32_t length = reader.read<int32_t>("the length", token);
    SG_CHECK(length >= 0 && length <= max_token_length,
             path << ": token " << token << " has length " << length << ", outside 0.." << max_token_length
                  << " (max_token_length); hint: the file is damaged or not a llama2.c tokenizer.bin");
    SG_CHECK(static_cast<size_t>(length) <= reader.remaining(),
             path << ": truncated: token " << token << " needs " << length << " bytes at offset "
                  << reader.offset() << " but the file ends at byte " << data.size());
    model.scores.push_back(score);
    model.pieces.push_back(reader.read_bytes(static_cast<size_t>(length)));
  }
  SG_CHECK(reader.remaining() == 0, path << ": " << reader.remaining() << " bytes left after the "
                                         << vocab_size
                                         << " tokens of the model's vocab_size; hint: this tokenizer belongs "
                                            "to a model with a larger vocabulary");
  // llama2.c fixes these ids (run.c: BOS 1, EOS 2; SentencePiece's unk 0).
  model.unk_id = 0;
  model.bos_id = 1;
  model.eos_id = 2;
  model.add_dummy_prefix = true;
  return detail::make_sentencepiece_tokenizer(std::move(model), path);
}

}  // namespace sg::io
