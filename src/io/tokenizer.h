// Tokenizers: the interface, and loaders for every kind skillgraft reads.
// Kinds: SentencePiece-style BPE with byte fallback, merging by score or by merge rank (llama2.c
// tok512, our skillgraft_tokenizer.json, Llama-2-style HF tokenizer.json), byte-level BPE (GPT-2's
// vocab.json + merges.txt, or GPT-2 / Llama-3 tokenizer.json), and a plain byte tokenizer. All are immutable
// after loading and safe to share between threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sg::io {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // "sentencepiece_bpe", "gpt2_bpe", "byte".
  virtual std::string kind() const = 0;
  virtual int64_t vocab_size() const = 0;
  // Text -> ids, without BOS/EOS. Any byte string is accepted (invalid UTF-8 falls back to bytes
  // where the kind allows it).
  virtual std::vector<int64_t> encode(const std::string& text) const = 0;
  // Ids -> text. Throws sg::Error for an id outside [0, vocab_size).
  // decode(encode(s)) == s for every UTF-8 string s (every kind here: for every byte string).
  // sentencepiece_bpe: BOS/EOS decode to nothing, and the dummy-prefix space of the first token
  // (or of a token after BOS) is dropped. gpt2_bpe: special tokens decode to their text.
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
  // The bytes of one token, as decode would emit them after `previous` (-1: none). For streaming.
  virtual std::string token_bytes(int64_t previous, int64_t id) const = 0;
  // -1 where the tokenizer has none.
  virtual int64_t bos_id() const = 0;
  virtual int64_t eos_id() const = 0;
  // Writes this tokenizer into model directory `dir` in the format load_tokenizer() reads back
  // (skillgraft_tokenizer.json for sentencepiece_bpe and byte; vocab.json + merges.txt for gpt2_bpe,
  // or tokenizer.json when it has a pre-tokenizer regex of its own or ignore_merges).
  virtual void save(const std::string& dir) const = 0;
};

// The token ids a prompt becomes: BOS (SentencePiece tokenizers, and byte-level ones whose BOS
// differs from EOS) + encode(prompt); for a
// tokenizer without BOS and an empty prompt, the EOS token (GPT-2's <|endoftext|>).
std::vector<int64_t> prompt_tokens(const io::Tokenizer& tokenizer, const std::string& prompt);

// Files and formats: docs/formats.md, "Tokenizers".
// The tokenizer of a model directory, by the first file present:
// skillgraft_tokenizer.json, tokenizer.json (BPE: byte_fallback or byte-level), vocab.json + merges.txt.
// Throws naming the directory and the files looked for when none is there.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir);

// llama2.c tokenizer.bin (tok512.bin): int32 max_token_length, then per token: float32 score,
// int32 length, bytes. vocab_size comes from the model header (the file does not store it).
std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::string& path, int64_t vocab_size);

std::unique_ptr<Tokenizer> load_gpt2_tokenizer(const std::string& vocab_json,
                                               const std::string& merges_txt);
std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::string& tokenizer_json);
std::unique_ptr<Tokenizer> load_skillgraft_tokenizer(const std::string& path);
// Bytes 0..255 are ids 0..255; no BOS/EOS.
std::unique_ptr<Tokenizer> make_byte_tokenizer();

}  // namespace sg::io
